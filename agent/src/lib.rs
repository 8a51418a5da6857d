//! stocksync agent: the daemon beside a warehouse's WMS or scanners.
//!
//! Data flows one way: `ingest` (HTTP, scanner MQTT) validates and normalises with the
//! `catalog` the collector distributes, `journal`
//! makes it durable, `forward` ships it to the collector and forgets it only on the
//! collector's ack. Each stage keeps working when the next one is unreachable: the agent
//! accepts and journals for as long as the network is gone, bounded only by `max_backlog`.

pub mod catalog;
pub mod forward;
pub mod ingest;
pub mod journal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stocksync_common::config::AgentConfig;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use catalog::CatalogHandle;
use forward::{Forwarder, LinkState};
use journal::Journal;

/// State shared by the agent's HTTP handlers.
pub struct App {
    pub config: AgentConfig,
    pub journal: Journal,
    pub link: Arc<LinkState>,
    /// The catalog inputs are validated and normalised with.
    pub catalog: Arc<CatalogHandle>,
}

/// A running agent: where it listens and how to stop it.
pub struct Agent {
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    journal_closed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl Agent {
    /// Opens the journal, binds the HTTP listener and starts every task.
    pub async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        let journal = Journal::open(&config.journal.path, config.journal.max_backlog)?;
        let journal_closed = Box::pin(journal.closed());
        let catalog = Arc::new(CatalogHandle::open(&config.journal.path)?);
        let link = Arc::new(LinkState::default());
        let (shutdown, watch_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        let forwarder = Forwarder {
            agent_id: config.agent_id.clone(),
            warehouse: config.warehouse.clone(),
            broker: config.broker.clone(),
            config: config.forward.clone(),
            journal: journal.clone(),
            link: link.clone(),
            catalog: catalog.clone(),
        };
        tasks.push(tokio::spawn(forwarder.run(watch_rx.clone())));

        if let Some(scanner) = config.scanner.clone() {
            tasks.push(tokio::spawn(ingest::scanner::run(
                config.agent_id.clone(),
                config.warehouse.clone(),
                config.http.max_batch,
                scanner,
                journal.clone(),
                catalog.clone(),
                config.epcis.clone(),
                watch_rx.clone(),
            )));
        }

        for files in config.files.clone() {
            let input = ingest::files::FileInput {
                config: files,
                epcis: config.epcis.clone(),
                warehouse: config.warehouse.clone(),
                journal: journal.clone(),
                catalog: catalog.clone(),
            };
            tasks.push(tokio::spawn(input.run(watch_rx.clone())));
        }

        tasks.push(tokio::spawn(prune(
            journal.clone(),
            config.journal.retain_acked_hours,
            config.journal.idempotency_days,
            watch_rx.clone(),
        )));

        let listener = tokio::net::TcpListener::bind(config.http.listen).await?;
        let http_addr = listener.local_addr()?;
        let app = Arc::new(App {
            config,
            journal,
            link,
            catalog,
        });
        let router = ingest::http::router(app);
        let mut http_shutdown = watch_rx.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = http_shutdown.changed().await;
                })
                .await?;
            Ok(())
        }));
        tracing::info!(%http_addr, "agent listening");
        Ok(Agent {
            http_addr,
            shutdown,
            tasks,
            journal_closed,
        })
    }

    /// Asks every task to finish and waits for them.
    /// Returns once the journal file is closed too, so that it can be reopened or removed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.await??;
        }
        tokio::time::timeout(Duration::from_secs(10), self.journal_closed)
            .await
            .map_err(|_| anyhow::anyhow!("journal still open 10 s after every task stopped"))?;
        Ok(())
    }

    /// Waits until a task ends (which only happens on error) and returns its result.
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let (result, _, rest) = futures_select_all(std::mem::take(&mut self.tasks)).await;
        self.tasks = rest;
        result?
    }
}

async fn futures_select_all(
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
) -> (
    Result<anyhow::Result<()>, tokio::task::JoinError>,
    usize,
    Vec<JoinHandle<anyhow::Result<()>>>,
) {
    let mut tasks = tasks;
    loop {
        for i in 0..tasks.len() {
            if tasks[i].is_finished() {
                let t = tasks.remove(i);
                return (t.await, i, tasks);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn prune(
    journal: Journal,
    retain_acked_hours: u64,
    idempotency_days: u64,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok(()),
            _ = every.tick() => {
                let acked = (retain_acked_hours * 3_600_000) as i64;
                let keys = (idempotency_days * 86_400_000) as i64;
                journal.prune(acked, keys).await?;
            }
        }
    }
}
