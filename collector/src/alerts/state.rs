//! Alert state in the ledger's file: which alerts are firing, and each transition (firing,
//! cleared) with what each destination has taken of it.
//!
//! Invariant: at most one firing alert per (rule, subject), enforced by a partial unique
//! index, so a condition that holds across many evaluations (or a restart) fires once.

use std::collections::BTreeSet;

use rusqlite::{params, Connection};
use serde_json::{json, Value};

use super::Condition;

/// Fires alerts for new conditions and clears those whose condition ended.
pub fn apply(tx: &Connection, holding: &[Condition], now: i64) -> rusqlite::Result<()> {
    let firing: Vec<(i64, String, String)> = {
        let mut stmt =
            tx.prepare_cached("SELECT id, rule, subject FROM alerts WHERE cleared_at_ms IS NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for id in ended(&firing, holding) {
        tx.execute(
            "UPDATE alerts SET cleared_at_ms = ?2 WHERE id = ?1",
            params![id, now],
        )?;
        transition(tx, id, "cleared", now)?;
    }
    for c in holding {
        let inserted = tx.execute(
            "INSERT INTO alerts (rule, subject, detail, fired_at_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (rule, subject) WHERE cleared_at_ms IS NULL DO NOTHING",
            params![c.rule, c.subject, c.detail.to_string(), now],
        )?;
        if inserted == 1 {
            transition(tx, tx.last_insert_rowid(), "firing", now)?;
        }
    }
    Ok(())
}

/// The firing alerts `(id, rule, subject)` whose condition no longer holds: to be cleared.
/// Every holding condition is then fired, once: a store inserts it only where no alert of
/// its (rule, subject) is firing.
pub fn ended(firing: &[(i64, String, String)], holding: &[Condition]) -> Vec<i64> {
    let now_holding: BTreeSet<(&str, &str)> = holding
        .iter()
        .map(|c| (c.rule, c.subject.as_str()))
        .collect();
    firing
        .iter()
        .filter(|(_, rule, subject)| !now_holding.contains(&(rule.as_str(), subject.as_str())))
        .map(|(id, _, _)| *id)
        .collect()
}

/// An alert as `GET /v1/alerts` shows it, from its stored columns.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: i64,
    pub rule: String,
    pub subject: String,
    /// The detail as stored (JSON text).
    pub detail: String,
    pub fired_at_ms: i64,
    pub cleared_at_ms: Option<i64>,
    /// Its transitions not yet taken by every destination.
    pub undelivered: i64,
}

impl Stored {
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "rule": self.rule, "subject": self.subject,
            "detail": serde_json::from_str::<Value>(&self.detail).unwrap_or(Value::Null),
            "fired_at_ms": self.fired_at_ms, "cleared_at_ms": self.cleared_at_ms,
            "undelivered": self.undelivered,
        })
    }
}

/// The body a destination receives for one transition.
pub fn delivery_body(alert: &Stored, state: &str, at_ms: i64) -> Value {
    json!({
        "alert_id": alert.id,
        "rule": alert.rule,
        "subject": alert.subject,
        "detail": serde_json::from_str::<Value>(&alert.detail).unwrap_or(Value::Null),
        "state": state,
        "at_ms": at_ms,
        "fired_at_ms": alert.fired_at_ms,
    })
}

fn transition(tx: &Connection, alert_id: i64, state: &str, now: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO alert_deliveries (alert_id, state, at_ms) VALUES (?1, ?2, ?3)",
        params![alert_id, state, now],
    )?;
    Ok(())
}

/// A transition still to be sent somewhere.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub alert_id: i64,
    pub rule: String,
    pub webhook_done: bool,
    pub mqtt_done: bool,
    pub body: Value,
}

/// Transitions not yet taken by every destination, oldest first.
pub fn pending(conn: &Connection) -> rusqlite::Result<Vec<Pending>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.id, a.id, a.rule, a.subject, a.detail, d.state, d.at_ms, a.fired_at_ms, d.webhook_done, d.mqtt_done
         FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
         WHERE d.webhook_done = 0 OR d.mqtt_done = 0 ORDER BY d.id LIMIT 100",
    )?;
    let rows = stmt.query_map([], |r| {
        let alert = Stored {
            id: r.get(1)?,
            rule: r.get(2)?,
            subject: r.get(3)?,
            detail: r.get(4)?,
            fired_at_ms: r.get(7)?,
            cleared_at_ms: None,
            undelivered: 0,
        };
        Ok(Pending {
            id: r.get(0)?,
            alert_id: alert.id,
            rule: alert.rule.clone(),
            webhook_done: r.get(8)?,
            mqtt_done: r.get(9)?,
            body: delivery_body(&alert, &r.get::<_, String>(5)?, r.get(6)?),
        })
    })?;
    rows.collect()
}

/// Marks what the destinations took of transition `id`: `(webhook, mqtt)`.
pub fn delivered(tx: &Connection, id: i64, done: (bool, bool)) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE alert_deliveries SET webhook_done = max(webhook_done, ?2), mqtt_done = max(mqtt_done, ?3)
         WHERE id = ?1",
        params![id, done.0, done.1],
    )?;
    Ok(())
}

/// Counts a failed attempt at transition `id`.
pub fn failed(tx: &Connection, id: i64, error: &str) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = ?2 WHERE id = ?1",
        params![id, error],
    )?;
    Ok(())
}

/// Firing alerts and the `recent` newest cleared ones.
pub fn list(conn: &Connection, recent: i64) -> rusqlite::Result<Value> {
    let query = |sql: &str, arg: i64| -> rusqlite::Result<Vec<Value>> {
        let mut stmt = conn.prepare(sql)?;
        let rows = stmt.query_map([arg], |r| {
            Ok(Stored {
                id: r.get(0)?,
                rule: r.get(1)?,
                subject: r.get(2)?,
                detail: r.get(3)?,
                fired_at_ms: r.get(4)?,
                cleared_at_ms: r.get(5)?,
                undelivered: r.get(6)?,
            }
            .json())
        })?;
        rows.collect()
    };
    let cols = "id, rule, subject, detail, fired_at_ms, cleared_at_ms,
        (SELECT count(*) FROM alert_deliveries d WHERE d.alert_id = alerts.id AND (d.webhook_done = 0 OR d.mqtt_done = 0))";
    Ok(json!({
        "firing": query(&format!("SELECT {cols} FROM alerts WHERE cleared_at_ms IS NULL AND ?1 = ?1 ORDER BY id"), 0)?,
        "recent": query(&format!("SELECT {cols} FROM alerts WHERE cleared_at_ms IS NOT NULL ORDER BY cleared_at_ms DESC, id DESC LIMIT ?1"), recent)?,
    }))
}

/// Firing alerts per rule, for `/metrics`.
pub fn firing_by_rule(conn: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT rule, count(*) FROM alerts WHERE cleared_at_ms IS NULL GROUP BY rule ORDER BY rule",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}
