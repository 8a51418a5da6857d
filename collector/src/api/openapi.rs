//! `GET /openapi.json`: the collector's HTTP API as an OpenAPI 3.1 document, generated from
//! the handlers' own `#[utoipa::path]` attributes and types (query structs, request bodies),
//! so it cannot drift from the code unnoticed: a test checks that it describes exactly the
//! routes the router serves (`routes`, the one table the router is built from).

use axum::Json;
use utoipa::OpenApi;

use super::{
    agents, alerts, audit, bundles, channels, dashboard, exceptions, history, orders, ready,
    reports, reservations, stock, voids,
};

/// An error answer (every error of this API): what went wrong, the field at fault (a JSON
/// path for bodies, the parameter's name for queries) when one is, and why.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // described, not built: `AppError` renders it
pub struct ErrorBody {
    error: String,
    field: Option<String>,
    detail: String,
    /// A `500`'s log reference: the text of an internal failure is only in the log.
    reference: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stocksync collector",
        description = "Stock, audit, reservations and orders, channels, the exception queue, reports and alerts. With `[[http.tokens]]` configured every API route needs `Authorization: Bearer <token>` with the route's scope (read, orders, admin); /healthz, /readyz, the dashboard's page and assets and this document do not."
    ),
    paths(
        stock::by_location,
        stock::by_sku,
        history::history,
        audit::drift,
        audit::conflicts,
        audit::discrepancies,
        audit::reversals,
        audit::shortfalls,
        bundles::by_bundle,
        reservations::create,
        reservations::list,
        reservations::get,
        reservations::release,
        voids::create,
        orders::place,
        orders::list,
        orders::get,
        orders::cancel,
        orders::paid,
        orders::reroute,
        orders::set_frozen,
        super::rejects,
        super::retry_reject,
        channels::list,
        channels::one,
        channels::sellable,
        channels::stream,
        channels::set_mode,
        channels::errors,
        agents::list,
        exceptions::list,
        exceptions::one,
        exceptions::bulk,
        exceptions::act,
        reports::daily,
        alerts::list,
        dashboard::root,
        dashboard::index,
        dashboard::style,
        dashboard::script,
        ready::readyz,
        super::healthz,
        super::metrics,
        document,
    ),
    components(schemas(ErrorBody, crate::exceptions::Retry))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations", summary = "This document",
    responses((status = 200, description = "OpenAPI 3.1 document", body = serde_json::Value)))]
pub(crate) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use stocksync_runtime::openapi::documented_routes;

    use super::*;

    #[test]
    fn the_document_describes_exactly_the_routes_served() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let documented = documented_routes(&doc);
        let served: BTreeSet<(String, String)> = super::super::routes()
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
