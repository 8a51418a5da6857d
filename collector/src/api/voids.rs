//! `POST /v1/movements/void`: an operator cancels one movement by its id
//! (`{agent_id, seq, by, reason}`); see `crate::void` for what it does to the projection.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::body::JsonBody;
use super::AppError;
use crate::auth::{self, Principal};
use crate::void::{self, Request, Voided};
use crate::App;

/// 201 with the void record, 200 with the first one if it was voided before, 404 if the
/// ledger has no such movement.
#[utoipa::path(
    post,
    path = "/v1/movements/void",
    tag = "audit",
    summary = "Void a movement",
    request_body(content = serde_json::Value, description = "{agent_id, seq, by, reason}"),
    responses(
        (status = 200, description = "Voided; the projection replays without it", body = serde_json::Value),
        (status = 404, description = "No such movement", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Already voided", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<Request>,
) -> Result<Response, AppError> {
    let req = checked(principal.as_deref(), req)?;
    let now = stocksync_common::OccurredAt::now().unix_ms;
    let id = format!("{} seq {}", req.agent_id, req.seq);
    let voided = app
        .ledger
        .write(move |tx, touched| void::void(tx, &req, now, touched))
        .await?;
    answer(voided, &id)
}

/// The request as voided: `by` and `reason` must say something, and who voids is the
/// token's name when the API has tokens, never only what the body says.
pub(crate) fn checked(
    principal: Option<&Principal>,
    mut req: Request,
) -> Result<Request, AppError> {
    for (field, value) in [("$.by", &req.by), ("$.reason", &req.reason)] {
        if value.trim().is_empty() {
            return Err(AppError::unprocessable(
                field.into(),
                "must say who voids the movement and why".into(),
            ));
        }
    }
    req.by = auth::by(principal, &req.by);
    Ok(req)
}

/// The answer to a void of movement `id` (`<agent> seq <n>`), on either store.
pub(crate) fn answer(voided: Voided, id: &str) -> Result<Response, AppError> {
    match voided {
        Voided::New(v) => Ok((StatusCode::CREATED, Json(v)).into_response()),
        Voided::Already(v) => Ok((StatusCode::OK, Json(v)).into_response()),
        Voided::Unknown => Err(AppError::not_found(
            "$.seq",
            format!("no movement {id} in the ledger"),
        )),
    }
}
