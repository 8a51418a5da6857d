//! `GET /v1/stock/<sku>` and `GET /v1/stock?location=...`: the projection as people read it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::Path;
use super::{AppError, Params};
use crate::merge::States;
use crate::stock::{self, Levels};
use crate::App;

/// Per-location breakdown of one SKU, with totals: per warehouse (bins beneath) and the
/// raw projection rows (`locations`).
#[utoipa::path(
    get,
    path = "/v1/stock/{sku}",
    tag = "stock",
    summary = "One SKU",
    params(("sku" = String, Path)),
    responses(
        (status = 200, description = "Per-location states and totals", body = serde_json::Value),
        (status = 404, description = "No such SKU", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn by_sku(
    State(app): State<Arc<App>>,
    Path(sku): Path<String>,
) -> Result<Response, AppError> {
    let (rows, holds) = app.ledger.read(|c| {
        let rows = stock::by_sku(c, &sku)?;
        let mut holds = BTreeMap::new();
        for row in rows.iter().filter(|r| r.bin.is_none()) {
            holds.insert(row.warehouse.clone(), stock::held(c, &sku, &row.warehouse)?);
        }
        Ok((rows, holds))
    })?;
    if rows.is_empty() && !app.in_catalog(&sku) {
        return Err(AppError::not_found(
            "sku",
            format!("SKU `{sku}` is not in the catalog and has no stock"),
        ));
    }
    let mut total = States::default();
    for row in &rows {
        total.add(&row.states);
    }
    let bundle = match app.catalog.bundle(&sku) {
        Some(components) => Some(super::bundles::view(&app, &sku, components)?),
        None => None,
    };
    Ok(Json(serde_json::json!({
        "sku": sku,
        "on_hand": total.on_hand(),
        "total": total,
        "warehouses": warehouses(&rows, &holds),
        "locations": rows,
        "bundle": bundle,
    }))
    .into_response())
}

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LocationQuery {
    location: Option<String>,
    limit: Option<i64>,
}

/// Every SKU at a warehouse (`location=ams`) or one bin of it (`location=ams/A-01`).
#[utoipa::path(
    get,
    path = "/v1/stock",
    tag = "stock",
    summary = "Stock at a warehouse or bin",
    params(LocationQuery),
    responses(
        (status = 200, description = "Every SKU at a location", body = serde_json::Value),
        (status = 400, description = "Unknown or malformed query parameter", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn by_location(
    State(app): State<Arc<App>>,
    Params(q): Params<LocationQuery>,
) -> Result<Response, AppError> {
    let location = q.location.ok_or_else(|| {
        AppError::bad_request(
            "location",
            "give `location=<warehouse>` or `<warehouse>/<bin>`",
        )
    })?;
    let limit = q.limit.unwrap_or(1000).clamp(1, 100_000);
    let (warehouse, bin) = match location.split_once('/') {
        Some((w, b)) => (w.to_string(), Some(b.to_string())),
        None => (location.clone(), None),
    };
    let rows = app.ledger.read(|c| match &bin {
        Some(bin) => stock::at_bin(c, &warehouse, bin, limit),
        None => stock::at_warehouse(c, &warehouse, limit),
    })?;
    Ok(Json(serde_json::json!({"location": location, "items": rows})).into_response())
}

/// Per warehouse: the totals a person reads (holds as `reserved`), and the bins beneath.
/// The bin-less row appears beneath (`bin: null`) only for stock not assigned to a bin
/// (bin-less receipts, warehouse-level count differences): holds, `in_transit` and
/// `incoming` belong to the warehouse, not to a shelf.
pub(crate) fn warehouses(rows: &[Levels], holds: &BTreeMap<String, i64>) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    for chunk in rows.chunk_by(|a, b| a.warehouse == b.warehouse) {
        let warehouse = &chunk[0].warehouse;
        let mut total = States::default();
        let mut bins = Vec::new();
        for row in chunk {
            total.add(&row.states);
            let mut states = row.states;
            if row.bin.is_none() {
                let held = holds.get(warehouse).copied().unwrap_or(0);
                states.available += held;
                states.reserved -= held;
                states.in_transit = 0;
                states.incoming = 0;
                if states == States::default() {
                    continue;
                }
            }
            bins.push(serde_json::json!({
                "bin": row.bin, "on_hand": states.on_hand(),
                "available": states.available, "reserved": states.reserved,
                "damaged": states.damaged, "quality_control": states.quality_control,
            }));
        }
        let mut entry = serde_json::json!(total);
        entry["warehouse"] = warehouse.clone().into();
        entry["on_hand"] = total.on_hand().into();
        entry["bins"] = bins.into();
        out.push(entry);
    }
    out
}
