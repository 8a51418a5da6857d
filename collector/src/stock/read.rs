//! Levels as readers ask for them: a key, a SKU everywhere, a location, sums per warehouse.
//! Every function takes any connection (a reader's, or the writer's inside its transaction).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Levels, StockKey};
use crate::merge::States;

const COLUMNS: &str =
    "sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming";

/// Reads `States` from six columns starting at `offset`.
fn row_states(offset: usize) -> impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<States> {
    move |r| {
        Ok(States {
            available: r.get(offset)?,
            reserved: r.get(offset + 1)?,
            damaged: r.get(offset + 2)?,
            quality_control: r.get(offset + 3)?,
            in_transit: r.get(offset + 4)?,
            incoming: r.get(offset + 5)?,
        })
    }
}

fn levels(r: &rusqlite::Row<'_>) -> rusqlite::Result<Levels> {
    let states = row_states(3)(r)?;
    let bin: String = r.get(2)?;
    Ok(Levels {
        sku: r.get(0)?,
        warehouse: r.get(1)?,
        bin: (!bin.is_empty()).then_some(bin),
        on_hand: states.on_hand(),
        states,
    })
}

/// Current states of one key; zero if never seen.
pub fn states(conn: &Connection, key: &StockKey) -> rusqlite::Result<States> {
    conn.prepare_cached(
        "SELECT available, reserved, damaged, quality_control, in_transit, incoming FROM stock WHERE sku = ?1 AND warehouse = ?2 AND bin = ?3",
    )?
    .query_row(params![key.sku, key.warehouse, key.bin], row_states(0))
    .optional()
    .map(Option::unwrap_or_default)
}

/// Every row of `sku`, by warehouse then bin (the warehouse-level row first).
pub fn by_sku(conn: &Connection, sku: &str) -> rusqlite::Result<Vec<Levels>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM stock WHERE sku = ?1 ORDER BY warehouse, bin"
    ))?;
    let rows = stmt.query_map([sku], levels)?;
    rows.collect()
}

/// Up to `limit` rows at one bin of `warehouse`, by SKU.
pub fn at_bin(
    conn: &Connection,
    warehouse: &str,
    bin: &str,
    limit: i64,
) -> rusqlite::Result<Vec<Levels>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM stock WHERE warehouse = ?1 AND bin = ?2 ORDER BY sku LIMIT ?3"
    ))?;
    let rows = stmt.query_map(params![warehouse, bin, limit], levels)?;
    rows.collect()
}

/// Up to `limit` rows at `warehouse` (every bin), by SKU then bin.
pub fn at_warehouse(
    conn: &Connection,
    warehouse: &str,
    limit: i64,
) -> rusqlite::Result<Vec<Levels>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM stock WHERE warehouse = ?1 ORDER BY sku, bin LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![warehouse, limit], levels)?;
    rows.collect()
}

/// The sum of every row of `sku` at `warehouse`, holds included.
pub fn warehouse_total(conn: &Connection, sku: &str, warehouse: &str) -> rusqlite::Result<States> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(available), 0), COALESCE(SUM(reserved), 0), COALESCE(SUM(damaged), 0),
                COALESCE(SUM(quality_control), 0), COALESCE(SUM(in_transit), 0), COALESCE(SUM(incoming), 0)
         FROM stock WHERE sku = ?1 AND warehouse = ?2",
    )?
    .query_row(params![sku, warehouse], row_states(0))
}

/// Calls `f(warehouse, bin, available)` for every row of `sku` (bin `""` for the
/// warehouse-level row), for callers that pick locations (channels, kits).
pub fn for_each_available(
    conn: &Connection,
    sku: &str,
    mut f: impl FnMut(&str, &str, i64),
) -> rusqlite::Result<()> {
    let mut stmt =
        conn.prepare_cached("SELECT warehouse, bin, available FROM stock WHERE sku = ?1")?;
    let mut rows = stmt.query([sku])?;
    while let Some(r) = rows.next()? {
        f(r.get_ref(0)?.as_str()?, r.get_ref(1)?.as_str()?, r.get(2)?);
    }
    Ok(())
}

/// Available units of `sku` per warehouse that has any row of it.
pub fn available_by_warehouse(
    conn: &Connection,
    sku: &str,
) -> rusqlite::Result<BTreeMap<String, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT warehouse, COALESCE(SUM(available), 0) FROM stock WHERE sku = ?1 GROUP BY warehouse",
    )?;
    let rows = stmt.query_map([sku], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Available units of `sku` everywhere, and when any of its rows last changed (ms, 0 if
/// it has none).
pub fn last_change(conn: &Connection, sku: &str) -> rusqlite::Result<(i64, i64)> {
    conn.prepare_cached(
        "SELECT coalesce(sum(available), 0), coalesce(max(updated_at_ms), 0) FROM stock WHERE sku = ?1",
    )?
    .query_row([sku], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// Every SKU with a row.
pub fn skus(conn: &Connection) -> rusqlite::Result<BTreeSet<String>> {
    let mut stmt = conn.prepare_cached("SELECT DISTINCT sku FROM stock")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// True if `sku` has a row anywhere (it was ever stocked; for an open catalog).
pub fn known_sku(conn: &Connection, sku: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM stock WHERE sku = ?1)")?
        .query_row([sku], |r| r.get(0))
}

/// True if `warehouse` has a row of any SKU.
pub fn has_warehouse(conn: &Connection, warehouse: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM stock WHERE warehouse = ?1)")?
        .query_row([warehouse], |r| r.get(0))
}

/// Units of `sku` available at `warehouse`, all its rows summed (what a hold may take).
pub fn available_at(conn: &Connection, sku: &str, warehouse: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(available), 0) FROM stock WHERE sku = ?1 AND warehouse = ?2",
    )?
    .query_row(params![sku, warehouse], |r| r.get(0))
}

/// The held amount currently applied to the warehouse-level row of (sku, warehouse).
pub fn held(conn: &Connection, sku: &str, warehouse: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT held FROM reservation_holds WHERE sku = ?1 AND warehouse = ?2")?
        .query_row(params![sku, warehouse], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}
