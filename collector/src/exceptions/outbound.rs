//! Reading the stores of what leaves the collector: failed channel pushes (in the channel
//! store's own file) and orders with units nobody could take, as occurrences for the queue
//! (see `stores`).

use rusqlite::Connection;
use serde_json::{json, Value};

use super::stores::{newest, Occurrence};
use super::Kind;

/// Channel push errors, from the channel store's own file beside the ledger `tx` is on
/// (nothing before a publisher created it).
pub(super) fn read_channel_errors(
    tx: &Connection,
    since: i64,
) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    let Some(channels) = crate::publish::file::open_beside(tx)? else {
        return Ok((0, Vec::new()));
    };
    let has_table: i64 = channels.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'channel_errors'",
        [],
        |r| r.get(0),
    )?;
    if has_table == 0 {
        return Ok((0, Vec::new()));
    }
    let mut stmt = channels.prepare(
        "SELECT id, channel, target, detail, first_seen_ms, last_seen_ms, seen_count, resolved_at_ms
         FROM channel_errors WHERE max(last_seen_ms, coalesce(resolved_at_ms, 0)) >= ?1",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok(channel_error_occurrence(ChannelErrorRow {
            id: r.get(0)?,
            channel: r.get(1)?,
            target: r.get(2)?,
            detail: r.get(3)?,
            first_seen_ms: r.get(4)?,
            last_seen_ms: r.get(5)?,
            seen: r.get(6)?,
            resolved_at_ms: r.get(7)?,
        }))
    })?;
    newest(rows.collect::<Result<Vec<_>, _>>()?)
}

/// A row of a channel's error queue.
pub(crate) struct ChannelErrorRow {
    pub id: i64,
    pub channel: String,
    pub target: String,
    pub detail: String,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub seen: i64,
    pub resolved_at_ms: Option<i64>,
}

/// A failed channel push as the queue sees it: grouped by channel, target and detail;
/// closed once a later delivery succeeded.
pub(crate) fn channel_error_occurrence(r: ChannelErrorRow) -> Occurrence {
    let ChannelErrorRow {
        channel,
        target,
        detail,
        ..
    } = r;
    Occurrence {
        kind: Kind::ChannelPush,
        key: vec![channel.clone(), target.clone(), detail.clone()],
        origin: "channel_errors",
        origin_key: r.id.to_string(),
        seen: r.seen,
        first_seen_ms: r.first_seen_ms,
        last_seen_ms: r.last_seen_ms.max(r.resolved_at_ms.unwrap_or(0)),
        warehouse: None,
        channel: Some(channel.clone()),
        sku: None,
        source: format!("channel {channel}, target {target}"),
        field: None,
        reason: detail.clone(),
        record: json!({"channel": channel, "target": target, "detail": detail}),
        closed: r.resolved_at_ms.is_some(),
    }
}

/// Orders with units nobody could take (backordered or queued); settled once they leave
/// that state.
pub(super) fn read_backorders(
    tx: &Connection,
    since: i64,
) -> rusqlite::Result<(i64, Vec<Occurrence>)> {
    // Only orders that wait now or had an exception are read (and their records parsed);
    // the thousands of orders placed in full since the last pass are not. This runs in the
    // writer: every order being placed waits for it.
    let newest_ms: i64 = tx
        .prepare_cached(
            "SELECT COALESCE(MAX(updated_at_ms), 0) FROM orders WHERE updated_at_ms >= ?1",
        )?
        .query_row([since], |r| r.get(0))?;
    let mut stmt = tx.prepare_cached(
        "SELECT id, channel, state, record, created_at_ms FROM orders
         WHERE updated_at_ms >= ?1 AND (state IN ('backorder', 'queued')
               OR id IN (SELECT origin_key FROM exception_sources WHERE origin = 'orders'))",
    )?;
    let rows = stmt.query_map([since], |r| {
        Ok(backorder_occurrence(OrderRow {
            id: r.get(0)?,
            channel: r.get(1)?,
            state: r.get(2)?,
            record: r.get(3)?,
            created_at_ms: r.get(4)?,
        }))
    })?;
    // An order that never waited is no exception (not selected); one that stopped waiting
    // closes it.
    Ok((newest_ms, rows.collect::<rusqlite::Result<_>>()?))
}

/// An order that waits for stock, or did.
pub(crate) struct OrderRow {
    pub id: String,
    pub channel: String,
    pub state: String,
    /// The order's record (JSON text).
    pub record: String,
    pub created_at_ms: i64,
}

/// A backordered or queued order as the queue sees it; closed once it stops waiting.
pub(crate) fn backorder_occurrence(r: OrderRow) -> Occurrence {
    let OrderRow {
        id, channel, state, ..
    } = &r;
    let record: Value = serde_json::from_str(&r.record).unwrap_or(Value::Null);
    let waiting = state == "backorder" || state == "queued";
    let short: Vec<&Value> = record["lines"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|l| l["unallocated"].as_u64().unwrap_or(0) > 0)
                .collect()
        })
        .unwrap_or_default();
    let what: Vec<String> = short
        .iter()
        .map(|l| {
            let why = l["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!(
                "{} x {}{why}",
                l["unallocated"],
                l["sku"].as_str().unwrap_or("?")
            )
        })
        .collect();
    Occurrence {
        kind: Kind::Backorder,
        key: vec![id.clone()],
        origin: "orders",
        origin_key: id.clone(),
        seen: 1,
        first_seen_ms: r.created_at_ms,
        last_seen_ms: r.created_at_ms,
        warehouse: None,
        channel: Some(channel.clone()),
        sku: short
            .first()
            .and_then(|l| l["sku"].as_str())
            .map(String::from),
        source: format!("order {id} from channel {channel}"),
        field: Some("$.lines".into()),
        reason: format!(
            "order {id} is {state}: {} waiting for stock",
            what.join(", ")
        ),
        record: record["request"].clone(),
        closed: !waiting,
    }
}
