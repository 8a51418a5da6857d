//! `/v1/reservations` on a PostgreSQL worker: the SQLite collector's routes, checks and JSON,
//! served by any worker; the hold itself is atomic in the database (`reserve`), so two
//! workers taking the last unit at once cannot both succeed.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::PgApp;
use crate::api::body::JsonBody;
use crate::api::{AppError, Params, Path};
use crate::auth::{self, Principal};
use crate::reserve::Request;
use crate::store::postgres::{now_ms, reserve, PgError};

/// `POST /v1/reservations`: 201 when held, 200 for a replay, 409 when the warehouse does
/// not have it (nothing held) or the id reserves something else, 422 naming a bad field.
pub async fn create(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<Request>,
) -> Result<Response, AppError> {
    req.check()
        .map_err(|(field, detail)| AppError::unprocessable(field, detail))?;
    known_sku_and_warehouse(&app, &req).await?;
    let by = auth::by(principal.as_deref(), "api");
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let prepared = conn.prepared();
    let tx = conn.transaction().await.map_err(PgError::from)?;
    let created = reserve::create(&tx, &prepared, &req, &by, now_ms()).await?;
    tx.commit().await.map_err(PgError::from)?;
    Ok(crate::api::reservations::answer(created))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    sku: String,
    warehouse: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/reservations?sku=&warehouse=&limit=`: newest first.
pub async fn list(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let conn = app.pool.get().await.map_err(PgError::from)?;
    let rows = reserve::list(
        &*conn,
        &conn.prepared(),
        &q.sku,
        q.warehouse.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(rows).into_response())
}

/// `GET /v1/reservations/<id>`.
pub async fn get(
    State(app): State<Arc<PgApp>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let conn = app.pool.get().await.map_err(PgError::from)?;
    match reserve::get(&*conn, &conn.prepared(), &id).await? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(AppError::not_found("id", format!("no reservation `{id}`"))),
    }
}

/// `DELETE /v1/reservations/<id>`: the stock is sellable again.
pub async fn release(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let by = auth::by(principal.as_deref(), "api");
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let prepared = conn.prepared();
    let tx = conn.transaction().await.map_err(PgError::from)?;
    let released = reserve::release(&tx, &prepared, &id, &by, now_ms()).await?;
    tx.commit().await.map_err(PgError::from)?;
    match released {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(AppError::not_found("id", format!("no reservation `{id}`"))),
    }
}

/// An unknown SKU or warehouse is a 422 naming it, not "insufficient stock".
async fn known_sku_and_warehouse(app: &PgApp, req: &Request) -> Result<(), AppError> {
    let open = app.catalog.is_open();
    let in_catalog = app.catalog.config().skus.iter().any(|s| s.id == req.sku)
        || app.catalog.bundle(&req.sku).is_some();
    if !open && !in_catalog {
        return Err(AppError::unprocessable(
            "$.sku".into(),
            format!("unknown SKU `{}`: not in the catalog", req.sku),
        ));
    }
    let conn = app.pool.get().await.map_err(PgError::from)?;
    let warehouse_known: bool = conn
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM agents WHERE warehouse = $1)
                 OR EXISTS (SELECT 1 FROM stock WHERE warehouse = $1)",
            &[&req.warehouse],
        )
        .await
        .map_err(PgError::from)?
        .get(0);
    if !warehouse_known {
        return Err(AppError::unprocessable(
            "$.warehouse".into(),
            format!(
                "unknown warehouse `{}`: no agent reports for it and it holds no stock",
                req.warehouse
            ),
        ));
    }
    if open && !in_catalog {
        let stocked: bool = conn
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM stock WHERE sku = $1)",
                &[&req.sku],
            )
            .await
            .map_err(PgError::from)?
            .get(0);
        if !stocked {
            return Err(AppError::unprocessable(
                "$.sku".into(),
                format!("unknown SKU `{}`: never stocked anywhere", req.sku),
            ));
        }
    }
    Ok(())
}
