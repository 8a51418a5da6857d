//! The generated movement sets both convergence tests deliver (the SQLite ledger's in
//! `collector/tests/convergence.rs`, the PostgreSQL store's in
//! `tests/tests/postgres_convergence.rs`): agents, policies, movements with colliding
//! timestamps, and the batches of one delivery, so the two backends see exactly the same
//! input for the same seed.

#![allow(dead_code)] // shared by two test crates; each uses its part

use proptest::prelude::*;
use stocksync_collector::authority::Authority;
use stocksync_collector::authority::{LocationPolicy, ReturnsPolicy, SourcePolicy};
use stocksync_collector::reserve;
use stocksync_common::model::*;
use stocksync_common::wire::Batch;

/// Agents and the warehouse each journals for.
pub const AGENTS: [(&str, &str); 3] = [("a1", "ams"), ("a2", "ams"), ("b1", "ber")];

pub fn authority() -> Authority {
    Authority::new(&[
        LocationPolicy {
            warehouse: "ams".into(),
            authority: Some("wms".into()),
            other_sources: SourcePolicy::Apply,
            returns_to: ReturnsPolicy::QualityControl,
        },
        LocationPolicy {
            warehouse: "ber".into(),
            authority: Some("wms".into()),
            other_sources: SourcePolicy::Audit,
            returns_to: ReturnsPolicy::Available,
        },
    ])
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub agent: usize,
    pub kind: u8,
    pub scanner: bool,
    pub bin: bool,
    pub quantity: u64,
    pub second: i64,
    pub transfer: bool,
    /// Voided by an operator once delivered.
    pub void: bool,
}

pub fn spec() -> impl Strategy<Value = Spec> {
    (
        0..AGENTS.len(),
        0u8..15,
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.3),
        0u64..20,
        0i64..8,
        any::<bool>(),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(agent, kind, scanner, bin, quantity, second, transfer, void)| Spec {
                agent,
                kind,
                scanner,
                bin,
                quantity,
                second,
                transfer,
                void,
            },
        )
}

/// Turns specs into movements with dense seqs per agent.
pub fn movements(specs: &[Spec]) -> Vec<(usize, Movement)> {
    let mut seqs = [0u64; AGENTS.len()];
    specs
        .iter()
        .map(|s| {
            seqs[s.agent] += 1;
            let warehouse = AGENTS[s.agent].1;
            let peer = if warehouse == "ams" { "ber" } else { "ams" };
            let kind = match s.kind {
                0 | 1 => MovementKind::Receipt,
                2 => MovementKind::Shipment,
                3 | 4 => MovementKind::Count,
                5 => MovementKind::TransferOut,
                6 => MovementKind::TransferIn,
                7 => MovementKind::Return,
                8 => MovementKind::Inspection {
                    outcome: InspectionOutcome::Available,
                },
                9 => MovementKind::Inspection {
                    outcome: InspectionOutcome::Damaged,
                },
                10 => MovementKind::Damage,
                11 => MovementKind::WriteOff,
                12 => MovementKind::Expected,
                13 => MovementKind::Cancellation,
                _ => MovementKind::Adjustment {
                    direction: Direction::Decrease,
                    reason: "broken".into(),
                },
            };
            let is_transfer = matches!(kind, MovementKind::TransferOut | MovementKind::TransferIn);
            let of_order = matches!(
                kind,
                MovementKind::Shipment | MovementKind::Cancellation | MovementKind::Return
            );
            let quantity = if matches!(kind, MovementKind::Count) {
                s.quantity
            } else {
                s.quantity + 1
            };
            let m = Movement {
                seq: seqs[s.agent],
                sku: Sku("S".into()),
                location: Location {
                    warehouse: warehouse.into(),
                    bin: s.bin.then(|| "A".into()),
                },
                source: if s.scanner { "scanner" } else { "wms" }.into(),
                kind,
                quantity,
                unit: "each".into(),
                unit_quantity: quantity,
                occurred_at: OccurredAt {
                    unix_ms: 1_700_000_000_000 + s.second * 1000,
                    offset_seconds: 0,
                },
                references: References {
                    transfer: is_transfer.then(|| if s.transfer { "T1" } else { "T2" }.into()),
                    peer_warehouse: is_transfer.then(|| peer.into()),
                    // Shipments consume the reservations of their order; cancellations and
                    // returns beyond what an order shipped are reversal records.
                    order: of_order.then(|| if s.transfer { "O1" } else { "O2" }.into()),
                    ..References::default()
                },
                external_id: None,
                note: None,
                origin: Default::default(),
            };
            (s.agent, m)
        })
        .collect()
}

/// A deterministic shuffle, so a failing case replays exactly.
pub fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// One delivery's batches: each agent's movements in chunks of `chunk`, every third batch
/// delivered twice, all shuffled by `seed`.
pub fn batches(all: &[(usize, Movement)], seed: u64, chunk: usize) -> Vec<Batch> {
    let mut batches = Vec::new();
    for (agent, (agent_id, warehouse)) in AGENTS.iter().enumerate() {
        let mine: Vec<Movement> = all
            .iter()
            .filter(|(a, _)| *a == agent)
            .map(|(_, m)| m.clone())
            .collect();
        for part in mine.chunks(chunk) {
            batches.push(Batch {
                agent_id: agent_id.to_string(),
                journal_id: 7,
                warehouse: warehouse.to_string(),
                movements: part.to_vec(),
                sent_at_ms: None,
            });
        }
    }
    let duplicates: Vec<Batch> = batches.iter().step_by(3).cloned().collect();
    batches.extend(duplicates);
    shuffle(&mut batches, seed | 1);
    batches
}

/// The reservations each delivery tries at ams between its two halves: (order, quantity).
/// Shipments carry these orders, so they consume the holds.
pub const RESERVATIONS: [(&str, i64); 2] = [("O1", 1), ("O2", 2)];

/// The order whose reservation is released by hand after deliveries with an odd seed.
pub const RELEASED: &str = "O2";

/// Whether the delivery with `seed` releases [`RELEASED`]'s reservation at its end.
pub fn releases(seed: u64) -> bool {
    seed & 1 == 1
}

/// The request holding `quantity` of S at ams for `order`; its id is `r-<order>`.
pub fn reservation(order: &str, quantity: i64) -> reserve::Request {
    reserve::Request {
        id: format!("r-{order}"),
        order: order.into(),
        sku: "S".into(),
        warehouse: "ams".into(),
        quantity,
        channel: None,
        ttl_secs: None,
    }
}
