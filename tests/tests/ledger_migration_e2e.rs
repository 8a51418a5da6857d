//! A ledger written by the previous release opens with today's collector, migrates, and
//! serves what it held unchanged: stock levels, an order with its holds, a reservation, a
//! reject and a drift record. Then it takes new movements on top, which consume the old
//! order's holds.
//!
//! The files are `tests/fixtures/ledger-v1.db.gz`, made by the release before versioned
//! migrations, and `ledger-pre-rowid.db.gz`, made by an older one whose orders and
//! reservations were `WITHOUT ROWID` tables (see `tests/fixtures/README.md`). The collector is the real binary, over real
//! HTTP, against a real broker.

mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// The config the fixture was made with (ports aside).
const EXTRA: &str = r#"
[[locations]]
warehouse = "ams"
authority = "wms"
other_sources = "reject"
[[locations]]
warehouse = "rtm"
[[catalog.skus]]
id = "TEE"
[[catalog.skus]]
id = "MUG"
[[channels.channel]]
name = "shop"
locations = ["*"]
"#;

/// Unpacks `tests/fixtures/<name>` into `dir` as `ledger.db`.
fn unpack_fixture(dir: &TempDir, name: &str) {
    let fixture = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("gzip")
        .args(["-dc", &fixture])
        .output()
        .expect("gzip runs");
    assert!(out.status.success(), "gzip -dc {fixture} failed");
    std::fs::write(dir.join("ledger.db"), out.stdout).expect("write ledger");
}

fn user_version(dir: &TempDir) -> u32 {
    let conn = rusqlite::Connection::open(dir.join("ledger.db")).expect("open ledger");
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

/// Every table (its columns in order, and whether it is `WITHOUT ROWID`) and index (its SQL)
/// of a ledger file, but the channel store's (a file of its own today) and SQLite's own.
/// Columns, not `CREATE` texts: a column an older release added with `ALTER TABLE` is the
/// same column, at the same place, as one a newer release creates with its table.
fn layout(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open ledger");
    let mut stmt = conn
        .prepare(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL
               AND tbl_name NOT LIKE 'channel%' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .unwrap();
    let objects: Vec<(String, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut columns = conn
        .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")
        .unwrap();
    objects
        .into_iter()
        .map(|(kind, name, sql)| {
            if kind != "table" {
                return sql;
            }
            let cols: Vec<String> = columns
                .query_map([&name], |r| {
                    Ok(format!(
                        "{} {} notnull={} default={:?} pk={}",
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, i64>(4)?
                    ))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let rowid = !sql.to_ascii_uppercase().contains("WITHOUT ROWID");
            format!("table {name} rowid={rowid}: {}", cols.join(", "))
        })
        .collect()
}

/// (available, reserved, damaged, in_transit, on_hand) of `sku` at `warehouse` as
/// `GET /v1/stock/<sku>` totals it.
fn at(stock: &Value, warehouse: &str) -> (i64, i64, i64, i64, i64) {
    let rows = stock["warehouses"].as_array().expect("warehouses");
    let w = rows
        .iter()
        .find(|w| w["warehouse"] == warehouse)
        .unwrap_or_else(|| panic!("no {warehouse} in {stock}"));
    let n = |f: &str| w[f].as_i64().unwrap_or(0);
    (
        n("available"),
        n("reserved"),
        n("damaged"),
        n("in_transit"),
        n("on_hand"),
    )
}

async fn stock(c: &str, sku: &str) -> Value {
    get(&format!("{c}/v1/stock/{sku}")).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_the_previous_release_opens_migrates_and_serves_what_it_held() {
    opens_migrates_and_serves("ledger-v1.db.gz").await;
}

/// A release whose orders and reservations were still `WITHOUT ROWID` tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_a_release_before_rowid_orders_opens_migrates_and_serves_what_it_held() {
    opens_migrates_and_serves("ledger-pre-rowid.db.gz").await;
}

async fn opens_migrates_and_serves(fixture: &str) {
    let dir = TempDir::new("ledger-migration");
    unpack_fixture(&dir, fixture);
    assert_eq!(user_version(&dir), 0, "the fixture predates versioning");
    let broker = Broker::start(&dir);
    let port = free_port();
    let config = collector_toml(&dir, broker.port, port, EXTRA);
    let collector = Service::start(&dir, "stocksync-collector", "collector", &config, port);
    let c = collector.url.clone();
    assert_eq!(
        user_version(&dir),
        stocksync_collector::ledger::SCHEMA_VERSION
    );
    // The file has version 1's layout: the same as a ledger created today.
    let fresh = dir.join("fresh.db");
    let metrics = std::sync::Arc::new(stocksync_collector::metrics::Metrics::default());
    drop(stocksync_collector::ledger::Ledger::open(&fresh, metrics).expect("fresh ledger"));
    assert_eq!(layout(&dir.join("ledger.db")), layout(&fresh));

    // Stock levels, holds on the warehouse-level rows included.
    let tee = stock(&c, "TEE").await;
    assert_eq!(tee["on_hand"], 22, "{tee}");
    assert_eq!(at(&tee, "ams"), (11, 4, 2, 0, 17), "{tee}");
    assert_eq!(at(&tee, "rtm"), (5, 0, 0, 3, 5), "{tee}");
    let mug = stock(&c, "MUG").await;
    assert_eq!(at(&mug, "ams"), (4, 3, 0, 0, 7), "{mug}");

    // The order and its holds.
    let order = get(&format!("{c}/v1/orders/SO-1")).await;
    assert_eq!(order.status, 200, "{:?}", order.body);
    assert_eq!(order.body["state"], "reserved");
    let holds: Vec<(String, String, i64)> = order.body["reservations"]
        .as_array()
        .expect("reservations")
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["sku"].as_str().unwrap().to_string(),
                r["open"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        holds,
        [
            ("SO-1#1".to_string(), "MUG".to_string(), 1),
            ("SO-1#2".to_string(), "TEE".to_string(), 4)
        ]
    );

    // The reservation, with who made it.
    let r = get(&format!("{c}/v1/reservations/r-web-1")).await.body;
    assert_eq!(
        (&r["order"], &r["status"], &r["open"], &r["created_by"]),
        (&json!("CART-7"), &json!("active"), &json!(2), &json!("api")),
        "{r}"
    );

    // The reject, and the drift of the count.
    let rejects = get(&format!("{c}/v1/rejects")).await.body;
    let rejects = rejects.as_array().expect("rejects");
    assert_eq!(rejects.len(), 1, "{rejects:?}");
    assert_eq!(
        (
            &rejects[0]["field"],
            &rejects[0]["agent_id"],
            &rejects[0]["first_seq"]
        ),
        (&json!("source"), &json!("ams-1"), &json!(6))
    );
    let drift = get(&format!("{c}/v1/drift")).await.body.to_string();
    assert!(
        drift.contains("\"MUG\"") && drift.contains("\"difference\":-1"),
        "{drift}"
    );

    // New movements count on top, and a shipment of the old order consumes its hold.
    let agent = Agent::start(agent_config(&dir, "ams-2", "ams", broker.port, 0))
        .await
        .expect("agent starts");
    let a = format!("http://{}/v1/movements", agent.http_addr);
    let body = r#"[{"sku":"TEE","kind":"receipt","quantity":5,"bin":"A-01"},
                   {"sku":"TEE","kind":"shipment","quantity":4,"bin":"A-01","order":"SO-1"}]"#;
    assert_eq!(post(&a, body, &[]).await.status, 202);
    wait_for("receipt and shipment counted", WAIT, || async {
        at(&stock(&c, "TEE").await, "ams") == (16, 0, 2, 0, 18)
    })
    .await;
    let order = get(&format!("{c}/v1/orders/SO-1")).await.body;
    assert_eq!(order["reservations"][1]["open"], 0, "{order}");
    agent.stop().await.unwrap();
}

#[test]
fn a_ledger_of_a_newer_release_is_refused_at_start_with_the_reason() {
    let dir = TempDir::new("ledger-too-new");
    unpack_fixture(&dir, "ledger-v1.db.gz");
    let newer = stocksync_collector::ledger::SCHEMA_VERSION + 1;
    rusqlite::Connection::open(dir.join("ledger.db"))
        .and_then(|c| c.pragma_update(None, "user_version", newer))
        .expect("set user_version");
    let port = free_port();
    let config = dir.join("collector.toml");
    std::fs::write(&config, collector_toml(&dir, free_port(), port, EXTRA)).unwrap();
    let mut proc = Proc::spawn(
        &bin("stocksync-collector"),
        &["--config", config.to_str().unwrap()],
        dir.join("collector.log"),
    );
    let mut code = None;
    wait_blocking(WAIT, || {
        code = proc.try_wait();
        code.is_some()
    })
    .unwrap_or_else(|e| panic!("collector kept running: {e}: {}", proc.output()));
    assert_ne!(code, Some(0));
    let output = proc.output();
    assert!(
        output.contains(&format!("layout version {newer}")) && output.contains("newer release"),
        "{output}"
    );
    assert_eq!(user_version(&dir), newer, "the file is left as it was");
}
