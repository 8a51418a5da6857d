//! Counters for `GET /metrics`, in Prometheus text format. Hand-written: a handful of
//! monotonic counters does not justify a metrics framework in the dependency tree.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use stocksync_common::wire::AckOutcome;

/// A monotonic counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The collector's counters.
#[derive(Default)]
pub struct Metrics {
    pub batches_applied: Counter,
    pub batches_rejected: Counter,
    pub movements_applied: Counter,
    pub movements_duplicate: Counter,
    pub rejects: Counter,
    pub commits: Counter,
    pub broker_connects: Counter,
    pub broker_connected: AtomicU64,
}

impl Metrics {
    /// Counts what one acknowledged batch did.
    pub fn count_outcome(&self, outcome: &AckOutcome) {
        match outcome {
            AckOutcome::Applied {
                applied,
                duplicates,
            } => {
                self.batches_applied.inc();
                self.movements_applied.add(u64::from(*applied));
                self.movements_duplicate.add(u64::from(*duplicates));
            }
            AckOutcome::Rejected { .. } => self.batches_rejected.inc(),
        }
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters = [
            (
                "stocksync_batches_applied_total",
                "Batches committed to the ledger",
                &self.batches_applied,
            ),
            (
                "stocksync_batches_rejected_total",
                "Batches refused (warehouse, journal id)",
                &self.batches_rejected,
            ),
            (
                "stocksync_movements_applied_total",
                "Movements appended to the ledger",
                &self.movements_applied,
            ),
            (
                "stocksync_movements_duplicate_total",
                "Movements received again and ignored",
                &self.movements_duplicate,
            ),
            (
                "stocksync_rejects_total",
                "Payloads and movements kept in the rejects queue",
                &self.rejects,
            ),
            (
                "stocksync_ledger_commits_total",
                "Ledger transactions (group commits)",
                &self.commits,
            ),
            (
                "stocksync_broker_connects_total",
                "Connections and reconnections of the consumer to the broker",
                &self.broker_connects,
            ),
        ];
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
        let _ = writeln!(
            out,
            "# HELP stocksync_broker_connected 1 when the collector is connected to the broker\n# TYPE stocksync_broker_connected gauge\nstocksync_broker_connected {}",
            self.broker_connected.load(Ordering::Relaxed)
        );
        out
    }
}
