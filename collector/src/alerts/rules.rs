//! The alert rules and their defaults (from `[operations]`): more unresolved exceptions
//! opened in the last 24 hours than `exceptions_per_day`, a warehouse silent for
//! `silent_after_secs`, a channel target failing for `channel_failing_after_secs`, and a SKU
//! sold out but still listed on a channel. Each holding condition has a subject, so two
//! silent warehouses are two alerts.

use serde_json::{json, Value};
use stocksync_common::catalog::Catalog;

use super::OperationsConfig;

use crate::report::{self, Facts};

/// A condition that holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub rule: &'static str,
    pub subject: String,
    pub detail: Value,
}

/// Every condition that holds at `now`, from what a store read (`report::Facts`).
pub fn evaluate(f: &Facts, ops: &OperationsConfig, catalog: &Catalog, now: i64) -> Vec<Condition> {
    let mut out = Vec::new();
    let opened = f.opened_last_24h;
    if u64::try_from(opened).unwrap_or(0) > ops.exceptions_per_day {
        out.push(Condition {
            rule: "exceptions_per_day",
            subject: "all".into(),
            detail: json!({"opened_last_24h": opened, "threshold": ops.exceptions_per_day}),
        });
    }
    for s in report::silent_warehouses(f, now, ops.silent_after_secs) {
        out.push(Condition {
            rule: "warehouse_silent",
            subject: s.warehouse.clone(),
            detail: json!({"warehouse": s.warehouse, "last_seen_ms": s.last_seen_ms}),
        });
    }
    for f in report::failing_channels(f, now, ops.channel_failing_after_secs) {
        out.push(Condition {
            rule: "channel_failing",
            subject: format!("{}/{}", f.channel, f.target),
            detail: serde_json::to_value(&f).unwrap_or(Value::Null),
        });
    }
    for l in report::sold_out_listed(f, catalog, now, report::grace_ms(ops)) {
        out.push(Condition {
            rule: "sold_out_listed",
            subject: format!("{}/{}", l.channel, l.sku),
            detail: serde_json::to_value(&l).unwrap_or(Value::Null),
        });
    }
    out
}
