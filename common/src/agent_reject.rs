//! What an agent tells the collector about a record it refused, so the central team sees
//! every warehouse's refusals in one queue (the agent keeps its own copy).
//!
//! JSON on `topics::rejects(warehouse, agent)`, QoS 1, resent until the broker acknowledges
//! it. The collector takes the warehouse and the agent from the topic (which the broker's
//! ACL ties to the agent's credentials), never from this payload; it keys a reject by
//! `(agent, id, received_at_ms)`, so a resend is the same reject.

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
    /// The JSON bytes to publish, the payload cut (on a character boundary) to fit.
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
        serde_json::to_vec(&r).unwrap_or_default()
    }
}
