//! `GET /v1/bundles/<sku>`: how many of a bundle (kit) can be built from its components.
//!
//! A bundle has no stock of its own; its sellable number is derived, never stored, so it
//! cannot drift from its components: per warehouse, buildable = min over components of
//! floor(available there / quantity per bundle), and the total sums the warehouses (a kit is
//! built in one place). The arithmetic is `crate::buildable`, shared with the channels.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stocksync_common::catalog::ComponentDef;

use super::AppError;
use super::Path;
use crate::{buildable, App};

/// The component view of one bundle.
#[utoipa::path(
    get,
    path = "/v1/bundles/{sku}",
    tag = "stock",
    summary = "A bundle's component view",
    params(("sku" = String, Path, description = "A bundle SKU")),
    responses(
        (status = 200, description = "Sellable bundles and their components", body = serde_json::Value),
        (status = 404, description = "No such bundle", body = crate::api::openapi::ErrorBody),
    ),
)]
pub async fn by_bundle(
    State(app): State<Arc<App>>,
    Path(sku): Path<String>,
) -> Result<Response, AppError> {
    let Some(components) = app.catalog.bundle(&sku).map(<[ComponentDef]>::to_vec) else {
        return Err(AppError::not_found(
            "sku",
            format!("`{sku}` is not a bundle in the catalog"),
        ));
    };
    Ok(Json(view(&app, &sku, &components)?).into_response())
}

/// Buildable numbers of `bundle` per warehouse and in total, from the SQLite ledger.
pub fn view(app: &App, bundle: &str, components: &[ComponentDef]) -> Result<Value, AppError> {
    let parts = parts(components);
    let sites = app
        .ledger
        .read(|c| buildable::by_warehouse(c, &parts, |_, _| true))?;
    Ok(render(bundle, components, &sites))
}

/// A bundle's components as `buildable` takes them: `(sku, quantity per kit)`.
pub fn parts(components: &[ComponentDef]) -> Vec<(String, u64)> {
    components
        .iter()
        .map(|c| (c.sku.clone(), c.quantity))
        .collect()
}

/// The component view of `bundle` from what each warehouse can build (`sites`, from either
/// store's stock rows), so both backends answer in the same JSON.
pub fn render(bundle: &str, components: &[ComponentDef], sites: &[buildable::Site]) -> Value {
    let warehouses: Vec<Value> = sites
        .iter()
        .map(|site| {
            let parts: Vec<Value> = site
                .components
                .iter()
                .map(|(sku, qty, available)| {
                    let one = [(sku.clone(), *qty, *available)];
                    json!({"sku": sku, "quantity": qty, "available": available,
                           "buildable": buildable::kits(&one)})
                })
                .collect();
            json!({"warehouse": site.warehouse, "buildable": site.buildable, "components": parts})
        })
        .collect();
    json!({
        "bundle": bundle,
        "buildable": buildable::total(sites),
        "components": components,
        "warehouses": warehouses,
    })
}
