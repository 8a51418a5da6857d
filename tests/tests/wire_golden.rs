//! Wire formats v1 and v2 must decode forever: agents in the field are upgraded long after
//! the collector. These golden payloads were written by the v1 and v2 encoders and are
//! committed; if a change to the model or the encoder alters a single byte, this suite fails
//! and the change needs a new wire version instead (see docs/WIRE.md).
//!
//! `STOCKSYNC_BLESS_GOLDEN=1 cargo test -p stocksync-tests --test wire_golden` rewrites the
//! files; do that only when adding a new golden vector, never to make a failing test pass.

use std::path::PathBuf;

use stocksync_common::model::*;
use stocksync_common::wire::{self, Ack, AckOutcome, Batch, WireError};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name)
}

fn kinds() -> Vec<MovementKind> {
    vec![
        MovementKind::Receipt,
        MovementKind::Shipment,
        MovementKind::Adjustment {
            direction: Direction::Decrease,
            reason: "breakage".into(),
        },
        MovementKind::Count,
        MovementKind::TransferOut,
        MovementKind::TransferIn,
        MovementKind::Return,
        MovementKind::Damage,
        MovementKind::Inspection {
            outcome: InspectionOutcome::Damaged,
        },
        MovementKind::WriteOff,
        MovementKind::Cancellation,
        MovementKind::Expected,
    ]
}

fn batch() -> Batch {
    let movements = kinds()
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Movement {
            seq: 1_000 + i as u64,
            sku: Sku(format!("SKU-{i}")),
            location: Location {
                warehouse: "ams".into(),
                bin: (i % 2 == 0).then(|| "A-01".to_string()),
            },
            source: if i % 3 == 0 { "wms" } else { "scanner" }.into(),
            kind,
            quantity: 12 * (i as u64 + 1),
            unit: if i % 2 == 0 { "case" } else { "each" }.into(),
            unit_quantity: if i % 2 == 0 {
                i as u64 + 1
            } else {
                12 * (i as u64 + 1)
            },
            occurred_at: OccurredAt {
                unix_ms: 1_795_600_000_000 + i as i64,
                offset_seconds: if i % 2 == 0 { 3600 } else { -18_000 },
            },
            references: References {
                order: (i % 4 == 0).then(|| format!("O-{i}")),
                transfer: (i % 4 == 1).then(|| format!("T-{i}")),
                return_id: (i % 4 == 2).then(|| format!("R-{i}")),
                peer_warehouse: (i % 4 == 1).then(|| "ber".to_string()),
            },
            external_id: (i % 5 == 0).then(|| format!("scan-{i}")),
            note: (i == 3).then(|| "cycle count, aisle 4 ✓".to_string()),
            origin: Default::default(),
        })
        .collect();
    Batch {
        agent_id: "ams-agent-1".into(),
        journal_id: 0x1234_5678_9abc,
        warehouse: "ams".into(),
        movements,
        sent_at_ms: None,
    }
}

/// The same movements as v2 sends them: with their input paths and the send time.
fn batch_v2() -> Batch {
    let mut b = batch();
    for (i, m) in b.movements.iter_mut().enumerate() {
        m.origin = Origin {
            input: if m.source == "wms" {
                "http".to_string()
            } else {
                format!("scanner:scanners/ams/gun-{i}/movements")
            },
            validated: i % 4 != 3,
        };
    }
    b.sent_at_ms = Some(1_795_600_000_999);
    b
}

fn acks() -> Vec<Ack> {
    vec![
        Ack {
            agent_id: "ams-agent-1".into(),
            first_seq: 1_000,
            last_seq: 1_011,
            outcome: AckOutcome::Applied {
                applied: 11,
                duplicates: 1,
            },
        },
        Ack {
            agent_id: "ams-agent-1".into(),
            first_seq: 7,
            last_seq: 9,
            outcome: AckOutcome::Rejected {
                reason: "warehouse mismatch".into(),
            },
        },
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|line| line.iter().map(|b| format!("{b:02x}")).collect::<String>() + "\n")
        .collect()
}

fn unhex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

fn check(name: &str, encoded: &[u8]) -> Vec<u8> {
    let path = golden(name);
    if std::env::var_os("STOCKSYNC_BLESS_GOLDEN").is_some() {
        std::fs::write(&path, hex(encoded)).unwrap();
    }
    let stored = unhex(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    );
    assert_eq!(
        hex(&stored),
        hex(encoded),
        "{name}: v1 encoding changed; that needs a new wire version"
    );
    stored
}

#[test]
fn golden_v1_batch_decodes_to_the_same_movements() {
    let stored = check("batch_v1.hex", &wire::encode_batch_v1(&batch()));
    assert_eq!(wire::decode_batch(&stored).unwrap(), batch());
    assert_eq!(stored[0], 1, "first byte is the wire version");
}

#[test]
fn golden_v2_batch_decodes_with_origins_and_send_time() {
    let stored = check("batch_v2.hex", &wire::encode_batch(&batch_v2()));
    assert_eq!(wire::decode_batch(&stored).unwrap(), batch_v2());
    assert_eq!(stored[0], 2, "first byte is the wire version");
    // Each v2 movement's bytes are its v1 bytes followed by its origin, and decode alone.
    let received = wire::decode_batch_with_parts(&stored).unwrap();
    for (m, range) in batch_v2().movements.iter().zip(&received.parts) {
        assert_eq!(&wire::decode_movement(&stored[range.clone()]).unwrap(), m);
    }
}

#[test]
fn golden_v1_acks_decode() {
    for (i, ack) in acks().into_iter().enumerate() {
        let stored = check(&format!("ack_v1_{i}.hex"), &wire::encode_ack(&ack));
        assert_eq!(wire::decode_ack(&stored).unwrap(), ack);
    }
}

#[test]
fn the_agents_pre_encoded_batches_match_the_golden_bytes() {
    let b = batch_v2();
    let parts: Vec<Vec<u8>> = b.movements.iter().map(wire::encode_movement).collect();
    let joined = wire::encode_batch_from_parts(
        &b.agent_id,
        b.journal_id,
        &b.warehouse,
        b.sent_at_ms.unwrap(),
        parts.iter().map(Vec::as_slice),
    );
    assert_eq!(
        hex(&joined),
        hex(&unhex(
            &std::fs::read_to_string(golden("batch_v2.hex")).unwrap()
        ))
    );
}

#[test]
fn a_future_version_is_refused_by_name_and_truncation_is_malformed() {
    let mut stored = unhex(&std::fs::read_to_string(golden("batch_v1.hex")).unwrap());
    let truncated = &stored[..stored.len() - 3];
    assert!(matches!(
        wire::decode_batch(truncated),
        Err(WireError::Malformed { version: 1, .. })
    ));
    stored[0] = 3;
    let err = wire::decode_batch(&stored).unwrap_err();
    assert!(matches!(err, WireError::UnknownVersion { version: 3 }));
    assert!(
        err.to_string().contains("wire version 3 is unknown"),
        "{err}"
    );
}
