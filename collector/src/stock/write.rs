//! What the writer's transaction does to stored levels: deltas, replayed physical states,
//! the latest barrier per key, holds, and the rebuild's clean slate.

use rusqlite::{params, Connection, OptionalExtension};

use super::{Order, StockKey};
use crate::merge::States;

/// Adds `d` to the key's row, creating it if missing.
pub(crate) fn add(tx: &Connection, k: &StockKey, d: &States, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO stock (sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            available = available + excluded.available,
            reserved = reserved + excluded.reserved,
            damaged = damaged + excluded.damaged,
            quality_control = quality_control + excluded.quality_control,
            in_transit = in_transit + excluded.in_transit,
            incoming = incoming + excluded.incoming,
            updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![
        k.sku,
        k.warehouse,
        k.bin,
        d.available,
        d.reserved,
        d.damaged,
        d.quality_control,
        d.in_transit,
        d.incoming,
        now
    ])?;
    Ok(())
}

/// Sets the key's physical states (a replay's result, holds included); `in_transit` and
/// `incoming` stay as they are.
pub(crate) fn set_physical(
    tx: &Connection,
    key: &StockKey,
    s: &States,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO stock (sku, warehouse, bin, available, reserved, damaged, quality_control, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            available = excluded.available, reserved = excluded.reserved,
            damaged = excluded.damaged, quality_control = excluded.quality_control,
            updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![
        key.sku,
        key.warehouse,
        key.bin,
        s.available,
        s.reserved,
        s.damaged,
        s.quality_control,
        now
    ])?;
    Ok(())
}

/// The latest barrier (count, inspection, write-off) of a key, if it has one.
pub(crate) fn last_count(conn: &Connection, key: &StockKey) -> rusqlite::Result<Option<Order>> {
    conn.prepare_cached(
        "SELECT occurred_at_ms, agent_id, seq FROM stock_last_count WHERE sku = ?1 AND warehouse = ?2 AND bin = ?3",
    )?
    .query_row(params![key.sku, key.warehouse, key.bin], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
    })
    .optional()
}

/// Stores `at` as the key's latest barrier (the caller has checked that it is the latest).
pub(crate) fn set_last_count(tx: &Connection, key: &StockKey, at: &Order) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO stock_last_count (sku, warehouse, bin, occurred_at_ms, agent_id, seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            occurred_at_ms = excluded.occurred_at_ms, agent_id = excluded.agent_id, seq = excluded.seq",
    )?
    .execute(params![key.sku, key.warehouse, key.bin, at.0, at.1, at.2 as i64])?;
    Ok(())
}

/// Adds `diff` to what (sku, warehouse) holds: moves it from `available` to `reserved` on
/// the warehouse-level row, which is pushed to `touched`.
pub(crate) fn hold(
    tx: &Connection,
    sku: &str,
    warehouse: &str,
    diff: i64,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<()> {
    if diff == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO reservation_holds (sku, warehouse, held) VALUES (?1, ?2, ?3)
         ON CONFLICT (sku, warehouse) DO UPDATE SET held = held + excluded.held",
    )?
    .execute(params![sku, warehouse, diff])?;
    tx.prepare_cached(
        "INSERT INTO stock (sku, warehouse, bin, available, reserved, updated_at_ms) VALUES (?1, ?2, '', ?3, ?4, ?5)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            available = available + excluded.available, reserved = reserved + excluded.reserved,
            updated_at_ms = excluded.updated_at_ms",
    )?
    .execute(params![sku, warehouse, -diff, diff, now])?;
    touched.push(StockKey {
        sku: sku.into(),
        warehouse: warehouse.into(),
        bin: String::new(),
    });
    Ok(())
}

/// Forgets every stored level, barrier and applied hold: the rebuild's clean slate (the
/// ledger and the reservations stay).
pub(crate) fn clear(tx: &Connection) -> rusqlite::Result<()> {
    tx.execute_batch(
        "DELETE FROM stock; DELETE FROM stock_last_count; DELETE FROM reservation_holds;",
    )
}

/// Inserts a rebuilt key's row; if it is already written, adds `elsewhere` to it (physical
/// states are only ever written once, by the key's own replay).
pub(crate) fn rebuilt_row(
    tx: &Connection,
    k: &StockKey,
    physical: &States,
    elsewhere: &States,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO stock (sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            in_transit = in_transit + excluded.in_transit,
            incoming = incoming + excluded.incoming",
    )?
    .execute(params![
        k.sku,
        k.warehouse,
        k.bin,
        physical.available,
        physical.reserved,
        physical.damaged,
        physical.quality_control,
        elsewhere.in_transit,
        elsewhere.incoming,
        now
    ])?;
    Ok(())
}

/// Stored rows.
pub(crate) fn count_rows(conn: &Connection) -> rusqlite::Result<u64> {
    conn.query_row("SELECT COUNT(*) FROM stock", [], |r| r.get::<_, i64>(0))
        .map(|n| n as u64)
}
