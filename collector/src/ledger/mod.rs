//! The collector's ledger and stock projection, in one SQLite file.
//!
//! The ledger is append-only: one row per movement, keyed by `(agent_id, seq)`, so a batch
//! that arrives twice (a resend after a lost ack, a broker redelivery, a replay) inserts
//! nothing the second time and changes no stock. The projection (`stock`) is updated in the
//! same transaction as the ledger rows it derives from, so the two can never disagree, and
//! the agent is acknowledged only after that transaction is on disk.
//!
//! Like the agent's journal, one writer thread (`stocksync-durable`) owns the write connection
//! and folds every waiting batch into one transaction (group commit); each batch has its own
//! savepoint and panic boundary, so a bad batch fails alone and the writer goes on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use serde::Deserialize;
use stocksync_common::wire::{self, AckOutcome};
use stocksync_durable::{Error, Options, Store, Writer};
use tokio::sync::{broadcast, oneshot};

use crate::authority::Authority;
use crate::intake::Intake;
use crate::metrics::Metrics;

mod apply;
mod migrate;
mod retry;
mod v1;

pub(crate) use migrate::migrate;
pub use migrate::LATEST as SCHEMA_VERSION;

pub use retry::Retried;
pub(crate) use retry::RETRYABLE;

use apply::{apply_batch, store_reject};

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 256;

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger writer has stopped")]
    Closed,
    #[error("ledger write panicked and was rolled back: {0}")]
    Panicked(String),
    #[error("ledger transaction not committed: {0}")]
    NotCommitted(String),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error("ledger {path} has layout version {found}, but this collector knows up to {known}: it was written by a newer release; run that release or a newer one (keep the file), or restore a backup taken before the upgrade")]
    TooNew {
        path: String,
        found: u32,
        known: u32,
    },
    #[error("ledger {path} is corrupt: {detail}; stop the collector, move the file aside (keep it), try `sqlite3 <file> .recover | sqlite3 <new file>`, then `stocksync-collector rebuild` on the recovered file; agents resend whatever was not acknowledged")]
    Corrupt { path: String, detail: String },
}

/// Why a payload is kept in the rejects queue instead of the ledger.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub topic: String,
    pub agent_id: Option<String>,
    pub seqs: Option<(u64, u64)>,
    pub reason: String,
    /// The field at fault, when one is (e.g. `source` for a policy reject).
    pub field: Option<String>,
    pub payload: Vec<u8>,
}

/// A (SKU, location) whose projection row changed.
pub use crate::stock::StockKey;

/// The projection rows one committed transaction changed, sent after the commit is on disk.
pub type Changes = Arc<Vec<StockKey>>;

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    writer: Writer<State>,
    metrics: Arc<Metrics>,
    /// Read connections: a long read (a report, the alert rules) holds one, while API reads
    /// go on on the others.
    readers: Arc<Vec<Mutex<Connection>>>,
    changes: broadcast::Sender<Changes>,
    /// The writer's policies, for writes that apply a movement outside a batch (retries).
    authority: Arc<Authority>,
    intake: Arc<Intake>,
}

/// Opens the write connection only if `PRAGMA quick_check` finds the file sound: running on
/// a damaged ledger could count movements wrong or lose them.
fn open_checked(path: &Path) -> Result<Connection, LedgerError> {
    let corrupt = |detail: String| LedgerError::Corrupt {
        path: path.display().to_string(),
        detail,
    };
    let conn = stocksync_durable::open(path).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            corrupt(e.to_string())
        }
        _ => LedgerError::Sqlite(e),
    })?;
    // The writer's working set (stock rows, hot index pages) stays in memory, and the WAL is
    // folded back less often: fewer pages written twice under a stream of orders.
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "wal_autocheckpoint", 8_000)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| corrupt(e.to_string()))?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(corrupt(format!(
            "quick_check found: {}",
            problems.join("; ")
        )));
    }
    Ok(conn)
}

fn now_ms() -> i64 {
    stocksync_common::OccurredAt::now().unix_ms
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` with every warehouse open (no authority).
    pub fn open(path: &Path, metrics: Arc<Metrics>) -> Result<Ledger, LedgerError> {
        Ledger::open_with(path, metrics, Authority::default())
    }

    /// Opens (or creates) the ledger at `path` and starts its writer thread; `authority`
    /// decides the treatment of every new movement.
    pub fn open_with(
        path: &Path,
        metrics: Arc<Metrics>,
        authority: Authority,
    ) -> Result<Ledger, LedgerError> {
        Ledger::open_checked(path, metrics, authority, Intake::default())
    }

    /// Like `open_with`, with the collector's own checks of every new movement (`intake`).
    pub fn open_checked(
        path: &Path,
        metrics: Arc<Metrics>,
        authority: Authority,
        intake: Intake,
    ) -> Result<Ledger, LedgerError> {
        let (authority, intake) = (Arc::new(authority), Arc::new(intake));
        let conn = open_checked(path)?;
        migrate(&conn, path)?;
        let (changes, _) = broadcast::channel(1024);
        let state = State {
            metrics: metrics.clone(),
            changes: changes.clone(),
            touched: Vec::new(),
        };
        let options = Options {
            name: "ledger-writer".into(),
            max_group: MAX_GROUP,
            queue: 1024,
        };
        let writer = Writer::spawn(conn, state, options).map_err(|_| LedgerError::Closed)?;
        Ok(Ledger {
            writer,
            metrics,
            readers: Arc::new(
                (0..READERS)
                    .map(|_| stocksync_durable::open(path).map(Mutex::new))
                    .collect::<Result<_, _>>()?,
            ),
            changes,
            authority,
            intake,
        })
    }

    /// Receives the stock keys of every commit from now on. A receiver that lags behind gets
    /// `RecvError::Lagged` and must treat everything as changed.
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Changes> {
        self.changes.subscribe()
    }

    /// Queues a batch; the returned receiver answers once its transaction is on disk.
    pub async fn apply(
        &self,
        received: wire::Received,
        payload: Vec<u8>,
        topic: String,
    ) -> Result<oneshot::Receiver<Result<AckOutcome, LedgerError>>, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let (authority, intake) = (self.authority.clone(), self.intake.clone());
        let agent = received.batch.agent_id.clone();
        let op = move |conn: &Connection, state: &mut State| {
            let batch = received.batch;
            let parts = (payload.as_slice(), received.parts.as_slice());
            let checks = (authority.as_ref(), intake.as_ref());
            apply_batch(conn, checks, &batch, parts, &topic, &mut state.touched)
        };
        let metrics = self.metrics.clone();
        let deliver = move |result: Result<(AckOutcome, u32), Error<rusqlite::Error>>| {
            let answer = match result {
                Ok((outcome, policy_rejects)) => {
                    metrics.count_outcome(&outcome);
                    metrics.rejects.add(u64::from(policy_rejects));
                    Ok(outcome)
                }
                Err(e) => {
                    tracing::error!(%agent, error = %e, "batch not applied");
                    Err(LedgerError::from(e))
                }
            };
            let _ = reply.send(answer);
        };
        self.writer.submit(op, deliver).await?;
        Ok(rx)
    }

    /// Durably keeps a payload that cannot be applied.
    pub async fn reject(&self, rejected: Rejected) -> Result<(), LedgerError> {
        self.writer
            .call(move |conn, _| store_reject(conn, &rejected))
            .await?;
        self.metrics.rejects.inc();
        Ok(())
    }

    /// Runs `f` inside the writer's next group transaction (its own savepoint) and returns
    /// its result once that transaction is on disk. `f` reports the stock keys it changed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &mut Vec<StockKey>) -> Result<T, rusqlite::Error> + Send + 'static,
    {
        Ok(self
            .writer
            .call(move |conn, state: &mut State| f(conn, &mut state.touched))
            .await?)
    }

    /// Runs `f` on the read connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        // The first idle connection; if every one is busy, wait for the next in turn, so that
        // waiting readers spread over the pool.
        static TURN: AtomicUsize = AtomicUsize::new(0);
        let idle = self.readers.iter().find_map(|r| r.try_lock().ok());
        let conn = idle.unwrap_or_else(|| {
            let pick = TURN.fetch_add(1, Ordering::Relaxed) % self.readers.len();
            self.readers[pick].lock().unwrap_or_else(|p| p.into_inner())
        });
        Ok(f(&conn)?)
    }
}

/// Read connections of a ledger.
const READERS: usize = 4;

/// What the ledger's writer thread owns beside its connection.
struct State {
    metrics: Arc<Metrics>,
    changes: broadcast::Sender<Changes>,
    /// Stock keys the current transaction touched.
    touched: Vec<StockKey>,
}

impl Store for State {
    type Mark = usize;

    fn mark(&self) -> usize {
        self.touched.len()
    }

    fn rewind(&mut self, mark: usize) {
        self.touched.truncate(mark);
    }

    fn committed(&mut self) {
        self.metrics.commits.inc();
        let mut touched = std::mem::take(&mut self.touched);
        if !touched.is_empty() {
            touched.sort_unstable();
            touched.dedup();
            let _ = self.changes.send(Arc::new(touched));
        }
    }
}

impl From<Error<rusqlite::Error>> for LedgerError {
    fn from(e: Error<rusqlite::Error>) -> LedgerError {
        match e {
            Error::Command(e) => LedgerError::Sqlite(e),
            Error::Panicked(what) => LedgerError::Panicked(what),
            Error::Group(failure) => LedgerError::NotCommitted(failure.detail),
            Error::Closed => LedgerError::Closed,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_write_fails_alone_and_the_writer_goes_on() {
        let dir =
            std::env::temp_dir().join(format!("stocksync-ledger-panic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = Ledger::open(&dir.join("ledger.db"), Arc::new(Metrics::default())).unwrap();
        let failed = ledger
            .write(|_, _| -> rusqlite::Result<()> { panic!("overflow in a debug build") })
            .await;
        assert!(failed.is_err());
        let after = ledger
            .write(|tx, _| tx.query_row("SELECT 41 + 1", [], |r| r.get::<_, i64>(0)))
            .await;
        assert_eq!(after.unwrap(), 42);
        drop(ledger);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
