//! Folding the stores' records into the queue.
//!
//! Each store is read from a cursor (its newest timestamp seen, minus a margin, because the
//! channel store commits from its own connection and a row can land with a slightly older
//! timestamp); re-reading a record is harmless because a record's count is *set* in
//! `exception_sources`, never added, and a reject closed by a retry stays closed unless it
//! shows a new occurrence. A record that no longer shows the problem (a drift a
//! late delta explained away, a channel error a later delivery closed) closes its source;
//! an open exception whose sources are all closed is resolved by the system. A new
//! occurrence of a resolved exception opens it again; an ignored one stays ignored.

use rusqlite::{params, Connection, OptionalExtension};

use super::stores::{Occurrence, READERS};
use super::{exception_id, SYSTEM};

/// Records re-read behind each store's cursor (ms).
const MARGIN_MS: i64 = 5_000;

/// Brings the queue up to date with every store; returns how many records were folded.
pub fn sync(tx: &Connection, now_ms: i64) -> rusqlite::Result<usize> {
    let mut n = 0;
    for (origin, read) in READERS {
        // Channel errors live in the channel store's file; their reader checks it.
        if origin != "channel_errors" && !table_exists(tx, origin)? {
            continue;
        }
        let since = cursor(tx, origin)?.saturating_sub(MARGIN_MS);
        let (newest, occurrences) = read(tx, since)?;
        for occ in occurrences {
            fold(tx, &occ, now_ms)?;
            n += 1;
        }
        if newest > 0 {
            tx.execute(
                "INSERT INTO exception_cursors (origin, cursor_ms) VALUES (?1, ?2)
                 ON CONFLICT (origin) DO UPDATE SET cursor_ms = max(cursor_ms, excluded.cursor_ms)",
                params![origin, newest],
            )?;
        }
    }
    close_vanished(tx)?;
    resolve_closed(tx, now_ms)?;
    Ok(n)
}

pub(super) fn table_exists(tx: &Connection, name: &str) -> rusqlite::Result<bool> {
    tx.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0).map(|n| n > 0),
    )
}

fn cursor(tx: &Connection, origin: &str) -> rusqlite::Result<i64> {
    Ok(tx
        .query_row(
            "SELECT cursor_ms FROM exception_cursors WHERE origin = ?1",
            [origin],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Adds or updates one record's share of its exception.
fn fold(tx: &Connection, o: &Occurrence, now: i64) -> rusqlite::Result<()> {
    let id = exception_id(
        o.kind,
        &o.key.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let before: Option<(i64, i64)> = tx
        .query_row(
            "SELECT seen, last_seen_ms FROM exception_sources WHERE origin = ?1 AND origin_key = ?2",
            params![o.origin, o.origin_key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let new_occurrence = before.is_none_or(|(seen, last)| o.seen > seen || o.last_seen_ms > last);
    tx.execute(
        "INSERT INTO exception_sources (origin, origin_key, exception_id, seen, last_seen_ms, open)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (origin, origin_key) DO UPDATE SET seen = excluded.seen,
             last_seen_ms = excluded.last_seen_ms,
             open = CASE WHEN origin IN ('rejects', 'agent_rejects')
                              AND excluded.seen <= seen AND excluded.last_seen_ms <= last_seen_ms
                         THEN min(open, excluded.open) ELSE excluded.open END",
        params![
            o.origin,
            o.origin_key,
            id,
            o.seen,
            o.last_seen_ms,
            !o.closed
        ],
    )?;
    let status: Option<String> = tx
        .query_row("SELECT status FROM exceptions WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .optional()?;
    match status {
        None => insert(tx, &id, o, now),
        Some(status) => {
            tx.execute(
                "UPDATE exceptions SET
                    occurrences = (SELECT coalesce(sum(seen), 0) FROM exception_sources WHERE exception_id = ?1),
                    first_seen_ms = min(first_seen_ms, ?2), last_seen_ms = max(last_seen_ms, ?3)
                 WHERE id = ?1",
                params![id, o.first_seen_ms, o.last_seen_ms],
            )?;
            if status == "resolved" && new_occurrence && !o.closed {
                set_status(tx, &id, "open", now)?;
                event(tx, &id, now, "reopened", SYSTEM, Some("it happened again"))?;
            }
            Ok(())
        }
    }
}

fn insert(tx: &Connection, id: &str, o: &Occurrence, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO exceptions (id, kind, warehouse, channel, sku, source, field, reason, record,
             first_seen_ms, last_seen_ms, occurrences, status, status_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'open', ?13)",
        params![
            id,
            o.kind.as_str(),
            o.warehouse,
            o.channel,
            o.sku,
            o.source,
            o.field,
            o.reason,
            o.record.to_string(),
            o.first_seen_ms,
            o.last_seen_ms,
            o.seen,
            now
        ],
    )?;
    event(tx, id, now, "opened", SYSTEM, None)
}

pub(super) fn set_status(
    tx: &Connection,
    id: &str,
    status: &str,
    now: i64,
) -> rusqlite::Result<usize> {
    tx.execute(
        "UPDATE exceptions SET status = ?2, status_at_ms = ?3 WHERE id = ?1",
        params![id, status, now],
    )
}

pub(super) fn event(
    tx: &Connection,
    id: &str,
    now: i64,
    action: &str,
    by: &str,
    comment: Option<&str>,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO exception_events (exception_id, at_ms, action, by, comment) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, now, action, by, comment],
    )?;
    Ok(())
}

/// Closes sources whose record the store removed (a drift a late delta explained away, a
/// discrepancy or reversal a later movement settled).
fn close_vanished(tx: &Connection) -> rusqlite::Result<()> {
    for (origin, key) in [
        ("drift", "agent_id || '/' || seq"),
        ("conflicts", "agent_id || '/' || seq"),
        ("discrepancies", "transfer || '/' || sku"),
        ("reversals", "order_ref || '/' || sku"),
        ("shortfalls", "agent_id || '/' || seq"),
    ] {
        if !table_exists(tx, origin)? {
            continue;
        }
        tx.execute(
            &format!(
                "UPDATE exception_sources SET open = 0 WHERE origin = ?1 AND open = 1
                 AND NOT EXISTS (SELECT 1 FROM {origin} WHERE {key} = exception_sources.origin_key)"
            ),
            [origin],
        )?;
    }
    Ok(())
}

/// Resolves open exceptions none of whose records still shows the problem.
fn resolve_closed(tx: &Connection, now: i64) -> rusqlite::Result<()> {
    let ids: Vec<String> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id FROM exceptions e WHERE status = 'open'
             AND NOT EXISTS (SELECT 1 FROM exception_sources s WHERE s.exception_id = e.id AND s.open = 1)",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in ids {
        set_status(tx, &id, "resolved", now)?;
        event(
            tx,
            &id,
            now,
            "resolved",
            SYSTEM,
            Some("the source no longer shows the problem"),
        )?;
    }
    Ok(())
}
