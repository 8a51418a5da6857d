//! The reference model of both convergence tests: the rules of docs/MOVEMENTS.md in closed
//! form (no replay), and the comparable form of what a delivery produced.

#![allow(dead_code)] // shared by two test crates; each uses its part

use std::collections::BTreeMap;

use stocksync_common::model::*;

use crate::movements::AGENTS;

/// Everything the projection produced, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// (warehouse, bin) -> [available, reserved, damaged, qc, in_transit, incoming]
    pub stock: BTreeMap<(String, String), [i64; 6]>,
    /// (agent, seq) -> (expected, counted)
    pub drift: BTreeMap<(String, u64), (i64, i64)>,
    pub conflicts: BTreeMap<(String, u64), (i64, i64)>,
    /// transfer -> (shipped, received)
    pub discrepancies: BTreeMap<String, (i64, i64)>,
    /// (agent, seq) of an inspection or write-off -> (requested, held)
    pub shortfalls: BTreeMap<(String, u64), (i64, i64)>,
}

/// A reservation a delivery managed to create (whether the warehouse had the stock at that
/// moment depends on what had arrived, so the reference takes the created ones as given).
#[derive(Debug, Clone)]
pub struct Hold {
    pub order: &'static str,
    pub quantity: i64,
}

/// What reservation `h` still holds at the end: its quantity less its order's shipments at
/// ams (never below 0).
pub fn open_hold(kept: &[(usize, Movement)], h: &Hold) -> i64 {
    let shipped: i64 = kept
        .iter()
        .filter(|(a, m)| AGENTS[*a].1 == "ams" && m.kind == MovementKind::Shipment)
        .filter(|(_, m)| m.references.order.as_deref() == Some(h.order))
        .map(|(_, m)| m.quantity as i64)
        .sum();
    (h.quantity - shipped).max(0)
}

/// The reference with the reservations' holds on the warehouse-level row of ams.
pub fn with_holds(mut out: Outcome, kept: &[(usize, Movement)], holds: &[Hold]) -> Outcome {
    let held: i64 = holds.iter().map(|h| open_hold(kept, h)).sum();
    if held != 0 {
        let row = out
            .stock
            .entry(("ams".into(), String::new()))
            .or_insert([0; 6]);
        row[0] -= held;
        row[1] += held;
    }
    out
}

struct Fact {
    agent: String,
    m: Movement,
}

impl Fact {
    fn order(&self) -> (i64, &str, u64) {
        (self.m.occurred_at.unix_ms, &self.agent, self.m.seq)
    }
    fn key(&self) -> (String, String) {
        (
            self.m.location.warehouse.clone(),
            self.m.location.bin_key().to_string(),
        )
    }
    fn by_authority(&self) -> bool {
        self.m.source == "wms"
    }
    /// Deltas of non-authority sources apply at ams (policy apply), not at ber (audit).
    fn effective_delta(&self) -> bool {
        !matches!(self.m.kind, MovementKind::Count)
            && (self.by_authority() || self.m.location.warehouse == "ams")
    }
    fn id(&self) -> (String, u64) {
        (self.agent.clone(), self.m.seq)
    }
    /// [available, damaged, quality_control] change at the movement's own location; an
    /// inspection or write-off moves only what it `took` (see `Clamps`).
    fn physical(&self, clamps: &Clamps) -> [i64; 3] {
        let q = self.m.quantity as i64;
        let t = clamps.took.get(&self.id()).copied().unwrap_or(q);
        let returns_to_qc = self.m.location.warehouse == "ams";
        match &self.m.kind {
            MovementKind::Receipt | MovementKind::Cancellation | MovementKind::TransferIn => {
                [q, 0, 0]
            }
            MovementKind::Shipment | MovementKind::TransferOut => [-q, 0, 0],
            MovementKind::Adjustment { direction, .. } => match direction {
                Direction::Increase => [q, 0, 0],
                Direction::Decrease => [-q, 0, 0],
            },
            MovementKind::Return if returns_to_qc => [0, 0, q],
            MovementKind::Return => [q, 0, 0],
            MovementKind::Damage => [-q, q, 0],
            MovementKind::Inspection { outcome } => match outcome {
                InspectionOutcome::Available => [t, 0, -t],
                InspectionOutcome::Damaged => [0, t, -t],
            },
            MovementKind::WriteOff => [0, -t, 0],
            MovementKind::Count | MovementKind::Expected => [0, 0, 0],
        }
    }
}

/// Quality control and damaged per key, walked in order: an inspection or write-off takes
/// at most what its state holds (counts never touch either state).
#[derive(Default)]
struct Clamps {
    /// What each inspection and write-off took.
    took: BTreeMap<(String, u64), i64>,
    /// key -> (damaged, quality_control) at the end.
    end: BTreeMap<(String, String), (i64, i64)>,
    shortfalls: BTreeMap<(String, u64), (i64, i64)>,
}

fn clamps(facts: &[Fact]) -> Clamps {
    let mut out = Clamps::default();
    let mut ordered: Vec<&Fact> = facts.iter().filter(|f| f.effective_delta()).collect();
    ordered.sort_by(|a, b| a.order().cmp(&b.order()));
    for f in ordered {
        let (damaged, qc) = out.end.entry(f.key()).or_default();
        let q = f.m.quantity as i64;
        let returns_to_qc = f.m.location.warehouse == "ams";
        let state = match &f.m.kind {
            MovementKind::Return if returns_to_qc => {
                *qc += q;
                continue;
            }
            MovementKind::Damage => {
                *damaged += q;
                continue;
            }
            MovementKind::Inspection { .. } => &mut *qc,
            MovementKind::WriteOff => &mut *damaged,
            _ => continue,
        };
        let took = q.min(*state);
        *state -= took;
        if let MovementKind::Inspection {
            outcome: InspectionOutcome::Damaged,
        } = f.m.kind
        {
            *damaged += took;
        }
        out.took.insert(f.id(), took);
        if took < q {
            out.shortfalls.insert(f.id(), (q, took));
        }
    }
    out
}

/// Bins (not the warehouse level) of `warehouse` that any fact names.
fn bins_of(facts: &[Fact], warehouse: &str) -> Vec<String> {
    let mut bins: Vec<String> = facts
        .iter()
        .filter(|f| f.m.location.warehouse == warehouse && f.m.location.bin.is_some())
        .map(|f| f.key().1)
        .collect();
    bins.sort();
    bins.dedup();
    bins
}

/// on_hand at `key` from the facts ordered strictly before `before` (all if `None`): the
/// latest authoritative count plus the deltas after it. A warehouse-level count counts the
/// total, so what it sets on the warehouse-level row is the count minus the bins' on_hand
/// just before it.
fn on_hand(
    facts: &[Fact],
    clamps: &Clamps,
    key: &(String, String),
    before: Option<(i64, &str, u64)>,
) -> i64 {
    let here: Vec<&Fact> = facts
        .iter()
        .filter(|f| f.key() == *key && before.is_none_or(|b| f.order() < b))
        .collect();
    let base = here
        .iter()
        .filter(|f| matches!(f.m.kind, MovementKind::Count) && f.by_authority())
        .max_by(|a, b| a.order().cmp(&b.order()));
    let since = |f: &&&Fact| base.is_none_or(|c| f.order() > c.order());
    let deltas: i64 = here
        .iter()
        .filter(|f| f.effective_delta())
        .filter(since)
        .map(|f| f.physical(clamps).iter().sum::<i64>())
        .sum();
    let base = match base {
        None => 0,
        Some(c) if key.1.is_empty() => {
            let bins: i64 = bins_of(facts, &key.0)
                .into_iter()
                .map(|b| on_hand(facts, clamps, &(key.0.clone(), b), Some(c.order())))
                .sum();
            c.m.quantity as i64 - bins
        }
        Some(c) => c.m.quantity as i64,
    };
    base + deltas
}

/// What a count expected: its key's on_hand before it, for a warehouse-level count the
/// warehouse total.
fn expected_at(facts: &[Fact], clamps: &Clamps, f: &Fact) -> i64 {
    let key = f.key();
    let mut expected = on_hand(facts, clamps, &key, Some(f.order()));
    if key.1.is_empty() {
        for b in bins_of(facts, &key.0) {
            expected += on_hand(facts, clamps, &(key.0.clone(), b), Some(f.order()));
        }
    }
    expected
}

pub fn reference(all: &[(usize, Movement)]) -> Outcome {
    let facts: Vec<Fact> = all
        .iter()
        .map(|(a, m)| Fact {
            agent: AGENTS[*a].0.to_string(),
            m: m.clone(),
        })
        .collect();
    let clamps = clamps(&facts);
    let mut out = Outcome {
        shortfalls: clamps.shortfalls.clone(),
        ..Outcome::default()
    };
    let mut keys: Vec<(String, String)> = facts.iter().map(Fact::key).collect();
    keys.extend([("ams".into(), String::new()), ("ber".into(), String::new())]);
    keys.sort();
    keys.dedup();
    for key in keys {
        let effective = || {
            facts
                .iter()
                .filter(|f| f.key() == key && f.effective_delta())
        };
        let (damaged, qc) = clamps.end.get(&key).copied().unwrap_or_default();
        let available = on_hand(&facts, &clamps, &key, None) - damaged - qc;
        let incoming: i64 = effective()
            .filter(|f| matches!(f.m.kind, MovementKind::Expected))
            .map(|f| f.m.quantity as i64)
            .sum();
        let in_transit: i64 = if key.1.is_empty() {
            let sent: i64 = facts
                .iter()
                .filter(|f| f.effective_delta() && matches!(f.m.kind, MovementKind::TransferOut))
                .filter(|f| f.m.references.peer_warehouse.as_deref() == Some(&key.0))
                .map(|f| f.m.quantity as i64)
                .sum();
            let received: i64 = facts
                .iter()
                .filter(|f| f.effective_delta() && matches!(f.m.kind, MovementKind::TransferIn))
                .filter(|f| f.m.location.warehouse == key.0)
                .map(|f| f.m.quantity as i64)
                .sum();
            sent - received
        } else {
            0
        };
        let s = [available, 0, damaged, qc, in_transit, incoming];
        if s != [0; 6] {
            out.stock.insert(key, s);
        }
    }
    for f in facts
        .iter()
        .filter(|f| matches!(f.m.kind, MovementKind::Count))
    {
        let expected = expected_at(&facts, &clamps, f);
        let counted = f.m.quantity as i64;
        if f.by_authority() {
            if expected != counted {
                out.drift.insert(f.id(), (expected, counted));
            }
        } else {
            // A count from a non-authority source is a conflict under both apply and audit.
            out.conflicts.insert(f.id(), (expected, counted));
        }
    }
    for t in ["T1", "T2"] {
        let leg = |kind: &str| -> Option<i64> {
            let legs: Vec<i64> = facts
                .iter()
                .filter(|f| f.effective_delta() && f.m.kind.name() == kind)
                .filter(|f| f.m.references.transfer.as_deref() == Some(t))
                .map(|f| f.m.quantity as i64)
                .collect();
            (!legs.is_empty()).then(|| legs.iter().sum())
        };
        if let (Some(shipped), Some(received)) = (leg("transfer_out"), leg("transfer_in")) {
            if shipped != received {
                out.discrepancies.insert(t.into(), (shipped, received));
            }
        }
    }
    out
}
