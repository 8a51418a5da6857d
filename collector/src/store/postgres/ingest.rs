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

use std::collections::{HashMap, HashSet};

use sha2::Digest;
use stocksync_common::model::MovementKind;
use stocksync_common::wire::{self, AckOutcome, Batch};
use tokio_postgres::{Client, Transaction};

use super::{identity, project, records, reserve, PgError, Policies, Prepared};
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
    pub(super) fn bytes(&self, i: usize) -> Vec<u8> {
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
    let (mut attempt, mut speculate) = (0, true);
    loop {
        attempt += 1;
        let tx = client.transaction().await?;
        let result = match apply_in(&tx, p, policies, group, speculate).await {
            Ok(Some(outcomes)) => tx.commit().await.map(|()| outcomes).map_err(PgError::from),
            Ok(None) => {
                // A batch is refused: its rows went in with the others. Undo, and run the
                // group again inserting only what may be applied (not a failed attempt).
                tx.rollback().await?;
                (speculate, attempt) = (false, attempt - 1);
                continue;
            }
            Err(e) => Err(e),
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

/// What one batch of the group came to.
#[derive(Default, Clone, Copy)]
struct Tally {
    applied: u32,
    duplicates: u32,
    policy_rejects: u32,
}

/// The whole group in `tx`, each step one statement for all its batches: the identity
/// checks (`identity`), one ledger insert, one projection, one outbox insert. Batch by
/// batch, a group of sixteen paid some 160 round trips before its commit.
///
/// With `speculate`, the ledger insert goes out with the identity checks and the stock
/// locks, in the same round trip, as if every batch will pass (nearly always so: a refusal
/// is broken or hostile input). `None` when one did not: the caller rolls back and runs the
/// group again without speculating.
async fn apply_in(
    tx: &Transaction<'_>,
    p: &Prepared,
    policies: &Policies,
    group: &[Incoming<'_>],
    speculate: bool,
) -> Result<Option<Vec<(AckOutcome, u32)>>, PgError> {
    let now = super::now_ms();
    let (mut rows, mut refused) = (Vec::new(), Vec::new());
    for (i, incoming) in group.iter().enumerate() {
        let (accepted, refusals) = decide(policies, incoming, now);
        rows.extend(accepted.into_iter().map(|r| (i, r)));
        refused.extend(refusals.into_iter().map(|(m, r)| (i, m, r)));
    }
    // The identity checks and the stock locks (with the barriers read under them) in one
    // round trip: the locks of a batch refused below are only held a little longer.
    let keys = project::keys(rows.iter().map(|(_, r)| &r.entry));
    identity::prepare(tx, p).await?;
    p.get(tx, INSERT).await?;
    let (refusals, barriers, speculated) = tokio::try_join!(
        identity::refusals(tx, p, group, now),
        project::lock_and_read(tx, p, &keys),
        async {
            match speculate {
                true => insert(tx, p, &policies.worker_id, &rows, now)
                    .await
                    .map(Some),
                false => Ok(None),
            }
        },
    )?;
    if speculated.is_some() && refusals.iter().any(Option::is_some) {
        return Ok(None);
    }
    let mut rejected: Vec<Option<String>> = vec![None; group.len()];
    for (i, (incoming, refusal)) in group.iter().zip(refusals).enumerate() {
        let (batch, topic) = (incoming.batch, incoming.topic);
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
            rejected[i] = Some(reason);
        }
    }
    rows.retain(|(i, _)| rejected[*i].is_none());
    refused.retain(|(i, _, _)| rejected[*i].is_none());
    let mut new = match speculated {
        Some(new) => new,
        None => insert(tx, p, &policies.worker_id, &rows, now).await?,
    };
    let mut tally = vec![Tally::default(); group.len()];
    for (i, m, refusal) in refused {
        let (incoming, topic) = (&group[i], group[i].topic);
        let batch = incoming.batch;
        let seq = batch.movements[m].seq;
        let known = tx
            .query_opt(
                &p.get(tx, "SELECT 1 FROM ledger WHERE agent_id = $1 AND seq = $2")
                    .await?,
                &[&batch.agent_id, &(seq as i64)],
            )
            .await?
            .is_some();
        if known {
            tally[i].duplicates += 1;
            continue;
        }
        tracing::warn!(agent = %batch.agent_id, seq, reason = %refusal.reason, "movement refused");
        store_reject(
            tx,
            p,
            &Rejected {
                topic: topic.to_string(),
                agent_id: Some(batch.agent_id.clone()),
                seqs: Some((seq, seq)),
                reason: refusal.reason,
                field: Some(refusal.field.into()),
                payload: incoming.bytes(m),
            },
        )
        .await?;
        tally[i].policy_rejects += 1;
    }
    let mut entries = Vec::with_capacity(rows.len());
    for (i, row) in rows {
        let m = &row.entry.movement;
        // The first row of a seq in the group is the one inserted; a second is a resend.
        let fresh = new
            .get_mut(row.entry.agent_id.as_str())
            .is_some_and(|seqs| seqs.remove(&m.seq));
        if !fresh {
            tally[i].duplicates += 1;
            continue;
        }
        if row.entry.treatment == Treatment::Rejected {
            tally[i].policy_rejects += 1;
            let agent_id = &row.entry.agent_id;
            store_reject(
                tx,
                p,
                &Rejected {
                    topic: group[i].topic.to_string(),
                    agent_id: Some(agent_id.clone()),
                    seqs: Some((m.seq, m.seq)),
                    reason: policies.authority.reject_reason(agent_id, m),
                    field: Some("source".into()),
                    payload: row.bytes,
                },
            )
            .await?;
        }
        tally[i].applied += 1;
        entries.push(row.entry);
    }
    let projected = project::project(tx, p, &entries, barriers, now).await?;
    // The stock deltas and the outbox rows go out together.
    let skus: Vec<&str> = projected.changed.iter().map(String::as_str).collect();
    let outbox = p
        .get(
            tx,
            "INSERT INTO outbox (sku, created_at_ms) SELECT s, $2 FROM unnest($1::text[]) AS s",
        )
        .await?;
    tokio::try_join!(project::add(tx, p, &projected.deltas, now), async {
        match skus.is_empty() {
            true => Ok(0),
            false => tx
                .execute(&outbox, &[&skus, &now])
                .await
                .map_err(PgError::from),
        }
    },)?;
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
    Ok(Some(
        tally
            .into_iter()
            .zip(rejected)
            .map(|(t, rejected)| match rejected {
                Some(reason) => (AckOutcome::Rejected { reason }, 0),
                None => (
                    AckOutcome::Applied {
                        applied: t.applied,
                        duplicates: t.duplicates,
                    },
                    t.policy_rejects,
                ),
            })
            .collect(),
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

/// Inserts the rows (of any agents) in one statement; returns the seqs that were new, per
/// agent.
async fn insert(
    tx: &Transaction<'_>,
    p: &Prepared,
    worker_id: &str,
    rows: &[(usize, Row)],
    now: i64,
) -> Result<HashMap<String, HashSet<u64>>, PgError> {
    if rows.is_empty() {
        return Ok(HashMap::new());
    }
    let ms = rows.iter().map(|(_, r)| &r.entry.movement);
    let agent: Vec<&str> = rows
        .iter()
        .map(|(_, r)| r.entry.agent_id.as_str())
        .collect();
    let seq: Vec<i64> = ms.clone().map(|m| m.seq as i64).collect();
    let sku: Vec<&str> = ms.clone().map(|m| m.sku.as_str()).collect();
    let warehouse: Vec<&str> = ms.clone().map(|m| m.location.warehouse.as_str()).collect();
    let bin: Vec<&str> = ms.clone().map(|m| m.location.bin_key()).collect();
    let source: Vec<&str> = ms.clone().map(|m| m.source.as_str()).collect();
    let kind: Vec<&str> = ms.clone().map(|m| m.kind.name()).collect();
    let quantity: Vec<i64> = ms.clone().map(|m| m.quantity as i64).collect();
    let occurred: Vec<i64> = ms.clone().map(|m| m.occurred_at.unix_ms).collect();
    let payload: Vec<&[u8]> = rows.iter().map(|(_, r)| r.bytes.as_slice()).collect();
    let treatment: Vec<&str> = rows
        .iter()
        .map(|(_, r)| r.entry.treatment.as_str())
        .collect();
    let returns_to: Vec<&str> = rows
        .iter()
        .map(|(_, r)| returns_to_str(r.entry.returns_to))
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
    // `ORDER BY` so that of two rows of one seq in the group, the first is the one kept.
    let inserted = tx
        .query(
            &p.get(tx, INSERT).await?,
            &[
                &agent,
                &now,
                &seq,
                &sku,
                &warehouse,
                &bin,
                &source,
                &kind,
                &quantity,
                &occurred,
                &payload,
                &treatment,
                &returns_to,
                &transfer,
                &peer,
                &order,
                &worker_id,
            ],
        )
        .await?;
    let mut new: HashMap<String, HashSet<u64>> = HashMap::new();
    for r in &inserted {
        new.entry(r.get(0))
            .or_default()
            .insert(r.get::<_, i64>(1) as u64);
    }
    Ok(new)
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

/// The ledger rows of a group, in one statement (`insert`).
const INSERT: &str = "INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, transfer, peer, order_ref, applied_by)
             SELECT m.agent_id, m.seq, m.sku, m.warehouse, m.bin, m.source, m.kind, m.quantity, m.occurred_at_ms, $2, m.payload, m.treatment, m.returns_to, m.transfer, m.peer, m.order_ref, $17
             FROM unnest($1::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[], $10::bigint[], $11::bytea[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[])
                 WITH ORDINALITY
               AS m(agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, payload, treatment, returns_to, transfer, peer, order_ref, n)
             ORDER BY m.n
             ON CONFLICT (agent_id, seq) DO NOTHING
             RETURNING agent_id, seq";
