//! `/v1/channels...` on a PostgreSQL worker: each channel's description, its sellable feed
//! (snapshot, or changes since a cursor) and its error queue, read from the channel tables
//! every worker shares, in the same JSON as the SQLite collector's. The per-target delivery
//! figures (`targets`) are those of this worker, so only the publisher's are non-empty. The
//! mode switch writes the shared mode (`channels::mode`), which the publisher applies from
//! its next pass wherever it runs; the SSE stream (`stream`) follows the shared change log.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use stocksync_runtime::server::error::{Params, Path};

use super::super::channels::log::PgLog;
use super::PgApp;
use crate::api::body::JsonBody;
use crate::api::channels::{FeedQuery, ModeRequest};
use crate::api::AppError;
use crate::publish::store::Published;
use crate::publish::Channel;
use tokio::sync::watch;

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
            let (latest, cursor, changes) = log.changes_since(&name, since, limit).await?;
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

/// `GET /v1/channels/<channel>/sellable/stream`, as on SQLite: Server-Sent Events, one
/// `sellable` event per change with the cursor as event id; resumes after `Last-Event-ID` or
/// `?since=`, else starts from now. Served by any worker from the shared change log: the
/// worker's cursor watch follows the log (`channels::follow`), and each wake reads the
/// changes after the last cursor sent, in cursor (= commit) order, so no value is sent out
/// of order or skipped.
pub async fn stream(
    State(app): State<Arc<PgApp>>,
    Path(name): Path<String>,
    Params(q): Params<FeedQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let channel = app.channels.channel(&name)?.clone();
    let resume = crate::api::channels::resume_after(&headers, q.since);
    let log = app.channels.log.clone();
    let since = match resume {
        Some(s) => s,
        None => log.describe(&name).await?.0,
    };
    let follow = Follow {
        log,
        name,
        since,
        wake: channel.cursor.subscribe(),
        stop: app.shutdown.clone(),
        queue: VecDeque::new(),
    };
    let events = futures_util::stream::unfold(follow, |mut f| async move {
        let item = f.next().await?;
        let event = Event::default()
            .event("sellable")
            .id(item.cursor.to_string())
            .json_data(&item)
            .unwrap_or_default();
        Some((Ok::<_, Infallible>(event), f))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// One SSE client's place in the change log.
struct Follow {
    log: PgLog,
    name: String,
    since: i64,
    wake: watch::Receiver<i64>,
    stop: watch::Receiver<bool>,
    queue: VecDeque<Published>,
}

impl Follow {
    /// The next change to send; `None` ends the stream (shutdown, or the log unreadable).
    async fn next(&mut self) -> Option<Published> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Some(item);
            }
            self.wake.borrow_and_update();
            let (_, next, items) = self
                .log
                .changes_since(&self.name, self.since, 500)
                .await
                .ok()?;
            self.since = next;
            if items.is_empty() {
                tokio::select! {
                    r = self.wake.changed() => r.ok()?,
                    _ = self.stop.wait_for(|stopping| *stopping) => return None,
                }
            }
            self.queue.extend(items);
        }
    }
}
