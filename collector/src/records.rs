//! Drift, conflict and discrepancy records: where two sources of stock disagree, kept
//! visible instead of resolved by "newest wins".
//!
//! - Drift: an authoritative count that differs from what the projection expected just
//!   before it (the replay's on_hand at the count's position in the replay order).
//! - Conflict: a count from a source that is not the location's authority. It changes
//!   nothing; it is recorded with what the projection expected at its time.
//! - Discrepancy: a transfer whose received quantity differs from the shipped one.
//! - Shortfall: an inspection or write-off that asked for more than quality control or
//!   damaged held at its place in the replay order; only what was there is taken.
//!
//! Invariant: each record is a function of the set of movements. Drift and conflicts are
//! keyed by the count's `(agent_id, seq)` and rewritten by every replay of their key (so are
//! shortfalls, by the inspection's or write-off's), so a
//! late delta ordered before a count revises that count's record (`revised_at_ms` says
//! when); a drift whose difference a late delta explains away is removed. Discrepancies are
//! keyed by `(transfer, sku)` and recomputed from the ledger whenever a leg arrives.

use rusqlite::{params, Connection};
use serde::Serialize;

use crate::projection::Entry;
use crate::replay::Shortfall;

pub(crate) mod rules;
pub(crate) use rules::{of_step, settles, Counted, Write};

/// A count that differed from the projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CountRecord {
    pub agent_id: String,
    pub seq: u64,
    pub sku: String,
    pub warehouse: String,
    pub bin: Option<String>,
    pub source: String,
    pub counted_at: String,
    pub counted_at_ms: i64,
    pub expected: i64,
    pub counted: i64,
    /// `counted - expected`.
    pub difference: i64,
    pub recorded_at_ms: i64,
    pub revised_at_ms: Option<i64>,
}

/// A transfer whose legs disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    pub transfer: String,
    pub sku: String,
    pub from_warehouse: String,
    pub to_warehouse: String,
    pub shipped: i64,
    pub received: i64,
    /// `received - shipped`.
    pub difference: i64,
    pub recorded_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Carries out one record decision of a replay (`rules::of_step`).
pub(crate) fn write(tx: &Connection, w: &Write<'_>, now: i64) -> Result<(), rusqlite::Error> {
    match w {
        Write::Drift(e, c) => record_count(tx, "drift", e, c, now),
        Write::Conflict(e, c) => record_count(tx, "conflicts", e, c, now),
        Write::ClearDrift(e) => {
            tx.prepare_cached("DELETE FROM drift WHERE agent_id = ?1 AND seq = ?2")?
                .execute(params![e.agent_id, e.movement.seq as i64])?;
            Ok(())
        }
        Write::Shortfall(e, s) => record_shortfall(tx, e, s, now),
        Write::ClearShortfall(e) => {
            tx.prepare_cached("DELETE FROM shortfalls WHERE agent_id = ?1 AND seq = ?2")?
                .execute(params![e.agent_id, e.movement.seq as i64])?;
            Ok(())
        }
    }
}

/// Writes or revises the drift or conflict record of one count.
fn record_count(
    tx: &Connection,
    table: &str,
    e: &Entry,
    c: &Counted,
    now: i64,
) -> Result<(), rusqlite::Error> {
    let m = &e.movement;
    tx.prepare_cached(&format!(
        "INSERT INTO {table} (agent_id, seq, sku, warehouse, bin, source, counted_at, counted_at_ms, expected, counted, difference, recorded_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (agent_id, seq) DO UPDATE SET
            revised_at_ms = CASE WHEN expected != excluded.expected THEN excluded.recorded_at_ms ELSE revised_at_ms END,
            expected = excluded.expected, difference = excluded.difference"
    ))?
    .execute(params![
        e.agent_id,
        m.seq as i64,
        m.sku.as_str(),
        m.location.warehouse,
        m.location.bin_key(),
        m.source,
        m.occurred_at.to_rfc3339(),
        m.occurred_at.unix_ms,
        c.expected,
        c.counted,
        c.difference(),
        now
    ])?;
    Ok(())
}

/// Recomputes the discrepancy of one transfer of one SKU from both legs in the ledger.
pub(crate) fn update_discrepancy(
    tx: &Connection,
    transfer: &str,
    sku: &str,
    now: i64,
) -> Result<(), rusqlite::Error> {
    let mut stmt = tx.prepare_cached(
        "SELECT kind, MIN(warehouse), SUM(quantity) FROM ledger
         WHERE transfer = ?1 AND sku = ?2 AND kind IN ('transfer_out', 'transfer_in')
           AND treatment IN ('apply', 'provisional')
         GROUP BY kind",
    )?;
    let (mut out, mut inn) = (None, None);
    let rows = stmt.query_map(params![transfer, sku], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, warehouse, quantity) = row?;
        if kind == "transfer_out" {
            out = Some((warehouse, quantity));
        } else {
            inn = Some((warehouse, quantity));
        }
    }
    match rules::discrepancy(out, inn) {
        Some((from, to, shipped, received)) => {
            tx.prepare_cached(
                "INSERT INTO discrepancies (transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
                 ON CONFLICT (transfer, sku) DO UPDATE SET
                    from_warehouse = excluded.from_warehouse, to_warehouse = excluded.to_warehouse,
                    shipped = excluded.shipped, received = excluded.received,
                    difference = excluded.difference, updated_at_ms = excluded.updated_at_ms",
            )?
            .execute(params![transfer, sku, from, to, shipped, received, received - shipped, now])?;
        }
        None => {
            tx.prepare_cached("DELETE FROM discrepancies WHERE transfer = ?1 AND sku = ?2")?
                .execute(params![transfer, sku])?;
        }
    }
    Ok(())
}

/// Recomputes whether an order's cancellations and returns exceed what it shipped, for one
/// SKU, from the ledger. Like transfer discrepancies this depends only on the set of
/// movements: a return that arrives before its shipment is open until the shipment arrives.
pub(crate) fn update_reversal(
    tx: &Connection,
    order: &str,
    sku: &str,
    now: i64,
) -> Result<(), rusqlite::Error> {
    let (shipped, reversed): (i64, i64) = tx
        .prepare_cached(
            "SELECT COALESCE(SUM(CASE WHEN kind = 'shipment' THEN quantity END), 0),
                    COALESCE(SUM(CASE WHEN kind IN ('cancellation', 'return') THEN quantity END), 0)
             FROM ledger WHERE order_ref = ?1 AND sku = ?2 AND treatment IN ('apply', 'provisional')",
        )?
        .query_row(params![order, sku], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let Some(excess) = rules::reversal_excess(shipped, reversed) {
        tx.prepare_cached(
            "INSERT INTO reversals (order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (order_ref, sku) DO UPDATE SET shipped = excluded.shipped,
                reversed = excluded.reversed, excess = excluded.excess, updated_at_ms = excluded.updated_at_ms",
        )?
        .execute(params![order, sku, shipped, reversed, excess, now])?;
    } else {
        tx.prepare_cached("DELETE FROM reversals WHERE order_ref = ?1 AND sku = ?2")?
            .execute(params![order, sku])?;
    }
    Ok(())
}

/// An order whose cancellations and returns exceed its shipments for one SKU.
#[derive(Debug, Clone, Serialize)]
pub struct Reversal {
    pub order: String,
    pub sku: String,
    pub shipped: i64,
    pub reversed: i64,
    pub excess: i64,
    pub recorded_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Open reversal exceptions, newest first.
pub fn reversals(conn: &Connection, limit: i64) -> Result<Vec<Reversal>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms
         FROM reversals ORDER BY updated_at_ms DESC, order_ref, sku LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(Reversal {
            order: r.get(0)?,
            sku: r.get(1)?,
            shipped: r.get(2)?,
            reversed: r.get(3)?,
            excess: r.get(4)?,
            recorded_at_ms: r.get(5)?,
            updated_at_ms: r.get(6)?,
        })
    })?;
    rows.collect()
}

const COUNT_COLUMNS: &str = "agent_id, seq, sku, warehouse, bin, source, counted_at, counted_at_ms, expected, counted, difference, recorded_at_ms, revised_at_ms";

fn count_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CountRecord> {
    let bin: String = r.get(4)?;
    Ok(CountRecord {
        agent_id: r.get(0)?,
        seq: r.get::<_, i64>(1)? as u64,
        sku: r.get(2)?,
        warehouse: r.get(3)?,
        bin: (!bin.is_empty()).then_some(bin),
        source: r.get(5)?,
        counted_at: r.get(6)?,
        counted_at_ms: r.get(7)?,
        expected: r.get(8)?,
        counted: r.get(9)?,
        difference: r.get(10)?,
        recorded_at_ms: r.get(11)?,
        revised_at_ms: r.get(12)?,
    })
}

/// Which records a list shows: `None` = any.
#[derive(Debug, Clone, Copy, Default)]
pub struct Filter<'a> {
    pub warehouse: Option<&'a str>,
    pub sku: Option<&'a str>,
}

/// SQL condition on `warehouse` = ?1 and `sku` = ?2 (either unset = any).
const FILTER: &str = "(?1 IS NULL OR warehouse = ?1) AND (?2 IS NULL OR sku = ?2)";

/// Open drift records (every drift record: one exists only while its count differs).
pub fn drift(
    conn: &Connection,
    filter: Filter<'_>,
    limit: i64,
) -> Result<Vec<CountRecord>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COUNT_COLUMNS} FROM drift WHERE {FILTER}
         ORDER BY counted_at_ms DESC, agent_id, seq LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![filter.warehouse, filter.sku, limit], count_row)?;
    rows.collect()
}

/// Conflicts; `open_only` leaves out counts that agreed with the projection.
pub fn conflicts(
    conn: &Connection,
    filter: Filter<'_>,
    open_only: bool,
    limit: i64,
) -> Result<Vec<CountRecord>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COUNT_COLUMNS} FROM conflicts WHERE {FILTER} AND (?3 = 0 OR difference != 0)
         ORDER BY counted_at_ms DESC, agent_id, seq LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![filter.warehouse, filter.sku, open_only as i64, limit],
        count_row,
    )?;
    rows.collect()
}

/// The drift or conflict record of one count, if it has one.
pub fn of_count(
    conn: &Connection,
    agent_id: &str,
    seq: u64,
) -> Result<Option<(&'static str, CountRecord)>, rusqlite::Error> {
    for table in ["drift", "conflicts"] {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COUNT_COLUMNS} FROM {table} WHERE agent_id = ?1 AND seq = ?2"
        ))?;
        let mut rows = stmt.query_map(params![agent_id, seq as i64], count_row)?;
        if let Some(row) = rows.next() {
            return Ok(Some((table, row?)));
        }
    }
    Ok(None)
}

/// Open transfer discrepancies.
pub fn discrepancies(conn: &Connection, limit: i64) -> Result<Vec<Discrepancy>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms
         FROM discrepancies ORDER BY updated_at_ms DESC, transfer, sku LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(Discrepancy {
            transfer: r.get(0)?,
            sku: r.get(1)?,
            from_warehouse: r.get(2)?,
            to_warehouse: r.get(3)?,
            shipped: r.get(4)?,
            received: r.get(5)?,
            difference: r.get(6)?,
            recorded_at_ms: r.get(7)?,
            updated_at_ms: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// Writes or revises the shortfall of one inspection or write-off.
fn record_shortfall(
    tx: &Connection,
    e: &Entry,
    s: &Shortfall,
    now: i64,
) -> Result<(), rusqlite::Error> {
    let m = &e.movement;
    tx.prepare_cached(
        "INSERT INTO shortfalls (agent_id, seq, sku, warehouse, bin, kind, state, occurred_at, occurred_at_ms, requested, held, excess, recorded_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (agent_id, seq) DO UPDATE SET
            revised_at_ms = CASE WHEN held != excluded.held THEN excluded.recorded_at_ms ELSE revised_at_ms END,
            held = excluded.held, excess = excluded.excess",
    )?
    .execute(params![
        e.agent_id,
        m.seq as i64,
        m.sku.as_str(),
        m.location.warehouse,
        m.location.bin_key(),
        m.kind.name(),
        s.state,
        m.occurred_at.to_rfc3339(),
        m.occurred_at.unix_ms,
        s.requested,
        s.held,
        s.excess,
        now
    ])?;
    Ok(())
}

/// An inspection or write-off that asked for more than its state held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShortfallRecord {
    pub agent_id: String,
    pub seq: u64,
    pub sku: String,
    pub warehouse: String,
    pub bin: Option<String>,
    pub kind: String,
    /// `quality_control` or `damaged`.
    pub state: String,
    pub occurred_at: String,
    pub requested: i64,
    /// What the state held, and so what was taken.
    pub held: i64,
    /// `requested - held`: asked for but not there.
    pub excess: i64,
    pub recorded_at_ms: i64,
    pub revised_at_ms: Option<i64>,
}

/// Open shortfalls, newest movement first.
pub fn shortfalls(
    conn: &Connection,
    filter: Filter<'_>,
    limit: i64,
) -> Result<Vec<ShortfallRecord>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT agent_id, seq, sku, warehouse, bin, kind, state, occurred_at, requested, held, excess, recorded_at_ms, revised_at_ms
         FROM shortfalls WHERE {FILTER} ORDER BY occurred_at_ms DESC, agent_id, seq LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![filter.warehouse, filter.sku, limit], |r| {
        let bin: String = r.get(4)?;
        Ok(ShortfallRecord {
            agent_id: r.get(0)?,
            seq: r.get::<_, i64>(1)? as u64,
            sku: r.get(2)?,
            warehouse: r.get(3)?,
            bin: (!bin.is_empty()).then_some(bin),
            kind: r.get(5)?,
            state: r.get(6)?,
            occurred_at: r.get(7)?,
            requested: r.get(8)?,
            held: r.get(9)?,
            excess: r.get(10)?,
            recorded_at_ms: r.get(11)?,
            revised_at_ms: r.get(12)?,
        })
    })?;
    rows.collect()
}
