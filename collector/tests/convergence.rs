//! Convergence: the projection depends only on the set of movements, never on their arrival
//! order, duplicates or delays.
//!
//! Generated movement sets (receipts, shipments, counts from the authority and from others,
//! transfers between two warehouses, returns, inspections, damage, write-offs, expected
//! receipts, with timestamps that collide and arrive in any order) are delivered through the
//! real ledger on real SQLite files in several shuffled orders with duplicated batches. Every
//! delivery must end in the same stock, drift, conflict and discrepancy records, equal to
//! a small reference model that states the rules in closed form instead of replaying.
//! Some movements are voided by an operator, between and after deliveries (some twice): the
//! result must be the reference of the movements that were not voided.
//! Each delivery's projection is then thrown away and rebuilt from the ledger alone
//! (`rebuild::rebuild`), which must give the same records again.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use stocksync_collector::authority::Authority;
use stocksync_collector::ledger::Ledger;
use stocksync_collector::metrics::Metrics;
use stocksync_collector::void;
use stocksync_common::config::{LocationPolicy, ReturnsPolicy, SourcePolicy};
use stocksync_common::model::*;
use stocksync_common::wire::{self, Batch};

/// Agents and the warehouse each journals for.
const AGENTS: [(&str, &str); 3] = [("a1", "ams"), ("a2", "ams"), ("b1", "ber")];

fn authority() -> Authority {
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
struct Spec {
    agent: usize,
    kind: u8,
    scanner: bool,
    bin: bool,
    quantity: u64,
    second: i64,
    transfer: bool,
    /// Voided by an operator once delivered.
    void: bool,
}

fn spec() -> impl Strategy<Value = Spec> {
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
fn movements(specs: &[Spec]) -> Vec<(usize, Movement)> {
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
fn shuffle<T>(items: &mut [T], mut seed: u64) {
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        items.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

/// Everything the projection produced, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Outcome {
    /// (warehouse, bin) -> [available, reserved, damaged, qc, in_transit, incoming]
    stock: BTreeMap<(String, String), [i64; 6]>,
    /// (agent, seq) -> (expected, counted)
    drift: BTreeMap<(String, u64), (i64, i64)>,
    conflicts: BTreeMap<(String, u64), (i64, i64)>,
    /// transfer -> (shipped, received)
    discrepancies: BTreeMap<String, (i64, i64)>,
    /// (agent, seq) of an inspection or write-off -> (requested, held)
    shortfalls: BTreeMap<(String, u64), (i64, i64)>,
}

/// Delivers the movements through the real ledger: chunked into batches, shuffled, some
/// batches delivered twice.
fn deliver(
    all: &[(usize, Movement)],
    voids: &std::collections::BTreeSet<(String, u64)>,
    seed: u64,
    chunk: usize,
) -> Outcome {
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

    let file = TempDb(std::env::temp_dir().join(format!(
        "stocksync-convergence-{}-{seed}-{chunk}-{}.db",
        std::process::id(),
        all.len()
    )));
    let path = file.0.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let outcome = rt.block_on(async {
        let ledger = Ledger::open_with(&path, Arc::new(Metrics::default()), authority()).unwrap();
        // Half the batches, then the voids of what they delivered (each twice), then the
        // rest, then the remaining voids: voids interleave with late movements.
        let half = batches.len() / 2;
        let mut delivered = std::collections::BTreeSet::new();
        let mut voided = std::collections::BTreeSet::new();
        for phase in [&batches[..half], &batches[half..]] {
            let mut waiting = Vec::new();
            for b in phase {
                let topic = format!("stocksync/v1/{}/movements", b.warehouse);
                // Through the wire, as the consumer hands batches over: decoded with each
                // movement's byte range, stored as received.
                let payload = wire::encode_batch(b);
                let received = wire::decode_batch_with_parts(&payload).unwrap();
                waiting.push(ledger.apply(received, payload, topic).await.unwrap());
                delivered.extend(b.movements.iter().map(|m| (b.agent_id.clone(), m.seq)));
            }
            for w in waiting {
                w.await.unwrap().unwrap();
            }
            let mut now: Vec<(String, u64)> = voids
                .iter()
                .filter(|id| delivered.contains(*id) && !voided.contains(*id))
                .cloned()
                .collect();
            let twice: Vec<_> = now.iter().step_by(2).cloned().collect();
            now.extend(twice);
            shuffle(&mut now, seed | 3);
            for (agent_id, seq) in now {
                voided.insert((agent_id.clone(), seq));
                let req = void::Request {
                    agent_id,
                    seq,
                    by: "ops".into(),
                    reason: "test".into(),
                };
                ledger
                    .write(move |tx, touched| void::void(tx, &req, 0, touched))
                    .await
                    .unwrap();
            }
        }
        ledger.read(read_outcome).unwrap()
    });
    drop(rt);
    // The same projection must come back from the ledger alone, after losing every derived table.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "DELETE FROM stock; DELETE FROM stock_last_count; DELETE FROM drift; DELETE FROM conflicts; DELETE FROM discrepancies; DELETE FROM shortfalls;",
    )
    .unwrap();
    let rebuilt = stocksync_collector::rebuild::rebuild(&path, |_, _| {}).unwrap();
    assert_eq!(rebuilt.movements, all.len() as u64);
    let again = read_outcome(&conn).unwrap();
    assert_eq!(
        again, outcome,
        "rebuild from the ledger differs from the incremental projection"
    );
    drop(conn);
    outcome
}

/// A SQLite file (with its WAL and shared-memory files) removed on drop, also when a failing
/// case panics while proptest shrinks it.
struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

fn read_outcome(c: &rusqlite::Connection) -> rusqlite::Result<Outcome> {
    let mut out = Outcome::default();
    let mut stmt = c.prepare("SELECT warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming FROM stock")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        let s: [i64; 6] = [
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
        ];
        if s != [0; 6] {
            out.stock.insert((r.get(0)?, r.get(1)?), s);
        }
    }
    for (table, map) in [("drift", &mut out.drift), ("conflicts", &mut out.conflicts)] {
        let mut stmt = c.prepare(&format!(
            "SELECT agent_id, seq, expected, counted FROM {table}"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            map.insert(
                (r.get(0)?, r.get::<_, i64>(1)? as u64),
                (r.get(2)?, r.get(3)?),
            );
        }
    }
    let mut stmt = c.prepare("SELECT transfer, shipped, received FROM discrepancies")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.discrepancies.insert(r.get(0)?, (r.get(1)?, r.get(2)?));
    }
    let mut stmt = c.prepare("SELECT agent_id, seq, requested, held FROM shortfalls")?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        out.shortfalls.insert(
            (r.get(0)?, r.get::<_, i64>(1)? as u64),
            (r.get(2)?, r.get(3)?),
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The reference model: the rules of docs/MOVEMENTS.md in closed form.
// ---------------------------------------------------------------------------------------

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

fn reference(all: &[(usize, Movement)]) -> Outcome {
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

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn projection_depends_only_on_the_set_of_movements(
        specs in prop::collection::vec(spec(), 1..40),
        seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let all = movements(&specs);
        let voids: std::collections::BTreeSet<(String, u64)> = specs
            .iter()
            .zip(&all)
            .filter(|(s, _)| s.void)
            .map(|(_, (a, m))| (AGENTS[*a].0.to_string(), m.seq))
            .collect();
        // Voided movements count as if they had never been sent.
        let kept: Vec<(usize, Movement)> = all
            .iter()
            .filter(|(a, m)| !voids.contains(&(AGENTS[*a].0.to_string(), m.seq)))
            .cloned()
            .collect();
        let expected = reference(&kept);
        for (i, seed) in seeds.iter().enumerate() {
            let got = deliver(&all, &voids, *seed, 1 + i * 2);
            prop_assert_eq!(&got, &expected, "delivery {} (seed {}) differs from the reference", i, seed);
        }
    }
}
