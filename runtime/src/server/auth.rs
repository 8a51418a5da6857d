//! Bearer-token authentication for the agent's and the collector's HTTP APIs.
//!
//! Identity comes from the token, never from a request body: a request that passes gets the
//! token's configured name as its [`Principal`] (a request extension), and handlers record
//! that name on what they write. Tokens are stored and compared as SHA-256 digests, every
//! configured digest is compared in constant time on every request, so neither the config
//! file nor response timing gives a token away. Without any token configured the API stays
//! open, as before, and the process says so at start.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Scope, TokenConfig};

/// Shortest token accepted from a `token_file`: shorter ones are guessable.
const MIN_TOKEN_CHARS: usize = 16;

/// The name of the token a request was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub Arc<str>);

impl Principal {
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// A `[[http.tokens]]` entry that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("[[http.tokens]] `{name}`: {detail}")]
    Invalid { name: String, detail: String },
    #[error("[[http.tokens]] `{name}`: cannot read token_file {path}: {source}")]
    File {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

struct Entry {
    name: Arc<str>,
    scopes: Vec<Scope>,
    digest: [u8; 32],
}

/// The configured tokens, as digests.
#[derive(Clone, Default)]
pub struct Tokens(Arc<[Entry]>);

/// Which scope a request needs: `None` for public endpoints (`/healthz`).
pub type ScopeFor = fn(&Method, &str) -> Option<Scope>;

impl Tokens {
    /// Reads token files and checks every entry; a broken entry refuses the start.
    pub fn load(config: &[TokenConfig]) -> Result<Tokens, TokenError> {
        let mut entries: Vec<Entry> = Vec::with_capacity(config.len());
        for t in config {
            let invalid = |detail: &str| TokenError::Invalid {
                name: t.name.clone(),
                detail: detail.to_string(),
            };
            if t.name.trim().is_empty() {
                return Err(invalid("name must not be empty"));
            }
            if entries.iter().any(|e| *e.name == *t.name) {
                return Err(invalid("name is used by another token"));
            }
            if t.scopes.is_empty() {
                return Err(invalid(
                    "scopes must name at least one of read, movements, orders, admin",
                ));
            }
            let digest = match (&t.token_sha256, &t.token_file) {
                (Some(hex), None) => parse_sha256(hex)
                    .ok_or_else(|| invalid("token_sha256 must be 64 hex digits"))?,
                (None, Some(path)) => {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| TokenError::File {
                            name: t.name.clone(),
                            path: path.clone(),
                            source,
                        })?;
                    let token = text.trim();
                    if token.chars().count() < MIN_TOKEN_CHARS {
                        return Err(invalid(
                            "the token in token_file is shorter than 16 characters",
                        ));
                    }
                    Sha256::digest(token.as_bytes()).into()
                }
                _ => return Err(invalid("set exactly one of token_sha256 and token_file")),
            };
            entries.push(Entry {
                name: t.name.as_str().into(),
                scopes: t.scopes.clone(),
                digest,
            });
        }
        Ok(Tokens(entries.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entry whose token is `presented`. Compares against every entry, always.
    fn find(&self, presented: &str) -> Option<&Entry> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for entry in self.0.iter() {
            if bool::from(entry.digest.ct_eq(&digest)) {
                found = Some(entry);
            }
        }
        found
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Requires a token with the scope `scope_for` names on every route of `router`.
/// Apply it to the finished router so that routes added later are covered too.
pub fn protect(router: Router, tokens: Tokens, scope_for: ScopeFor) -> Router {
    if tokens.is_empty() {
        tracing::warn!(
            "no [[http.tokens]] configured: the HTTP API is open to anyone who can reach it"
        );
        return router;
    }
    router.layer(axum::middleware::from_fn_with_state(
        (tokens, scope_for),
        check,
    ))
}

async fn check(
    State((tokens, scope_for)): State<(Tokens, ScopeFor)>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(scope) = scope_for(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let Some(presented) = presented else {
        return unauthorized("Bearer realm=\"stocksync\"", "a bearer token is required");
    };
    let Some(entry) = tokens.find(presented.trim()) else {
        return unauthorized(
            "Bearer realm=\"stocksync\", error=\"invalid_token\"",
            "the bearer token is not valid",
        );
    };
    if !entry.scopes.contains(&scope) {
        let body = serde_json::json!({
            "error": "forbidden",
            "field": "authorization",
            "detail": format!("token `{}` lacks scope `{}`", entry.name, scope.name()),
        });
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    req.extensions_mut().insert(Principal(entry.name.clone()));
    next.run(req).await
}

fn unauthorized(challenge: &'static str, detail: &str) -> Response {
    let body =
        serde_json::json!({"error": "unauthorized", "field": "authorization", "detail": detail});
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        Json(body),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, hex: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            scopes: vec![Scope::Read],
            token_sha256: Some(hex.into()),
            token_file: None,
        }
    }

    #[test]
    fn finds_the_token_by_its_digest() {
        let hex: String = Sha256::digest(b"correct horse battery staple")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tokens = Tokens::load(&[token("ops", &hex)]).unwrap();
        assert_eq!(
            &*tokens.find("correct horse battery staple").unwrap().name,
            "ops"
        );
        assert!(tokens.find("correct horse battery stapl").is_none());
        assert!(tokens.find("").is_none());
    }

    #[test]
    fn refuses_broken_entries() {
        assert!(Tokens::load(&[token("ops", "abc")]).is_err());
        assert!(Tokens::load(&[token("", &"0".repeat(64))]).is_err());
        let twice = [token("ops", &"0".repeat(64)), token("ops", &"1".repeat(64))];
        assert!(Tokens::load(&twice).is_err());
        let mut both = token("ops", &"0".repeat(64));
        both.token_file = Some("x".into());
        assert!(Tokens::load(&[both]).is_err());
    }
}
