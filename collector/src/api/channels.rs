//! `/v1/channels/...`: each channel's sellable feed (full, changes since a cursor, and an
//! SSE stream of changes), its state and rollback switch, and its error queue.
//!
//! Invariant: a cursor handed out here is a `channel_changes` key, so `?since=<cursor>` after
//! any restart returns exactly the changes the caller has not seen.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use crate::publish::ChannelMode;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::body::JsonBody;
use super::Path;
use super::{AppError, Params};
use crate::publish::store::{self, Published};
use crate::publish::Channel;
use crate::App;

async fn describe(app: &App, channel: &Channel) -> Result<serde_json::Value, AppError> {
    let name = channel.name.clone();
    let (latest, open_errors) = app
        .channels
        .store
        .read(move |c| {
            let latest = store::latest_cursor(c, &name)?;
            let open: i64 = c.query_row(
                "SELECT count(*) FROM channel_errors WHERE channel = ?1 AND resolved_at_ms IS NULL",
                [&name],
                |r| r.get(0),
            )?;
            Ok((latest, open))
        })
        .await?;
    Ok(json!({
        "name": channel.name,
        "state": channel.mode(),
        "cursor": latest,
        "open_errors": open_errors,
        "targets": app.channels.stats.of_channel(&channel.name),
    }))
}

/// `GET /v1/channels`: every channel's mode, cursor, targets and open errors.
#[utoipa::path(
    get,
    path = "/v1/channels",
    tag = "channels",
    summary = "Every channel with its state and targets",
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
    ),
)]
pub async fn list(State(app): State<Arc<App>>) -> Result<Response, AppError> {
    let mut out = Vec::new();
    for channel in app.channels.channels.values() {
        out.push(describe(&app, channel).await?);
    }
    Ok(Json(out).into_response())
}

/// `GET /v1/channels/<channel>`.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}",
    tag = "channels",
    summary = "One channel",
    params(("channel" = String, Path)),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn one(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Response, AppError> {
    let channel = app.channels.channel(&name)?.clone();
    Ok(Json(describe(&app, &channel).await?).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    pub(crate) since: Option<i64>,
    pub(crate) limit: Option<usize>,
}

/// `GET /v1/channels/<channel>/sellable[?since=<cursor>&limit=n]`.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/sellable",
    tag = "channels",
    summary = "A channel's sellable feed",
    params(("channel" = String, Path), FeedQuery),
    responses(
        (status = 200, description = "Sellable stock after the cursor", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn sellable(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(q): Params<FeedQuery>,
) -> Result<Response, AppError> {
    let channel = app.channels.channel(&name)?.clone();
    let n = channel.name.clone();
    match q.since {
        None => {
            let (cursor, items) = app
                .channels
                .store
                .read(move |c| store::snapshot(c, &n))
                .await?;
            Ok(Json(json!({"channel": name, "cursor": cursor, "mode": channel.mode().mode, "items": items}))
                .into_response())
        }
        Some(since) if since < 0 => Err(AppError::bad_request("since", "a cursor is >= 0")),
        Some(since) => {
            let limit = q.limit.unwrap_or(1000).clamp(1, 10_000);
            let (cursor, changes, latest) = app
                .channels
                .store
                .read(move |c| {
                    let (cursor, changes) = store::changes_since(c, &n, since, limit)?;
                    Ok((cursor, changes, store::latest_cursor(c, &n)?))
                })
                .await?;
            Ok(Json(
                json!({"channel": name, "cursor": cursor, "more": cursor < latest,
                           "mode": channel.mode().mode, "changes": changes}),
            )
            .into_response())
        }
    }
}

/// `GET /v1/channels/<channel>/sellable/stream`: Server-Sent Events, one `sellable` event
/// per change with the cursor as event id; resumes after `Last-Event-ID` or `?since=`, else
/// starts from now.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/sellable/stream",
    tag = "channels",
    summary = "A channel's sellable feed as Server-Sent Events",
    params(("channel" = String, Path), FeedQuery),
    responses(
        (status = 200, description = "Server-Sent Events, one `sellable` event per change", content_type = "text/event-stream"),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn stream(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(q): Params<FeedQuery>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let channel = app.channels.channel(&name)?.clone();
    let resume = resume_after(&headers, q.since);
    let store = app.channels.store.clone();
    let since = match resume {
        Some(s) => s,
        None => {
            let n = name.clone();
            store.read(move |c| store::latest_cursor(c, &n)).await?
        }
    };
    let wake = channel.cursor.subscribe();
    let stop = app.shutdown.clone();
    let state = (
        store,
        name,
        since,
        (wake, stop),
        VecDeque::<Published>::new(),
    );
    let events = futures_util::stream::unfold(
        state,
        |(store, name, mut since, (mut wake, mut stop), mut queue)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    let event = Event::default()
                        .event("sellable")
                        .id(item.cursor.to_string())
                        .json_data(&item)
                        .unwrap_or_default();
                    return Some((
                        Ok::<_, Infallible>(event),
                        (store, name, since, (wake, stop), queue),
                    ));
                }
                wake.borrow_and_update();
                let n = name.clone();
                let (next, items) = store
                    .read(move |c| store::changes_since(c, &n, since, 500))
                    .await
                    .ok()?;
                since = next;
                if items.is_empty() {
                    tokio::select! {
                        r = wake.changed() => r.ok()?,
                        _ = stop.wait_for(|stopping| *stopping) => return None,
                    }
                }
                queue.extend(items);
            }
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    pub(crate) mode: ChannelMode,
    pub(crate) reason: Option<String>,
    pub(crate) set_by: Option<String>,
}

/// `PUT /v1/channels/<channel>/mode` `{"mode": "live"|"frozen"|"zero", "reason": ..}`.
/// With tokens configured the change is recorded as made by the token's name; `set_by` in
/// the body is only used when the API is open.
#[utoipa::path(
    put,
    path = "/v1/channels/{channel}/mode",
    tag = "channels",
    summary = "Freeze, zero or unfreeze a channel",
    params(("channel" = String, Path)),
    request_body(content = serde_json::Value, description = "{mode: live | frozen | zero, reason, set_by}"),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn set_mode(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<crate::auth::Principal>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<ModeRequest>,
) -> Result<Response, AppError> {
    let state = app
        .channels
        .set_mode(
            &name,
            req.mode,
            match principal {
                Some(p) => p.name().to_string(),
                None => req.set_by.unwrap_or_else(|| "api".into()),
            },
            req.reason,
        )
        .await?;
    Ok(Json(json!({"channel": name, "state": state})).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    limit: Option<i64>,
}

/// `GET /v1/channels/<channel>/errors`: the error queue, open errors first.
#[utoipa::path(
    get,
    path = "/v1/channels/{channel}/errors",
    tag = "channels",
    summary = "A channel's error queue",
    params(("channel" = String, Path), Limit),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
        (status = 404, description = "No such channel", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn errors(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Params(q): Params<Limit>,
) -> Result<Response, AppError> {
    app.channels.channel(&name)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = app
        .channels
        .store
        .read(move |c| store::errors(c, &name, limit))
        .await?;
    Ok(Json(rows).into_response())
}

/// Where an SSE stream resumes: after `Last-Event-ID` (a reconnecting browser sends the last
/// cursor it saw), else after `?since=`; `None` starts from now.
pub(crate) fn resume_after(headers: &HeaderMap, since: Option<i64>) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .or(since)
}
