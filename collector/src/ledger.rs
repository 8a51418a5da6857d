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

use crate::authority::{returns_to_str, Authority, Treatment};
use crate::merge::States;
use crate::metrics::Metrics;
use crate::projection::{self, Entry};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agents (
    agent_id TEXT PRIMARY KEY,
    journal_id INTEGER NOT NULL,
    warehouse TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    kind TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    received_at_ms INTEGER NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS ledger_by_stock ON ledger (sku, warehouse, bin);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    available INTEGER NOT NULL DEFAULT 0,
    reserved INTEGER NOT NULL DEFAULT 0,
    damaged INTEGER NOT NULL DEFAULT 0,
    quality_control INTEGER NOT NULL DEFAULT 0,
    in_transit INTEGER NOT NULL DEFAULT 0,
    incoming INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, warehouse, bin)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stock_by_location ON stock (warehouse, bin);
CREATE TABLE IF NOT EXISTS rejects (
    id INTEGER PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    seen_count INTEGER NOT NULL DEFAULT 1,
    topic TEXT NOT NULL,
    agent_id TEXT,
    first_seq INTEGER,
    last_seq INTEGER,
    reason TEXT NOT NULL,
    payload BLOB NOT NULL,
    UNIQUE (topic, payload)
);
CREATE TABLE IF NOT EXISTS stock_last_count (
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    occurred_at_ms INTEGER NOT NULL,
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (sku, warehouse, bin)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS drift (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    counted_at TEXT NOT NULL,
    counted_at_ms INTEGER NOT NULL,
    expected INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    difference INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    revised_at_ms INTEGER,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflicts (
    agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    sku TEXT NOT NULL,
    warehouse TEXT NOT NULL,
    bin TEXT NOT NULL,
    source TEXT NOT NULL,
    counted_at TEXT NOT NULL,
    counted_at_ms INTEGER NOT NULL,
    expected INTEGER NOT NULL,
    counted INTEGER NOT NULL,
    difference INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    revised_at_ms INTEGER,
    PRIMARY KEY (agent_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS discrepancies (
    transfer TEXT NOT NULL,
    sku TEXT NOT NULL,
    from_warehouse TEXT NOT NULL,
    to_warehouse TEXT NOT NULL,
    shipped INTEGER NOT NULL,
    received INTEGER NOT NULL,
    difference INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (transfer, sku)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reversals (
    order_ref TEXT NOT NULL,
    sku TEXT NOT NULL,
    shipped INTEGER NOT NULL,
    reversed INTEGER NOT NULL,
    excess INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (order_ref, sku)
) WITHOUT ROWID;
";

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
];

const INDEXES: &str = "
CREATE INDEX IF NOT EXISTS ledger_by_transfer ON ledger (transfer, sku) WHERE transfer IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_peer ON ledger (sku, peer) WHERE peer IS NOT NULL;
CREATE INDEX IF NOT EXISTS ledger_by_order ON ledger (order_ref, sku) WHERE order_ref IS NOT NULL;
";

pub(crate) fn migrate(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(crate::reserve::SCHEMA)?;
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
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
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
        let conn = open(path)?;
        migrate(&conn)?;
        let (tx, rx) = mpsc::channel(1024);
        let (changes, _) = broadcast::channel(1024);
        let writer = Writer {
            conn,
            metrics,
            changes: changes.clone(),
            touched: Vec::new(),
            authority,
        };
        std::thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|_| LedgerError::Closed)?;
        Ok(Ledger {
            tx,
            reader: Arc::new(Mutex::new(open(path)?)),
            changes,
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
    authority: Authority,
}

enum Pending {
    Apply(oneshot::Sender<Result<AckOutcome, LedgerError>>, AckOutcome),
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
            match self.commit_group(group) {
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
                            Pending::Apply(reply, outcome) => {
                                self.metrics.count_outcome(&outcome);
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
                        &self.authority,
                        &batch,
                        (&payload, &parts),
                        &topic,
                        &mut self.touched,
                    ) {
                        Ok(outcome) => {
                            tx.execute_batch("RELEASE batch")?;
                            pending.push(Pending::Apply(reply, outcome));
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

fn store_reject(tx: &Transaction<'_>, r: &Rejected) -> Result<(), rusqlite::Error> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO rejects (first_seen_ms, last_seen_ms, topic, agent_id, first_seq, last_seq, reason, payload, field)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (topic, payload) DO UPDATE SET seen_count = seen_count + 1, last_seen_ms = ?1",
        params![
            now,
            r.topic,
            r.agent_id,
            r.seqs.map(|s| s.0 as i64),
            r.seqs.map(|s| s.1 as i64),
            r.reason,
            r.payload,
            r.field
        ],
    )?;
    Ok(())
}

/// Applies one batch: checks its identity, appends new movements, updates the projection.
/// A batch that fails a check is recorded as a reject and answered `Rejected`.
fn apply_batch(
    tx: &Transaction<'_>,
    authority: &Authority,
    batch: &Batch,
    (payload, parts): (&[u8], &[std::ops::Range<usize>]),
    topic: &str,
    touched: &mut Vec<StockKey>,
) -> Result<AckOutcome, rusqlite::Error> {
    if let Some(reason) = check_batch(tx, batch, topic)? {
        tracing::error!(agent = %batch.agent_id, %topic, %reason, "batch rejected");
        store_reject(
            tx,
            &Rejected {
                topic: topic.to_string(),
                agent_id: Some(batch.agent_id.clone()),
                seqs: batch.seq_range(),
                reason: reason.clone(),
                field: None,
                payload: payload.to_vec(),
            },
        )?;
        return Ok(AckOutcome::Rejected { reason });
    }
    let now = now_ms();
    let mut insert = tx.prepare_cached(
        "INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, transfer, peer, order_ref)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) ON CONFLICT (agent_id, seq) DO NOTHING",
    )?;
    let (mut applied, mut duplicates) = (0u32, 0u32);
    let mut pending = projection::Pending::default();
    let whole = parts.len() == batch.movements.len();
    for (i, m) in batch.movements.iter().enumerate() {
        // The movement's bytes as received; encoded again only if the caller has no parts.
        let bytes: std::borrow::Cow<'_, [u8]> = match parts.get(i) {
            Some(range) if whole => payload[range.clone()].into(),
            _ => wire::encode_movement(m).into(),
        };
        let treatment = authority.treat(m);
        let returns_to = authority.returns_to(&m.location.warehouse);
        let inserted = insert.execute(params![
            batch.agent_id,
            m.seq as i64,
            m.sku.as_str(),
            m.location.warehouse,
            m.location.bin_key(),
            m.source,
            m.kind.name(),
            m.quantity as i64,
            m.occurred_at.unix_ms,
            now,
            bytes.as_ref(),
            treatment.as_str(),
            returns_to_str(returns_to),
            m.references.transfer,
            m.references.peer_warehouse,
            m.references.order,
        ])?;
        if inserted == 0 {
            duplicates += 1;
            continue;
        }
        applied += 1;
        if treatment == Treatment::Rejected {
            store_reject(
                tx,
                &Rejected {
                    topic: topic.to_string(),
                    agent_id: Some(batch.agent_id.clone()),
                    seqs: Some((m.seq, m.seq)),
                    reason: authority.reject_reason(&batch.agent_id, m),
                    field: Some("source".into()),
                    payload: bytes.to_vec(),
                },
            )?;
        }
        let entry = Entry {
            agent_id: batch.agent_id.clone(),
            movement: m.clone(),
            treatment,
            returns_to,
        };
        projection::project(tx, &entry, now, touched, &mut pending)?;
    }
    pending.flush(tx, now)?;
    Ok(AckOutcome::Applied {
        applied,
        duplicates,
    })
}

/// Refuses a batch whose topic, warehouse or journal identity does not add up.
fn check_batch(
    tx: &Transaction<'_>,
    batch: &Batch,
    topic: &str,
) -> Result<Option<String>, rusqlite::Error> {
    let topic_warehouse = stocksync_common::topics::warehouse_of_movements_topic(topic);
    if topic_warehouse != Some(batch.warehouse.as_str()) {
        return Ok(Some(format!(
            "warehouse `{}` in the payload does not match topic `{topic}`",
            batch.warehouse
        )));
    }
    if let Some(m) = batch
        .movements
        .iter()
        .find(|m| m.location.warehouse != batch.warehouse)
    {
        return Ok(Some(format!(
            "movement seq {} is located in `{}`, not in the batch's warehouse `{}`",
            m.seq, m.location.warehouse, batch.warehouse
        )));
    }
    let now = now_ms();
    let known: Option<(i64, String)> = tx
        .query_row(
            "SELECT journal_id, warehouse FROM agents WHERE agent_id = ?1",
            [&batch.agent_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match known {
        None => {
            tx.execute(
                "INSERT INTO agents VALUES (?1, ?2, ?3, ?4, ?4)",
                params![
                    batch.agent_id,
                    batch.journal_id as i64,
                    batch.warehouse,
                    now
                ],
            )?;
        }
        Some((journal_id, _)) if journal_id as u64 != batch.journal_id => {
            return Ok(Some(format!(
                "agent `{}` sent journal {} but the collector knows journal {journal_id}: its journal was recreated and its seqs would collide; give the agent a new agent_id",
                batch.agent_id, batch.journal_id
            )));
        }
        Some((_, warehouse)) if warehouse != batch.warehouse => {
            return Ok(Some(format!(
                "agent `{}` is registered for warehouse `{warehouse}`, not `{}`",
                batch.agent_id, batch.warehouse
            )));
        }
        Some(_) => {
            tx.prepare_cached("UPDATE agents SET last_seen_ms = ?2 WHERE agent_id = ?1")?
                .execute(params![batch.agent_id, now])?;
        }
    }
    Ok(None)
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
