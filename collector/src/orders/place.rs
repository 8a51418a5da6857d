//! `place`: the writer-side command behind `POST /v1/orders`. Idempotency check, routing,
//! and every hold of the order in one transaction; a warehouse whose hold fails is dropped
//! and the order re-ranked without it, all before the transaction commits.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::Connection;
use serde_json::{json, Value};

use super::config::{Allocation, ChannelRouting, Leftovers};
use super::request::{first_difference, OrderRequest};
use super::route::{self, Alloc, Demand, Plan};
use super::store::{self, Allocated, HoldRef, Line, Order};
use super::{calendar, view, Ask, Filtered, Orders};
use crate::ledger::StockKey;
use crate::reserve::{self, CreatedAll, Hold};

/// A checked order, ready for the writer.
pub struct Prepared {
    pub request: OrderRequest,
    pub demand: Vec<Demand>,
    pub idempotency_key: Option<String>,
    pub expires_at_ms: Option<i64>,
    pub routed_at: jiff::Timestamp,
    /// Who placed it: the token's name (or `api` without tokens), kept in its history and on
    /// its reservations.
    pub by: String,
}

/// What placing an order led to.
#[derive(Debug)]
pub enum Placed {
    Created(Value),
    /// Sent before with the same body: the first answer.
    Replayed(Value),
    /// Sent before with another body: the first field that differs.
    Conflict(String),
    /// Not enough stock and the channel rejects leftovers: nothing was held.
    Shortfall(Value),
}

/// Places an order inside the writer's transaction.
pub fn place(
    tx: &Connection,
    orders: &Orders,
    p: Prepared,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Placed> {
    if let Some((existing, answer)) = store::find(tx, &p.request.id, p.idempotency_key.as_deref())?
    {
        return Ok(replayed(&existing, answer, &p.request));
    }
    let req = &p.request;
    let channel = orders
        .channel(&req.channel)
        .expect("channel checked before");
    let allocation = allocation(channel, req);
    let (plan, holds, reservations, filtered, dropped) = match route_and_hold(
        tx,
        orders,
        channel,
        allocation,
        &p,
        &req.id,
        0,
        &BTreeSet::new(),
        now,
        touched,
    )? {
        Ok(done) => done,
        Err(shortfall) => return Ok(Placed::Shortfall(shortfall)),
    };
    let explanation = explain(channel, allocation, p.routed_at, &plan, &filtered, &dropped);
    let order = record(&p, channel, &plan, holds, explanation, now);
    for wh in plan
        .allocations
        .iter()
        .map(|a| &a.warehouse)
        .collect::<BTreeSet<_>>()
    {
        let day = calendar::local_day(&orders.site(wh), p.routed_at).to_string();
        store::count_routed(tx, wh, &day)?;
    }
    let answer = view::render(&order, &reservations);
    store::insert(tx, &order, p.idempotency_key.as_deref(), &answer, now)?;
    store::log(
        tx,
        &order.id,
        "placed",
        // The explanation is in the stored first answer; `view::show` puts it back here.
        &json!({"state": order.state}),
        &p.by,
        now,
    )?;
    Ok(Placed::Created(answer))
}

/// What routing and holding produced: the plan, the holds, their reservations, the
/// filtered-out and the dropped warehouses.
pub(super) type Routed = (
    Plan,
    Vec<HoldRef>,
    Vec<reserve::Reservation>,
    Filtered,
    Filtered,
);

/// The answer to an order sent again: its first answer if the body is the same, else the
/// first field that differs.
pub fn replayed(existing: &Order, answer: Value, request: &OrderRequest) -> Placed {
    let stored = serde_json::to_value(&existing.request).unwrap_or(Value::Null);
    // Only a retry pays for the request as JSON, to compare it field by field.
    let body = serde_json::to_value(request).unwrap_or(Value::Null);
    match first_difference(&stored, &body, "$") {
        None => Placed::Replayed(answer),
        Some(field) => Placed::Conflict(field),
    }
}

/// How the order may be spread over warehouses: `single` unless it and its channel allow
/// a split.
pub fn allocation(channel: &ChannelRouting, req: &OrderRequest) -> Allocation {
    match req.allow_split.unwrap_or(channel.allow_split) {
        false => Allocation::Single,
        true => channel.allocation,
    }
}

/// Routes `p.demand` and takes the holds; re-ranks without a warehouse whose hold fails.
/// `Err` carries the 409 body when leftovers are rejected.
#[allow(clippy::too_many_arguments)]
pub(super) fn route_and_hold(
    tx: &Connection,
    orders: &Orders,
    channel: &ChannelRouting,
    allocation: Allocation,
    p: &Prepared,
    order_id: &str,
    first_hold: u32,
    skip: &BTreeSet<String>,
    now: i64,
    touched: &mut Vec<StockKey>,
) -> rusqlite::Result<Result<Routed, Value>> {
    let mut skip = skip.clone();
    let mut dropped = Vec::new();
    loop {
        let ask = Ask {
            lines: &p.demand,
            ship_to: &p.request.ship_to,
            at: p.routed_at,
            now,
        };
        let facts = super::read::facts(tx, orders, channel, &p.demand, p.routed_at)?;
        let (candidates, filtered) = orders.candidates(&facts, channel, &ask, &skip);
        let plan = route::plan(candidates, &channel.rules, &p.demand, allocation);
        if !plan.shortfall.is_empty() && channel.leftovers == Leftovers::Reject {
            return Ok(Err(shortfall_body(&p.request, &plan, &filtered, &dropped)));
        }
        let holds = holds_for(&plan.allocations, &p.demand, order_id, first_hold);
        let wanted: Vec<Hold> = holds.iter().map(|(h, _)| h.clone()).collect();
        let owner = reserve::Owner {
            order: order_id,
            channel: Some(&p.request.channel),
            expires_at_ms: p.expires_at_ms,
            by: Some(&p.by),
        };
        match reserve::create_all(tx, &owner, &wanted, now, touched)? {
            CreatedAll::New(reservations) => {
                let refs = holds.into_iter().map(|(_, r)| r).collect();
                return Ok(Ok((plan, refs, reservations, filtered, dropped)));
            }
            CreatedAll::Insufficient {
                sku,
                warehouse,
                wanted,
                available,
            } => {
                // Only reachable if routing and the hold disagree (e.g. a hold at the
                // warehouse level that routing did not see); the loop ends because each
                // pass drops one warehouse for good.
                let why = format!("hold of {wanted} {sku} failed: {available} available");
                skip.insert(warehouse.clone());
                dropped.push((warehouse, why));
            }
        }
    }
}

/// One hold per (SKU, warehouse) of the allocations, components summed over lines.
pub fn holds_for(
    allocs: &[Alloc],
    demand: &[Demand],
    order: &str,
    first: u32,
) -> Vec<(Hold, HoldRef)> {
    let mut per_key: BTreeMap<(String, String), u64> = BTreeMap::new();
    for a in allocs {
        for (sku, per) in &demand[a.line].parts {
            let slot = per_key
                .entry((sku.clone(), a.warehouse.clone()))
                .or_default();
            *slot = slot.saturating_add(a.quantity.saturating_mul(*per));
        }
    }
    per_key
        .into_iter()
        .enumerate()
        .map(|(i, ((sku, warehouse), n))| {
            let id = format!("{order}#{}", first as usize + i + 1);
            let hold = Hold {
                id: id.clone(),
                sku: sku.clone(),
                warehouse: warehouse.clone(),
                quantity: i64::try_from(n).unwrap_or(i64::MAX),
            };
            (
                hold,
                HoldRef {
                    reservation: id,
                    sku,
                    warehouse,
                },
            )
        })
        .collect()
}

/// The 409 body of an order nobody can ship in full: the shortfall per line.
pub fn shortfall_body(
    req: &OrderRequest,
    plan: &Plan,
    filtered: &[(String, String)],
    dropped: &[(String, String)],
) -> Value {
    let lines: Vec<Value> = plan
        .shortfall
        .iter()
        .map(|(i, short)| json!({"line": i, "sku": req.lines[*i].sku, "quantity": req.lines[*i].quantity, "short": short}))
        .collect();
    let first = plan.shortfall.keys().next().copied().unwrap_or(0);
    json!({
        "error": "insufficient stock",
        "field": format!("$.lines[{first}].quantity"),
        "detail": "no eligible warehouse has enough for these lines; nothing was held",
        "shortfall": lines,
        "filtered_out": pairs(filtered),
        "dropped": pairs(dropped),
    })
}

pub(super) fn pairs(p: &[(String, String)]) -> Value {
    p.iter()
        .map(|(w, why)| json!({"warehouse": w, "reason": why}))
        .collect()
}

/// The routing decision, rule by rule, for the answer and the history.
pub fn explain(
    channel: &ChannelRouting,
    allocation: Allocation,
    at: jiff::Timestamp,
    plan: &Plan,
    filtered: &[(String, String)],
    dropped: &[(String, String)],
) -> Value {
    json!({
        "rules": channel.rules.iter().map(|r| route::rule_name(*r)).collect::<Vec<_>>(),
        "allocation": allocation,
        "leftovers": channel.leftovers,
        "routed_at": at.to_string(),
        "ranking": plan.ranking,
        "filtered_out": pairs(filtered),
        "dropped": pairs(dropped),
    })
}

/// The order as stored, from its plan and holds.
pub fn record(
    p: &Prepared,
    channel: &ChannelRouting,
    plan: &Plan,
    holds: Vec<HoldRef>,
    explanation: Value,
    now: i64,
) -> Order {
    let lines: Vec<Line> = p
        .request
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let short = plan.shortfall.get(&i).copied().unwrap_or(0);
            Line {
                line: i,
                sku: l.sku.clone(),
                quantity: l.quantity,
                parts: p.demand[i].parts.clone(),
                allocations: plan
                    .allocations
                    .iter()
                    .filter(|a| a.line == i)
                    .map(|a| Allocated {
                        warehouse: a.warehouse.clone(),
                        quantity: a.quantity,
                    })
                    .collect(),
                cancelled: 0,
                unallocated: short,
                reason: (short > 0).then(|| "no eligible warehouse has it".to_string()),
            }
        })
        .collect();
    let state = match (plan.shortfall.is_empty(), channel.leftovers) {
        (true, _) | (false, Leftovers::Reject) => "reserved",
        (false, Leftovers::Backorder) => "backorder",
        (false, Leftovers::Queue) => "queued",
    };
    Order {
        id: p.request.id.clone(),
        channel: p.request.channel.clone(),
        state: state.into(),
        request: p.request.clone(),
        holds_made: holds.len() as u32,
        lines,
        holds,
        explanation,
        expires_at_ms: p.expires_at_ms,
        created_at_ms: now,
    }
}
