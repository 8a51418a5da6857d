//! Audit endpoints: why a number is what it is, and where sources disagree.
//!
//! `GET /v1/drift`, `/v1/conflicts`, `/v1/discrepancies`, `/v1/reversals` and
//! `/v1/shortfalls` list the open records (the history of one key is in `history`).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{AppError, Params};
use crate::{records, App};

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    /// For conflicts: include counts that agreed with the projection.
    all: Option<bool>,
    /// Only records of this warehouse (drift, conflicts, shortfalls).
    warehouse: Option<String>,
    /// Only records of this SKU.
    sku: Option<String>,
}

impl ListQuery {
    pub(crate) fn limit(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 10_000)
    }

    pub(crate) fn filter(&self) -> records::Filter<'_> {
        records::Filter {
            warehouse: self.warehouse.as_deref(),
            sku: self.sku.as_deref(),
        }
    }

    /// For conflicts: only those that disagreed (the default).
    pub(crate) fn open_only(&self) -> bool {
        !self.all.unwrap_or(false)
    }

    /// Refuses the filters an endpoint does not support.
    pub(crate) fn only(&self, supported: &[&'static str]) -> Result<(), AppError> {
        for (name, set) in [
            ("all", self.all.is_some()),
            ("warehouse", self.warehouse.is_some()),
            ("sku", self.sku.is_some()),
        ] {
            if set && !supported.contains(&name) {
                return Err(AppError::bad_request(
                    name,
                    format!(
                        "this list cannot be filtered by `{name}`; it supports: limit, {}",
                        supported.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Open drift records, newest count first; `?warehouse=` and `?sku=` filter.
#[utoipa::path(
    get,
    path = "/v1/drift",
    tag = "audit",
    summary = "Counts that differed from the projection",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn drift(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&["warehouse", "sku"])?;
    let rows = app
        .ledger
        .read(|c| records::drift(c, q.filter(), q.limit()))?;
    Ok(Json(rows).into_response())
}

/// Counts from non-authoritative sources; by default only those that disagreed.
#[utoipa::path(
    get,
    path = "/v1/conflicts",
    tag = "audit",
    summary = "Counts from a source that is not the authority",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn conflicts(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&["all", "warehouse", "sku"])?;
    let open_only = q.open_only();
    let rows = app
        .ledger
        .read(|c| records::conflicts(c, q.filter(), open_only, q.limit()))?;
    Ok(Json(rows).into_response())
}

/// Transfers whose received quantity differs from the shipped one.
#[utoipa::path(
    get,
    path = "/v1/discrepancies",
    tag = "audit",
    summary = "Transfers shipped and received in different quantities",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn discrepancies(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&[])?;
    let rows = app.ledger.read(|c| records::discrepancies(c, q.limit()))?;
    Ok(Json(rows).into_response())
}

/// Orders whose cancellations and returns exceed what they shipped.
#[utoipa::path(
    get,
    path = "/v1/reversals",
    tag = "audit",
    summary = "Reversals of more than was shipped",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn reversals(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&[])?;
    let rows = app.ledger.read(|c| records::reversals(c, q.limit()))?;
    Ok(Json(rows).into_response())
}

/// Inspections and write-offs that asked for more than quality control or damaged held.
#[utoipa::path(
    get,
    path = "/v1/shortfalls",
    tag = "audit",
    summary = "Write-offs and inspections of more than was there",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn shortfalls(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    q.only(&["warehouse", "sku"])?;
    let rows = app
        .ledger
        .read(|c| records::shortfalls(c, q.filter(), q.limit()))?;
    Ok(Json(rows).into_response())
}
