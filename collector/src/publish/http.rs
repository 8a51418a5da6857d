//! Outgoing HTTP for webhook and Shopify targets: ureq 3 on the blocking pool, so a slow
//! endpoint holds a blocking thread, never the async runtime. `https://` uses rustls (ring)
//! with the public web roots, or only the CAs of a target's `ca_file` (a private CA).
//!
//! Secrets: ureq's own debug log redacts the Authorization header, but ureq-proto traces the
//! raw request bytes; the collector's binary caps that log target (`LOG_DIRECTIVES`).

use std::path::Path;
use std::time::Duration;

use super::limit;

/// What came back from one request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// Log directives that keep secrets out of the log at any `RUST_LOG`: ureq-proto's trace
/// output is a dump of each request's bytes, bearer and Shopify tokens included.
pub const LOG_DIRECTIVES: &[&str] = &["ureq_proto=info"];

/// Checks a target's `url` scheme; `Err` names what is wrong.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("url `{url}`: must start with https:// or http://"))
    }
}

/// A client with a request timeout that treats every status as a reply, not an error;
/// trusting only the CAs in `ca_file` when one is given.
pub fn agent(timeout: Duration, ca_file: Option<&Path>) -> Result<ureq::Agent, String> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
        let certs = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("ca_file {}: no PEM certificate", path.display()));
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .tls_config(tls.build())
        .build()
        .into())
}

/// POSTs `body` with `headers`; `Err` is a transport failure (refused, timeout, ...).
pub async fn post(
    agent: &ureq::Agent,
    url: &str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
) -> Result<Reply, String> {
    let (agent, url) = (agent.clone(), url.to_string());
    tokio::task::spawn_blocking(move || {
        let mut req = agent.post(&url).header("content-type", "application/json");
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let mut resp = req
            .send(&body[..])
            .map_err(|e| format!("POST {url}: {e}"))?;
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(limit::retry_after);
        let body = resp
            .body_mut()
            .with_config()
            .limit(4 << 20)
            .read_to_string()
            .unwrap_or_default();
        Ok(Reply {
            status: resp.status().as_u16(),
            retry_after,
            body,
        })
    })
    .await
    .map_err(|e| format!("HTTP task failed: {e}"))?
}
