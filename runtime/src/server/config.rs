//! `[http]` settings both processes' listeners share: bearer tokens and their scopes, TLS,
//! timeouts and the connection limit. Each process's own `[http]` table adds its address
//! (and the agent its input rules) around these.

use std::path::PathBuf;

use serde::Deserialize;

/// What a bearer token may do. Scopes do not imply each other: an operator token that
/// should also read lists both `read` and `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every GET (stock, audit, status, rejects, metrics).
    Read,
    /// Posting movements to an agent (`POST /v1/movements`).
    Movements,
    /// Reservations and orders at the collector.
    Orders,
    /// Channel modes and every other state-changing operator action.
    Admin,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Movements => "movements",
            Scope::Orders => "orders",
            Scope::Admin => "admin",
        }
    }
}

/// One `[[http.tokens]]` entry. The secret itself is never in the config file: either its
/// SHA-256 (`token_sha256`, hex) or a file holding the token (`token_file`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token; recorded on what it writes (reservations, channel modes, movements).
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

/// `[http.tls]`: the listener's certificate chain and key, PEM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// `[http.limits]`: what a slow or hostile client may hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// A request's headers (and the TLS handshake) must arrive within this; an idle
    /// keep-alive connection is closed after it too.
    pub header_read_timeout_ms: u64,
    /// A request (body included) must be read and answered within this, or it gets 408.
    /// Streams (SSE) are bounded only up to their first byte.
    pub request_timeout_ms: u64,
    /// Most connections open at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 1024,
        }
    }
}
