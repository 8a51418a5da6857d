//! GS1's published examples for each form (GS1 General Specifications, EPC Tag Data
//! Standard 2.x, GS1 Digital Link URI Syntax 1.x) and round trips of every encoder.

use proptest::prelude::*;

use super::*;

fn gtin(s: &str) -> Gtin {
    Gtin::parse(s).unwrap()
}

#[test]
fn gtins_of_every_length_normalise_to_fourteen_digits() {
    // GTIN-13 from the Digital Link standard, GTIN-8 and GTIN-12 from the General Specifications.
    assert_eq!(gtin("9520123456788").as_str(), "09520123456788");
    assert_eq!(gtin("09520123456788").as_str(), "09520123456788");
    assert_eq!(gtin("95012346").as_str(), "00000095012346");
    assert_eq!(gtin("614141000036").as_str(), "00614141000036");
    assert!(matches!(
        Gtin::parse("9520123456787"),
        Err(Gs1Error::CheckDigit { expected: 8, .. })
    ));
    assert!(matches!(
        Gtin::parse("952012345678"),
        Err(Gs1Error::CheckDigit { .. })
    ));
    assert!(matches!(Gtin::parse("12345"), Err(Gs1Error::GtinShape(_))));
    assert!(matches!(
        Gtin::parse("95201234567a8"),
        Err(Gs1Error::GtinShape(_))
    ));
}

#[test]
fn sgtin_urn_from_the_tag_data_standard() {
    let id = parse_item("urn:epc:id:sgtin:0614141.112345.400").unwrap();
    assert_eq!(id.gtin.as_str(), "10614141123459");
    assert_eq!(id.serial.as_deref(), Some("400"));
    let id = parse_item("urn:epc:id:sgtin:0614141.812345.6789").unwrap();
    assert_eq!(id.gtin.as_str(), "80614141123458");
    // Escaped serial characters are decoded.
    let id = parse_item("urn:epc:id:sgtin:0614141.812345.A%2FB").unwrap();
    assert_eq!(id.serial.as_deref(), Some("A/B"));
    for bad in [
        "urn:epc:id:sgtin:0614141.812345",
        "urn:epc:id:sgtin:0614141.81234.1",
        "urn:epc:id:sgtin:06141.8123456789.1",
        "urn:epc:id:sgtin:0614141.812345.%2",
    ] {
        assert!(
            matches!(parse_item(bad), Err(Gs1Error::Malformed { .. })),
            "{bad}"
        );
    }
}

#[test]
fn lgtin_and_class_pattern_name_a_gtin() {
    let id = parse_item("urn:epc:class:lgtin:4012345.012345.998877").unwrap();
    assert_eq!(id.gtin.as_str(), "04012345123456");
    assert_eq!(id.lot.as_deref(), Some("998877"));
    let id = parse_item("urn:epc:idpat:sgtin:4012345.012345.*").unwrap();
    assert_eq!(id.gtin.as_str(), "04012345123456");
    assert_eq!((id.serial, id.lot), (None, None));
    assert!(parse_item("urn:epc:idpat:sgtin:4012345.012345.7").is_err());
}

#[test]
fn digital_link_items_from_the_standard() {
    let id = parse_item("https://id.gs1.org/01/09520123456788/21/12345").unwrap();
    assert_eq!(id.gtin.as_str(), "09520123456788");
    assert_eq!(id.serial.as_deref(), Some("12345"));
    let id = parse_item("https://id.gs1.org/01/09520123456788/10/ABC123?exp=180426").unwrap();
    assert_eq!(id.lot.as_deref(), Some("ABC123"));
    // Any host and a path prefix; a GTIN-13 is normalised.
    let id = parse_item("https://example.com/gs1/01/9520123456788/10/L%2F1/21/S1").unwrap();
    assert_eq!(id.gtin.as_str(), "09520123456788");
    assert_eq!(id.lot.as_deref(), Some("L/1"));
    assert_eq!(id.serial.as_deref(), Some("S1"));
    assert!(matches!(
        parse_item("https://id.gs1.org/01/09520123456787"),
        Err(Gs1Error::CheckDigit { .. })
    ));
    assert!(parse_item("https://id.gs1.org/01/09520123456788/21").is_err());
    assert!(matches!(parse_item("MUG-001"), Err(Gs1Error::Unknown(_))));
}

#[test]
fn sgln_and_digital_link_locations() {
    let l = parse_location("urn:epc:id:sgln:0614141.12345.400").unwrap();
    assert_eq!(l.gln.as_str(), "0614141123452");
    assert_eq!(l.extension.as_deref(), Some("400"));
    assert_eq!(l.key(), "0614141123452/254/400");
    let l = parse_location("urn:epc:id:sgln:0614141.12345.0").unwrap();
    assert_eq!((l.key(), l.extension), ("0614141123452".to_string(), None));
    let l = parse_location("https://id.gs1.org/414/9520123456788/254/32a%2Fb").unwrap();
    assert_eq!(l.gln.as_str(), "9520123456788");
    assert_eq!(l.extension.as_deref(), Some("32a/b"));
    let l = parse_location("https://id.gs1.org/414/9520123456788").unwrap();
    assert_eq!(l.extension, None);
    assert!(parse_location("urn:epc:id:sgln:0614141.1234.0").is_err());
    assert!(parse_location("https://id.gs1.org/414/9520123456787").is_err());
    assert!(parse_location("https://id.gs1.org/01/09520123456788").is_err());
}

fn any_gtin() -> impl Strategy<Value = Gtin> {
    "[0-9]{13}".prop_map(|body| Gtin::from_parts(&body))
}

fn any_gln() -> impl Strategy<Value = Gln> {
    "[0-9]{12}".prop_map(|body| Gln::from_parts(&body))
}

fn any_value() -> impl Strategy<Value = String> {
    // GS1 AI 82 characters, including ones that must be escaped.
    "[A-Za-z0-9!\"%&'()*+,./:;<=>?_-]{1,20}"
}

proptest! {
    #[test]
    fn gtin_forms_round_trip(g in any_gtin(), cp_len in 6usize..=12, serial in any_value(), lot in any_value()) {
        let urn = sgtin_urn(&g, cp_len, &serial).unwrap();
        let id = parse_item(&urn).unwrap();
        prop_assert_eq!((&id.gtin, id.serial.as_deref()), (&g, Some(serial.as_str())));
        let urn = lgtin_urn(&g, cp_len, &lot).unwrap();
        let id = parse_item(&urn).unwrap();
        prop_assert_eq!((&id.gtin, id.lot.as_deref()), (&g, Some(lot.as_str())));
        let item = ItemId { gtin: g.clone(), serial: Some(serial), lot: Some(lot) };
        prop_assert_eq!(parse_item(&item_link(&item)).unwrap(), item);
        // The GTIN-13 inside a GTIN-14 with indicator 0 parses to the same key.
        if g.as_str().starts_with('0') {
            prop_assert_eq!(Gtin::parse(&g.as_str()[1..]).unwrap(), g);
        }
    }

    #[test]
    fn location_forms_round_trip(gln in any_gln(), cp_len in 6usize..=12, ext in proptest::option::of(any_value())) {
        let ext = ext.filter(|e| e != "0");
        let loc = LocationId { gln, extension: ext };
        prop_assert_eq!(parse_location(&sgln_urn(&loc, cp_len).unwrap()).unwrap(), loc.clone());
        prop_assert_eq!(parse_location(&location_link(&loc)).unwrap(), loc);
    }
}
