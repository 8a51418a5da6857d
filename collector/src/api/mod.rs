//! The collector's HTTP API: stock queries for people and channels (with the bundle
//! component view), audit (history, drift, conflicts, discrepancies) and the rejects queue
//! for operators, health and metrics for monitoring.

mod agents;
mod alerts;
mod audit;
pub(crate) mod body;
mod bundles;
mod channels;
mod dashboard;
mod exceptions;
mod history;
mod openapi;
mod orders;
mod ready;
mod reports;
mod reservations;
pub(crate) mod stock;
mod voids;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde_json::json;

use crate::ledger::LedgerError;
use crate::App;

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
        at(Method::GET, "/v1/stock/:sku", stock::by_sku),
        at(Method::GET, "/v1/stock/:sku/history", history::history),
        at(Method::GET, "/v1/drift", audit::drift),
        at(Method::GET, "/v1/conflicts", audit::conflicts),
        at(Method::GET, "/v1/discrepancies", audit::discrepancies),
        at(Method::GET, "/v1/reversals", audit::reversals),
        at(Method::GET, "/v1/shortfalls", audit::shortfalls),
        at(Method::GET, "/v1/bundles/:sku", bundles::by_bundle),
        at(Method::POST, "/v1/reservations", reservations::create),
        at(Method::GET, "/v1/reservations", reservations::list),
        at(Method::GET, "/v1/reservations/:id", reservations::get),
        at(
            Method::DELETE,
            "/v1/reservations/:id",
            reservations::release,
        ),
        at(Method::POST, "/v1/movements/void", voids::create),
        at(Method::POST, "/v1/orders", orders::place),
        at(Method::GET, "/v1/orders", orders::list),
        at(Method::GET, "/v1/orders/:id", orders::get),
        at(Method::POST, "/v1/orders/:id/cancel", orders::cancel),
        at(Method::POST, "/v1/orders/:id/paid", orders::paid),
        at(Method::POST, "/v1/orders/:id/reroute", orders::reroute),
        at(
            Method::PUT,
            "/v1/routing/warehouses/:warehouse",
            orders::set_frozen,
        ),
        at(Method::GET, "/v1/rejects", rejects),
        at(Method::POST, "/v1/rejects/:id/retry", retry_reject),
        at(Method::GET, "/v1/channels", channels::list),
        at(Method::GET, "/v1/channels/:channel", channels::one),
        at(
            Method::GET,
            "/v1/channels/:channel/sellable",
            channels::sellable,
        ),
        at(
            Method::GET,
            "/v1/channels/:channel/sellable/stream",
            channels::stream,
        ),
        at(
            Method::PUT,
            "/v1/channels/:channel/mode",
            channels::set_mode,
        ),
        at(
            Method::GET,
            "/v1/channels/:channel/errors",
            channels::errors,
        ),
        at(Method::GET, "/v1/agents", agents::list),
        at(Method::GET, "/v1/exceptions", exceptions::list),
        at(Method::GET, "/v1/exceptions/:id", exceptions::one),
        at(Method::POST, "/v1/exceptions/:id", exceptions::bulk),
        at(Method::POST, "/v1/exceptions/:id/:action", exceptions::act),
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
        .with_state(app)
}

/// A query string whose parameters are all understood: an unknown one (a filter this
/// endpoint does not support) is a JSON `400` naming it, never silently ignored. Use with
/// `#[serde(deny_unknown_fields)]` on `T`.
pub struct Params<T>(pub T);

#[axum::async_trait]
impl<T, S> axum::extract::FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(t)| Params(t))
            .map_err(|e| {
                let detail = e.body_text();
                // "... unknown field `warehouse`, expected ..." -> `warehouse`
                let field = detail.split('`').nth(1).unwrap_or("query").to_string();
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    error: "bad request",
                    field: Some(field),
                    detail,
                }
            })
    }
}

/// An HTTP error with the JSON body `{error, field, detail}`.
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    field: Option<String>,
    detail: String,
}

impl ApiError {
    pub fn bad_request(field: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: "bad request",
            field: Some(field.into()),
            detail: detail.into(),
        }
    }

    pub fn unprocessable(field: String, detail: String) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            error: "invalid request",
            field: Some(field),
            detail,
        }
    }

    pub fn not_found(field: &'static str, detail: String) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            error: "not found",
            field: Some(field.into()),
            detail,
        }
    }
}

/// A storage failure is ours, not the client's: its text (paths, SQL, panics) goes to the
/// log, the client gets a fixed sentence.
impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> ApiError {
        tracing::error!(error = %e, "request failed on the ledger");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "ledger error",
            field: None,
            detail: "internal error; the collector's log has the details".into(),
        }
    }
}

/// The same for the PostgreSQL store: a failed or unreachable database is a `503` the client
/// may retry; the text goes to the log.
#[cfg(feature = "postgres")]
impl From<crate::store::postgres::PgError> for ApiError {
    fn from(e: crate::store::postgres::PgError) -> ApiError {
        tracing::error!(error = %e, "request failed on the postgres store");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "store unavailable",
            field: None,
            detail:
                "the store could not complete the request; retry (the worker's log has the details)"
                    .into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "field": self.field, "detail": self.detail});
        (self.status, Json(body)).into_response()
    }
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
) -> Result<Response, ApiError> {
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
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<Response, ApiError> {
    use crate::ledger::Retried;
    let (status, outcome, detail) = match app.ledger.retry_reject(id).await? {
        Retried::Applied => (StatusCode::OK, "applied", String::new()),
        Retried::AlreadyApplied => (StatusCode::OK, "already_applied", String::new()),
        Retried::StillRefused(reason) => {
            return Err(ApiError::unprocessable("id".into(), reason));
        }
        Retried::NotRetryable(why) => return Err(ApiError::unprocessable("id".into(), why)),
        Retried::Unknown => {
            return Err(ApiError::not_found("id", format!("no reject {id}")));
        }
    };
    Ok((
        status,
        Json(json!({"id": id, "outcome": outcome, "detail": detail})),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_ledger_failure_is_logged_not_sent() {
        let panic = LedgerError::Panicked("attempt to add with overflow at src/x.rs:1".into());
        let response = ApiError::from(panic).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "ledger error");
        assert!(
            !body["detail"].as_str().unwrap().contains("overflow"),
            "{body}"
        );
    }
}
