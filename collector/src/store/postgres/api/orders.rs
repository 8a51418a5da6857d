//! `/v1/orders` and `PUT /v1/routing/warehouses/<warehouse>` on a PostgreSQL worker: the
//! SQLite collector's checks, answers and JSON (`crate::api::orders`), served by any worker;
//! routing and the holds run in one database transaction (`store::postgres::orders`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::PgApp;
use crate::api::body::{JsonBody, JsonBytes};
use crate::api::orders::{checked, outcome, placed_answer, Freeze, ListQuery};
use crate::api::{AppError, Params, Path};
use crate::auth::{self, Principal};
use crate::orders::{CancelRequest, Prepared as Checked};
use crate::store::postgres::{now_ms, orders, PgError};

/// `POST /v1/orders`: 201 routed and held, 200 replay, 409 shortfall (nothing held) or id
/// reused with another body, 422 naming a bad field.
pub async fn place(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AppError> {
    let t = now_ms();
    let (request, idempotency_key) = checked(&app.orders, &headers, &body)?;
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let p = conn.prepared();
    // With an open catalog, a line's SKU must have been stocked somewhere.
    let plain: Vec<&str> = request
        .lines
        .iter()
        .map(|l| l.sku.as_str())
        .filter(|s| app.catalog.bundle(s).is_none())
        .collect();
    let stocked = match app.catalog.is_open() {
        true => orders::stocked(&*conn, &plain).await?,
        false => Default::default(),
    };
    let demand = app
        .orders
        .demand_with(&request, |s| Ok::<_, PgError>(stocked.contains(s)))??;
    let order = Checked {
        expires_at_ms: request.expires_at(t)?,
        routed_at: request.routed_at(t)?,
        request,
        demand,
        idempotency_key,
        by: auth::by(principal.as_deref(), "api"),
    };
    let placed = orders::place(&mut conn, &p, &app.orders, &order, t).await?;
    Ok(placed_answer(placed))
}

/// `GET /v1/orders/<id>`: the order with its history.
pub async fn get(
    State(app): State<Arc<PgApp>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let conn = app.pool.get().await.map_err(PgError::from)?;
    match orders::show(&*conn, &conn.prepared(), &id).await? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(AppError::not_found("id", format!("no order `{id}`"))),
    }
}

/// `GET /v1/orders?state=&channel=&limit=`: newest first.
pub async fn list(
    State(app): State<Arc<PgApp>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    let limit = q.checked()?;
    let conn = app.pool.get().await.map_err(PgError::from)?;
    let (state, channel) = (q.state.as_deref(), q.channel.as_deref());
    let rows = orders::list(&*conn, &conn.prepared(), state, channel, limit).await?;
    Ok(Json(rows).into_response())
}

/// `POST /v1/orders/<id>/cancel`: the whole order (no body) or lines and quantities.
pub async fn cancel(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
    body: Option<JsonBody<CancelRequest>>,
) -> Result<Response, AppError> {
    let req = body.map(|JsonBody(r)| r).unwrap_or_default();
    let by = auth::by(principal.as_deref(), "api");
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let p = conn.prepared();
    let o = orders::cancel(&mut conn, &p, &id, &req, &by, now_ms()).await?;
    outcome(&id, o)
}

/// `POST /v1/orders/<id>/paid`: the holds no longer expire.
pub async fn paid(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let by = auth::by(principal.as_deref(), "api");
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let p = conn.prepared();
    let o = orders::keep(&mut conn, &p, &id, &by, now_ms()).await?;
    outcome(&id, o)
}

/// `POST /v1/orders/<id>/reroute`: open allocations move off frozen or silent warehouses.
pub async fn reroute(
    State(app): State<Arc<PgApp>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let by = auth::by(principal.as_deref(), "api");
    let mut conn = app.pool.get().await.map_err(PgError::from)?;
    let p = conn.prepared();
    let o = orders::reroute(&mut conn, &p, &app.orders, &id, &by, now_ms()).await?;
    outcome(&id, o)
}

/// `PUT /v1/routing/warehouses/<warehouse>`: new orders skip a frozen warehouse.
pub async fn set_frozen(
    State(app): State<Arc<PgApp>>,
    Path(warehouse): Path<String>,
    JsonBody(f): JsonBody<Freeze>,
) -> Result<Response, AppError> {
    let reason = f
        .frozen
        .then(|| f.reason.unwrap_or_else(|| "frozen by hand".into()));
    let conn = app.pool.get().await.map_err(PgError::from)?;
    orders::set_frozen(&*conn, &warehouse, reason.as_deref(), now_ms()).await?;
    Ok(Json(json!({"warehouse": warehouse, "frozen": f.frozen})).into_response())
}
