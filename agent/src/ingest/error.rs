//! The agent API's one error type (axum's error-handling example): every handler returns
//! `Result<_, AppError>`, journal errors convert with `?`, and every answer is JSON
//! `{error, field, detail}` (with `record`, the index in a list, for a refused movement).
//! A full journal or disk is the sender's business (`503`, retry later); any other journal
//! failure is ours: logged with its text under a reference, answered as `500 internal error`
//! with the reference only.

use crate::input::InputError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use stocksync_runtime::server::error::Refusal;

use crate::journal::JournalError;

/// An HTTP error of the agent API.
#[derive(Debug)]
pub enum AppError {
    /// A refused record, named by record and field.
    Input(StatusCode, InputError),
    /// The request conflicts with what was journaled before (a reused key or movement id).
    Conflict(InputError),
    Journal(JournalError),
    /// Anything else refused: a query, a body's content type or size, an unknown id.
    Refused(Refusal),
}

impl AppError {
    /// A refusal with no record: `field` names what is at fault.
    pub fn refused(status: StatusCode, error: &'static str, field: &str, detail: String) -> Self {
        AppError::Refused(Refusal::new(status, error, Some(field.into()), detail))
    }
}

impl From<JournalError> for AppError {
    fn from(e: JournalError) -> AppError {
        AppError::Journal(e)
    }
}

impl From<Refusal> for AppError {
    fn from(r: Refusal) -> AppError {
        AppError::Refused(r)
    }
}

fn record(status: StatusCode, error: &str, e: InputError) -> Response {
    let body = json!({"error": error, "record": e.record, "field": e.field, "detail": e.detail});
    (status, Json(body)).into_response()
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        match self {
            AppError::Input(status, e) => record(status, "invalid movement", e),
            AppError::Conflict(e) => {
                record(StatusCode::CONFLICT, "conflict with an earlier request", e)
            }
            AppError::Journal(e @ JournalError::Full { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "30")],
                Json(json!({"error": "journal full", "field": null, "detail": e.to_string()})),
            )
                .into_response(),
            AppError::Journal(e @ JournalError::DiskFull { .. }) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "60")],
                Json(json!({"error": "disk full", "field": null, "detail": e.to_string()})),
            )
                .into_response(),
            AppError::Journal(e) => Refusal::internal("agent", &e).into_response(),
            AppError::Refused(r) => r.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_journal_failure_is_logged_not_sent() {
        let failed = JournalError::Failed {
            detail: "journal write panicked, rolled back: index out of bounds".into(),
        };
        let response = AppError::from(failed).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "internal error");
        assert!(body["reference"].is_string(), "{body}");
        assert!(!body.to_string().contains("panicked"), "{body}");
    }
}
