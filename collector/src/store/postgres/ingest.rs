//! One batch, one PostgreSQL transaction: the identity checks that refuse a batch whole,
//! the ledger rows inserted with `ON CONFLICT (agent_id, seq) DO NOTHING` (a second delivery,
//! from a resend, a replay or another worker, inserts nothing), the projection of what was
//! new (`project`), the operator's records it changes (`records`: drift, conflicts and
//! shortfalls from the projection's replays, transfer discrepancies and order reversals),
//! an outbox row per changed SKU; then COMMIT, and only then the answer
//! that becomes the agent's ack. The rules are the SQLite ledger's (`ledger/apply.rs`):
//! same checks, same reasons, same treatment and intake decisions.
//!
//! Concurrent transactions (several workers, a transfer's peer warehouse) serialise on
//! per-(SKU, warehouse) advisory locks taken in one order; a deadlock or serialization
//! failure that still happens rolls the batch back and runs it again, a few times at most.

use std::collections::HashSet;

use sha2::Digest;
use stocksync_common::model::MovementKind;
use stocksync_common::wire::{self, AckOutcome, Batch};
use tokio_postgres::{Client, Transaction};

use super::{project, records, reserve, PgError, Policies, Prepared};
use crate::authority::{returns_to_str, Treatment};
use crate::ledger::Rejected;
use crate::projection::Entry;

/// Attempts of one batch before its caller hears the error (no ack: the agent resends).
const MAX_ATTEMPTS: u32 = 5;

/// A batch as `consume` hands it over.
pub struct Incoming<'a> {
    pub batch: &'a Batch,
    pub payload: &'a [u8],
    pub parts: &'a [std::ops::Range<usize>],
    pub topic: &'a str,
}

impl Incoming<'_> {
    /// The bytes of movement `i` as received (encoded again only without parts).
    fn bytes(&self, i: usize) -> Vec<u8> {
        match self.parts.get(i) {
            Some(r) if self.parts.len() == self.batch.movements.len() => {
                self.payload[r.clone()].to_vec()
            }
            _ => wire::encode_movement(&self.batch.movements[i]),
        }
    }
}

/// Applies one batch in its own transaction, retrying on deadlock or serialization failure.
/// Returns the ack outcome and how many movements went to the rejects queue.
pub async fn apply(
    client: &mut Client,
    p: &Prepared,
    policies: &Policies,
    incoming: &Incoming<'_>,
) -> Result<(AckOutcome, u32), PgError> {
    let mut outcomes = apply_group(client, p, policies, std::slice::from_ref(incoming)).await?;
    Ok(outcomes.remove(0))
}

/// Applies several batches (queued for one warehouse) in one transaction: one commit, one
/// fsync for all of them. Retried whole on deadlock or serialization failure; any other
/// error is returned and the caller applies each batch alone, so that a batch that fails
/// fails only itself.
pub async fn apply_group(
    client: &mut Client,
    p: &Prepared,
    policies: &Policies,
    group: &[Incoming<'_>],
) -> Result<Vec<(AckOutcome, u32)>, PgError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tx = client.transaction().await?;
        let mut outcomes = Vec::with_capacity(group.len());
        let mut failed = None;
        for incoming in group {
            match apply_in(&tx, p, policies, incoming).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let result = match failed {
            None => tx.commit().await.map(|()| outcomes).map_err(PgError::from),
            Some(e) => Err(e),
        };
        match result {
            Err(e) if e.is_retryable() && attempt < MAX_ATTEMPTS => {
                let agent = group.first().map(|i| i.batch.agent_id.as_str());
                tracing::warn!(error = %e, attempt, batches = group.len(), ?agent, "batch transaction retried");
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt)).await;
            }
            other => return other,
        }
    }
}

async fn apply_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    policies: &Policies,
    incoming: &Incoming<'_>,
) -> Result<(AckOutcome, u32), PgError> {
    let (batch, topic) = (incoming.batch, incoming.topic);
    let now = super::now_ms();
    let mut refusal = check_batch(tx, p, batch, topic, now).await?;
    if refusal.is_none() {
        refusal = check_reuse(tx, p, incoming).await?;
    }
    if let Some(reason) = refusal {
        tracing::error!(agent = %batch.agent_id, %topic, %reason, "batch rejected");
        store_reject(
            tx,
            p,
            &Rejected {
                topic: topic.to_string(),
                agent_id: Some(batch.agent_id.clone()),
                seqs: batch.seq_range(),
                reason: reason.clone(),
                field: None,
                payload: incoming.payload.to_vec(),
            },
        )
        .await?;
        return Ok((AckOutcome::Rejected { reason }, 0));
    }
    if let Some(sent) = batch.sent_at_ms {
        tx.execute(
            &p.get(
                tx,
                "UPDATE agents SET clock_skew_ms = $2 WHERE agent_id = $1",
            )
            .await?,
            &[&batch.agent_id, &now.saturating_sub(sent)],
        )
        .await?;
    }
    let (rows, refused) = decide(policies, incoming, now);
    let mut policy_rejects = 0u32;
    let mut duplicates = 0u32;
    for (i, refusal) in refused {
        let m = &batch.movements[i];
        let known = tx
            .query_opt(
                &p.get(tx, "SELECT 1 FROM ledger WHERE agent_id = $1 AND seq = $2")
                    .await?,
                &[&batch.agent_id, &(m.seq as i64)],
            )
            .await?
            .is_some();
        if known {
            duplicates += 1;
            continue;
        }
        tracing::warn!(agent = %batch.agent_id, seq = m.seq, reason = %refusal.reason, "movement refused");
        store_reject(
            tx,
            p,
            &Rejected {
                topic: topic.to_string(),
                agent_id: Some(batch.agent_id.clone()),
                seqs: Some((m.seq, m.seq)),
                reason: refusal.reason,
                field: Some(refusal.field.into()),
                payload: incoming.bytes(i),
            },
        )
        .await?;
        policy_rejects += 1;
    }
    let new = insert(tx, p, &policies.worker_id, &batch.agent_id, &rows, now).await?;
    duplicates += (rows.len() - new.len()) as u32;
    let mut entries = Vec::with_capacity(new.len());
    for row in rows
        .into_iter()
        .filter(|r| new.contains(&r.entry.movement.seq))
    {
        if row.entry.treatment == Treatment::Rejected {
            policy_rejects += 1;
            let m = &row.entry.movement;
            store_reject(
                tx,
                p,
                &Rejected {
                    topic: topic.to_string(),
                    agent_id: Some(batch.agent_id.clone()),
                    seqs: Some((m.seq, m.seq)),
                    reason: policies.authority.reject_reason(&batch.agent_id, m),
                    field: Some("source".into()),
                    payload: row.bytes,
                },
            )
            .await?;
        }
        entries.push(row.entry);
    }
    let changed = project::project(tx, p, &entries, now).await?;
    records::settle(tx, p, &entries, now).await?;
    let mut shipped: Vec<(String, String)> = entries
        .iter()
        .filter(|e| {
            matches!(e.movement.kind, MovementKind::Shipment)
                && e.movement.references.order.is_some()
                && e.treatment.has_effect()
        })
        .map(|e| {
            (
                e.movement.sku.0.clone(),
                e.movement.location.warehouse.clone(),
            )
        })
        .collect();
    shipped.sort_unstable();
    shipped.dedup();
    reserve::on_shipments(tx, p, &shipped, now).await?;
    if !changed.is_empty() {
        let skus: Vec<&str> = changed.iter().map(String::as_str).collect();
        tx.execute(
            &p.get(
                tx,
                "INSERT INTO outbox (sku, created_at_ms) SELECT s, $2 FROM unnest($1::text[]) AS s",
            )
            .await?,
            &[&skus, &now],
        )
        .await?;
    }
    let applied = entries.len() as u32;
    Ok((
        AckOutcome::Applied {
            applied,
            duplicates,
        },
        policy_rejects,
    ))
}

/// A movement that passed intake, with its treatment and bytes.
struct Row {
    entry: Entry,
    bytes: Vec<u8>,
}

/// Intake and source-of-truth decisions for every movement of the batch: the rows to insert,
/// and the movements intake refused (by index).
fn decide(
    policies: &Policies,
    incoming: &Incoming<'_>,
    now: i64,
) -> (Vec<Row>, Vec<(usize, crate::intake::Refusal)>) {
    let batch = incoming.batch;
    let (mut rows, mut refused) = (Vec::new(), Vec::new());
    for (i, m) in batch.movements.iter().enumerate() {
        if let Some(r) = policies.intake.check(&batch.agent_id, m, now) {
            refused.push((i, r));
            continue;
        }
        rows.push(Row {
            entry: Entry {
                agent_id: batch.agent_id.clone(),
                movement: m.clone(),
                treatment: policies.authority.treat(m),
                returns_to: policies.authority.returns_to(&m.location.warehouse),
            },
            bytes: incoming.bytes(i),
        });
    }
    (rows, refused)
}

/// Inserts the rows in one statement; returns the seqs that were new.
async fn insert(
    tx: &Transaction<'_>,
    p: &Prepared,
    worker_id: &str,
    agent_id: &str,
    rows: &[Row],
    now: i64,
) -> Result<HashSet<u64>, PgError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let ms = rows.iter().map(|r| &r.entry.movement);
    let seq: Vec<i64> = ms.clone().map(|m| m.seq as i64).collect();
    let sku: Vec<&str> = ms.clone().map(|m| m.sku.as_str()).collect();
    let warehouse: Vec<&str> = ms.clone().map(|m| m.location.warehouse.as_str()).collect();
    let bin: Vec<&str> = ms.clone().map(|m| m.location.bin_key()).collect();
    let source: Vec<&str> = ms.clone().map(|m| m.source.as_str()).collect();
    let kind: Vec<&str> = ms.clone().map(|m| m.kind.name()).collect();
    let quantity: Vec<i64> = ms.clone().map(|m| m.quantity as i64).collect();
    let occurred: Vec<i64> = ms.clone().map(|m| m.occurred_at.unix_ms).collect();
    let payload: Vec<&[u8]> = rows.iter().map(|r| r.bytes.as_slice()).collect();
    let treatment: Vec<&str> = rows.iter().map(|r| r.entry.treatment.as_str()).collect();
    let returns_to: Vec<&str> = rows
        .iter()
        .map(|r| returns_to_str(r.entry.returns_to))
        .collect();
    let transfer: Vec<Option<&str>> = ms
        .clone()
        .map(|m| m.references.transfer.as_deref())
        .collect();
    let peer: Vec<Option<&str>> = ms
        .clone()
        .map(|m| m.references.peer_warehouse.as_deref())
        .collect();
    let order: Vec<Option<&str>> = ms.map(|m| m.references.order.as_deref()).collect();
    let inserted = tx
        .query(
            &p.get(tx, "INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, transfer, peer, order_ref, applied_by)
             SELECT $1, m.seq, m.sku, m.warehouse, m.bin, m.source, m.kind, m.quantity, m.occurred_at_ms, $2, m.payload, m.treatment, m.returns_to, m.transfer, m.peer, m.order_ref, $17
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bytea[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[])
               AS m(seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, payload, treatment, returns_to, transfer, peer, order_ref)
             ORDER BY m.seq
             ON CONFLICT (agent_id, seq) DO NOTHING
             RETURNING seq").await?,
            &[
                &agent_id, &now, &seq, &sku, &warehouse, &bin, &source, &kind, &quantity,
                &occurred, &payload, &treatment, &returns_to, &transfer, &peer, &order, &worker_id,
            ],
        )
        .await?;
    Ok(inserted.iter().map(|r| r.get::<_, i64>(0) as u64).collect())
}

/// Keeps a payload in the rejects queue; the same payload on the same topic again only
/// counts as seen once more.
pub async fn store_reject(tx: &Transaction<'_>, p: &Prepared, r: &Rejected) -> Result<(), PgError> {
    let now = super::now_ms();
    let hash = sha2::Sha256::digest(&r.payload).to_vec();
    tx.execute(
        &p.get(tx, "INSERT INTO rejects (first_seen_ms, last_seen_ms, topic, agent_id, first_seq, last_seq, reason, field, payload, payload_sha256)
         VALUES ($1, $1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (topic, payload_sha256) DO UPDATE SET seen_count = rejects.seen_count + 1, last_seen_ms = $1").await?,
        &[
            &now,
            &r.topic,
            &r.agent_id,
            &r.seqs.map(|s| s.0 as i64),
            &r.seqs.map(|s| s.1 as i64),
            &r.reason,
            &r.field,
            &r.payload,
            &hash,
        ],
    )
    .await?;
    Ok(())
}

/// The SQLite ledger's `check_batch`: topic, warehouse and journal identity must add up.
async fn check_batch(
    tx: &Transaction<'_>,
    p: &Prepared,
    batch: &Batch,
    topic: &str,
    now: i64,
) -> Result<Option<String>, PgError> {
    let topic_warehouse = stocksync_common::topics::warehouse_of_movements_topic(topic);
    if topic_warehouse != Some(batch.warehouse.as_str()) {
        return Ok(Some(format!(
            "warehouse `{}` in the payload does not match topic `{topic}`",
            batch.warehouse
        )));
    }
    if let Some(m) = batch
        .movements
        .iter()
        .find(|m| m.location.warehouse != batch.warehouse)
    {
        return Ok(Some(format!(
            "movement seq {} is located in `{}`, not in the batch's warehouse `{}`",
            m.seq, m.location.warehouse, batch.warehouse
        )));
    }
    // Insert-or-lock: two workers seeing a new agent at once agree on one row.
    tx.execute(
        &p.get(tx, "INSERT INTO agents (agent_id, journal_id, warehouse, first_seen_ms, last_seen_ms) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (agent_id) DO NOTHING").await?,
        &[&batch.agent_id, &(batch.journal_id as i64), &batch.warehouse, &now],
    )
    .await?;
    let row = tx
        .query_one(
            &p.get(
                tx,
                "SELECT journal_id, warehouse FROM agents WHERE agent_id = $1 FOR UPDATE",
            )
            .await?,
            &[&batch.agent_id],
        )
        .await?;
    let (journal_id, warehouse): (i64, String) = (row.get(0), row.get(1));
    if journal_id as u64 != batch.journal_id {
        return Ok(Some(format!(
            "agent `{}` sent journal {} but the collector knows journal {journal_id}: its journal was recreated and its seqs would collide; give the agent a new agent_id",
            batch.agent_id, batch.journal_id
        )));
    }
    if warehouse != batch.warehouse {
        return Ok(Some(format!(
            "agent `{}` is registered for warehouse `{warehouse}`, not `{}`",
            batch.agent_id, batch.warehouse
        )));
    }
    tx.execute(
        &p.get(
            tx,
            "UPDATE agents SET last_seen_ms = $2 WHERE agent_id = $1",
        )
        .await?,
        &[&batch.agent_id, &now],
    )
    .await?;
    Ok(None)
}

/// The SQLite ledger's `check_reuse`: a seq the ledger holds with other bytes means the
/// agent's journal went back in time; the whole batch is refused, visibly.
async fn check_reuse(
    tx: &Transaction<'_>,
    p: &Prepared,
    incoming: &Incoming<'_>,
) -> Result<Option<String>, PgError> {
    let batch = incoming.batch;
    let Some((first, last)) = batch.seq_range() else {
        return Ok(None);
    };
    let rows = tx
        .query(
            &p.get(
                tx,
                "SELECT seq, payload FROM ledger WHERE agent_id = $1 AND seq BETWEEN $2 AND $3",
            )
            .await?,
            &[&batch.agent_id, &(first as i64), &(last as i64)],
        )
        .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let known: std::collections::HashMap<u64, Vec<u8>> = rows
        .iter()
        .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
        .collect();
    let differing = batch.movements.iter().enumerate().find_map(|(i, m)| {
        let before = known.get(&m.seq)?;
        let new = incoming.bytes(i);
        // As in the SQLite ledger: a v2 movement is its v1 bytes followed by its origin.
        let same = *before == new || new.starts_with(before) || before.starts_with(&new);
        (!same).then_some(m.seq)
    });
    let Some(seq) = differing else {
        return Ok(None);
    };
    let last: i64 = tx
        .query_one(
            &p.get(tx, "SELECT MAX(seq) FROM ledger WHERE agent_id = $1")
                .await?,
            &[&batch.agent_id],
        )
        .await?
        .get(0);
    Ok(Some(stocksync_common::rollback::reason(
        &batch.agent_id,
        seq,
        last as u64,
    )))
}
