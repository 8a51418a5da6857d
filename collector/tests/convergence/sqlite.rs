//! One delivery through the real SQLite ledger, with voids between and after its halves
//! and two reservations between them, then a rebuild from the ledger alone.

#![allow(dead_code)] // shared by two test crates; each uses its part

use std::sync::Arc;

use stocksync_collector::ledger::Ledger;
use stocksync_collector::metrics::Metrics;
use stocksync_collector::reserve;
use stocksync_collector::void;
use stocksync_common::model::*;
use stocksync_common::wire;

use crate::movements::{
    authority, batches, releases, reservation, shuffle, RELEASED, RESERVATIONS,
};
use crate::reference::{Hold, Outcome};

/// Every record table with each row's content as one text: every column but the times it
/// was recorded and revised (those say when, not what). The SQL is valid on SQLite and on
/// PostgreSQL, so both stores' records compare as they are.
pub const RECORDS: [(&str, &str); 5] = [
    ("drift", COUNT_RECORD),
    ("conflicts", COUNT_RECORD),
    ("shortfalls", "agent_id || '|' || seq || '|' || sku || '|' || warehouse || '|' || bin || '|' || kind || '|' || state || '|' || occurred_at || '|' || occurred_at_ms || '|' || requested || '|' || held || '|' || excess"),
    ("discrepancies", "transfer || '|' || sku || '|' || from_warehouse || '|' || to_warehouse || '|' || shipped || '|' || received || '|' || difference"),
    ("reversals", "order_ref || '|' || sku || '|' || shipped || '|' || reversed || '|' || excess"),
];

const COUNT_RECORD: &str = "agent_id || '|' || seq || '|' || sku || '|' || warehouse || '|' || bin || '|' || source || '|' || counted_at || '|' || counted_at_ms || '|' || expected || '|' || counted || '|' || difference";

/// table -> its rows as [`RECORDS`] renders them.
pub type Records = std::collections::BTreeMap<String, std::collections::BTreeSet<String>>;

/// The records of a SQLite ledger, as [`RECORDS`] renders them.
pub fn read_records(c: &rusqlite::Connection) -> rusqlite::Result<Records> {
    let mut out = Records::new();
    for (table, row) in RECORDS {
        let mut stmt = c.prepare(&format!("SELECT {row} FROM {table}"))?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        out.insert(table.to_string(), rows.collect::<Result<_, _>>()?);
    }
    Ok(out)
}

/// Delivers the movements through the real ledger: chunked into batches, shuffled, some
/// batches delivered twice.
pub fn deliver(
    all: &[(usize, Movement)],
    voids: &std::collections::BTreeSet<(String, u64)>,
    seed: u64,
    chunk: usize,
) -> (Outcome, Vec<Hold>) {
    let (outcome, holds, _) = deliver_with_records(all, voids, seed, chunk);
    (outcome, holds)
}

/// [`deliver`], also returning every record the ledger kept (before the rebuild).
pub fn deliver_with_records(
    all: &[(usize, Movement)],
    voids: &std::collections::BTreeSet<(String, u64)>,
    seed: u64,
    chunk: usize,
) -> (Outcome, Vec<Hold>, Records) {
    let batches = batches(all, seed, chunk);
    let file = TempDb(std::env::temp_dir().join(format!(
        "stocksync-convergence-{}-{seed}-{chunk}-{}.db",
        std::process::id(),
        all.len()
    )));
    let path = file.0.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (outcome, holds, records) = rt.block_on(async {
        let ledger = Ledger::open_with(&path, Arc::new(Metrics::default()), authority()).unwrap();
        // Half the batches, then the voids of what they delivered (each twice), then the
        // rest, then the remaining voids: voids interleave with late movements.
        let half = batches.len() / 2;
        let mut delivered = std::collections::BTreeSet::new();
        let mut voided = std::collections::BTreeSet::new();
        let mut holds = Vec::new();
        for (p, phase) in [&batches[..half], &batches[half..]].into_iter().enumerate() {
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
            if p == 0 {
                holds = reserve_some(&ledger).await;
            }
        }
        // Released by hand in some deliveries.
        if releases(seed) && holds.iter().any(|h| h.order == RELEASED) {
            holds.retain(|h| h.order != RELEASED);
            let id = format!("r-{RELEASED}");
            ledger
                .write(move |tx, touched| reserve::release(tx, &id, 0, touched))
                .await
                .unwrap();
        }
        let (outcome, records) = ledger
            .read(|c| Ok((read_outcome(c)?, read_records(c)?)))
            .unwrap();
        (outcome, holds, records)
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
    (outcome, holds, records)
}

/// Tries to hold each of [`RESERVATIONS`] at ams.
pub async fn reserve_some(ledger: &Ledger) -> Vec<Hold> {
    let mut created = Vec::new();
    for (order, quantity) in RESERVATIONS {
        let req = reservation(order, quantity);
        let outcome = ledger
            .write(move |tx, touched| reserve::create(tx, &req, 0, touched))
            .await
            .unwrap();
        if matches!(outcome, reserve::Created::New(_)) {
            created.push(Hold { order, quantity });
        }
    }
    created
}

/// A SQLite file (with its WAL and shared-memory files) removed on drop, also when a failing
/// case panics while proptest shrinks it.
pub struct TempDb(std::path::PathBuf);

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn read_outcome(c: &rusqlite::Connection) -> rusqlite::Result<Outcome> {
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
