//! `[operations]` in the collector's config: what the daily report and the alert rules count
//! as a problem, and where alerts go.

use std::path::PathBuf;

use serde::Deserialize;

/// What counts as a problem worth a report line or an alert, and where alerts go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationsConfig {
    /// A warehouse whose agents sent nothing for this long is silent.
    pub silent_after_secs: u64,
    /// A channel target failing (an open push error) for this long is failing.
    pub channel_failing_after_secs: u64,
    /// More unresolved exceptions than this opened in the last 24 hours fires an alert.
    pub exceptions_per_day: u64,
    /// A SKU counts as sold out but listed only once its stock has not changed for this
    /// long, so the channels' normal publishing delay is not reported.
    pub sold_out_grace_secs: u64,
    /// How often alert conditions are evaluated.
    pub evaluate_every_ms: u64,
    /// Publish alerts on `stocksync/v1/alerts/<rule>` (QoS 1).
    pub mqtt: bool,
    /// Signed POST of each alert (same signature scheme as channel webhooks).
    pub webhook: Option<AlertWebhookConfig>,
}

impl Default for OperationsConfig {
    fn default() -> Self {
        OperationsConfig {
            silent_after_secs: 900,
            channel_failing_after_secs: 900,
            exceptions_per_day: 10,
            sold_out_grace_secs: 60,
            evaluate_every_ms: 5_000,
            mqtt: true,
            webhook: None,
        }
    }
}

/// Where alert webhooks go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertWebhookConfig {
    /// `http://` endpoint receiving alerts.
    pub url: String,
    /// File holding the HMAC-SHA256 signing secret.
    pub secret_file: PathBuf,
}
