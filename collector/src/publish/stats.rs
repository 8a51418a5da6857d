//! Per-target publishing figures for `/metrics` and `GET /v1/channels`: how far behind each
//! target is (pending changes, lag) and when it last succeeded. Kept in memory; the durable
//! truth is the cursors in `store`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use serde::Serialize;

/// Figures of one (channel, target).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetStats {
    /// Cursor delivered up to.
    pub delivered_cursor: i64,
    /// Newest cursor of the channel seen by the target.
    pub latest_cursor: i64,
    /// Change-log rows not yet delivered.
    pub pending: i64,
    /// Time from a value being stored to its delivery, for the last delivered batch (oldest
    /// value in it).
    pub lag_ms: i64,
    pub last_success_ms: Option<i64>,
    pub last_error: Option<String>,
    pub consecutive_failures: u32,
    pub delivered_total: u64,
    pub failures_total: u64,
}

/// Name, help and reading of one exported gauge.
type Gauge = (&'static str, &'static str, fn(&TargetStats) -> i64);

/// All targets' figures.
#[derive(Default)]
pub struct Stats {
    targets: Mutex<BTreeMap<(String, String), TargetStats>>,
}

impl Stats {
    /// Updates the figures of `channel`/`target` with `f`.
    pub fn update(&self, channel: &str, target: &str, f: impl FnOnce(&mut TargetStats)) {
        let mut map = self.targets.lock().expect("stats lock");
        let entry = map
            .entry((channel.to_string(), target.to_string()))
            .or_default();
        f(entry);
        entry.pending = (entry.latest_cursor - entry.delivered_cursor).max(0);
    }

    /// Figures of every target of `channel`, by target name.
    pub fn of_channel(&self, channel: &str) -> BTreeMap<String, TargetStats> {
        let map = self.targets.lock().expect("stats lock");
        map.iter()
            .filter(|((c, _), _)| c == channel)
            .map(|((_, t), s)| (t.clone(), s.clone()))
            .collect()
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let map = self.targets.lock().expect("stats lock");
        let mut out = String::new();
        let gauges: [Gauge; 4] = [
            (
                "stocksync_channel_pending_changes",
                "Change-log entries not yet delivered to the target",
                |s| s.pending,
            ),
            (
                "stocksync_channel_publish_lag_ms",
                "Store-to-delivery time of the last delivered batch",
                |s| s.lag_ms,
            ),
            (
                "stocksync_channel_last_success_ms",
                "Unix ms of the last successful delivery (0 = never)",
                |s| s.last_success_ms.unwrap_or(0),
            ),
            (
                "stocksync_channel_consecutive_failures",
                "Failed deliveries since the last success",
                |s| i64::from(s.consecutive_failures),
            ),
        ];
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for ((channel, target), s) in map.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{channel=\"{channel}\",target=\"{target}\"}} {}",
                    get(s)
                );
            }
        }
        out
    }
}
