//! The collector API's one error type (axum's error-handling example): every handler returns
//! `Result<_, AppError>`, the stores' errors convert with `?`, and every answer is the JSON
//! `{error, field, detail}`. What fails on our side (SQLite, the ledger writer, a panic) is
//! logged with its text under a reference; the client gets `500 internal error` and the
//! reference only, never paths, SQL or panic messages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stocksync_runtime::server::error::Refusal;

use crate::exceptions::ActionError;
use crate::ledger::LedgerError;
use crate::orders::Invalid;
use crate::publish::PublishError;

/// An HTTP error of the collector API.
#[derive(Debug)]
pub struct AppError(pub(crate) Refusal);

impl AppError {
    fn new(status: StatusCode, error: &'static str, field: Option<String>, detail: String) -> Self {
        AppError(Refusal::new(status, error, field, detail))
    }

    /// A malformed query parameter or header (`400`).
    pub fn bad_request(field: &'static str, detail: impl Into<String>) -> AppError {
        Self::new(
            StatusCode::BAD_REQUEST,
            "bad request",
            Some(field.into()),
            detail.into(),
        )
    }

    /// A well-formed request whose `field` is invalid (`422`).
    pub fn unprocessable(field: String, detail: String) -> AppError {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid request",
            Some(field),
            detail,
        )
    }

    /// Nothing is called what `field` names (`404`).
    pub fn not_found(field: &'static str, detail: String) -> AppError {
        Self::new(
            StatusCode::NOT_FOUND,
            "not found",
            Some(field.into()),
            detail,
        )
    }

    /// Ours, not the client's: logged with a reference, answered as `500 internal error`.
    pub fn internal(error: &dyn std::fmt::Display) -> AppError {
        AppError(Refusal::internal("collector", error))
    }

    /// A store that failed or is unreachable: logged with a reference like [`Self::internal`],
    /// answered as `503 store unavailable` (the client may retry).
    pub fn unavailable(error: &dyn std::fmt::Display) -> AppError {
        let mut refusal = Refusal::internal("collector", error);
        refusal.status = StatusCode::SERVICE_UNAVAILABLE;
        refusal.error = "store unavailable";
        AppError(refusal)
    }

    /// The field at fault, if one is.
    #[cfg(test)]
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }
}

impl From<Refusal> for AppError {
    fn from(r: Refusal) -> AppError {
        AppError(r)
    }
}

impl From<LedgerError> for AppError {
    fn from(e: LedgerError) -> AppError {
        AppError::internal(&e)
    }
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> AppError {
        AppError::internal(&e)
    }
}

impl From<Invalid> for AppError {
    fn from(e: Invalid) -> AppError {
        AppError::unprocessable(e.field, e.detail)
    }
}

impl From<PublishError> for AppError {
    fn from(e: PublishError) -> AppError {
        match e {
            PublishError::UnknownChannel(_) => AppError::new(
                StatusCode::NOT_FOUND,
                "not found",
                Some("channel".into()),
                e.to_string(),
            ),
            e => AppError::internal(&e),
        }
    }
}

impl From<ActionError> for AppError {
    fn from(e: ActionError) -> AppError {
        let (status, error, field) = match &e {
            ActionError::NotFound(_) => (StatusCode::NOT_FOUND, "not found", "id"),
            ActionError::NotRetryable { .. } => (StatusCode::CONFLICT, "not retryable", "kind"),
            ActionError::AlreadyInStatus { .. } => (StatusCode::CONFLICT, "conflict", "status"),
            ActionError::Invalid { field, .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid request", *field)
            }
            ActionError::Sqlite(_) | ActionError::Ledger(_) => return AppError::internal(&e),
        };
        AppError::new(status, error, Some(field.into()), e.to_string())
    }
}

/// A PostgreSQL worker's store failure: a database that failed or is unreachable is a `503`
/// the client may retry; its text is logged under the reference, as for `internal`.
#[cfg(feature = "postgres")]
impl From<crate::store::postgres::PgError> for AppError {
    fn from(e: crate::store::postgres::PgError) -> AppError {
        AppError::unavailable(&e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(e: AppError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn a_ledger_failure_is_logged_not_sent() {
        let panic = LedgerError::Panicked("attempt to add with overflow at src/x.rs:1".into());
        let (status, body) = body(panic.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal error");
        assert!(body["reference"].is_string(), "{body}");
        assert!(!body.to_string().contains("overflow"), "{body}");
    }

    #[tokio::test]
    async fn a_store_failure_behind_an_action_is_not_sent_either() {
        let e = ActionError::Sqlite(rusqlite::Error::InvalidQuery);
        let (status, body) = body(e.into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body.to_string().contains("Query"), "{body}");
        let e = ActionError::NotFound("x1".into());
        assert_eq!(body_status(e.into()), StatusCode::NOT_FOUND);
    }

    fn body_status(e: AppError) -> StatusCode {
        e.into_response().status()
    }
}
