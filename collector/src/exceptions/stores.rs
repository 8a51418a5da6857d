//! Reading each store that keeps a kind of problem (agent and collector rejects, drift, conflicts,
//! discrepancies, reversals, channel errors) as occurrences for the queue: what the group's
//! natural key is, which warehouse, channel and SKU it concerns, and the record as received.
//! Read-only: the stores stay the only writers of their tables.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use stocksync_common::wire;

use super::outbound;
use super::Kind;
use crate::records::{Discrepancy, Reversal};

/// One record of a store, as the queue sees it.
pub(crate) struct Occurrence {
    pub kind: Kind,
    pub key: Vec<String>,
    pub origin: &'static str,
    pub origin_key: String,
    pub seen: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub warehouse: Option<String>,
    pub channel: Option<String>,
    pub sku: Option<String>,
    pub source: String,
    pub field: Option<String>,
    pub reason: String,
    pub record: Value,
    /// The store says the problem is over.
    pub closed: bool,
}

pub(super) type Reader = fn(&Connection, i64) -> rusqlite::Result<(i64, Vec<Occurrence>)>;

pub(super) const READERS: [(&str, Reader); 9] = [
    ("agent_rejects", read_agent_rejects),
    ("rejects", read_rejects),
    ("drift", read_drift),
    ("conflicts", read_conflicts),
    ("discrepancies", read_discrepancies),
    ("reversals", read_reversals),
    ("channel_errors", outbound::read_channel_errors),
    ("shortfalls", read_shortfalls),
    ("orders", outbound::read_backorders),
];

/// A stored payload as JSON: the decoded batch or movement, else the bytes as text.
pub(crate) fn payload_json(bytes: &[u8]) -> Value {
    if let Ok(batch) = wire::decode_batch(bytes) {
        return serde_json::to_value(batch).unwrap_or(Value::Null);
    }
    if let Ok(m) = wire::decode_movement(bytes) {
        return serde_json::to_value(m).unwrap_or(Value::Null);
    }
    json!({ "undecoded": String::from_utf8_lossy(bytes) })
}

/// The movement `(agent_id, seq)` as the ledger received it.
fn ledger_record(tx: &Connection, agent_id: &str, seq: i64) -> rusqlite::Result<Value> {
    let bytes: Option<Vec<u8>> = tx
        .query_row(
            "SELECT payload FROM ledger WHERE agent_id = ?1 AND seq = ?2",
            params![agent_id, seq],
            |r| r.get(0),
        )
        .optional()?;
    Ok(bytes.map(|b| payload_json(&b)).unwrap_or(Value::Null))
}

/// A row of the collector's rejects queue.
pub(crate) struct RejectRow {
    pub id: i64,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub seen: i64,
    pub topic: String,
    pub agent_id: Option<String>,
    pub reason: String,
    pub field: Option<String>,
    pub payload: Vec<u8>,
    pub retried_at_ms: Option<i64>,
}

fn read_rejects(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, first_seen_ms, last_seen_ms, seen_count, topic, agent_id, reason, field, payload,
                retried_at_ms
         FROM rejects WHERE last_seen_ms >= ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok(reject_occurrence(RejectRow {
            id: r.get(0)?,
            first_seen_ms: r.get(1)?,
            last_seen_ms: r.get(2)?,
            seen: r.get(3)?,
            topic: r.get(4)?,
            agent_id: r.get(5)?,
            reason: r.get(6)?,
            field: r.get(7)?,
            payload: r.get(8)?,
            retried_at_ms: r.get(9)?,
        }))
    })?;
    newest(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A collector reject as the queue sees it: grouped by topic, reason and field.
pub(crate) fn reject_occurrence(r: RejectRow) -> Occurrence {
    let record = payload_json(&r.payload);
    let sku = record["sku"].as_str().map(String::from);
    let topic = r.topic;
    Occurrence {
        kind: Kind::CollectorReject,
        key: vec![
            topic.clone(),
            r.reason.clone(),
            r.field.clone().unwrap_or_default(),
        ],
        origin: "rejects",
        origin_key: r.id.to_string(),
        seen: r.seen,
        first_seen_ms: r.first_seen_ms,
        last_seen_ms: r.last_seen_ms,
        warehouse: stocksync_common::topics::warehouse_of_movements_topic(&topic).map(String::from),
        channel: None,
        sku,
        source: r
            .agent_id
            .map_or(format!("topic {topic}"), |a| format!("agent {a}")),
        field: r.field,
        reason: r.reason,
        record,
        // A retry applied it: the problem is over.
        closed: r.retried_at_ms.is_some(),
    }
}

/// The refused record of an agent reject as received: the payload as JSON (the `record`th
/// element when it is a list), else its text.
fn agent_record(payload: &str, record: Option<i64>) -> Value {
    let Ok(v) = serde_json::from_str::<Value>(payload) else {
        return json!({ "undecoded": payload });
    };
    match (record.and_then(|i| usize::try_from(i).ok()), &v) {
        (Some(i), Value::Array(items)) if i < items.len() => items[i].clone(),
        _ => v,
    }
}

fn read_agent_rejects(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let mut stmt = tx.prepare_cached(
        "SELECT agent_id, reject_id, received_at_ms, warehouse, arrived_at_ms, source, record, field, detail, payload
         FROM agent_rejects WHERE arrived_at_ms >= ?1",
    )?;
    let rows = stmt.query_map([since], |r| {
        let (agent, id, received): (String, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (warehouse, arrived, input): (String, i64, String) = (r.get(3)?, r.get(4)?, r.get(5)?);
        let (field, detail): (String, String) = (r.get(7)?, r.get(8)?);
        let record = agent_record(&r.get::<_, String>(9)?, r.get(6)?);
        Ok(Occurrence {
            kind: Kind::AgentReject,
            key: vec![
                warehouse.clone(),
                agent.clone(),
                field.clone(),
                detail.clone(),
            ],
            origin: "agent_rejects",
            origin_key: format!("{agent}/{id}/{received}"),
            seen: 1,
            first_seen_ms: arrived,
            last_seen_ms: arrived,
            warehouse: Some(warehouse),
            channel: None,
            sku: record["sku"].as_str().map(String::from),
            source: format!("agent {agent} ({input} input, its reject {id})"),
            field: Some(field),
            reason: detail,
            record,
            closed: false,
        })
    })?;
    newest(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(crate) fn newest(occurrences: Vec<Occurrence>) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let newest = occurrences
        .iter()
        .map(|o| o.last_seen_ms)
        .max()
        .unwrap_or(0);
    Ok((newest, occurrences))
}

fn read_drift(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    read_counts(tx, since, Kind::Drift)
}

fn read_conflicts(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    read_counts(tx, since, Kind::Conflict)
}

/// A drift or conflict row.
pub(crate) struct CountRow {
    pub agent_id: String,
    pub seq: i64,
    pub sku: String,
    pub warehouse: String,
    pub bin: String,
    pub source: String,
    pub counted_at: String,
    pub expected: i64,
    pub counted: i64,
    pub difference: i64,
    pub recorded_at_ms: i64,
}

/// Drift and conflicts: a count that disagreed with the projection, keyed by the count.
fn read_counts(
    tx: &Connection,
    since: i64,
    kind: Kind,
) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let table = if kind == Kind::Drift {
        "drift"
    } else {
        "conflicts"
    };
    let rows: Vec<CountRow> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT agent_id, seq, sku, warehouse, bin, source, counted_at, expected, counted, difference, recorded_at_ms
             FROM {table} WHERE recorded_at_ms >= ?1"
        ))?;
        let rows = stmt.query_map([since], |r| {
            Ok(CountRow {
                agent_id: r.get(0)?,
                seq: r.get(1)?,
                sku: r.get(2)?,
                warehouse: r.get(3)?,
                bin: r.get(4)?,
                source: r.get(5)?,
                counted_at: r.get(6)?,
                expected: r.get(7)?,
                counted: r.get(8)?,
                difference: r.get(9)?,
                recorded_at_ms: r.get(10)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let record = ledger_record(tx, &row.agent_id, row.seq)?;
        out.push(count_occurrence(kind, table, row, record));
    }
    newest(out)
}

/// Drift or a conflict as the queue sees it: grouped by SKU and location (and, for a
/// conflict, the source that counted).
pub(crate) fn count_occurrence(
    kind: Kind,
    table: &'static str,
    c: CountRow,
    record: Value,
) -> Occurrence {
    let mut key = vec![c.sku.clone(), c.warehouse.clone(), c.bin.clone()];
    let what = if kind == Kind::Drift {
        "count differs from the projection"
    } else {
        key.push(c.source.clone());
        "count from a source that is not the location's authority (not applied)"
    };
    let at_bin = if c.bin.is_empty() {
        String::new()
    } else {
        format!("/{}", c.bin)
    };
    Occurrence {
        kind,
        key,
        origin: table,
        origin_key: format!("{}/{}", c.agent_id, c.seq),
        seen: 1,
        first_seen_ms: c.recorded_at_ms,
        last_seen_ms: c.recorded_at_ms,
        warehouse: Some(c.warehouse.clone()),
        channel: None,
        sku: Some(c.sku.clone()),
        source: format!("{} via agent {}", c.source, c.agent_id),
        field: Some("$.quantity".into()),
        reason: format!(
            "{what}: {} at {}{at_bin} counted {} at {}, expected {} (difference {})",
            c.sku, c.warehouse, c.counted, c.counted_at, c.expected, c.difference
        ),
        record,
        closed: false,
    }
}

fn read_discrepancies(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let mut stmt = tx.prepare_cached(
        "SELECT transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms
         FROM discrepancies WHERE updated_at_ms >= ?1",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok(discrepancy_occurrence(Discrepancy {
            transfer: r.get(0)?,
            sku: r.get(1)?,
            from_warehouse: r.get(2)?,
            to_warehouse: r.get(3)?,
            shipped: r.get(4)?,
            received: r.get(5)?,
            difference: r.get(6)?,
            recorded_at_ms: r.get(7)?,
            updated_at_ms: r.get(8)?,
        }))
    })?;
    newest(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A transfer discrepancy as the queue sees it: one per transfer and SKU.
pub(crate) fn discrepancy_occurrence(d: Discrepancy) -> Occurrence {
    let Discrepancy {
        transfer,
        sku,
        from_warehouse: from,
        to_warehouse: to,
        shipped,
        received,
        difference: diff,
        recorded_at_ms,
        ..
    } = d;
    Occurrence {
        kind: Kind::Discrepancy,
        key: vec![transfer.clone(), sku.clone()],
        origin: "discrepancies",
        origin_key: format!("{transfer}/{sku}"),
        seen: 1,
        first_seen_ms: recorded_at_ms,
        last_seen_ms: recorded_at_ms,
        warehouse: Some(to.clone()),
        channel: None,
        sku: Some(sku.clone()),
        source: format!("transfer {transfer} {from} -> {to}"),
        field: Some("$.quantity".into()),
        reason: format!("transfer {transfer}: {shipped} shipped from {from}, {received} received at {to} (difference {diff})"),
        record: json!({"transfer": transfer, "sku": sku, "from_warehouse": from, "to_warehouse": to,
                       "shipped": shipped, "received": received, "difference": diff}),
        closed: diff == 0,
    }
}

fn read_reversals(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let mut stmt = tx.prepare_cached(
        "SELECT order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms FROM reversals WHERE updated_at_ms >= ?1",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok(reversal_occurrence(Reversal {
            order: r.get(0)?,
            sku: r.get(1)?,
            shipped: r.get(2)?,
            reversed: r.get(3)?,
            excess: r.get(4)?,
            recorded_at_ms: r.get(5)?,
            updated_at_ms: r.get(6)?,
        }))
    })?;
    newest(rows.collect::<Result<Vec<_>, _>>()?)
}

/// An order's reversal as the queue sees it: one per order and SKU.
pub(crate) fn reversal_occurrence(r: Reversal) -> Occurrence {
    let Reversal {
        order,
        sku,
        shipped,
        reversed,
        excess,
        recorded_at_ms,
        ..
    } = r;
    Occurrence {
        kind: Kind::Reversal,
        key: vec![order.clone(), sku.clone()],
        origin: "reversals",
        origin_key: format!("{order}/{sku}"),
        seen: 1,
        first_seen_ms: recorded_at_ms,
        last_seen_ms: recorded_at_ms,
        warehouse: None,
        channel: None,
        sku: Some(sku.clone()),
        source: format!("order {order}"),
        field: Some("$.quantity".into()),
        reason: format!(
            "order {order}: {reversed} reversed but {shipped} shipped ({excess} more than shipped)"
        ),
        record: json!({"order": order, "sku": sku, "shipped": shipped, "reversed": reversed, "excess": excess}),
        closed: excess == 0,
    }
}

/// A shortfall row.
pub(crate) struct ShortfallRow {
    pub agent_id: String,
    pub seq: i64,
    pub sku: String,
    pub warehouse: String,
    pub bin: String,
    pub kind: String,
    pub state: String,
    pub requested: i64,
    pub held: i64,
    pub excess: i64,
    pub recorded_at_ms: i64,
}

fn read_shortfalls(tx: &Connection, since: i64) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let rows: Vec<ShortfallRow> = {
        let mut stmt = tx.prepare_cached(
            "SELECT agent_id, seq, sku, warehouse, bin, kind, state, requested, held, excess, recorded_at_ms
             FROM shortfalls WHERE recorded_at_ms >= ?1",
        )?;
        let rows = stmt.query_map([since], |r| {
            Ok(ShortfallRow {
                agent_id: r.get(0)?,
                seq: r.get(1)?,
                sku: r.get(2)?,
                warehouse: r.get(3)?,
                bin: r.get(4)?,
                kind: r.get(5)?,
                state: r.get(6)?,
                requested: r.get(7)?,
                held: r.get(8)?,
                excess: r.get(9)?,
                recorded_at_ms: r.get(10)?,
            })
        })?;
        rows.collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let record = ledger_record(tx, &row.agent_id, row.seq)?;
        out.push(shortfall_occurrence(row, record));
    }
    newest(out)
}

/// A shortfall as the queue sees it: grouped by SKU, location and kind of movement.
pub(crate) fn shortfall_occurrence(s: ShortfallRow, record: Value) -> Occurrence {
    let ShortfallRow {
        agent_id,
        seq,
        sku,
        warehouse,
        bin,
        kind,
        state,
        requested,
        held,
        excess,
        recorded_at_ms: at,
    } = s;
    Occurrence {
        kind: Kind::Shortfall,
        key: vec![sku.clone(), warehouse.clone(), bin, kind.clone()],
        origin: "shortfalls",
        origin_key: format!("{agent_id}/{seq}"),
        seen: 1,
        first_seen_ms: at,
        last_seen_ms: at,
        warehouse: Some(warehouse.clone()),
        channel: None,
        sku: Some(sku),
        source: format!("agent {agent_id}"),
        field: Some("$.quantity".into()),
        reason: format!(
            "{kind} of {requested} {state} at {warehouse}: only {held} there ({excess} not taken)"
        ),
        record,
        closed: false,
    }
}
