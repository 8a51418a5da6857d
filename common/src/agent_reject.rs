//! What an agent tells the collector about the records it refused, so the central team sees
//! every warehouse's refusals in one queue (the agent keeps its own copy), and how the
//! collector asks an agent to process one again.
//!
//! [`AgentNotice`] is JSON on `topics::rejects(warehouse, agent)`, QoS 1: a reject (resent
//! until the broker acknowledges it) or the outcome of a retry. [`RetryCommand`] is JSON on
//! `topics::commands(warehouse, agent)`. The collector takes the warehouse and the agent from
//! the topic (which the broker's ACL ties to the agent's credentials), never from a payload;
//! it keys a reject by `(agent, id, received_at_ms)`, so a resend is the same reject.

use serde::{Deserialize, Serialize};

/// Most bytes of a forwarded reject (its payload is cut to fit).
pub const MAX_BYTES: usize = 32 * 1024;

/// One refused record, as the agent kept it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentReject {
    /// The reject's id in the agent's journal (`GET /v1/rejects` on the agent).
    pub id: i64,
    pub received_at_ms: i64,
    /// The input that received it (`http`, `files`, `scanner`, ...).
    pub source: String,
    /// Index of the refused record in its request, when the request was a list.
    pub record: Option<i64>,
    /// JSON path of the field at fault.
    pub field: String,
    pub detail: String,
    /// The request as received (text; cut to fit [`MAX_BYTES`]).
    pub payload: String,
}

impl AgentReject {
    /// The JSON bytes to publish (as an [`AgentNotice`]), the payload cut (on a character
    /// boundary) to fit.
    pub fn encode(&self) -> Vec<u8> {
        let mut r = self.clone();
        let room = MAX_BYTES.saturating_sub(1024 + r.field.len() + r.detail.len() + r.source.len());
        if r.payload.len() > room {
            let mut cut = room;
            while !r.payload.is_char_boundary(cut) {
                cut -= 1;
            }
            r.payload.truncate(cut);
        }
        serde_json::to_vec(&AgentNotice::Reject(r)).unwrap_or_default()
    }
}

/// What an agent publishes on its rejects topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentNotice {
    /// A record the agent refused.
    Reject(AgentReject),
    /// What a [`RetryCommand`] led to.
    Retried(Retried),
}

impl AgentNotice {
    /// The JSON bytes to publish (a reject's payload cut to fit [`MAX_BYTES`]).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            AgentNotice::Reject(r) => r.encode(),
            AgentNotice::Retried(_) => serde_json::to_vec(self).unwrap_or_default(),
        }
    }
}

/// The outcome of retrying reject `(id, received_at_ms)` at its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retried {
    pub id: i64,
    pub received_at_ms: i64,
    pub outcome: RetryOutcome,
    /// Why, when still refused or not retryable; the journal seqs when applied.
    pub detail: String,
}

/// What a retry at the agent led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutcome {
    /// Journaled now.
    Applied,
    /// Journaled by an earlier retry: nothing changed.
    AlreadyApplied,
    /// Refused again (the new reason in `detail`).
    StillRefused,
    /// Cannot be retried (unknown reject, an input kept in part).
    NotRetryable,
}

/// The collector asks an agent to process reject `(id, received_at_ms)` again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum RetryCommand {
    RetryReject { id: i64, received_at_ms: i64 },
}
