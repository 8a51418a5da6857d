//! Channel publishing: each sales channel gets its own sellable number per SKU, shaped by its
//! rules, within a second of the movement that changed it.
//!
//! Data flow: the ledger announces the stock keys of every commit -> `compute` recomputes
//! only the (channel, SKU) pairs those keys can affect, folding bursts into one pass per
//! `coalesce_ms` -> `store` records the values that changed and appends them to the
//! channel's change log (the feed cursor) -> one task per push target (`mqtt`, `webhook`,
//! `shopify`) delivers the log from its own durable cursor (`target`).
//!
//! Invariant: what a target is sent is always a value that was stored as published first,
//! so the feed, MQTT, webhooks and Shopify never disagree for longer than delivery takes,
//! and a restart resumes every target where it stopped.

pub mod compute;
mod http;
pub use http::LOG_DIRECTIVES;
pub mod limit;
pub mod mqtt;
pub mod sellable;
pub mod shopify;
pub mod stats;
pub mod store;
pub mod target;
pub mod webhook;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stocksync_common::config::{BrokerConfig, ChannelConfig, ChannelMode, CollectorConfig};
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use crate::ledger::Ledger;
use compute::Dirty;
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
    all_bundles: BTreeSet<String>,
    /// SKUs the catalog defines, so a full recompute also lists SKUs never stocked.
    pub catalog_skus: BTreeSet<String>,
    /// Newest cursor written for this channel; targets and SSE streams wait on it.
    pub cursor: watch::Sender<i64>,
    /// The mode set by config or API.
    mode: Mutex<ModeState>,
}

impl Channel {
    fn new(config: &ChannelConfig, catalog: &CollectorConfig) -> Result<Channel, PublishError> {
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
            let parts = def
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
        Ok(Channel {
            name: config.name.clone(),
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
}

/// A request to the recompute task.
enum Control {
    /// Recompute every SKU of one channel (after a mode switch).
    Full(String),
}

/// A background task of the publisher.
pub type Task = JoinHandle<anyhow::Result<()>>;

/// The running publisher: channels, their store and the tasks that feed them.
pub struct Publisher {
    pub store: Store,
    pub channels: BTreeMap<String, Arc<Channel>>,
    pub stats: Arc<Stats>,
    control: mpsc::Sender<Control>,
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
        let (control, control_rx) = mpsc::channel(64);
        let publisher = Arc::new(Publisher {
            store: store.clone(),
            channels,
            stats: stats.clone(),
            control,
        });
        let mut tasks = Vec::new();
        let coalesce = Duration::from_millis(config.channels.coalesce_ms);
        tasks.push(tokio::spawn(recompute(
            publisher.clone(),
            ledger,
            coalesce,
            control_rx,
            shutdown.clone(),
        )));
        for channel in publisher.channels.values() {
            tasks.extend(target::spawn_all(
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
        *channel.mode.lock().expect("mode lock") = state.clone();
        self.control
            .send(Control::Full(name.into()))
            .await
            .map_err(|_| PublishError::Closed)?;
        Ok(state)
    }
}

/// Applies the persisted mode: a non-live mode in the config wins (the operator rolled back
/// by editing it); otherwise a mode set through the API stays in force across restarts.
async fn load_modes(publisher: &Publisher) -> Result<(), PublishError> {
    for channel in publisher.channels.values() {
        let name = channel.name.clone();
        let saved = publisher.store.run(move |c| store::mode(c, &name)).await?;
        if let Some(saved) = saved {
            if channel.config.mode == ChannelMode::Live {
                *channel.mode.lock().expect("mode lock") = saved;
            }
        }
    }
    Ok(())
}

/// Recomputes and stores what each channel should show, for every commit, until shutdown.
async fn recompute(
    publisher: Arc<Publisher>,
    ledger: Ledger,
    coalesce: Duration,
    mut control: mpsc::Receiver<Control>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut changes = ledger.subscribe_changes();
    load_modes(&publisher).await?;
    let names: Vec<String> = publisher.channels.keys().cloned().collect();
    pass(&publisher, &ledger, &names, Dirty::All, &mut shutdown).await;
    let mut last_pass = tokio::time::Instant::now();
    loop {
        let mut dirty = BTreeSet::new();
        let mut all = false;
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            Some(Control::Full(name)) = control.recv() => {
                pass(&publisher, &ledger, &[name], Dirty::All, &mut shutdown).await;
                continue;
            }
            r = changes.recv() => match r {
                Ok(keys) => dirty.extend(keys.iter().cloned()),
                Err(broadcast::error::RecvError::Lagged(_)) => all = true,
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
        }
        // A pass at most every `coalesce`: the first change after a quiet spell goes out at
        // once, a burst is folded into the next pass.
        let until = last_pass + coalesce;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => break,
                r = changes.recv() => match r {
                    Ok(keys) => dirty.extend(keys.iter().cloned()),
                    Err(broadcast::error::RecvError::Lagged(_)) => all = true,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        // Anything already waiting joins this pass too.
        while let Ok(keys) = changes.try_recv() {
            dirty.extend(keys.iter().cloned());
        }
        let dirty = if all { Dirty::All } else { Dirty::Keys(dirty) };
        last_pass = tokio::time::Instant::now();
        pass(&publisher, &ledger, &names, dirty, &mut shutdown).await;
    }
}

/// Runs a pass; after a failure (e.g. storage busy past its timeout) logs it and retries a
/// full pass every second until one succeeds or shutdown, so no change is ever left behind.
async fn pass(
    publisher: &Arc<Publisher>,
    ledger: &Ledger,
    names: &[String],
    dirty: Dirty,
    shutdown: &mut watch::Receiver<bool>,
) {
    let mut dirty = dirty;
    while let Err(e) = run_pass(publisher, ledger, names, dirty).await {
        tracing::error!(error = %e, "channel recompute failed; retrying in 1 s");
        dirty = Dirty::All;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// One recompute of `names` for `dirty`; stores changed values and wakes the targets.
async fn run_pass(
    publisher: &Arc<Publisher>,
    ledger: &Ledger,
    names: &[String],
    dirty: Dirty,
) -> Result<(), PublishError> {
    for name in names {
        let channel = publisher.channel(name)?.clone();
        let mode = channel.mode().mode;
        let (ledger, ch, d) = (ledger.clone(), channel.clone(), dirty.clone());
        let values = tokio::task::spawn_blocking(move || {
            ledger.read(|conn| compute::values(conn, &ch, mode, &d))
        })
        .await
        .map_err(|_| PublishError::Closed)??;
        if values.is_empty() {
            continue;
        }
        let n = name.clone();
        let last = publisher
            .store
            .run(move |c| store::publish(c, &n, &values))
            .await?;
        if let Some(cursor) = last {
            channel.cursor.send_replace(cursor);
        }
    }
    Ok(())
}
