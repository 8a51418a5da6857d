//! `POST /v1/movements` and the agent's operator endpoints.
//!
//! 202 is sent only after the journal's fsync; a bad batch gets one error naming the record
//! and field, nothing of it is journaled, and the refusal is kept in the rejects queue.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::input::{self, Context, InputError};
use axum::extract::{DefaultBodyLimit, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use stocksync_runtime::server::error::{JsonBytes, Params};
use stocksync_runtime::server::{HttpLimits, HttpTlsConfig, TokenConfig};

pub use super::error::AppError;
use crate::journal::{Reject, RequestKey};
use crate::App;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentHttpConfig {
    pub listen: SocketAddr,
    /// Source system assumed for HTTP records that name none.
    pub default_source: String,
    /// Sources HTTP records may claim; empty means only `default_source`.
    pub sources: Vec<String>,
    /// Most records in one request.
    pub max_batch: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// `[[http.tokens]]`: bearer tokens; with none configured the API is open.
    pub tokens: Vec<TokenConfig>,
    /// `[http.tls]`: serve HTTPS instead of HTTP.
    pub tls: Option<HttpTlsConfig>,
    /// `[http.limits]`: timeouts and the connection limit.
    pub limits: HttpLimits,
}

impl Default for AgentHttpConfig {
    fn default() -> Self {
        AgentHttpConfig {
            listen: "127.0.0.1:8081".parse().expect("valid"),
            default_source: "wms".into(),
            sources: Vec::new(),
            max_batch: 1000,
            max_body_bytes: 4 << 20,
            tokens: Vec::new(),
            tls: None,
            limits: HttpLimits::default(),
        }
    }
}

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

/// Every route the agent serves. The router is built from this table only, and a test
/// checks that the OpenAPI document (`super::openapi`) describes exactly these.
pub(crate) fn routes() -> Vec<Route> {
    vec![
        at(Method::POST, "/v1/movements", post_movements),
        at(Method::POST, "/v1/epcis/events", super::epcis::post_events),
        at(Method::GET, "/v1/status", status),
        at(Method::GET, "/v1/rejects", rejects),
        at(
            Method::POST,
            "/v1/rejects/{id}/retry",
            super::retry::retry_reject,
        ),
        at(Method::GET, "/metrics", metrics),
        at(Method::GET, "/healthz", healthz),
        at(Method::GET, "/readyz", readyz),
        at(Method::GET, "/openapi.json", super::openapi::document),
    ]
}

/// The agent's HTTP routes.
pub fn router(app: Arc<App>) -> Router {
    let limit = app.config.http.max_body_bytes;
    routes()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
        .fallback(stocksync_runtime::server::error::no_route)
        .method_not_allowed_fallback(stocksync_runtime::server::error::wrong_method)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// Validates and journals movements: one object, or a list journaled all or nothing.
#[utoipa::path(post, path = "/v1/movements", tag = "movements",
    request_body(content = serde_json::Value, description = "A movement or a list of movements (docs/MOVEMENTS.md)"),
    params(("idempotency-key" = Option<String>, Header, description = "Replays the first answer for the same key and body")),
    responses(
        (status = 202, description = "Journaled (on disk)", body = serde_json::Value),
        (status = 200, description = "Replay of an earlier request with this idempotency key", body = serde_json::Value),
        (status = 400, description = "Malformed JSON", body = super::openapi::ErrorBody),
        (status = 409, description = "Conflicts with an earlier request", body = super::openapi::ErrorBody),
        (status = 422, description = "A record is invalid (kept in the rejects queue)", body = super::openapi::ErrorBody),
        (status = 503, description = "Journal full or disk full", body = super::openapi::ErrorBody)))]
pub(crate) async fn post_movements(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<stocksync_runtime::server::auth::Principal>>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AppError> {
    // The input path names the token that posted (`http:<token name>`) when tokens are
    // configured: who sent a movement is how it arrived, carried to the collector's history.
    let input_path = match &principal {
        Some(p) => format!("http:{}", p.name()),
        None => "http".to_string(),
    };
    let catalog = app.catalog.current();
    let validated = !catalog.is_open();
    let ctx = Context {
        warehouse: &app.config.warehouse,
        default_source: &app.http_sources.default_source,
        now: input::now(),
        max_batch: app.config.http.max_batch,
        units: &*catalog,
        input: &input_path,
        sources: &app.http_sources.sources,
        validated,
        clock: crate::clock_rule(&app.config),
    };
    let movements = match input::parse_body(&body, &ctx) {
        Ok(m) => m,
        Err(e) => {
            let status = if e.detail.starts_with("malformed JSON") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            keep(&app, &e, &body).await?;
            return Err(AppError::Input(status, e));
        }
    };
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| RequestKey::new(k.to_owned(), &body));
    let appended = match app.journal.append_request(movements, key).await {
        Ok(appended) => appended,
        Err(e) => {
            let array = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
            let error = e.refusal(array)?;
            keep(&app, &error, &body).await?;
            return Err(AppError::Conflict(error));
        }
    };
    let status = if appended.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut answer = serde_json::to_value(&appended).unwrap_or_default();
    if !validated {
        answer["validated"] = json!(false);
        answer["warning"] = json!("no catalog yet: journaled unvalidated; the collector checks SKUs and units against its catalog");
    }
    Ok((status, Json(answer)).into_response())
}

/// Keeps a refused request in the rejects queue before its sender hears the refusal.
async fn keep(app: &App, error: &InputError, body: &[u8]) -> Result<(), AppError> {
    let reject = Reject {
        source: "http".into(),
        error: error.clone(),
        payload: body.to_vec(),
    };
    app.journal.reject(reject).await.map_err(AppError::Journal)
}

/// The agent's journal, links and catalog.
#[utoipa::path(get, path = "/v1/status", tag = "operations",
    responses((status = 200, description = "Backlog, acks, rejects, broker links", body = serde_json::Value)))]
pub(crate) async fn status(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    let journal = app.journal.status()?;
    let now = input::now().unix_ms;
    Ok(Json(json!({
        "agent_id": app.config.agent_id,
        "warehouse": app.config.warehouse,
        "broker": if app.link.connected.load(Ordering::Relaxed) { "connected" } else { "disconnected" },
        "backlog": journal.backlog,
        "oldest_unacked_age_ms": journal.oldest_unacked_ms.map(|t| now - t),
        "last_ack_ms": journal.last_ack_ms,
        "last_ack_age_ms": journal.last_ack_ms.map(|t| now - t),
        "last_seq": journal.last_seq,
        "journal_id": journal.journal_id,
        "rejects": journal.rejects,
        "rejects_dropped": journal.rejects_dropped,
        "disk_full": journal.disk_full,
        "refused_by_collector": journal.refused_by_collector,
        "acks_ignored": app.link.acks_ignored.load(Ordering::Relaxed),
        "broker_last_error": app.link.last_error(),
        "scanner": app.scanner.as_ref().map(|link| json!({
            "connected": link.connected.load(Ordering::Relaxed),
            "last_error": link.last_error(),
        })),
        "catalog_skus": app.catalog.current().config().skus.len(),
        "validating": !app.catalog.current().is_open(),
        "broker_connects": app.link.connects.load(Ordering::Relaxed),
        "http_sources": app.http_sources.sources,
    }))
    .into_response())
}

/// The status numbers in Prometheus text format, for alerting without parsing JSON.
/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    let journal = app.journal.status()?;
    let now = input::now().unix_ms;
    let gauges = [
        (
            "stocksync_agent_backlog",
            "Movements journaled, not yet acknowledged by the collector",
            journal.backlog as i64,
        ),
        (
            "stocksync_agent_oldest_unacked_age_ms",
            "Age of the oldest unacknowledged movement (0 when none)",
            journal.oldest_unacked_ms.map_or(0, |t| now - t),
        ),
        (
            "stocksync_agent_last_seq",
            "Highest journal seq",
            journal.last_seq as i64,
        ),
        (
            "stocksync_agent_rejects",
            "Records refused at this agent (rejects queue)",
            journal.rejects as i64,
        ),
        (
            "stocksync_agent_rejects_dropped",
            "Refused records dropped from the rejects queue by its bounds (oldest first)",
            journal.rejects_dropped as i64,
        ),
        (
            "stocksync_agent_disk_full",
            "1 while the journal cannot write for lack of space (input refused with 503)",
            i64::from(journal.disk_full),
        ),
        (
            "stocksync_agent_refused_by_collector",
            "Movements the collector acknowledged as rejected",
            journal.refused_by_collector as i64,
        ),
        (
            "stocksync_agent_acks_ignored",
            "Acks ignored because they matched no batch this agent sent (forged or misrouted)",
            app.link.acks_ignored.load(Ordering::Relaxed) as i64,
        ),
        (
            "stocksync_agent_broker_connected",
            "1 when the forwarder is connected to the broker",
            i64::from(app.link.connected.load(Ordering::Relaxed)),
        ),
    ];
    let scanner = app.scanner.as_ref().map(|link| {
        (
            "stocksync_agent_scanner_connected",
            "1 when the scanner input is connected to its broker (absent without [scanner])",
            i64::from(link.connected.load(Ordering::Relaxed)),
        )
    });
    let mut out = String::new();
    for (name, help, value) in gauges.into_iter().chain(scanner) {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
        ));
    }
    Ok(([("content-type", "text/plain; version=0.0.4")], out).into_response())
}

/// `200` while every task runs, `503` naming the task that ended. The broker links are
/// reported but do not make the agent unhealthy: it journals offline by design.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Every task runs", body = serde_json::Value),
        (status = 503, description = "A task ended", body = serde_json::Value)))]
pub(crate) async fn healthz(State(app): State<Arc<App>>) -> Response {
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
    let disk_full = app.journal.disk_full();
    let healthy = app.tasks.all_running() && !disk_full;
    let link = |l: &crate::forward::LinkState| {
        if l.connected.load(Ordering::Relaxed) {
            "connected"
        } else {
            "disconnected"
        }
    };
    let body = json!({
        "status": if healthy { "ok" } else if disk_full { "degraded" } else { "failed" },
        "journal": if disk_full { "disk full" } else { "ok" },
        "broker": link(&app.link),
        "scanner": app.scanner.as_deref().map(link),
        "tasks": tasks,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct Limit {
    /// At most this many (default 100, at most 1000).
    limit: Option<usize>,
}

/// The records this agent refused, newest first.
#[utoipa::path(get, path = "/v1/rejects", tag = "rejects",
    params(Limit),
    responses((status = 200, description = "Refused records", body = [crate::journal::StoredReject]),
        (status = 400, description = "Unknown or malformed query parameter", body = super::openapi::ErrorBody)))]
pub(crate) async fn rejects(
    State(app): State<Arc<App>>,
    Params(q): Params<Limit>,
) -> Result<Response, AppError> {
    let rows = app.journal.rejects(q.limit.unwrap_or(100).min(1000))?;
    Ok(Json(rows).into_response())
}

/// `GET /readyz`: ready when the journal answers. The broker's state is reported but does not
/// make the agent unready: it journals movements offline and forwards them on reconnect, so
/// senders must keep posting to it.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The journal answers", body = serde_json::Value),
        (status = 503, description = "The journal does not answer", body = serde_json::Value)))]
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let broker = if app.link.connected.load(Ordering::Relaxed) {
        "connected"
    } else {
        "disconnected"
    };
    match app.journal.status() {
        Ok(_) => Json(json!({"status": "ready", "store": "ok", "broker": broker})).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "store": e.to_string(), "broker": broker})),
        )
            .into_response(),
    }
}
