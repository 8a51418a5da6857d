//! What each kind of record says in the queue, built from a store's row: the group's
//! natural key, the warehouse, channel and SKU it concerns, the source, field and reason,
//! the record as received. Pure, so both stores (`stores` for SQLite,
//! `store::postgres::exception_sources`) fold the same occurrences from the same records.

use serde_json::{json, Value};
use stocksync_common::wire;

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
