//! `GET /v1/bundles/<sku>` and the `bundle` part of `GET /v1/stock/<bundle>` on a worker: the
//! stock rows of the bundle's components, read in one query, go through the same
//! `buildable` arithmetic and the same JSON (`api::bundles::render`) as on SQLite.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use stocksync_common::catalog::ComponentDef;
use stocksync_runtime::server::error::Path;

use super::{error, internal, PgApp};
use crate::api::bundles::{parts, render};
use crate::buildable;
use crate::stock::Rows;

/// The component view of one bundle; 404 if the catalog has no such bundle.
pub async fn by_bundle(State(app): State<Arc<PgApp>>, Path(sku): Path<String>) -> Response {
    let Some(components) = app.catalog.bundle(&sku) else {
        return error(
            StatusCode::NOT_FOUND,
            "not found",
            Some("sku"),
            format!("`{sku}` is not a bundle in the catalog"),
        );
    };
    match view(&app, &sku, components).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => internal(e),
    }
}

/// Buildable numbers of `bundle` per warehouse and in total.
pub async fn view(
    app: &PgApp,
    bundle: &str,
    components: &[ComponentDef],
) -> Result<Value, tokio_postgres::Error> {
    let parts = parts(components);
    let skus: Vec<&str> = parts.iter().map(|(s, _)| s.as_str()).collect();
    let conn = app.pool.get().await?;
    let found = conn
        .query(
            "SELECT sku, warehouse, bin, available FROM stock WHERE sku = ANY($1)",
            &[&skus],
        )
        .await?;
    let mut rows = Rows::default();
    for r in &found {
        rows.insert(r.get(0), r.get(1), r.get(2), r.get(3));
    }
    let sites = match buildable::by_warehouse(&rows, &parts, |_, _| true) {
        Ok(sites) => sites,
        Err(never) => match never {},
    };
    Ok(render(bundle, components, &sites))
}
