//! After an order is placed: cancelling all or part of it, keeping it past its TTL once
//! paid, and re-routing what a frozen or silent warehouse has not started to ship.
//!
//! Each command runs in the writer's transaction and releases exactly what is still held
//! (a hold's open amount already leaves out what the order's shipments consumed). The old
//! and the new decision of a re-route are both kept in the order's history.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Transaction;
use serde::Deserialize;
use serde_json::{json, Value};

use super::config::Allocation;
use super::place::{explain, pairs, route_and_hold, Prepared};
use super::request::{invalid, Invalid};
use super::route::Demand;
use super::store::{self, Allocated, Order};
use super::{view, Orders};
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

fn load(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Order>> {
    Ok(store::find(tx, id, None)?
        .map(|(o, _)| o)
        .filter(|o| o.id == id))
}

/// Cancels the order or some of its lines, releasing what is still held for them.
pub fn cancel(
    tx: &Transaction<'_>,
    id: &str,
    req: CancelRequest,
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
    store::update(tx, &order, now)?;
    store::log(
        tx,
        id,
        "cancelled",
        &json!({"lines": req.lines.as_ref().map(|l| l.iter().map(|c| json!({"line": c.line, "quantity": c.quantity})).collect::<Vec<_>>()), "reason": req.reason, "released": released}),
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
    tx: &Transaction<'_>,
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
pub fn keep(tx: &Transaction<'_>, id: &str, now: i64) -> rusqlite::Result<Outcome> {
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
    store::log(tx, id, "paid", &json!({}), now)?;
    Ok(Outcome::Done(view::render(
        &order,
        &view::holds(tx, &order)?,
    )))
}

/// Moves the allocations of warehouses that are frozen or silent now, and have not started
/// shipping this order, to the best warehouses that are not.
pub fn reroute(
    tx: &Transaction<'_>,
    orders: &Orders,
    id: &str,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Outcome> {
    let Some(mut order) = load(tx, id)? else {
        return Ok(Outcome::NotFound);
    };
    if order.state == "cancelled" {
        return Ok(Outcome::Conflict(
            json!({"error": "order cancelled", "field": "id", "detail": "a cancelled order is not routed again"}),
        ));
    }
    let holds = view::holds(tx, &order)?;
    let frozen: BTreeMap<String, String> = store::frozen(tx)?.into_iter().collect();
    let mut off: Vec<(String, String)> = Vec::new();
    let used: BTreeSet<String> = order
        .lines
        .iter()
        .flat_map(|l| l.allocations.iter().map(|a| a.warehouse.clone()))
        .collect();
    for wh in used {
        let shipping = holds
            .iter()
            .any(|r| r.warehouse == wh && (r.open < r.quantity || r.status != "active"));
        if let Some(why) = orders.unavailable(tx, &wh, &orders.site(&wh), &frozen, now)? {
            if !shipping {
                off.push((wh, why));
            }
        }
    }
    if off.is_empty() {
        let mut v = view::render(&order, &holds);
        v["moved"] = json!([]);
        return Ok(Outcome::Done(v));
    }
    let skip: BTreeSet<String> = off.iter().map(|(w, _)| w.clone()).collect();
    let mut moved: Vec<(usize, Demand)> = Vec::new();
    for l in &order.lines {
        let n: u64 = l
            .allocations
            .iter()
            .filter(|a| skip.contains(&a.warehouse))
            .map(|a| a.quantity)
            .sum();
        if n > 0 {
            moved.push((
                l.line,
                Demand {
                    quantity: n,
                    parts: l.parts.clone(),
                },
            ));
        }
    }
    let channel = orders
        .channel(&order.channel)
        .cloned()
        .unwrap_or_else(|| super::config::ChannelRouting::default_for(&order.channel));
    let allocation = match order.request.allow_split.unwrap_or(channel.allow_split) {
        false => Allocation::Single,
        true => channel.allocation,
    };
    let p = Prepared {
        request: order.request.clone(),
        body: Value::Null,
        demand: moved.iter().map(|(_, d)| d.clone()).collect(),
        idempotency_key: None,
        expires_at_ms: order.expires_at_ms,
        routed_at: jiff::Timestamp::from_millisecond(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
    };
    let (plan, new_holds, _, filtered, dropped) = match route_and_hold(
        tx,
        orders,
        &channel,
        allocation,
        &p,
        id,
        order.holds_made,
        &skip,
        now,
        touched,
    )? {
        Ok(r) => r,
        Err(mut body) => {
            body["detail"] =
                json!("no other eligible warehouse can take these lines; nothing was moved");
            return Ok(Outcome::Conflict(body));
        }
    };
    let old: Vec<Value> = order
        .lines
        .iter()
        .map(|l| json!({"line": l.line, "allocations": l.allocations}))
        .collect();
    for h in order.holds.iter().filter(|h| skip.contains(&h.warehouse)) {
        reserve::release(tx, &h.reservation, now, touched)?;
    }
    order.holds.retain(|h| !skip.contains(&h.warehouse));
    order.holds_made += new_holds.len() as u32;
    order.holds.extend(new_holds);
    for l in order.lines.iter_mut() {
        l.allocations.retain(|a| !skip.contains(&a.warehouse));
    }
    for a in &plan.allocations {
        let l = &mut order.lines[moved[a.line].0];
        match l
            .allocations
            .iter_mut()
            .find(|x| x.warehouse == a.warehouse)
        {
            Some(x) => x.quantity += a.quantity,
            None => l.allocations.push(Allocated {
                warehouse: a.warehouse.clone(),
                quantity: a.quantity,
            }),
        }
    }
    for (i, short) in &plan.shortfall {
        let l = &mut order.lines[moved[*i].0];
        l.unallocated += short;
        l.reason = Some("re-routed: no eligible warehouse has it".into());
    }
    if !plan.shortfall.is_empty() && order.state == "reserved" {
        order.state = if channel.leftovers == super::config::Leftovers::Queue {
            "queued"
        } else {
            "backorder"
        }
        .into();
    }
    order.explanation = explain(
        &channel,
        allocation,
        p.routed_at,
        &plan,
        &filtered,
        &dropped,
    );
    let new: Vec<Value> = order
        .lines
        .iter()
        .map(|l| json!({"line": l.line, "allocations": l.allocations}))
        .collect();
    store::update(tx, &order, now)?;
    store::log(
        tx,
        id,
        "rerouted",
        &json!({"off": pairs(&off), "old": old, "new": new, "explanation": order.explanation}),
        now,
    )?;
    let mut v = view::render(&order, &view::holds(tx, &order)?);
    v["moved"] = pairs(&off);
    Ok(Outcome::Done(v))
}
