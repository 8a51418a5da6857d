//! How an order is shown: its lines with the warehouses and reservations that serve them,
//! the state its holds put it in, the routing explanation and (on `GET`) its history.
//!
//! `shipped`, `partially_shipped` and `expired` are read from the holds, never stored, so
//! they cannot disagree with the shipments the ledger has counted.

use rusqlite::Connection;
use serde_json::{json, Value};

use super::store::{self, Order};
use crate::reserve::{self, Reservation};

/// The order's state given its holds.
pub fn state(order: &Order, holds: &[Reservation]) -> String {
    if order.state != "reserved" || holds.is_empty() {
        return order.state.clone();
    }
    let live: Vec<&Reservation> = holds.iter().filter(|r| r.status != "released").collect();
    if live.is_empty() {
        return order.state.clone();
    }
    if live.iter().all(|r| r.status == "expired") {
        return "expired".into();
    }
    let shipped =
        |r: &&Reservation| r.status == "fulfilled" || (r.status == "active" && r.open == 0);
    if live.iter().all(shipped) {
        "shipped".into()
    } else if live
        .iter()
        .any(|r| r.quantity > r.open && r.status == "active")
    {
        "partially_shipped".into()
    } else {
        order.state.clone()
    }
}

/// The order as JSON, with its holds as they are now.
pub fn render(order: &Order, holds: &[Reservation]) -> Value {
    let lines: Vec<Value> = order
        .lines
        .iter()
        .map(|l| {
            let allocations: Vec<Value> = l
                .allocations
                .iter()
                .map(|a| {
                    let ids: Vec<&str> = order
                        .holds
                        .iter()
                        .filter(|h| {
                            h.warehouse == a.warehouse && l.parts.iter().any(|p| p.0 == h.sku)
                        })
                        .map(|h| h.reservation.as_str())
                        .collect();
                    json!({"warehouse": a.warehouse, "quantity": a.quantity, "reservations": ids})
                })
                .collect();
            json!({
                "line": l.line, "sku": l.sku, "quantity": l.quantity, "allocations": allocations,
                "cancelled": l.cancelled, "unallocated": l.unallocated, "reason": l.reason,
            })
        })
        .collect();
    json!({
        "id": order.id,
        "channel": order.channel,
        "state": state(order, holds),
        "lines": lines,
        "reservations": holds.iter().map(|r| json!({
            "id": r.id, "sku": r.sku, "warehouse": r.warehouse, "quantity": r.quantity,
            "open": r.open, "status": r.status, "expires_at_ms": r.expires_at_ms,
        })).collect::<Vec<_>>(),
        "explanation": order.explanation,
        "expires_at_ms": order.expires_at_ms,
        "created_at_ms": order.created_at_ms,
    })
}

/// The reservations of an order's holds, current.
pub fn holds(conn: &Connection, order: &Order) -> rusqlite::Result<Vec<Reservation>> {
    order
        .holds
        .iter()
        .filter_map(|h| reserve::get(conn, &h.reservation).transpose())
        .collect()
}

/// `GET /v1/orders/<id>`: the order with its history.
pub fn show(conn: &Connection, id: &str) -> rusqlite::Result<Option<Value>> {
    let Some((order, answer)) = store::find(conn, id, None)? else {
        return Ok(None);
    };
    if order.id != id {
        return Ok(None);
    }
    let v = render(&order, &holds(conn, &order)?);
    Ok(Some(with_history(v, store::history(conn, id)?, &answer)))
}

/// An order's JSON with its history; the placing decision, stored once in the first
/// `answer`, is put back into the `placed` event.
pub fn with_history(mut v: Value, mut history: Vec<Value>, answer: &Value) -> Value {
    if let Some(placed) = history.iter_mut().find(|e| e["event"] == "placed") {
        if placed["detail"].get("explanation").is_none() {
            placed["detail"]["explanation"] = answer["explanation"].clone();
        }
    }
    v["history"] = Value::Array(history);
    v
}

/// The stored states a listed `state` is read from (derived states are stored as
/// `reserved`); empty: all.
pub fn stored_states(state: Option<&str>) -> Vec<&str> {
    match state {
        None => vec![],
        Some("shipped" | "partially_shipped" | "expired" | "reserved") => vec!["reserved"],
        Some(s) => vec![s],
    }
}

/// `GET /v1/orders?state=&channel=`: newest first; derived states are filtered after reading.
pub fn list(
    conn: &Connection,
    state: Option<&str>,
    channel: Option<&str>,
    limit: i64,
) -> rusqlite::Result<Vec<Value>> {
    let stored = stored_states(state);
    let mut out = Vec::new();
    for order in store::list(
        conn,
        &stored,
        channel,
        if state.is_some() {
            limit.saturating_mul(10)
        } else {
            limit
        },
    )? {
        let v = render(&order, &holds(conn, &order)?);
        if state.is_none_or(|s| v["state"] == s) {
            out.push(v);
        }
        if out.len() as i64 >= limit {
            break;
        }
    }
    Ok(out)
}
