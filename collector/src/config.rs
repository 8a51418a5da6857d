//! The collector's config file (`collector.toml`): the top-level table composed of each
//! component's own section, defined beside the component (`[ledger]` in `ledger`,
//! `[embedded_broker]` in `broker`, `[channels]` in `publish`, `[[locations]]` in
//! `authority`, `[operations]` in `alerts`, `[orders]` in `orders`, `[store]` in `store`).

use std::net::SocketAddr;

use serde::Deserialize;
use stocksync_common::catalog::CatalogConfig;
use stocksync_common::config::BrokerConfig;
use stocksync_runtime::server::{HttpLimits, HttpTlsConfig, TokenConfig};

use crate::alerts::OperationsConfig;
use crate::authority::LocationPolicy;
use crate::broker::EmbeddedBrokerConfig;
use crate::ledger::LedgerConfig;
use crate::publish::ChannelsConfig;

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
