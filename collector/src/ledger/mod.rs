//! The collector's ledger and stock projection, in one SQLite file.
//!
//! The ledger is append-only: one row per movement, keyed by `(agent_id, seq)`, so a batch
//! that arrives twice (a resend after a lost ack, a broker redelivery, a replay) inserts
//! nothing the second time and changes no stock. The projection (`stock`) is updated in the
//! same transaction as the ledger rows it derives from, so the two can never disagree, and
//! the agent is acknowledged only after that transaction is on disk.
//!
//! Like the agent's journal, one writer thread owns the write connection and folds every
//! waiting batch into one transaction (group commit); each batch has its own savepoint, so a
//! bad batch fails alone.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use stocksync_common::wire::{self, AckOutcome, Batch};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::authority::Authority;
use crate::intake::Intake;
use crate::merge::States;
use crate::metrics::Metrics;

mod apply;
mod retry;
mod upgrade;

pub use retry::Retried;

use apply::{apply_batch, store_reject};

/// Tables of the ledger file (reservations and channels create their own).
const SCHEMA: &str = include_str!("schema.sql");

/// Columns added after the first schema, as `(table, column, declaration)`; added to older
/// files on open.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("ledger", "treatment", "TEXT NOT NULL DEFAULT 'apply'"),
    (
        "ledger",
        "returns_to",
        "TEXT NOT NULL DEFAULT 'quality_control'",
    ),
    ("ledger", "transfer", "TEXT"),
    ("ledger", "peer", "TEXT"),
    ("rejects", "field", "TEXT"),
    ("ledger", "order_ref", "TEXT"),
    ("rejects", "retried_at_ms", "INTEGER"),
    ("reservations", "created_by", "TEXT"),
    ("reservations", "closed_by", "TEXT"),
    ("agents", "clock_skew_ms", "INTEGER"),
];

const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS ledger_by_transfer ON ledger (transfer, sku) WHERE transfer IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_peer ON ledger (sku, peer) WHERE peer IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_order ON ledger (order_ref, sku) WHERE order_ref IS NOT NULL;
";

/// Brings the file's tables to this release's layout, all of it or nothing (one transaction).
pub(crate) fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    let tx = conn.unchecked_transaction()?;
    migrate_in(&tx)?;
    tx.commit()
}

fn migrate_in(conn: &Connection) -> Result<(), rusqlite::Error> {
    let moved = upgrade::set_aside(conn)?;
    conn.execute_batch(crate::reserve::SCHEMA)?;
    conn.execute_batch(crate::orders::store::SCHEMA)?;
    conn.execute_batch(SCHEMA)?;
    for (table, column, decl) in ADDED_COLUMNS {
        let exists: bool = conn.query_row(
            &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
            [column],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )?;
        if !exists {
            conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
        }
    }
    if !moved.is_empty() {
        upgrade::copy_back(conn, &moved)?;
        // Their indexes went with the old tables: create them on the new ones.
        conn.execute_batch(crate::reserve::SCHEMA)?;
        conn.execute_batch(crate::orders::store::SCHEMA)?;
    }
    conn.execute_batch(INDEXES)
}

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 256;

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger writer has stopped")]
    Closed,
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
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

enum Command {
    Apply {
        batch: Batch,
        parts: Vec<std::ops::Range<usize>>,
        payload: Vec<u8>,
        topic: String,
        reply: oneshot::Sender<Result<AckOutcome, LedgerError>>,
    },
    Reject {
        rejected: Rejected,
        reply: oneshot::Sender<Result<(), LedgerError>>,
    },
    /// Any other write that must share the writer's transaction and change notifications
    /// (reservations): runs in its own savepoint, answers after the commit.
    Write(WriteOp),
}

/// What a `Command::Write` runs: on success a callback that answers its caller once the
/// group is on disk, on failure the error and a callback that reports it.
type WriteOp = Box<
    dyn FnOnce(
            &Transaction<'_>,
            &mut Vec<StockKey>,
        ) -> Result<
            Box<dyn FnOnce() + Send>,
            (rusqlite::Error, Box<dyn FnOnce(LedgerError) + Send>),
        > + Send,
>;

/// A (SKU, location) whose projection row changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StockKey {
    pub sku: String,
    pub warehouse: String,
    pub bin: String,
}

/// The projection rows one committed transaction changed, sent after the commit is on disk.
pub type Changes = Arc<Vec<StockKey>>;

/// Handle to the ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Command>,
    reader: Arc<Mutex<Connection>>,
    changes: broadcast::Sender<Changes>,
    /// The writer's policies, for writes that apply a movement outside a batch (retries).
    authority: Arc<Authority>,
    intake: Arc<Intake>,
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "wal_autocheckpoint", 8_000)?;
    Ok(conn)
}

/// Opens the write connection only if `PRAGMA quick_check` finds the file sound: running on
/// a damaged ledger could count movements wrong or lose them.
fn open_checked(path: &Path) -> Result<Connection, LedgerError> {
    let corrupt = |detail: String| LedgerError::Corrupt {
        path: path.display().to_string(),
        detail,
    };
    let conn = open(path).map_err(|e| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
            corrupt(e.to_string())
        }
        _ => LedgerError::Sqlite(e),
    })?;
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
    stocksync_common::input::now().unix_ms
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
        migrate(&conn)?;
        let (tx, rx) = mpsc::channel(1024);
        let (changes, _) = broadcast::channel(1024);
        let writer = Writer {
            conn,
            metrics,
            changes: changes.clone(),
            touched: Vec::new(),
            authority: authority.clone(),
            intake: intake.clone(),
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|_| LedgerError::Closed)?;
        Ok(Ledger {
            tx,
            reader: Arc::new(Mutex::new(open(path)?)),
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
        self.tx
            .send(Command::Apply {
                batch: received.batch,
                parts: received.parts,
                payload,
                topic,
                reply,
            })
            .await
            .map_err(|_| LedgerError::Closed)?;
        Ok(rx)
    }

    /// Durably keeps a payload that cannot be applied.
    pub async fn reject(&self, rejected: Rejected) -> Result<(), LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Reject { rejected, reply })
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Runs `f` inside the writer's next group transaction (its own savepoint) and returns
    /// its result once that transaction is on disk. `f` reports the stock keys it changed.
    pub async fn write<T, F>(&self, f: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, &mut Vec<StockKey>) -> Result<T, rusqlite::Error>
            + Send
            + 'static,
    {
        let (reply, rx) = oneshot::channel::<Result<T, LedgerError>>();
        let op: WriteOp = Box::new(move |tx, touched| match f(tx, touched) {
            Ok(value) => Ok(Box::new(move || drop(reply.send(Ok(value))))),
            Err(e) => Err((e, Box::new(move |err| drop(reply.send(Err(err)))))),
        });
        self.tx
            .send(Command::Write(op))
            .await
            .map_err(|_| LedgerError::Closed)?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Runs `f` on the read connection.
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, LedgerError> {
        let conn = self.reader.lock().expect("reader lock");
        Ok(f(&conn)?)
    }
}

struct Writer {
    conn: Connection,
    metrics: Arc<Metrics>,
    changes: broadcast::Sender<Changes>,
    /// Stock keys the current transaction touched.
    touched: Vec<StockKey>,
    authority: Arc<Authority>,
    intake: Arc<Intake>,
}

enum Pending {
    /// The batch's answer, and how many of its movements the policy sent to the rejects queue.
    Apply(
        oneshot::Sender<Result<AckOutcome, LedgerError>>,
        AckOutcome,
        u32,
    ),
    Reject(oneshot::Sender<Result<(), LedgerError>>),
    Deliver(Box<dyn FnOnce() + Send>),
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            // A panic in one group's code (a bug, an arithmetic overflow in a debug build)
            // rolls that group back and fails its callers; it must not end the writer, or
            // every later write would fail while reads go on serving stale data.
            let committed = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_group(group)
            })) {
                Ok(committed) => committed,
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %what, "ledger write panicked; its group was rolled back, the writer goes on");
                    self.touched.clear();
                    continue;
                }
            };
            match committed {
                Ok(pending) => {
                    self.metrics.commits.inc();
                    let mut touched = std::mem::take(&mut self.touched);
                    if !touched.is_empty() {
                        touched.sort_unstable();
                        touched.dedup();
                        let _ = self.changes.send(Arc::new(touched));
                    }
                    for p in pending {
                        match p {
                            Pending::Apply(reply, outcome, policy_rejects) => {
                                self.metrics.count_outcome(&outcome);
                                self.metrics.rejects.add(u64::from(policy_rejects));
                                let _ = reply.send(Ok(outcome));
                            }
                            Pending::Deliver(answer) => answer(),
                            Pending::Reject(reply) => {
                                self.metrics.rejects.inc();
                                let _ = reply.send(Ok(()));
                            }
                        }
                    }
                }
                // Dropped replies tell every caller the group failed; agents resend.
                Err(e) => {
                    self.touched.clear();
                    tracing::error!(error = %e, "ledger commit failed")
                }
            }
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) -> Result<Vec<Pending>, rusqlite::Error> {
        // IMMEDIATE takes the write lock before the first read. A deferred transaction that
        // reads, then writes, fails at once with SQLITE_BUSY when another connection to the
        // file committed in between, and the busy timeout cannot save it.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut pending = Vec::with_capacity(group.len());
        for command in group {
            match command {
                Command::Apply {
                    batch,
                    parts,
                    payload,
                    topic,
                    reply,
                } => {
                    // A batch that fails on storage fails alone: its savepoint is rolled back,
                    // its caller hears the error (no ack, so the agent resends), and the rest
                    // of the group still commits.
                    let touched_before = self.touched.len();
                    tx.execute_batch("SAVEPOINT batch")?;
                    match apply_batch(
                        &tx,
                        (&self.authority, &self.intake),
                        &batch,
                        (&payload, &parts),
                        &topic,
                        &mut self.touched,
                    ) {
                        Ok((outcome, policy_rejects)) => {
                            tx.execute_batch("RELEASE batch")?;
                            pending.push(Pending::Apply(reply, outcome, policy_rejects));
                        }
                        Err(e) => {
                            tx.execute_batch("ROLLBACK TO batch; RELEASE batch")?;
                            self.touched.truncate(touched_before);
                            tracing::error!(agent = %batch.agent_id, error = %e, "batch not applied");
                            let _ = reply.send(Err(e.into()));
                        }
                    }
                }
                Command::Reject { rejected, reply } => {
                    store_reject(&tx, &rejected)?;
                    pending.push(Pending::Reject(reply));
                }
                Command::Write(op) => {
                    let touched_before = self.touched.len();
                    tx.execute_batch("SAVEPOINT write")?;
                    match op(&tx, &mut self.touched) {
                        Ok(answer) => {
                            tx.execute_batch("RELEASE write")?;
                            pending.push(Pending::Deliver(answer));
                        }
                        Err((e, report)) => {
                            tx.execute_batch("ROLLBACK TO write; RELEASE write")?;
                            self.touched.truncate(touched_before);
                            report(e.into());
                        }
                    }
                }
            }
        }
        tx.commit()?;
        Ok(pending)
    }
}

/// Current states of one (SKU, location); zero if never seen.
pub fn read_states(
    conn: &Connection,
    sku: &str,
    warehouse: &str,
    bin: &str,
) -> Result<States, rusqlite::Error> {
    conn.query_row(
        "SELECT available, reserved, damaged, quality_control, in_transit, incoming FROM stock WHERE sku = ?1 AND warehouse = ?2 AND bin = ?3",
        params![sku, warehouse, bin],
        row_states(0),
    )
    .optional()
    .map(Option::unwrap_or_default)
}

/// Reads `States` from six columns starting at `offset`.
pub fn row_states(offset: usize) -> impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<States> {
    move |r| {
        Ok(States {
            available: r.get(offset)?,
            reserved: r.get(offset + 1)?,
            damaged: r.get(offset + 2)?,
            quality_control: r.get(offset + 3)?,
            in_transit: r.get(offset + 4)?,
            incoming: r.get(offset + 5)?,
        })
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
