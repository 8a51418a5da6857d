//! The daily exception report: what an operator must look at today, in one answer.
//!
//! Unresolved exceptions by kind and age, exceptions opened on the day, open drift and
//! conflicts, SKUs sold out but still listed (0 available everywhere, published > 0 on a
//! channel), silent warehouses, failing or stale channel targets, and what is known of each
//! agent. Everything but the "opened on the day" counts is the state at the time of the
//! request. The checks are also what the alert rules evaluate, so a report line and an
//! alert always agree.
//!
//! Each store reads what the report needs into [`Facts`] with its own SQL (`sqlite` here:
//! channel values and push errors from the channel store's own file, everything else from
//! the ledger; `store::postgres::report` from the shared database); everything decided
//! from those facts (what is sold out but listed, silent, failing, stale; the JSON and the
//! CSV) is this module's, the same for both stores.

pub mod sqlite;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use stocksync_common::catalog::Catalog;

use crate::publish::stats::TargetStats;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// Unix ms of 00:00 UTC of `date` (`YYYY-MM-DD`), or `None` if it is not a date.
pub fn day_start_ms(date: &str) -> Option<i64> {
    let mut parts = date.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if date.len() != 10 || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm), proleptic Gregorian.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some((era * 146_097 + doe - 719_468) * DAY_MS)
}

/// The `YYYY-MM-DD` (UTC) of a unix ms.
pub fn date_of(ms: i64) -> String {
    let z = ms.div_euclid(DAY_MS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// What the report and the alert rules read from a store at one moment.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Exceptions first seen on the report's day, per kind.
    pub opened_on_date: BTreeMap<String, i64>,
    /// Unresolved exceptions first seen in the 24 hours before now.
    pub opened_last_24h: i64,
    /// Unresolved exceptions per kind, oldest first seen first.
    pub unresolved: Vec<Unresolved>,
    /// Open drift and conflict exceptions (the exception queue's JSON, newest first, 100 at most).
    pub open_drift: Vec<Value>,
    pub open_conflicts: Vec<Value>,
    /// Every channel value above 0: `(channel, sku, channel_sku, value)`, by channel and SKU.
    pub listed: Vec<(String, String, String, i64)>,
    /// Per SKU listed (and each component of a listed bundle): available units summed over
    /// its stock rows, and when any of them last changed.
    pub stock: BTreeMap<String, (i64, i64)>,
    /// Per warehouse: when its agents last sent anything.
    pub last_seen: Vec<(String, i64)>,
    /// Every channel target with an open push error: its oldest open error's first seen and
    /// its newest error's text.
    pub channel_errors: Vec<Failing>,
    /// Every agent, by warehouse and id.
    pub agents: Vec<AgentLine>,
}

/// Unresolved exceptions of one kind, in age bands by first seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub kind: String,
    pub count: i64,
    /// Under 1 h, 1 h to 24 h, 1 d to 7 d, over 7 d.
    pub bands: [i64; 4],
    pub oldest_first_seen_ms: i64,
}

/// The age band limits of [`Unresolved::bands`] at `now`: first seen after each is younger.
pub fn age_limits(now: i64) -> [i64; 3] {
    [now - HOUR_MS, now - DAY_MS, now - 7 * DAY_MS]
}

/// One agent as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLine {
    pub agent_id: String,
    pub warehouse: String,
    pub last_seen_ms: i64,
    pub last_seq: Option<i64>,
}

/// A SKU with nothing available anywhere that a channel still publishes as sellable.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SoldOutListed {
    pub channel: String,
    pub sku: String,
    pub channel_sku: String,
    pub published: i64,
    pub available: i64,
}

/// The SKUs whose stock [`Facts::stock`] must hold for `listed`: each one, and each
/// component of a listed bundle.
pub fn stock_needed(catalog: &Catalog, listed: &[(String, String, String, i64)]) -> Vec<String> {
    let mut need = std::collections::BTreeSet::new();
    for (_, sku, _, _) in listed {
        match catalog.bundle(sku) {
            Some(components) => need.extend(components.iter().map(|c| c.sku.clone())),
            None => {
                need.insert(sku.clone());
            }
        }
    }
    need.into_iter().collect()
}

/// SKUs 0 available (a bundle: some component short of one bundle) but published > 0, whose
/// stock last changed at least `grace_ms` before `now_ms`.
pub fn sold_out_listed(
    f: &Facts,
    catalog: &Catalog,
    now_ms: i64,
    grace_ms: i64,
) -> Vec<SoldOutListed> {
    // Available units and when the SKU's stock last changed (no row: none, never).
    let read = |sku: &str| f.stock.get(sku).copied().unwrap_or((0, 0));
    let mut out = Vec::new();
    for (channel, sku, channel_sku, published) in &f.listed {
        let (avail, changed) = match catalog.bundle(sku) {
            Some(components) => {
                let (mut sets, mut changed) = (i64::MAX, 0);
                for c in components {
                    let (a, at) = read(&c.sku);
                    let per = i64::try_from(c.quantity.max(1)).unwrap_or(i64::MAX);
                    sets = sets.min(a.max(0) / per);
                    changed = changed.max(at);
                }
                (sets, changed)
            }
            None => read(sku),
        };
        if avail <= 0 && changed <= now_ms.saturating_sub(grace_ms) {
            out.push(SoldOutListed {
                channel: channel.clone(),
                sku: sku.clone(),
                channel_sku: channel_sku.clone(),
                published: *published,
                available: avail,
            });
        }
    }
    out
}

/// A warehouse whose agents have sent nothing for `silent_after_secs`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Silent {
    pub warehouse: String,
    pub last_seen_ms: i64,
    pub silent_secs: i64,
}

/// Warehouses silent at `now_ms`.
pub fn silent_warehouses(f: &Facts, now_ms: i64, silent_after_secs: u64) -> Vec<Silent> {
    let limit = i64::try_from(silent_after_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let mut out = Vec::new();
    for (warehouse, last_seen_ms) in &f.last_seen {
        let quiet = now_ms.saturating_sub(*last_seen_ms);
        if quiet >= limit {
            out.push(Silent {
                warehouse: warehouse.clone(),
                last_seen_ms: *last_seen_ms,
                silent_secs: quiet / 1000,
            });
        }
    }
    out
}

/// A channel target with an open push error since `failing_since_ms`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Failing {
    pub channel: String,
    pub target: String,
    pub failing_since_ms: i64,
    pub last_error: String,
}

/// Channel targets whose oldest open error is at least `after_secs` old.
pub fn failing_channels(f: &Facts, now_ms: i64, after_secs: u64) -> Vec<Failing> {
    let cutoff = now_ms.saturating_sub(
        i64::try_from(after_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000),
    );
    f.channel_errors
        .iter()
        .filter(|e| e.failing_since_ms <= cutoff)
        .cloned()
        .collect()
}

/// The sold-out grace of `ops` in ms.
pub fn grace_ms(ops: &crate::alerts::OperationsConfig) -> i64 {
    i64::try_from(ops.sold_out_grace_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000)
}

/// What the report needs besides the store's facts.
pub struct Context<'a> {
    pub now_ms: i64,
    pub day_start_ms: i64,
    pub ops: &'a crate::alerts::OperationsConfig,
    pub catalog: &'a Catalog,
    /// In-memory figures of each (channel, target).
    pub targets: BTreeMap<(String, String), TargetStats>,
}

/// The end of the day that starts at `day_start_ms`.
pub fn day_end_ms(day_start_ms: i64) -> i64 {
    day_start_ms + DAY_MS
}

/// The report as JSON.
pub fn daily(f: &Facts, cx: &Context<'_>) -> Value {
    let unresolved: Vec<Value> = f
        .unresolved
        .iter()
        .map(|u| {
            let [a, b, c, d] = u.bands;
            json!({
                "kind": u.kind,
                "count": u.count,
                "age": {"under_1h": a, "1h_to_24h": b, "1d_to_7d": c, "over_7d": d},
                "oldest_first_seen_ms": u.oldest_first_seen_ms,
            })
        })
        .collect();
    let agents: Vec<Value> = f
        .agents
        .iter()
        .map(|a| {
            json!({"agent_id": a.agent_id, "warehouse": a.warehouse,
                   "last_seen_ms": a.last_seen_ms, "last_seq": a.last_seq,
                   "backlog": Value::Null})
        })
        .collect();
    json!({
        "date": date_of(cx.day_start_ms),
        "generated_at_ms": cx.now_ms,
        "exceptions": {
            "opened_on_date": f.opened_on_date,
            "unresolved": unresolved,
        },
        "open_drift": f.open_drift,
        "open_conflicts": f.open_conflicts,
        "sold_out_listed": sold_out_listed(f, cx.catalog, cx.now_ms, grace_ms(cx.ops)),
        "silent_warehouses": silent_warehouses(f, cx.now_ms, cx.ops.silent_after_secs),
        "channels": channel_lines(f, cx),
        // Backlog is not known here: agents do not report it.
        "agents": agents,
    })
}

/// Every channel target: ok, failing (an open push error) or stale (changes pending).
fn channel_lines(f: &Facts, cx: &Context<'_>) -> Vec<Value> {
    let failing: BTreeMap<(String, String), &Failing> = f
        .channel_errors
        .iter()
        .map(|f| ((f.channel.clone(), f.target.clone()), f))
        .collect();
    let mut out = Vec::new();
    for ((channel, target), s) in &cx.targets {
        let f = failing.get(&(channel.clone(), target.clone()));
        let state = if f.is_some() {
            "failing"
        } else if s.pending > 0 {
            "stale"
        } else {
            "ok"
        };
        out.push(json!({
            "channel": channel, "target": target, "state": state, "pending": s.pending,
            "lag_ms": s.lag_ms, "last_success_ms": s.last_success_ms,
            "failing_since_ms": f.map(|f| f.failing_since_ms),
            "last_error": f.map(|f| f.last_error.clone()).or(s.last_error.clone()),
        }));
    }
    out
}

/// The report as CSV: one line per finding, `section,subject,detail,value,since_ms`.
pub fn to_csv(report: &Value) -> String {
    let mut out = String::from("section,subject,detail,value,since_ms\n");
    let mut line = |cols: [String; 5]| {
        let cells: Vec<String> = cols.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    };
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let items = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    for (kind, n) in report["exceptions"]["opened_on_date"]
        .as_object()
        .into_iter()
        .flatten()
    {
        line([
            "opened_on_date".into(),
            kind.clone(),
            String::new(),
            s(n),
            String::new(),
        ]);
    }
    for u in report["exceptions"]["unresolved"]
        .as_array()
        .into_iter()
        .flatten()
    {
        line([
            "unresolved".into(),
            s(&u["kind"]),
            s(&u["age"]),
            s(&u["count"]),
            s(&u["oldest_first_seen_ms"]),
        ]);
    }
    for key in ["open_drift", "open_conflicts"] {
        for e in items(key) {
            line([
                key.into(),
                format!("{}@{}", s(&e["sku"]), s(&e["warehouse"])),
                s(&e["reason"]),
                s(&e["occurrences"]),
                s(&e["first_seen_ms"]),
            ]);
        }
    }
    for e in items("sold_out_listed") {
        line([
            "sold_out_listed".into(),
            format!("{}@{}", s(&e["sku"]), s(&e["channel"])),
            format!("available {}", s(&e["available"])),
            s(&e["published"]),
            String::new(),
        ]);
    }
    for e in items("silent_warehouses") {
        line([
            "silent_warehouse".into(),
            s(&e["warehouse"]),
            String::new(),
            s(&e["silent_secs"]),
            s(&e["last_seen_ms"]),
        ]);
    }
    for e in items("channels") {
        line([
            "channel".into(),
            format!("{}/{}", s(&e["channel"]), s(&e["target"])),
            s(&e["state"]),
            s(&e["pending"]),
            s(&e["failing_since_ms"]),
        ]);
    }
    for e in items("agents") {
        line([
            "agent".into(),
            s(&e["agent_id"]),
            s(&e["warehouse"]),
            s(&e["last_seq"]),
            s(&e["last_seen_ms"]),
        ]);
    }
    out
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        assert_eq!(day_start_ms("1970-01-01"), Some(0));
        assert_eq!(day_start_ms("2026-11-27"), Some(1_795_737_600_000));
        for ms in [0, 951_782_400_000, 1_795_737_600_000, 4_107_542_400_000] {
            assert_eq!(day_start_ms(&date_of(ms)), Some(ms));
        }
        assert_eq!(date_of(1_795_737_600_000 + DAY_MS - 1), "2026-11-27");
        assert_eq!(day_start_ms("2026-13-01"), None);
        assert_eq!(day_start_ms("yesterday"), None);
    }

    /// Sold out but listed is decided from the facts alone: a bundle by its components, a
    /// SKU only after the grace, a SKU with no stock row as 0 available.
    #[test]
    fn sold_out_but_listed_from_facts() {
        let catalog: stocksync_common::catalog::CatalogConfig = toml::from_str(
            r#"
            skus = [{ id = "MUG" }, { id = "LID" }, { id = "NEW" }]
            [[bundles]]
            sku = "KIT"
            components = [{ sku = "MUG", quantity = 2 }, { sku = "LID", quantity = 1 }]
            "#,
        )
        .unwrap();
        let catalog = Catalog::new(catalog).unwrap();
        let line = |sku: &str| ("web".to_string(), sku.to_string(), sku.to_lowercase(), 3);
        let listed = vec![line("KIT"), line("LID"), line("MUG"), line("NEW")];
        assert_eq!(stock_needed(&catalog, &listed), ["LID", "MUG", "NEW"]);
        let facts = Facts {
            listed,
            // 1 mug (short of a kit), no lid changed just now, NEW never stocked.
            stock: [
                ("MUG".to_string(), (1, 1_000)),
                ("LID".to_string(), (0, 9_500)),
            ]
            .into(),
            ..Facts::default()
        };
        let skus = |now| -> Vec<String> {
            sold_out_listed(&facts, &catalog, now, 1_000)
                .into_iter()
                .map(|l| l.sku)
                .collect()
        };
        // Within the grace of the lid's last change: only what never had stock.
        assert_eq!(skus(10_000), ["NEW"]);
        assert_eq!(skus(11_000), ["KIT", "LID", "NEW"]);
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_cell("plain"), "plain");
    }
}
