//! Retrying a movement this store's checks refused (`intake`: an unknown SKU once the
//! catalog has it, a movement dated ahead of the clock once its time has come), as the
//! SQLite ledger does (`ledger::retry`) and with its answers.
//!
//! The refused movement's bytes are in the rejects queue, not in the ledger, so a retry is
//! its first delivery as far as the ledger is concerned: it goes through the same batch
//! transaction as anything from an agent (`ingest`), a batch of that one movement on the
//! topic it arrived on, so it counts exactly once however often it is retried (a second
//! retry, or the agent's own resend, is a duplicate).

use stocksync_common::wire::{self, AckOutcome, Batch};

use super::ingest::{self, Incoming};
use super::{now_ms, PgError, PgStore};
use crate::ledger::{Retried, RETRYABLE};

impl PgStore {
    /// Applies rejected movement `id` if it now passes the collector's checks.
    pub async fn retry_reject(&self, id: i64) -> Result<Retried, PgError> {
        let mut conn = self.pool.get().await?;
        let row = conn
            .query_opt(
                "SELECT r.agent_id, r.first_seq, r.last_seq, r.field, r.topic, r.payload, a.journal_id
                 FROM rejects r LEFT JOIN agents a ON a.agent_id = r.agent_id WHERE r.id = $1",
                &[&id],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Retried::Unknown);
        };
        let (agent_id, first, last): (Option<String>, Option<i64>, Option<i64>) =
            (row.get(0), row.get(1), row.get(2));
        let (field, topic, payload): (Option<String>, String, Vec<u8>) =
            (row.get(3), row.get(4), row.get(5));
        let single = first.is_some() && first == last;
        let retryable = field.as_deref().is_some_and(|f| RETRYABLE.contains(&f));
        let (Some(agent_id), true, true, Some(journal_id)) =
            (agent_id, single, retryable, row.get::<_, Option<i64>>(6))
        else {
            return Ok(Retried::NotRetryable(
                "only a single movement refused on $.sku or $.occurred_at can be retried".into(),
            ));
        };
        let Ok(movement) = wire::decode_movement(&payload) else {
            return Ok(Retried::NotRetryable("the kept bytes do not decode".into()));
        };
        // Why it would be refused again, to answer with; the batch below decides.
        let refusal = self.policies.intake.check(&agent_id, &movement, now_ms());
        let batch = Batch {
            agent_id,
            journal_id: journal_id as u64,
            warehouse: movement.location.warehouse.clone(),
            movements: vec![movement],
            sent_at_ms: None,
        };
        // The payload is the one movement's bytes as received.
        let whole = 0..payload.len();
        let incoming = Incoming {
            batch: &batch,
            payload: &payload,
            parts: std::slice::from_ref(&whole),
            topic: &topic,
        };
        let prepared = conn.prepared();
        let (outcome, _) = ingest::apply(&mut conn, &prepared, &self.policies, &incoming).await?;
        Ok(match outcome {
            AckOutcome::Applied { applied: 1, .. } => {
                conn.execute(
                    "UPDATE rejects SET retried_at_ms = $2 WHERE id = $1",
                    &[&id, &now_ms()],
                )
                .await?;
                Retried::Applied
            }
            AckOutcome::Applied { duplicates: 1, .. } => Retried::AlreadyApplied,
            // Refused again by intake: kept in the queue once more, as on SQLite.
            AckOutcome::Applied { .. } => {
                Retried::StillRefused(refusal.map_or_else(|| "refused again".into(), |r| r.reason))
            }
            AckOutcome::Rejected { reason } => Retried::StillRefused(reason),
        })
    }
}
