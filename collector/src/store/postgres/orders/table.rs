//! The order tables on PostgreSQL (migration step 3), as the SQLite `orders::store` keeps
//! them: one row per order (its record and first answer as JSON text), an append-only
//! history, the run-time freeze switch and the per-day count behind daily capacity; and the
//! reads routing needs (`Facts`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::GenericClient;

use crate::orders::store::Order;
use crate::store::postgres::{PgError, Prepared};

fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, PgError> {
    serde_json::from_str(text).map_err(|e| PgError::Corrupt(format!("order JSON: {e}")))
}

fn encode<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("order JSON")
}

/// An order by id or by the idempotency key it was first sent with, with its first answer.
pub async fn find(
    c: &impl GenericClient,
    p: &Prepared,
    id: &str,
    key: Option<&str>,
) -> Result<Option<(Order, Value)>, PgError> {
    let mut row = c
        .query_opt(
            &p.get(c, "SELECT record, answer FROM orders WHERE id = $1")
                .await?,
            &[&id],
        )
        .await?;
    if let (None, Some(key)) = (&row, key) {
        row = c
            .query_opt(
                &p.get(
                    c,
                    "SELECT record, answer FROM orders WHERE idempotency_key = $1",
                )
                .await?,
                &[&key],
            )
            .await?;
    }
    row.map(|r| Ok((decode(r.get(0))?, decode(r.get(1))?)))
        .transpose()
}

/// Stores a new order with its first answer.
pub async fn insert(
    c: &impl GenericClient,
    p: &Prepared,
    order: &Order,
    key: Option<&str>,
    answer: &Value,
    now: i64,
) -> Result<(), PgError> {
    c.execute(
        &p.get(c, "INSERT INTO orders (id, idempotency_key, channel, state, record, answer, created_at_ms, updated_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)").await?,
        &[&order.id, &key, &order.channel, &order.state, &encode(order), &encode(answer), &now],
    )
    .await?;
    Ok(())
}

/// Saves an order's new state.
pub async fn update(
    c: &impl GenericClient,
    p: &Prepared,
    order: &Order,
    now: i64,
) -> Result<(), PgError> {
    c.execute(
        &p.get(
            c,
            "UPDATE orders SET state = $2, record = $3, updated_at_ms = $4 WHERE id = $1",
        )
        .await?,
        &[&order.id, &order.state, &encode(order), &now],
    )
    .await?;
    Ok(())
}

/// Appends to an order's history; `by` goes into the detail, as on SQLite.
pub async fn log(
    c: &impl GenericClient,
    p: &Prepared,
    order: &str,
    event: &str,
    detail: &Value,
    by: &str,
    now: i64,
) -> Result<(), PgError> {
    let mut detail = detail.clone();
    if let Value::Object(fields) = &mut detail {
        fields.insert("by".into(), Value::String(by.into()));
    }
    c.execute(
        &p.get(
            c,
            "INSERT INTO order_history (order_id, at_ms, event, detail) VALUES ($1, $2, $3, $4)",
        )
        .await?,
        &[&order, &now, &event, &encode(&detail)],
    )
    .await?;
    Ok(())
}

/// An order's history, oldest first.
pub async fn history(
    c: &impl GenericClient,
    p: &Prepared,
    order: &str,
) -> Result<Vec<Value>, PgError> {
    let rows = c
        .query(
            &p.get(
                c,
                "SELECT at_ms, event, detail FROM order_history WHERE order_id = $1 ORDER BY seq",
            )
            .await?,
            &[&order],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "at_ms": r.get::<_, i64>(0),
                "event": r.get::<_, String>(1),
                "detail": serde_json::from_str::<Value>(r.get(2)).unwrap_or(Value::Null),
            })
        })
        .collect())
}

/// Orders (optionally of some stored states and one channel), newest first.
pub async fn list(
    c: &impl GenericClient,
    p: &Prepared,
    states: &[&str],
    channel: Option<&str>,
    limit: i64,
) -> Result<Vec<Order>, PgError> {
    let states: Option<Vec<&str>> = (!states.is_empty()).then(|| states.to_vec());
    let rows = c
        .query(
            &p.get(
                c,
                "SELECT record FROM orders WHERE ($1::text IS NULL OR channel = $1)
                 AND ($2::text[] IS NULL OR state = ANY($2))
                 ORDER BY created_at_ms DESC, id LIMIT $3",
            )
            .await?,
            &[&channel, &states, &limit],
        )
        .await?;
    rows.iter().map(|r| decode(r.get(0))).collect()
}

/// Counts one more order routed to `warehouse` on its local `day`.
pub async fn count_routed(
    c: &impl GenericClient,
    p: &Prepared,
    warehouse: &str,
    day: &str,
) -> Result<(), PgError> {
    c.execute(
        &p.get(
            c,
            "INSERT INTO routing_daily (warehouse, day, orders) VALUES ($1, $2, 1)
             ON CONFLICT (warehouse, day) DO UPDATE SET orders = routing_daily.orders + 1",
        )
        .await?,
        &[&warehouse, &day],
    )
    .await?;
    Ok(())
}

/// Freezes (`Some(reason)`) or unfreezes a warehouse for routing.
pub async fn set_frozen(
    c: &impl GenericClient,
    warehouse: &str,
    reason: Option<&str>,
    now: i64,
) -> Result<(), PgError> {
    match reason {
        Some(why) => c.execute(
            "INSERT INTO routing_frozen (warehouse, reason, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT (warehouse) DO UPDATE SET reason = excluded.reason, at_ms = excluded.at_ms",
            &[&warehouse, &why, &now],
        )
        .await?,
        None => c
            .execute("DELETE FROM routing_frozen WHERE warehouse = $1", &[&warehouse])
            .await?,
    };
    Ok(())
}

/// Units available per warehouse of each of `skus` (every row summed: holds are already
/// off the warehouse-level row).
pub async fn available(
    c: &impl GenericClient,
    p: &Prepared,
    skus: &[&str],
) -> Result<BTreeMap<String, BTreeMap<String, i64>>, PgError> {
    let rows = c
        .query(
            &p.get(
                c,
                "SELECT sku, warehouse, COALESCE(SUM(available), 0)::bigint FROM stock
                 WHERE sku = ANY($1) GROUP BY sku, warehouse",
            )
            .await?,
            &[&skus],
        )
        .await?;
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for r in &rows {
        out.entry(r.get(0)).or_default().insert(r.get(1), r.get(2));
    }
    Ok(out)
}

/// Warehouses frozen at run time, with why.
pub async fn frozen(
    c: &impl GenericClient,
    p: &Prepared,
) -> Result<BTreeMap<String, String>, PgError> {
    let rows = c
        .query(
            &p.get(c, "SELECT warehouse, reason FROM routing_frozen")
                .await?,
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// When any agent of each of `warehouses` last reported.
pub async fn heard(
    c: &impl GenericClient,
    p: &Prepared,
    warehouses: &[String],
) -> Result<BTreeMap<String, i64>, PgError> {
    let rows = c
        .query(
            &p.get(
                c,
                "SELECT warehouse, MAX(last_seen_ms) FROM agents WHERE warehouse = ANY($1) GROUP BY warehouse",
            )
            .await?,
            &[&warehouses],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Orders routed to `warehouse` on its local `day`.
pub async fn routed_on(
    c: &impl GenericClient,
    p: &Prepared,
    warehouse: &str,
    day: &str,
) -> Result<u64, PgError> {
    let n: Option<i64> = c
        .query_opt(
            &p.get(
                c,
                "SELECT orders FROM routing_daily WHERE warehouse = $1 AND day = $2",
            )
            .await?,
            &[&warehouse, &day],
        )
        .await?
        .map(|r| r.get(0));
    Ok(n.unwrap_or(0).max(0) as u64)
}

/// Which of `skus` have a row anywhere (were ever stocked; for an open catalog).
pub async fn stocked(
    c: &impl GenericClient,
    skus: &[&str],
) -> Result<std::collections::BTreeSet<String>, PgError> {
    let rows = c
        .query(
            "SELECT DISTINCT sku FROM stock WHERE sku = ANY($1)",
            &[&skus],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
