//! GS1 EPCIS 2.0 JSON / JSON-LD documents, single events or arrays, from
//! `POST /v1/epcis/events` (and any other path that hands over a document's bytes).
//!
//! A document is processed per event: each is `accepted` (journaled, with its movement
//! ids), `ignored` (no stock meaning, with the reason) or `rejected` (JSON path and reason,
//! kept in the rejects queue). An accepted event is journaled even when a sibling is
//! rejected, and each event is journaled atomically on its own, in document order. The
//! `eventID` is the idempotency key of its movements, so resending a document counts
//! nothing twice; an event without one is keyed by a hash of its content. `decode` reads,
//! `map` applies the bizStep x disposition table, `reverse` answers error declarations,
//! `plan` ties them to `input::validate`, which every input shares.

mod config;
mod decode;
mod items;
mod map;
mod plan;
mod reverse;
mod vocab;

use std::sync::Arc;

use crate::input::{self, ClockRule, Context, InputError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::AppError;
use crate::catalog::CatalogHandle;
use crate::journal::{Journal, JournalError, Reject};
use crate::App;
pub use config::{EpcisConfig, EpcisKind, EpcisRule};
pub use map::default_rules;
use plan::Plan;
use stocksync_runtime::server::error::JsonBytes;

/// Where EPCIS documents are journaled, and under which source.
pub struct EpcisInput<'a> {
    pub journal: &'a Journal,
    pub catalog: &'a CatalogHandle,
    pub warehouse: &'a str,
    pub config: &'a EpcisConfig,
    /// The rejects queue's `source` for refusals of this path (e.g. `epcis:epcis`).
    pub reject_source: String,
    /// The input path recorded in each movement's origin (`epcis`, `scanner:<topic>`, ...).
    pub input: String,
    /// How far ahead of the receiving clock an `eventTime` may be.
    pub clock: ClockRule,
}

/// A document refused as a whole (nothing of it journaled), or a journal failure.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("malformed: {0}")]
    Malformed(InputError),
    #[error("invalid: {0}")]
    Invalid(InputError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// The per-event answer to a document.
#[derive(Debug, serde::Serialize)]
pub struct Answer {
    pub accepted: usize,
    pub ignored: usize,
    pub rejected: usize,
    /// Events not journaled because the journal failed (e.g. full): resend them.
    pub failed: usize,
    pub events: Vec<Value>,
}

impl EpcisInput<'_> {
    /// Processes one document's bytes.
    pub async fn process(&self, body: &[u8]) -> Result<Answer, DocumentError> {
        let doc: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                let error = body_error("$", format!("malformed JSON: {e}"));
                self.reject(error.clone(), body.to_vec()).await?;
                return Err(DocumentError::Malformed(error));
            }
        };
        let events = match decode::events(&doc, self.config.max_events) {
            Ok(e) => e,
            Err(r) => {
                let error = body_error(&r.field, r.detail);
                self.reject(error.clone(), body.to_vec()).await?;
                return Err(DocumentError::Invalid(error));
            }
        };
        let events = self.events(&events).await?;
        let count = |s: &str| events.iter().filter(|a| a["status"] == s).count();
        Ok(Answer {
            accepted: count("accepted"),
            ignored: count("ignored"),
            rejected: count("rejected"),
            failed: count("failed"),
            events,
        })
    }

    async fn reject(&self, error: InputError, payload: Vec<u8>) -> Result<(), JournalError> {
        let source = self.reject_source.clone();
        self.journal
            .reject(Reject {
                source,
                error,
                payload,
            })
            .await
    }

    /// Plans every event, keeps the rejected ones in the rejects queue, journals the rest.
    async fn events(&self, events: &[(String, &Value)]) -> Result<Vec<Value>, JournalError> {
        let catalog = self.catalog.current();
        // This input speaks for its configured source only.
        let sources = [self.config.source.clone()];
        let ctx = Context {
            warehouse: self.warehouse,
            default_source: &self.config.source,
            now: input::now(),
            max_batch: usize::MAX,
            units: &*catalog,
            input: &self.input,
            sources: &sources,
            validated: !catalog.is_open(),
            clock: self.clock,
        };
        let mut rules = self.config.rules.clone();
        rules.extend(default_rules());
        let mut answers = Vec::with_capacity(events.len());
        let (mut appends, mut appended_index) = (Vec::new(), Vec::new());
        for (index, (path, value)) in events.iter().enumerate() {
            let (event_id, plan) = plan::plan(path, value, &rules, &catalog, &ctx);
            let mut answer = json!({"index": index, "event_id": event_id});
            match plan {
                Plan::Ignored(reason) => {
                    answer["status"] = "ignored".into();
                    answer["reason"] = reason.into();
                }
                Plan::Rejected(r) => {
                    let error = InputError {
                        record: Some(index),
                        field: r.field.clone(),
                        detail: r.detail.clone(),
                    };
                    self.reject(error, serde_json::to_vec(value).unwrap_or_default())
                        .await?;
                    answer["status"] = "rejected".into();
                    answer["field"] = r.field.into();
                    answer["detail"] = r.detail.into();
                }
                Plan::Journal {
                    movements,
                    reversals,
                } => {
                    // An error declaration answers with its compensations; the originals it
                    // repeats are counted once whichever arrives first.
                    let shown = &movements[movements.len().saturating_sub(reversals)..];
                    let shown = if reversals > 0 { shown } else { &movements[..] };
                    let ids: Vec<_> = shown.iter().filter_map(|m| m.external_id.clone()).collect();
                    answer["status"] = "accepted".into();
                    answer["movements"] = ids.into();
                    if reversals > 0 {
                        answer["reversed"] = true.into();
                    }
                    appends.push(movements);
                    appended_index.push(index);
                }
            }
            answers.push(answer);
        }
        let results = self.journal.append_each(appends).await?;
        for (index, result) in appended_index.into_iter().zip(results) {
            let answer = &mut answers[index];
            match result {
                Ok(a) => {
                    answer["journaled"] = a.journaled.into();
                    // Every movement seen before: the event (or this declaration) was sent before.
                    answer["duplicate"] = (a.journaled == 0).into();
                    answer["first_seq"] = a.first_seq.into();
                    answer["last_seq"] = a.last_seq.into();
                }
                // The event's id was journaled before for other content: a conflict, kept.
                Err(JournalError::IdReused { detail, .. }) => {
                    let (path, value) = &events[index];
                    let field = format!("{path}.eventID");
                    answer["status"] = "rejected".into();
                    answer["field"] = field.clone().into();
                    answer["detail"] = detail.clone().into();
                    let error = InputError {
                        record: Some(index),
                        field,
                        detail,
                    };
                    self.reject(error, serde_json::to_vec(value).unwrap_or_default())
                        .await?;
                }
                Err(e) => {
                    answer["status"] = "failed".into();
                    answer["detail"] = e.to_string().into();
                }
            }
        }
        Ok(answers)
    }
}

/// The handler of `POST /v1/epcis/events`: 202 when every event is accepted or ignored,
/// 207 when some are rejected, 422 when all are, 503 when the journal failed.
#[utoipa::path(post, path = "/v1/epcis/events", tag = "movements",
    request_body(content = serde_json::Value, content_type = "application/json", description = "An EPCIS 2.0 document or event list"),
    responses(
        (status = 202, description = "Every event accepted or ignored", body = serde_json::Value),
        (status = 207, description = "Some events rejected", body = serde_json::Value),
        (status = 415, description = "Not JSON", body = crate::ingest::openapi::ErrorBody),
        (status = 422, description = "Every event rejected", body = serde_json::Value),
        (status = 503, description = "The journal failed", body = crate::ingest::openapi::ErrorBody)))]
pub async fn post_events(
    State(app): State<Arc<App>>,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AppError> {
    let input = EpcisInput {
        journal: &app.journal,
        catalog: &app.catalog,
        warehouse: &app.config.warehouse,
        config: &app.config.epcis,
        reject_source: format!("epcis:{}", app.config.epcis.source),
        input: "epcis".into(),
        clock: crate::clock_rule(&app.config),
    };
    let answer = match input.process(&body).await {
        Ok(a) => a,
        Err(DocumentError::Malformed(e)) => {
            return Err(AppError::Input(StatusCode::BAD_REQUEST, e))
        }
        Err(DocumentError::Invalid(e)) => {
            return Err(AppError::Input(StatusCode::UNPROCESSABLE_ENTITY, e))
        }
        Err(DocumentError::Journal(e)) => return Err(AppError::Journal(e)),
    };
    let status = match (answer.rejected, answer.failed) {
        (_, f) if f > 0 => StatusCode::SERVICE_UNAVAILABLE,
        (0, _) => StatusCode::ACCEPTED,
        (r, _) if r == answer.events.len() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::MULTI_STATUS,
    };
    Ok((status, Json(answer)).into_response())
}

fn body_error(field: &str, detail: impl Into<String>) -> InputError {
    InputError {
        record: None,
        field: field.to_string(),
        detail: detail.into(),
    }
}
