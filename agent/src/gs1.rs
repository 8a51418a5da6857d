//! GS1 identifiers as warehouses send them: SGTIN / LGTIN / SGLN URNs (EPC Tag Data
//! Standard) and GS1 Digital Link URIs, read by the EPCIS and scanner inputs.
//!
//! Every form is reduced to the canonical keys of `stocksync_common::gs1` (a trade item is
//! its GTIN-14, a location its GLN-13 plus the optional extension) before it reaches the
//! catalog. Serials, lots and extensions are kept percent-decoded, as the GS1 application
//! identifiers (21, 10, 254) define them. Only agents receive these forms, so the parsing
//! lives here; the keys cross the process boundary in the catalog.
//!
//! URNs carry the GS1 Company Prefix length (the dot), which the Digital Link form does not;
//! encoding a URN therefore needs it (`cp_len`, 6 to 12 digits).

use stocksync_common::gs1::all_digits;
pub use stocksync_common::gs1::{check_digit, Gln, Gs1Error, Gtin};

/// A trade item reference: the GTIN, and the serial (one instance) or lot (a class) when given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ItemId {
    pub gtin: Gtin,
    pub serial: Option<String>,
    pub lot: Option<String>,
}

/// A physical location: GLN plus the optional extension (none when the SGLN says `0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocationId {
    pub gln: Gln,
    pub extension: Option<String>,
}

impl LocationId {
    /// The key location aliases are looked up by: the GLN, or `GLN/254/<extension>`.
    pub fn key(&self) -> String {
        match &self.extension {
            Some(ext) => format!("{}/254/{ext}", self.gln),
            None => self.gln.to_string(),
        }
    }
}

/// Reads an item identifier: an SGTIN (`urn:epc:id:sgtin:`), an LGTIN
/// (`urn:epc:class:lgtin:`), an SGTIN pattern (`urn:epc:idpat:sgtin:CP.REF.*`), or a GS1
/// Digital Link URI with `/01/<gtin>` and optionally `/21/<serial>` or `/10/<lot>`.
pub fn parse_item(text: &str) -> Result<ItemId, Gs1Error> {
    if let Some(rest) = text.strip_prefix("urn:epc:id:sgtin:") {
        let (gtin, serial) = urn_gtin(text, rest, "SGTIN URN")?;
        let serial = serial
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed(text, "SGTIN URN", "needs a serial after the second dot"))?;
        return Ok(ItemId {
            gtin,
            serial: Some(decode_component(text, "SGTIN URN", serial)?),
            lot: None,
        });
    }
    if let Some(rest) = text.strip_prefix("urn:epc:class:lgtin:") {
        let (gtin, lot) = urn_gtin(text, rest, "LGTIN URN")?;
        let lot = lot
            .filter(|s| !s.is_empty())
            .ok_or_else(|| malformed(text, "LGTIN URN", "needs a lot after the second dot"))?;
        return Ok(ItemId {
            gtin,
            serial: None,
            lot: Some(decode_component(text, "LGTIN URN", lot)?),
        });
    }
    if let Some(rest) = text.strip_prefix("urn:epc:idpat:sgtin:") {
        let (gtin, tail) = urn_gtin(text, rest, "SGTIN pattern")?;
        if tail != Some("*") {
            return Err(malformed(
                text,
                "SGTIN pattern",
                "only the class pattern `CP.REF.*` names a quantity of one GTIN",
            ));
        }
        return Ok(ItemId {
            gtin,
            serial: None,
            lot: None,
        });
    }
    if let Some(path) = digital_link_path(text) {
        return item_from_link(text, path);
    }
    Err(Gs1Error::Unknown(text.to_string()))
}

/// Reads a location identifier: an SGLN URN (`urn:epc:id:sgln:CP.LOCREF.EXT`) or a GS1
/// Digital Link URI with `/414/<gln>` and optionally `/254/<extension>`.
pub fn parse_location(text: &str) -> Result<LocationId, Gs1Error> {
    const FORM: &str = "SGLN URN";
    if let Some(rest) = text.strip_prefix("urn:epc:id:sgln:") {
        let parts: Vec<&str> = rest.splitn(3, '.').collect();
        let [cp, loc, ext] = parts[..] else {
            return Err(malformed(
                text,
                FORM,
                "expected CompanyPrefix.LocationRef.Extension",
            ));
        };
        check_partition(text, FORM, cp, loc, 12)?;
        let gln = Gln::from_parts(&format!("{cp}{loc}"));
        let extension = decode_component(text, FORM, ext)?;
        return Ok(LocationId {
            gln,
            extension: (!extension.is_empty() && extension != "0").then_some(extension),
        });
    }
    if let Some(path) = digital_link_path(text) {
        let pairs = link_pairs(text, path)?;
        let gln = match pairs.first() {
            Some(("414", v)) => Gln::parse(v)?,
            _ => {
                return Err(malformed(
                    text,
                    "GS1 Digital Link location",
                    "the path must start with /414/<GLN>",
                ))
            }
        };
        let extension = match &pairs[1..] {
            [] => None,
            [("254", ext)] => Some(ext.clone()),
            _ => {
                return Err(malformed(
                    text,
                    "GS1 Digital Link location",
                    "after /414/<GLN> only /254/<extension> may follow",
                ))
            }
        };
        return Ok(LocationId { gln, extension });
    }
    Err(Gs1Error::Unknown(text.to_string()))
}

fn malformed(text: &str, form: &'static str, detail: &str) -> Gs1Error {
    Gs1Error::Malformed {
        text: text.to_string(),
        form,
        detail: detail.to_string(),
    }
}

/// Company prefix (6..=12 digits) and reference together make `total` digits.
fn check_partition(
    text: &str,
    form: &'static str,
    cp: &str,
    reference: &str,
    total: usize,
) -> Result<(), Gs1Error> {
    if !all_digits(cp) || !(6..=12).contains(&cp.len()) {
        return Err(malformed(
            text,
            form,
            "the company prefix must be 6 to 12 digits",
        ));
    }
    if !reference.bytes().all(|b| b.is_ascii_digit()) || cp.len() + reference.len() != total {
        return Err(malformed(
            text,
            form,
            &format!("company prefix and reference must be {total} digits together"),
        ));
    }
    Ok(())
}

/// `CP.ITEMREF[.TAIL]` of an SGTIN-like URN: the GTIN and the tail after the second dot.
fn urn_gtin<'a>(
    text: &str,
    rest: &'a str,
    form: &'static str,
) -> Result<(Gtin, Option<&'a str>), Gs1Error> {
    let mut parts = rest.splitn(3, '.');
    let cp = parts.next().unwrap_or("");
    let item = parts.next().unwrap_or("");
    check_partition(text, form, cp, item, 13)?;
    // The item reference starts with the indicator digit, which leads the GTIN-14.
    let (indicator, item_rest) = item.split_at(1);
    let gtin = Gtin::from_parts(&format!("{indicator}{cp}{item_rest}"));
    Ok((gtin, parts.next()))
}

/// The path of a GS1 Digital Link URI (any host, `http` or `https`), without query/fragment.
fn digital_link_path(text: &str) -> Option<&str> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))?;
    let path = &rest[rest.find('/')?..];
    let path = path.split(['?', '#']).next().unwrap_or(path);
    Some(path)
}

/// `(application identifier, decoded value)` pairs of a Digital Link path. A resolver may
/// serve under a path prefix, so pairs are read from the first known primary key on.
fn link_pairs(text: &str, path: &str) -> Result<Vec<(&'static str, String)>, Gs1Error> {
    const FORM: &str = "GS1 Digital Link URI";
    const KNOWN: [&str; 6] = ["01", "21", "10", "414", "254", "22"];
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let start = segments
        .iter()
        .position(|s| *s == "01" || *s == "414")
        .ok_or_else(|| malformed(text, FORM, "no /01/<GTIN> or /414/<GLN> in the path"))?;
    let tail = &segments[start..];
    if !tail.len().is_multiple_of(2) {
        return Err(malformed(text, FORM, "each identifier needs a value"));
    }
    tail.chunks(2)
        .map(|pair| {
            let ai = KNOWN.iter().find(|k| **k == pair[0]).ok_or_else(|| {
                malformed(
                    text,
                    FORM,
                    &format!("application identifier `{}` is not read here", pair[0]),
                )
            })?;
            Ok((*ai, decode_component(text, FORM, pair[1])?))
        })
        .collect()
}

fn item_from_link(text: &str, path: &str) -> Result<ItemId, Gs1Error> {
    const FORM: &str = "GS1 Digital Link item";
    let pairs = link_pairs(text, path)?;
    let gtin = match pairs.first() {
        Some(("01", v)) => Gtin::parse(v)?,
        _ => return Err(malformed(text, FORM, "the path must start with /01/<GTIN>")),
    };
    let mut id = ItemId {
        gtin,
        serial: None,
        lot: None,
    };
    for (ai, value) in &pairs[1..] {
        match *ai {
            "21" if id.serial.is_none() => id.serial = Some(value.clone()),
            "10" if id.lot.is_none() => id.lot = Some(value.clone()),
            // CPV (22) narrows the variant of the same GTIN: no effect on stock identity.
            "22" => {}
            other => {
                return Err(malformed(
                    text,
                    FORM,
                    &format!("`/{other}/` does not belong after /01/<GTIN> here"),
                ))
            }
        }
    }
    Ok(id)
}

/// Percent-decodes one URN or URI component; it must be non-empty UTF-8.
fn decode_component(text: &str, form: &'static str, raw: &str) -> Result<String, Gs1Error> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| malformed(text, form, "bad percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let value =
        String::from_utf8(out).map_err(|_| malformed(text, form, "escapes are not UTF-8"))?;
    if value.is_empty() {
        return Err(malformed(text, form, "an empty component"));
    }
    Ok(value)
}

/// Characters GS1 AI values may carry literally in URNs and URIs; the rest is escaped.
fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Splits a GTIN-14 into company prefix and item reference (indicator first) for a URN.
fn urn_parts(gtin: &Gtin, cp_len: usize) -> Option<(String, String)> {
    if !(6..=12).contains(&cp_len) {
        return None;
    }
    let g = gtin.as_str();
    let cp = &g[1..1 + cp_len];
    let item = format!("{}{}", &g[..1], &g[1 + cp_len..13]);
    Some((cp.to_string(), item))
}

/// `urn:epc:id:sgtin:CP.REF.SERIAL`; `None` for a company prefix length outside 6..=12.
pub fn sgtin_urn(gtin: &Gtin, cp_len: usize, serial: &str) -> Option<String> {
    let (cp, item) = urn_parts(gtin, cp_len)?;
    Some(format!(
        "urn:epc:id:sgtin:{cp}.{item}.{}",
        encode_component(serial)
    ))
}

/// `urn:epc:class:lgtin:CP.REF.LOT`.
pub fn lgtin_urn(gtin: &Gtin, cp_len: usize, lot: &str) -> Option<String> {
    let (cp, item) = urn_parts(gtin, cp_len)?;
    Some(format!(
        "urn:epc:class:lgtin:{cp}.{item}.{}",
        encode_component(lot)
    ))
}

/// `urn:epc:id:sgln:CP.LOCREF.EXT` (`0` for no extension).
pub fn sgln_urn(location: &LocationId, cp_len: usize) -> Option<String> {
    if !(6..=12).contains(&cp_len) {
        return None;
    }
    let g = location.gln.as_str();
    let ext = location
        .extension
        .as_deref()
        .map_or("0".to_string(), encode_component);
    Some(format!(
        "urn:epc:id:sgln:{}.{}.{ext}",
        &g[..cp_len],
        &g[cp_len..12]
    ))
}

/// A GS1 Digital Link URI for an item on `https://id.gs1.org`.
pub fn item_link(item: &ItemId) -> String {
    let mut out = format!("https://id.gs1.org/01/{}", item.gtin);
    if let Some(lot) = &item.lot {
        out.push_str(&format!("/10/{}", encode_component(lot)));
    }
    if let Some(serial) = &item.serial {
        out.push_str(&format!("/21/{}", encode_component(serial)));
    }
    out
}

/// A GS1 Digital Link URI for a location on `https://id.gs1.org`.
pub fn location_link(location: &LocationId) -> String {
    match &location.extension {
        Some(ext) => format!(
            "https://id.gs1.org/414/{}/254/{}",
            location.gln,
            encode_component(ext)
        ),
        None => format!("https://id.gs1.org/414/{}", location.gln),
    }
}

#[cfg(test)]
mod tests;
