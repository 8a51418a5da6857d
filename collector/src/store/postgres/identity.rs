//! Which batches of a group may be applied at all: the SQLite ledger's `check_batch` and
//! `check_reuse` (topic, warehouse and journal identity must add up; a seq the ledger holds
//! with other bytes means the agent's journal went back in time), for every batch of a
//! group at once.
//!
//! Per agent of the group, two statements go out together: an upsert of its `agents` row
//! (which also locks the row, so two workers meeting a new agent agree on one row, and
//! records when it was last seen and its clock skew, only when the identity matches) and a
//! read of the seqs the ledger already holds in the group's range. A group of batches so
//! pays one round trip for its identity checks, not five per batch: on a loaded machine
//! those round trips, not the commit, were what kept the ack waiting.

use std::collections::{BTreeMap, HashMap};

use stocksync_common::wire::Batch;
use tokio_postgres::Transaction;

use super::ingest::Incoming;
use super::{PgError, Prepared};

/// The agent's row as stored (after the upsert) and the ledger's bytes in the group's range.
struct Known {
    journal_id: u64,
    warehouse: String,
    payloads: HashMap<u64, Vec<u8>>,
}

/// One agent's reads, boxed so that the futures of several agents can be joined in a `Send`
/// task.
type KnownFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Known, PgError>> + Send + 'a>>;

/// The refusal of each batch of `group` (by index), `None` for those that may be applied.
pub(super) async fn refusals(
    tx: &Transaction<'_>,
    p: &Prepared,
    group: &[Incoming<'_>],
    now: i64,
) -> Result<Vec<Option<String>>, PgError> {
    let mut refusals: Vec<Option<String>> = group
        .iter()
        .map(|i| topic_check(i.batch, i.topic))
        .collect();
    let mut agents: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, incoming) in group.iter().enumerate() {
        if refusals[i].is_none() {
            let agent = incoming.batch.agent_id.as_str();
            agents.entry(agent).or_default().push(i);
        }
    }
    let upsert = p.get(tx, UPSERT).await?;
    let read = p.get(tx, READ).await?;
    // Prepared above, so each future sends its statements on its first poll: in agent order,
    // every agent's upsert before its read.
    let mut reads: Vec<KnownFuture<'_>> = Vec::with_capacity(agents.len());
    for (agent, batches) in &agents {
        reads.push(Box::pin(known(
            tx, &upsert, &read, group, agent, batches, now,
        )));
    }
    let known = futures_util::future::try_join_all(reads).await?;
    for ((agent, batches), known) in agents.iter().zip(known) {
        // Seqs of this agent accepted earlier in the group, with their bytes: a later batch
        // that sends one again with other bytes is refused as a reuse, as it would be had
        // the earlier one committed first.
        let mut earlier: HashMap<u64, Vec<u8>> = HashMap::new();
        for (n, &i) in batches.iter().enumerate() {
            let incoming = &group[i];
            if let Some(reason) = identity_check(incoming.batch, &known) {
                refusals[i] = Some(reason);
                continue;
            }
            if let Some(seq) = differing(incoming, &known.payloads, &earlier) {
                let last = ledger_last(tx, p, agent).await?;
                let last = earlier.keys().copied().chain([last]).max().unwrap_or(last);
                refusals[i] = Some(stocksync_common::rollback::reason(agent, seq, last));
                continue;
            }
            if n + 1 < batches.len() {
                for (j, m) in incoming.batch.movements.iter().enumerate() {
                    earlier.entry(m.seq).or_insert_with(|| incoming.bytes(j));
                }
            }
        }
    }
    Ok(refusals)
}

/// Prepares (once per connection) the statements [`refusals`] sends, so that its first poll
/// sends them all, ahead of whatever is joined after it.
pub(super) async fn prepare(tx: &Transaction<'_>, p: &Prepared) -> Result<(), PgError> {
    p.get(tx, UPSERT).await?;
    p.get(tx, READ).await?;
    Ok(())
}

/// Inserts or locks the agent's row; when the stored identity is the batch's, the time it
/// was last seen and its clock skew (from the newest batch that says when it was sent).
const UPSERT: &str = "INSERT INTO agents (agent_id, journal_id, warehouse, first_seen_ms, last_seen_ms, clock_skew_ms)
     VALUES ($1, $2, $3, $4, $4, $5)
     ON CONFLICT (agent_id) DO UPDATE SET
        last_seen_ms = CASE WHEN agents.journal_id = excluded.journal_id AND agents.warehouse = excluded.warehouse
            THEN excluded.last_seen_ms ELSE agents.last_seen_ms END,
        clock_skew_ms = CASE WHEN agents.journal_id = excluded.journal_id AND agents.warehouse = excluded.warehouse
            THEN COALESCE(excluded.clock_skew_ms, agents.clock_skew_ms) ELSE agents.clock_skew_ms END
     RETURNING journal_id, warehouse";

const READ: &str = "SELECT seq, payload FROM ledger WHERE agent_id = $1 AND seq BETWEEN $2 AND $3";

/// The agent's stored identity and the ledger's bytes of its `batches`' seqs.
#[allow(clippy::too_many_arguments)]
async fn known(
    tx: &Transaction<'_>,
    upsert: &tokio_postgres::Statement,
    read: &tokio_postgres::Statement,
    group: &[Incoming<'_>],
    agent: &str,
    batches: &[usize],
    now: i64,
) -> Result<Known, PgError> {
    let first = group[batches[0]].batch;
    let skew = batches
        .iter()
        .rev()
        .find_map(|&i| group[i].batch.sent_at_ms)
        .map(|sent| now.saturating_sub(sent));
    let range = seq_range(group, batches);
    let journal_id = first.journal_id as i64;
    let row = async {
        tx.query_one(
            upsert,
            &[&agent, &journal_id, &first.warehouse, &now, &skew],
        )
        .await
    };
    let rows = async {
        match range {
            Some((lo, hi)) => tx.query(read, &[&agent, &lo, &hi]).await,
            None => Ok(Vec::new()),
        }
    };
    let (row, rows) = tokio::try_join!(row, rows)?;
    Ok(Known {
        journal_id: row.get::<_, i64>(0) as u64,
        warehouse: row.get(1),
        payloads: rows
            .iter()
            .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
            .collect(),
    })
}

/// The lowest and highest seq of `batches`.
fn seq_range(group: &[Incoming<'_>], batches: &[usize]) -> Option<(i64, i64)> {
    let mut seqs = batches
        .iter()
        .flat_map(|&i| group[i].batch.movements.iter())
        .map(|m| m.seq as i64);
    let first = seqs.next()?;
    Some(seqs.fold((first, first), |(lo, hi), s| (lo.min(s), hi.max(s))))
}

/// The checks that need no database: the payload's warehouse is the topic's, and every
/// movement is located in it.
fn topic_check(batch: &Batch, topic: &str) -> Option<String> {
    let topic_warehouse = stocksync_common::topics::warehouse_of_movements_topic(topic);
    if topic_warehouse != Some(batch.warehouse.as_str()) {
        return Some(format!(
            "warehouse `{}` in the payload does not match topic `{topic}`",
            batch.warehouse
        ));
    }
    let m = batch
        .movements
        .iter()
        .find(|m| m.location.warehouse != batch.warehouse)?;
    Some(format!(
        "movement seq {} is located in `{}`, not in the batch's warehouse `{}`",
        m.seq, m.location.warehouse, batch.warehouse
    ))
}

/// The batch's journal and warehouse against the agent's stored ones.
fn identity_check(batch: &Batch, known: &Known) -> Option<String> {
    if known.journal_id != batch.journal_id {
        return Some(format!(
            "agent `{}` sent journal {} but the collector knows journal {}: its journal was recreated and its seqs would collide; give the agent a new agent_id",
            batch.agent_id, batch.journal_id, known.journal_id
        ));
    }
    if known.warehouse != batch.warehouse {
        return Some(format!(
            "agent `{}` is registered for warehouse `{}`, not `{}`",
            batch.agent_id, known.warehouse, batch.warehouse
        ));
    }
    None
}

/// The first seq of the batch held (in the ledger, or earlier in the group) with other
/// bytes. As in the SQLite ledger, a v2 movement is its v1 bytes followed by its origin.
fn differing(
    incoming: &Incoming<'_>,
    ledger: &HashMap<u64, Vec<u8>>,
    earlier: &HashMap<u64, Vec<u8>>,
) -> Option<u64> {
    if ledger.is_empty() && earlier.is_empty() {
        return None;
    }
    incoming
        .batch
        .movements
        .iter()
        .enumerate()
        .find_map(|(i, m)| {
            let before = ledger.get(&m.seq).or_else(|| earlier.get(&m.seq))?;
            let new = incoming.bytes(i);
            let same = *before == new || new.starts_with(before) || before.starts_with(&new);
            (!same).then_some(m.seq)
        })
}

/// The agent's highest seq in the ledger (for the reuse refusal's text).
async fn ledger_last(tx: &Transaction<'_>, p: &Prepared, agent: &str) -> Result<u64, PgError> {
    let last: Option<i64> = tx
        .query_one(
            &p.get(tx, "SELECT MAX(seq) FROM ledger WHERE agent_id = $1")
                .await?,
            &[&agent],
        )
        .await?
        .get(0);
    Ok(last.unwrap_or(0) as u64)
}
