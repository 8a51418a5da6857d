//! stocksync agent: the daemon beside a warehouse's WMS or scanners.
//!
//! Data flows one way: `ingest` (HTTP, scanner MQTT) validates and normalises with the
//! `catalog` the collector distributes, `journal`
//! makes it durable, `forward` ships it to the collector and forgets it only on the
//! collector's ack. Each stage keeps working when the next one is unreachable: the agent
//! accepts and journals for as long as the network is gone, bounded only by `max_backlog`.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod forward;
pub mod forward_rejects;
pub mod gs1;
pub mod ingest;
pub mod input;
pub mod journal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::input::ClockRule;
use config::{AgentConfig, AheadPolicy, SourceBinding};
use stocksync_runtime::supervisor::{Supervisor, TaskHealth};
use tokio::sync::watch;

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
    /// The scanner input's broker link, when `[scanner]` is configured.
    pub scanner: Option<Arc<LinkState>>,
    /// Which long-running tasks run, for `/healthz`.
    pub tasks: Arc<TaskHealth>,
    /// The sources the HTTP input may speak for.
    pub http_sources: SourceBinding,
}

/// Why an agent could not start. Nothing has touched the broker when one of these is
/// returned: a second instance must not disturb the running one.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("journal {journal} is in use by another agent: cannot lock {lock}: {source}")]
    Locked {
        journal: std::path::PathBuf,
        lock: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source} (is another agent running with this config?)")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config: {0}")]
    Config(String),
}

/// Takes the journal's lock file (`<journal>.lock`) exclusively for the life of the agent.
fn lock_journal(journal: &std::path::Path) -> Result<std::fs::File, StartError> {
    let mut lock = journal.as_os_str().to_owned();
    lock.push(".lock");
    let lock = std::path::PathBuf::from(lock);
    let locked = |source| StartError::Locked {
        journal: journal.to_owned(),
        lock: lock.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(locked)?;
    match stocksync_runtime::flock::lock_exclusive(&file) {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(locked(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "held by another process",
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(locked(e)),
    }
}

/// The agent's clock rule for `occurred_at`.
pub fn clock_rule(config: &AgentConfig) -> ClockRule {
    ClockRule {
        max_ahead_ms: i64::try_from(config.clock.max_ahead_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX),
        clamp: config.clock.on_ahead == AheadPolicy::Clamp,
    }
}

/// A running agent: where it listens and how to stop it.
pub struct Agent {
    pub http_addr: SocketAddr,
    tasks: Supervisor,
    journal_closed: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    /// Held until the journal is closed; a second agent on the same journal fails fast.
    _lock: std::fs::File,
}

impl Agent {
    /// Locks and opens the journal and binds the HTTP listener, and only then starts the
    /// tasks that connect to brokers: an instance that cannot start never disturbs the
    /// running one's broker session.
    pub async fn start(config: AgentConfig) -> anyhow::Result<Agent> {
        for (field, value) in [
            ("agent_id", &config.agent_id),
            ("warehouse", &config.warehouse),
        ] {
            stocksync_common::topics::check_level(value).map_err(|detail| {
                anyhow::anyhow!(
                    "config `{field}` = {value:?} cannot name an MQTT topic level: {detail}"
                )
            })?;
        }
        let http_sources =
            SourceBinding::new("[http]", &config.http.default_source, &config.http.sources)
                .map_err(StartError::Config)?;
        let scanner_sources = match &config.scanner {
            Some(s) => Some(
                SourceBinding::new("[scanner]", &s.default_source, &s.sources)
                    .map_err(StartError::Config)?,
            ),
            None => None,
        };
        let tokens = stocksync_runtime::server::auth::Tokens::load(&config.http.tokens)?;
        let lock = lock_journal(&config.journal.path)?;
        let journal = Journal::open_with(&config.journal.path, (&config.journal).into())?;
        let journal_closed = Box::pin(journal.closed());
        let catalog = Arc::new(CatalogHandle::open(&config.journal.path)?);
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: config.http.listen,
                source,
            })?;
        let http_addr = listener.local_addr()?;
        let server = stocksync_runtime::server::Server::new(
            listener,
            config.http.tls.as_ref(),
            config.http.limits.clone(),
        )?;
        let scheme = server.scheme();
        let link = Arc::new(LinkState::default());
        let mut tasks = Supervisor::default();
        let watch_rx = tasks.shutdown_signal();

        let forwarder = Forwarder {
            agent_id: config.agent_id.clone(),
            warehouse: config.warehouse.clone(),
            broker: config.broker.clone(),
            config: config.forward.clone(),
            journal: journal.clone(),
            link: link.clone(),
            catalog: catalog.clone(),
        };
        tasks.spawn("forward", forwarder.run(watch_rx.clone()));

        let scanner = config
            .scanner
            .clone()
            .zip(scanner_sources)
            .map(|(scanner, sources)| {
                let link = Arc::new(LinkState::default());
                let input = ingest::scanner::ScannerInput {
                    agent_id: config.agent_id.clone(),
                    warehouse: config.warehouse.clone(),
                    max_batch: config.http.max_batch,
                    max_message_bytes: config
                        .http
                        .max_body_bytes
                        .min(stocksync_runtime::mqtt::MAX_PACKET_BYTES),
                    sources,
                    clock: clock_rule(&config),
                    config: scanner,
                    journal: journal.clone(),
                    catalog: catalog.clone(),
                    link: link.clone(),
                    epcis: config.epcis.clone(),
                };
                tasks.spawn("scanner", input.run(watch_rx.clone()));
                link
            });

        tasks.spawn(
            "prune",
            prune(
                journal.clone(),
                config.journal.retain_acked_hours,
                config.journal.idempotency_days,
                watch_rx.clone(),
            ),
        );

        for files in config.files.clone() {
            let input = ingest::files::FileInput {
                config: files,
                epcis: config.epcis.clone(),
                warehouse: config.warehouse.clone(),
                journal: journal.clone(),
                catalog: catalog.clone(),
                clock: clock_rule(&config),
            };
            tasks.spawn("files", input.run(watch_rx.clone()));
        }

        let app = Arc::new(App {
            config,
            journal,
            link,
            catalog,
            scanner,
            tasks: tasks.health(),
            http_sources,
        });
        tasks.spawn(
            "forward_rejects",
            forward_rejects::run(app.clone(), watch_rx.clone()),
        );
        let router = stocksync_runtime::server::auth::protect(
            ingest::http::router(app),
            tokens,
            auth::scope_for,
        );
        let http_shutdown = watch_rx.clone();
        tasks.spawn("http", async move {
            server.serve(router, http_shutdown).await?;
            Ok(())
        });
        tracing::info!(%http_addr, scheme, "agent listening");
        Ok(Agent {
            http_addr,
            tasks,
            journal_closed,
            _lock: lock,
        })
    }

    /// Asks every task to finish and waits for them.
    /// Returns once the journal file is closed too, so that it can be reopened or removed.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.tasks.stop().await?;
        tokio::time::timeout(Duration::from_secs(10), self.journal_closed)
            .await
            .map_err(|_| anyhow::anyhow!("journal still open 10 s after every task stopped"))?;
        Ok(())
    }

    /// Waits until a task ends (which only happens on a failure) and returns the error,
    /// naming the task. The caller should stop the process.
    pub async fn wait(&mut self) -> anyhow::Error {
        self.tasks.wait().await
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
