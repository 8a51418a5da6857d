//! Configuration types for the agent and the collector, read from TOML.
//!
//! Every field has a default that is safe for a single-machine trial; the annotated
//! examples in `deploy/` document each one for operators. Unknown keys are refused so that a
//! typo is an error at start-up, not a silently ignored setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Failure to load a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot read password file {path}: {source}")]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS file {path}: {detail}")]
    Tls { path: PathBuf, detail: String },
}

/// An error and its causes on one line, each cause once: errors here carry their source in
/// their own message, so printing the chain as well would say everything twice.
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Loads and parses a TOML config file.
pub fn load<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// How to reach an MQTT broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    /// File holding the password (kept out of the config so configs can be shared).
    pub password_file: Option<PathBuf>,
    /// MQTT client id; defaults to one derived from the agent id or `stocksync-collector`.
    pub client_id: Option<String>,
    pub keep_alive_secs: u64,
    /// `[broker.tls]`: connect over TLS. Without it the link is plain MQTT.
    pub tls: Option<MqttTlsConfig>,
}

/// TLS towards an MQTT broker: the CA to trust and, if the broker asks, a client certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA(s) the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate (chain) this client presents; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password_file: None,
            client_id: None,
            keep_alive_secs: 15,
            tls: None,
        }
    }
}

impl BrokerConfig {
    /// Username and password, reading the password file if one is set.
    pub fn credentials(&self) -> Result<Option<(String, String)>, ConfigError> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Secret {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }
}

/// The agent's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique, stable id of this agent; with the journal seq it identifies every movement.
    pub agent_id: String,
    /// The warehouse this agent journals for.
    pub warehouse: String,
    #[serde(default)]
    pub http: AgentHttpConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    /// The central broker the forwarder publishes to.
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Optional MQTT input from scanners on a (local) broker.
    #[serde(default)]
    pub scanner: Option<ScannerConfig>,
    /// How far ahead of the agent's clock an `occurred_at` may be.
    #[serde(default)]
    pub clock: ClockConfig,
    /// GS1 EPCIS 2.0 events over HTTP (`POST /v1/epcis/events`).
    #[serde(default)]
    pub epcis: crate::inputs::EpcisConfig,
    /// Watched folders of WMS CSV exports.
    #[serde(default)]
    pub files: Vec<crate::inputs::FilesConfig>,
}

/// The sources one input may speak for. Every input (HTTP listener, scanner topic, file
/// folder) has one: a record claiming a source outside it is refused, because identity
/// comes from how a record arrived, never from what its payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBinding {
    /// Assumed for records that name no source; always one of `sources`.
    pub default_source: String,
    pub sources: Vec<String>,
}

impl SourceBinding {
    /// The binding of an input configured with `default_source` and `sources` (empty: only
    /// the default). `input` names the input in the error.
    pub fn new(input: &str, default_source: &str, sources: &[String]) -> Result<Self, String> {
        if sources.is_empty() {
            return Ok(SourceBinding {
                default_source: default_source.to_string(),
                sources: vec![default_source.to_string()],
            });
        }
        if !sources.iter().any(|s| s == default_source) {
            return Err(format!(
                "{input}: default_source `{default_source}` is not in its sources [{}]",
                sources.join(", ")
            ));
        }
        Ok(SourceBinding {
            default_source: default_source.to_string(),
            sources: sources.to_vec(),
        })
    }
}

/// What the agent does with an `occurred_at` ahead of its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AheadPolicy {
    /// Refuse the record (`422 $.occurred_at`, or the rejects queue on the scanner path).
    Refuse,
    /// Journal it at the receive time, with a note on the movement saying what was claimed.
    Clamp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// Largest accepted lead of `occurred_at` over the agent's clock, in seconds.
    pub max_ahead_secs: u64,
    pub on_ahead: AheadPolicy,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            max_ahead_secs: 300,
            on_ahead: AheadPolicy::Refuse,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentHttpConfig {
    pub listen: SocketAddr,
    /// Source system assumed for HTTP records that name none.
    pub default_source: String,
    /// Sources HTTP records may claim; empty means only `default_source`.
    pub sources: Vec<String>,
    /// Most records in one request.
    pub max_batch: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// `[[http.tokens]]`: bearer tokens; with none configured the API is open.
    pub tokens: Vec<TokenConfig>,
    /// `[http.tls]`: serve HTTPS instead of HTTP.
    pub tls: Option<HttpTlsConfig>,
    /// `[http.limits]`: timeouts and the connection limit.
    pub limits: HttpLimits,
}

impl Default for AgentHttpConfig {
    fn default() -> Self {
        AgentHttpConfig {
            listen: "127.0.0.1:8081".parse().expect("valid"),
            default_source: "wms".into(),
            sources: Vec::new(),
            max_batch: 1000,
            max_body_bytes: 4 << 20,
            tokens: Vec::new(),
            tls: None,
            limits: HttpLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    pub path: PathBuf,
    /// Most unacknowledged movements kept; past it new input is refused with 503, never dropped.
    pub max_backlog: u64,
    /// How long acknowledged movements stay in the journal for audit before pruning.
    pub retain_acked_hours: u64,
    /// How long idempotency keys and movement ids are remembered for deduplication.
    pub idempotency_days: u64,
    /// Most refused records kept in the rejects queue; the oldest are dropped first (counted).
    pub max_rejects: u64,
    /// Days a refused record stays in the rejects queue.
    pub rejects_retain_days: u64,
    /// Largest journal file in bytes (0: only the disk limits it); past it input is refused
    /// with `503 disk full` like on a full disk.
    pub max_file_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: "agent-journal.db".into(),
            max_backlog: 10_000_000,
            retain_acked_hours: 24,
            idempotency_days: 7,
            max_rejects: 10_000,
            rejects_retain_days: 30,
            max_file_bytes: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ForwardConfig {
    /// Most movements in one published batch.
    pub batch_max: usize,
    /// Batches published but not yet acknowledged by the collector.
    pub max_inflight_batches: usize,
    /// Resend everything unacknowledged when the oldest batch waited this long for its ack.
    pub ack_timeout_ms: u64,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        ForwardConfig {
            batch_max: 500,
            max_inflight_batches: 16,
            ack_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScannerConfig {
    /// The broker the scanners publish to (often a local one in the warehouse).
    pub broker: BrokerConfig,
    /// Topic filter the scanners publish JSON movements on.
    pub topic: String,
    /// Source system assumed for scanner records that name none.
    pub default_source: String,
    /// Sources scanner records may claim; empty means only `default_source`.
    pub sources: Vec<String>,
    /// Topic filter scanners publish GS1 EPCIS 2.0 documents on (journaled under
    /// `default_source`, with the `[epcis]` rules); none by default.
    pub epcis_topic: Option<String>,
}

impl Default for ScannerConfig {
    fn default() -> Self {
        ScannerConfig {
            broker: BrokerConfig::default(),
            topic: "scanners/+/movements".into(),
            default_source: "scanner".into(),
            sources: Vec::new(),
            epcis_topic: None,
        }
    }
}

/// The collector's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    #[serde(default)]
    pub http: CollectorHttpConfig,
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// An external broker (e.g. Mosquitto). Without one the collector runs its embedded broker.
    #[serde(default)]
    pub broker: Option<BrokerConfig>,
    #[serde(default)]
    pub embedded_broker: EmbeddedBrokerConfig,
    /// SKUs, packs, bundles and aliases; distributed to agents so they normalise offline.
    #[serde(default)]
    pub catalog: CatalogConfig,
    /// Sales channels and the sellable numbers published to each.
    #[serde(default)]
    pub channels: ChannelsConfig,
    /// Source-of-truth rules per warehouse. A warehouse not listed gets `LocationPolicy::open`.
    #[serde(default)]
    pub locations: Vec<LocationPolicy>,
    /// Order routing (`[orders]`); its types live with the collector's orders code, which
    /// checks this table at start-up.
    #[serde(default)]
    pub orders: toml::Table,
    /// Daily report and alert thresholds, and where alerts go.
    #[serde(default)]
    pub operations: OperationsConfig,
    /// Where stock is kept (`[store]`): SQLite (default) or PostgreSQL; its types live with
    /// the collector's store code, which checks this table at start-up.
    #[serde(default)]
    pub store: toml::Table,
}

impl CollectorConfig {
    /// The rules for `warehouse`: its `[[locations]]` entry, or the open default.
    pub fn location_policy(&self, warehouse: &str) -> LocationPolicy {
        self.locations
            .iter()
            .find(|l| l.warehouse == warehouse)
            .cloned()
            .unwrap_or_else(|| LocationPolicy::open(warehouse))
    }
}

/// Who is the source of truth for one warehouse, and what happens to everyone else.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocationPolicy {
    pub warehouse: String,
    /// The authoritative source system (`wms`, `erp`, `scanner`, ...). Only its counts set
    /// on_hand. `None`: every source is authoritative (the open default).
    #[serde(default)]
    pub authority: Option<String>,
    /// What deltas from other sources do.
    #[serde(default)]
    pub other_sources: SourcePolicy,
    /// Where returns are held until inspected.
    #[serde(default)]
    pub returns_to: ReturnsPolicy,
}

impl LocationPolicy {
    /// The default for an unconfigured warehouse: no authority, so every source applies and
    /// every count is authoritative; returns are held in quality control.
    pub fn open(warehouse: &str) -> LocationPolicy {
        LocationPolicy {
            warehouse: warehouse.to_string(),
            authority: None,
            other_sources: SourcePolicy::Apply,
            returns_to: ReturnsPolicy::QualityControl,
        }
    }
}

/// Treatment of movements from a source that is not the location's authority.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourcePolicy {
    /// Applied, marked provisional until the authority's next count confirms or corrects it.
    #[default]
    Apply,
    /// Recorded in the ledger and shown in history, with no effect on stock.
    Audit,
    /// Kept in the rejects queue (field `source`), no effect on stock.
    Reject,
}

/// Where returns land at a location.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReturnsPolicy {
    #[default]
    QualityControl,
    Available,
}

/// The product catalog: what the canonical ids are and how other systems spell them.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogConfig {
    pub skus: Vec<SkuDef>,
    pub bundles: Vec<BundleDef>,
    pub aliases: Vec<AliasDef>,
    /// Location codes of other systems, e.g. an ERP's `AMS-DC1-A01` -> `ams` / `A-01`.
    pub locations: Vec<LocationAliasDef>,
}

/// How a source system spells a warehouse or a bin.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocationAliasDef {
    pub source: String,
    /// The code as that system spells it (in a record's `warehouse` or `bin` field).
    pub external: String,
    pub warehouse: String,
    #[serde(default)]
    pub bin: Option<String>,
}

/// One canonical SKU.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SkuDef {
    pub id: String,
    #[serde(default)]
    pub gtin: Option<String>,
    /// The unit stock is counted in (default `each`).
    #[serde(default = "default_base_unit")]
    pub base_unit: String,
    /// Pack sizes in base units, e.g. `{ case = 12, inner = 6 }`.
    #[serde(default)]
    pub packs: std::collections::BTreeMap<String, u64>,
}

fn default_base_unit() -> String {
    crate::model::BASE_UNIT.to_string()
}

/// A bundle or kit: sold as one SKU, stocked as its components.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BundleDef {
    pub sku: String,
    pub components: Vec<ComponentDef>,
}

/// One component of a bundle.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ComponentDef {
    pub sku: String,
    pub quantity: u64,
}

/// How a source system or channel spells a canonical SKU.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AliasDef {
    /// Source system (`wms`, `erp`, ...) or channel name.
    pub source: String,
    /// The id as that system spells it.
    pub external: String,
    /// The canonical SKU id.
    pub sku: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorHttpConfig {
    pub listen: SocketAddr,
    /// `[[http.tokens]]`: bearer tokens; with none configured the API is open.
    pub tokens: Vec<TokenConfig>,
    /// `[http.tls]`: serve HTTPS instead of HTTP.
    pub tls: Option<HttpTlsConfig>,
    /// `[http.limits]`: timeouts and the connection limit.
    pub limits: HttpLimits,
}

impl Default for CollectorHttpConfig {
    fn default() -> Self {
        CollectorHttpConfig {
            listen: "127.0.0.1:8080".parse().expect("valid"),
            tokens: Vec::new(),
            tls: None,
            limits: HttpLimits::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    pub path: PathBuf,
    /// A movement dated more than this far ahead of the collector's clock goes to the
    /// rejects queue (`$.occurred_at`) instead of the ledger.
    pub max_future_skew_secs: u64,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            path: "collector-ledger.db".into(),
            max_future_skew_secs: 300,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    pub listen: SocketAddr,
    /// Largest MQTT payload the embedded broker accepts, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: "127.0.0.1:1883".parse().expect("valid"),
            max_payload_bytes: 1 << 20,
        }
    }
}

// ---- Channel publishing (issue 4) ----

/// Every sales channel stocksync publishes sellable numbers to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Under load (changes arriving while a recompute runs), changes are folded into one
    /// recompute for up to this long, so one hot SKU produces at most one published change
    /// per window; when idle a change is recomputed at once. A channel may set its own.
    pub coalesce_ms: u64,
    /// One `[[channels.channel]]` table per channel.
    pub channel: Vec<ChannelConfig>,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        ChannelsConfig {
            coalesce_ms: 10,
            channel: Vec::new(),
        }
    }
}

/// One sales channel: which stock it may sell, how the number is shaped, where it goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    /// Channel name; also the `source` of its entries in `catalog.aliases`.
    pub name: String,
    /// Warehouses (`ams`) or bins (`ams/A-01`) whose available stock it may sell; `*` = all.
    pub locations: Vec<String>,
    /// Units held back from the pooled stock.
    #[serde(default)]
    pub safety_units: u64,
    /// Percent of the pooled stock held back (rounded up), on top of `safety_units`.
    #[serde(default)]
    pub safety_percent: u8,
    /// Percent of what is left after the buffers that this channel gets (rounded down).
    #[serde(default = "default_share_percent")]
    pub share_percent: u8,
    /// Most units ever listed.
    #[serde(default)]
    pub max_listed: Option<u64>,
    /// Show 0 when the number is at or below this.
    #[serde(default)]
    pub zero_at_or_below: u64,
    /// Canonical SKUs it sells; empty = every non-bundle SKU.
    #[serde(default)]
    pub skus: Vec<String>,
    /// Bundle SKUs (from `catalog.bundles`) it sells.
    #[serde(default)]
    pub bundles: Vec<String>,
    /// `live`, `frozen` (stop publishing) or `zero` (publish 0 for everything).
    #[serde(default)]
    pub mode: ChannelMode,
    /// Retained JSON per SKU on `stocksync/v1/channels/<channel>/sellable/<sku>`.
    #[serde(default)]
    pub mqtt: bool,
    #[serde(default)]
    pub webhook: Option<WebhookConfig>,
    #[serde(default)]
    pub shopify: Option<ShopifyConfig>,
    /// This channel's own `[channels] coalesce_ms`.
    #[serde(default)]
    pub coalesce_ms: Option<u64>,
}

fn default_share_percent() -> u8 {
    100
}

/// The rollback switch of a channel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMode {
    #[default]
    Live,
    Frozen,
    Zero,
}

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

/// Rate limit, batching and retry policy of a push target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushLimits {
    /// Requests per second allowed on average (token bucket refill rate).
    pub rate_per_sec: f64,
    /// Requests allowed back to back (token bucket size).
    pub burst: u32,
    /// Most SKUs in one request.
    pub max_batch: usize,
    pub timeout_ms: u64,
    /// First retry delay; doubles per failure up to `backoff_max_ms`, with jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            rate_per_sec: 5.0,
            burst: 10,
            max_batch: 250,
            timeout_ms: 10_000,
            backoff_initial_ms: 200,
            backoff_max_ms: 60_000,
        }
    }
}

/// A Shopify-shaped GraphQL Admin endpoint (`inventorySetQuantities`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifyConfig {
    /// `https://` (or `http://`) GraphQL endpoint.
    pub url: String,
    /// PEM CA file to trust instead of the public web roots (a private CA or a test shop).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Location GID the channel's sellable number is set at.
    pub location_id: String,
    /// File holding the `X-Shopify-Access-Token`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub limits: PushLimits,
}

// ---- HTTP listeners: tokens, TLS, limits (issue 10) ----

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_agent_config_uses_defaults() {
        let cfg: AgentConfig = toml::from_str("agent_id = \"a1\"\nwarehouse = \"ams\"\n").unwrap();
        assert_eq!(cfg.forward.batch_max, 500);
        assert!(cfg.scanner.is_none());
    }

    #[test]
    fn typos_are_refused() {
        assert!(toml::from_str::<AgentConfig>(
            "agent_id = \"a\"\nwarehouse = \"w\"\nwarehous = 1\n"
        )
        .is_err());
    }
}
