//! Which token scope each collector endpoint needs. The mechanics (digests, constant-time
//! comparison, 401/403 bodies) are shared with the agent in `stocksync_runtime::server::auth`.
//!
//! Reads need `read` (the dashboard's page and assets, and `/openapi.json`, are public: the
//! dashboard sends a token with each API call); reservations and orders need `orders`;
//! everything else that changes state (channel modes, exception actions, routing freezes,
//! endpoints added later) needs `admin`.

use axum::http::Method;
use stocksync_runtime::server::Scope;

pub use stocksync_runtime::server::auth::Principal;

/// The scope a request needs; `None` for `/healthz` and `/readyz`, which load balancers and
/// orchestrators probe unauthenticated (they reveal no stock data).
pub fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    if path == "/healthz" || path == "/readyz" {
        return None;
    }
    // The dashboard's page and assets hold no data (every API call it makes carries a
    // token), and the API description is public documentation.
    if method == Method::GET && PUBLIC.contains(&path) {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Scope::Read);
    }
    if ["/v1/reservations", "/v1/orders"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        return Some(Scope::Orders);
    }
    Some(Scope::Admin)
}

/// Paths served without a token: the dashboard's page and assets, the API description.
const PUBLIC: [&str; 5] = [
    "/",
    "/dashboard",
    "/dashboard/style.css",
    "/dashboard/app.js",
    "/openapi.json",
];

/// Who made a request: the token's name, or `fallback` when the API is open (no tokens).
pub fn by(principal: Option<&Principal>, fallback: &str) -> String {
    principal.map_or_else(|| fallback.to_string(), |p| p.name().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_of_routes() {
        assert_eq!(scope_for(&Method::GET, "/healthz"), None);
        assert_eq!(scope_for(&Method::GET, "/readyz"), None);
        assert_eq!(scope_for(&Method::GET, "/dashboard/app.js"), None);
        assert_eq!(scope_for(&Method::GET, "/v1/stock"), Some(Scope::Read));
        assert_eq!(
            scope_for(&Method::POST, "/v1/reservations"),
            Some(Scope::Orders)
        );
        assert_eq!(
            scope_for(&Method::DELETE, "/v1/reservations/r1"),
            Some(Scope::Orders)
        );
        assert_eq!(
            scope_for(&Method::POST, "/v1/orders/o1/lines"),
            Some(Scope::Orders)
        );
        assert_eq!(
            scope_for(&Method::PUT, "/v1/channels/shop/mode"),
            Some(Scope::Admin)
        );
        assert_eq!(scope_for(&Method::POST, "/v1/rebuild"), Some(Scope::Admin));
        assert_eq!(
            scope_for(&Method::POST, "/v1/exceptions/x/resolve"),
            Some(Scope::Admin)
        );
        assert_eq!(
            scope_for(&Method::PUT, "/v1/routing/warehouses/ams"),
            Some(Scope::Admin)
        );
    }
}
