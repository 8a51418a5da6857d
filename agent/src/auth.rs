//! Which token scope each agent endpoint needs. The mechanics (digests, constant-time
//! comparison, 401/403 bodies) are shared with the collector in `stocksync_runtime::server::auth`.
//!
//! Anything not listed that changes state needs `admin`, so an endpoint added later is
//! closed until someone decides otherwise. A handler that records who sent something reads
//! the token's name with `Option<axum::Extension<Principal>>` (`None` when the API is open).

use axum::http::Method;
use stocksync_runtime::server::Scope;

pub use stocksync_runtime::server::auth::Principal;

/// The scope a request needs; `None` for `/healthz` and `/readyz`, which load balancers and
/// orchestrators probe unauthenticated (they reveal no stock data).
pub fn scope_for(method: &Method, path: &str) -> Option<Scope> {
    // Probes, and the API description (public documentation, no data).
    if path == "/healthz" || path == "/readyz" || path == "/openapi.json" {
        return None;
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Scope::Read);
    }
    let movements = ["/v1/movements", "/v1/epcis/events"];
    if movements.iter().any(|p| path.starts_with(p)) {
        return Some(Scope::Movements);
    }
    Some(Scope::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_of_routes() {
        assert_eq!(scope_for(&Method::GET, "/healthz"), None);
        assert_eq!(scope_for(&Method::GET, "/readyz"), None);
        assert_eq!(scope_for(&Method::GET, "/v1/status"), Some(Scope::Read));
        assert_eq!(
            scope_for(&Method::POST, "/v1/movements"),
            Some(Scope::Movements)
        );
        assert_eq!(
            scope_for(&Method::POST, "/v1/anything-new"),
            Some(Scope::Admin)
        );
    }
}
