//! The daily exception report: what an operator must look at today, in one answer.
//!
//! Unresolved exceptions by kind and age, exceptions opened on the day, open drift and
//! conflicts, SKUs sold out but still listed (0 available everywhere, published > 0 on a
//! channel), silent warehouses, failing or stale channel targets, and what is known of each
//! agent. Everything but the "opened on the day" counts is the state at the time of the
//! request. The checks are also what the alert rules evaluate, so a report line and an
//! alert always agree. Channel values and push errors are read from the channel store's own
//! file (`publish::file`), everything else from the ledger.

use std::collections::BTreeMap;

use rusqlite::{params, Connection};
use serde::Serialize;
use serde_json::{json, Value};
use stocksync_common::catalog::Catalog;

use crate::exceptions::{self, Filter, Page};
use crate::publish::stats::TargetStats;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Unix ms of 00:00 UTC of `date` (`YYYY-MM-DD`), or `None` if it is not a date.
pub fn day_start_ms(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if date.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm), proleptic Gregorian.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * DAY_MS)
}

/// The `YYYY-MM-DD` (UTC) of a unix ms.
pub fn date_of(ms: i64) -> String {
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A SKU with nothing available anywhere that a channel still publishes as sellable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SoldOutListed {
    pub channel: String,
    pub sku: String,
    pub channel_sku: String,
    pub published: i64,
    pub available: i64,
}

/// SKUs 0 available (a bundle: some component short of one bundle) but published > 0, whose
/// stock last changed at least `grace_ms` before `now_ms`.
pub fn sold_out_listed(
    conn: &Connection,
    catalog: &Catalog,
    now_ms: i64,
    grace_ms: i64,
) -> rusqlite::Result<Vec<SoldOutListed>> {
    let Some(channels) = channel_store(conn)? else {
        return Ok(Vec::new());
    };
    let listed: Vec<(String, String, String, i64)> = {
        let mut stmt = channels.prepare(
            "SELECT channel, sku, channel_sku, value FROM channel_sellable WHERE value > 0 ORDER BY channel, sku",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    // Available units and when the SKU's stock last changed.
    let read = |sku: &str| crate::stock::last_change(conn, sku);
    let mut out = Vec::new();
    for (channel, sku, channel_sku, published) in listed {
        let (avail, changed) = match catalog.bundle(&sku) {
            Some(components) => {
                let (mut sets, mut changed) = (i64::MAX, 0);
                for c in components {
                    let (a, at) = read(&c.sku)?;
                    let per = i64::try_from(c.quantity.max(1)).unwrap_or(i64::MAX);
                    sets = sets.min(a.max(0) / per);
                    changed = changed.max(at);
                }
                (sets, changed)
            }
            None => read(&sku)?,
        };
        if avail <= 0 && changed <= now_ms.saturating_sub(grace_ms) {
            out.push(SoldOutListed {
                channel,
                sku,
                channel_sku,
                published,
                available: avail,
            });
        }
    }
    Ok(out)
}

/// A warehouse whose agents have sent nothing for `silent_after_secs`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Silent {
    pub warehouse: String,
    pub last_seen_ms: i64,
    pub silent_secs: i64,
}

/// Warehouses silent at `now_ms`.
pub fn silent_warehouses(
    conn: &Connection,
    now_ms: i64,
    silent_after_secs: u64,
) -> rusqlite::Result<Vec<Silent>> {
    let mut stmt = conn.prepare_cached(
        "SELECT warehouse, max(last_seen_ms) FROM agents GROUP BY warehouse ORDER BY warehouse",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let limit = i64::try_from(silent_after_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let mut out = Vec::new();
    for row in rows {
        let (warehouse, last_seen_ms) = row?;
        let quiet = now_ms.saturating_sub(last_seen_ms);
        if quiet >= limit {
            out.push(Silent {
                warehouse,
                last_seen_ms,
                silent_secs: quiet / 1000,
            });
        }
    }
    Ok(out)
}

/// A channel target with an open push error since `failing_since_ms`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failing {
    pub channel: String,
    pub target: String,
    pub failing_since_ms: i64,
    pub last_error: String,
}

/// Channel targets whose oldest open error is at least `after_secs` old.
pub fn failing_channels(
    conn: &Connection,
    now_ms: i64,
    after_secs: u64,
) -> rusqlite::Result<Vec<Failing>> {
    let cutoff = now_ms.saturating_sub(
        i64::try_from(after_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    );
    let Some(channels) = channel_store(conn)? else {
        return Ok(Vec::new());
    };
    let mut stmt = channels.prepare(
        "SELECT channel, target, min(first_seen_ms),
                (SELECT detail FROM channel_errors e2 WHERE e2.channel = e.channel AND e2.target = e.target ORDER BY last_seen_ms DESC LIMIT 1)
         FROM channel_errors e WHERE resolved_at_ms IS NULL
         GROUP BY channel, target HAVING min(first_seen_ms) <= ?1 ORDER BY channel, target",
    )?;
    let rows = stmt.query_map(params![cutoff], |r| {
        Ok(Failing {
            channel: r.get(0)?,
            target: r.get(1)?,
            failing_since_ms: r.get(2)?,
            last_error: r.get(3)?,
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

/// The sold-out grace of `ops` in ms.
pub fn grace_ms(ops: &crate::alerts::OperationsConfig) -> i64 {
    i64::try_from(ops.sold_out_grace_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

/// What the report needs besides the database.
pub struct Context<'a> {
    pub now_ms: i64,
    pub day_start_ms: i64,
    pub ops: &'a crate::alerts::OperationsConfig,
    pub catalog: &'a Catalog,
    /// In-memory figures of each (channel, target).
    pub targets: BTreeMap<(String, String), TargetStats>,
}

/// The report as JSON.
pub fn daily(conn: &Connection, cx: &Context<'_>) -> rusqlite::Result<Value> {
    let day_end = cx.day_start_ms + DAY_MS;
    let opened: BTreeMap<String, i64> = {
        let mut stmt = conn.prepare_cached(
            "SELECT kind, count(*) FROM exceptions WHERE first_seen_ms >= ?1 AND first_seen_ms < ?2 GROUP BY kind",
        )?;
        let rows = stmt.query_map(params![cx.day_start_ms, day_end], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let open_of = |kind: &str| -> rusqlite::Result<Vec<Value>> {
        let filter = Filter {
            kind: Some(kind.into()),
            status: Some("open".into()),
            ..Filter::default()
        };
        let cond = filter.to_sql().expect("known kind and status");
        Ok(exceptions::list(
            conn,
            &cond,
            Page {
                limit: 100,
                offset: 0,
            },
        )?
        .1)
    };
    Ok(json!({
        "date": date_of(cx.day_start_ms),
        "generated_at_ms": cx.now_ms,
        "exceptions": {
            "opened_on_date": opened,
            "unresolved": unresolved_by_age(conn, cx.now_ms)?,
        },
        "open_drift": open_of("drift")?,
        "open_conflicts": open_of("conflict")?,
        "sold_out_listed": sold_out_listed(conn, cx.catalog, cx.now_ms, grace_ms(cx.ops))?,
        "silent_warehouses": silent_warehouses(conn, cx.now_ms, cx.ops.silent_after_secs)?,
        "channels": channel_lines(conn, cx)?,
        "agents": agents(conn)?,
    }))
}

/// Open exceptions per kind, in age bands by first seen.
fn unresolved_by_age(conn: &Connection, now: i64) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, count(*),
                sum(first_seen_ms > ?1), sum(first_seen_ms <= ?1 AND first_seen_ms > ?2),
                sum(first_seen_ms <= ?2 AND first_seen_ms > ?3), sum(first_seen_ms <= ?3),
                min(first_seen_ms)
         FROM exceptions WHERE status IN ('open', 'retrying') GROUP BY kind ORDER BY kind",
    )?;
    let rows = stmt.query_map(
        params![now - HOUR_MS, now - DAY_MS, now - 7 * DAY_MS],
        |r| {
            Ok(json!({
                "kind": r.get::<_, String>(0)?,
                "count": r.get::<_, i64>(1)?,
                "age": {"under_1h": r.get::<_, i64>(2)?, "1h_to_24h": r.get::<_, i64>(3)?,
                        "1d_to_7d": r.get::<_, i64>(4)?, "over_7d": r.get::<_, i64>(5)?},
                "oldest_first_seen_ms": r.get::<_, i64>(6)?,
            }))
        },
    )?;
    rows.collect()
}

/// Every channel target: ok, failing (an open push error) or stale (changes pending).
fn channel_lines(conn: &Connection, cx: &Context<'_>) -> rusqlite::Result<Vec<Value>> {
    let failing: BTreeMap<(String, String), Failing> = failing_channels(conn, cx.now_ms, 0)?
        .into_iter()
        .map(|f| ((f.channel.clone(), f.target.clone()), f))
        .collect();
    let mut out = Vec::new();
    for ((channel, target), s) in &cx.targets {
        let f = failing.get(&(channel.clone(), target.clone()));
        let state = if f.is_some() {
            "failing"
        } else if s.pending > 0 {
            "stale"
        } else {
            "ok"
        };
        out.push(json!({
            "channel": channel, "target": target, "state": state, "pending": s.pending,
            "lag_ms": s.lag_ms, "last_success_ms": s.last_success_ms,
            "failing_since_ms": f.map(|f| f.failing_since_ms),
            "last_error": f.map(|f| f.last_error.clone()).or(s.last_error.clone()),
        }));
    }
    Ok(out)
}

/// Each agent's last batch and newest seq. Backlog is not known here: agents do not report it.
fn agents(conn: &Connection) -> rusqlite::Result<Vec<Value>> {
    let mut stmt = conn.prepare_cached(
        "SELECT a.agent_id, a.warehouse, a.last_seen_ms, (SELECT max(seq) FROM ledger l WHERE l.agent_id = a.agent_id)
         FROM agents a ORDER BY a.warehouse, a.agent_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(
            json!({"agent_id": r.get::<_, String>(0)?, "warehouse": r.get::<_, String>(1)?,
                  "last_seen_ms": r.get::<_, i64>(2)?, "last_seq": r.get::<_, Option<i64>>(3)?,
                  "backlog": Value::Null}),
        )
    })?;
    rows.collect()
}

/// The report as CSV: one line per finding, `section,subject,detail,value,since_ms`.
pub fn to_csv(report: &Value) -> String {
    let mut out = String::from("section,subject,detail,value,since_ms\n");
    let mut line = |cols: [String; 5]| {
        let cells: Vec<String> = cols.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    };
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let items = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    for (kind, n) in report["exceptions"]["opened_on_date"]
        .as_object()
        .into_iter()
        .flatten()
    {
        line([
            "opened_on_date".into(),
            kind.clone(),
            String::new(),
            s(n),
            String::new(),
        ]);
    }
    for u in report["exceptions"]["unresolved"]
        .as_array()
        .into_iter()
        .flatten()
    {
        line([
            "unresolved".into(),
            s(&u["kind"]),
            s(&u["age"]),
            s(&u["count"]),
            s(&u["oldest_first_seen_ms"]),
        ]);
    }
    for key in ["open_drift", "open_conflicts"] {
        for e in items(key) {
            line([
                key.into(),
                format!("{}@{}", s(&e["sku"]), s(&e["warehouse"])),
                s(&e["reason"]),
                s(&e["occurrences"]),
                s(&e["first_seen_ms"]),
            ]);
        }
    }
    for e in items("sold_out_listed") {
        line([
            "sold_out_listed".into(),
            format!("{}@{}", s(&e["sku"]), s(&e["channel"])),
            format!("available {}", s(&e["available"])),
            s(&e["published"]),
            String::new(),
        ]);
    }
    for e in items("silent_warehouses") {
        line([
            "silent_warehouse".into(),
            s(&e["warehouse"]),
            String::new(),
            s(&e["silent_secs"]),
            s(&e["last_seen_ms"]),
        ]);
    }
    for e in items("channels") {
        line([
            "channel".into(),
            format!("{}/{}", s(&e["channel"]), s(&e["target"])),
            s(&e["state"]),
            s(&e["pending"]),
            s(&e["failing_since_ms"]),
        ]);
    }
    for e in items("agents") {
        line([
            "agent".into(),
            s(&e["agent_id"]),
            s(&e["warehouse"]),
            s(&e["last_seq"]),
            s(&e["last_seen_ms"]),
        ]);
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(day_start_ms("2026-11-27"), Some(1_795_737_600_000));
        for ms in [0, 951_782_400_000, 1_795_737_600_000, 4_107_542_400_000] {
            assert_eq!(day_start_ms(&date_of(ms)), Some(ms));
        }
        assert_eq!(date_of(1_795_737_600_000 + DAY_MS - 1), "2026-11-27");
        assert_eq!(day_start_ms("2026-13-01"), None);
        assert_eq!(day_start_ms("yesterday"), None);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("plain"), "plain");
    }
}
