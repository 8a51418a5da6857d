//! Orders at rest: one row per order (its request, its lines' allocations, its holds and
//! its latest routing explanation), an append-only history per order, the run-time freeze
//! switch per warehouse and the per-day order count behind daily capacity.
//!
//! Written only inside the ledger writer's transaction, together with the reservations the
//! order holds, so an order and its holds are committed or lost together.

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request::OrderRequest;

/// Units of one line at one warehouse.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Allocated {
    pub warehouse: String,
    pub quantity: u64,
}

/// One line of a stored order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub line: usize,
    pub sku: String,
    pub quantity: u64,
    /// What one unit takes: a bundle's components or the SKU itself once.
    pub parts: Vec<(String, u64)>,
    pub allocations: Vec<Allocated>,
    /// Units cancelled so far.
    pub cancelled: u64,
    /// Units nobody could take (backorder or queue), with why.
    pub unallocated: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One reservation of the order: `sku` at `warehouse`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HoldRef {
    pub reservation: String,
    pub sku: String,
    pub warehouse: String,
}

/// A stored order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub channel: String,
    /// `reserved`, `backorder`, `queued` or `cancelled` as stored; reads add `shipped`,
    /// `partially_shipped` and `expired` from the holds.
    pub state: String,
    pub request: OrderRequest,
    pub lines: Vec<Line>,
    pub holds: Vec<HoldRef>,
    pub explanation: Value,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
    /// Reservations made for this order so far (their ids are `<order>#<n>`).
    pub holds_made: u32,
}

/// Finds an order by id or by the idempotency key it was first sent with (two index
/// lookups: an `OR` of both would scan the table).
pub fn find(
    conn: &Connection,
    id: &str,
    key: Option<&str>,
) -> rusqlite::Result<Option<(Order, Value)>> {
    let by = |sql: &str, value: &str| {
        conn.prepare_cached(sql)?
            .query_row([value], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .optional()
    };
    let mut found = by("SELECT record, answer FROM orders WHERE id = ?1", id)?;
    if let (None, Some(key)) = (&found, key) {
        found = by(
            "SELECT record, answer FROM orders WHERE idempotency_key = ?1",
            key,
        )?;
    }
    found
        .map(|(record, answer)| Ok((decode(&record)?, decode(&answer)?)))
        .transpose()
}

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("order JSON")
}

/// Stores a new order with its first answer.
pub fn insert(
    tx: &Connection,
    order: &Order,
    key: Option<&str>,
    answer: &Value,
    now: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO orders (id, idempotency_key, channel, state, record, answer, created_at_ms, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    )?
    .execute(params![order.id, key, order.channel, order.state, encode(order), encode(answer), now])?;
    Ok(())
}

/// Saves an order's new state.
pub fn update(tx: &Connection, order: &Order, now: i64) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE orders SET state = ?2, record = ?3, updated_at_ms = ?4 WHERE id = ?1",
    )?
    .execute(params![order.id, order.state, encode(order), now])?;
    Ok(())
}

/// Appends to an order's history.
pub fn log(
    tx: &Connection,
    order: &str,
    event: &str,
    detail: &Value,
    by: &str,
    now: i64,
) -> rusqlite::Result<()> {
    let mut detail = detail.clone();
    if let Value::Object(fields) = &mut detail {
        fields.insert("by".into(), Value::String(by.into()));
    }
    tx.prepare_cached(
        "INSERT INTO order_history (order_id, at_ms, event, detail) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![order, now, event, encode(&detail)])?;
    Ok(())
}

/// An order's history, oldest first.
pub fn history(conn: &Connection, order: &str) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, event, detail FROM order_history WHERE order_id = ?1 ORDER BY seq",
    )?;
    let rows = stmt.query_map([order], |r| {
        let detail: String = r.get(2)?;
        Ok(serde_json::json!({
            "at_ms": r.get::<_, i64>(0)?,
            "event": r.get::<_, String>(1)?,
            "detail": serde_json::from_str::<Value>(&detail).unwrap_or(Value::Null),
        }))
    })?;
    rows.collect()
}

/// Orders (optionally of one stored state and channel), newest first.
pub fn list(
    conn: &Connection,
    states: &[&str],
    channel: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<Order>> {
    let mut stmt = conn.prepare_cached(
        "SELECT record FROM orders WHERE (?1 IS NULL OR channel = ?1)
         AND (?2 IS NULL OR state IN (SELECT value FROM json_each(?2)))
         ORDER BY created_at_ms DESC, id LIMIT ?3",
    )?;
    let states = (!states.is_empty()).then(|| encode(&states));
    let rows = stmt.query_map(params![channel, states, limit], |r| r.get::<_, String>(0))?;
    rows.map(|r| decode(&r?)).collect()
}

/// Warehouses frozen at run time, with why.
pub fn frozen(conn: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached("SELECT warehouse, reason FROM routing_frozen")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// Freezes (`Some(reason)`) or unfreezes a warehouse for routing.
pub fn set_frozen(
    tx: &Connection,
    warehouse: &str,
    reason: Option<&str>,
    now: i64,
) -> rusqlite::Result<()> {
    match reason {
        Some(why) => tx.execute(
            "INSERT INTO routing_frozen (warehouse, reason, at_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (warehouse) DO UPDATE SET reason = excluded.reason, at_ms = excluded.at_ms",
            params![warehouse, why, now],
        )?,
        None => tx.execute("DELETE FROM routing_frozen WHERE warehouse = ?1", [warehouse])?,
    };
    Ok(())
}

/// Orders routed to `warehouse` on its local `day`.
pub fn routed_on(conn: &Connection, warehouse: &str, day: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT orders FROM routing_daily WHERE warehouse = ?1 AND day = ?2")?
        .query_row(params![warehouse, day], |r| r.get::<_, i64>(0))
        .optional()
        .map(|n| n.unwrap_or(0).max(0) as u64)
}

/// Counts one more order routed to `warehouse` on its local `day`.
pub fn count_routed(tx: &Connection, warehouse: &str, day: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO routing_daily (warehouse, day, orders) VALUES (?1, ?2, 1)
         ON CONFLICT (warehouse, day) DO UPDATE SET orders = orders + 1",
    )?
    .execute(params![warehouse, day])?;
    Ok(())
}

/// When any agent of `warehouse` was last heard from.
pub fn last_heard(conn: &Connection, warehouse: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT MAX(last_seen_ms) FROM agents WHERE warehouse = ?1")?
        .query_row([warehouse], |r| r.get(0))
}

/// Warehouses where any reservation is active.
pub fn holding_warehouses(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT DISTINCT warehouse FROM reservations WHERE status = 'active'")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// Open orders with an active hold at one of `warehouses`.
pub fn orders_holding_at(
    conn: &Connection,
    warehouses: &[String],
) -> rusqlite::Result<Vec<String>> {
    if warehouses.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT o.id FROM reservations r JOIN orders o ON o.id = r.order_ref
         WHERE r.status = 'active' AND r.warehouse IN (SELECT value FROM json_each(?1))
           AND o.state IN ('reserved', 'backorder', 'queued') ORDER BY o.id",
    )?;
    let rows = stmt.query_map([encode(&warehouses)], |r| r.get(0))?;
    rows.collect()
}
