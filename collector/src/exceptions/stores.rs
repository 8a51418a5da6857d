//! Reading each store that keeps a kind of problem (agent and collector rejects, drift, conflicts,
//! discrepancies, reversals, channel errors) as occurrences for the queue: what the group's
//! natural key is, which warehouse, channel and SKU it concerns, and the record as received.
//! Read-only: the stores stay the only writers of their tables.

use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};

pub(crate) use super::occurrences::*;
use super::outbound;
// For the PostgreSQL queue (`store::postgres::exception_sources`).
#[cfg_attr(not(feature = "postgres"), allow(unused_imports))]
pub(crate) use super::outbound::{
    backorder_occurrence, channel_error_occurrence, ChannelErrorRow, OrderRow,
};
use super::Kind;
use crate::records::{Discrepancy, Reversal};

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
        Ok(agent_reject_occurrence(AgentRejectRow {
            agent_id: r.get(0)?,
            reject_id: r.get(1)?,
            received_at_ms: r.get(2)?,
            warehouse: r.get(3)?,
            arrived_at_ms: r.get(4)?,
            source: r.get(5)?,
            record: r.get(6)?,
            field: r.get(7)?,
            detail: r.get(8)?,
            payload: r.get(9)?,
        }))
    })?;
    newest(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A row of the agents' rejects the collector received.
pub(crate) struct AgentRejectRow {
    pub agent_id: String,
    pub reject_id: i64,
    pub received_at_ms: i64,
    /// From the topic it arrived on.
    pub warehouse: String,
    pub arrived_at_ms: i64,
    pub source: String,
    pub record: Option<i64>,
    pub field: String,
    pub detail: String,
    pub payload: String,
}

/// An agent's reject as the queue sees it: grouped by warehouse, agent, field and detail.
pub(crate) fn agent_reject_occurrence(r: AgentRejectRow) -> Occurrence {
    let AgentRejectRow {
        agent_id: agent,
        reject_id: id,
        received_at_ms: received,
        warehouse,
        arrived_at_ms: arrived,
        source: input,
        field,
        detail,
        ..
    } = r;
    let record = agent_record(&r.payload, r.record);
    Occurrence {
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
    }
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
