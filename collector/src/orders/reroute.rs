//! Re-routing: moving what a frozen or silent warehouse holds for an order, and has not
//! started to ship, to the best warehouses that can still ship, by the channel's rules.
//!
//! Runs in the writer's transaction: the new holds are taken before the old ones are
//! released, and if nobody else can take the lines (and the channel rejects leftovers)
//! nothing moves. The old and the new decision are both kept in the order's history.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde_json::{json, Value};

use super::config::{Allocation, ChannelRouting};
use super::lifecycle::{load, Outcome};
use super::place::{explain, pairs, route_and_hold, Prepared};
use super::route::{Demand, Plan};
use super::store::{self, Allocated, HoldRef, Order};
use super::{view, Orders};
use crate::ledger::StockKey;
use crate::reserve::{self, Reservation};

/// Moves the allocations of warehouses that are frozen or silent now, and have not started
/// shipping this order, to the best warehouses that are not.
pub fn reroute(
    tx: &Connection,
    orders: &Orders,
    id: &str,
    by: &str,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Outcome> {
    let Some(mut order) = load(tx, id)? else {
        return Ok(Outcome::NotFound);
    };
    if let Some(refused) = refused(&order) {
        return Ok(refused);
    }
    let holds = view::holds(tx, &order)?;
    let frozen: BTreeMap<String, String> = store::frozen(tx)?.into_iter().collect();
    let mut heard = BTreeMap::new();
    for wh in used(&order) {
        if let Some(t) = store::last_heard(tx, &wh)? {
            heard.insert(wh, t);
        }
    }
    let off = off(orders, &order, &holds, &frozen, &heard, now);
    if off.is_empty() {
        return Ok(unmoved(&order, &holds));
    }
    let ask = Asked::new(orders, &order, &off, by, now);
    let routed = route_and_hold(
        tx,
        orders,
        &ask.channel,
        ask.allocation,
        &ask.prepared,
        id,
        order.holds_made,
        &ask.skip,
        now,
        touched,
    )?;
    let (plan, new_holds, _, filtered, dropped) = match routed {
        Ok(r) => r,
        Err(body) => return Ok(nothing_moved(body)),
    };
    for h in order
        .holds
        .iter()
        .filter(|h| ask.skip.contains(&h.warehouse))
    {
        reserve::release(tx, &h.reservation, now, touched)?;
    }
    let event = ask.apply(&mut order, &plan, new_holds, &filtered, &dropped);
    store::update(tx, &order, now)?;
    store::log(tx, id, "rerouted", &event, by, now)?;
    let mut v = view::render(&order, &view::holds(tx, &order)?);
    v["moved"] = pairs(&off);
    Ok(Outcome::Done(v))
}

/// A cancelled order is not routed again.
pub fn refused(order: &Order) -> Option<Outcome> {
    (order.state == "cancelled").then(|| Outcome::Conflict(
        json!({"error": "order cancelled", "field": "id", "detail": "a cancelled order is not routed again"}),
    ))
}

/// The warehouses the order's lines are allocated to.
pub fn used(order: &Order) -> BTreeSet<String> {
    order
        .lines
        .iter()
        .flat_map(|l| l.allocations.iter().map(|a| a.warehouse.clone()))
        .collect()
}

/// The order's warehouses to move off, with why: frozen or silent now (`frozen`, `heard`
/// as `Facts` has them) and not started shipping this order (`holds`, current).
pub fn off(
    orders: &Orders,
    order: &Order,
    holds: &[Reservation],
    frozen: &BTreeMap<String, String>,
    heard: &BTreeMap<String, i64>,
    now: i64,
) -> Vec<(String, String)> {
    let mut off = Vec::new();
    for wh in used(order) {
        let shipping = holds
            .iter()
            .any(|r| r.warehouse == wh && (r.open < r.quantity || r.status != "active"));
        let site = orders.site(&wh);
        let last = heard.get(&wh).copied();
        if let Some(why) = orders.unavailable(&wh, &site, frozen, last, now) {
            if !shipping {
                off.push((wh, why));
            }
        }
    }
    off
}

/// Nothing to move: the order as it is, with an empty `moved`.
pub fn unmoved(order: &Order, holds: &[Reservation]) -> Outcome {
    let mut v = view::render(order, holds);
    v["moved"] = json!([]);
    Outcome::Done(v)
}

/// Nobody else can take the lines: the shortfall 409, nothing moved.
pub fn nothing_moved(mut body: Value) -> Outcome {
    body["detail"] = json!("no other eligible warehouse can take these lines; nothing was moved");
    Outcome::Conflict(body)
}

/// What re-routing asks routing: the units allocated to the `off` warehouses, as an order
/// of their own, routed now by the channel's rules without those warehouses.
pub struct Asked {
    pub channel: ChannelRouting,
    pub allocation: Allocation,
    pub prepared: Prepared,
    /// The warehouses moved off.
    pub skip: BTreeSet<String>,
    off: Vec<(String, String)>,
    /// The order's line of each line of `prepared`.
    lines: Vec<usize>,
}

impl Asked {
    pub fn new(
        orders: &Orders,
        order: &Order,
        off: &[(String, String)],
        by: &str,
        now: i64,
    ) -> Asked {
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
        let prepared = Prepared {
            request: order.request.clone(),
            demand: moved.iter().map(|(_, d)| d.clone()).collect(),
            idempotency_key: None,
            expires_at_ms: order.expires_at_ms,
            routed_at: jiff::Timestamp::from_millisecond(now)
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            by: by.to_string(),
        };
        Asked {
            channel,
            allocation,
            prepared,
            skip,
            off: off.to_vec(),
            lines: moved.into_iter().map(|(i, _)| i).collect(),
        }
    }

    /// Puts the new plan and holds in place of the old allocations (whose holds the caller
    /// released); returns the history entry with the old and the new decision.
    pub fn apply(
        &self,
        order: &mut Order,
        plan: &Plan,
        new_holds: Vec<HoldRef>,
        filtered: &[(String, String)],
        dropped: &[(String, String)],
    ) -> Value {
        let skip = &self.skip;
        let old: Vec<Value> = order
            .lines
            .iter()
            .map(|l| json!({"line": l.line, "allocations": l.allocations}))
            .collect();
        order.holds.retain(|h| !skip.contains(&h.warehouse));
        order.holds_made += new_holds.len() as u32;
        order.holds.extend(new_holds);
        for l in order.lines.iter_mut() {
            l.allocations.retain(|a| !skip.contains(&a.warehouse));
        }
        for a in &plan.allocations {
            let l = &mut order.lines[self.lines[a.line]];
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
            let l = &mut order.lines[self.lines[*i]];
            l.unallocated += short;
            l.reason = Some("re-routed: no eligible warehouse has it".into());
        }
        if !plan.shortfall.is_empty() && order.state == "reserved" {
            order.state = if self.channel.leftovers == super::config::Leftovers::Queue {
                "queued"
            } else {
                "backorder"
            }
            .into();
        }
        order.explanation = explain(
            &self.channel,
            self.allocation,
            self.prepared.routed_at,
            plan,
            filtered,
            dropped,
        );
        let new: Vec<Value> = order
            .lines
            .iter()
            .map(|l| json!({"line": l.line, "allocations": l.allocations}))
            .collect();
        json!({"off": pairs(&self.off), "old": old, "new": new, "explanation": order.explanation})
    }
}

/// Re-routes every open order that holds stock at a frozen or silent warehouse; returns the
/// ids of the orders whose allocations moved.
pub fn reroute_open(
    tx: &Connection,
    orders: &Orders,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Vec<String>> {
    let frozen: BTreeMap<String, String> = store::frozen(tx)?.into_iter().collect();
    let mut off = Vec::new();
    for wh in store::holding_warehouses(tx)? {
        let heard = store::last_heard(tx, &wh)?;
        if orders
            .unavailable(&wh, &orders.site(&wh), &frozen, heard, now)
            .is_some()
        {
            off.push(wh);
        }
    }
    let mut moved = Vec::new();
    for id in store::orders_holding_at(tx, &off)? {
        if let Outcome::Done(v) = reroute(tx, orders, &id, "auto-reroute", now, touched)? {
            if v["moved"].as_array().is_some_and(|m| !m.is_empty()) {
                moved.push(id);
            }
        }
    }
    Ok(moved)
}
