//! The exception queue in PostgreSQL: the SQLite queue's folding (`exceptions::sources`)
//! and reading (`exceptions::query`) with this store's SQL. The queue owns only what it
//! adds (status, log, grouping, in `exceptions`, `exception_sources`, `exception_events`,
//! `exception_cursors`); the records stay in the tables ingest writes and are read from a
//! cursor per store (`exception_sources`).
//!
//! Any worker may fold (every read folds first, so what an operator sees is never behind the
//! stores): the fold runs in one transaction under an advisory lock, so two workers never
//! fold the same record at once. A group's id is the SQLite queue's (`exception_id`), so the
//! same failure lands in the same exception on either backend.

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tokio_postgres::{GenericClient, Transaction};

use super::exception_sources::{self, ORIGINS};
use super::{PgError, Prepared};
use crate::exceptions::stores::Occurrence;
use crate::exceptions::{self, exception_id, Page, Row, COLUMNS, SYSTEM};

/// Records re-read behind each store's cursor (ms): a batch committed by another worker can
/// land with a slightly older timestamp than one already read.
const MARGIN_MS: i64 = 5_000;

/// The advisory lock a fold holds.
const FOLD_LOCK: i64 = 0x4558_4345_5054_494f;

/// Brings the queue up to date with every store; returns how many records were folded.
pub async fn sync(tx: &Transaction<'_>, p: &Prepared, now: i64) -> Result<usize, PgError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&FOLD_LOCK])
        .await?;
    let mut n = 0;
    for origin in ORIGINS {
        let cursor = tx
            .query_opt(
                &p.get(
                    tx,
                    "SELECT cursor_ms FROM exception_cursors WHERE origin = $1",
                )
                .await?,
                &[&origin],
            )
            .await?
            .map_or(0, |r| r.get::<_, i64>(0));
        let since = cursor.saturating_sub(MARGIN_MS);
        let (newest, occurrences) = exception_sources::read(tx, p, origin, since).await?;
        for o in &occurrences {
            fold(tx, p, o, now).await?;
            n += 1;
        }
        if newest > 0 {
            tx.execute(
                &p.get(tx, "INSERT INTO exception_cursors (origin, cursor_ms) VALUES ($1, $2)
                 ON CONFLICT (origin) DO UPDATE SET cursor_ms = GREATEST(exception_cursors.cursor_ms, excluded.cursor_ms)").await?,
                &[&origin, &newest],
            )
            .await?;
        }
    }
    close_vanished(tx).await?;
    resolve_closed(tx, p, now).await?;
    Ok(n)
}

/// Adds or updates one record's share of its exception (the SQLite queue's `fold`).
async fn fold(tx: &Transaction<'_>, p: &Prepared, o: &Occurrence, now: i64) -> Result<(), PgError> {
    let id = exception_id(
        o.kind,
        &o.key.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let before = tx
        .query_opt(
            &p.get(tx, "SELECT seen, last_seen_ms FROM exception_sources WHERE origin = $1 AND origin_key = $2").await?,
            &[&o.origin, &o.origin_key],
        )
        .await?
        .map(|r| (r.get::<_, i64>(0), r.get::<_, i64>(1)));
    let new_occurrence = before.is_none_or(|(seen, last)| o.seen > seen || o.last_seen_ms > last);
    tx.execute(
        &p.get(tx, "INSERT INTO exception_sources (origin, origin_key, exception_id, seen, last_seen_ms, open)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (origin, origin_key) DO UPDATE SET seen = excluded.seen,
             last_seen_ms = excluded.last_seen_ms,
             open = CASE WHEN exception_sources.origin IN ('rejects', 'agent_rejects')
                              AND excluded.seen <= exception_sources.seen
                              AND excluded.last_seen_ms <= exception_sources.last_seen_ms
                         THEN exception_sources.open AND excluded.open ELSE excluded.open END").await?,
        &[&o.origin, &o.origin_key, &id, &o.seen, &o.last_seen_ms, &!o.closed],
    )
    .await?;
    let status = tx
        .query_opt(
            &p.get(tx, "SELECT status FROM exceptions WHERE id = $1")
                .await?,
            &[&id],
        )
        .await?
        .map(|r| r.get::<_, String>(0));
    let Some(status) = status else {
        return insert(tx, p, &id, o, now).await;
    };
    tx.execute(
        &p.get(tx, "UPDATE exceptions SET
            occurrences = (SELECT coalesce(sum(seen), 0)::bigint FROM exception_sources WHERE exception_id = $1),
            first_seen_ms = LEAST(first_seen_ms, $2), last_seen_ms = GREATEST(last_seen_ms, $3)
         WHERE id = $1").await?,
        &[&id, &o.first_seen_ms, &o.last_seen_ms],
    )
    .await?;
    if status == "resolved" && new_occurrence && !o.closed {
        set_status(tx, p, &id, "open", now).await?;
        event(tx, p, &id, now, "reopened", Some("it happened again")).await?;
    }
    Ok(())
}

async fn insert(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    o: &Occurrence,
    now: i64,
) -> Result<(), PgError> {
    tx.execute(
        &p.get(tx, "INSERT INTO exceptions (id, kind, warehouse, channel, sku, source, field, reason, record,
             first_seen_ms, last_seen_ms, occurrences, status, status_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'open', $13)").await?,
        &[
            &id,
            &o.kind.as_str(),
            &o.warehouse,
            &o.channel,
            &o.sku,
            &o.source,
            &o.field,
            &o.reason,
            &o.record.to_string(),
            &o.first_seen_ms,
            &o.last_seen_ms,
            &o.seen,
            &now,
        ],
    )
    .await?;
    event(tx, p, id, now, "opened", None).await
}

pub(super) async fn set_status(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    status: &str,
    now: i64,
) -> Result<(), PgError> {
    tx.execute(
        &p.get(
            tx,
            "UPDATE exceptions SET status = $2, status_at_ms = $3 WHERE id = $1",
        )
        .await?,
        &[&id, &status, &now],
    )
    .await?;
    Ok(())
}

/// A log entry by the system.
async fn event(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    now: i64,
    action: &str,
    comment: Option<&str>,
) -> Result<(), PgError> {
    event_by(tx, p, id, (now, action, SYSTEM), comment).await
}

/// A log entry: `(when, what, who)`, and why.
pub(super) async fn event_by(
    tx: &Transaction<'_>,
    p: &Prepared,
    id: &str,
    (now, action, by): (i64, &str, &str),
    comment: Option<&str>,
) -> Result<(), PgError> {
    tx.execute(
        &p.get(tx, "INSERT INTO exception_events (exception_id, at_ms, action, \"by\", comment) VALUES ($1, $2, $3, $4, $5)").await?,
        &[&id, &now, &action, &by, &comment],
    )
    .await?;
    Ok(())
}

/// Closes sources whose record the store removed (a drift a late delta explained away, a
/// discrepancy or reversal a later movement settled).
async fn close_vanished(tx: &Transaction<'_>) -> Result<(), PgError> {
    for (origin, key) in [
        ("drift", "agent_id || '/' || seq"),
        ("conflicts", "agent_id || '/' || seq"),
        ("discrepancies", "transfer || '/' || sku"),
        ("reversals", "order_ref || '/' || sku"),
        ("shortfalls", "agent_id || '/' || seq"),
    ] {
        tx.execute(
            &format!(
                "UPDATE exception_sources SET open = false WHERE origin = $1 AND open
                 AND NOT EXISTS (SELECT 1 FROM {origin} WHERE {key} = exception_sources.origin_key)"
            ),
            &[&origin],
        )
        .await?;
    }
    Ok(())
}

/// Resolves open exceptions none of whose records still shows the problem.
async fn resolve_closed(tx: &Transaction<'_>, p: &Prepared, now: i64) -> Result<(), PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT id FROM exceptions e WHERE status = 'open'
             AND NOT EXISTS (SELECT 1 FROM exception_sources s WHERE s.exception_id = e.id AND s.open)").await?,
            &[],
        )
        .await?;
    for r in &rows {
        let id: &str = r.get(0);
        set_status(tx, p, id, "resolved", now).await?;
        let why = "the source no longer shows the problem";
        event(tx, p, id, now, "resolved", Some(why)).await?;
    }
    Ok(())
}

fn row(r: &tokio_postgres::Row) -> Value {
    Row {
        id: r.get(0),
        kind: r.get(1),
        warehouse: r.get(2),
        channel: r.get(3),
        sku: r.get(4),
        source: r.get(5),
        field: r.get(6),
        reason: r.get(7),
        first_seen_ms: r.get(8),
        last_seen_ms: r.get(9),
        occurrences: r.get(10),
        status: r.get(11),
        status_at_ms: r.get(12),
        record: r.get(13),
        attempts: r.get(14),
    }
    .json()
}

/// The exceptions `filter` selects, newest last seen first: `(total, page)`. Ties sort by
/// id in byte order, as on SQLite.
pub async fn list(
    c: &impl GenericClient,
    filter: &[(&'static str, String)],
    page: Page,
) -> Result<(i64, Vec<Value>), PgError> {
    let conds: Vec<String> = std::iter::once("true".to_string())
        .chain(
            filter
                .iter()
                .enumerate()
                .map(|(i, (column, _))| format!("{column} = ${}", i + 1)),
        )
        .collect();
    let where_sql = conds.join(" AND ");
    let mut args: Vec<&(dyn ToSql + Sync)> = filter.iter().map(|(_, v)| v as _).collect();
    let total: i64 = c
        .query_one(
            &format!("SELECT count(*) FROM exceptions WHERE {where_sql}"),
            &args,
        )
        .await?
        .get(0);
    let n = args.len();
    args.push(&page.limit);
    args.push(&page.offset);
    let rows = c
        .query(
            &format!(
                "SELECT {COLUMNS} FROM exceptions WHERE {where_sql}
                 ORDER BY last_seen_ms DESC, id COLLATE \"C\" LIMIT ${} OFFSET ${}",
                n + 1,
                n + 2
            ),
            &args,
        )
        .await?;
    Ok((total, rows.iter().map(row).collect()))
}

/// One exception with the store records it groups and its log.
pub async fn get(c: &impl GenericClient, id: &str) -> Result<Option<Value>, PgError> {
    let Some(r) = c
        .query_opt(
            &format!("SELECT {COLUMNS} FROM exceptions WHERE id = $1"),
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    let mut e = row(&r);
    let sources = c
        .query(
            "SELECT origin, origin_key, seen, last_seen_ms, open FROM exception_sources
             WHERE exception_id = $1 ORDER BY last_seen_ms DESC LIMIT 100",
            &[&id],
        )
        .await?;
    e["records"] = sources
        .iter()
        .map(|r| exceptions::source_json(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let events = c
        .query(
            "SELECT at_ms, action, \"by\", comment FROM exception_events WHERE exception_id = $1 ORDER BY id",
            &[&id],
        )
        .await?;
    e["log"] = events
        .iter()
        .map(|r| exceptions::event_json(r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    Ok(Some(e))
}
