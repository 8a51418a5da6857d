//! The PostgreSQL store: several collector workers on one database.
//!
//! Each batch is one transaction (`ingest`): exactly-once ledger rows by
//! `UNIQUE (agent_id, seq)`, the projection of what was new (`project`, the SQLite path's
//! pure code), the operator's records it changes (`records`, the SQLite ledger's rules), an
//! outbox row per changed SKU, commit, then the agent's ack. Workers share
//! the warehouses out through leases (`leases`); any worker serves the HTTP reads (`api`).
//! What the SQLite collector does beyond that is listed in docs/SCALING.md and answered
//! `501 not_supported_on_backend` here, never with a wrong number.

pub mod agent_rejects;
pub mod alerts;
pub mod api;
pub mod channels;
mod exception_actions;
mod exception_sources;
pub mod exceptions;
mod group;
mod identity;
pub mod import;
mod ingest;
pub mod leases;
pub mod orders;
mod pool;
mod project;
pub mod rebuild;
mod records;
pub mod report;
pub mod reserve;
mod retry;
pub mod schema;
mod tls;
pub mod voids;
pub mod worker;

use std::sync::Arc;

use stocksync_common::wire;
use tokio::sync::oneshot;

use crate::authority::Authority;
use crate::intake::Intake;
use crate::ledger::Rejected;
use crate::metrics::Metrics;
use crate::store::{Done, Ingest};

pub use pool::{Pool, Prepared};

/// PostgreSQL store failures.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgres: {}", with_sources(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("postgres store is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Config(#[from] crate::store::config::StoreConfigError),
    #[error("[store] TLS: {0}")]
    Tls(#[from] stocksync_runtime::tls::TlsError),
}

/// The error's text with its sources': tokio-postgres says only "db error" for what the
/// server refused, the server's own words (`relation "x" does not exist`) are the source.
fn with_sources(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl PgError {
    /// A deadlock or serialization failure: the transaction may simply run again.
    pub fn is_retryable(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            PgError::Postgres(e) => matches!(
                e.code(),
                Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            ),
            _ => false,
        }
    }
}

/// What decides each new movement's fate: the same policies as the SQLite ledger.
pub struct Policies {
    /// Recorded beside every ledger row this worker inserts.
    pub worker_id: String,
    pub authority: Authority,
    pub intake: Intake,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    policies: Arc<Policies>,
    metrics: Arc<Metrics>,
    groups: Arc<group::Groups>,
}

pub(crate) fn now_ms() -> i64 {
    stocksync_common::OccurredAt::now().unix_ms
}

impl PgStore {
    /// Connects, applies the migrations, and returns the store.
    pub async fn open(
        store: &crate::store::StoreConfig,
        policies: Policies,
        metrics: Arc<Metrics>,
    ) -> Result<PgStore, PgError> {
        // A worker stopped inside a transaction (SIGSTOP, a stalled machine) must not keep
        // its advisory locks past its lease, or the worker taking its warehouses over waits
        // on them: the server ends a transaction of ours left idle for half a lease.
        let idle_ms = store.lease_secs.saturating_mul(500);
        let pool = pool_for(store, store.pool_size, Some(idle_ms))?;
        schema::migrate(&mut *pool.get().await?).await?;
        Ok(PgStore {
            pool,
            policies: Arc::new(policies),
            metrics,
            groups: Arc::default(),
        })
    }

    /// A separate pool on the same database, so that leases and reads never wait behind
    /// a burst of batches holding every ingest connection.
    pub fn side_pool(&self, size: usize) -> Pool {
        self.pool.sibling(size)
    }
}

/// A pool of `size` on the database of `[store]`: its URL, and TLS (required) when it names
/// a CA file.
/// With `idle_in_transaction_ms`, the server ends a transaction left idle that long.
pub(crate) fn pool_for(
    store: &crate::store::StoreConfig,
    size: usize,
    idle_in_transaction_ms: Option<u64>,
) -> Result<Pool, PgError> {
    let mut config: tokio_postgres::Config = store.url()?.parse()?;
    if let Some(ms) = idle_in_transaction_ms {
        let idle = format!("-c idle_in_transaction_session_timeout={ms}");
        let options = match config.get_options() {
            Some(given) if !given.is_empty() => format!("{given} {idle}"),
            _ => idle,
        };
        config.options(options);
    }
    let tls = tls::from_config(store)?;
    if tls.is_some() {
        config.ssl_mode(tokio_postgres::config::SslMode::Require);
    }
    Ok(Pool::new(config, tls, size))
}

impl Ingest for PgStore {
    type Error = PgError;

    /// Queues the batch for its warehouse's applier (`group`): the batches queued for one
    /// warehouse commit together, warehouses in parallel; the answer comes after COMMIT.
    async fn apply(
        &self,
        received: wire::Received,
        payload: Vec<u8>,
        topic: String,
    ) -> Result<Done<PgError>, PgError> {
        let (reply, done) = oneshot::channel();
        let applier = group::Applier {
            pool: self.pool.clone(),
            policies: self.policies.clone(),
            metrics: self.metrics.clone(),
        };
        let job = group::Job {
            received,
            payload,
            topic,
            reply,
        };
        self.groups.submit(&applier, job);
        Ok(done)
    }

    async fn reject(&self, rejected: Rejected) -> Result<(), PgError> {
        let mut conn = self.pool.get().await?;
        let prepared = conn.prepared();
        let tx = conn.transaction().await?;
        ingest::store_reject(&tx, &prepared, &rejected).await?;
        tx.commit().await?;
        self.metrics.rejects.inc();
        Ok(())
    }
}
