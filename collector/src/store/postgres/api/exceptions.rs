//! `GET /v1/exceptions` and `GET /v1/exceptions/<id>` from any worker: the SQLite
//! collector's queue, query and JSON (`crate::api::exceptions`), folded and read from the
//! shared database. Every read folds the stores' newest records first, as on SQLite.
//! `POST /v1/rejects/<id>/retry` applies a refused movement once the catalog has its SKU,
//! exactly once, and `POST /v1/exceptions/<id>/retry` does that for every record of an
//! exception of collector rejects; `resolve`, `ignore`, `reopen` and `comment` act on one
//! exception as on SQLite, and `POST /v1/exceptions/<action>` `{by, comment, filter}` on
//! every exception a filter selects (each exception in its own transaction).

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::PgApp;
use crate::api::body::JsonBody;
use crate::api::exceptions::{bulk_acted, bulk_retried, page_json, BulkRequest, ListQuery};
use crate::api::{AppError, Params, Path};
use crate::auth::{self, Principal};
use crate::exceptions::Request;
use crate::store::postgres::{exception_actions, exceptions, now_ms, PgError, Pool};

/// Folds the stores' newest records into the queue, in its own transaction.
async fn sync(pool: &Pool) -> Result<(), PgError> {
    let mut conn = pool.get().await?;
    let prepared = conn.prepared();
    let tx = conn.transaction().await?;
    exceptions::sync(&tx, &prepared, now_ms()).await?;
    tx.commit().await?;
    Ok(())
}

/// `GET /v1/exceptions`: `{total, limit, offset, items}`, newest last seen first.
pub async fn list(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    let (filter, page) = q.into_parts();
    let conds = filter
        .conditions()
        .map_err(|(field, detail)| AppError::bad_request(field, detail))?;
    sync(&app.pool).await?;
    let conn = app.pool.get().await.map_err(PgError::from)?;
    let (total, items) = exceptions::list(&*conn, &conds, page).await?;
    Ok(page_json(total, page, items))
}

/// `GET /v1/exceptions/<id>`: the exception with its records and log.
pub async fn one(
    State(app): State<Arc<PgApp>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    sync(&app.pool).await?;
    let conn = app.pool.get().await.map_err(PgError::from)?;
    match exceptions::get(&*conn, &id).await? {
        Some(e) => Ok(Json(e).into_response()),
        None => Err(AppError::not_found("id", format!("no exception `{id}`"))),
    }
}

/// `POST /v1/rejects/<id>/retry`: the SQLite collector's answer (`applied`,
/// `already_applied`, or 422 with the reason it is still refused).
pub async fn retry_reject(
    State(app): State<Arc<PgApp>>,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    crate::api::retried(id, app.store.retry_reject(id).await?)
}

/// `POST /v1/exceptions/<id>/<action>` `{by, comment}`: `retry` answers as on SQLite (the
/// exception's status afterwards, its attempts, what was applied, why not); `resolve`,
/// `ignore`, `reopen` and `comment` answer `{id, status}`. With API tokens configured the
/// action is recorded as the token's name, whatever `by` says.
pub async fn act(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    Path((id, name)): Path<(String, String)>,
    JsonBody(mut req): JsonBody<Request>,
) -> Result<Response, AppError> {
    req.by = auth::by(principal.as_deref(), &req.by);
    if name == "retry" {
        sync(&app.pool).await?;
        let with = (&app.store, &app.commands);
        let done = exception_actions::retry(with, &app.pool, &id, &req).await??;
        // An agent's reject: the command is sent, the agent's answer settles it later.
        let status = if done.status == "retrying" {
            axum::http::StatusCode::ACCEPTED
        } else {
            axum::http::StatusCode::OK
        };
        return Ok((status, Json(done)).into_response());
    }
    let action = crate::api::exceptions::action(&name)?;
    sync(&app.pool).await?;
    let status = exception_actions::act(&app.pool, &id, action, &req).await??;
    Ok(Json(json!({"id": id, "status": status})).into_response())
}

/// `POST /v1/exceptions/<action>` `{by, comment, filter}`: `{changed, ids}`, or for `retry`
/// `{changed, retried, skipped}`, as on SQLite; `by` as in [`act`].
pub async fn bulk(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    Path(name): Path<String>,
    JsonBody(req): JsonBody<BulkRequest>,
) -> Result<Response, AppError> {
    let action = (name != "retry")
        .then(|| crate::api::exceptions::action(&name))
        .transpose()?;
    let conds = req
        .filter
        .conditions()
        .map_err(|(field, detail)| AppError::bad_request(field, detail))?;
    let who = Request {
        by: auth::by(principal.as_deref(), &req.by),
        comment: req.comment,
    };
    sync(&app.pool).await?;
    let Some(action) = action else {
        let (retried, skipped) = exception_actions::retry_by_filter(
            (&app.store, &app.commands),
            &app.pool,
            &conds,
            &who,
        )
        .await??;
        return Ok(bulk_retried(retried, skipped));
    };
    let ids = exception_actions::act_by_filter(&app.pool, &conds, action, &who).await??;
    Ok(bulk_acted(ids))
}
