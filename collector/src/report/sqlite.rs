//! The report's [`Facts`] from the SQLite collector's files: the exception queue, stock and
//! agents from the ledger, channel values and push errors from the channel store's own file
//! (`publish::file`, absent until a publisher created it).

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use stocksync_common::catalog::Catalog;

use super::{age_limits, day_end_ms, stock_needed, AgentLine, Facts, Failing, Unresolved};
use crate::exceptions::{self, Filter, Page};

/// Everything the report of the day starting at `day_start_ms` and the alert rules read, at `now`.
pub fn facts(
    conn: &Connection,
    catalog: &Catalog,
    day_start_ms: i64,
    now: i64,
) -> rusqlite::Result<Facts> {
    let channels = channel_store(conn)?;
    let listed = match &channels {
        Some(c) => listed(c)?,
        None => Vec::new(),
    };
    let mut stock = BTreeMap::new();
    for sku in stock_needed(catalog, &listed) {
        let at = crate::stock::last_change(conn, &sku)?;
        stock.insert(sku, at);
    }
    Ok(Facts {
        opened_on_date: opened_between(conn, day_start_ms, day_end_ms(day_start_ms))?,
        opened_last_24h: conn.query_row(
            "SELECT count(*) FROM exceptions WHERE status IN ('open', 'retrying') AND first_seen_ms >= ?1",
            [now - 86_400_000],
            |r| r.get(0),
        )?,
        unresolved: unresolved(conn, now)?,
        open_drift: open_of(conn, "drift")?,
        open_conflicts: open_of(conn, "conflict")?,
        listed,
        stock,
        last_seen: last_seen(conn)?,
        channel_errors: match &channels {
            Some(c) => channel_errors(c)?,
            None => Vec::new(),
        },
        agents: agents(conn)?,
    })
}

fn opened_between(
    conn: &Connection,
    from: i64,
    to: i64,
) -> rusqlite::Result<BTreeMap<String, i64>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, count(*) FROM exceptions WHERE first_seen_ms >= ?1 AND first_seen_ms < ?2 GROUP BY kind",
    )?;
    let rows = stmt.query_map(params![from, to], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn open_of(conn: &Connection, kind: &str) -> rusqlite::Result<Vec<serde_json::Value>> {
    let filter = Filter {
        kind: Some(kind.into()),
        status: Some("open".into()),
        ..Filter::default()
    };
    let cond = filter.to_sql().expect("known kind and status");
    let page = Page {
        limit: 100,
        offset: 0,
    };
    Ok(exceptions::list(conn, &cond, page)?.1)
}

fn unresolved(conn: &Connection, now: i64) -> rusqlite::Result<Vec<Unresolved>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, count(*),
                sum(first_seen_ms > ?1), sum(first_seen_ms <= ?1 AND first_seen_ms > ?2),
                sum(first_seen_ms <= ?2 AND first_seen_ms > ?3), sum(first_seen_ms <= ?3),
                min(first_seen_ms)
         FROM exceptions WHERE status IN ('open', 'retrying') GROUP BY kind ORDER BY kind",
    )?;
    let [hour, day, week] = age_limits(now);
    let rows = stmt.query_map(params![hour, day, week], |r| {
        Ok(Unresolved {
            kind: r.get(0)?,
            count: r.get(1)?,
            bands: [r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?],
            oldest_first_seen_ms: r.get(6)?,
        })
    })?;
    rows.collect()
}

fn listed(channels: &Connection) -> rusqlite::Result<Vec<(String, String, String, i64)>> {
    let mut stmt = channels.prepare(
        "SELECT channel, sku, channel_sku, value FROM channel_sellable WHERE value > 0 ORDER BY channel, sku",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    rows.collect()
}

fn last_seen(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT warehouse, max(last_seen_ms) FROM agents GROUP BY warehouse ORDER BY warehouse",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

fn channel_errors(channels: &Connection) -> rusqlite::Result<Vec<Failing>> {
    let mut stmt = channels.prepare(
        "SELECT channel, target, min(first_seen_ms),
                (SELECT detail FROM channel_errors e2 WHERE e2.channel = e.channel AND e2.target = e.target ORDER BY last_seen_ms DESC LIMIT 1)
         FROM channel_errors e WHERE resolved_at_ms IS NULL
         GROUP BY channel, target ORDER BY channel, target",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Failing {
            channel: r.get(0)?,
            target: r.get(1)?,
            failing_since_ms: r.get(2)?,
            last_error: r.get(3)?,
        })
    })?;
    rows.collect()
}

fn agents(conn: &Connection) -> rusqlite::Result<Vec<AgentLine>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.agent_id, a.warehouse, a.last_seen_ms, (SELECT max(seq) FROM ledger l WHERE l.agent_id = a.agent_id)
         FROM agents a ORDER BY a.warehouse, a.agent_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(AgentLine {
            agent_id: r.get(0)?,
            warehouse: r.get(1)?,
            last_seen_ms: r.get(2)?,
            last_seq: r.get(3)?,
        })
    })?;
    rows.collect()
}

/// The channel store beside the ledger `conn` reads, with its tables; `None` before any
/// publisher created them.
fn channel_store(conn: &Connection) -> rusqlite::Result<Option<Connection>> {
    let Some(channels) = crate::publish::file::open_beside(conn)? else {
        return Ok(None);
    };
    let ready: i64 = channels.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('channel_sellable', 'channel_errors')",
        [],
        |r| r.get(0),
    )?;
    Ok((ready == 2).then_some(channels))
}
