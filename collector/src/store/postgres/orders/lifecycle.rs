//! Reading orders and what follows placing one, on PostgreSQL: `GET`, cancel, paid. Each
//! command locks the order, then the (SKU, warehouse)s of its holds, before it reads what
//! they still hold, so a shipment, an expiry or another worker's command on the same holds
//! waits for it (or it for them); the decision itself is `crate::orders`'.

use serde_json::{json, Value};
use tokio_postgres::{Client, GenericClient, Transaction};

use super::{lock_order, table};
use crate::orders::store::Order;
use crate::orders::{self, view, CancelRequest, Outcome};
use crate::reserve::Reservation;
use crate::store::postgres::project::lock;
use crate::store::postgres::{reserve, PgError, Prepared};

/// The current reservations of an order's holds.
pub(super) async fn holds(
    c: &impl GenericClient,
    p: &Prepared,
    order: &Order,
) -> Result<Vec<Reservation>, PgError> {
    let mut out = Vec::with_capacity(order.holds.len());
    for h in &order.holds {
        out.extend(reserve::get(c, p, &h.reservation).await?);
    }
    Ok(out)
}

/// `GET /v1/orders/<id>`: the order with its history.
pub async fn show(
    c: &impl GenericClient,
    p: &Prepared,
    id: &str,
) -> Result<Option<Value>, PgError> {
    let Some((order, answer)) = table::find(c, p, id, None).await? else {
        return Ok(None);
    };
    let v = view::render(&order, &holds(c, p, &order).await?);
    let history = table::history(c, p, id).await?;
    Ok(Some(view::with_history(v, history, &answer)))
}

/// `GET /v1/orders?state=&channel=`: newest first; derived states are filtered after reading.
pub async fn list(
    c: &impl GenericClient,
    p: &Prepared,
    state: Option<&str>,
    channel: Option<&str>,
    limit: i64,
) -> Result<Vec<Value>, PgError> {
    let stored = view::stored_states(state);
    let read = if state.is_some() {
        limit.saturating_mul(10)
    } else {
        limit
    };
    let mut out = Vec::new();
    for order in table::list(c, p, &stored, channel, read).await? {
        let v = view::render(&order, &holds(c, p, &order).await?);
        if state.is_none_or(|s| v["state"] == s) {
            out.push(v);
        }
        if out.len() as i64 >= limit {
            break;
        }
    }
    Ok(out)
}

/// Locks the order and its holds' (SKU, warehouse)s; then reads it and its holds.
pub(super) async fn load(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
) -> Result<Option<(Order, Vec<Reservation>)>, PgError> {
    lock_order(tx, p, id, None).await?;
    let Some((order, _)) = table::find(tx, p, id, None).await? else {
        return Ok(None);
    };
    let keys: Vec<(String, String)> = order
        .holds
        .iter()
        .map(|h| (h.sku.clone(), h.warehouse.clone()))
        .collect();
    lock(tx, p, &keys).await?;
    let holds = holds(tx, p, &order).await?;
    Ok(Some((order, holds)))
}

/// `POST /v1/orders/<id>/cancel`: the whole order or lines and quantities; releases exactly
/// what is still held for them.
pub async fn cancel(
    client: &mut Client,
    p: &Prepared,
    id: &str,
    req: &CancelRequest,
    by: &str,
    now: i64,
) -> Result<Outcome, PgError> {
    super::retried!(client, |tx| cancel_in(&tx, p, id, req, by, now))
}

async fn cancel_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    req: &CancelRequest,
    by: &str,
    now: i64,
) -> Result<Outcome, PgError> {
    let Some((mut order, before)) = load(tx, p, id).await? else {
        return Ok(Outcome::NotFound);
    };
    if order.state == "cancelled" {
        return Ok(Outcome::Done(view::render(&order, &before)));
    }
    let steps = match orders::plan_cancel(&mut order, &before, req) {
        Ok(steps) => steps,
        Err(e) => return Ok(Outcome::Invalid(e)),
    };
    for s in &steps {
        if s.rest {
            reserve::release(tx, p, &s.reservation, by, now).await?;
        } else {
            reduce(tx, p, &s.reservation, s.units, by, now).await?;
        }
    }
    table::update(tx, p, &order, now).await?;
    let (event, released) = orders::lifecycle::cancelled(req, &steps);
    table::log(tx, p, id, "cancelled", &event, by, now).await?;
    let mut v = view::render(&order, &holds(tx, p, &order).await?);
    v["released"] = released;
    Ok(Outcome::Done(v))
}

/// Lowers an active reservation's quantity by `units` (part of its order was cancelled);
/// at 0 it is released. Its (SKU, warehouse) is locked already.
async fn reduce(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    units: i64,
    by: &str,
    now: i64,
) -> Result<(), PgError> {
    let row = tx
        .query_opt(
            &p.get(
                tx,
                "UPDATE reservations SET quantity = GREATEST(quantity - $2, 0),
                    status = CASE WHEN quantity - $2 <= 0 THEN 'released' ELSE status END,
                    closed_at_ms = CASE WHEN quantity - $2 <= 0 THEN $3 ELSE closed_at_ms END,
                    closed_by = $4
                 WHERE id = $1 AND status = 'active' RETURNING sku, warehouse",
            )
            .await?,
            &[&id, &units, &now, &by],
        )
        .await?;
    if let Some(r) = row {
        reserve::refresh_hold(tx, p, r.get(0), r.get(1), now).await?;
    }
    Ok(())
}

/// `POST /v1/orders/<id>/paid`: the holds stay until shipped, whatever the TTL said; an
/// order whose holds already lapsed is a 409.
pub async fn keep(
    client: &mut Client,
    p: &Prepared,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Outcome, PgError> {
    super::retried!(client, |tx| keep_in(&tx, p, id, by, now))
}

async fn keep_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Outcome, PgError> {
    let Some((mut order, current)) = load(tx, p, id).await? else {
        return Ok(Outcome::NotFound);
    };
    if current.iter().any(|r| r.status == "expired") {
        return Ok(Outcome::Conflict(
            json!({"error": "order expired", "field": "id", "detail": "the order's holds lapsed before it was paid; place it again"}),
        ));
    }
    let ids: Vec<&str> = order.holds.iter().map(|h| h.reservation.as_str()).collect();
    tx.execute(
        &p.get(
            tx,
            "UPDATE reservations SET expires_at_ms = NULL WHERE id = ANY($1) AND status = 'active'",
        )
        .await?,
        &[&ids],
    )
    .await?;
    order.expires_at_ms = None;
    table::update(tx, p, &order, now).await?;
    table::log(tx, p, id, "paid", &json!({}), by, now).await?;
    Ok(Outcome::Done(view::render(
        &order,
        &holds(tx, p, &order).await?,
    )))
}
