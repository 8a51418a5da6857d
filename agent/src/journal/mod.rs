//! The agent's durable journal: every accepted movement is on disk before its sender hears
//! "accepted", and stays there until the collector has acknowledged its own durable commit.
//!
//! One writer thread (`stocksync-durable`) owns the only write connection. Callers send
//! commands over a channel; the writer takes everything that is waiting, runs it in one
//! transaction (a savepoint and a panic boundary per command) and fsyncs once (group
//! commit), then answers each caller. Concurrent HTTP requests therefore share
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
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::input::InputError;
use rusqlite::{params, Connection, OptionalExtension};
use stocksync_common::Movement;
use tokio::sync::{oneshot, Notify};

mod config;
mod integrity;
mod migrate;
mod rollback;
mod stream;
mod write;
mod writer;

pub use config::JournalConfig;
pub use rollback::{accept_rollback, Accepted};
use stocksync_durable::Writer;
pub use stream::{Chunk, StreamSender};
use writer::State;

/// The writer command that journals one request's movements.
fn append_op(
    movements: Vec<Movement>,
    key: Option<RequestKey>,
) -> impl FnOnce(&Connection, &mut State) -> Result<Appended, JournalError> + Send + 'static {
    move |conn, st| {
        let max = st.options.max_backlog;
        write::append(conn, movements, key, &mut st.next_seq, &mut st.backlog, max)
    }
}

/// When the oldest unacknowledged movement was journaled (seqs are journaled in order).
const OLDEST_UNACKED: &str =
    "SELECT journaled_at_ms FROM movements WHERE acked_at_ms IS NULL ORDER BY seq LIMIT 1";

/// Largest part of a refused payload kept in the rejects table.
const MAX_REJECT_PAYLOAD: usize = 16 * 1024;
/// Most commands folded into one transaction.
const MAX_GROUP: usize = 1024;

/// Journal failures, as the ingest paths report them.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal full: {backlog} unacknowledged movements reached the limit of {limit}; nothing was journaled")]
    Full { backlog: u64, limit: u64 },
    #[error("journal storage error: {0}")]
    Sqlite(rusqlite::Error),
    #[error("journal writer has stopped")]
    Closed,
    #[error("the input stopped before its end ({0}); nothing of it was journaled")]
    Aborted(String),
    /// The request's idempotency key was used before for a different body.
    #[error("idempotency key `{key}` was used before for a different body (journaled then: {then}); nothing was journaled; send new movements under a new key")]
    KeyReused { key: String, then: String },
    /// A movement id was journaled before (same source) with different content.
    #[error("{detail}")]
    IdReused { index: usize, detail: String },
    #[error("disk full: nothing was journaled ({detail})")]
    DiskFull { detail: String },
    #[error("journal write failed, nothing was journaled: {detail}")]
    Failed { detail: String },
    #[error("journal {} went back in time: {detail}. It was restored from a backup or lost its WAL; starting would hand out seqs again and new movements would be taken for duplicates. Recovery: stop the agent, keep a copy of the journal file, run `stocksync-agent --config <file> accept-rollback`, start the agent (docs/OPERATIONS.md, \"Recovering an agent whose journal was rolled back\")", path.display())]
    RolledBack {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("journal {} has layout version {found}, but this agent knows up to {known}: it was written by a newer release; run that release or a newer one (keep the file)", path.display())]
    TooNew {
        path: std::path::PathBuf,
        found: u32,
        known: u32,
    },
    #[error("journal {} is corrupt: {detail}", path.display())]
    Corrupt {
        path: std::path::PathBuf,
        detail: String,
    },
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

impl From<rusqlite::Error> for JournalError {
    fn from(e: rusqlite::Error) -> JournalError {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => JournalError::DiskFull {
                detail: e.to_string(),
            },
            _ => JournalError::Sqlite(e),
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

/// Handle to the journal; cheap to clone.
#[derive(Clone)]
pub struct Journal {
    writer: Writer<State>,
    shared: Arc<Shared>,
}

struct Shared {
    reader: Mutex<Connection>,
    backlog: AtomicU64,
    last_seq: AtomicU64,
    last_ack_ms: AtomicI64,
    journal_id: u64,
    appended: Notify,
    path: std::path::PathBuf,
    rejects_retain_ms: i64,
    /// True while the last commit failed for lack of space.
    disk_full: AtomicBool,
    /// Highest seq the collector acknowledged as applied, as last written beside the journal.
    applied_watermark: AtomicU64,
    /// The seq last written to the watermark file.
    watermark_written: AtomicU64,
}

/// Numbers for `GET /v1/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JournalStatus {
    pub journal_id: u64,
    pub backlog: u64,
    pub last_seq: u64,
    pub oldest_unacked_ms: Option<i64>,
    pub last_ack_ms: Option<i64>,
    /// Records ever refused (kept plus dropped by the bounds).
    pub rejects: u64,
    /// Refused records dropped by `max_rejects` / `rejects_retain_days`, oldest first.
    pub rejects_dropped: u64,
    /// Movements the collector acknowledged as rejected (kept, never pruned).
    pub refused_by_collector: u64,
    /// True while the last commit failed for lack of space (input answered `503 disk full`).
    pub disk_full: bool,
}

/// A stored reject, for `GET /v1/rejects`.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StoredReject {
    pub id: i64,
    pub received_at_ms: i64,
    pub source: String,
    pub record: Option<i64>,
    pub field: String,
    pub detail: String,
    pub payload: String,
}

/// WAL, `synchronous = FULL` (every commit fsyncs the WAL, so "202 Accepted" means on disk).
fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    stocksync_durable::open(path)
}

fn meta(conn: &Connection, key: &str) -> Result<Option<i64>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn now_ms() -> i64 {
    crate::input::now().unix_ms
}

impl Journal {
    /// Opens (or creates) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path, max_backlog: u64) -> Result<Journal, JournalError> {
        let options = Options {
            max_backlog,
            ..Options::default()
        };
        Journal::open_with(path, options)
    }

    /// Opens (or creates) the journal at `path` with `options`, after an integrity check,
    /// and starts its writer thread.
    pub fn open_with(path: &Path, options: Options) -> Result<Journal, JournalError> {
        let mut conn = integrity::open_checked(path, options.max_file_bytes)?;
        migrate::migrate(&conn, path)?;
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
        rollback::check(&conn, path, journal_id, last_seq)?;
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
            path: path.to_owned(),
            rejects_retain_ms: options.rejects_retain_ms,
            disk_full: AtomicBool::new(false),
            applied_watermark: AtomicU64::new(
                rollback::read_watermark(path, journal_id).unwrap_or(0),
            ),
            watermark_written: AtomicU64::new(0),
        });
        let state = State {
            shared: shared.clone(),
            next_seq: last_seq + 1,
            backlog: backlog as u64,
            options,
        };
        let options = stocksync_durable::Options {
            name: "journal-writer".into(),
            max_group: MAX_GROUP,
            queue: 4096,
        };
        // The writer ends when the last handle is dropped; it holds the last reference to
        // the shared state, so both connections are closed when `closed()` resolves.
        let writer = Writer::spawn(conn, state, options).map_err(|_| JournalError::Closed)?;
        Ok(Journal { writer, shared })
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
        Ok(self.writer.call(append_op(movements, key)).await?)
    }

    /// Journals several requests, each atomic on its own, in the order given; the writer
    /// folds them into as few transactions as it can (one fsync for all, usually).
    pub async fn append_each(
        &self,
        requests: Vec<Vec<Movement>>,
    ) -> Result<Vec<Result<Appended, JournalError>>, JournalError> {
        let mut replies = Vec::with_capacity(requests.len());
        for movements in requests {
            let (reply, rx) = oneshot::channel();
            let deliver = move |r: Result<Appended, _>| drop(reply.send(r.map_err(Into::into)));
            self.writer
                .submit(append_op(movements, None), deliver)
                .await?;
            replies.push(rx);
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(|_| JournalError::Closed)?);
        }
        Ok(out)
    }

    /// Starts journaling one input too large to hold in memory: send its movements as
    /// `Chunk::Movements`, then `Chunk::End`. Nothing is journaled unless `End` arrives
    /// (dropping the sender aborts). The returned reply says what was journaled; an input
    /// whose `key` was journaled before is answered `replayed` without reading its chunks.
    pub async fn append_stream(
        &self,
        key: String,
    ) -> Result<
        (
            StreamSender,
            oneshot::Receiver<Result<Appended, JournalError>>,
        ),
        JournalError,
    > {
        let (sender, chunks) = std::sync::mpsc::sync_channel(stream::CHUNKS_IN_FLIGHT);
        let (reply, rx) = oneshot::channel();
        let op = move |conn: &Connection, st: &mut State| {
            let max = st.options.max_backlog;
            stream::append(conn, &key, chunks, &mut st.next_seq, &mut st.backlog, max)
        };
        let deliver = move |r: Result<Appended, _>| drop(reply.send(r.map_err(Into::into)));
        self.writer.submit(op, deliver).await?;
        Ok((sender, rx))
    }

    /// Marks seqs `first..=last` as acknowledged by the collector; returns how many were newly acked.
    pub async fn ack(&self, first: u64, last: u64, outcome: String) -> Result<u64, JournalError> {
        let op = move |conn: &Connection, st: &mut State| {
            write::ack(conn, (first, last), &outcome, &mut st.backlog)
        };
        let acked = self.writer.call(op).await?;
        self.shared.last_ack_ms.store(now_ms(), Ordering::Relaxed);
        Ok(acked)
    }

    /// Queues marking seqs `first..=last` acknowledged without waiting for its commit: the
    /// forwarder goes on sending meanwhile. A mark lost to a crash or a failed commit only
    /// means those movements are sent again (the collector deduplicates); a failure is logged.
    pub async fn ack_queued(
        &self,
        first: u64,
        last: u64,
        outcome: String,
    ) -> Result<(), JournalError> {
        let op = move |conn: &Connection, st: &mut State| {
            write::ack(conn, (first, last), &outcome, &mut st.backlog)
        };
        let shared = self.shared.clone();
        let deliver = move |r: Result<u64, stocksync_durable::Error<JournalError>>| match r {
            Ok(_) => shared.last_ack_ms.store(now_ms(), Ordering::Relaxed),
            Err(e) => {
                tracing::error!(error = %e, first, last, "cannot record ack; the movements will be sent again")
            }
        };
        Ok(self.writer.submit(op, deliver).await?)
    }

    /// Durably records a refused record in the rejects queue.
    pub async fn reject(&self, reject: Reject) -> Result<(), JournalError> {
        let op = move |conn: &Connection, st: &mut State| {
            write::reject(conn, reject, st.options.max_rejects)
        };
        Ok(self.writer.call(op).await?)
    }

    /// Drops acknowledged movements and idempotency keys older than the given ages.
    pub async fn prune(&self, acked_age_ms: i64, keys_age_ms: i64) -> Result<(), JournalError> {
        let now = now_ms();
        let acked_before_ms = now.saturating_sub(acked_age_ms);
        let keys_before_ms = now.saturating_sub(keys_age_ms);
        let rejects_before_ms = now.saturating_sub(self.shared.rejects_retain_ms);
        let op = move |conn: &Connection, _: &mut State| {
            write::prune(conn, acked_before_ms, keys_before_ms, rejects_before_ms)
        };
        // Nobody waits for a prune; a failed one is logged and the next one tries again.
        let deliver = |r: Result<(), stocksync_durable::Error<JournalError>>| {
            if let Err(e) = r {
                tracing::warn!(error = %e, "journal prune failed");
            }
        };
        Ok(self.writer.submit(op, deliver).await?)
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

    /// Notes that the collector applied everything up to `seq`; [`Journal::flush_applied`]
    /// writes it beside the journal (the start-up guard against a rolled-back journal).
    pub fn record_applied(&self, seq: u64) {
        self.shared
            .applied_watermark
            .fetch_max(seq, Ordering::Relaxed);
    }

    /// Writes the newest applied seq beside the journal if it moved since the last write.
    /// Called on a timer, not per ack: a file created and renamed per ack cost the forwarder
    /// more than the rest of the ack, and a watermark a moment behind only narrows the
    /// start-up guard (the collector's own check of reused seqs remains). Blocking file I/O;
    /// a failure is logged.
    pub fn flush_applied(&self) {
        let seq = self.shared.applied_watermark.load(Ordering::Relaxed);
        if self.shared.watermark_written.swap(seq, Ordering::Relaxed) == seq {
            return;
        }
        if let Err(e) = rollback::write_watermark(&self.shared.path, self.shared.journal_id, seq) {
            self.shared.watermark_written.store(0, Ordering::Relaxed);
            tracing::warn!(error = %e, "cannot write the applied-seq watermark beside the journal");
        }
    }

    /// Records that the collector found seqs reused with other content (`first` the first of
    /// them, `collector_last` its highest seq); the agent refuses to start until
    /// `accept_rollback`.
    pub fn record_rollback(&self, first: u64, collector_last: u64) -> Result<(), JournalError> {
        let conn = self.shared.reader.lock().expect("reader lock");
        Ok(rollback::mark(&conn, first, collector_last)?)
    }

    /// Waits until something new is journaled.
    pub async fn appended(&self) {
        self.shared.appended.notified().await
    }

    /// Resolves once every handle is dropped and the journal file is closed, so that a
    /// stopped agent no longer touches it (a new agent may open it, or it may be removed).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.writer.closed()
    }

    /// The journal file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// This journal's random id (see `wire::Batch::journal_id`).
    pub fn journal_id(&self) -> u64 {
        self.shared.journal_id
    }

    /// True while the last commit failed for lack of space.
    pub fn disk_full(&self) -> bool {
        self.shared.disk_full.load(Ordering::Relaxed)
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
        let dropped = meta(&conn, "rejects_dropped")?.unwrap_or(0);
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
            rejects: (rejects + dropped) as u64,
            rejects_dropped: dropped as u64,
            refused_by_collector: refused as u64,
            disk_full: self.shared.disk_full.load(Ordering::Relaxed),
        })
    }

    /// Refused records not yet forwarded to the collector, oldest first.
    pub fn unforwarded_rejects(&self, limit: usize) -> Result<Vec<StoredReject>, JournalError> {
        let conn = self.shared.reader.lock().expect("reader lock");
        let mut stmt = conn.prepare_cached(
            "SELECT id, received_at_ms, source, record, field, detail, payload FROM rejects
             WHERE forwarded_at_ms IS NULL ORDER BY id LIMIT ?1",
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

    /// Marks reject `id` forwarded (its publish was acknowledged by the broker); returns once
    /// that is committed. If lost in a crash the reject is sent again, which the collector
    /// recognises as the same reject.
    pub async fn reject_forwarded(&self, id: i64) -> Result<(), JournalError> {
        let at_ms = now_ms();
        let op = move |conn: &Connection, _: &mut State| -> Result<(), JournalError> {
            conn.execute(
                "UPDATE rejects SET forwarded_at_ms = ?2 WHERE id = ?1",
                params![id, at_ms],
            )?;
            Ok(())
        };
        Ok(self.writer.call(op).await?)
    }

    /// Reject `id` with the bytes kept of its request, and whether they were cut to fit.
    pub fn reject_by_id(
        &self,
        id: i64,
    ) -> Result<Option<(StoredReject, Vec<u8>, bool)>, JournalError> {
        let conn = self.shared.reader.lock().expect("reader lock");
        let row = conn
            .query_row(
                "SELECT id, received_at_ms, source, record, field, detail, payload FROM rejects WHERE id = ?1",
                [id],
                |r| {
                    let bytes: Vec<u8> = r.get(6)?;
                    let reject = StoredReject {
                        id: r.get(0)?,
                        received_at_ms: r.get(1)?,
                        source: r.get(2)?,
                        record: r.get(3)?,
                        field: r.get(4)?,
                        detail: r.get(5)?,
                        payload: String::from_utf8_lossy(&bytes).into_owned(),
                    };
                    Ok((reject, bytes))
                },
            )
            .optional()?;
        Ok(row.map(|(r, bytes)| {
            let cut = bytes.len() >= MAX_REJECT_PAYLOAD;
            (r, bytes, cut)
        }))
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

/// The journal's limits (`[journal]` in the agent's config).
#[derive(Debug, Clone)]
pub struct Options {
    pub max_backlog: u64,
    pub max_rejects: u64,
    pub rejects_retain_ms: i64,
    pub max_file_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        let c = JournalConfig::default();
        Options::from(&c)
    }
}

impl From<&JournalConfig> for Options {
    fn from(c: &JournalConfig) -> Options {
        Options {
            max_backlog: c.max_backlog,
            max_rejects: c.max_rejects,
            rejects_retain_ms: i64::try_from(c.rejects_retain_days.saturating_mul(86_400_000))
                .unwrap_or(i64::MAX),
            max_file_bytes: c.max_file_bytes,
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
    async fn rejects_older_than_their_retention_are_pruned_and_counted() {
        let dir =
            std::env::temp_dir().join(format!("stocksync-rejects-age-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let options = Options {
            rejects_retain_ms: -60_000, // everything is older than "one minute from now"
            ..Options::default()
        };
        let journal = Journal::open_with(&dir.join("journal.db"), options).unwrap();
        for i in 0..3 {
            let error = InputError {
                record: None,
                field: "$".into(),
                detail: format!("bad {i}"),
            };
            let payload = vec![b'x'; 100];
            let source = "http".into();
            journal
                .reject(Reject {
                    source,
                    error,
                    payload,
                })
                .await
                .unwrap();
        }
        assert_eq!(journal.status().unwrap().rejects_dropped, 0);
        journal.prune(0, 0).await.unwrap();
        // The prune command has no reply: the next command's answer comes after it.
        journal.ack(1, 1, "applied".into()).await.unwrap();
        let status = journal.status().unwrap();
        assert_eq!((status.rejects, status.rejects_dropped), (3, 3));
        assert!(journal.rejects(10).unwrap().is_empty());
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_forwarded_reject_is_not_offered_again_even_after_reopening() {
        let dir =
            std::env::temp_dir().join(format!("stocksync-rejects-fwd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("journal.db");
        let journal = Journal::open_with(&path, Options::default()).unwrap();
        for i in 0..2 {
            let error = InputError {
                record: Some(1),
                field: "$[1].sku".into(),
                detail: format!("unknown {i}"),
            };
            let reject = Reject {
                source: "http".into(),
                error,
                payload: b"[{},{}]".to_vec(),
            };
            journal.reject(reject).await.unwrap();
        }
        let ids: Vec<i64> = journal
            .unforwarded_rejects(10)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.len(), 2);
        journal.reject_forwarded(ids[0]).await.unwrap();
        let left = journal.unforwarded_rejects(10).unwrap();
        assert_eq!(left.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[1]]);
        let (kept, bytes, cut) = journal.reject_by_id(ids[1]).unwrap().unwrap();
        assert_eq!(
            (kept.field.as_str(), bytes.as_slice(), cut),
            ("$[1].sku", &b"[{},{}]"[..], false)
        );
        let closed = journal.closed();
        drop(journal);
        closed.await;
        let journal = Journal::open_with(&path, Options::default()).unwrap();
        assert_eq!(
            journal.unforwarded_rejects(10).unwrap().len(),
            1,
            "the flag is durable"
        );
        assert_eq!(
            journal.rejects(10).unwrap().len(),
            2,
            "the agent keeps its copy"
        );
        drop(journal);
        let _ = std::fs::remove_dir_all(&dir);
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
            conn.execute_batch(migrate::TABLES).unwrap();
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
