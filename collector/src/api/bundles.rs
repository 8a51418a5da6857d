//! `GET /v1/bundles/<sku>`: how many of a bundle (kit) can be built from its components.
//!
//! A bundle has no stock of its own; its sellable number is derived, never stored, so it
//! cannot drift from its components: per warehouse, buildable = min over components of
//! floor(available / quantity per bundle), and the total sums the warehouses (a kit is built
//! in one place).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use stocksync_common::config::ComponentDef;

use super::ApiError;
use crate::App;

/// The component view of one bundle.
pub async fn by_bundle(
    State(app): State<Arc<App>>,
    Path(sku): Path<String>,
) -> Result<Response, ApiError> {
    let Some(components) = app.catalog.bundle(&sku).map(<[ComponentDef]>::to_vec) else {
        return Ok((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not a bundle", "field": "sku", "detail": format!("`{sku}` is not a bundle in the catalog")})),
        )
            .into_response());
    };
    Ok(Json(view(&app, &sku, &components)?).into_response())
}

/// Buildable numbers of `bundle` per warehouse and in total.
pub fn view(app: &App, bundle: &str, components: &[ComponentDef]) -> Result<Value, ApiError> {
    // warehouse -> component sku -> available
    let mut available: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    app.ledger.read(|c| {
        let mut stmt = c.prepare_cached(
            "SELECT warehouse, SUM(available) FROM stock WHERE sku = ?1 GROUP BY warehouse",
        )?;
        for part in components {
            let rows = stmt.query_map([&part.sku], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })?;
            for row in rows {
                let (warehouse, n) = row?;
                available
                    .entry(warehouse)
                    .or_default()
                    .insert(part.sku.clone(), n);
            }
        }
        Ok(())
    })?;
    let mut total = 0;
    let mut warehouses = Vec::new();
    for (warehouse, by_sku) in &available {
        let parts: Vec<Value> = components
            .iter()
            .map(|p| {
                let avail = by_sku.get(&p.sku).copied().unwrap_or(0);
                json!({"sku": p.sku, "quantity": p.quantity, "available": avail,
                       "buildable": buildable(avail, p.quantity)})
            })
            .collect();
        let n = components
            .iter()
            .map(|p| buildable(by_sku.get(&p.sku).copied().unwrap_or(0), p.quantity))
            .min()
            .unwrap_or(0);
        total += n;
        warehouses.push(json!({"warehouse": warehouse, "buildable": n, "components": parts}));
    }
    Ok(json!({
        "bundle": bundle,
        "buildable": total,
        "components": components,
        "warehouses": warehouses,
    }))
}

fn buildable(available: i64, per_bundle: u64) -> i64 {
    available.max(0) / per_bundle as i64
}
