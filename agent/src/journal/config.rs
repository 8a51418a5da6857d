//! `[journal]` in the agent's config: where the journal file is and how much it keeps.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    pub path: PathBuf,
    /// Most unacknowledged movements kept; past it new input is refused with 503, never dropped.
    pub max_backlog: u64,
    /// How long acknowledged movements stay in the journal for audit before pruning.
    pub retain_acked_hours: u64,
    /// How long idempotency keys and movement ids are remembered for deduplication.
    pub idempotency_days: u64,
    /// Most refused records kept in the rejects queue; the oldest are dropped first (counted).
    pub max_rejects: u64,
    /// Days a refused record stays in the rejects queue.
    pub rejects_retain_days: u64,
    /// Largest journal file in bytes (0: only the disk limits it); past it input is refused
    /// with `503 disk full` like on a full disk.
    pub max_file_bytes: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            path: "agent-journal.db".into(),
            max_backlog: 10_000_000,
            retain_acked_hours: 24,
            idempotency_days: 7,
            max_rejects: 10_000,
            rejects_retain_days: 30,
            max_file_bytes: 0,
        }
    }
}
