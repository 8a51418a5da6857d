//! `POST /v1/movements/void` on a worker: the SQLite collector's checks and answers
//! (`crate::api::voids`), the void itself one transaction in the shared database
//! (`store::postgres::voids`), so any worker may be asked and a movement is voided once.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;

use super::PgApp;
use crate::api::body::JsonBody;
use crate::api::voids::{answer, checked};
use crate::api::AppError;
use crate::auth::Principal;
use crate::store::postgres::{now_ms, voids, PgError};
use crate::void::Request;

/// 201 with the void record, 200 with the first one if it was voided before, 404 if the
/// ledger has no such movement, 422 naming an empty field.
pub async fn create(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<Request>,
) -> Result<Response, AppError> {
    let req = checked(principal.as_deref(), req)?;
    let id = format!("{} seq {}", req.agent_id, req.seq);
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let prepared = conn.prepared();
    let voided = voids::void(&mut conn, &prepared, &req, now_ms()).await?;
    answer(voided, &id)
}
