//! `GET /readyz`: whether this collector can do its job right now: connected to the broker
//! (batches arrive and acks leave) and its store answering (a read on the reader connection
//! and a no-op through the ledger writer, so a stuck writer shows). 503 names what is not.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::App;

/// How long the writer may take to answer before the store counts as unreachable.
const WRITER_TIMEOUT: Duration = Duration::from_secs(5);

#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness",
    responses(
        (status = 200, description = "Broker and store reachable", body = serde_json::Value),
        (status = 503, description = "Not ready", body = serde_json::Value),
    ),
)]
pub async fn readyz(State(app): State<Arc<App>>) -> Response {
    let broker = app.metrics.broker_connected.load(Ordering::Relaxed) == 1;
    let read = app
        .ledger
        .read(|c| c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0)));
    let write = tokio::time::timeout(
        WRITER_TIMEOUT,
        app.ledger
            .write(|tx, _| tx.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))),
    )
    .await;
    let store = match (read, write) {
        (Ok(_), Ok(Ok(_))) => Ok(()),
        (Err(e), _) | (_, Ok(Err(e))) => Err(e.to_string()),
        (_, Err(_)) => Err(format!(
            "the ledger writer did not answer within {WRITER_TIMEOUT:?}"
        )),
    };
    let ready = broker && store.is_ok();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if ready { "ready" } else { "not ready" },
        "broker": if broker { "connected" } else { "disconnected" },
        "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
    });
    (status, Json(body)).into_response()
}
