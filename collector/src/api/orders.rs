//! `POST /v1/orders`, `GET /v1/orders[/<id>]`, `POST /v1/orders/<id>/{cancel,paid,reroute}`,
//! `PUT /v1/routing/warehouses/<warehouse>`: orders routed and held at checkout.
//!
//! Handlers only check input (every field error a 422 with its JSON path) and hand the
//! command to the ledger writer, where routing and the holds happen in one transaction.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::body::{self, JsonBody, JsonBytes};
use super::AppError;
use super::Path;
use crate::auth::{self, Principal};
use crate::orders::{self, CancelRequest, OrderRequest, Outcome, Placed, Prepared};
use crate::App;

fn now() -> i64 {
    stocksync_common::OccurredAt::now().unix_ms
}

/// Routes and holds an order: 201 with allocations and the explanation, 200 for a replay,
/// 409 for a shortfall (nothing held) or an id reused with another body, 422 for bad input.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    summary = "Place an order",
    request_body(content = serde_json::Value, description = "An order (docs/ORDERS.md)"),
    responses(
        (status = 201, description = "Routed and held", body = serde_json::Value),
        (status = 200, description = "Replay", body = serde_json::Value),
        (status = 409, description = "Shortfall, or the id was reused with another body", body = crate::api::openapi::ErrorBody),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn place(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, AppError> {
    let t = now();
    let by = auth::by(principal.as_deref(), "api");
    let prepared = prepare(&app, &headers, &body, t, by)?;
    let ctx = app.orders.clone();
    let placed = app
        .ledger
        .write(move |tx, touched| orders::place(tx, &ctx, prepared, t, touched))
        .await?;
    Ok(placed_answer(placed))
}

/// The HTTP answer of a placed order, on either backend.
pub(crate) fn placed_answer(placed: Placed) -> Response {
    match placed {
        Placed::Created(v) => (StatusCode::CREATED, Json(v)).into_response(),
        Placed::Replayed(v) => (StatusCode::OK, Json(v)).into_response(),
        Placed::Conflict(field) => (
            StatusCode::CONFLICT,
            Json(json!({"error": "order id in use", "field": field,
                        "detail": "this order id (or Idempotency-Key) was placed before with a different value here; nothing was changed"})),
        )
            .into_response(),
        Placed::Shortfall(v) => (StatusCode::CONFLICT, Json(v)).into_response(),
    }
}

fn prepare(
    app: &App,
    headers: &HeaderMap,
    body: &[u8],
    t: i64,
    by: String,
) -> Result<Prepared, AppError> {
    let (request, idempotency_key) = checked(&app.orders, headers, body)?;
    let demand = app.ledger.read(|c| app.orders.demand(&request, c))??;
    Ok(Prepared {
        expires_at_ms: request.expires_at(t)?,
        routed_at: request.routed_at(t)?,
        request,
        demand,
        idempotency_key,
        by,
    })
}

/// The body parsed and checked (every field error a 422 with its JSON path) and the
/// `Idempotency-Key`, before any store is asked.
pub(crate) fn checked(
    orders: &orders::Orders,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(OrderRequest, Option<String>), AppError> {
    body::check(body)?;
    let request = OrderRequest::parse(body)?;
    let limits = &orders.config;
    request.check(limits.max_lines, limits.max_quantity)?;
    if orders.channel(&request.channel).is_none() {
        return Err(AppError::unprocessable(
            "$.channel".into(),
            format!("`{}` is not a channel that takes orders", request.channel),
        ));
    }
    let idempotency_key = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 200)
                .ok_or_else(|| {
                    AppError::bad_request(
                        "Idempotency-Key",
                        "must be 1 to 200 visible ASCII characters",
                    )
                })?
                .to_string(),
        ),
        None => None,
    };
    Ok((request, idempotency_key))
}

/// One order with its history.
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    tag = "orders",
    summary = "One order",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such order", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn get(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    match app.ledger.read(|c| orders::show(c, &id))? {
        Some(v) => Ok(Json(v).into_response()),
        None => Err(AppError::not_found("id", format!("no order `{id}`"))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub(crate) state: Option<String>,
    pub(crate) channel: Option<String>,
    limit: Option<i64>,
}

impl ListQuery {
    /// Refuses an unknown state; returns the limit (default 100, at most 1000).
    pub(crate) fn checked(&self) -> Result<i64, AppError> {
        const STATES: &[&str] = &[
            "reserved",
            "partially_shipped",
            "shipped",
            "backorder",
            "queued",
            "cancelled",
            "expired",
        ];
        if let Some(s) = self.state.as_deref().filter(|s| !STATES.contains(s)) {
            return Err(AppError::bad_request(
                "state",
                format!("`{s}` is not one of {}", STATES.join(", ")),
            ));
        }
        Ok(self.limit.unwrap_or(100).clamp(1, 1000))
    }
}

/// Orders, newest first, by state and channel.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    summary = "Orders by state and channel",
    params(ListQuery),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn list(
    State(app): State<Arc<App>>,
    super::Params(q): super::Params<ListQuery>,
) -> Result<Response, AppError> {
    let limit = q.checked()?;
    let rows = app
        .ledger
        .read(|c| orders::list(c, q.state.as_deref(), q.channel.as_deref(), limit))?;
    Ok(Json(rows).into_response())
}

/// The HTTP answer of a lifecycle command, on either backend.
pub(crate) fn outcome(id: &str, o: Outcome) -> Result<Response, AppError> {
    match o {
        Outcome::Done(v) => Ok(Json(v).into_response()),
        Outcome::NotFound => Err(AppError::not_found("id", format!("no order `{id}`"))),
        Outcome::Invalid(e) => Err(e.into()),
        Outcome::Conflict(v) => Ok((StatusCode::CONFLICT, Json(v)).into_response()),
    }
}

/// Cancels the whole order (empty body) or lines and quantities; releases what is held.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    tag = "orders",
    summary = "Cancel an order",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such order", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Not in a state that allows it", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn cancel(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
    body: Option<JsonBody<CancelRequest>>,
) -> Result<Response, AppError> {
    // No body cancels the whole order.
    let req = body.map(|JsonBody(r)| r).unwrap_or_default();
    let t = now();
    let by = auth::by(principal.as_deref(), "api");
    let key = id.clone();
    let o = app
        .ledger
        .write(move |tx, touched| orders::cancel(tx, &key, req, &by, t, touched))
        .await?;
    outcome(&id, o)
}

/// The order was paid: its holds no longer expire.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/paid",
    tag = "orders",
    summary = "Mark an order paid",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such order", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Not in a state that allows it", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn paid(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let t = now();
    let by = auth::by(principal.as_deref(), "api");
    let key = id.clone();
    let o = app
        .ledger
        .write(move |tx, _| orders::keep(tx, &key, &by, t))
        .await?;
    outcome(&id, o)
}

/// Moves open allocations off frozen or silent warehouses.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/reroute",
    tag = "orders",
    summary = "Route an order again",
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 404, description = "No such order", body = crate::api::openapi::ErrorBody),
        (status = 409, description = "Not in a state that allows it", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn reroute(
    State(app): State<Arc<App>>,
    principal: Option<axum::Extension<Principal>>,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    let t = now();
    let by = auth::by(principal.as_deref(), "api");
    let (key, ctx) = (id.clone(), app.orders.clone());
    let o = app
        .ledger
        .write(move |tx, touched| orders::reroute(tx, &ctx, &key, &by, t, touched))
        .await?;
    outcome(&id, o)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    pub(crate) frozen: bool,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// Freezes or unfreezes a warehouse for routing (new orders skip it; re-route moves off it).
#[utoipa::path(
    put,
    path = "/v1/routing/warehouses/{warehouse}",
    tag = "orders",
    summary = "Freeze or unfreeze a warehouse for routing",
    params(("warehouse" = String, Path)),
    request_body = Freeze,
    responses(
        (status = 200, description = "OK", body = serde_json::Value),
        (status = 422, description = "Invalid body: names the field", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn set_frozen(
    State(app): State<Arc<App>>,
    Path(warehouse): Path<String>,
    JsonBody(f): JsonBody<Freeze>,
) -> Result<Response, AppError> {
    let t = now();
    let wh = warehouse.clone();
    let reason = f
        .frozen
        .then(|| f.reason.unwrap_or_else(|| "frozen by hand".into()));
    app.ledger
        .write(move |tx, _| orders::store::set_frozen(tx, &wh, reason.as_deref(), t))
        .await?;
    Ok(Json(json!({"warehouse": warehouse, "frozen": f.frozen})).into_response())
}
