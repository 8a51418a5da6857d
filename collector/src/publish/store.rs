//! Durable channel state, in a SQLite file of its own beside the ledger's (`file`), so a
//! pass's commit never waits for the ledger writer's lock or queues behind its fsyncs.
//!
//! `channel_sellable` holds the number last published per (channel, SKU); every change to
//! it is appended, in the same transaction, to `channel_changes`, whose AUTOINCREMENT key is
//! the feed cursor: monotonic, never reused (even after pruning or a crash, since the
//! connection runs `synchronous = FULL`), and so stable across restarts. Each push target
//! keeps its own cursor into that log in `channel_cursors`, so a change is delivered after a
//! restart or an outage exactly as if nothing had happened.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

pub use super::store_state::{mode, remote_quantity, set_mode, set_remote_quantity, ModeState};
use super::PublishError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS channel_sellable (
    channel TEXT NOT NULL,
    sku TEXT NOT NULL,
    channel_sku TEXT NOT NULL,
    value INTEGER NOT NULL,
    cursor INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (channel, sku)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_changes (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    sku TEXT NOT NULL,
    channel_sku TEXT NOT NULL,
    value INTEGER NOT NULL,
    changed_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS channel_changes_by_channel ON channel_changes (channel, cursor);
CREATE TABLE IF NOT EXISTS channel_cursors (
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    PRIMARY KEY (channel, target)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_state (
    channel TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    set_by TEXT NOT NULL,
    reason TEXT,
    set_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS channel_errors (
    id INTEGER PRIMARY KEY,
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    seen_count INTEGER NOT NULL DEFAULT 1,
    resolved_at_ms INTEGER
);
CREATE INDEX IF NOT EXISTS channel_errors_open ON channel_errors (channel, target, resolved_at_ms);
CREATE TABLE IF NOT EXISTS channel_remote (
    channel TEXT NOT NULL,
    target TEXT NOT NULL,
    sku TEXT NOT NULL,
    quantity INTEGER NOT NULL,
    PRIMARY KEY (channel, target, sku)
) WITHOUT ROWID;
";

/// One published value, as the feed and the targets see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Published {
    /// The channel's own id for the SKU.
    pub sku: String,
    pub canonical_sku: String,
    pub sellable: u64,
    pub cursor: i64,
    pub updated_at_ms: i64,
}

/// A value to publish, computed by the recompute step.
#[derive(Debug, Clone)]
pub struct NewValue {
    pub sku: String,
    pub channel_sku: String,
    pub value: u64,
}

/// Handle to the channel tables; cheap to clone. Writes go through one connection; the
/// targets' reads of the change log use another, so a delivery loop never waits for a
/// pass's fsync (WAL lets it read the last committed state meanwhile).
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

pub(crate) fn now_ms() -> i64 {
    stocksync_common::OccurredAt::now().unix_ms
}

impl Store {
    /// Opens (or creates) the channel store beside the ledger at `ledger`, moving the
    /// channel rows an older ledger still holds into it.
    pub fn open(ledger: &Path) -> Result<Store, PublishError> {
        let path = super::file::beside(ledger);
        let mut conn = open_conn(&path)?;
        conn.execute_batch(SCHEMA)?;
        super::file::move_from_ledger(&mut conn, ledger)?;
        let reader = open_conn(&path)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    /// Runs `f` on the write connection in a blocking thread.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, PublishError> {
        on(&self.conn, f).await
    }

    /// Runs `f` (reads only) on the read connection in a blocking thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, PublishError> {
        on(&self.reader, f).await
    }
}

/// WAL, and `synchronous = FULL`: a change-log row once seen by a consumer is never lost,
/// so its AUTOINCREMENT key is never handed out twice.
fn open_conn(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

async fn on<T: Send + 'static>(
    conn: &Arc<Mutex<Connection>>,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, PublishError> {
    let conn = conn.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = conn.lock().expect("channel store lock");
        f(&mut conn)
    })
    .await
    .map_err(|_| PublishError::Closed)?
    .map_err(PublishError::from)
}

/// Current published values of `channel`, by canonical SKU.
pub fn current(conn: &Connection, channel: &str) -> rusqlite::Result<BTreeMap<String, u64>> {
    let mut stmt =
        conn.prepare_cached("SELECT sku, value FROM channel_sellable WHERE channel = ?1")?;
    let rows = stmt.query_map([channel], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    rows.collect()
}

/// Stores the values that differ from what is published and appends them to the change log,
/// in one transaction. Returns the last cursor written, if any.
pub fn publish(
    conn: &mut Connection,
    channel: &str,
    values: &[NewValue],
) -> rusqlite::Result<Option<i64>> {
    // IMMEDIATE: a deferred transaction that reads first cannot wait for another writer
    // when it upgrades to write (SQLITE_BUSY without the busy handler).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now_ms();
    let mut last = None;
    {
        let mut read = tx.prepare_cached(
            "SELECT value, channel_sku FROM channel_sellable WHERE channel = ?1 AND sku = ?2",
        )?;
        let mut log = tx.prepare_cached(
            "INSERT INTO channel_changes (channel, sku, channel_sku, value, changed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut upsert = tx.prepare_cached(
            "INSERT INTO channel_sellable (channel, sku, channel_sku, value, cursor, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (channel, sku) DO UPDATE SET channel_sku = excluded.channel_sku, value = excluded.value,
                cursor = excluded.cursor, updated_at_ms = excluded.updated_at_ms",
        )?;
        for v in values {
            let old: Option<(i64, String)> = read
                .query_row(params![channel, v.sku], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            if old == Some((v.value as i64, v.channel_sku.clone())) {
                continue;
            }
            log.execute(params![channel, v.sku, v.channel_sku, v.value as i64, now])?;
            let cursor = tx.last_insert_rowid();
            upsert.execute(params![
                channel,
                v.sku,
                v.channel_sku,
                v.value as i64,
                cursor,
                now
            ])?;
            last = Some(cursor);
        }
    }
    tx.commit()?;
    Ok(last)
}

fn published_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Published> {
    Ok(Published {
        sku: r.get(0)?,
        canonical_sku: r.get(1)?,
        sellable: r.get::<_, i64>(2)? as u64,
        cursor: r.get(3)?,
        updated_at_ms: r.get(4)?,
    })
}

/// Every published value of `channel` and the cursor they are current at.
pub fn snapshot(conn: &mut Connection, channel: &str) -> rusqlite::Result<(i64, Vec<Published>)> {
    let tx = conn.transaction()?;
    let cursor = latest_cursor(&tx, channel)?;
    let items = {
        let mut stmt = tx.prepare_cached(
            "SELECT channel_sku, sku, value, cursor, updated_at_ms FROM channel_sellable WHERE channel = ?1 ORDER BY channel_sku",
        )?;
        let rows = stmt.query_map([channel], published_row)?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    tx.commit()?;
    Ok((cursor, items))
}

/// The newest cursor of `channel` (0 before its first change).
pub fn latest_cursor(conn: &Connection, channel: &str) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT coalesce(max(cursor), 0) FROM channel_changes WHERE channel = ?1",
        [channel],
        |r| r.get(0),
    )
}

/// Changes of `channel` after `since`, at most `limit` log rows, folded to the last value per
/// SKU (in cursor order). Returns the cursor of the last row read (`since` if none).
pub fn changes_since(
    conn: &Connection,
    channel: &str,
    since: i64,
    limit: usize,
) -> rusqlite::Result<(i64, Vec<Published>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT channel_sku, sku, value, cursor, changed_at_ms FROM channel_changes
         WHERE channel = ?1 AND cursor > ?2 ORDER BY cursor LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![channel, since, limit as i64], published_row)?;
    Ok(fold_latest(since, rows.collect::<Result<Vec<_>, _>>()?))
}

/// Change-log rows (in cursor order) folded to the last value per SKU, in cursor order, and
/// the cursor of the last row (`since` if none): what one read of the log delivers.
pub fn fold_latest(since: i64, rows: Vec<Published>) -> (i64, Vec<Published>) {
    let mut last = since;
    let mut by_sku: BTreeMap<String, Published> = BTreeMap::new();
    for row in rows {
        last = row.cursor;
        by_sku.insert(row.canonical_sku.clone(), row);
    }
    let mut items: Vec<Published> = by_sku.into_values().collect();
    items.sort_by_key(|p| p.cursor);
    (last, items)
}

/// A push target's delivered-up-to cursor, `None` before its first delivery.
pub fn target_cursor(
    conn: &Connection,
    channel: &str,
    target: &str,
) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT cursor FROM channel_cursors WHERE channel = ?1 AND target = ?2",
        [channel, target],
        |r| r.get(0),
    )
    .optional()
}

/// Records a delivery and closes the target's open errors. Committed without an fsync of
/// its own (`synchronous = NORMAL` for this transaction; the next pass's commit syncs it): a
/// process crash loses nothing in WAL mode, and what a power loss can take back is a cursor
/// move, so the newest values are delivered once more, never skipped.
pub fn delivered(
    conn: &mut Connection,
    channel: &str,
    target: &str,
    cursor: i64,
) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let result = record_delivery(conn, channel, target, cursor);
    conn.pragma_update(None, "synchronous", "FULL")?;
    result
}

fn record_delivery(
    conn: &mut Connection,
    channel: &str,
    target: &str,
    cursor: i64,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO channel_cursors (channel, target, cursor) VALUES (?1, ?2, ?3)
         ON CONFLICT (channel, target) DO UPDATE SET cursor = max(cursor, excluded.cursor)",
        params![channel, target, cursor],
    )?;
    tx.execute(
        "UPDATE channel_errors SET resolved_at_ms = ?3 WHERE channel = ?1 AND target = ?2 AND resolved_at_ms IS NULL",
        params![channel, target, now_ms()],
    )?;
    tx.commit()
}

/// Keeps a failure in the error queue; a repeat of an open error only bumps its count.
pub fn record_error(
    conn: &Connection,
    channel: &str,
    target: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let updated = conn.execute(
        "UPDATE channel_errors SET seen_count = seen_count + 1, last_seen_ms = ?4
         WHERE channel = ?1 AND target = ?2 AND detail = ?3 AND resolved_at_ms IS NULL",
        params![channel, target, detail, now],
    )?;
    if updated == 0 {
        conn.execute(
            "INSERT INTO channel_errors (channel, target, detail, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![channel, target, detail, now],
        )?;
    }
    Ok(())
}

/// One entry of the error queue.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelError {
    pub id: i64,
    pub channel: String,
    pub target: String,
    pub detail: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub seen_count: i64,
    pub resolved_at_ms: Option<i64>,
}

/// The newest errors of `channel`, open ones first.
pub fn errors(conn: &Connection, channel: &str, limit: i64) -> rusqlite::Result<Vec<ChannelError>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, channel, target, detail, first_seen_ms, last_seen_ms, seen_count, resolved_at_ms
         FROM channel_errors WHERE channel = ?1 ORDER BY resolved_at_ms IS NOT NULL, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![channel, limit], |r| {
        Ok(ChannelError {
            id: r.get(0)?,
            channel: r.get(1)?,
            target: r.get(2)?,
            detail: r.get(3)?,
            first_seen_ms: r.get(4)?,
            last_seen_ms: r.get(5)?,
            seen_count: r.get(6)?,
            resolved_at_ms: r.get(7)?,
        })
    })?;
    rows.collect()
}
