//! `/v1/channels...` on a PostgreSQL worker: each channel's description, its sellable feed
//! (snapshot, or changes since a cursor) and its error queue, read from the channel tables
//! every worker shares, in the same JSON as the SQLite collector's. The per-target delivery
//! figures (`targets`) are those of this worker, so only the publisher's are non-empty. The
//! mode switch writes the shared mode (`channels::mode`), which the publisher applies from
//! its next pass wherever it runs; the SSE stream (`stream`) follows the shared change log.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use stocksync_runtime::server::error::{Params, Path};

use super::PgApp;
use crate::api::body::JsonBody;
use crate::api::channels::{FeedQuery, ModeRequest};
use crate::api::AppError;
use crate::publish::Channel;

async fn describe(app: &PgApp, channel: &Channel) -> Result<serde_json::Value, AppError> {
    let (latest, open_errors) = app.channels.log.describe(&channel.name).await?;
    Ok(json!({
        "name": channel.name,
        "state": app.channels.mode_of(channel).await?,
        "cursor": latest,
        "open_errors": open_errors,
        "targets": app.channels.stats.of_channel(&channel.name),
    }))
}

/// `GET /v1/channels`.
pub async fn list(State(app): State<Arc<PgApp>>) -> Result<Response, AppError> {
    let mut out = Vec::new();
    for channel in app.channels.channels.values() {
        out.push(describe(&app, channel).await?);
    }
    Ok(Json(out).into_response())
}

/// `GET /v1/channels/<channel>`.
pub async fn one(
    State(app): State<Arc<PgApp>>,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let channel = app.channels.channel(&name)?.clone();
    Ok(Json(describe(&app, &channel).await?).into_response())
}

/// `GET /v1/channels/<channel>/sellable[?since=<cursor>&limit=n]`.
pub async fn sellable(
    State(app): State<Arc<PgApp>>,
    Path(name): Path<String>,
    Params(q): Params<FeedQuery>,
) -> Result<Response, AppError> {
    let channel = app.channels.channel(&name)?.clone();
    let log = &app.channels.log;
    let mode = app.channels.mode_of(&channel).await?.mode;
    match q.since {
        None => {
            let (cursor, items) = log.snapshot(&name).await?;
            Ok(
                Json(json!({"channel": name, "cursor": cursor, "mode": mode, "items": items}))
                    .into_response(),
            )
        }
        Some(since) if since < 0 => Err(AppError::bad_request("since", "a cursor is >= 0")),
        Some(since) => {
            let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
            let (cursor, changes) = log.changes_since(&name, since, limit).await?;
            let (latest, _) = log.describe(&name).await?;
            Ok(Json(
                json!({"channel": name, "cursor": cursor, "more": cursor < latest,
                       "mode": mode, "changes": changes}),
            )
            .into_response())
        }
    }
}

/// `PUT /v1/channels/<channel>/mode`, as on SQLite: recorded as made by the token's name,
/// or by `set_by` when the API is open.
pub async fn set_mode(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ModeRequest>,
) -> Result<Response, AppError> {
    let by = match principal {
        Some(p) => p.name().to_string(),
        None => req.set_by.unwrap_or_else(|| "api".into()),
    };
    let state = app
        .channels
        .set_mode(&name, req.mode, by, req.reason)
        .await?;
    Ok(Json(json!({"channel": name, "state": state})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<i64>,
}

/// `GET /v1/channels/<channel>/errors`: the error queue, open errors first.
pub async fn errors(
    State(app): State<Arc<PgApp>>,
    Path(name): Path<String>,
    Params(q): Params<Limit>,
) -> Result<Response, AppError> {
    app.channels.channel(&name)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(app.channels.log.errors(&name, limit).await?).into_response())
}
