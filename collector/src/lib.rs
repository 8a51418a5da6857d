//! stocksync collector: the one place where every warehouse's movements meet.
//!
//! `consume` takes batches off the broker, `ledger` commits them (deduplicated, append-only,
//! each with the treatment `authority` gives it) and `projection` derives stock from them
//! with the effect table in `merge`, independent of arrival order; `records` keeps drift,
//! conflicts and transfer discrepancies visible. Then the agent gets its ack. `consume` also
//! publishes the catalog, retained, so agents normalise offline. `api` serves the result. Without an external broker configured, `broker` runs an
//! embedded one so a trial needs nothing but Rust.

pub mod agent_rejects;
pub mod alerts;
pub mod api;
pub mod auth;
pub mod authority;
pub mod broker;
pub mod buildable;
pub mod config;
pub mod consume;
pub mod exceptions;
pub mod intake;
pub mod ledger;
pub mod lock;
pub mod merge;
pub mod metrics;
pub mod orders;
pub mod presence;
pub mod projection;
pub mod publish;
pub mod rebuild;
pub mod records;
pub mod replay;
pub mod report;
pub mod reserve;
pub mod stock;
pub mod store;
pub mod void;

use std::net::SocketAddr;
use std::sync::Arc;

use config::CollectorConfig;
use stocksync_common::catalog::Catalog;
use stocksync_common::config::BrokerConfig;
use stocksync_runtime::supervisor::{Supervisor, TaskHealth};
use tokio::sync::watch;

use ledger::Ledger;
use metrics::Metrics;

/// State shared by the collector's HTTP handlers.
pub struct App {
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    /// The validated catalog (bundles for the component view).
    pub catalog: Arc<Catalog>,
    pub channels: Arc<publish::Publisher>,
    /// Order routing rules and the catalog they expand bundles with.
    pub orders: Arc<orders::Orders>,
    /// Turns true when the collector stops; long-lived responses (SSE) end on it, so that
    /// graceful shutdown does not wait for clients that never hang up.
    pub shutdown: watch::Receiver<bool>,
    /// Which long-running tasks run, for `/healthz`.
    pub tasks: Arc<TaskHealth>,
    /// Report and alert thresholds.
    pub operations: alerts::OperationsConfig,
    /// The alert loop's counts.
    pub alert_stats: Arc<alerts::AlertStats>,
    /// Sends agents commands (retry a reject).
    pub agent_commands: agent_rejects::Commands,
}

impl App {
    /// True if `sku` is a SKU or a bundle of the catalog.
    pub fn in_catalog(&self, sku: &str) -> bool {
        self.catalog.config().skus.iter().any(|s| s.id == sku) || self.catalog.bundle(sku).is_some()
    }
}

/// A running collector.
pub struct Collector {
    pub http_addr: SocketAddr,
    /// The broker the collector uses (the embedded one's address when it runs one).
    pub broker: BrokerConfig,
    tasks: Supervisor,
    /// Released (dropped) only after every task has stopped; none for a PostgreSQL worker.
    _lock: Option<lock::LedgerLock>,
}

impl Collector {
    /// Binds its port and locks the ledger, starts the embedded broker if no external one
    /// is configured, and starts consuming and serving.
    pub async fn start(config: CollectorConfig) -> anyhow::Result<Collector> {
        let store = store::StoreConfig::from_table(&config.store)?;
        if store.backend == store::Backend::Postgres {
            #[cfg(feature = "postgres")]
            return store::postgres::worker::start(config, store).await;
            #[cfg(not(feature = "postgres"))]
            anyhow::bail!(
                "[store] backend = \"postgres\": this collector was built without the `postgres` feature (it is on by default; the demo and tools leave it out)"
            );
        }
        // Everything that can fail without touching the broker comes first: a second
        // collector on the same port or ledger fails here, having written nothing and
        // without taking the running one's broker session.
        let listen = config.http.listen;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen} ([http] listen): {e}"))?;
        let lock = lock::LedgerLock::acquire(&config.ledger.path)?;
        let catalog = Arc::new(Catalog::new(config.catalog.clone())?);
        check_channel_warehouses(&config, &[])?;
        let tokens = stocksync_runtime::server::auth::Tokens::load(&config.http.tokens)?;
        let http_addr = listener.local_addr()?;
        let server = stocksync_runtime::server::Server::new(
            listener,
            config.http.tls.as_ref(),
            config.http.limits.clone(),
        )?;
        let orders = Arc::new(orders::Orders::new(
            config.orders.clone(),
            config.channels.channel.iter().map(|c| c.name.clone()),
            catalog.clone(),
        )?);
        let broker = match config.broker.clone() {
            Some(b) => {
                // A second collector on the same broker fails here, before it takes the
                // running one's session (the embedded broker's port already refuses one).
                presence::check(&b, &consume::presence(&b, &consume::Subscriptions::All)?).await?;
                b
            }
            None => {
                let e = &config.embedded_broker;
                broker::start_embedded(e.listen, e.max_payload_bytes)?;
                tracing::info!(listen = %e.listen, "embedded MQTT broker running");
                BrokerConfig {
                    host: e.listen.ip().to_string(),
                    port: e.listen.port(),
                    ..Default::default()
                }
            }
        };
        let metrics = Arc::new(Metrics::default());
        let authority = authority::Authority::new(&config.locations);
        let intake = intake::Intake::new(config.ledger.max_future_skew_secs, Some(&catalog));
        let ledger = Ledger::open_checked(&config.ledger.path, metrics.clone(), authority, intake)?;
        let mut tasks = Supervisor::default();
        let watch_rx = tasks.shutdown_signal();
        let (channels, publish_tasks) =
            publish::Publisher::start(&config, ledger.clone(), &broker, watch_rx.clone())?;
        for task in publish_tasks {
            tasks.spawn("publish", async move { task.await? });
        }
        tasks.spawn(
            "consume",
            consume::run(
                broker.clone(),
                ledger.clone(),
                metrics.clone(),
                catalog.to_json(),
                consume::Subscriptions::All,
                watch_rx.clone(),
            ),
        );
        let (agent_commands, agent_rejects) = agent_rejects::connect(&broker)?;
        tasks.spawn(
            "agent_rejects",
            agent_rejects::run(agent_rejects, ledger.clone(), watch_rx.clone()),
        );

        tasks.spawn(
            "expire_reservations",
            expire_reservations(ledger.clone(), watch_rx.clone()),
        );
        tasks.spawn(
            "auto_reroute",
            orders::auto_reroute(ledger.clone(), orders.clone(), watch_rx.clone()),
        );

        let alert_stats = Arc::new(alerts::AlertStats::default());
        // Built here so that an unreadable alert secret stops the start, not a task later.
        let deliver = alerts::Deliver::start(&config.operations, &broker, watch_rx.clone())?;
        tasks.spawn(
            "alerts",
            alerts::run(
                config.operations.clone(),
                ledger.clone(),
                catalog.clone(),
                deliver,
                alert_stats.clone(),
                watch_rx.clone(),
            ),
        );

        let scheme = server.scheme();
        let router = api::router(Arc::new(App {
            ledger,
            metrics,
            catalog,
            channels,
            orders,
            shutdown: watch_rx.clone(),
            tasks: tasks.health(),
            operations: config.operations.clone(),
            alert_stats,
            agent_commands,
        }));
        let router = stocksync_runtime::server::auth::protect(router, tokens, auth::scope_for);
        let http_shutdown = watch_rx;
        tasks.spawn("http", async move {
            server.serve(router, http_shutdown).await?;
            Ok(())
        });
        tracing::info!(%http_addr, scheme, "collector listening");
        Ok(Collector {
            http_addr,
            broker,
            tasks,
            _lock: Some(lock),
        })
    }

    /// Stops consuming and serving, letting in-flight commits finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.tasks.stop().await
    }

    /// Waits until a task ends (which only happens on a failure) and returns the error,
    /// naming the task. The caller should stop the process.
    pub async fn wait(&mut self) -> anyhow::Error {
        self.tasks.wait().await
    }
}

/// A channel may only name warehouses the config knows of: those with a `[[locations]]`
/// entry, a catalog location alias or in `also` (a PostgreSQL worker's shared warehouses,
/// `[store] warehouses` among them). A config that names no warehouse anywhere (a trial)
/// is not checked.
pub(crate) fn check_channel_warehouses(
    config: &CollectorConfig,
    also: &[String],
) -> anyhow::Result<()> {
    let mut known: Vec<&str> = config
        .locations
        .iter()
        .map(|l| l.warehouse.as_str())
        .chain(also.iter().map(String::as_str))
        .collect();
    known.extend(
        config
            .catalog
            .locations
            .iter()
            .map(|l| l.warehouse.as_str()),
    );
    known.sort_unstable();
    known.dedup();
    if known.is_empty() {
        return Ok(());
    }
    for channel in &config.channels.channel {
        for entry in channel.locations.iter().filter(|e| *e != "*") {
            let warehouse = entry.split_once('/').map_or(entry.as_str(), |(w, _)| w);
            if !known.contains(&warehouse) {
                anyhow::bail!(
                    "channel `{}`: locations names warehouse `{warehouse}`, which the config does not know (known: {}); add a [[locations]] entry for it",
                    channel.name,
                    known.join(", ")
                );
            }
        }
    }
    Ok(())
}

/// Lets reservations past their expiry lapse, once a second.
async fn expire_reservations(
    ledger: Ledger,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {
                let now = stocksync_common::OccurredAt::now().unix_ms;
                let lapsed = ledger.write(move |tx, touched| reserve::expire(tx, now, touched)).await?;
                if lapsed > 0 {
                    tracing::info!(lapsed, "reservations expired");
                }
            }
        }
    }
}
