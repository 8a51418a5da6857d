//! Applying one batch inside the writer's transaction: the identity checks that refuse a
//! batch whole, the ledger insert that makes a second delivery a no-op, and the hand-off of
//! each new movement to the projection. Kept apart from the writer so that the rules of what
//! enters the ledger read in one place.

use rusqlite::{params, Connection, OptionalExtension};
use stocksync_common::wire::{self, AckOutcome, Batch};
use stocksync_common::Movement;

use super::{now_ms, Rejected, StockKey};
use crate::authority::{returns_to_str, Authority, Treatment};
use crate::intake::Intake;
use crate::projection::{self, Entry};

pub(super) fn store_reject(tx: &Connection, r: &Rejected) -> Result<(), rusqlite::Error> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO rejects (first_seen_ms, last_seen_ms, topic, agent_id, first_seq, last_seq, reason, payload, field)
         VALUES (?1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (topic, payload) DO UPDATE SET seen_count = seen_count + 1, last_seen_ms = ?1",
        params![
            now,
            r.topic,
            r.agent_id,
            r.seqs.map(|s| s.0 as i64),
            r.seqs.map(|s| s.1 as i64),
            r.reason,
            r.payload,
            r.field
        ],
    )?;
    Ok(())
}

/// Applies one batch: checks its identity, appends new movements, updates the projection.
/// A batch that fails a check is recorded as a reject and answered `Rejected`. Also returns
/// how many of its movements the source-of-truth policy sent to the rejects queue.
pub(super) fn apply_batch(
    tx: &Connection,
    (authority, intake): (&Authority, &Intake),
    batch: &Batch,
    (payload, parts): (&[u8], &[std::ops::Range<usize>]),
    topic: &str,
    touched: &mut Vec<StockKey>,
) -> Result<(AckOutcome, u32), rusqlite::Error> {
    let mut refusal = check_batch(tx, batch, topic)?;
    if refusal.is_none() {
        refusal = check_reuse(tx, batch, (payload, parts))?;
    }
    if let Some(reason) = refusal {
        tracing::error!(agent = %batch.agent_id, %topic, %reason, "batch rejected");
        store_reject(
            tx,
            &Rejected {
                topic: topic.to_string(),
                agent_id: Some(batch.agent_id.clone()),
                seqs: batch.seq_range(),
                reason: reason.clone(),
                field: None,
                payload: payload.to_vec(),
            },
        )?;
        return Ok((AckOutcome::Rejected { reason }, 0));
    }
    let now = now_ms();
    if let Some(sent) = batch.sent_at_ms {
        tx.prepare_cached("UPDATE agents SET clock_skew_ms = ?2 WHERE agent_id = ?1")?
            .execute(params![batch.agent_id, now.saturating_sub(sent)])?;
    }
    let (mut applied, mut duplicates, mut policy_rejects) = (0u32, 0u32, 0u32);
    let mut pending = projection::Pending::default();
    let whole = parts.len() == batch.movements.len();
    for (i, m) in batch.movements.iter().enumerate() {
        // The movement's bytes as received; encoded again only if the caller has no parts.
        let bytes: std::borrow::Cow<'_, [u8]> = match parts.get(i) {
            Some(range) if whole => payload[range.clone()].into(),
            _ => wire::encode_movement(m).into(),
        };
        let arrived = Arrived {
            agent_id: &batch.agent_id,
            movement: m,
            bytes: &bytes,
            topic,
        };
        match apply_movement(
            tx,
            (authority, intake),
            &arrived,
            now,
            touched,
            &mut pending,
        )? {
            Outcome::New { policy_reject } => {
                applied += 1;
                policy_rejects += u32::from(policy_reject);
            }
            Outcome::Duplicate => duplicates += 1,
            Outcome::Refused(_) => policy_rejects += 1,
        }
    }
    pending.flush(tx, now)?;
    let outcome = AckOutcome::Applied {
        applied,
        duplicates,
    };
    Ok((outcome, policy_rejects))
}

/// One movement as it arrived: from which agent, its bytes as received, on which topic.
pub(crate) struct Arrived<'a> {
    pub agent_id: &'a str,
    pub movement: &'a Movement,
    pub bytes: &'a [u8],
    pub topic: &'a str,
}

/// What became of one movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Appended to the ledger (and, if its source policy says reject, to the rejects queue).
    New { policy_reject: bool },
    /// Its `(agent_id, seq)` was in the ledger already.
    Duplicate,
    /// Refused by the collector's own checks (`intake`); kept in the rejects queue only.
    Refused(String),
}

/// Checks, appends and projects one movement.
pub(crate) fn apply_movement(
    tx: &Connection,
    (authority, intake): (&Authority, &Intake),
    a: &Arrived<'_>,
    now: i64,
    touched: &mut Vec<StockKey>,
    pending: &mut projection::Pending,
) -> Result<Outcome, rusqlite::Error> {
    let m = a.movement;
    if let Some(refusal) = intake.check(a.agent_id, m, now) {
        let known: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM ledger WHERE agent_id = ?1 AND seq = ?2)",
            )?
            .query_row(params![a.agent_id, m.seq as i64], |r| r.get(0))?;
        if known {
            return Ok(Outcome::Duplicate);
        }
        tracing::warn!(agent = %a.agent_id, seq = m.seq, reason = %refusal.reason, "movement refused");
        store_reject(
            tx,
            &Rejected {
                topic: a.topic.to_string(),
                agent_id: Some(a.agent_id.to_string()),
                seqs: Some((m.seq, m.seq)),
                reason: refusal.reason.clone(),
                field: Some(refusal.field.into()),
                payload: a.bytes.to_vec(),
            },
        )?;
        return Ok(Outcome::Refused(refusal.reason));
    }
    let treatment = authority.treat(m);
    let returns_to = authority.returns_to(&m.location.warehouse);
    let inserted = tx.prepare_cached(
        "INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, transfer, peer, order_ref)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16) ON CONFLICT (agent_id, seq) DO NOTHING",
    )?
    .execute(params![
        a.agent_id,
        m.seq as i64,
        m.sku.as_str(),
        m.location.warehouse,
        m.location.bin_key(),
        m.source,
        m.kind.name(),
        m.quantity as i64,
        m.occurred_at.unix_ms,
        now,
        a.bytes,
        treatment.as_str(),
        returns_to_str(returns_to),
        m.references.transfer,
        m.references.peer_warehouse,
        m.references.order,
    ])?;
    if inserted == 0 {
        return Ok(Outcome::Duplicate);
    }
    let policy_reject = treatment == Treatment::Rejected;
    if policy_reject {
        store_reject(
            tx,
            &Rejected {
                topic: a.topic.to_string(),
                agent_id: Some(a.agent_id.to_string()),
                seqs: Some((m.seq, m.seq)),
                reason: authority.reject_reason(a.agent_id, m),
                field: Some("source".into()),
                payload: a.bytes.to_vec(),
            },
        )?;
    }
    let entry = Entry {
        agent_id: a.agent_id.to_string(),
        movement: m.clone(),
        treatment,
        returns_to,
    };
    projection::project(tx, &entry, now, touched, pending)?;
    Ok(Outcome::New { policy_reject })
}

/// Refuses a batch that reuses a seq the ledger holds with other bytes: the agent's journal
/// went back in time (restored from a backup, WAL lost) and these are new movements under old
/// seqs. Deduplication would drop them silently as resends; refusing the whole batch keeps
/// them visible, and the reason tells the agent where to renumber from.
fn check_reuse(
    tx: &Connection,
    batch: &Batch,
    (payload, parts): (&[u8], &[std::ops::Range<usize>]),
) -> Result<Option<String>, rusqlite::Error> {
    let Some((first, last)) = batch.seq_range() else {
        return Ok(None);
    };
    let mut stored = tx.prepare_cached(
        "SELECT seq, payload FROM ledger WHERE agent_id = ?1 AND seq BETWEEN ?2 AND ?3",
    )?;
    let known: std::collections::HashMap<u64, Vec<u8>> = stored
        .query_map(params![batch.agent_id, first as i64, last as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    if known.is_empty() {
        return Ok(None);
    }
    let whole = parts.len() == batch.movements.len();
    let differing = batch.movements.iter().enumerate().find_map(|(i, m)| {
        let before = known.get(&m.seq)?;
        let bytes: std::borrow::Cow<'_, [u8]> = match parts.get(i) {
            Some(range) if whole => payload[range.clone()].into(),
            _ => wire::encode_movement(m).into(),
        };
        // A v2 movement is its v1 bytes followed by its origin: an agent that re-encoded
        // its unacknowledged v1 movements on upgrade resends the same movement, not a new one.
        let (old, new) = (before.as_slice(), bytes.as_ref());
        let same = old == new || new.starts_with(old) || old.starts_with(new);
        (!same).then_some(m.seq)
    });
    let Some(seq) = differing else {
        return Ok(None);
    };
    let collector_last: i64 = tx
        .prepare_cached("SELECT MAX(seq) FROM ledger WHERE agent_id = ?1")?
        .query_row([&batch.agent_id], |r| r.get(0))?;
    Ok(Some(stocksync_common::rollback::reason(
        &batch.agent_id,
        seq,
        collector_last as u64,
    )))
}

/// Refuses a batch whose topic, warehouse or journal identity does not add up.
fn check_batch(
    tx: &Connection,
    batch: &Batch,
    topic: &str,
) -> Result<Option<String>, rusqlite::Error> {
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
    let now = now_ms();
    let known: Option<(i64, String)> = tx
        .query_row(
            "SELECT journal_id, warehouse FROM agents WHERE agent_id = ?1",
            [&batch.agent_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    match known {
        None => {
            tx.execute(
                "INSERT INTO agents (agent_id, journal_id, warehouse, first_seen_ms, last_seen_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
                params![
                    batch.agent_id,
                    batch.journal_id as i64,
                    batch.warehouse,
                    now
                ],
            )?;
        }
        Some((journal_id, _)) if journal_id as u64 != batch.journal_id => {
            return Ok(Some(format!(
                "agent `{}` sent journal {} but the collector knows journal {journal_id}: its journal was recreated and its seqs would collide; give the agent a new agent_id",
                batch.agent_id, batch.journal_id
            )));
        }
        Some((_, warehouse)) if warehouse != batch.warehouse => {
            return Ok(Some(format!(
                "agent `{}` is registered for warehouse `{warehouse}`, not `{}`",
                batch.agent_id, batch.warehouse
            )));
        }
        Some(_) => {
            tx.prepare_cached("UPDATE agents SET last_seen_ms = ?2 WHERE agent_id = ?1")?
                .execute(params![batch.agent_id, now])?;
        }
    }
    Ok(None)
}
