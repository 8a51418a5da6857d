//! The byte examples in `docs/WIRE.md`, checked against the real encoder and decoder, so the
//! document an integrator writes a decoder from cannot drift from the code.

use stocksync_common::model::Origin;
use stocksync_common::wire::{self, Ack, AckOutcome, Batch};
use stocksync_common::{Location, Movement, MovementKind, OccurredAt, References, Sku};

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn example_movement() -> Movement {
    Movement {
        seq: 1,
        sku: Sku("MUG-001".into()),
        location: Location {
            warehouse: "ams".into(),
            bin: Some("A-01".into()),
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 12,
        unit: "each".into(),
        unit_quantity: 12,
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000,
            offset_seconds: 3600,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Default::default(),
    }
}

#[test]
fn ack_example() {
    let ack = Ack {
        agent_id: "a1".into(),
        first_seq: 1,
        last_seq: 3,
        outcome: AckOutcome::Applied {
            applied: 3,
            duplicates: 0,
        },
    };
    let bytes = wire::encode_ack(&ack);
    assert_eq!(hex(&bytes), "01 02 61 31 01 03 00 03 00");
    assert_eq!(wire::decode_ack(&bytes).unwrap(), ack);
}

#[test]
fn movement_and_batch_example_v1() {
    let m = example_movement();
    let batch = Batch {
        agent_id: "ams-1".into(),
        journal_id: 7,
        warehouse: "ams".into(),
        movements: vec![m],
        sent_at_ms: None,
    };
    let bytes = wire::encode_batch_v1(&batch);
    assert_eq!(
        hex(&bytes[..14]),
        "01 05 61 6d 73 2d 31 07 03 61 6d 73 01 01",
        "version, agent_id, journal_id, warehouse, movement count, first seq"
    );
    assert_eq!(hex(&bytes[13..]), MOVEMENT_HEX);
    assert_eq!(wire::decode_batch(&bytes).unwrap(), batch);
}

#[test]
fn movement_and_batch_example_v2() {
    let mut m = example_movement();
    m.origin = Origin {
        input: "http".into(),
        validated: true,
    };
    let movement = wire::encode_movement(&m);
    let batch = Batch {
        agent_id: "ams-1".into(),
        journal_id: 7,
        warehouse: "ams".into(),
        movements: vec![m],
        sent_at_ms: Some(1_795_000_000_500),
    };
    let bytes = wire::encode_batch(&batch);
    assert_eq!(
        hex(&bytes[..20]),
        "02 05 61 6d 73 2d 31 07 03 61 6d 73 e8 ff b2 e5 bd 68 01 01",
        "version, agent_id, journal_id, warehouse, sent_at_ms, movement count, first seq"
    );
    assert_eq!(
        &bytes[19..],
        movement.as_slice(),
        "movements are concatenated as journaled"
    );
    assert_eq!(hex(&movement), format!("{MOVEMENT_HEX} 04 68 74 74 70 01"));
    assert_eq!(wire::decode_batch(&bytes).unwrap(), batch);
}

/// The movement as annotated line by line in `docs/WIRE.md`.
const MOVEMENT_HEX: &str = "01 07 4d 55 47 2d 30 30 31 03 61 6d 73 01 04 41 2d 30 31 03 77 6d 73 \
                            00 0c 04 65 61 63 68 0c 80 f8 b2 e5 bd 68 a0 38 00 00 00 00 00 00";
