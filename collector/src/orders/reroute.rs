//! Re-routing: moving what a frozen or silent warehouse holds for an order, and has not
//! started to ship, to the best warehouses that can still ship, by the channel's rules.
//!
//! Runs in the writer's transaction: the new holds are taken before the old ones are
//! released, and if nobody else can take the lines (and the channel rejects leftovers)
//! nothing moves. The old and the new decision are both kept in the order's history.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde_json::{json, Value};

use super::config::Allocation;
use super::lifecycle::{load, Outcome};
use super::place::{explain, pairs, route_and_hold, Prepared};
use super::route::Demand;
use super::store::{self, Allocated};
use super::{view, Orders};
use crate::ledger::StockKey;
use crate::reserve;

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
        let heard = store::last_heard(tx, &wh)?;
        if let Some(why) = orders.unavailable(&wh, &orders.site(&wh), &frozen, heard, now) {
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
        demand: moved.iter().map(|(_, d)| d.clone()).collect(),
        idempotency_key: None,
        expires_at_ms: order.expires_at_ms,
        routed_at: jiff::Timestamp::from_millisecond(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        by: by.to_string(),
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
        by,
        now,
    )?;
    let mut v = view::render(&order, &view::holds(tx, &order)?);
    v["moved"] = pairs(&off);
    Ok(Outcome::Done(v))
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
