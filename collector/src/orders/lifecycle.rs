//! After an order is placed: cancelling all or part of it, and keeping it past its TTL once
//! paid (re-routing is in `reroute`).
//!
//! Each command runs in the writer's transaction and releases exactly what is still held
//! (a hold's open amount already leaves out what the order's shipments consumed).

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde::Deserialize;
use serde_json::{json, Value};

use super::request::{invalid, Invalid};
use super::store::{self, Order};
use super::view;
use crate::ledger::StockKey;
use crate::reserve::{self, Reservation};

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

/// What a cancellation gives back from one hold: `units` of it, or (`rest`) everything it
/// still holds.
#[derive(Debug, Clone)]
pub struct Release {
    pub reservation: String,
    pub sku: String,
    pub warehouse: String,
    pub units: i64,
    pub rest: bool,
}

impl Release {
    fn json(&self) -> Value {
        json!({"reservation": self.reservation, "sku": self.sku, "warehouse": self.warehouse, "units": self.units})
    }
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
    let holds = view::holds(tx, &order)?;
    if order.state == "cancelled" {
        return Ok(Outcome::Done(view::render(&order, &holds)));
    }
    let steps = match plan_cancel(&mut order, &holds, &req) {
        Ok(steps) => steps,
        Err(e) => return Ok(Outcome::Invalid(e)),
    };
    for s in &steps {
        match s.rest {
            true => reserve::release(tx, &s.reservation, now, touched)?,
            false => reserve::reduce(tx, &s.reservation, s.units, now, touched)?,
        };
        reserve::record_by(tx, &s.reservation, reserve::By::Closed, by)?;
    }
    store::update(tx, &order, now)?;
    let (event, released) = cancelled(&req, &steps);
    store::log(tx, id, "cancelled", &event, by, now)?;
    let mut v = view::render(&order, &view::holds(tx, &order)?);
    v["released"] = released;
    Ok(Outcome::Done(v))
}

/// The history entry of a cancellation and the `released` list of its answer.
pub fn cancelled(req: &CancelRequest, steps: &[Release]) -> (Value, Value) {
    let released: Vec<Value> = steps.iter().map(Release::json).collect();
    let event = json!({"lines": req.lines.as_ref().map(|l| l.iter().map(|c| json!({"line": c.line, "quantity": c.quantity})).collect::<Vec<_>>()), "reason": req.reason, "released": released});
    (event, Value::Array(released))
}

/// Decides a cancellation against the order's holds as they are now (`holds`): takes the
/// units off the order's lines (backordered units first, then allocations, last first) and
/// returns what each hold gives back; nothing is released twice, and nothing beyond what a
/// hold still has open. When every line is cancelled the order is, and every hold gives back
/// what it still has.
pub fn plan_cancel(
    order: &mut Order,
    holds: &[Reservation],
    req: &CancelRequest,
) -> Result<Vec<Release>, Invalid> {
    let wanted: Vec<(usize, u64)> = match &req.lines {
        None => order
            .lines
            .iter()
            .map(|l| (l.line, l.quantity - l.cancelled))
            .collect(),
        Some(lines) => checked(order, lines)?,
    };
    let mut open: BTreeMap<&str, i64> = holds.iter().map(|r| (r.id.as_str(), r.open)).collect();
    let mut steps = Vec::new();
    for (line, q) in wanted {
        for (wh, units, parts) in cancel_line(order, line, q) {
            for (sku, per) in &parts {
                let Some(h) = order
                    .holds
                    .iter()
                    .find(|h| &h.sku == sku && h.warehouse == wh)
                else {
                    continue;
                };
                let Some(left) = open.get_mut(h.reservation.as_str()) else {
                    continue;
                };
                let by = i64::try_from(units.saturating_mul(*per))
                    .unwrap_or(i64::MAX)
                    .min(*left);
                if by > 0 {
                    *left -= by;
                    steps.push(Release {
                        reservation: h.reservation.clone(),
                        sku: sku.clone(),
                        warehouse: wh.clone(),
                        units: by,
                        rest: false,
                    });
                }
            }
        }
    }
    if order.lines.iter().all(|l| l.cancelled == l.quantity) {
        // Whole order: whatever a hold still has (e.g. a line's rounding) goes back too.
        for r in holds {
            let left = open.get(r.id.as_str()).copied().unwrap_or(0);
            if left > 0 {
                steps.push(Release {
                    reservation: r.id.clone(),
                    sku: r.sku.clone(),
                    warehouse: r.warehouse.clone(),
                    units: left,
                    rest: true,
                });
            }
        }
        order.state = "cancelled".into();
    }
    Ok(steps)
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
/// Returns the units freed per warehouse, with what one unit of the line takes.
#[allow(clippy::type_complexity)]
fn cancel_line(order: &mut Order, line: usize, q: u64) -> Vec<(String, u64, Vec<(String, u64)>)> {
    let l = &mut order.lines[line];
    let from_backorder = q.min(l.unallocated);
    l.unallocated -= from_backorder;
    l.cancelled += q;
    let mut rest = q - from_backorder;
    let mut freed = Vec::new();
    while rest > 0 {
        let Some(a) = l.allocations.last_mut() else {
            break;
        };
        let k = rest.min(a.quantity);
        a.quantity -= k;
        rest -= k;
        freed.push((a.warehouse.clone(), k, l.parts.clone()));
        if a.quantity == 0 {
            l.allocations.pop();
        }
    }
    freed
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
