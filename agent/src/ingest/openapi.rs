//! `GET /openapi.json`: the agent's HTTP API as an OpenAPI 3.1 document, generated from the
//! handlers' own `#[utoipa::path]` attributes and types, so it cannot drift from the code
//! unnoticed: a test checks that it describes exactly the routes the router serves
//! (`http::routes`, the one table the router is built from).

use axum::Json;
use utoipa::OpenApi;

use super::{epcis, http, retry};

/// An error answer: what went wrong, the JSON path of the field at fault (if one is) and the
/// record's index in a list (if one is).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)] // described, not built: `AppError` renders it
pub struct ErrorBody {
    error: String,
    field: Option<String>,
    detail: String,
    record: Option<usize>,
    /// A `500`'s log reference: the text of an internal failure is only in the log.
    reference: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "stocksync agent",
        description = "Movements in, journaled durably, forwarded to the collector. With `[[http.tokens]]` configured every route but /healthz and /readyz needs `Authorization: Bearer <token>`."
    ),
    paths(
        http::post_movements,
        epcis::post_events,
        http::status,
        http::rejects,
        retry::retry_reject,
        http::metrics,
        http::healthz,
        http::readyz,
        document,
    ),
    components(schemas(ErrorBody, crate::journal::StoredReject))
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
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
        let served: BTreeSet<(String, String)> = http::routes()
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
    }
}
