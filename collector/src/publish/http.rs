//! Outgoing HTTP for webhook and Shopify targets: ureq 3 (already in the workspace, no TLS
//! features) on the blocking pool, so a slow endpoint holds a blocking thread, never the
//! async runtime. Plain `http://` only; a TLS endpoint needs a local TLS proxy for now.

use std::time::Duration;

use super::limit;

/// What came back from one request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// A client with a request timeout that treats every status as a reply, not an error.
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into()
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
