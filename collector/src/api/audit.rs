//! Audit endpoints: why a number is what it is, and where sources disagree.
//!
//! `GET /v1/drift`, `/v1/conflicts`, `/v1/discrepancies`, `/v1/reversals` and
//! `/v1/shortfalls` list the open records (the history of one key is in `history`).

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::ApiError;
use crate::{records, App};

#[derive(serde::Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
    /// For conflicts: include counts that agreed with the projection.
    all: Option<bool>,
}

/// Open drift records, newest count first.
pub async fn drift(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::drift(c, limit))?;
    Ok(Json(rows).into_response())
}

/// Counts from non-authoritative sources; by default only those that disagreed.
pub async fn conflicts(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let open_only = !q.all.unwrap_or(false);
    let rows = app
        .ledger
        .read(|c| records::conflicts(c, open_only, limit))?;
    Ok(Json(rows).into_response())
}

/// Transfers whose received quantity differs from the shipped one.
pub async fn discrepancies(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::discrepancies(c, limit))?;
    Ok(Json(rows).into_response())
}

/// Orders whose cancellations and returns exceed what they shipped.
pub async fn reversals(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::reversals(c, limit))?;
    Ok(Json(rows).into_response())
}

/// Inspections and write-offs that asked for more than quality control or damaged held.
pub async fn shortfalls(
    State(app): State<Arc<App>>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app.ledger.read(|c| records::shortfalls(c, limit))?;
    Ok(Json(rows).into_response())
}
