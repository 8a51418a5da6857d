//! `POST /v1/epcis/events`: GS1 EPCIS 2.0 JSON / JSON-LD documents, single events or arrays.
//!
//! A document is processed per event: each is `accepted` (journaled, with its movement
//! ids), `ignored` (no stock meaning, with the reason) or `rejected` (JSON path and reason,
//! kept in the rejects queue). An accepted event is journaled even when a sibling is
//! rejected, and each event is journaled atomically on its own. The `eventID` is the
//! idempotency key of its movements, so resending a document counts nothing twice; an
//! event without one is keyed by a hash of its content. `decode` reads, `map` applies the
//! bizStep x disposition table, `reverse` answers error declarations; the records then go
//! through `input::validate` like every other input.

mod decode;
mod map;
mod reverse;
mod vocab;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stocksync_common::input::{self, Context, InputError, MAX_ID_LEN};
use stocksync_common::inputs::EpcisRule;
use stocksync_common::Movement;
use tokio::task::JoinSet;

use super::http::ApiError;
use crate::journal::{JournalError, Reject};
use crate::App;
use decode::{refuse, Refusal};
use map::{Draft, Mapped};

pub use map::default_rules;

/// What became of one event before journaling.
enum Plan {
    Ignored(String),
    Rejected(Refusal),
    Journal {
        movements: Vec<Movement>,
        /// How many of `movements` are compensations of an error declaration.
        reversals: usize,
    },
}

/// The handler of `POST /v1/epcis/events`.
pub async fn post_events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(essence.as_str(), "application/json" | "application/ld+json") {
        let e = body_error(
            "content-type",
            format!("`{content_type}` is not application/json or application/ld+json"),
        );
        return Err(ApiError::Input(StatusCode::UNSUPPORTED_MEDIA_TYPE, e));
    }
    let doc: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return refuse_body(
                &app,
                &body,
                StatusCode::BAD_REQUEST,
                body_error("$", format!("malformed JSON: {e}")),
            )
            .await
        }
    };
    let events = match decode::events(&doc, app.config.epcis.max_events) {
        Ok(e) => e,
        Err(r) => {
            return refuse_body(
                &app,
                &body,
                StatusCode::UNPROCESSABLE_ENTITY,
                body_error(&r.field, r.detail),
            )
            .await
        }
    };
    let answers = process(&app, &events).await?;
    let rejected = answers.iter().filter(|a| a["status"] == "rejected").count();
    let failed = answers.iter().filter(|a| a["status"] == "failed").count();
    let status = match (rejected, failed) {
        (_, f) if f > 0 => StatusCode::SERVICE_UNAVAILABLE,
        (0, _) => StatusCode::ACCEPTED,
        (r, _) if r == answers.len() => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::MULTI_STATUS,
    };
    let count = |s: &str| answers.iter().filter(|a| a["status"] == s).count();
    let body = json!({
        "accepted": count("accepted"),
        "ignored": count("ignored"),
        "rejected": rejected,
        "failed": failed,
        "events": answers,
    });
    Ok((status, Json(body)).into_response())
}

/// Plans every event, keeps the rejected ones in the rejects queue, journals the rest
/// (concurrently, so the journal's group commit folds them into few transactions).
async fn process(app: &Arc<App>, events: &[(String, &Value)]) -> Result<Vec<Value>, ApiError> {
    let catalog = app.catalog.current();
    // This input speaks for its configured source only.
    let sources = [app.config.epcis.source.clone()];
    let ctx = Context {
        warehouse: &app.config.warehouse,
        default_source: &app.config.epcis.source,
        now: input::now(),
        max_batch: usize::MAX,
        units: &*catalog,
        input: "epcis",
        sources: &sources,
        validated: !catalog.is_open(),
        clock: crate::clock_rule(&app.config),
    };
    let mut rules = app.config.epcis.rules.clone();
    rules.extend(default_rules());
    let mut answers = Vec::with_capacity(events.len());
    let mut appends = JoinSet::new();
    for (index, (path, value)) in events.iter().enumerate() {
        let (event_id, plan) = plan(path, value, &rules, &catalog, &ctx);
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
                let payload = serde_json::to_vec(value).unwrap_or_default();
                let reject = Reject {
                    source: format!("epcis:{}", app.config.epcis.source),
                    error,
                    payload,
                };
                app.journal
                    .reject(reject)
                    .await
                    .map_err(ApiError::Journal)?;
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
                let shown = &movements[if reversals > 0 {
                    movements.len() - reversals
                } else {
                    0
                }..];
                let ids: Vec<_> = shown.iter().filter_map(|m| m.external_id.clone()).collect();
                answer["status"] = "accepted".into();
                answer["movements"] = ids.into();
                if reversals > 0 {
                    answer["reversed"] = true.into();
                }
                let journal = app.journal.clone();
                appends.spawn(async move { (index, journal.append(movements, None).await) });
            }
        }
        answers.push(answer);
    }
    while let Some(done) = appends.join_next().await {
        let (index, result) = done.map_err(|_| ApiError::Journal(JournalError::Closed))?;
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
                let error = InputError {
                    record: Some(index),
                    field: format!("{path}.eventID"),
                    detail,
                };
                answer["status"] = "rejected".into();
                answer["field"] = error.field.clone().into();
                answer["detail"] = error.detail.clone().into();
                let reject = Reject {
                    source: format!("epcis:{}", app.config.epcis.source),
                    error,
                    payload: serde_json::to_vec(value).unwrap_or_default(),
                };
                app.journal
                    .reject(reject)
                    .await
                    .map_err(ApiError::Journal)?;
            }
            Err(e) => {
                answer["status"] = "failed".into();
                answer["detail"] = e.to_string().into();
            }
        }
    }
    Ok(answers)
}

/// Decodes, maps and validates one event; returns its eventID (or content id) and plan.
fn plan(
    path: &str,
    value: &Value,
    rules: &[EpcisRule],
    catalog: &stocksync_common::catalog::Catalog,
    ctx: &Context<'_>,
) -> (Option<String>, Plan) {
    let event = match decode::event(path, value) {
        Ok(e) => e,
        Err(r) => {
            let id = value
                .get("eventID")
                .and_then(Value::as_str)
                .map(str::to_string);
            return (id, Plan::Rejected(r));
        }
    };
    let base = id_base(event.event_id.as_deref(), value);
    let plan = (|| {
        if event.error_declaration.is_some() && event.event_id.is_none() {
            return Err(refuse(
                format!("{path}.eventID"),
                "an errorDeclaration names the event it corrects by its eventID",
            ));
        }
        let drafts = match map::map(&event, rules, catalog, ctx.default_source, &base)? {
            Mapped::Ignored(reason) => return Ok(Plan::Ignored(reason)),
            Mapped::Drafts(d) => d,
        };
        let reversal = match (&event.error_declaration, &event.event_id) {
            (Some(reason), Some(id)) => {
                reverse::compensations(&drafts, path, id, reason.as_deref())?
            }
            _ => Vec::new(),
        };
        let reversals = reversal.len();
        let movements = drafts
            .into_iter()
            .chain(reversal)
            .map(|d| validate(d, &event, ctx))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan::Journal {
            movements,
            reversals,
        })
    })();
    (
        event.event_id.clone().or(Some(base)),
        plan.unwrap_or_else(Plan::Rejected),
    )
}

/// `input::validate`, with its field names turned into the event's JSON paths.
fn validate(d: Draft, event: &decode::Event, ctx: &Context<'_>) -> Result<Movement, Refusal> {
    input::validate(d.input, ctx).map_err(|(field, detail)| {
        let path = match field {
            "sku" => d.sku_path.clone(),
            "quantity" => d.quantity_path.clone(),
            "unit" => d.unit_path.clone(),
            "warehouse" | "bin" => event
                .location
                .as_ref()
                .map_or_else(|| format!("{}.bizLocation", event.path), |(p, _)| p.clone()),
            "occurred_at" => format!("{}.eventTime", event.path),
            "order" | "transfer" | "return" | "peer_warehouse" => {
                format!("{}.bizTransactionList", event.path)
            }
            "id" => format!("{}.eventID", event.path),
            _ => event.path.clone(),
        };
        refuse(path, detail)
    })
}

/// The id an event's movements are numbered under (`<base>:<n>`): the eventID when it is a
/// valid movement id with room for the suffixes, else a hash of it, else a hash of the
/// event's content.
fn id_base(event_id: Option<&str>, value: &Value) -> String {
    let hash = |bytes: &[u8]| {
        let digest = Sha256::digest(bytes);
        digest[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    match event_id {
        Some(id)
            if id.len() <= MAX_ID_LEN - 8
                && !id.chars().any(|c| c.is_control() || "/+#".contains(c)) =>
        {
            id.to_string()
        }
        Some(id) => format!("h:{}", hash(id.as_bytes())),
        None => format!("c:{}", hash(&serde_json::to_vec(value).unwrap_or_default())),
    }
}

fn body_error(field: &str, detail: impl Into<String>) -> InputError {
    InputError {
        record: None,
        field: field.to_string(),
        detail: detail.into(),
    }
}

async fn refuse_body(
    app: &App,
    body: &[u8],
    status: StatusCode,
    error: InputError,
) -> Result<Response, ApiError> {
    let reject = Reject {
        source: format!("epcis:{}", app.config.epcis.source),
        error: error.clone(),
        payload: body.to_vec(),
    };
    app.journal
        .reject(reject)
        .await
        .map_err(ApiError::Journal)?;
    Err(ApiError::Input(status, error))
}
