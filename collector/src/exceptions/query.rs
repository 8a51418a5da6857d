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
        let mut conds = vec!["1 = 1".to_string()];
        let mut args = Vec::new();
        for (column, value) in self.conditions()? {
            args.push(Sql::Text(value));
            conds.push(format!("{column} = ?{}", args.len()));
        }
        Ok((conds.join(" AND "), args))
    }

    /// The columns the filter sets, with their values; an unknown kind or status is refused
    /// naming the field. Each store writes its own SQL from these.
    pub fn conditions(&self) -> Result<Vec<(&'static str, String)>, (&'static str, String)> {
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
        Ok([
            ("kind", &self.kind),
            ("status", &self.status),
            ("warehouse", &self.warehouse),
            ("channel", &self.channel),
            ("sku", &self.sku),
        ]
        .into_iter()
        .filter_map(|(column, value)| value.clone().map(|v| (column, v)))
        .collect())
    }
}

/// A page of a list.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub limit: i64,
    pub offset: i64,
}

/// The columns of an exception, in [`Row`]'s order, for every store.
pub const COLUMNS: &str = "id, kind, warehouse, channel, sku, source, field, reason, first_seen_ms, last_seen_ms, occurrences, status, status_at_ms, record, attempts";

/// One exception as a store reads it ([`COLUMNS`]); both stores answer through its JSON.
pub struct Row {
    pub id: String,
    pub kind: String,
    pub warehouse: Option<String>,
    pub channel: Option<String>,
    pub sku: Option<String>,
    pub source: String,
    pub field: Option<String>,
    pub reason: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub occurrences: i64,
    pub status: String,
    pub status_at_ms: i64,
    /// The record as received, JSON text.
    pub record: String,
    pub attempts: i64,
}

impl Row {
    /// The exception as the API shows it.
    pub fn json(self) -> Value {
        json!({
            "id": self.id,
            "kind": self.kind,
            "warehouse": self.warehouse,
            "channel": self.channel,
            "sku": self.sku,
            "source": self.source,
            "field": self.field,
            "reason": self.reason,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "occurrences": self.occurrences,
            "status": self.status,
            "status_at_ms": self.status_at_ms,
            "attempts": self.attempts,
            "record": serde_json::from_str::<Value>(&self.record).unwrap_or(Value::Null),
        })
    }
}

/// One store record an exception groups, as the API shows it.
pub fn source_json(store: &str, key: &str, seen: i64, last_seen_ms: i64, open: bool) -> Value {
    json!({"store": store, "key": key, "seen": seen, "last_seen_ms": last_seen_ms, "open": open})
}

/// One entry of an exception's log, as the API shows it.
pub fn event_json(at_ms: i64, action: &str, by: &str, comment: Option<&str>) -> Value {
    json!({"at_ms": at_ms, "action": action, "by": by, "comment": comment})
}

fn row_json(r: &rusqlite::Row<'_>) -> rusqlite::Result<Value> {
    Ok(Row {
        id: r.get(0)?,
        kind: r.get(1)?,
        warehouse: r.get(2)?,
        channel: r.get(3)?,
        sku: r.get(4)?,
        source: r.get(5)?,
        field: r.get(6)?,
        reason: r.get(7)?,
        first_seen_ms: r.get(8)?,
        last_seen_ms: r.get(9)?,
        occurrences: r.get(10)?,
        status: r.get(11)?,
        status_at_ms: r.get(12)?,
        record: r.get(13)?,
        attempts: r.get(14)?,
    }
    .json())
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
        Ok(source_json(
            &r.get::<_, String>(0)?,
            &r.get::<_, String>(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
        ))
    })?;
    e["records"] = Value::Array(sources.collect::<Result<_, _>>()?);
    let mut stmt = conn.prepare_cached(
        "SELECT at_ms, action, by, comment FROM exception_events WHERE exception_id = ?1 ORDER BY id",
    )?;
    let events = stmt.query_map(params![id], |r| {
        Ok(event_json(
            r.get(0)?,
            &r.get::<_, String>(1)?,
            &r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?.as_deref(),
        ))
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
