//! `GET /v1/exceptions` and `GET /v1/exceptions/<id>` from any worker: the SQLite
//! collector's queue, query and JSON (`crate::api::exceptions`), folded and read from the
//! shared database. Every read folds the stores' newest records first, as on SQLite.
//! `POST /v1/rejects/<id>/retry` applies a refused movement once the catalog has its SKU,
//! exactly once, and `POST /v1/exceptions/<id>/retry` does that for every record of an
//! exception of collector rejects; `resolve`, `ignore`, `reopen` and `comment` act on one
//! exception as on SQLite. Bulk actions by filter are not served on this backend yet and
//! answer 501.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::PgApp;
use crate::api::body::JsonBody;
use crate::api::exceptions::{page_json, ListQuery};
use crate::api::{AppError, Params, Path};
use crate::auth::{self, Principal};
use crate::exceptions::Request;
use crate::store::postgres::{exception_retry, exceptions, now_ms, PgError, Pool};

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
        let done = exception_retry::retry(&app.store, &app.pool, &id, &req).await??;
        return Ok(Json(done).into_response());
    }
    let action = crate::api::exceptions::action(&name)?;
    sync(&app.pool).await?;
    let status = exception_retry::act(&app.pool, &id, action, &req).await??;
    Ok(Json(json!({"id": id, "status": status})).into_response())
}
