//! What both HTTP processes' tests need to hold their OpenAPI document against the routes
//! they serve: the document is generated from handler attributes, the router from a route
//! table, and nothing but a comparison keeps the two from drifting apart. Since axum 0.8
//! both spell path parameters `{name}`, so the paths compare as they are.

use std::collections::BTreeSet;

use serde_json::Value;

/// Every `(METHOD, path)` an OpenAPI document describes.
pub fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .into_iter()
                .flatten()
                .map(move |(m, _)| (m.to_uppercase(), path.clone()))
        })
        .collect()
}
