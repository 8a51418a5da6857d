//! Orders on PostgreSQL: `POST /v1/orders` and what follows it, served by any worker, with
//! the SQLite collector's routing, checks and JSON (`crate::orders` decides; this module
//! only reads and writes).
//!
//! An order is one transaction. It first takes a lock on its id (and `Idempotency-Key`), so
//! the same order sent to two workers at once is placed once and answered twice; then the
//! same transaction-scoped advisory locks the ingest path and reservations take, on every
//! (SKU, warehouse) the order may touch, in ascending lock-id order, and only then reads
//! availability (`facts`). Nothing can move those numbers until COMMIT: routing sees what
//! the holds take, and a warehouse that still cannot give what it was asked is dropped and
//! the order re-ranked inside the transaction. A deadlock or serialization failure runs the
//! whole transaction again, a few times at most, like a batch.
//!
//! Holds are rows of `reservations` with the order as their `order_ref`, so a shipment that
//! carries the order reference consumes them in the ingest path (`reserve::on_shipments`)
//! and they lapse at their TTL in the expiry task every worker runs (`reserve::expire`: a
//! conditional update under the same locks, so each lapses once).

mod lifecycle;
mod place;
mod reroute;
mod table;

pub use lifecycle::{cancel, keep, list, show};
pub use place::place;
pub use reroute::{auto_reroute, reroute};
pub use table::{set_frozen, stocked};

use tokio_postgres::Transaction;

use super::{PgError, Prepared};

/// Attempts of one order transaction before its caller hears the error.
const MAX_ATTEMPTS: u32 = 5;

/// Runs `$body` (an async block using the transaction `$tx`) and commits, again on deadlock
/// or serialization failure; evaluates to its result.
macro_rules! retried {
    ($client:expr, |$tx:ident| $body:expr) => {{
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let $tx = $client.transaction().await?;
            let result = match $body.await {
                Ok(v) => $tx.commit().await.map(|()| v).map_err(PgError::from),
                Err(e) => Err(e),
            };
            match result {
                Err(e) if e.is_retryable() && attempt < $crate::store::postgres::orders::MAX_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "order transaction retried");
                    tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
                }
                other => break other,
            }
        }
    }};
}
use retried;

/// Locks an order's id and idempotency key for the transaction, in one order, in a key
/// space apart from the (SKU, warehouse) locks.
async fn lock_order(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    key: Option<&str>,
) -> Result<(), PgError> {
    let mut names = vec![format!("id:{id}")];
    names.extend(key.map(|k| format!("key:{k}")));
    tx.execute(
        &p.get(
            tx,
            "SELECT pg_advisory_xact_lock(1330795077, k)
             FROM (SELECT DISTINCT hashtext(n) AS k FROM unnest($1::text[]) AS t(n)) AS h ORDER BY k",
        )
        .await?,
        &[&names],
    )
    .await?;
    Ok(())
}
