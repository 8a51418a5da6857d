//! Retrying a movement the collector's own checks refused (`intake`): an unknown SKU once
//! the catalog has it, a movement dated ahead of the clock once that time has come.
//!
//! The refused movement's bytes are in the rejects queue, not in the ledger, so a retry is
//! the first delivery as far as the ledger is concerned; it goes through the same
//! `apply_movement` as a batch, inside the writer's transaction, so it counts exactly once
//! however often it is retried (a second retry, or the agent's own resend, is a duplicate).

use rusqlite::{params, OptionalExtension};
use stocksync_common::wire;

use super::apply::{apply_movement, Arrived, Outcome};
use super::{now_ms, Ledger, LedgerError};
use crate::projection;

/// What a retry led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retried {
    /// Applied to the ledger now.
    Applied,
    /// Its `(agent_id, seq)` is in the ledger already: nothing changed.
    AlreadyApplied,
    /// Refused again; the reason.
    StillRefused(String),
    /// The reject is not one movement refused by the collector's checks.
    NotRetryable(String),
    /// No reject with that id.
    Unknown,
}

/// Fields of the checks whose rejects can be retried.
pub(crate) const RETRYABLE: [&str; 2] = ["$.sku", "$.occurred_at"];

impl Ledger {
    /// Applies rejected movement `id` if it now passes the collector's checks.
    pub async fn retry_reject(&self, id: i64) -> Result<Retried, LedgerError> {
        let (authority, intake) = (self.authority.clone(), self.intake.clone());
        self.write(move |tx, touched| {
            type Row = (Option<String>, Option<i64>, Option<i64>, Option<String>, String, Vec<u8>);
            let row: Option<Row> = tx
                .query_row(
                    "SELECT agent_id, first_seq, last_seq, field, topic, payload FROM rejects WHERE id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            let Some((agent_id, first, last, field, topic, payload)) = row else {
                return Ok(Retried::Unknown);
            };
            let single = first.is_some() && first == last;
            let (Some(agent_id), true, Some(true)) = (
                agent_id,
                single,
                field.as_deref().map(|f| RETRYABLE.contains(&f)),
            ) else {
                return Ok(Retried::NotRetryable(
                    "only a single movement refused on $.sku or $.occurred_at can be retried".into(),
                ));
            };
            let Ok(movement) = wire::decode_movement(&payload) else {
                return Ok(Retried::NotRetryable("the kept bytes do not decode".into()));
            };
            let now = now_ms();
            let mut pending = projection::Pending::default();
            let arrived = Arrived {
                agent_id: &agent_id,
                movement: &movement,
                bytes: &payload,
                topic: &topic,
            };
            let outcome =
                apply_movement(tx, (&authority, &intake), &arrived, now, touched, &mut pending)?;
            pending.flush(tx, now)?;
            Ok(match outcome {
                Outcome::New { .. } => {
                    tx.execute("UPDATE rejects SET retried_at_ms = ?2 WHERE id = ?1", params![id, now])?;
                    Retried::Applied
                }
                Outcome::Duplicate => Retried::AlreadyApplied,
                Outcome::Refused(reason) => Retried::StillRefused(reason),
            })
        })
        .await
    }
}
