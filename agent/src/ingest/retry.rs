//! `POST /v1/rejects/<id>/retry`: processes a request this agent refused again, once the
//! cause is fixed (its SKU is in the catalog now), and journals it exactly once.
//!
//! Only requests refused on the HTTP input are kept whole (the other inputs keep a line or
//! an event of a larger input, which is retried by dropping the corrected file again). The
//! request is journaled under the idempotency key `reject-retry:<id>:<received_at_ms>`, so
//! a second retry is answered from the journal's idempotency table (`already_applied`) and
//! journals nothing.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stocksync_common::input::{self, Context};

use super::http::ApiError;
use crate::journal::RequestKey;
use crate::App;

fn refuse(status: StatusCode, error: &str, field: &str, detail: String) -> Response {
    (
        status,
        Json(json!({"error": error, "field": field, "detail": detail})),
    )
        .into_response()
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
) -> Result<Response, ApiError> {
    let Some((reject, body, cut)) = app.journal.reject_by_id(id).map_err(ApiError::Journal)? else {
        return Ok(refuse(
            StatusCode::NOT_FOUND,
            "not found",
            "id",
            format!("no reject {id}"),
        ));
    };
    if !reject.source.starts_with("http") || cut {
        let why = if cut {
            "only the first part of this request was kept; send it again from its origin"
                .to_string()
        } else {
            format!(
                "a reject of the {} input is retried by sending its input again",
                reject.source
            )
        };
        return Ok(refuse(StatusCode::CONFLICT, "not retryable", "source", why));
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
        Err(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": "still refused", "record": e.record, "field": e.field, "detail": e.detail})),
            )
                .into_response())
        }
    };
    let key = RequestKey::new(
        format!("reject-retry:{id}:{}", reject.received_at_ms),
        &body,
    );
    let appended = app
        .journal
        .append_request(movements, Some(key))
        .await
        .map_err(ApiError::Journal)?;
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
