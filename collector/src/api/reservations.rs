//! `POST /v1/reservations`, `GET /v1/reservations?sku=...`, `GET|DELETE /v1/reservations/<id>`:
//! holding stock for an order between checkout and shipment.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::body::JsonBody;
use super::Path;
use super::{AppError, Params};
use crate::auth::{self, Principal};
use crate::orders::store::last_heard;
use crate::reserve::{self, Created, Request};
use crate::stock;
use crate::App;

fn now() -> i64 {
    stocksync_common::OccurredAt::now().unix_ms
}

/// Holds stock for an order; 201 when held, 200 for a replay, 409 when the warehouse does
/// not have it (nothing held) or the id was used for another reservation.
#[utoipa::path(
    post,
    path = "/v1/reservations",
    tag = "orders",
    summary = "Hold stock",
    request_body(content = serde_json::Value, description = "A reservation request"),
    responses(
        (status = 201, description = "Held", body = serde_json::Value),
        (status = 200, description = "Replay", body = serde_json::Value),
        (status = 409, description = "Not enough stock, or the id was used for another reservation", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn create(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    JsonBody(req): JsonBody<Request>,
) -> Result<Response, AppError> {
    req.check()
        .map_err(|(field, detail)| AppError::unprocessable(field, detail))?;
    known_sku_and_warehouse(&app, &req)?;
    let t = now();
    let by = auth::by(principal.as_deref(), "api");
    let created = app
        .ledger
        .write(move |tx, touched| {
            let created = reserve::create(tx, &req, t, touched)?;
            if let Created::New(_) = created {
                reserve::record_by(tx, &req.id, reserve::By::Created, &by)?;
                return Ok(Created::New(
                    reserve::get(tx, &req.id)?.expect("just created"),
                ));
            }
            Ok(created)
        })
        .await?;
    Ok(answer(created))
}

/// The HTTP answer to a hold request's outcome, the same on every backend.
pub(crate) fn answer(created: Created) -> Response {
    match created {
        Created::New(r) => (StatusCode::CREATED, Json(r)).into_response(),
        Created::Replayed(r) => (StatusCode::OK, Json(r)).into_response(),
        Created::IdConflict(r) => (
            StatusCode::CONFLICT,
            Json(json!({"error": "id in use", "field": "id", "detail": "this id already reserves something else", "reservation": r})),
        )
            .into_response(),
        Created::Insufficient { available } => (
            StatusCode::CONFLICT,
            Json(json!({"error": "insufficient stock", "field": "quantity",
                        "detail": format!("only {available} available at the warehouse; nothing was held"),
                        "available": available})),
        )
            .into_response(),
    }
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    sku: String,
    warehouse: Option<String>,
    limit: Option<i64>,
}

/// Reservations of one SKU, newest first.
#[utoipa::path(
    get,
    path = "/v1/reservations",
    tag = "orders",
    summary = "Reservations of one SKU",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    Params(q): Params<ListQuery>,
) -> Result<Response, AppError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let rows = app
        .ledger
        .read(|c| reserve::list(c, &q.sku, q.warehouse.as_deref(), limit))?;
    Ok(Json(rows).into_response())
}

/// One reservation.
#[utoipa::path(
    get,
    path = "/v1/reservations/{id}",
    tag = "orders",
    summary = "One reservation",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such reservation", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    match app.ledger.read(|c| reserve::get(c, &id))? {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(AppError::not_found("id", format!("no reservation `{id}`"))),
    }
}

/// Releases a reservation (the order was abandoned); the stock is sellable again.
#[utoipa::path(
    delete,
    path = "/v1/reservations/{id}",
    tag = "orders",
    summary = "Release a reservation",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Released", body = serde_json::Value),
        (status = 404, description = "No such reservation", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn release(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let t = now();
    let key = id.clone();
    let by = auth::by(principal.as_deref(), "api");
    match app
        .ledger
        .write(move |tx, touched| {
            let was_active = reserve::get(tx, &key)?.is_some_and(|r| r.status == "active");
            if was_active {
                reserve::record_by(tx, &key, reserve::By::Closed, &by)?;
            }
            reserve::release(tx, &key, t, touched)
        })
        .await?
    {
        Some(r) => Ok(Json(r).into_response()),
        None => Err(AppError::not_found("id", format!("no reservation `{id}`"))),
    }
}

/// An unknown SKU or warehouse is not "insufficient stock": say which is unknown (422).
fn known_sku_and_warehouse(app: &App, req: &Request) -> Result<(), AppError> {
    let open = app.catalog.is_open();
    if !open && !app.in_catalog(&req.sku) {
        return Err(AppError::unprocessable(
            "$.sku".into(),
            format!("unknown SKU `{}`: not in the catalog", req.sku),
        ));
    }
    let warehouse_known = app.ledger.read(|c| {
        Ok(last_heard(c, &req.warehouse)?.is_some() || stock::has_warehouse(c, &req.warehouse)?)
    })?;
    if !warehouse_known {
        return Err(AppError::unprocessable(
            "$.warehouse".into(),
            format!(
                "unknown warehouse `{}`: no agent reports for it and it holds no stock",
                req.warehouse
            ),
        ));
    }
    if open && !app.in_catalog(&req.sku) {
        let stocked = app.ledger.read(|c| stock::known_sku(c, &req.sku))?;
        if !stocked {
            return Err(AppError::unprocessable(
                "$.sku".into(),
                format!("unknown SKU `{}`: never stocked anywhere", req.sku),
            ));
        }
    }
    Ok(())
}
