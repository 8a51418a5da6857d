//! The agent's durable journal: every accepted movement is on disk before its sender hears
//! "accepted", and stays there until the collector has acknowledged its own durable commit.
//!
//! One writer thread owns the only write connection. Callers send commands over a channel;
//! the writer takes everything that is waiting, runs it in one transaction and fsyncs once
//! (group commit), then answers each caller. Concurrent HTTP requests therefore share
//! fsyncs instead of queueing behind each other's. Readers (the forwarder, status) use
//! their own connection; WAL lets them read while the writer writes.
//!
//! Invariants: seqs are dense, increasing and never reused, even after acknowledged rows are
//! pruned (the last seq is kept in `meta`); a request or movement id seen before is answered
//! from the `idempotency` table instead of being journaled twice; past `max_backlog`
//! unacknowledged movements new input is refused whole, never dropped.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use stocksync_common::input::InputError;
use stocksync_common::Movement;
use tokio::sync::{mpsc, oneshot, watch, Notify};

mod write;

use write::apply;

/// Tables of the journal file.
const SCHEMA: &str = include_str!("schema.sql");

/// When the oldest unacknowledged movement was journaled (seqs are journaled in order).
const OLDEST_UNACKED: &str =
    "SELECT journaled_at_ms FROM movements WHERE acked_at_ms IS NULL ORDER BY seq LIMIT 1";

/// Largest part of a refused payload kept in the rejects table.
const MAX_REJECT_PAYLOAD: usize = 64 * 1024;
/// Most commands folded into one transaction.
const MAX_GROUP: usize = 1024;

/// Journal failures, as the ingest paths report them.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal full: {backlog} unacknowledged movements reached the limit of {limit}; nothing was journaled")]
    Full { backlog: u64, limit: u64 },
    #[error("journal storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("journal writer has stopped")]
    Closed,
    /// The request's idempotency key was used before for a different body.
    #[error("idempotency key `{key}` was used before for a different body (journaled then: {then}); nothing was journaled; send new movements under a new key")]
    KeyReused { key: String, then: String },
    /// A movement id was journaled before (same source) with different content.
    #[error("{detail}")]
    IdReused { index: usize, detail: String },
}

impl JournalError {
    /// The refusal a conflict with earlier input becomes, naming the key or the record's
    /// `id` (`$.id`, or `$[i].id` when the body was an array); other errors are passed on.
    pub fn refusal(self, array: bool) -> Result<InputError, JournalError> {
        match self {
            e @ JournalError::KeyReused { .. } => Ok(InputError {
                record: None,
                field: "Idempotency-Key".into(),
                detail: e.to_string(),
            }),
            JournalError::IdReused { index, detail } => Ok(InputError {
                record: array.then_some(index),
                field: if array {
                    format!("$[{index}].id")
                } else {
                    "$.id".into()
                },
                detail,
            }),
            other => Err(other),
        }
    }
}

/// Result of appending one request's movements.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Appended {
    /// Seqs of the movements this request journaled (or journaled the first time, for a replay).
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub journaled: usize,
    /// Movements skipped because their id was journaled before.
    pub duplicates: usize,
    /// True when the request's idempotency key was seen before and nothing new was journaled.
    pub replayed: bool,
}

/// One refused record for the rejects queue.
#[derive(Debug, Clone)]
pub struct Reject {
    pub source: String,
    pub error: InputError,
    pub payload: Vec<u8>,
}

/// A request's idempotency key with a hash of the body it came with.
#[derive(Debug, Clone)]
pub struct RequestKey {
    pub key: String,
    pub body_hash: Vec<u8>,
}

impl RequestKey {
    /// The key as sent, with the SHA-256 of `body`.
    pub fn new(key: String, body: &[u8]) -> RequestKey {
        use sha2::Digest;
        RequestKey {
            key,
            body_hash: sha2::Sha256::digest(body).to_vec(),
        }
    }
}

enum Command {
    Append {
        movements: Vec<Movement>,
        key: Option<RequestKey>,
        reply: oneshot::Sender<Result<Appended, JournalError>>,
    },
    Ack {
        first: u64,
        last: u64,
        outcome: String,
        reply: oneshot::Sender<Result<u64, JournalError>>,
    },
    Reject {
        reject: Reject,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Prune {
        acked_before_ms: i64,
        keys_before_ms: i64,
    },
}

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    /// Turns true once the writer thread has ended and both connections are closed.
    closed: watch::Receiver<bool>,
}

struct Shared {
    reader: Mutex<Connection>,
    backlog: AtomicU64,
    last_seq: AtomicU64,
    last_ack_ms: AtomicI64,
    journal_id: u64,
    appended: Notify,
}

/// Numbers for `GET /v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JournalStatus {
    pub journal_id: u64,
    pub backlog: u64,
    pub last_seq: u64,
    pub oldest_unacked_ms: Option<i64>,
    pub last_ack_ms: Option<i64>,
    pub rejects: u64,
    /// Movements the collector acknowledged as rejected (kept, never pruned).
    pub refused_by_collector: u64,
}

/// A stored reject, for `GET /v1/rejects`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredReject {
    pub id: i64,
    pub received_at_ms: i64,
    pub source: String,
    pub record: Option<i64>,
    pub field: String,
    pub detail: String,
    pub payload: String,
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: in WAL mode every commit fsyncs the WAL, so "202 Accepted" means on disk.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn meta(conn: &Connection, key: &str) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn now_ms() -> i64 {
    stocksync_common::input::now().unix_ms
}

impl Journal {
    /// Opens (or creates) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, max_backlog: u64) -> Result<Journal, JournalError> {
        let mut conn = open(path)?;
        conn.execute_batch(SCHEMA)?;
        write::migrate(&mut conn)?;
        let journal_id = {
            let tx = conn.transaction()?;
            let id = match meta(&tx, "journal_id")? {
                Some(id) => id as u64,
                None => {
                    let id = random_id();
                    tx.execute("INSERT INTO meta VALUES ('journal_id', ?1)", [id as i64])?;
                    id
                }
            };
            tx.commit()?;
            id
        };
        let last_seq = meta(&conn, "last_seq")?.unwrap_or(0).max(conn.query_row(
            "SELECT COALESCE(MAX(seq), 0) FROM movements",
            [],
            |r| r.get(0),
        )?) as u64;
        let backlog: i64 = conn.query_row(
            "SELECT COUNT(*) FROM movements WHERE acked_at_ms IS NULL",
            [],
            |r| r.get(0),
        )?;
        let shared = Arc::new(Shared {
            reader: Mutex::new(open(path)?),
            backlog: AtomicU64::new(backlog as u64),
            last_seq: AtomicU64::new(last_seq),
            last_ack_ms: AtomicI64::new(0),
            journal_id,
            appended: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(4096);
        let writer = Writer {
            conn,
            shared: shared.clone(),
            next_seq: last_seq + 1,
            max_backlog,
        };
        let (done, closed) = watch::channel(false);
        std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || {
                // The writer ends when the last handle is dropped; it holds the last
                // reference to the shared state, so both connections close here.
                writer.run(rx);
                let _ = done.send(true);
            })
            .map_err(|_| JournalError::Closed)?;
        Ok(Journal { tx, shared, closed })
    }

    /// Journals `movements` durably; returns once they are fsynced (or refused whole).
    pub async fn append(
        &self,
        movements: Vec<Movement>,
        key: Option<String>,
    ) -> Result<Appended, JournalError> {
        let key = key.map(|k| RequestKey {
            key: k,
            body_hash: Vec::new(),
        });
        self.append_request(movements, key).await
    }

    /// Like [`Journal::append`], with the request's idempotency key and body hash: the same
    /// key with another body is refused ([`JournalError::KeyReused`]), never replayed.
    pub async fn append_request(
        &self,
        movements: Vec<Movement>,
        key: Option<RequestKey>,
    ) -> Result<Appended, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            movements,
            key,
            reply,
        })
        .await?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Marks seqs `first..=last` as acknowledged by the collector; returns how many were newly acked.
    pub async fn ack(&self, first: u64, last: u64, outcome: String) -> Result<u64, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Ack {
            first,
            last,
            outcome,
            reply,
        })
        .await?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Durably records a refused record in the rejects queue.
    pub async fn reject(&self, reject: Reject) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Reject { reject, reply }).await?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Drops acknowledged movements and idempotency keys older than the given ages.
    pub async fn prune(&self, acked_age_ms: i64, keys_age_ms: i64) -> Result<(), JournalError> {
        let now = now_ms();
        self.send(Command::Prune {
            acked_before_ms: now - acked_age_ms,
            keys_before_ms: now - keys_age_ms,
        })
        .await
    }

    async fn send(&self, command: Command) -> Result<(), JournalError> {
        self.tx
            .send(command)
            .await
            .map_err(|_| JournalError::Closed)
    }

    /// Unacknowledged movements with seq greater than `after`, in seq order, as journaled bytes.
    pub fn unacked_after(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, JournalError> {
        let conn = self.shared.reader.lock().expect("reader lock");
        let mut stmt = conn.prepare_cached(
            "SELECT seq, payload FROM movements WHERE acked_at_ms IS NULL AND seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Waits until something new is journaled.
    pub async fn appended(&self) {
        self.shared.appended.notified().await
    }

    /// Resolves once every handle is dropped and the journal file is closed, so that a
    /// stopped agent no longer touches it (a new agent may open it, or it may be removed).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            let _ = closed.wait_for(|c| *c).await;
        }
    }

    /// This journal's random id (see `wire::Batch::journal_id`).
    pub fn journal_id(&self) -> u64 {
        self.shared.journal_id
    }

    /// Unacknowledged movements right now.
    pub fn backlog(&self) -> u64 {
        self.shared.backlog.load(Ordering::Relaxed)
    }

    /// Numbers for the status endpoint.
    pub fn status(&self) -> Result<JournalStatus, JournalError> {
        let conn = self.shared.reader.lock().expect("reader lock");
        // The first unacked seq was journaled first: one step down the partial index, where
        // MIN(journaled_at_ms) read every unacked row while holding the forwarder's reader.
        let oldest: Option<i64> = conn
            .prepare_cached(OLDEST_UNACKED)?
            .query_row([], |r| r.get(0))
            .optional()?;
        let rejects: i64 = conn.query_row("SELECT COUNT(*) FROM rejects", [], |r| r.get(0))?;
        let refused: i64 = conn.query_row(
            "SELECT COUNT(*) FROM movements WHERE outcome IS NOT NULL AND outcome <> 'applied'",
            [],
            |r| r.get(0),
        )?;
        let last_ack = self.shared.last_ack_ms.load(Ordering::Relaxed);
        Ok(JournalStatus {
            journal_id: self.shared.journal_id,
            backlog: self.backlog(),
            last_seq: self.shared.last_seq.load(Ordering::Relaxed),
            oldest_unacked_ms: oldest,
            last_ack_ms: (last_ack > 0).then_some(last_ack),
            rejects: rejects as u64,
            refused_by_collector: refused as u64,
        })
    }

    /// The newest refused records, newest first.
    pub fn rejects(&self, limit: usize) -> Result<Vec<StoredReject>, JournalError> {
        let conn = self.shared.reader.lock().expect("reader lock");
        let mut stmt = conn.prepare_cached(
            "SELECT id, received_at_ms, source, record, field, detail, payload FROM rejects ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map([limit as i64], |r| {
            Ok(StoredReject {
                id: r.get(0)?,
                received_at_ms: r.get(1)?,
                source: r.get(2)?,
                record: r.get(3)?,
                field: r.get(4)?,
                detail: r.get(5)?,
                payload: String::from_utf8_lossy(&r.get::<_, Vec<u8>>(6)?).into_owned(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn random_id() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() >> 1 // fits in SQLite's signed INTEGER
}

struct Writer {
    conn: Connection,
    shared: Arc<Shared>,
    next_seq: u64,
    max_backlog: u64,
}

/// A command's answer, held until the group's commit is on disk.
enum Pending {
    Append(
        oneshot::Sender<Result<Appended, JournalError>>,
        Result<Appended, JournalError>,
    ),
    Ack(
        oneshot::Sender<Result<u64, JournalError>>,
        Result<u64, JournalError>,
    ),
    Reject(
        oneshot::Sender<Result<(), JournalError>>,
        Result<(), JournalError>,
    ),
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
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let seq_before = self.next_seq;
        let backlog_before = self.shared.backlog.load(Ordering::Relaxed);
        let result = (|| -> Result<Vec<Pending>, rusqlite::Error> {
            // IMMEDIATE takes the write lock before the first read. A deferred transaction that
            // reads, then writes, fails at once with SQLITE_BUSY when another connection to the
            // file committed in between, and the busy timeout cannot save it.
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut pending = Vec::with_capacity(group.len());
            let mut backlog = backlog_before;
            for command in group {
                pending.extend(apply(
                    &tx,
                    command,
                    &mut self.next_seq,
                    &mut backlog,
                    self.max_backlog,
                )?);
            }
            tx.execute(
                "INSERT INTO meta VALUES ('last_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(self.next_seq - 1) as i64],
            )?;
            tx.commit()?;
            self.shared.backlog.store(backlog, Ordering::Relaxed);
            Ok(pending)
        })();
        match result {
            Ok(pending) => {
                if self.next_seq != seq_before {
                    self.shared
                        .last_seq
                        .store(self.next_seq - 1, Ordering::Relaxed);
                    self.shared.appended.notify_waiters();
                    self.shared.appended.notify_one();
                }
                for p in pending {
                    match p {
                        Pending::Append(tx, r) => drop(tx.send(r)),
                        Pending::Ack(tx, r) => {
                            if r.is_ok() {
                                self.shared.last_ack_ms.store(now_ms(), Ordering::Relaxed);
                            }
                            drop(tx.send(r))
                        }
                        Pending::Reject(tx, r) => drop(tx.send(r)),
                    }
                }
            }
            Err(e) => {
                // Nothing of the group is on disk: seqs were not used, every caller hears the error.
                tracing::error!(error = %e, "journal commit failed");
                self.next_seq = seq_before;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksync_common::model::*;

    fn movement() -> Movement {
        Movement {
            seq: 0,
            sku: Sku("SKU-1".into()),
            location: Location {
                warehouse: "ams".into(),
                bin: None,
            },
            source: "wms".into(),
            kind: MovementKind::Receipt,
            quantity: 1,
            unit: "each".into(),
            unit_quantity: 1,
            occurred_at: OccurredAt {
                unix_ms: 0,
                offset_seconds: 0,
            },
            references: References::default(),
            external_id: None,
            note: None,
            origin: Default::default(),
        }
    }

    #[tokio::test]
    async fn oldest_unacked_is_when_the_first_unacked_seq_was_journaled() {
        let dir = std::env::temp_dir().join(format!("stocksync-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.db");
        let journal = Journal::open(&path, 100).unwrap();
        for _ in 0..3 {
            journal.append(vec![movement()], None).await.unwrap();
        }
        journal.ack(1, 1, "applied".into()).await.unwrap();
        let conn = Connection::open(&path).unwrap();
        let second: i64 = conn
            .query_row(
                "SELECT journaled_at_ms FROM movements WHERE seq = 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(journal.status().unwrap().oldest_unacked_ms, Some(second));
        journal.ack(2, 3, "applied".into()).await.unwrap();
        assert_eq!(journal.status().unwrap().oldest_unacked_ms, None);
        drop(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unacked_v1_movements_are_re_encoded_as_v2_once() {
        let dir = std::env::temp_dir().join(format!("stocksync-journal-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.db");
        {
            // A journal as an agent before wire v2 left it: v1 bytes, no migration mark.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            let mut m = movement();
            m.seq = 1;
            let v1 = postcard::to_stdvec(&m).unwrap();
            conn.execute(
                "INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (1, ?1, 0)",
                [v1],
            )
            .unwrap();
        }
        let journal = Journal::open(&path, 100).unwrap();
        let rows = journal.unacked_after(0, 10).unwrap();
        let mut expected = movement();
        expected.seq = 1;
        assert_eq!(
            rows[0].1,
            stocksync_common::wire::encode_movement(&expected)
        );
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
