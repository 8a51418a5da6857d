//! `POST /v1/orders` on PostgreSQL: lock, read, route, hold, store, in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use tokio_postgres::{Client, Transaction};

use super::{lock_order, table};
use crate::orders::config::{Allocation, ChannelRouting, Leftovers};
use crate::orders::route::{self, Demand, Plan};
use crate::orders::store::HoldRef;
use crate::orders::{
    self, calendar, view, Ask, Facts, Filtered, Orders, Placed, Prepared as Checked,
};
use crate::reserve::{Hold, Reservation};
use crate::store::postgres::project::lock;
use crate::store::postgres::{reserve, PgError, Prepared};

/// Places a checked order: the SQLite collector's answers, atomic across workers.
pub async fn place(
    client: &mut Client,
    p: &Prepared,
    orders: &Orders,
    order: &Checked,
    now: i64,
) -> Result<Placed, PgError> {
    super::retried!(client, |tx| place_in(&tx, p, orders, order, now))
}

async fn place_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    orders: &Orders,
    c: &Checked,
    now: i64,
) -> Result<Placed, PgError> {
    let (req, key) = (&c.request, c.idempotency_key.as_deref());
    lock_order(tx, p, &req.id, key).await?;
    if let Some((existing, answer)) = table::find(tx, p, &req.id, key).await? {
        return Ok(orders::replayed(&existing, answer, req));
    }
    let channel = orders
        .channel(&req.channel)
        .expect("channel checked before");
    let allocation = orders::allocation(channel, req);
    let skip = BTreeSet::new();
    let routed = route_and_hold(tx, p, orders, channel, allocation, c, 0, &skip, now).await?;
    let (plan, holds, reservations, filtered, dropped) = match routed {
        Ok(r) => r,
        Err(shortfall) => return Ok(Placed::Shortfall(shortfall)),
    };
    let explanation = orders::explain(channel, allocation, c.routed_at, &plan, &filtered, &dropped);
    let refs: Vec<HoldRef> = holds.into_iter().map(|(_, r)| r).collect();
    let order = orders::record(c, channel, &plan, refs, explanation, now);
    let used: BTreeSet<&String> = plan.allocations.iter().map(|a| &a.warehouse).collect();
    for wh in used {
        let day = calendar::local_day(&orders.site(wh), c.routed_at).to_string();
        table::count_routed(tx, p, wh, &day).await?;
    }
    let answer = view::render(&order, &reservations);
    table::insert(tx, p, &order, key, &answer, now).await?;
    let placed = json!({"state": order.state});
    table::log(tx, p, &order.id, "placed", &placed, &c.by, now).await?;
    Ok(Placed::Created(answer))
}

/// What routing and holding produced: the plan, the holds, their reservations, the
/// filtered-out and the dropped warehouses.
pub(super) type Routed = (
    Plan,
    Vec<(Hold, HoldRef)>,
    Vec<Reservation>,
    Filtered,
    Filtered,
);

/// Routes `c.demand` (without the `skip` warehouses) and takes the holds, numbered from
/// `first_hold`; re-ranks without a warehouse whose hold fails. `Err` carries the 409 body
/// when the channel rejects leftovers.
#[allow(clippy::too_many_arguments)]
pub(super) async fn route_and_hold(
    tx: &Transaction<'_>,
    p: &Prepared,
    orders: &Orders,
    channel: &ChannelRouting,
    allocation: Allocation,
    c: &Checked,
    first_hold: u32,
    skip: &BTreeSet<String>,
    now: i64,
) -> Result<Result<Routed, Value>, PgError> {
    let req = &c.request;
    let mut facts = facts(tx, p, orders, channel, &c.demand, c.routed_at).await?;
    let (mut skip, mut dropped) = (skip.clone(), Vec::new());
    loop {
        let ask = Ask {
            lines: &c.demand,
            ship_to: &req.ship_to,
            at: c.routed_at,
            now,
        };
        let (candidates, filtered) = orders.candidates(&facts, channel, &ask, &skip);
        let plan = route::plan(candidates, &channel.rules, &c.demand, allocation);
        if !plan.shortfall.is_empty() && channel.leftovers == Leftovers::Reject {
            return Ok(Err(orders::shortfall_body(req, &plan, &filtered, &dropped)));
        }
        let holds = orders::holds_for(&plan.allocations, &c.demand, &req.id, first_hold);
        match hold_all(tx, p, c, &holds, now).await? {
            Ok(reservations) => return Ok(Ok((plan, holds, reservations, filtered, dropped))),
            Err((warehouse, why)) => {
                // Only if routing and the hold disagree: each pass drops one warehouse for
                // good, so the loop ends; the numbers are read again under the same locks.
                skip.insert(warehouse.clone());
                dropped.push((warehouse, why));
                let skus: Vec<&str> = facts.available.keys().map(String::as_str).collect();
                facts.available = table::available(tx, p, &skus).await?;
            }
        }
    }
}

/// Routing's numbers, read after locking every (SKU, warehouse) the order may touch (and,
/// for a warehouse with a daily capacity, the warehouse itself) in ascending lock-id order.
/// Only the warehouses locked are candidates: one that got its first row of these SKUs in
/// between is left out of this order, never read unlocked.
async fn facts(
    tx: &Transaction<'_>,
    p: &Prepared,
    orders: &Orders,
    channel: &ChannelRouting,
    lines: &[Demand],
    at: jiff::Timestamp,
) -> Result<Facts, PgError> {
    let skus: BTreeSet<&str> = lines
        .iter()
        .flat_map(|l| l.parts.iter().map(|p| p.0.as_str()))
        .collect();
    let skus: Vec<&str> = skus.into_iter().collect();
    let names = orders.warehouses_for(channel, &table::available(tx, p, &skus).await?);
    let mut groups: Vec<(String, String)> = Vec::new();
    let mut days = BTreeMap::new();
    for wh in &names {
        groups.extend(skus.iter().map(|s| (s.to_string(), wh.clone())));
        if let Some(day) = orders.capacity_day(wh, at) {
            // An SKU is never empty: ("", warehouse) is the warehouse's own lock.
            groups.push((String::new(), wh.clone()));
            days.insert(wh.clone(), day);
        }
    }
    lock(tx, p, &groups).await?;
    let mut routed_today = BTreeMap::new();
    for (wh, day) in &days {
        routed_today.insert(wh.clone(), table::routed_on(tx, p, wh, day).await?);
    }
    Ok(Facts {
        available: table::available(tx, p, &skus).await?,
        frozen: table::frozen(tx, p).await?,
        heard: table::heard(tx, p, &names).await?,
        warehouses: Some(names),
        routed_today,
    })
}

/// Takes every hold or none (the caller's transaction rolls back on `Err`); `Err` names
/// the warehouse that could not give its share, and why. The keys are locked already.
async fn hold_all(
    tx: &Transaction<'_>,
    p: &Prepared,
    c: &Checked,
    holds: &[(Hold, HoldRef)],
    now: i64,
) -> Result<Result<Vec<Reservation>, (String, String)>, PgError> {
    // `holds_for` gives one hold per (SKU, warehouse), components already summed.
    for (h, _) in holds {
        let available: i64 = tx
            .query_one(
                &p.get(tx, "SELECT COALESCE(SUM(available), 0)::bigint FROM stock WHERE sku = $1 AND warehouse = $2").await?,
                &[&h.sku, &h.warehouse],
            )
            .await?
            .get(0);
        if available < h.quantity {
            let why = format!(
                "hold of {} {} failed: {available} available",
                h.quantity, h.sku
            );
            return Ok(Err((h.warehouse.clone(), why)));
        }
    }
    for (h, _) in holds {
        tx.execute(
            &p.get(tx, "INSERT INTO reservations (id, order_ref, sku, warehouse, quantity, channel, status, created_at_ms, expires_at_ms, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9)").await?,
            &[&h.id, &c.request.id, &h.sku, &h.warehouse, &h.quantity, &c.request.channel, &now, &c.expires_at_ms, &c.by],
        )
        .await?;
        // Shipped before it was reserved: that much is not held.
        reserve::settle(tx, p, &h.sku, &h.warehouse, now).await?;
    }
    let mut out = Vec::with_capacity(holds.len());
    for (h, _) in holds {
        out.extend(reserve::get(tx, p, &h.id).await?);
    }
    Ok(Ok(out))
}
