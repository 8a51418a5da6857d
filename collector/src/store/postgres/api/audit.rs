//! `GET /v1/drift`, `/v1/conflicts`, `/v1/discrepancies`, `/v1/reversals` and
//! `/v1/shortfalls` from any worker: the records ingest writes (`store::postgres::records`),
//! listed with the SQLite collector's query (`crate::api::audit::ListQuery`), order and JSON
//! (`crate::records` types). Text ties sort in byte order, as on SQLite.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use super::PgApp;
use crate::api::audit::ListQuery;
use crate::api::{AppError, Params};
use crate::records::{CountRecord, Discrepancy, Reversal, ShortfallRecord};
use crate::store::postgres::PgError;

/// The columns of a drift or conflict record, in [`count_record`]'s order.
pub(super) const COUNT_COLUMNS: &str = "agent_id, seq, sku, warehouse, bin, source, counted_at, counted_at_ms, expected, counted, difference, recorded_at_ms, revised_at_ms";

/// `warehouse` = $1 and `sku` = $2, either unset = any.
const FILTER: &str = "($1::text IS NULL OR warehouse = $1) AND ($2::text IS NULL OR sku = $2)";

pub(super) fn count_record(r: &Row) -> CountRecord {
    let bin: String = r.get(4);
    CountRecord {
        agent_id: r.get(0),
        seq: r.get::<_, i64>(1) as u64,
        sku: r.get(2),
        warehouse: r.get(3),
        bin: (!bin.is_empty()).then_some(bin),
        source: r.get(5),
        counted_at: r.get(6),
        counted_at_ms: r.get(7),
        expected: r.get(8),
        counted: r.get(9),
        difference: r.get(10),
        recorded_at_ms: r.get(11),
        revised_at_ms: r.get(12),
    }
}

async fn rows(app: &PgApp, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError> {
    let conn = app.pool.get().await?;
    Ok(conn.query(sql, params).await?)
}

/// Open drift records, newest count first.
pub async fn drift(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&["warehouse", "sku"])?;
    let f = q.filter();
    let sql = format!(
        "SELECT {COUNT_COLUMNS} FROM drift WHERE {FILTER}
         ORDER BY counted_at_ms DESC, agent_id COLLATE \"C\", seq LIMIT $3"
    );
    let found = rows(&app, &sql, &[&f.warehouse, &f.sku, &q.limit()]).await?;
    Ok(Json(found.iter().map(count_record).collect::<Vec<_>>()).into_response())
}

/// Counts from sources that are not the authority; by default only those that disagreed.
pub async fn conflicts(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&["all", "warehouse", "sku"])?;
    let f = q.filter();
    let sql = format!(
        "SELECT {COUNT_COLUMNS} FROM conflicts WHERE {FILTER} AND (NOT $3 OR difference != 0)
         ORDER BY counted_at_ms DESC, agent_id COLLATE \"C\", seq LIMIT $4"
    );
    let params: [&(dyn ToSql + Sync); 4] = [&f.warehouse, &f.sku, &q.open_only(), &q.limit()];
    let found = rows(&app, &sql, &params).await?;
    Ok(Json(found.iter().map(count_record).collect::<Vec<_>>()).into_response())
}

/// Transfers whose received quantity differs from the shipped one.
pub async fn discrepancies(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&[])?;
    let sql = "SELECT transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms
         FROM discrepancies ORDER BY updated_at_ms DESC, transfer COLLATE \"C\", sku COLLATE \"C\" LIMIT $1";
    let found = rows(&app, sql, &[&q.limit()]).await?;
    let list: Vec<Discrepancy> = found
        .iter()
        .map(|r| Discrepancy {
            transfer: r.get(0),
            sku: r.get(1),
            from_warehouse: r.get(2),
            to_warehouse: r.get(3),
            shipped: r.get(4),
            received: r.get(5),
            difference: r.get(6),
            recorded_at_ms: r.get(7),
            updated_at_ms: r.get(8),
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Orders whose cancellations and returns exceed what they shipped.
pub async fn reversals(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&[])?;
    let sql = "SELECT order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms
         FROM reversals ORDER BY updated_at_ms DESC, order_ref COLLATE \"C\", sku COLLATE \"C\" LIMIT $1";
    let found = rows(&app, sql, &[&q.limit()]).await?;
    let list: Vec<Reversal> = found
        .iter()
        .map(|r| Reversal {
            order: r.get(0),
            sku: r.get(1),
            shipped: r.get(2),
            reversed: r.get(3),
            excess: r.get(4),
            recorded_at_ms: r.get(5),
            updated_at_ms: r.get(6),
        })
        .collect();
    Ok(Json(list).into_response())
}

/// Inspections and write-offs that asked for more than quality control or damaged held.
pub async fn shortfalls(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&["warehouse", "sku"])?;
    let f = q.filter();
    let sql = format!(
        "SELECT agent_id, seq, sku, warehouse, bin, kind, state, occurred_at, requested, held, excess, recorded_at_ms, revised_at_ms
         FROM shortfalls WHERE {FILTER} ORDER BY occurred_at_ms DESC, agent_id COLLATE \"C\", seq LIMIT $3"
    );
    let found = rows(&app, &sql, &[&f.warehouse, &f.sku, &q.limit()]).await?;
    let list: Vec<ShortfallRecord> = found
        .iter()
        .map(|r| {
            let bin: String = r.get(4);
            ShortfallRecord {
                agent_id: r.get(0),
                seq: r.get::<_, i64>(1) as u64,
                sku: r.get(2),
                warehouse: r.get(3),
                bin: (!bin.is_empty()).then_some(bin),
                kind: r.get(5),
                state: r.get(6),
                occurred_at: r.get(7),
                requested: r.get(8),
                held: r.get(9),
                excess: r.get(10),
                recorded_at_ms: r.get(11),
                revised_at_ms: r.get(12),
            }
        })
        .collect();
    Ok(Json(list).into_response())
}
