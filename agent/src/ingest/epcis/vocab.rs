//! CBV 2.0 vocabulary as senders spell it: bare words (`receiving`), URNs
//! (`urn:epcglobal:cbv:bizstep:receiving`), Web URIs (`https://ref.gs1.org/cbv/BizStep-receiving`)
//! and JSON-LD compact IRIs (`cbv:BizStep-receiving`, `gs1:BizStep-receiving`).
//!
//! Every spelling is reduced to the bare word, so the mapping table has one key per step. A
//! CBV-looking value that is not a CBV word (`recieving`) is an error naming the field: a
//! misspelling must never be guessed at. A URI outside the CBV namespaces is a user
//! extension, which EPCIS allows; it is kept whole and only config rules can map it.

/// CBV 2.0 business steps.
pub const BIZ_STEPS: &[&str] = &[
    "accepting",
    "arriving",
    "assembling",
    "collecting",
    "commissioning",
    "consigning",
    "creating_class_instance",
    "cycle_counting",
    "decommissioning",
    "departing",
    "destroying",
    "disassembling",
    "dispensing",
    "encoding",
    "entering_exiting",
    "holding",
    "inspecting",
    "installing",
    "killing",
    "loading",
    "other",
    "packing",
    "picking",
    "receiving",
    "removing",
    "repackaging",
    "repairing",
    "replacing",
    "reserving",
    "retail_selling",
    "sampling",
    "sensor_reporting",
    "shipping",
    "staging_outbound",
    "stock_taking",
    "stocking",
    "storing",
    "transporting",
    "unloading",
    "unpacking",
    "void_shipping",
];

/// CBV 2.0 dispositions.
pub const DISPOSITIONS: &[&str] = &[
    "active",
    "available",
    "completeness_inferred",
    "completeness_verified",
    "conformant",
    "container_closed",
    "container_open",
    "damaged",
    "destroyed",
    "dispensed",
    "disposed",
    "encoded",
    "expired",
    "in_progress",
    "in_transit",
    "inactive",
    "mismatch_instance",
    "mismatch_class",
    "mismatch_quantity",
    "needs_replacement",
    "no_pedigree_match",
    "non_conformant",
    "non_sellable_other",
    "partially_dispensed",
    "recalled",
    "reserved",
    "retail_sold",
    "returned",
    "sellable_accessible",
    "sellable_not_accessible",
    "stolen",
    "unavailable",
    "unknown",
];

/// CBV 2.0 business transaction types.
pub const BTTS: &[&str] = &[
    "bol",
    "cert",
    "desadv",
    "inv",
    "pedigree",
    "po",
    "poc",
    "prodorder",
    "recadv",
    "rma",
    "testprd",
    "upevt",
];

/// CBV 2.0 source/destination types.
pub const SDTS: &[&str] = &["owning_party", "possessing_party", "location"];

/// One CBV vocabulary: its word list and how its URIs are spelled.
pub struct Vocabulary {
    pub words: &'static [&'static str],
    /// `urn:epcglobal:cbv:<kind>:`
    pub urn: &'static str,
    /// The Web URI's and compact IRI's prefix, e.g. `BizStep`.
    pub web: &'static str,
}

const WEB: &str = "https://ref.gs1.org/cbv/";

pub const BIZ_STEP: Vocabulary = Vocabulary {
    words: BIZ_STEPS,
    urn: "urn:epcglobal:cbv:bizstep:",
    web: "BizStep",
};
pub const DISPOSITION: Vocabulary = Vocabulary {
    words: DISPOSITIONS,
    urn: "urn:epcglobal:cbv:disp:",
    web: "Disp",
};
pub const BTT: Vocabulary = Vocabulary {
    words: BTTS,
    urn: "urn:epcglobal:cbv:btt:",
    web: "BTT",
};
pub const SDT: Vocabulary = Vocabulary {
    words: SDTS,
    urn: "urn:epcglobal:cbv:sdt:",
    web: "SDT",
};

/// The bare CBV word of `value`, or the value itself for a non-CBV URI; an error text for a
/// CBV-looking value that names no CBV word.
pub fn normalise(vocab: &Vocabulary, value: &str) -> Result<String, String> {
    let word = value
        .strip_prefix(vocab.urn)
        .or_else(|| web_word(vocab, value.strip_prefix(WEB)?))
        .or_else(|| web_word(vocab, value.strip_prefix("cbv:")?))
        .or_else(|| web_word(vocab, value.strip_prefix("gs1:")?));
    let word = match word {
        Some(w) => w,
        // A URI of someone else's vocabulary: an extension, kept whole.
        None if value.contains(':') => return Ok(value.to_string()),
        None => value,
    };
    if vocab.words.contains(&word) {
        Ok(word.to_string())
    } else {
        Err(format!(
            "`{value}` is not a CBV 2.0 {} word (known: {})",
            vocab.web,
            vocab.words.join(", ")
        ))
    }
}

/// `<web>-<word>` after the Web URI base or a JSON-LD prefix.
fn web_word<'a>(vocab: &Vocabulary, rest: &'a str) -> Option<&'a str> {
    rest.strip_prefix(vocab.web)?.strip_prefix('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_gives_the_bare_word() {
        for v in [
            "receiving",
            "urn:epcglobal:cbv:bizstep:receiving",
            "https://ref.gs1.org/cbv/BizStep-receiving",
            "cbv:BizStep-receiving",
            "gs1:BizStep-receiving",
        ] {
            assert_eq!(normalise(&BIZ_STEP, v).unwrap(), "receiving", "{v}");
        }
        assert_eq!(
            normalise(&DISPOSITION, "urn:epcglobal:cbv:disp:in_transit").unwrap(),
            "in_transit"
        );
        assert_eq!(
            normalise(&BIZ_STEP, "https://example.com/steps/kitting").unwrap(),
            "https://example.com/steps/kitting"
        );
    }

    #[test]
    fn misspellings_are_errors() {
        assert!(normalise(&BIZ_STEP, "recieving").is_err());
        assert!(normalise(&BIZ_STEP, "urn:epcglobal:cbv:bizstep:recieving").is_err());
        assert!(normalise(&BIZ_STEP, "https://ref.gs1.org/cbv/BizStep-recieving").is_err());
        assert!(normalise(&DISPOSITION, "in-transit").is_err());
    }
}
