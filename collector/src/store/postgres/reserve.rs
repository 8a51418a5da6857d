//! Reservations on PostgreSQL, by the SQLite `reserve` module's rules: a hold is created only
//! if the warehouse has that much available, its open amount is its quantity less the
//! order's shipments there, and the warehouse-level row (bin "") shows what is held as
//! `reserved` instead of `available`.
//!
//! Several workers take reservations and apply batches at once, so every change of a
//! (SKU, warehouse)'s holds runs under the same transaction-scoped advisory lock the
//! projection takes for that pair (`project::lock`): the availability check and the hold are
//! one step no other transaction can interleave with, and a shipment applied by another
//! worker waits for it (or it for the shipment). Every change queues the SKU in the outbox.

use tokio_postgres::{GenericClient, Row, Transaction};

use super::project::lock;
use super::{PgError, Prepared};
use crate::reserve::{expiry, Created, Request, Reservation};

/// What the ledger shipped for reservation `r`'s order, SKU and warehouse.
const SHIPPED: &str = "(SELECT COALESCE(SUM(l.quantity), 0)::bigint FROM ledger l
        WHERE l.order_ref = r.order_ref AND l.sku = r.sku AND l.warehouse = r.warehouse
          AND l.kind = 'shipment' AND l.treatment IN ('apply', 'provisional'))";

fn columns() -> String {
    format!(
        "r.id, r.order_ref, r.sku, r.warehouse, r.quantity, r.channel, r.status, r.created_at_ms,
         r.expires_at_ms, r.closed_at_ms,
         CASE WHEN r.status = 'active' THEN GREATEST(0, r.quantity - {SHIPPED}) ELSE 0 END,
         r.created_by, r.closed_by"
    )
}

fn reservation(r: &Row) -> Reservation {
    Reservation {
        id: r.get(0),
        order: r.get(1),
        sku: r.get(2),
        warehouse: r.get(3),
        quantity: r.get(4),
        channel: r.get(5),
        status: r.get(6),
        created_at_ms: r.get(7),
        expires_at_ms: r.get(8),
        closed_at_ms: r.get(9),
        open: r.get(10),
        created_by: r.get(11),
        closed_by: r.get(12),
    }
}

/// One reservation by id.
pub async fn get(
    c: &impl GenericClient,
    p: &Prepared,
    id: &str,
) -> Result<Option<Reservation>, PgError> {
    let sql = format!("SELECT {} FROM reservations r WHERE r.id = $1", columns());
    let stmt = p.get(c, &sql).await?;
    Ok(c.query_opt(&stmt, &[&id]).await?.as_ref().map(reservation))
}

/// Reservations of a SKU (optionally at one warehouse), newest first.
pub async fn list(
    c: &impl GenericClient,
    p: &Prepared,
    sku: &str,
    warehouse: Option<&str>,
    limit: i64,
) -> Result<Vec<Reservation>, PgError> {
    let sql = format!(
        "SELECT {} FROM reservations r WHERE r.sku = $1 AND ($2::text IS NULL OR r.warehouse = $2)
         ORDER BY r.created_at_ms DESC, r.id LIMIT $3",
        columns()
    );
    let rows = c
        .query(&p.get(c, &sql).await?, &[&sku, &warehouse, &limit])
        .await?;
    Ok(rows.iter().map(reservation).collect())
}

/// Creates a reservation if the warehouse has the stock; `by` names who asked.
pub async fn create(
    tx: &Transaction<'_>,
    p: &Prepared,
    req: &Request,
    by: &str,
    now: i64,
) -> Result<Created, PgError> {
    lock(tx, p, &[(req.sku.clone(), req.warehouse.clone())]).await?;
    if let Some(existing) = get(tx, p, &req.id).await? {
        return Ok(if req.same_as(&existing) {
            Created::Replayed(existing)
        } else {
            Created::IdConflict(existing)
        });
    }
    let available: i64 = tx
        .query_one(
            &p.get(tx, "SELECT COALESCE(SUM(available), 0)::bigint FROM stock WHERE sku = $1 AND warehouse = $2").await?,
            &[&req.sku, &req.warehouse],
        )
        .await?
        .get(0);
    if available < req.quantity {
        return Ok(Created::Insufficient { available });
    }
    let expires = req.ttl_secs.map(|s| expiry(now, s));
    tx.execute(
        &p.get(tx, "INSERT INTO reservations (id, order_ref, sku, warehouse, quantity, channel, status, created_at_ms, expires_at_ms, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9)").await?,
        &[&req.id, &req.order, &req.sku, &req.warehouse, &req.quantity, &req.channel, &now, &expires, &by],
    )
    .await?;
    // Shipped before it was reserved: nothing left to hold.
    settle(tx, p, &req.sku, &req.warehouse, now).await?;
    Ok(Created::New(
        get(tx, p, &req.id).await?.expect("just inserted"),
    ))
}

/// Ends an active reservation by hand; `None` if there is no such reservation.
pub async fn release(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    by: &str,
    now: i64,
) -> Result<Option<Reservation>, PgError> {
    let Some(r) = get(tx, p, id).await? else {
        return Ok(None);
    };
    lock(tx, p, &[(r.sku.clone(), r.warehouse.clone())]).await?;
    let released = tx
        .execute(
            &p.get(
                tx,
                "UPDATE reservations SET status = 'released', closed_at_ms = $2, closed_by = $3
             WHERE id = $1 AND status = 'active'",
            )
            .await?,
            &[&id, &now, &by],
        )
        .await?;
    if released > 0 {
        refresh_hold(tx, p, &r.sku, &r.warehouse, now).await?;
    }
    get(tx, p, id).await
}

/// Lets every active reservation past its expiry lapse; returns how many did. Any worker
/// may run it at any time: the update is conditional and the keys are locked first.
pub async fn expire(tx: &Transaction<'_>, p: &Prepared, now: i64) -> Result<u64, PgError> {
    let keys: Vec<(String, String)> = tx
        .query(
            &p.get(
                tx,
                "SELECT DISTINCT sku, warehouse FROM reservations
             WHERE status = 'active' AND expires_at_ms <= $1",
            )
            .await?,
            &[&now],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    if keys.is_empty() {
        return Ok(0);
    }
    lock(tx, p, &keys).await?;
    let mut lapsed = 0;
    for (sku, warehouse) in &keys {
        lapsed += tx
            .execute(
                &p.get(
                    tx,
                    "UPDATE reservations SET status = 'expired', closed_at_ms = $3
                 WHERE sku = $1 AND warehouse = $2 AND status = 'active' AND expires_at_ms <= $3",
                )
                .await?,
                &[sku, warehouse, &now],
            )
            .await?;
        refresh_hold(tx, p, sku, warehouse, now).await?;
    }
    Ok(lapsed)
}

/// Shipments with an order reference just entered the ledger at these (SKU, warehouse)s,
/// whose locks the projection holds: the reservations of those orders hold less now.
pub async fn on_shipments(
    tx: &Transaction<'_>,
    p: &Prepared,
    keys: &[(String, String)],
    now: i64,
) -> Result<(), PgError> {
    for (sku, warehouse) in keys {
        let reserved = tx
            .query_opt(
                &p.get(
                    tx,
                    "SELECT 1 FROM reservations WHERE sku = $1 AND warehouse = $2 LIMIT 1",
                )
                .await?,
                &[sku, warehouse],
            )
            .await?
            .is_some();
        if reserved {
            settle(tx, p, sku, warehouse, now).await?;
        }
    }
    Ok(())
}

/// What (SKU, warehouse) holds now, as applied to its warehouse-level row.
pub async fn held(
    c: &impl GenericClient,
    p: &Prepared,
    sku: &str,
    warehouse: &str,
) -> Result<i64, PgError> {
    Ok(c.query_opt(
        &p.get(
            c,
            "SELECT held FROM reservation_holds WHERE sku = $1 AND warehouse = $2",
        )
        .await?,
        &[&sku, &warehouse],
    )
    .await?
    .map_or(0, |r| r.get(0)))
}

/// Closes the reservations of (sku, warehouse) their orders' shipments cover, reopens one
/// whose shipments no longer do, and moves the held amount to match.
pub(super) async fn settle(
    tx: &Transaction<'_>,
    p: &Prepared,
    sku: &str,
    warehouse: &str,
    now: i64,
) -> Result<(), PgError> {
    tx.execute(
        &p.get(tx, &format!(
            "UPDATE reservations r SET status = 'fulfilled', closed_at_ms = $3
             WHERE r.sku = $1 AND r.warehouse = $2 AND r.status = 'active' AND r.quantity <= {SHIPPED}"
        )).await?,
        &[&sku, &warehouse, &now],
    )
    .await?;
    tx.execute(
        &p.get(tx, &format!(
            "UPDATE reservations r SET status = 'active', closed_at_ms = NULL
             WHERE r.sku = $1 AND r.warehouse = $2 AND r.status = 'fulfilled' AND r.quantity > {SHIPPED}"
        )).await?,
        &[&sku, &warehouse],
    )
    .await?;
    refresh_hold(tx, p, sku, warehouse, now).await
}

/// Recomputes what (sku, warehouse) holds and moves the difference from `available` to
/// `reserved` on the warehouse-level row.
pub(super) async fn refresh_hold(
    tx: &Transaction<'_>,
    p: &Prepared,
    sku: &str,
    warehouse: &str,
    now: i64,
) -> Result<(), PgError> {
    let should: i64 = tx
        .query_one(
            &p.get(
                tx,
                &format!(
                    "SELECT COALESCE(SUM(GREATEST(0, r.quantity - {SHIPPED})), 0)::bigint
                 FROM reservations r WHERE r.sku = $1 AND r.warehouse = $2 AND r.status = 'active'"
                ),
            )
            .await?,
            &[&sku, &warehouse],
        )
        .await?
        .get(0);
    let diff = should - held(tx, p, sku, warehouse).await?;
    if diff == 0 {
        return Ok(());
    }
    tx.execute(
        &p.get(
            tx,
            "INSERT INTO reservation_holds (sku, warehouse, held) VALUES ($1, $2, $3)
         ON CONFLICT (sku, warehouse) DO UPDATE SET held = reservation_holds.held + excluded.held",
        )
        .await?,
        &[&sku, &warehouse, &diff],
    )
    .await?;
    tx.execute(
        &p.get(
            tx,
            "INSERT INTO stock (sku, warehouse, bin, available, reserved, updated_at_ms)
         VALUES ($1, $2, '', $3, $4, $5)
         ON CONFLICT (sku, warehouse, bin) DO UPDATE SET
            available = stock.available + excluded.available,
            reserved = stock.reserved + excluded.reserved,
            updated_at_ms = excluded.updated_at_ms",
        )
        .await?,
        &[&sku, &warehouse, &-diff, &diff, &now],
    )
    .await?;
    tx.execute(
        &p.get(
            tx,
            "INSERT INTO outbox (sku, created_at_ms) VALUES ($1, $2)",
        )
        .await?,
        &[&sku, &now],
    )
    .await?;
    Ok(())
}

/// Lets lapsed reservations expire, once a second, until shutdown. Every worker runs it; a
/// failed round is logged and tried again (the holds stay until it succeeds, never less).
pub async fn expire_every_second(
    pool: super::Pool,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {}
        }
        let round = async {
            let mut conn = pool.get().await?;
            let conn_prepared = conn.prepared();
            let tx = conn.transaction().await?;
            let lapsed = expire(&tx, &conn_prepared, super::now_ms()).await?;
            tx.commit().await?;
            Ok::<_, PgError>(lapsed)
        };
        match round.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(lapsed = n, "reservations expired"),
            Err(e) => tracing::warn!(error = %e, "reservation expiry round failed"),
        }
    }
}
