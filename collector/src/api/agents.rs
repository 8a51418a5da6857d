//! `GET /v1/agents`: every agent the collector has heard from, with the clock skew measured
//! on its last batch. A skewed agent clock dates movements wrongly, which moves counts and
//! deltas past each other; operators see it here before it shows in the numbers.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::AppError;
use crate::App;

/// Agents by id: warehouse, journal, first and last seen, and `clock_skew_ms` =
/// received_at - sent_at of the last v2 batch (positive: the agent's clock is behind the
/// collector's, or the batch was that long in transit; `null` for v1 agents).
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "operations",
    summary = "Every agent heard from",
    responses(
        (status = 200, description = "Agents with last seen and clock_skew_ms", body = serde_json::Value),
    ),
)]
pub async fn list(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    let rows = app.ledger.read(|c| {
        let mut stmt = c.prepare(
            "SELECT agent_id, warehouse, journal_id, first_seen_ms, last_seen_ms, clock_skew_ms FROM agents ORDER BY agent_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(json!({
                "agent_id": r.get::<_, String>(0)?,
                "warehouse": r.get::<_, String>(1)?,
                "journal_id": r.get::<_, i64>(2)?,
                "first_seen_ms": r.get::<_, i64>(3)?,
                "last_seen_ms": r.get::<_, i64>(4)?,
                "clock_skew_ms": r.get::<_, Option<i64>>(5)?,
            }))
        })?;
        rows.collect::<Result<Vec<_>, _>>()
    })?;
    Ok(Json(rows).into_response())
}
