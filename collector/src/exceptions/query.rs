//! Reading the queue: filtered pages for the list, one exception with its records and
//! comment log, and counts for metrics, alerts and the daily report.

use rusqlite::types::Value as Sql;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Which exceptions a list or a bulk action covers; every field set must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    pub kind: Option<String>,
    pub status: Option<String>,
    pub warehouse: Option<String>,
    pub channel: Option<String>,
    pub sku: Option<String>,
}

impl Filter {
    /// The filter as a SQL condition and its parameters; an unknown kind or status is
    /// refused naming the field.
    pub fn to_sql(&self) -> Result<(String, Vec<Sql>), (&'static str, String)> {
        if let Some(k) = &self.kind {
            if super::Kind::parse(k).is_none() {
                let known: Vec<&str> = super::Kind::ALL.iter().map(|k| k.as_str()).collect();
                return Err((
                    "kind",
                    format!("unknown kind `{k}` (known: {})", known.join(", ")),
                ));
            }
        }
        if let Some(s) = &self.status {
            if super::Status::parse(s).is_none() {
                return Err((
                    "status",
                    format!("unknown status `{s}` (known: open, retrying, resolved, ignored)"),
                ));
            }
        }
        let mut conds = vec!["1 = 1".to_string()];
        let mut args = Vec::new();
        for (column, value) in [
            ("kind", &self.kind),
            ("status", &self.status),
            ("warehouse", &self.warehouse),
            ("channel", &self.channel),
            ("sku", &self.sku),
        ] {
            if let Some(v) = value {
                args.push(Sql::Text(v.clone()));
                conds.push(format!("{column} = ?{}", args.len()));
            }
        }
        Ok((conds.join(" AND "), args))
    }
}

/// A page of a list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

const COLUMNS: &str = "id, kind, warehouse, channel, sku, source, field, reason, first_seen_ms, last_seen_ms, occurrences, status, status_at_ms, record, attempts";

fn row_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    let record: String = r.get(13)?;
    Ok(json!({
        "id": r.get::<_, String>(0)?,
        "kind": r.get::<_, String>(1)?,
        "warehouse": r.get::<_, Option<String>>(2)?,
        "channel": r.get::<_, Option<String>>(3)?,
        "sku": r.get::<_, Option<String>>(4)?,
        "source": r.get::<_, String>(5)?,
        "field": r.get::<_, Option<String>>(6)?,
        "reason": r.get::<_, String>(7)?,
        "first_seen_ms": r.get::<_, i64>(8)?,
        "last_seen_ms": r.get::<_, i64>(9)?,
        "occurrences": r.get::<_, i64>(10)?,
        "status": r.get::<_, String>(11)?,
        "status_at_ms": r.get::<_, i64>(12)?,
        "attempts": r.get::<_, i64>(14)?,
        "record": serde_json::from_str::<Value>(&record).unwrap_or(Value::Null),
    }))
}

/// The exceptions `where_sql` selects, newest last seen first: `(total, page)`.
pub fn list(
    conn: &Connection,
    (where_sql, args): &(String, Vec<Sql>),
    page: Page,
) -> rusqlite::Result<(i64, Vec<Value>)> {
    let total: i64 = conn.query_row(
        &format!("SELECT count(*) FROM exceptions WHERE {where_sql}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let mut all = args.clone();
    all.push(Sql::Integer(page.limit));
    all.push(Sql::Integer(page.offset));
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM exceptions WHERE {where_sql} ORDER BY last_seen_ms DESC, id LIMIT ?{} OFFSET ?{}",
        args.len() + 1,
        args.len() + 2
    ))?;
    let rows = stmt.query_map(params_from_iter(all.iter()), row_json)?;
    Ok((total, rows.collect::<Result<_, _>>()?))
}

/// One exception with the store records it groups and its comment log.
pub fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<Value>> {
    let Some(mut e) = conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM exceptions WHERE id = ?1"),
            [id],
            row_json,
        )
        .optional()?
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT origin, origin_key, seen, last_seen_ms, open FROM exception_sources
         WHERE exception_id = ?1 ORDER BY last_seen_ms DESC LIMIT 100",
    )?;
    let sources = stmt.query_map([id], |r| {
        Ok(
            json!({"store": r.get::<_, String>(0)?, "key": r.get::<_, String>(1)?,
                  "seen": r.get::<_, i64>(2)?, "last_seen_ms": r.get::<_, i64>(3)?,
                  "open": r.get::<_, bool>(4)?}),
        )
    })?;
    e["records"] = Value::Array(sources.collect::<Result<_, _>>()?);
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, action, by, comment FROM exception_events WHERE exception_id = ?1 ORDER BY id",
    )?;
    let events = stmt.query_map(params![id], |r| {
        Ok(
            json!({"at_ms": r.get::<_, i64>(0)?, "action": r.get::<_, String>(1)?,
                  "by": r.get::<_, String>(2)?, "comment": r.get::<_, Option<String>>(3)?}),
        )
    })?;
    e["log"] = Value::Array(events.collect::<Result<_, _>>()?);
    Ok(Some(e))
}

/// Per kind and status: how many exceptions, and the first seen time of the oldest.
#[derive(Debug, Clone, Serialize)]
pub struct Count {
    pub kind: String,
    pub status: String,
    pub count: i64,
    pub oldest_first_seen_ms: i64,
}

/// Counts by kind and status (for metrics, alerts and the report).
pub fn summary(conn: &Connection) -> rusqlite::Result<Vec<Count>> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, status, count(*), min(first_seen_ms) FROM exceptions GROUP BY kind, status ORDER BY kind, status",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(Count {
            kind: r.get(0)?,
            status: r.get(1)?,
            count: r.get(2)?,
            oldest_first_seen_ms: r.get(3)?,
        })
    })?;
    rows.collect()
}
