//! The operator's records in PostgreSQL, written inside the batch's transaction: drift and
//! conflicts of counts, shortfalls of inspections and write-offs, transfer discrepancies and
//! order reversals, with the SQLite ledger's content and keys. What to write is decided by
//! the shared rules (`records::rules`), so both stores hold the same records for the same
//! movements; this module only turns the decisions into SQL.
//!
//! Every record is keyed by what it is about (`(agent_id, seq)` of the count, inspection or
//! write-off; `(transfer, sku)`; `(order, sku)`) and computed again from the ledger rather
//! than added to, so a batch delivered twice, replayed, or applied by another worker after a
//! takeover never records anything twice.
//!
//! Count and shortfall records come from the projection's replay of a (SKU, warehouse)
//! (`of_replay`), under that pair's lock. Discrepancies and reversals span warehouses (a
//! transfer's two legs, a return at another warehouse than the shipment), so `settle` takes
//! a transaction lock per transfer and per order first: two workers committing the two legs
//! at once serialise, and the second sees the first's leg.

use std::collections::BTreeSet;

use sha2::Digest;
use tokio_postgres::Transaction;

use super::{PgError, Prepared};
use crate::projection::Entry;
use crate::records::rules::{self, Write};
use crate::replay::Step;

/// First key of the two-key advisory locks on transfers and orders (the projection's
/// one-key locks are a separate space).
const LOCK_SPACE: i32 = 0x5245_4344;

/// Writes the count and shortfall records of a replay: `steps[i]` is what `entries[i]` did
/// at each bin of the (SKU, warehouse).
pub(super) async fn of_replay(
    tx: &Transaction<'_>,
    p: &Prepared,
    entries: &[Entry],
    steps: &[Vec<(String, Step)>],
    now: i64,
) -> Result<(), PgError> {
    let mut drift = Vec::new();
    let mut conflicts = Vec::new();
    let mut shortfalls = Vec::new();
    let (mut agreed, mut found) = (Vec::new(), Vec::new());
    for (e, at) in entries.iter().zip(steps) {
        for (bin, step) in at {
            match rules::of_step(e, bin, step) {
                Some(Write::Drift(e, c)) => drift.push((e, c)),
                Some(Write::Conflict(e, c)) => conflicts.push((e, c)),
                Some(Write::ClearDrift(e)) => agreed.push(e),
                Some(Write::Shortfall(e, s)) => shortfalls.push((e, s)),
                Some(Write::ClearShortfall(e)) => found.push(e),
                None => {}
            }
        }
    }
    counts(tx, p, "drift", &drift, now).await?;
    counts(tx, p, "conflicts", &conflicts, now).await?;
    clear(tx, p, "drift", &agreed).await?;
    write_shortfalls(tx, p, &shortfalls, now).await?;
    clear(tx, p, "shortfalls", &found).await?;
    Ok(())
}

/// Writes or revises count records in one statement; `revised_at_ms` marks a record whose
/// expected number a late movement changed.
async fn counts(
    tx: &Transaction<'_>,
    p: &Prepared,
    table: &str,
    rows: &[(&Entry, rules::Counted)],
    now: i64,
) -> Result<(), PgError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ms = || rows.iter().map(|(e, _)| (e, &e.movement));
    let agent: Vec<&str> = ms().map(|(e, _)| e.agent_id.as_str()).collect();
    let seq: Vec<i64> = ms().map(|(_, m)| m.seq as i64).collect();
    let sku: Vec<&str> = ms().map(|(_, m)| m.sku.as_str()).collect();
    let warehouse: Vec<&str> = ms().map(|(_, m)| m.location.warehouse.as_str()).collect();
    let bin: Vec<&str> = ms().map(|(_, m)| m.location.bin_key()).collect();
    let source: Vec<&str> = ms().map(|(_, m)| m.source.as_str()).collect();
    let at: Vec<String> = ms().map(|(_, m)| m.occurred_at.to_rfc3339()).collect();
    let at_ms: Vec<i64> = ms().map(|(_, m)| m.occurred_at.unix_ms).collect();
    let expected: Vec<i64> = rows.iter().map(|(_, c)| c.expected).collect();
    let counted: Vec<i64> = rows.iter().map(|(_, c)| c.counted).collect();
    let difference: Vec<i64> = rows.iter().map(|(_, c)| c.difference()).collect();
    let sql = format!(
        "INSERT INTO {table} (agent_id, seq, sku, warehouse, bin, source, counted_at, counted_at_ms, expected, counted, difference, recorded_at_ms)
         SELECT *, $12 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[])
         ON CONFLICT (agent_id, seq) DO UPDATE SET
            revised_at_ms = CASE WHEN {table}.expected != excluded.expected THEN excluded.recorded_at_ms ELSE {table}.revised_at_ms END,
            expected = excluded.expected, difference = excluded.difference"
    );
    tx.execute(
        &p.get(tx, &sql).await?,
        &[
            &agent,
            &seq,
            &sku,
            &warehouse,
            &bin,
            &source,
            &at,
            &at_ms,
            &expected,
            &counted,
            &difference,
            &now,
        ],
    )
    .await?;
    Ok(())
}

/// Writes or revises shortfall records in one statement.
async fn write_shortfalls(
    tx: &Transaction<'_>,
    p: &Prepared,
    rows: &[(&Entry, crate::replay::Shortfall)],
    now: i64,
) -> Result<(), PgError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ms = || rows.iter().map(|(e, _)| (e, &e.movement));
    let agent: Vec<&str> = ms().map(|(e, _)| e.agent_id.as_str()).collect();
    let seq: Vec<i64> = ms().map(|(_, m)| m.seq as i64).collect();
    let sku: Vec<&str> = ms().map(|(_, m)| m.sku.as_str()).collect();
    let warehouse: Vec<&str> = ms().map(|(_, m)| m.location.warehouse.as_str()).collect();
    let bin: Vec<&str> = ms().map(|(_, m)| m.location.bin_key()).collect();
    let kind: Vec<&str> = ms().map(|(_, m)| m.kind.name()).collect();
    let state: Vec<&str> = rows.iter().map(|(_, s)| s.state).collect();
    let at: Vec<String> = ms().map(|(_, m)| m.occurred_at.to_rfc3339()).collect();
    let at_ms: Vec<i64> = ms().map(|(_, m)| m.occurred_at.unix_ms).collect();
    let requested: Vec<i64> = rows.iter().map(|(_, s)| s.requested).collect();
    let held: Vec<i64> = rows.iter().map(|(_, s)| s.held).collect();
    let excess: Vec<i64> = rows.iter().map(|(_, s)| s.excess).collect();
    tx.execute(
        &p.get(tx, "INSERT INTO shortfalls (agent_id, seq, sku, warehouse, bin, kind, state, occurred_at, occurred_at_ms, requested, held, excess, recorded_at_ms)
         SELECT *, $13 FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[])
         ON CONFLICT (agent_id, seq) DO UPDATE SET
            revised_at_ms = CASE WHEN shortfalls.held != excluded.held THEN excluded.recorded_at_ms ELSE shortfalls.revised_at_ms END,
            held = excluded.held, excess = excluded.excess").await?,
        &[
            &agent, &seq, &sku, &warehouse, &bin, &kind, &state, &at, &at_ms, &requested, &held,
            &excess, &now,
        ],
    )
    .await?;
    Ok(())
}

/// Removes the records of movements that no longer show a problem.
async fn clear(
    tx: &Transaction<'_>,
    p: &Prepared,
    table: &str,
    entries: &[&Entry],
) -> Result<(), PgError> {
    if entries.is_empty() {
        return Ok(());
    }
    let agent: Vec<&str> = entries.iter().map(|e| e.agent_id.as_str()).collect();
    let seq: Vec<i64> = entries.iter().map(|e| e.movement.seq as i64).collect();
    let sql = format!(
        "DELETE FROM {table} WHERE (agent_id, seq) IN (SELECT * FROM unnest($1::text[], $2::bigint[]))"
    );
    tx.execute(&p.get(tx, &sql).await?, &[&agent, &seq]).await?;
    Ok(())
}

/// Computes again the discrepancy of every transfer and the reversal of every order that
/// the batch's new movements (`entries`) took part in, from the ledger.
pub(super) async fn settle(
    tx: &Transaction<'_>,
    p: &Prepared,
    entries: &[Entry],
    now: i64,
) -> Result<(), PgError> {
    let (mut transfers, mut orders) = (BTreeSet::new(), BTreeSet::new());
    for e in entries {
        let s = rules::settles(e);
        transfers.extend(s.transfer);
        orders.extend(s.order);
    }
    if transfers.is_empty() && orders.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<i32> = transfers
        .iter()
        .map(|(t, s)| lock_id("transfer", t, s))
        .chain(orders.iter().map(|(o, s)| lock_id("order", o, s)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    tx.execute(
        &p.get(
            tx,
            "SELECT pg_advisory_xact_lock($1, id) FROM unnest($2::int[]) AS t(id) ORDER BY id",
        )
        .await?,
        &[&LOCK_SPACE, &ids],
    )
    .await?;
    for (transfer, sku) in &transfers {
        discrepancy(tx, p, transfer, sku, now).await?;
    }
    for (order, sku) in &orders {
        reversal(tx, p, order, sku, now).await?;
    }
    Ok(())
}

/// A stable 32-bit id of a transfer's or order's SKU, the same in every worker.
fn lock_id(what: &str, key: &str, sku: &str) -> i32 {
    let mut h = sha2::Sha256::new();
    for part in [what, key, sku] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    i32::from_be_bytes(digest[..4].try_into().expect("4 bytes"))
}

/// The SQLite ledger's `update_discrepancy`: both legs summed from the ledger.
async fn discrepancy(
    tx: &Transaction<'_>,
    p: &Prepared,
    transfer: &str,
    sku: &str,
    now: i64,
) -> Result<(), PgError> {
    let rows = tx
        .query(
            &p.get(
                tx,
                "SELECT kind, MIN(warehouse), SUM(quantity)::bigint FROM ledger
                 WHERE transfer = $1 AND sku = $2 AND kind IN ('transfer_out', 'transfer_in')
                   AND treatment IN ('apply', 'provisional')
                 GROUP BY kind",
            )
            .await?,
            &[&transfer, &sku],
        )
        .await?;
    let (mut out, mut inn) = (None, None);
    for r in &rows {
        let leg = Some((r.get::<_, String>(1), r.get::<_, i64>(2)));
        match r.get::<_, &str>(0) {
            "transfer_out" => out = leg,
            _ => inn = leg,
        }
    }
    match rules::discrepancy(out, inn) {
        Some((from, to, shipped, received)) => {
            tx.execute(
                &p.get(tx, "INSERT INTO discrepancies (transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
                 ON CONFLICT (transfer, sku) DO UPDATE SET
                    from_warehouse = excluded.from_warehouse, to_warehouse = excluded.to_warehouse,
                    shipped = excluded.shipped, received = excluded.received,
                    difference = excluded.difference, updated_at_ms = excluded.updated_at_ms").await?,
                &[&transfer, &sku, &from, &to, &shipped, &received, &(received - shipped), &now],
            )
            .await?;
        }
        None => {
            tx.execute(
                &p.get(
                    tx,
                    "DELETE FROM discrepancies WHERE transfer = $1 AND sku = $2",
                )
                .await?,
                &[&transfer, &sku],
            )
            .await?;
        }
    }
    Ok(())
}

/// The SQLite ledger's `update_reversal`: an order's shipments against its cancellations
/// and returns of one SKU, from the ledger.
async fn reversal(
    tx: &Transaction<'_>,
    p: &Prepared,
    order: &str,
    sku: &str,
    now: i64,
) -> Result<(), PgError> {
    let row = tx
        .query_one(
            &p.get(
                tx,
                "SELECT COALESCE(SUM(CASE WHEN kind = 'shipment' THEN quantity END), 0)::bigint,
                        COALESCE(SUM(CASE WHEN kind IN ('cancellation', 'return') THEN quantity END), 0)::bigint
                 FROM ledger WHERE order_ref = $1 AND sku = $2 AND treatment IN ('apply', 'provisional')",
            )
            .await?,
            &[&order, &sku],
        )
        .await?;
    let (shipped, reversed): (i64, i64) = (row.get(0), row.get(1));
    match rules::reversal_excess(shipped, reversed) {
        Some(excess) => {
            tx.execute(
                &p.get(tx, "INSERT INTO reversals (order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)
                 ON CONFLICT (order_ref, sku) DO UPDATE SET shipped = excluded.shipped,
                    reversed = excluded.reversed, excess = excluded.excess, updated_at_ms = excluded.updated_at_ms").await?,
                &[&order, &sku, &shipped, &reversed, &excess, &now],
            )
            .await?;
        }
        None => {
            tx.execute(
                &p.get(
                    tx,
                    "DELETE FROM reversals WHERE order_ref = $1 AND sku = $2",
                )
                .await?,
                &[&order, &sku],
            )
            .await?;
        }
    }
    Ok(())
}
