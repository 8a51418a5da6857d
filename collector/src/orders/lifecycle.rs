//! After an order is placed: cancelling all or part of it, and keeping it past its TTL once
//! paid (re-routing is in `reroute`).
//!
//! Each command runs in the writer's transaction and releases exactly what is still held
//! (a hold's open amount already leaves out what the order's shipments consumed).

use std::collections::BTreeSet;

use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{invalid, Invalid};
use super::store::{self, Order};
use super::view;
use crate::ledger::StockKey;
use crate::reserve;

/// What a lifecycle command led to.
#[derive(Debug)]
pub enum Outcome {
    Done(Value),
    NotFound,
    Invalid(Invalid),
    Conflict(Value),
}

/// `POST /v1/orders/<id>/cancel` body: nothing for the whole order, or lines and quantities.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default)]
    pub lines: Option<Vec<CancelLine>>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Cancel `quantity` (default: all that is left) of line `line`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelLine {
    pub line: usize,
    #[serde(default)]
    pub quantity: Option<u64>,
}

pub(super) fn load(tx: &Connection, id: &str) -> rusqlite::Result<Option<Order>> {
    Ok(store::find(tx, id, None)?
        .map(|(o, _)| o)
        .filter(|o| o.id == id))
}

/// Cancels the order or some of its lines, releasing what is still held for them.
pub fn cancel(
    tx: &Connection,
    id: &str,
    req: CancelRequest,
    by: &str,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Outcome> {
    let Some(mut order) = load(tx, id)? else {
        return Ok(Outcome::NotFound);
    };
    if order.state == "cancelled" {
        return Ok(Outcome::Done(view::render(
            &order,
            &view::holds(tx, &order)?,
        )));
    }
    let wanted: Vec<(usize, u64)> = match &req.lines {
        None => order
            .lines
            .iter()
            .map(|l| (l.line, l.quantity - l.cancelled))
            .collect(),
        Some(lines) => match checked(&order, lines) {
            Ok(w) => w,
            Err(e) => return Ok(Outcome::Invalid(e)),
        },
    };
    let mut released = Vec::new();
    for (line, q) in wanted {
        cancel_line(tx, &mut order, line, q, now, touched, &mut released)?;
    }
    if order.lines.iter().all(|l| l.cancelled == l.quantity) {
        // Whole order: whatever a hold still has (e.g. a line's rounding) goes back too.
        for h in order.holds.clone() {
            if let Some(r) = reserve::get(tx, &h.reservation)?.filter(|r| r.open > 0) {
                reserve::release(tx, &r.id, now, touched)?;
                released.push(json!({"reservation": r.id, "sku": r.sku, "warehouse": r.warehouse, "units": r.open}));
            }
        }
        order.state = "cancelled".into();
    }
    for r in released.iter().filter_map(|r| r["reservation"].as_str()) {
        reserve::record_by(tx, r, reserve::By::Closed, by)?;
    }
    store::update(tx, &order, now)?;
    store::log(
        tx,
        id,
        "cancelled",
        &json!({"lines": req.lines.as_ref().map(|l| l.iter().map(|c| json!({"line": c.line, "quantity": c.quantity})).collect::<Vec<_>>()), "reason": req.reason, "released": released}),
        by,
        now,
    )?;
    let mut v = view::render(&order, &view::holds(tx, &order)?);
    v["released"] = Value::Array(released);
    Ok(Outcome::Done(v))
}

fn checked(order: &Order, lines: &[CancelLine]) -> Result<Vec<(usize, u64)>, Invalid> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, c) in lines.iter().enumerate() {
        let Some(l) = order.lines.get(c.line).filter(|_| seen.insert(c.line)) else {
            return Err(invalid(
                format!("$.lines[{i}].line"),
                format!("the order has no line {} (or it is named twice)", c.line),
            ));
        };
        let left = l.quantity - l.cancelled;
        let q = c.quantity.unwrap_or(left);
        if q == 0 || q > left {
            return Err(invalid(
                format!("$.lines[{i}].quantity"),
                format!("{q} is not within 1..={left} (what is left of the line)"),
            ));
        }
        out.push((c.line, q));
    }
    Ok(out)
}

/// Cancels `q` units of a line: backordered units first, then allocations, last first.
fn cancel_line(
    tx: &Connection,
    order: &mut Order,
    line: usize,
    q: u64,
    now: i64,
    touched: &mut Vec<StockKey>,
    released: &mut Vec<Value>,
) -> rusqlite::Result<()> {
    let l = &mut order.lines[line];
    let from_backorder = q.min(l.unallocated);
    l.unallocated -= from_backorder;
    l.cancelled += q;
    let mut rest = q - from_backorder;
    let parts = l.parts.clone();
    let mut freed: Vec<(String, u64)> = Vec::new();
    while rest > 0 {
        let Some(a) = l.allocations.last_mut() else {
            break;
        };
        let k = rest.min(a.quantity);
        a.quantity -= k;
        rest -= k;
        freed.push((a.warehouse.clone(), k));
        if a.quantity == 0 {
            l.allocations.pop();
        }
    }
    for (wh, units) in freed {
        for (sku, per) in &parts {
            let Some(h) = order
                .holds
                .iter()
                .find(|h| &h.sku == sku && h.warehouse == wh)
            else {
                continue;
            };
            let Some(r) = reserve::get(tx, &h.reservation)? else {
                continue;
            };
            let by = i64::try_from(units.saturating_mul(*per))
                .unwrap_or(i64::MAX)
                .min(r.open);
            if by > 0 {
                reserve::reduce(tx, &r.id, by, now, touched)?;
                released
                    .push(json!({"reservation": r.id, "sku": sku, "warehouse": wh, "units": by}));
            }
        }
    }
    Ok(())
}

/// The order was paid: its holds stay until shipped, whatever its TTL said.
pub fn keep(tx: &Connection, id: &str, by: &str, now: i64) -> rusqlite::Result<Outcome> {
    let Some(mut order) = load(tx, id)? else {
        return Ok(Outcome::NotFound);
    };
    let holds = view::holds(tx, &order)?;
    if holds.iter().any(|r| r.status == "expired") {
        return Ok(Outcome::Conflict(
            json!({"error": "order expired", "field": "id", "detail": "the order's holds lapsed before it was paid; place it again"}),
        ));
    }
    for h in &order.holds {
        reserve::keep(tx, &h.reservation)?;
    }
    order.expires_at_ms = None;
    store::update(tx, &order, now)?;
    store::log(tx, id, "paid", &json!({}), by, now)?;
    Ok(Outcome::Done(view::render(
        &order,
        &view::holds(tx, &order)?,
    )))
}
