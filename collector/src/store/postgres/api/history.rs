//! `GET /v1/stock/<sku>/history?location=` from any worker: the SQLite collector's answer
//! (`crate::api::history`), explained by the same code from what this database holds.
//! A voided movement shows its void beside it, as on SQLite.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio_postgres::Client;

use super::audit::{count_record, COUNT_COLUMNS};
use super::PgApp;
use crate::api::history::{explain, Facts, HistoryQuery, Hold};
use crate::api::{AppError, Params, Path};
use crate::authority::Treatment;
use crate::merge::States;
use crate::projection::Entry;
use crate::records::CountRecord;
use crate::stock::StockKey;
use crate::store::postgres::{reserve, PgError, Prepared};

/// `GET /v1/stock/<sku>/history?location=ams[/bin]`.
pub async fn history(
    State(app): State<Arc<PgApp>>,
    Path(sku): Path<String>,
    Params(q): Params<HistoryQuery>,
) -> Result<Response, AppError> {
    let (key, location) = q.key(&sku)?;
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let p = conn.prepared();
    // One snapshot: the movements, the rows and the records agree with each other.
    let tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(PgError::from)?;
    let facts = facts(tx.client(), &p, &key).await?;
    tx.commit().await.map_err(PgError::from)?;
    Ok(Json(explain(&key, &location, facts)).into_response())
}

/// What the database knows about `key`'s history.
async fn facts(c: &Client, p: &Prepared, key: &StockKey) -> Result<Facts, PgError> {
    let whole = key.bin.is_empty();
    let entries = if whole {
        entries(
            c,
            "sku = $1 AND (warehouse = $2 OR (kind = 'transfer_out' AND peer = $2)) AND $3 = ''",
            key,
        )
        .await?
    } else {
        entries(c, "sku = $1 AND warehouse = $2 AND bin = $3", key).await?
    };
    let row = c
        .query_one(
            "SELECT COALESCE(SUM(available), 0)::bigint, COALESCE(SUM(reserved), 0)::bigint,
                    COALESCE(SUM(damaged), 0)::bigint, COALESCE(SUM(quality_control), 0)::bigint,
                    COALESCE(SUM(in_transit), 0)::bigint, COALESCE(SUM(incoming), 0)::bigint
             FROM stock WHERE sku = $1 AND warehouse = $2 AND (bin = $3 OR $3 = '')",
            &[&key.sku, &key.warehouse, &key.bin],
        )
        .await?;
    let current = States {
        available: row.get(0),
        reserved: row.get(1),
        damaged: row.get(2),
        quality_control: row.get(3),
        in_transit: row.get(4),
        incoming: row.get(5),
    };
    let holds = if whole {
        holds(c, p, key).await?
    } else {
        Vec::new()
    };
    let mut voids = HashMap::new();
    for e in entries.iter().filter(|e| e.treatment == Treatment::Voided) {
        let v = crate::store::postgres::voids::get(c, p, &e.agent_id, e.movement.seq).await?;
        voids.insert((e.agent_id.clone(), e.movement.seq), serde_json::json!(v));
    }
    Ok(Facts {
        entries,
        current,
        counts: counts(c, key).await?,
        voids,
        holds,
    })
}

/// The ledger entries `condition` selects (on `$1` sku, `$2` warehouse, `$3` bin).
async fn entries(c: &Client, condition: &str, key: &StockKey) -> Result<Vec<Entry>, PgError> {
    let rows = c
        .query(
            &format!(
                "SELECT agent_id, treatment, returns_to, payload FROM ledger WHERE {condition}"
            ),
            &[&key.sku, &key.warehouse, &key.bin],
        )
        .await?;
    rows.iter()
        .map(crate::store::postgres::project::entry)
        .collect()
}

/// The drift and conflict records of the SKU's counts at the warehouse.
async fn counts(
    c: &Client,
    key: &StockKey,
) -> Result<HashMap<(String, u64), (&'static str, CountRecord)>, PgError> {
    let mut out = HashMap::new();
    for table in ["drift", "conflicts"] {
        let rows = c
            .query(
                &format!("SELECT {COUNT_COLUMNS} FROM {table} WHERE sku = $1 AND warehouse = $2"),
                &[&key.sku, &key.warehouse],
            )
            .await?;
        for r in &rows {
            let record = count_record(r);
            out.insert((record.agent_id.clone(), record.seq), (table, record));
        }
    }
    Ok(out)
}

/// The reservations of the SKU at the warehouse, each with its order's shipments there.
async fn holds(c: &Client, p: &Prepared, key: &StockKey) -> Result<Vec<Hold>, PgError> {
    let mut out = Vec::new();
    for r in reserve::list(c, p, &key.sku, Some(&key.warehouse), i64::MAX).await? {
        let rows = c
            .query(
                "SELECT occurred_at_ms, quantity FROM ledger
                 WHERE order_ref = $1 AND sku = $2 AND warehouse = $3 AND kind = 'shipment'
                   AND treatment IN ('apply', 'provisional')
                 ORDER BY occurred_at_ms, agent_id COLLATE \"C\", seq",
                &[&r.order, &key.sku, &key.warehouse],
            )
            .await?;
        let ships = rows.iter().map(|s| (s.get(0), s.get(1))).collect();
        out.push((r, ships));
    }
    Ok(out)
}
