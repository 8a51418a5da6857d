//! Channel publishing: each sales channel gets its own sellable number per SKU, shaped by its
//! rules, within a second of the movement that changed it.
//!
//! Data flow: the ledger announces the stock keys of every commit -> each channel's
//! `recompute` task passes at once when idle and folds what arrives during a pass into the
//! next (waiting at most `coalesce_ms`) -> `compute` recomputes only the (channel, SKU)
//! pairs those keys can affect -> `store` (its own SQLite file, `file`) records the values
//! that changed and appends them to the channel's change log (the feed cursor) -> one task
//! per push target (`mqtt`, `webhook`, `shopify`) delivers the log from its own durable
//! cursor (`target`).
//!
//! Invariant: what a target is sent is always a value that was stored as published first,
//! so the feed, MQTT, webhooks and Shopify never disagree for longer than delivery takes,
//! and a restart resumes every target where it stopped.

pub mod compute;
mod config;
pub mod file;
mod http;
pub use http::LOG_DIRECTIVES;
pub mod limit;
pub mod log;
pub mod mqtt;
mod recompute;
pub mod sellable;
pub mod shopify;
pub mod stats;
pub mod store;
mod store_state;
pub mod target;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stocksync_common::config::BrokerConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::CollectorConfig;
use crate::ledger::Ledger;
pub use config::{ChannelConfig, ChannelMode, ChannelsConfig};
use sellable::{Eligible, Rules};
use stats::Stats;
use store::{ModeState, Store};

/// Publishing failures.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("channel store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger error: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("channel `{channel}`: {detail}")]
    Config { channel: String, detail: String },
    #[error("no channel named `{0}`")]
    UnknownChannel(String),
    #[error("publisher has stopped")]
    Closed,
    #[cfg(feature = "postgres")]
    #[error("channel store (postgres): {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// One configured channel, resolved against the catalog.
pub struct Channel {
    pub name: String,
    pub config: ChannelConfig,
    pub rules: Rules,
    pub eligible: Eligible,
    /// Canonical SKU -> the channel's own id.
    aliases: BTreeMap<String, String>,
    /// Plain SKUs it sells; empty = every SKU that is not a bundle.
    skus: BTreeSet<String>,
    /// Bundle SKUs it sells -> (component, quantity).
    pub bundles: BTreeMap<String, Vec<(String, u64)>>,
    /// Component SKU -> the bundles it sells that contain it, so a change costs a lookup
    /// per touched SKU, not a scan of every bundle.
    pub bundles_of: BTreeMap<String, BTreeSet<String>>,
    all_bundles: BTreeSet<String>,
    /// SKUs the catalog defines, so a full recompute also lists SKUs never stocked.
    pub catalog_skus: BTreeSet<String>,
    /// Newest cursor written for this channel; targets and SSE streams wait on it.
    pub cursor: watch::Sender<i64>,
    /// The mode set by config or API.
    mode: Mutex<ModeState>,
}

impl Channel {
    pub(crate) fn new(
        config: &ChannelConfig,
        catalog: &CollectorConfig,
    ) -> Result<Channel, PublishError> {
        let err = |detail: String| PublishError::Config {
            channel: config.name.clone(),
            detail,
        };
        if config.name.is_empty() || config.name.contains(['/', '+', '#']) {
            return Err(err("name must be non-empty without `/`, `+` or `#`".into()));
        }
        let rules = Rules::from_config(config).map_err(err)?;
        let defs: BTreeMap<_, _> = catalog
            .catalog
            .bundles
            .iter()
            .map(|b| (b.sku.clone(), b))
            .collect();
        let mut bundles = BTreeMap::new();
        for b in &config.bundles {
            let def = defs
                .get(b)
                .ok_or_else(|| err(format!("bundle `{b}` is not in catalog.bundles")))?;
            let parts: Vec<(String, u64)> = def
                .components
                .iter()
                .map(|c| (c.sku.clone(), c.quantity))
                .collect();
            bundles.insert(b.clone(), parts);
        }
        let mut aliases = BTreeMap::new();
        for a in catalog.catalog.aliases.iter().rev() {
            if a.source == config.name {
                aliases.insert(a.sku.clone(), a.external.clone());
            }
        }
        let mut bundles_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (bundle, parts) in &bundles {
            for (component, _) in parts {
                bundles_of
                    .entry(component.clone())
                    .or_default()
                    .insert(bundle.clone());
            }
        }
        Ok(Channel {
            name: config.name.clone(),
            bundles_of,
            rules,
            eligible: Eligible::new(&config.locations),
            aliases,
            skus: config.skus.iter().cloned().collect(),
            bundles,
            all_bundles: defs.keys().cloned().collect(),
            catalog_skus: catalog.catalog.skus.iter().map(|s| s.id.clone()).collect(),
            cursor: watch::channel(0).0,
            mode: Mutex::new(ModeState {
                mode: config.mode,
                set_by: "config".into(),
                reason: None,
                set_at_ms: store::now_ms(),
            }),
            config: config.clone(),
        })
    }

    /// True if the channel lists plain SKU `sku`.
    pub fn sells(&self, sku: &str) -> bool {
        if self.all_bundles.contains(sku) {
            return false;
        }
        self.skus.is_empty() || self.skus.contains(sku)
    }

    /// The channel's own id for canonical `sku`.
    pub fn channel_sku(&self, sku: &str) -> String {
        self.aliases.get(sku).cloned().unwrap_or_else(|| sku.into())
    }

    /// Current mode, who set it and when.
    pub fn mode(&self) -> ModeState {
        self.mode.lock().expect("mode lock").clone()
    }

    pub(crate) fn set_mode_state(&self, state: ModeState) {
        *self.mode.lock().expect("mode lock") = state;
    }
}

/// A background task of the publisher.
pub type Task = JoinHandle<anyhow::Result<()>>;

/// The running publisher: channels, their store and the tasks that feed them.
pub struct Publisher {
    pub store: Store,
    pub channels: BTreeMap<String, Arc<Channel>>,
    pub stats: Arc<Stats>,
    /// Per channel: asks its recompute task for a full pass (after a mode switch).
    full: BTreeMap<String, mpsc::Sender<()>>,
}

impl Publisher {
    /// Resolves the channels, opens the store and starts recompute and target tasks.
    pub fn start(
        config: &CollectorConfig,
        ledger: Ledger,
        broker: &BrokerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(Arc<Publisher>, Vec<Task>), PublishError> {
        let store = Store::open(&config.ledger.path)?;
        let stats = Arc::new(Stats::default());
        let mut channels = BTreeMap::new();
        for c in &config.channels.channel {
            let channel = Arc::new(Channel::new(c, config)?);
            if channels.insert(c.name.clone(), channel).is_some() {
                return Err(PublishError::Config {
                    channel: c.name.clone(),
                    detail: "configured twice".into(),
                });
            }
        }
        let mut full = BTreeMap::new();
        let mut full_rx = BTreeMap::new();
        for name in channels.keys() {
            let (tx, rx) = mpsc::channel(4);
            full.insert(name.clone(), tx);
            full_rx.insert(name.clone(), rx);
        }
        let publisher = Arc::new(Publisher {
            store: store.clone(),
            channels,
            stats: stats.clone(),
            full,
        });
        let mut tasks = Vec::new();
        for (name, full) in full_rx {
            let channel = publisher.channels[&name].clone();
            let coalesce = channel
                .config
                .coalesce_ms
                .unwrap_or(config.channels.coalesce_ms);
            tasks.push(tokio::spawn(recompute::run(recompute::Task {
                publisher: publisher.clone(),
                channel,
                ledger: ledger.clone(),
                coalesce: Duration::from_millis(coalesce),
                full,
                shutdown: shutdown.clone(),
            })));
        }
        for channel in publisher.channels.values() {
            tasks.extend(target::spawn_push(
                channel, &store, &stats, broker, &shutdown,
            )?);
        }
        Ok((publisher, tasks))
    }

    /// The channel named `name`.
    pub fn channel(&self, name: &str) -> Result<&Arc<Channel>, PublishError> {
        self.channels
            .get(name)
            .ok_or_else(|| PublishError::UnknownChannel(name.into()))
    }

    /// Switches a channel to `mode` (durably) and republishes it accordingly.
    pub async fn set_mode(
        &self,
        name: &str,
        mode: ChannelMode,
        set_by: String,
        reason: Option<String>,
    ) -> Result<ModeState, PublishError> {
        let channel = self.channel(name)?.clone();
        let state = ModeState {
            mode,
            set_by,
            reason,
            set_at_ms: store::now_ms(),
        };
        let (n, s) = (name.to_string(), state.clone());
        self.store.run(move |c| store::set_mode(c, &n, &s)).await?;
        channel.set_mode_state(state.clone());
        // A full pass is already asked for if the queue is full: one is enough.
        if let Some(full) = self.full.get(name) {
            if let Err(mpsc::error::TrySendError::Closed(())) = full.try_send(()) {
                return Err(PublishError::Closed);
            }
        }
        Ok(state)
    }
}
