//! `POST /v1/orders/<id>/reroute` and the periodic re-routing on PostgreSQL: what a frozen or
//! silent warehouse holds for an order, and has not started to ship, moves to the best
//! warehouses that can still ship (`crate::orders::reroute` decides).
//!
//! One transaction: the order and its holds' (SKU, warehouse)s are locked and read, then
//! routing locks its candidates' (a second lock statement, so not in one global order with
//! the first: a deadlock this rarely causes is detected by PostgreSQL and the transaction
//! runs again). The new holds are taken before the old ones are released; if nobody else can
//! take the lines (and the channel rejects leftovers) nothing moves. Every worker may run
//! the periodic pass: each order is re-checked under its locks, so a second pass finds
//! nothing left to move.

use std::collections::BTreeMap;

use tokio_postgres::{Client, Transaction};

use super::lifecycle::{holds, load};
use super::place::route_and_hold;
use super::table;
use crate::orders::reroute::{self, Asked};
use crate::orders::{view, Orders, Outcome};
use crate::store::postgres::{now_ms, reserve, PgError, Pool, Prepared};

/// Re-routes order `id` off frozen or silent warehouses.
pub async fn reroute(
    client: &mut Client,
    p: &Prepared,
    orders: &Orders,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Outcome, PgError> {
    super::retried!(client, |tx| reroute_in(&tx, p, orders, id, by, now))
}

async fn reroute_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    orders: &Orders,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Outcome, PgError> {
    let Some((mut order, current)) = load(tx, p, id).await? else {
        return Ok(Outcome::NotFound);
    };
    if let Some(refused) = reroute::refused(&order) {
        return Ok(refused);
    }
    let used: Vec<String> = reroute::used(&order).into_iter().collect();
    let frozen = table::frozen(tx, p).await?;
    let heard = table::heard(tx, p, &used).await?;
    let off = reroute::off(orders, &order, &current, &frozen, &heard, now);
    if off.is_empty() {
        return Ok(reroute::unmoved(&order, &current));
    }
    let ask = Asked::new(orders, &order, &off, by, now);
    let routed = route_and_hold(
        tx,
        p,
        orders,
        &ask.channel,
        ask.allocation,
        &ask.prepared,
        order.holds_made,
        &ask.skip,
        now,
    )
    .await?;
    let (plan, new_holds, _, filtered, dropped) = match routed {
        Ok(r) => r,
        Err(body) => return Ok(reroute::nothing_moved(body)),
    };
    for h in order
        .holds
        .iter()
        .filter(|h| ask.skip.contains(&h.warehouse))
    {
        reserve::release(tx, p, &h.reservation, by, now).await?;
    }
    let refs = new_holds.into_iter().map(|(_, r)| r).collect();
    let event = ask.apply(&mut order, &plan, refs, &filtered, &dropped);
    table::update(tx, p, &order, now).await?;
    table::log(tx, p, id, "rerouted", &event, by, now).await?;
    let mut v = view::render(&order, &holds(tx, p, &order).await?);
    v["moved"] = event["off"].clone();
    Ok(Outcome::Done(v))
}

/// Open orders holding stock at a warehouse that is frozen or silent now.
async fn stranded(client: &Client, p: &Prepared, orders: &Orders) -> Result<Vec<String>, PgError> {
    let holding: Vec<String> = client
        .query(
            &p.get(
                client,
                "SELECT DISTINCT warehouse FROM reservations WHERE status = 'active'",
            )
            .await?,
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let frozen = table::frozen(client, p).await?;
    let heard: BTreeMap<String, i64> = table::heard(client, p, &holding).await?;
    let now = now_ms();
    let off: Vec<String> = holding
        .into_iter()
        .filter(|wh| {
            let last = heard.get(wh).copied();
            orders
                .unavailable(wh, &orders.site(wh), &frozen, last, now)
                .is_some()
        })
        .collect();
    if off.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            &p.get(
                client,
                "SELECT DISTINCT o.id FROM reservations r JOIN orders o ON o.id = r.order_ref
                 WHERE r.status = 'active' AND r.warehouse = ANY($1)
                   AND o.state IN ('reserved', 'backorder', 'queued') ORDER BY o.id",
            )
            .await?,
            &[&off],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Re-routes open orders off frozen or silent warehouses every `auto_reroute_secs` (when
/// set), until the worker stops; a failed pass is logged and tried again next time.
pub async fn auto_reroute(
    pool: Pool,
    orders: std::sync::Arc<Orders>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let secs = orders.config.auto_reroute_secs;
    if secs == 0 {
        // Off: still a supervised task, so it waits for the stop like the others.
        let _ = shutdown.changed().await;
        return Ok(());
    }
    let mut every = tokio::time::interval(std::time::Duration::from_secs(secs));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {}
        }
        let pass = async {
            let mut conn = pool.get().await?;
            let p = conn.prepared();
            let mut moved = Vec::new();
            for id in stranded(&conn, &p, &orders).await? {
                let o = reroute(&mut conn, &p, &orders, &id, "auto-reroute", now_ms()).await?;
                if let Outcome::Done(v) = o {
                    if v["moved"].as_array().is_some_and(|m| !m.is_empty()) {
                        moved.push(id);
                    }
                }
            }
            Ok::<_, PgError>(moved)
        };
        match pass.await {
            Ok(moved) if moved.is_empty() => {}
            Ok(moved) => {
                tracing::info!(orders = ?moved, "orders re-routed off frozen or silent warehouses")
            }
            Err(e) => tracing::warn!(error = %e, "order re-routing pass failed"),
        }
    }
}
