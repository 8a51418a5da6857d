//! What an operator reads from any worker: the agents heard from, the rejects queue,
//! readiness and metrics; the SQLite collector's routes and JSON, from the shared database.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::PgApp;
use crate::api::{AppError, Params};
use crate::store::postgres::PgError;

/// `GET /v1/agents`: every agent heard from, with its last clock skew.
pub async fn agents(State(app): State<Arc<PgApp>>) -> Result<Response, AppError> {
    let conn = app.pool.get().await.map_err(PgError::from)?;
    let rows = conn
        .query(
            "SELECT agent_id, warehouse, journal_id, first_seen_ms, last_seen_ms, clock_skew_ms FROM agents ORDER BY agent_id",
            &[],
        )
        .await
        .map_err(PgError::from)?;
    let agents: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "agent_id": r.get::<_, String>(0),
                "warehouse": r.get::<_, String>(1),
                "journal_id": r.get::<_, i64>(2),
                "first_seen_ms": r.get::<_, i64>(3),
                "last_seen_ms": r.get::<_, i64>(4),
                "clock_skew_ms": r.get::<_, Option<i64>>(5),
            })
        })
        .collect();
    Ok(Json(agents).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<i64>,
}

/// `GET /v1/rejects`: what the workers refused, newest first (`/v1/rejects/<id>/retry`
/// applies one once its cause is fixed).
pub async fn rejects(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<Limit>,
) -> Result<Response, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let conn = app.pool.get().await.map_err(PgError::from)?;
    let rows = conn
        .query(
            "SELECT id, first_seen_ms, last_seen_ms, seen_count, topic, agent_id, first_seq, last_seq, reason, length(payload)::bigint, field, retried_at_ms
             FROM rejects ORDER BY id DESC LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(PgError::from)?;
    let rejects: Vec<_> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.get::<_, i64>(0),
                "first_seen_ms": r.get::<_, i64>(1),
                "last_seen_ms": r.get::<_, i64>(2),
                "seen_count": r.get::<_, i64>(3),
                "topic": r.get::<_, String>(4),
                "agent_id": r.get::<_, Option<String>>(5),
                "first_seq": r.get::<_, Option<i64>>(6),
                "last_seq": r.get::<_, Option<i64>>(7),
                "reason": r.get::<_, String>(8),
                "payload_bytes": r.get::<_, i64>(9),
                "field": r.get::<_, Option<String>>(10),
                "retried_at_ms": r.get::<_, Option<i64>>(11),
            })
        })
        .collect();
    Ok(Json(rejects).into_response())
}

/// `GET /readyz`: connected to the broker and the database answering; 503 names which not.
pub async fn readyz(State(app): State<Arc<PgApp>>) -> Response {
    let broker = app.metrics.broker_connected.load(Ordering::Relaxed) == 1;
    let store = match app.pool.get().await {
        Ok(c) => c
            .query_one("SELECT 1", &[])
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let ready = broker && store.is_ok();
    let status = match ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "broker": if broker { "connected" } else { "disconnected" },
        "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
        "worker_id": app.worker_id,
    });
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the worker's counters, and how many warehouses it holds a lease on.
pub async fn metrics(State(app): State<Arc<PgApp>>) -> Response {
    let owned = app.owned.borrow().len();
    let mut text = app.metrics.render()
        + &app.channels.stats.render()
        + &format!(
            "# HELP stocksync_worker_warehouses Warehouses this worker holds a lease on.\n# TYPE stocksync_worker_warehouses gauge\nstocksync_worker_warehouses {owned}\n"
        );
    text += &super::super::alerts::metrics_text(&app.pool).await;
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}
