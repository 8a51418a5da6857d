//! stocksync collector: the one place where every warehouse's movements meet.
//!
//! `consume` takes batches off the broker, `ledger` commits them (deduplicated, append-only,
//! each with the treatment `authority` gives it) and `projection` derives stock from them
//! with the effect table in `merge`, independent of arrival order; `records` keeps drift,
//! conflicts and transfer discrepancies visible. Then the agent gets its ack. `consume` also
//! publishes the catalog, retained, so agents normalise offline. `api` serves the result. Without an external broker configured, `broker` runs an
//! embedded one so a trial needs nothing but Rust.

pub mod api;
pub mod authority;
pub mod broker;
pub mod consume;
pub mod ledger;
pub mod merge;
pub mod metrics;
pub mod orders;
pub mod projection;
pub mod publish;
pub mod rebuild;
pub mod records;
pub mod reserve;

use std::net::SocketAddr;
use std::sync::Arc;

use stocksync_common::catalog::Catalog;
use stocksync_common::config::{BrokerConfig, CollectorConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

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
}

/// A running collector.
pub struct Collector {
    pub http_addr: SocketAddr,
    /// The broker the collector uses (the embedded one's address when it runs one).
    pub broker: BrokerConfig,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

impl Collector {
    /// Opens the ledger, starts the embedded broker if no external one is configured, and
    /// starts consuming and serving.
    pub async fn start(config: CollectorConfig) -> anyhow::Result<Collector> {
        let broker = match config.broker.clone() {
            Some(b) => b,
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
        let catalog = Arc::new(Catalog::new(config.catalog.clone())?);
        let metrics = Arc::new(Metrics::default());
        let orders = Arc::new(orders::Orders::new(
            config.orders.clone(),
            config.channels.channel.iter().map(|c| c.name.clone()),
            catalog.clone(),
        )?);
        let authority = authority::Authority::new(&config.locations);
        let ledger = Ledger::open_with(&config.ledger.path, metrics.clone(), authority)?;
        let (shutdown, watch_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(consume::run(
            broker.clone(),
            ledger.clone(),
            metrics.clone(),
            catalog.to_json(),
            watch_rx.clone(),
        )));

        tasks.push(tokio::spawn(expire_reservations(
            ledger.clone(),
            watch_rx.clone(),
        )));

        tasks.push(tokio::spawn(orders::auto_reroute(
            ledger.clone(),
            orders.clone(),
            watch_rx.clone(),
        )));

        let (channels, publish_tasks) =
            publish::Publisher::start(&config, ledger.clone(), &broker, watch_rx.clone())?;
        tasks.extend(publish_tasks);

        let listener = tokio::net::TcpListener::bind(config.http.listen).await?;
        let http_addr = listener.local_addr()?;
        let router = api::router(Arc::new(App {
            ledger,
            metrics,
            catalog,
            channels,
            orders,
            shutdown: watch_rx.clone(),
        }));
        let mut http_shutdown = watch_rx;
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.changed().await;
                })
                .await?;
            Ok(())
        }));
        tracing::info!(%http_addr, "collector listening");
        Ok(Collector {
            http_addr,
            broker,
            shutdown,
            tasks,
        })
    }

    /// Stops consuming and serving, letting in-flight commits finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await??;
        }
        Ok(())
    }
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
                let now = stocksync_common::input::now().unix_ms;
                let lapsed = ledger.write(move |tx, touched| reserve::expire(tx, now, touched)).await?;
                if lapsed > 0 {
                    tracing::info!(lapsed, "reservations expired");
                }
            }
        }
    }
}
