//! Retrying a request this agent refused, once the cause is fixed (its SKU is in the
//! catalog now): `POST /v1/rejects/<id>/retry`, or the collector's command
//! (`forward_rejects`). Either journals it exactly once.
//!
//! Only requests refused on the HTTP input are kept whole (the other inputs keep a line or
//! an event of a larger input, which is retried by dropping the corrected file again). The
//! request is journaled under the idempotency key `reject-retry:<id>:<received_at_ms>`, so
//! a second retry, from either side, is answered from the journal's idempotency table
//! (`already_applied`) and journals nothing.

use std::sync::Arc;

use crate::input::{self, Context, InputError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stocksync_runtime::server::error::Path;

use super::error::AppError;
use crate::journal::{Appended, JournalError, RequestKey};
use crate::App;

/// What retrying a reject led to.
pub enum Outcome {
    /// Journaled now, or (`replayed`) by an earlier retry.
    Journaled(Appended),
    /// Refused again.
    StillRefused(InputError),
    /// Kept in part, or not from the HTTP input.
    NotRetryable(String),
    /// No reject with that id (and, when given, that receive time).
    Unknown,
}

/// Retries reject `id`; `received_at_ms`, when given, must match (ids can be reused once
/// the table was emptied by its bounds).
pub async fn retry(
    app: &App,
    id: i64,
    received_at_ms: Option<i64>,
) -> Result<Outcome, JournalError> {
    let Some((reject, body, cut)) = app.journal.reject_by_id(id)? else {
        return Ok(Outcome::Unknown);
    };
    if received_at_ms.is_some_and(|t| t != reject.received_at_ms) {
        return Ok(Outcome::Unknown);
    }
    if cut {
        return Ok(Outcome::NotRetryable(
            "only the first part of this request was kept; send it again from its origin".into(),
        ));
    }
    if !reject.source.starts_with("http") {
        return Ok(Outcome::NotRetryable(format!(
            "a reject of the {} input is retried by sending its input again",
            reject.source
        )));
    }
    let catalog = app.catalog.current();
    let ctx = Context {
        warehouse: &app.config.warehouse,
        default_source: &app.http_sources.default_source,
        now: input::now(),
        max_batch: app.config.http.max_batch,
        units: &*catalog,
        input: "http",
        sources: &app.http_sources.sources,
        validated: !catalog.is_open(),
        clock: crate::clock_rule(&app.config),
    };
    let movements = match input::parse_body(&body, &ctx) {
        Ok(m) => m,
        Err(e) => return Ok(Outcome::StillRefused(e)),
    };
    let key = RequestKey::new(
        format!("reject-retry:{id}:{}", reject.received_at_ms),
        &body,
    );
    let appended = app.journal.append_request(movements, Some(key)).await?;
    Ok(Outcome::Journaled(appended))
}

/// Retries reject `id`: `200 {id, outcome: applied | already_applied, first_seq, last_seq}`;
/// `422` with the new reason when the request is still refused; `409` when it cannot be
/// retried; `404` when there is no such reject.
#[utoipa::path(post, path = "/v1/rejects/{id}/retry", tag = "rejects",
    params(("id" = i64, Path, description = "The reject's id (GET /v1/rejects)")),
    responses(
        (status = 200, description = "Journaled now (`applied`) or before (`already_applied`)", body = serde_json::Value),
        (status = 404, description = "No such reject", body = super::openapi::ErrorBody),
        (status = 409, description = "Cannot be retried (not the HTTP input, or cut)", body = super::openapi::ErrorBody),
        (status = 422, description = "Still refused: the new reason", body = super::openapi::ErrorBody)))]
pub async fn retry_reject(
    State(app): State<Arc<App>>,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let appended = match retry(&app, id, None).await? {
        Outcome::Journaled(appended) => appended,
        Outcome::Unknown => {
            let detail = format!("no reject {id}");
            return Err(AppError::refused(StatusCode::NOT_FOUND, "not found", "id", detail));
        }
        Outcome::NotRetryable(why) => {
            return Err(AppError::refused(StatusCode::CONFLICT, "not retryable", "source", why));
        }
        Outcome::StillRefused(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": "still refused", "record": e.record, "field": e.field, "detail": e.detail})),
            )
                .into_response())
        }
    };
    let outcome = if appended.replayed {
        "already_applied"
    } else {
        "applied"
    };
    Ok(Json(json!({
        "id": id,
        "outcome": outcome,
        "first_seq": appended.first_seq,
        "last_seq": appended.last_seq,
        "journaled": appended.journaled,
    }))
    .into_response())
}
