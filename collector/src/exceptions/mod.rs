//! The exception queue: every kind of problem the collector keeps (rejects, drift, conflicts,
//! transfer discrepancies, reversals, shortfalls, failed channel pushes, backordered orders) as one list an operator works
//! through, with a status, a comment log and a count of identical failures.
//!
//! The queue owns only what it adds: status, comments and grouping, in its own
//! tables (`exceptions`, `exception_sources`, `exception_events`). The records themselves
//! stay in the stores that write them; `sources` reads them (incrementally, by a cursor per
//! store) and folds each into its group. A group's id is `<kind>-<hash of its natural key>`,
//! so the same failure always lands in the same exception, across restarts and re-reads, and
//! a thousand identical failures are one exception with a count of a thousand.

mod actions;
mod occurrences;
mod outbound;
mod query;
mod retry;
mod sources;
pub(crate) mod stores;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[cfg(feature = "postgres")]
pub(crate) use actions::check;
pub use actions::{act, act_by_filter, Action, ActionError, Request};
pub use query::{event_json, get, list, source_json, summary, Filter, Page, Row, COLUMNS};
pub use retry::{agent_retried, retry, retry_by_filter, Retry};
#[cfg(feature = "postgres")]
pub(crate) use retry::{not_retryable, nothing_to_retry, Settled};
pub use sources::sync;

/// What kind of problem an exception is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A record an agent refused (forwarded by the agent; the agent keeps its own copy).
    AgentReject,
    /// A payload or movement the collector refused (undecodable, identity, source policy).
    CollectorReject,
    Drift,
    Conflict,
    Discrepancy,
    Reversal,
    /// A push to a channel target that failed.
    ChannelPush,
    /// An inspection or write-off that asked for more than was there.
    Shortfall,
    /// An order with units nobody could take (backordered or queued).
    Backorder,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::AgentReject,
        Kind::CollectorReject,
        Kind::Drift,
        Kind::Conflict,
        Kind::Discrepancy,
        Kind::Reversal,
        Kind::ChannelPush,
        Kind::Shortfall,
        Kind::Backorder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::AgentReject => "agent_reject",
            Kind::CollectorReject => "collector_reject",
            Kind::Drift => "drift",
            Kind::Conflict => "conflict",
            Kind::Discrepancy => "discrepancy",
            Kind::Reversal => "reversal",
            Kind::ChannelPush => "channel_push",
            Kind::Shortfall => "shortfall",
            Kind::Backorder => "backorder",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Where an exception is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Open,
    /// A retry is under way (its records are being processed again).
    Retrying,
    Resolved,
    Ignored,
}

impl Status {
    pub const ALL: [Status; 4] = [
        Status::Open,
        Status::Retrying,
        Status::Resolved,
        Status::Ignored,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Retrying => "retrying",
            Status::Resolved => "resolved",
            Status::Ignored => "ignored",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The stable id of the group that `natural_key` (the parts that make two failures the same
/// failure) belongs to.
pub fn exception_id(kind: Kind, natural_key: &[&str]) -> String {
    let mut h = Sha256::new();
    for part in natural_key {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", kind.as_str())
}

/// Who changes an exception when nobody did by hand.
pub const SYSTEM: &str = "stocksync";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_parts() {
        let a = exception_id(Kind::Drift, &["MUG", "ams", "A-01"]);
        assert_eq!(a, exception_id(Kind::Drift, &["MUG", "ams", "A-01"]));
        assert!(a.starts_with("drift-"));
        assert_ne!(a, exception_id(Kind::Drift, &["MUGa", "ms", "A-01"]));
        assert_ne!(a, exception_id(Kind::Conflict, &["MUG", "ams", "A-01"]));
    }
}
