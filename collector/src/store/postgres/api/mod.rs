//! The HTTP API of a PostgreSQL worker: the stock reads and histories, bundle views,
//! voids, the daily report, alerts, the operator dashboard, reservations, agents, rejects
//! and their retry, the exception queue, the audit lists, readiness and
//! metrics, served by
//! any worker from the shared database in the same JSON as the SQLite collector's, and
//! `/healthz`. Everything
//! else the SQLite collector serves is not ported yet (docs/SCALING.md) and answers
//! `501 {"error": "not_supported_on_backend", ...}`: a client learns that at once, and never
//! gets an answer computed from data this backend does not keep.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use stocksync_common::catalog::Catalog;
use stocksync_runtime::server::error::{Params, Path, Refusal};
use stocksync_runtime::supervisor::TaskHealth;

use super::Pool;

mod alerts;
mod audit;
mod bundles;
mod channels;
mod exceptions;
mod history;
mod operations;
mod orders;
mod reports;
mod reservations;
mod voids;
use crate::api::dashboard;
use crate::api::stock::warehouses;
use crate::api::AppError;
use crate::merge::States;
use crate::metrics::Metrics;
use crate::stock::Levels;

/// What the worker's handlers share.
pub struct PgApp {
    pub pool: Pool,
    pub catalog: Arc<Catalog>,
    pub metrics: Arc<Metrics>,
    pub tasks: Arc<TaskHealth>,
    pub worker_id: String,
    /// The warehouses this worker holds a lease on.
    pub owned: tokio::sync::watch::Receiver<super::leases::Owned>,
    /// Routing configuration and the catalog for `/v1/orders`.
    pub orders: Arc<crate::orders::Orders>,
    /// The configured channels and the channel tables.
    pub channels: Arc<super::channels::PgChannels>,
    /// The store's ingest path, for what the API applies to the ledger (retries).
    pub store: super::PgStore,
    /// Thresholds of the daily report and the alerts.
    pub operations: crate::alerts::OperationsConfig,
    /// Sends agents the retries of their rejects (`agent_rejects`).
    pub commands: crate::agent_rejects::Commands,
    /// Ends long-lived answers (SSE streams) when the worker stops.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

/// The worker's routes.
pub fn router(app: Arc<PgApp>) -> Router {
    Router::new()
        .route("/v1/stock", get(by_location))
        .route("/v1/stock/{sku}", get(by_sku))
        .route("/v1/stock/{sku}/history", get(history::history))
        .route("/v1/drift", get(audit::drift))
        .route("/v1/conflicts", get(audit::conflicts))
        .route("/v1/discrepancies", get(audit::discrepancies))
        .route("/v1/reversals", get(audit::reversals))
        .route("/v1/shortfalls", get(audit::shortfalls))
        .route("/v1/bundles/{sku}", get(bundles::by_bundle))
        .route(
            "/v1/reservations",
            axum::routing::post(reservations::create).get(reservations::list),
        )
        .route(
            "/v1/reservations/{id}",
            get(reservations::get).delete(reservations::release),
        )
        .route(
            "/v1/orders",
            axum::routing::post(orders::place).get(orders::list),
        )
        .route("/v1/orders/{id}", get(orders::get))
        .route(
            "/v1/orders/{id}/cancel",
            axum::routing::post(orders::cancel),
        )
        .route("/v1/orders/{id}/paid", axum::routing::post(orders::paid))
        .route(
            "/v1/orders/{id}/reroute",
            axum::routing::post(orders::reroute),
        )
        .route(
            "/v1/routing/warehouses/{warehouse}",
            axum::routing::put(orders::set_frozen),
        )
        .route("/v1/movements/void", axum::routing::post(voids::create))
        .route("/v1/agents", get(operations::agents))
        .route("/v1/rejects", get(operations::rejects))
        .route(
            "/v1/rejects/{id}/retry",
            axum::routing::post(exceptions::retry_reject),
        )
        .route(
            "/v1/exceptions",
            get(exceptions::list).fallback(not_supported),
        )
        .route(
            "/v1/exceptions/{id}",
            get(exceptions::one).post(exceptions::bulk),
        )
        .route(
            "/v1/exceptions/{id}/{action}",
            axum::routing::post(exceptions::act),
        )
        .route("/v1/reports/daily", get(reports::daily))
        .route("/v1/alerts", get(alerts::list))
        .route("/readyz", get(operations::readyz))
        .route("/metrics", get(operations::metrics))
        .route("/healthz", get(healthz))
        .route("/", get(dashboard::root))
        .route("/dashboard", get(dashboard::index))
        .route("/dashboard/style.css", get(dashboard::style))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/v1/channels", get(channels::list))
        .route("/v1/channels/{channel}", get(channels::one))
        .route("/v1/channels/{channel}/sellable", get(channels::sellable))
        .route(
            "/v1/channels/{channel}/sellable/stream",
            get(channels::stream),
        )
        .route("/v1/channels/{channel}/errors", get(channels::errors))
        .route(
            "/v1/channels/{channel}/mode",
            axum::routing::put(channels::set_mode),
        )
        .fallback(not_supported)
        .method_not_allowed_fallback(stocksync_runtime::server::error::wrong_method)
        .with_state(app)
}

/// The collector's error shape (`crate::api::AppError`) for the worker's hand-written answers.
fn error(status: StatusCode, error: &'static str, field: Option<&str>, detail: String) -> Response {
    Refusal::new(status, error, field.map(String::from), detail).into_response()
}

/// A read that failed: logged under a reference, `503 store unavailable` to the client.
fn internal(e: impl Into<super::PgError>) -> Response {
    AppError::unavailable(&e.into()).into_response()
}

async fn not_supported(uri: Uri) -> Response {
    unsupported(uri.path())
}

fn unsupported(path: &str) -> Response {
    error(
        StatusCode::NOT_IMPLEMENTED,
        "not_supported_on_backend",
        None,
        format!(
            "`{}` is not served by the postgres backend yet (see docs/SCALING.md); use the sqlite backend for it",
            path
        ),
    )
}

const COLUMNS: &str =
    "sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming";

fn stock_row(r: &tokio_postgres::Row) -> Levels {
    let states = States {
        available: r.get(3),
        reserved: r.get(4),
        damaged: r.get(5),
        quality_control: r.get(6),
        in_transit: r.get(7),
        incoming: r.get(8),
    };
    let bin: String = r.get(2);
    Levels {
        sku: r.get(0),
        warehouse: r.get(1),
        bin: (!bin.is_empty()).then_some(bin),
        on_hand: states.on_hand(),
        states,
    }
}

async fn by_sku(State(app): State<Arc<PgApp>>, Path(sku): Path<String>) -> Response {
    let rows = match read(
        &app,
        &format!("SELECT {COLUMNS} FROM stock WHERE sku = $1 ORDER BY warehouse, bin"),
        &[&sku],
    )
    .await
    {
        Ok(rows) => rows,
        Err(e) => return internal(e),
    };
    let in_catalog =
        app.catalog.config().skus.iter().any(|s| s.id == sku) || app.catalog.bundle(&sku).is_some();
    if rows.is_empty() && !in_catalog {
        return error(
            StatusCode::NOT_FOUND,
            "not found",
            Some("sku"),
            format!("SKU `{sku}` is not in the catalog and has no stock"),
        );
    }
    let mut total = States::default();
    for row in &rows {
        total.add(&row.states);
    }
    let conn = match app.pool.get().await {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let mut holds = BTreeMap::new();
    for row in rows.iter().filter(|r| r.bin.is_none()) {
        match super::reserve::held(&*conn, &conn.prepared(), &sku, &row.warehouse).await {
            Ok(h) => holds.insert(row.warehouse.clone(), h),
            Err(e) => return internal(e),
        };
    }
    let bundle = match app.catalog.bundle(&sku) {
        Some(components) => match bundles::view(&app, &sku, components).await {
            Ok(view) => Some(view),
            Err(e) => return internal(e),
        },
        None => None,
    };
    Json(json!({
        "sku": sku,
        "on_hand": total.on_hand(),
        "total": total,
        "warehouses": warehouses(&rows, &holds),
        "locations": rows,
        "bundle": bundle,
    }))
    .into_response()
}

async fn by_location(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<HashMap<String, String>>,
) -> Response {
    if let Some(k) = q
        .keys()
        .find(|k| !["location", "limit"].contains(&k.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "bad request",
            Some(k),
            format!("unknown parameter `{k}`"),
        );
    }
    let Some(location) = q.get("location").cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad request",
            Some("location"),
            "give `location=<warehouse>` or `<warehouse>/<bin>`".into(),
        );
    };
    let limit = match q.get("limit").map(|l| l.parse::<i64>()) {
        None => 1000,
        Some(Ok(n)) => n.clamp(1, 100_000),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad request",
                Some("limit"),
                "`limit` must be a whole number".into(),
            )
        }
    };
    let rows = match location.split_once('/') {
        Some((warehouse, bin)) => {
            let sql = format!("SELECT {COLUMNS} FROM stock WHERE warehouse = $1 AND bin = $2 ORDER BY sku LIMIT $3");
            read(&app, &sql, &[&warehouse, &bin, &limit]).await
        }
        None => {
            let sql = format!(
                "SELECT {COLUMNS} FROM stock WHERE warehouse = $1 ORDER BY sku, bin LIMIT $2"
            );
            read(&app, &sql, &[&location, &limit]).await
        }
    };
    match rows {
        Ok(rows) => Json(json!({"location": location, "items": rows})).into_response(),
        Err(e) => internal(e),
    }
}

async fn read(
    app: &PgApp,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Levels>, tokio_postgres::Error> {
    let conn = app.pool.get().await?;
    Ok(conn
        .query(sql, params)
        .await?
        .iter()
        .map(stock_row)
        .collect())
}

async fn healthz(State(app): State<Arc<PgApp>>) -> Response {
    let connected = app.metrics.broker_connected.load(Ordering::Relaxed) == 1;
    let running = app.tasks.all_running();
    let database = app.pool.get().await.is_ok();
    let (status, word) = match (running, connected && database) {
        (true, true) => (StatusCode::OK, "ok"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "failed"),
    };
    let tasks: serde_json::Map<String, serde_json::Value> = app
        .tasks
        .snapshot()
        .into_iter()
        .map(|(name, ended)| {
            (
                name.to_string(),
                json!(ended.unwrap_or_else(|| "running".into())),
            )
        })
        .collect();
    (
        status,
        Json(json!({
            "status": word,
            "backend": "postgres",
            "worker_id": app.worker_id,
            "warehouses": app.owned.borrow().clone(),
            "broker": if connected { "connected" } else { "disconnected" },
            "database": if database { "connected" } else { "unreachable" },
            "tasks": tasks,
        })),
    )
        .into_response()
}
