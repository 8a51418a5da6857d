//! `GET /v1/alerts` on a worker: the alerts every worker shares (`store::postgres::alerts`),
//! in the SQLite collector's JSON; `evaluations` counts the rounds of all workers.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::PgApp;
use crate::api::{AppError, Params};
use crate::store::postgres::{alerts, PgError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsQuery {
    recent: Option<i64>,
}

/// `GET /v1/alerts[?recent=n]`: `{firing, recent, evaluations}`.
pub async fn list(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<AlertsQuery>,
) -> Result<Response, AppError> {
    let recent = q.recent.unwrap_or(50).clamp(0, 1000);
    let conn = app.pool.get().await.map_err(PgError::from)?;
    Ok(Json(alerts::list(&*conn, recent).await?).into_response())
}
