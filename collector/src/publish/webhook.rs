//! Webhook target: signed JSON pushes to a channel's HTTP endpoint.
//!
//! Each request carries `X-Stocksync-Timestamp` (unix seconds) and
//! `X-Stocksync-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, so the
//! receiver can check origin and freshness, plus `Idempotency-Key` (channel and cursor).
//! A bearer token, if configured, is read from a file or a command and read again once on a
//! 401. A 429 passes its `Retry-After` to the delivery loop, which waits at least that long.
//!
//! Invariant: the body is the exact bytes that were signed.

use std::path::PathBuf;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::http::{self, Reply};
use super::limit::PushLimits;
use super::store::Published;
use super::target::{Failure, Target};
use super::{Channel, PublishError};

/// Signed JSON pushes to a channel's HTTP endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` endpoint receiving the pushes.
    pub url: String,
    /// PEM CA file to trust for `https://` instead of the public web roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// File holding the HMAC-SHA256 signing secret.
    pub secret_file: PathBuf,
    /// File holding the bearer token; re-read on a 401.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Command (argv) printing the bearer token; re-run on a 401.
    #[serde(default)]
    pub token_command: Option<Vec<String>>,
    #[serde(default)]
    pub limits: PushLimits,
}

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the bearer token comes from.
#[derive(Debug, Clone)]
enum TokenSource {
    None,
    File(PathBuf),
    Command(Vec<String>),
}

impl TokenSource {
    async fn read(&self) -> Result<Option<String>, String> {
        let source = self.clone();
        tokio::task::spawn_blocking(move || match source {
            TokenSource::None => Ok(None),
            TokenSource::File(path) => std::fs::read_to_string(&path)
                .map(|t| Some(t.trim().to_string()))
                .map_err(|e| format!("cannot read token file {}: {e}", path.display())),
            TokenSource::Command(argv) => {
                let (prog, args) = argv.split_first().ok_or("token_command is empty")?;
                let out = std::process::Command::new(prog)
                    .args(args)
                    .output()
                    .map_err(|e| format!("token command `{prog}`: {e}"))?;
                if !out.status.success() {
                    return Err(format!("token command `{prog}` exited with {}", out.status));
                }
                Ok(Some(
                    String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ))
            }
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// Pushes a channel's values to a webhook.
pub struct WebhookTarget {
    url: String,
    secret: Vec<u8>,
    tokens: TokenSource,
    token: Option<String>,
    limits: PushLimits,
    agent: ureq::Agent,
}

impl WebhookConfig {
    /// The running target of `channel`. Reads the signing secret; a missing secret is a
    /// start-up error.
    pub fn build(&self, channel: &str) -> Result<WebhookTarget, PublishError> {
        let config = self;
        let err = |detail: String| PublishError::Config {
            channel: channel.into(),
            detail,
        };
        http::check_url(&config.url).map_err(|e| err(format!("webhook {e}")))?;
        let secret = std::fs::read(&config.secret_file).map_err(|e| {
            err(format!(
                "cannot read webhook secret_file {}: {e}",
                config.secret_file.display()
            ))
        })?;
        let secret = String::from_utf8_lossy(&secret).trim().as_bytes().to_vec();
        let tokens = match (&config.token_file, &config.token_command) {
            (Some(_), Some(_)) => {
                return Err(err("set token_file or token_command, not both".into()))
            }
            (Some(f), None) => TokenSource::File(f.clone()),
            (None, Some(c)) => TokenSource::Command(c.clone()),
            (None, None) => TokenSource::None,
        };
        Ok(WebhookTarget {
            url: config.url.clone(),
            secret,
            tokens,
            token: None,
            limits: config.limits.clone(),
            agent: http::agent(
                Duration::from_millis(config.limits.timeout_ms),
                config.ca_file.as_deref(),
            )
            .map_err(|e| err(format!("webhook {e}")))?,
        })
    }
}

impl WebhookTarget {
    async fn send(&self, body: &[u8]) -> Result<Reply, Failure> {
        let ts = super::store::now_ms() / 1000;
        let mut headers = vec![
            ("x-stocksync-timestamp", ts.to_string()),
            (
                "x-stocksync-signature",
                format!("sha256={}", signature(&self.secret, ts, body)),
            ),
        ];
        if let Some(token) = &self.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        http::post(&self.agent, &self.url, headers, body.to_vec())
            .await
            .map_err(Failure::new)
    }
}

/// The JSON body of one push.
pub fn body(channel: &str, items: &[Published]) -> Vec<u8> {
    let cursor = items.iter().map(|i| i.cursor).max().unwrap_or(0);
    serde_json::to_vec(&serde_json::json!({
        "channel": channel,
        "cursor": cursor,
        "items": items,
    }))
    .expect("json")
}

impl Target for WebhookTarget {
    const NAME: &'static str = "webhook";

    fn limits(&self) -> PushLimits {
        self.limits.clone()
    }

    async fn deliver(&mut self, channel: &Channel, items: &[Published]) -> Result<(), Failure> {
        if self.token.is_none() {
            self.token = self.tokens.read().await.map_err(Failure::new)?;
        }
        let body = body(&channel.name, items);
        let mut reply = self.send(&body).await?;
        if reply.status == 401 && !matches!(self.tokens, TokenSource::None) {
            // The token may have been rotated: read it again and retry once.
            self.token = self.tokens.read().await.map_err(Failure::new)?;
            reply = self.send(&body).await?;
        }
        match reply.status {
            200..=299 => Ok(()),
            status => Err(Failure {
                detail: format!(
                    "webhook {} answered {status}: {}",
                    self.url,
                    reply.body.chars().take(200).collect::<String>()
                ),
                retry_after: reply.retry_after,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python hmac.new(b"key", b'1700000000.{"a":1}', sha256).
        assert_eq!(
            signature(b"key", 1_700_000_000, br#"{"a":1}"#),
            "a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
        );
        assert_ne!(signature(b"key", 1, b"x"), signature(b"key", 2, b"x"));
        assert_ne!(signature(b"key", 1, b"x"), signature(b"other", 1, b"x"));
    }
}
