//! `/v1/exceptions`: the operator's queue. `GET` lists (filters `kind`, `status`,
//! `warehouse`, `channel`, `sku`; `limit`/`offset` paging) and shows one exception with its
//! records and log; `POST /v1/exceptions/<id>/{resolve,ignore,reopen,comment}` with
//! `{by, comment}` acts on one (`retry` processes its refused records again),
//! `POST /v1/exceptions/{retry,resolve,ignore,reopen}` with
//! `{by, comment, filter}` on every exception the filter selects.
//!
//! Every read first folds the stores' newest records into the queue, so what an operator
//! sees is never behind what the stores hold.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::body::JsonBody;
use super::Path;
use super::{AppError, Params};
use crate::auth::{self, Principal};
use crate::exceptions::{self, Action, Filter, Page, Request};
use crate::ledger::Ledger;
use crate::App;

fn now() -> i64 {
    stocksync_common::OccurredAt::now().unix_ms
}

/// Folds the stores' newest records into the queue.
pub async fn sync(ledger: &Ledger) -> Result<(), AppError> {
    let t = now();
    ledger.write(move |tx, _| exceptions::sync(tx, t)).await?;
    Ok(())
}

/// The list's query: the filter's fields and paging. Spelled out, not flattened, so that an
/// unknown key is refused (serde cannot deny unknown fields through a flatten).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    kind: Option<String>,
    status: Option<String>,
    warehouse: Option<String>,
    channel: Option<String>,
    sku: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

impl ListQuery {
    /// The filter and the page asked for (limit 1..=1000, default 100), on every backend.
    pub fn into_parts(self) -> (Filter, Page) {
        let filter = Filter {
            kind: self.kind,
            status: self.status,
            warehouse: self.warehouse,
            channel: self.channel,
            sku: self.sku,
        };
        let page = Page {
            limit: self.limit.unwrap_or(100).clamp(1, 1000),
            offset: self.offset.unwrap_or(0).max(0),
        };
        (filter, page)
    }
}

fn where_sql(filter: &Filter) -> Result<(String, Vec<rusqlite::types::Value>), AppError> {
    filter
        .to_sql()
        .map_err(|(field, detail)| AppError::bad_request(field, detail))
}

/// `GET /v1/exceptions`: `{total, limit, offset, items}`, newest last seen first.
#[utoipa::path(
    get,
    path = "/v1/exceptions",
    tag = "exceptions",
    summary = "The exception queue",
    params(ListQuery),
    responses(
        (status = 200, description = "{total, limit, offset, items}", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    let (filter, page) = q.into_parts();
    let cond = where_sql(&filter)?;
    sync(&app.ledger).await?;
    let (total, items) = app.ledger.read(|c| exceptions::list(c, &cond, page))?;
    Ok(page_json(total, page, items))
}

/// A page of the queue: `{total, limit, offset, items}`, on every backend.
pub fn page_json(total: i64, page: Page, items: Vec<serde_json::Value>) -> Response {
    Json(json!({"total": total, "limit": page.limit, "offset": page.offset, "items": items}))
        .into_response()
}

/// `GET /v1/exceptions/<id>`.
#[utoipa::path(
    get,
    path = "/v1/exceptions/{id}",
    tag = "exceptions",
    summary = "One exception",
    params(("id" = String, Path, description = "An exception id")),
    responses(
        (status = 200, description = "The exception with its records and log", body = serde_json::Value),
        (status = 404, description = "No such exception", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn one(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    sync(&app.ledger).await?;
    let e = app.ledger.read(|c| exceptions::get(c, &id))?;
    match e {
        Some(e) => Ok(Json(e).into_response()),
        None => Err(AppError::not_found("id", format!("no exception `{id}`"))),
    }
}

/// The action `name` names, or a 404 listing the known ones, on every backend.
pub(crate) fn action(name: &str) -> Result<Action, AppError> {
    Action::parse(name).ok_or_else(|| {
        AppError::not_found(
            "action",
            format!("no action `{name}` (known: retry, resolve, ignore, reopen, comment)"),
        )
    })
}

/// `POST /v1/exceptions/<id>/<action>` `{by, comment}`. With API tokens configured, the
/// action is recorded as the token's name, whatever `by` says.
#[utoipa::path(
    post,
    path = "/v1/exceptions/{id}/{action}",
    tag = "exceptions",
    summary = "Act on one exception",
    params(("id" = String, Path, description = "An exception id"), ("action" = String, Path, description = "retry, resolve, ignore, reopen or comment")),
    request_body = Request,
    responses(
        (status = 200, description = "The status afterwards (retry: a Retry)", body = serde_json::Value),
        (status = 404, description = "No such exception or action", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Already in that status, or cannot be retried", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn act(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    Path((id, name)): Path<(String, String)>,
    JsonBody(mut req): JsonBody<Request>,
) -> Result<Response, AppError> {
    if name == "retry" {
        return retry(app, principal, id, req).await;
    }
    let action = action(&name)?;
    req.by = auth::by(principal.as_deref(), &req.by);
    sync(&app.ledger).await?;
    let t = now();
    let status = app
        .ledger
        .write({
            let id = id.clone();
            move |tx, _| Ok(exceptions::act(tx, &id, action, &req, t))
        })
        .await??;
    Ok(Json(json!({"id": id, "status": status})).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    pub(crate) by: String,
    pub(crate) comment: String,
    pub(crate) filter: Filter,
}

/// `POST /v1/exceptions/<action>` `{by, comment, filter}`: `{changed, ids}`; `by` as in [`act`].
#[utoipa::path(
    post,
    path = "/v1/exceptions/{id}",
    tag = "exceptions",
    summary = "Act on every exception a filter selects",
    params(("id" = String, Path, description = "The action for every exception the filter selects: retry, resolve, ignore, reopen")),
    request_body = BulkRequest,
    responses(
        (status = 200, description = "{changed, ids} (retry: {changed, retried, skipped})", body = serde_json::Value),
        (status = 404, description = "No such action", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn bulk(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<BulkRequest>,
) -> Result<Response, AppError> {
    let action = (name != "retry").then(|| action(&name)).transpose()?;
    let cond = where_sql(&req.filter)?;
    sync(&app.ledger).await?;
    let t = now();
    let who = Request {
        by: auth::by(principal.as_deref(), &req.by),
        comment: req.comment,
    };
    let Some(action) = action else {
        let (retried, skipped) =
            exceptions::retry_by_filter((&app.ledger, &app.agent_commands), cond, who, now).await?;
        return Ok(bulk_retried(retried, skipped));
    };
    let ids = app
        .ledger
        .write(move |tx, _| Ok(exceptions::act_by_filter(tx, &cond, action, &who, t)))
        .await??;
    Ok(bulk_acted(ids))
}

/// The answer of a bulk retry, on every backend.
pub(crate) fn bulk_retried(
    retried: Vec<exceptions::Retry>,
    skipped: Vec<(String, String)>,
) -> Response {
    let skipped: Vec<_> = skipped
        .into_iter()
        .map(|(id, why)| json!({"id": id, "why": why}))
        .collect();
    Json(json!({"changed": retried.len(), "retried": retried, "skipped": skipped})).into_response()
}

/// The answer of a bulk action, on every backend.
pub(crate) fn bulk_acted(ids: Vec<String>) -> Response {
    Json(json!({"changed": ids.len(), "ids": ids})).into_response()
}

/// `POST /v1/exceptions/<id>/retry` `{by, comment}`: processes the exception's refused
/// records again (exactly once each); answers the exception's status afterwards, `attempts`
/// and, if still refused, the new reason. A kind that cannot be retried answers `409`.
async fn retry(
    app: Arc<App>,
    principal: Option<axum::Extension<Principal>>,
    id: String,
    mut req: Request,
) -> Result<Response, AppError> {
    req.by = auth::by(principal.as_deref(), &req.by);
    sync(&app.ledger).await?;
    let done = exceptions::retry((&app.ledger, &app.agent_commands), &id, req, now).await?;
    // An agent's reject: the command is sent, the agent's answer settles it later.
    let status = if done.status == "retrying" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(done)).into_response())
}
