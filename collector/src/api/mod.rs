//! The collector's HTTP API: stock queries for people and channels (with the bundle
//! component view), audit (history, drift, conflicts, discrepancies) and the rejects queue
//! for operators, health and metrics for monitoring.

mod agents;
mod alerts;
pub(crate) mod audit;
pub(crate) mod body;
pub(crate) mod bundles;
pub(crate) mod channels;
pub(crate) mod dashboard;
mod error;
pub(crate) mod exceptions;
pub(crate) mod history;
mod openapi;
pub(crate) mod orders;
mod ready;
pub(crate) mod reports;
pub(crate) mod reservations;
pub(crate) mod stock;
pub(crate) mod voids;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::handler::Handler;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde_json::json;

use crate::App;
pub use error::AppError;
pub use stocksync_runtime::server::error::{Params, Path};

/// One route: method, path (axum syntax) and handler.
pub(crate) type Route = (Method, &'static str, MethodRouter<Arc<App>>);

fn at<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, Arc<App>>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    (method, path, on(filter, handler))
}

/// Every route the collector serves. The router is built from this table only, and a test
/// checks that the OpenAPI document (`openapi`) describes exactly these.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        at(Method::GET, "/v1/stock", stock::by_location),
        at(Method::GET, "/v1/stock/{sku}", stock::by_sku),
        at(Method::GET, "/v1/stock/{sku}/history", history::history),
        at(Method::GET, "/v1/drift", audit::drift),
        at(Method::GET, "/v1/conflicts", audit::conflicts),
        at(Method::GET, "/v1/discrepancies", audit::discrepancies),
        at(Method::GET, "/v1/reversals", audit::reversals),
        at(Method::GET, "/v1/shortfalls", audit::shortfalls),
        at(Method::GET, "/v1/bundles/{sku}", bundles::by_bundle),
        at(Method::POST, "/v1/reservations", reservations::create),
        at(Method::GET, "/v1/reservations", reservations::list),
        at(Method::GET, "/v1/reservations/{id}", reservations::get),
        at(
            Method::DELETE,
            "/v1/reservations/{id}",
            reservations::release,
        ),
        at(Method::POST, "/v1/movements/void", voids::create),
        at(Method::POST, "/v1/orders", orders::place),
        at(Method::GET, "/v1/orders", orders::list),
        at(Method::GET, "/v1/orders/{id}", orders::get),
        at(Method::POST, "/v1/orders/{id}/cancel", orders::cancel),
        at(Method::POST, "/v1/orders/{id}/paid", orders::paid),
        at(Method::POST, "/v1/orders/{id}/reroute", orders::reroute),
        at(
            Method::PUT,
            "/v1/routing/warehouses/{warehouse}",
            orders::set_frozen,
        ),
        at(Method::GET, "/v1/rejects", rejects),
        at(Method::POST, "/v1/rejects/{id}/retry", retry_reject),
        at(Method::GET, "/v1/channels", channels::list),
        at(Method::GET, "/v1/channels/{channel}", channels::one),
        at(
            Method::GET,
            "/v1/channels/{channel}/sellable",
            channels::sellable,
        ),
        at(
            Method::GET,
            "/v1/channels/{channel}/sellable/stream",
            channels::stream,
        ),
        at(
            Method::PUT,
            "/v1/channels/{channel}/mode",
            channels::set_mode,
        ),
        at(
            Method::GET,
            "/v1/channels/{channel}/errors",
            channels::errors,
        ),
        at(Method::GET, "/v1/agents", agents::list),
        at(Method::GET, "/v1/exceptions", exceptions::list),
        at(Method::GET, "/v1/exceptions/{id}", exceptions::one),
        at(Method::POST, "/v1/exceptions/{id}", exceptions::bulk),
        at(
            Method::POST,
            "/v1/exceptions/{id}/{action}",
            exceptions::act,
        ),
        at(Method::GET, "/v1/reports/daily", reports::daily),
        at(Method::GET, "/v1/alerts", alerts::list),
        at(Method::GET, "/", dashboard::root),
        at(Method::GET, "/dashboard", dashboard::index),
        at(Method::GET, "/dashboard/style.css", dashboard::style),
        at(Method::GET, "/dashboard/app.js", dashboard::script),
        at(Method::GET, "/readyz", ready::readyz),
        at(Method::GET, "/healthz", healthz),
        at(Method::GET, "/metrics", metrics),
        at(Method::GET, "/openapi.json", openapi::document),
    ]
}

/// The collector's routes.
pub fn router(app: Arc<App>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .fallback(stocksync_runtime::server::error::no_route)
        .method_not_allowed_fallback(stocksync_runtime::server::error::wrong_method)
        .with_state(app)
}

/// `200` while connected to the broker with every task running; `503` otherwise, naming
/// the task that ended (`"status": "failed"`) or the lost broker (`"degraded"`).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Health",
    responses(
        (status = 200, description = "Connected, every task running", body = serde_json::Value),
        (status = 503, description = "Degraded or failed", body = serde_json::Value),
    ),
)]
pub(crate) async fn healthz(State(app): State<Arc<App>>) -> Response {
    let connected = app.metrics.broker_connected.load(Ordering::Relaxed) == 1;
    let running = app.tasks.all_running();
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
    let (status, word) = match (running, connected) {
        (true, true) => (StatusCode::OK, "ok"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "degraded"),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "failed"),
    };
    let broker = if connected {
        "connected"
    } else {
        "disconnected"
    };
    (
        status,
        Json(json!({"status": word, "broker": broker, "tasks": tasks})),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses(
        (status = 200, description = "Prometheus text format", content_type = "text/plain"),
    ),
)]
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        app.metrics.render() + &app.channels.stats.render() + &alerts::metrics(&app),
    )
        .into_response()
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/rejects",
    tag = "rejects",
    summary = "The collector's rejects queue",
    params(Limit),
    responses(
        (status = 200, description = "Payloads and movements the collector refused", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub(crate) async fn rejects(
    State(app): State<Arc<App>>,
    Params(q): Params<Limit>,
) -> Result<Response, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = app.ledger.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT id, first_seen_ms, last_seen_ms, seen_count, topic, agent_id, first_seq, last_seq, reason, length(payload), field, retried_at_ms
             FROM rejects ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit], |r| {
            Ok(json!({
                "id": r.get::<_, i64>(0)?,
                "first_seen_ms": r.get::<_, i64>(1)?,
                "last_seen_ms": r.get::<_, i64>(2)?,
                "seen_count": r.get::<_, i64>(3)?,
                "topic": r.get::<_, String>(4)?,
                "agent_id": r.get::<_, Option<String>>(5)?,
                "first_seq": r.get::<_, Option<i64>>(6)?,
                "last_seq": r.get::<_, Option<i64>>(7)?,
                "reason": r.get::<_, String>(8)?,
                "payload_bytes": r.get::<_, i64>(9)?,
                "field": r.get::<_, Option<String>>(10)?,
                "retried_at_ms": r.get::<_, Option<i64>>(11)?,
            }))
        })?;
        rows.collect::<Result<Vec<_>, _>>()
    })?;
    Ok(Json(rows).into_response())
}

/// Applies a movement the collector's checks refused, if it passes them now (an unknown
/// SKU the catalog has since learnt). Exactly once: a second retry answers `already_applied`.
#[utoipa::path(
    post,
    path = "/v1/rejects/{id}/retry",
    tag = "rejects",
    summary = "Retry a refused movement (exactly once)",
    params(("id" = i64, Path)),
    responses(
        (status = 200, description = "`applied` or `already_applied`", body = serde_json::Value),
        (status = 404, description = "No such reject", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Still refused, or not retryable", body = crate::api::openapi::ErrorBody),
    ),
)]
pub(crate) async fn retry_reject(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    retried(id, app.ledger.retry_reject(id).await?)
}

/// The answer to a retry of reject `id`, on every backend.
pub(crate) fn retried(id: i64, retried: crate::ledger::Retried) -> Result<Response, AppError> {
    use crate::ledger::Retried;
    let (status, outcome, detail) = match retried {
        Retried::Applied => (StatusCode::OK, "applied", String::new()),
        Retried::AlreadyApplied => (StatusCode::OK, "already_applied", String::new()),
        Retried::StillRefused(reason) => {
            return Err(AppError::unprocessable("id".into(), reason));
        }
        Retried::NotRetryable(why) => return Err(AppError::unprocessable("id".into(), why)),
        Retried::Unknown => {
            return Err(AppError::not_found("id", format!("no reject {id}")));
        }
    };
    Ok((
        status,
        Json(json!({"id": id, "outcome": outcome, "detail": detail})),
    )
        .into_response())
}
