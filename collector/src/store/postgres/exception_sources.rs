//! Reading this store's records as occurrences for the exception queue: the agents' and the
//! collector's rejects, drift, conflicts, transfer discrepancies, reversals, failed channel
//! pushes, shortfalls and backordered orders (every kind the SQLite queue has). Only the SQL
//! is here; what an occurrence says (its group, warehouse, SKU, reason, record) is built by
//! the same functions as on SQLite (`exceptions::stores`), so both queues read the same.

use serde_json::Value;
use tokio_postgres::Transaction;

use super::{PgError, Prepared};
use crate::exceptions::stores::{
    self, AgentRejectRow, ChannelErrorRow, CountRow, Occurrence, OrderRow, RejectRow, ShortfallRow,
};
use crate::exceptions::Kind;
use crate::records::{Discrepancy, Reversal};

/// The stores this backend keeps, in the SQLite queue's order.
pub(super) const ORIGINS: [&str; 9] = [
    "agent_rejects",
    "rejects",
    "drift",
    "conflicts",
    "discrepancies",
    "reversals",
    "channel_errors",
    "shortfalls",
    "orders",
];

/// The occurrences of store `origin` seen since `since` (ms), with the newest time seen.
pub(super) async fn read(
    tx: &Transaction<'_>,
    p: &Prepared,
    origin: &str,
    since: i64,
) -> Result<(i64, Vec<Occurrence>), PgError> {
    let occurrences = match origin {
        // Orders are read by when they changed, not when they were placed.
        "orders" => return backorders(tx, p, since).await,
        "agent_rejects" => agent_rejects(tx, p, since).await?,
        "channel_errors" => channel_errors(tx, p, since).await?,
        "rejects" => rejects(tx, p, since).await?,
        "drift" => counts(tx, p, Kind::Drift, since).await?,
        "conflicts" => counts(tx, p, Kind::Conflict, since).await?,
        "discrepancies" => discrepancies(tx, p, since).await?,
        "reversals" => reversals(tx, p, since).await?,
        "shortfalls" => shortfalls(tx, p, since).await?,
        other => return Err(PgError::Corrupt(format!("no exception store `{other}`"))),
    };
    let newest = occurrences.iter().map(|o| o.last_seen_ms).max();
    Ok((newest.unwrap_or(0), occurrences))
}

/// The movement `(agent_id, seq)` as the ledger received it.
async fn ledger_record(
    tx: &Transaction<'_>,
    p: &Prepared,
    agent_id: &str,
    seq: i64,
) -> Result<Value, PgError> {
    let row = tx
        .query_opt(
            &p.get(
                tx,
                "SELECT payload FROM ledger WHERE agent_id = $1 AND seq = $2",
            )
            .await?,
            &[&agent_id, &seq],
        )
        .await?;
    Ok(row.map_or(Value::Null, |r| stores::payload_json(r.get(0))))
}

async fn rejects(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT id, first_seen_ms, last_seen_ms, seen_count, topic, agent_id, reason, field, payload, retried_at_ms
             FROM rejects WHERE last_seen_ms >= $1 ORDER BY id").await?,
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            stores::reject_occurrence(RejectRow {
                id: r.get(0),
                first_seen_ms: r.get(1),
                last_seen_ms: r.get(2),
                seen: r.get(3),
                topic: r.get(4),
                agent_id: r.get(5),
                reason: r.get(6),
                field: r.get(7),
                payload: r.get(8),
                retried_at_ms: r.get(9),
            })
        })
        .collect())
}

async fn counts(
    tx: &Transaction<'_>,
    p: &Prepared,
    kind: Kind,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let table = if kind == Kind::Drift {
        "drift"
    } else {
        "conflicts"
    };
    let sql = format!(
        "SELECT agent_id, seq, sku, warehouse, bin, source, counted_at, expected, counted, difference, recorded_at_ms
         FROM {table} WHERE recorded_at_ms >= $1"
    );
    let rows = tx.query(&p.get(tx, &sql).await?, &[&since]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = CountRow {
            agent_id: r.get(0),
            seq: r.get(1),
            sku: r.get(2),
            warehouse: r.get(3),
            bin: r.get(4),
            source: r.get(5),
            counted_at: r.get(6),
            expected: r.get(7),
            counted: r.get(8),
            difference: r.get(9),
            recorded_at_ms: r.get(10),
        };
        let record = ledger_record(tx, p, &row.agent_id, row.seq).await?;
        out.push(stores::count_occurrence(kind, table, row, record));
    }
    Ok(out)
}

async fn discrepancies(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT transfer, sku, from_warehouse, to_warehouse, shipped, received, difference, recorded_at_ms, updated_at_ms
             FROM discrepancies WHERE updated_at_ms >= $1").await?,
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            stores::discrepancy_occurrence(Discrepancy {
                transfer: r.get(0),
                sku: r.get(1),
                from_warehouse: r.get(2),
                to_warehouse: r.get(3),
                shipped: r.get(4),
                received: r.get(5),
                difference: r.get(6),
                recorded_at_ms: r.get(7),
                updated_at_ms: r.get(8),
            })
        })
        .collect())
}

async fn reversals(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let rows = tx
        .query(
            &p.get(
                tx,
                "SELECT order_ref, sku, shipped, reversed, excess, recorded_at_ms, updated_at_ms
             FROM reversals WHERE updated_at_ms >= $1",
            )
            .await?,
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            stores::reversal_occurrence(Reversal {
                order: r.get(0),
                sku: r.get(1),
                shipped: r.get(2),
                reversed: r.get(3),
                excess: r.get(4),
                recorded_at_ms: r.get(5),
                updated_at_ms: r.get(6),
            })
        })
        .collect())
}

async fn shortfalls(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT agent_id, seq, sku, warehouse, bin, kind, state, requested, held, excess, recorded_at_ms
             FROM shortfalls WHERE recorded_at_ms >= $1").await?,
            &[&since],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let row = ShortfallRow {
            agent_id: r.get(0),
            seq: r.get(1),
            sku: r.get(2),
            warehouse: r.get(3),
            bin: r.get(4),
            kind: r.get(5),
            state: r.get(6),
            requested: r.get(7),
            held: r.get(8),
            excess: r.get(9),
            recorded_at_ms: r.get(10),
        };
        let record = ledger_record(tx, p, &row.agent_id, row.seq).await?;
        out.push(stores::shortfall_occurrence(row, record));
    }
    Ok(out)
}

async fn agent_rejects(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT agent_id, reject_id, received_at_ms, warehouse, arrived_at_ms, source, record, field, detail, payload
             FROM agent_rejects WHERE arrived_at_ms >= $1").await?,
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            stores::agent_reject_occurrence(AgentRejectRow {
                agent_id: r.get(0),
                reject_id: r.get(1),
                received_at_ms: r.get(2),
                warehouse: r.get(3),
                arrived_at_ms: r.get(4),
                source: r.get(5),
                record: r.get(6),
                field: r.get(7),
                detail: r.get(8),
                payload: r.get(9),
            })
        })
        .collect())
}

async fn channel_errors(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<Vec<Occurrence>, PgError> {
    let rows = tx
        .query(
            &p.get(tx, "SELECT id, channel, target, detail, first_seen_ms, last_seen_ms, seen_count, resolved_at_ms
             FROM channel_errors WHERE GREATEST(last_seen_ms, COALESCE(resolved_at_ms, 0)) >= $1").await?,
            &[&since],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            stores::channel_error_occurrence(ChannelErrorRow {
                id: r.get(0),
                channel: r.get(1),
                target: r.get(2),
                detail: r.get(3),
                first_seen_ms: r.get(4),
                last_seen_ms: r.get(5),
                seen: r.get(6),
                resolved_at_ms: r.get(7),
            })
        })
        .collect())
}

/// Orders with units nobody could take, and those that had an exception (settled once they
/// stop waiting), changed since `since`; with the newest change seen.
async fn backorders(
    tx: &Transaction<'_>,
    p: &Prepared,
    since: i64,
) -> Result<(i64, Vec<Occurrence>), PgError> {
    let newest: i64 = tx
        .query_one(
            &p.get(
                tx,
                "SELECT COALESCE(MAX(updated_at_ms), 0)::bigint FROM orders WHERE updated_at_ms >= $1",
            )
            .await?,
            &[&since],
        )
        .await?
        .get(0);
    let rows = tx
        .query(
            &p.get(
                tx,
                "SELECT id, channel, state, record, created_at_ms FROM orders
             WHERE updated_at_ms >= $1 AND (state IN ('backorder', 'queued')
                   OR id IN (SELECT origin_key FROM exception_sources WHERE origin = 'orders'))",
            )
            .await?,
            &[&since],
        )
        .await?;
    let occurrences = rows
        .iter()
        .map(|r| {
            stores::backorder_occurrence(OrderRow {
                id: r.get(0),
                channel: r.get(1),
                state: r.get(2),
                record: r.get(3),
                created_at_ms: r.get(4),
            })
        })
        .collect();
    Ok((newest, occurrences))
}
