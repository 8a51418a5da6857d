//! Truth holes found by a new user, reproduced with their original input through a real
//! broker, real agents and the real collector, each asserting the corrected rule of
//! `docs/MOVEMENTS.md`: kits are built in one warehouse, a warehouse-level count counts the
//! warehouse total, inspections and write-offs never take more than there is without an
//! exception record, a fully shipped reservation is fulfilled, and holds are explained by
//! the history and shown under per-warehouse totals.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
use support::*;

const WAIT: Duration = Duration::from_secs(10);

/// The catalog of the issue: MUG-001 (case of 12), TEE-002, GIFTSET-01 = 2 x MUG + 1 x TEE.
const EXTRA: &str = r#"
[catalog]
[[catalog.skus]]
id = "MUG-001"
packs = { case = 12 }
[[catalog.skus]]
id = "TEE-002"
[[catalog.bundles]]
sku = "GIFTSET-01"
components = [{ sku = "MUG-001", quantity = 2 }, { sku = "TEE-002", quantity = 1 }]
[[channels.channel]]
name = "all"
locations = ["*"]
bundles = ["GIFTSET-01"]
"#;

/// A broker, a collector and agents for `ams` and `ber`, all with the catalog.
struct Site {
    _dir: TempDir,
    _broker: Broker,
    collector: Option<Collector>,
    agents: Vec<Agent>,
    c: String,
    ams: String,
    ber: String,
}

impl Site {
    async fn start(label: &str, extra: &str) -> Site {
        let dir = TempDir::new(label);
        let broker = Broker::start(&dir);
        let text = collector_toml(&dir, broker.port, 0, &format!("{EXTRA}{extra}"));
        let collector = Collector::start(toml_config(&text))
            .await
            .expect("collector starts");
        let c = format!("http://{}", collector.http_addr);
        let mut agents = Vec::new();
        let mut urls = Vec::new();
        for (id, warehouse) in [("ams-1", "ams"), ("ber-1", "ber")] {
            let agent = Agent::start(agent_config(&dir, id, warehouse, broker.port, 0))
                .await
                .expect("agent starts");
            let url = format!("http://{}", agent.http_addr);
            wait_for("agent has the catalog", WAIT, || async {
                get(&format!("{url}/v1/status")).await.body["catalog_skus"] == 2
            })
            .await;
            agents.push(agent);
            urls.push(url);
        }
        Site {
            _dir: dir,
            _broker: broker,
            collector: Some(collector),
            agents,
            c,
            ber: urls.pop().unwrap(),
            ams: urls.pop().unwrap(),
        }
    }

    async fn stop(mut self) {
        for agent in self.agents.drain(..) {
            agent.stop().await.expect("agent stops");
        }
        if let Some(c) = self.collector.take() {
            c.stop().await.expect("collector stops");
        }
    }
}

async fn post_ok(agent: &str, body: Value) {
    let r = post(&format!("{agent}/v1/movements"), &body.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{body} -> {:?}", r.body);
}

/// The `all` channel's published number for `sku`.
async fn sellable(c: &str, sku: &str) -> Option<u64> {
    let feed = get(&format!("{c}/v1/channels/all/sellable")).await.body;
    feed["items"].as_array()?.iter().find(|i| i["sku"] == sku)?["sellable"].as_u64()
}

async fn wait_sellable(c: &str, sku: &str, want: u64) {
    let what = format!("channel `all` publishes {want} of {sku}");
    wait_for(&what, WAIT, || async {
        sellable(c, sku).await == Some(want)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kit_is_built_in_one_warehouse() {
    let site = Site::start("kits", "").await;
    let c = &site.c;
    // The original input: mugs only in ams, tees only in ber. Pooled they make 10 gift sets;
    // no warehouse can build one.
    post_ok(
        &site.ams,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 20, "bin": "A-01"}),
    )
    .await;
    post_ok(
        &site.ber,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "B-01"}),
    )
    .await;
    wait_sellable(c, "TEE-002", 10).await;
    wait_sellable(c, "MUG-001", 20).await;
    let bundle = get(&format!("{c}/v1/bundles/GIFTSET-01")).await.body;
    assert_eq!(bundle["buildable"], 0, "{bundle}");
    assert_eq!(
        sellable(c, "GIFTSET-01").await,
        Some(0),
        "the channel must not list gift sets no warehouse can build"
    );

    // Three tees arrive in ams: ams can build 3 (20 mugs -> 10, 3 tees -> 3); ber still 0.
    post_ok(
        &site.ams,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 3, "bin": "A-02"}),
    )
    .await;
    wait_sellable(c, "GIFTSET-01", 3).await;
    let bundle = get(&format!("{c}/v1/bundles/GIFTSET-01")).await.body;
    assert_eq!(bundle["buildable"], 3, "{bundle}");
    let per: Vec<(String, u64)> = bundle["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["warehouse"].as_str().unwrap().to_string(),
                w["buildable"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(per, [("ams".to_string(), 3), ("ber".to_string(), 0)]);

    // Two more cases of mugs in ber (24): ber builds 10 with its tees; 13 in total.
    post_ok(
        &site.ber,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 2, "unit": "case", "bin": "B-02"}),
    )
    .await;
    wait_sellable(c, "GIFTSET-01", 13).await;
    assert_eq!(
        get(&format!("{c}/v1/bundles/GIFTSET-01")).await.body["buildable"],
        13
    );
    site.stop().await;
}
/// The total of `field` over every row of `sku` at `warehouse`.
async fn warehouse_total(c: &str, sku: &str, warehouse: &str, field: &str) -> i64 {
    let stock = get(&format!("{c}/v1/stock/{sku}")).await.body;
    stock["locations"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| r["warehouse"] == warehouse)
                .map(|r| r[field].as_i64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

async fn wait_total(c: &str, sku: &str, warehouse: &str, field: &str, want: i64) {
    let what = format!("{sku} at {warehouse}: total {field} = {want}");
    wait_for(&what, WAIT, || async {
        warehouse_total(c, sku, warehouse, field).await == want
    })
    .await;
}

fn drift_of(list: &Value, sku: &str, warehouse: &str) -> Vec<Value> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|d| d["sku"] == sku && d["warehouse"] == warehouse)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warehouse_level_count_counts_the_total_not_on_top_of_the_bins() {
    let site = Site::start("wh-count", "").await;
    let (c, a) = (&site.c, &site.ams);
    post_ok(a, json!([
        {"sku": "TEE-002", "kind": "receipt", "quantity": 30, "bin": "A-01", "occurred_at": "2026-11-25T08:00:00Z"},
        {"sku": "TEE-002", "kind": "receipt", "quantity": 12, "bin": "A-02", "occurred_at": "2026-11-25T08:00:00Z"}
    ])).await;
    wait_total(c, "TEE-002", "ams", "on_hand", 42).await;
    // The original input: an ERP counts the warehouse total, no bin, while the bins hold 42.
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "count", "quantity": 42, "source": "erp",
                      "occurred_at": "2026-11-25T09:00:00Z"}),
    )
    .await;
    wait_for("the count is in the history", WAIT, || async {
        let h = get(&format!("{c}/v1/stock/TEE-002/history?location=ams"))
            .await
            .body;
        h["movements"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["kind"] == "count"))
    })
    .await;
    assert_eq!(
        warehouse_total(c, "TEE-002", "ams", "on_hand").await,
        42,
        "not 84"
    );
    wait_sellable(c, "TEE-002", 42).await;
    assert!(drift_of(&get(&format!("{c}/v1/drift")).await.body, "TEE-002", "ams").is_empty());

    // A total of 40 is drift of -2 against the 42 the bins hold; the total becomes 40, the
    // bins keep their numbers and the bin-less row carries the difference.
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "count", "quantity": 40, "source": "erp",
                      "occurred_at": "2026-11-25T10:00:00Z"}),
    )
    .await;
    wait_total(c, "TEE-002", "ams", "on_hand", 40).await;
    wait_sellable(c, "TEE-002", 40).await;
    let drift = drift_of(&get(&format!("{c}/v1/drift")).await.body, "TEE-002", "ams");
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (drift[0]["expected"].clone(), drift[0]["counted"].clone()),
        (json!(42), json!(40))
    );

    // A shipment from A-01 that happened before that count arrives late: it explains one of
    // the two missing, the count still sets the total, later bin movements add on top.
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "shipment", "quantity": 1, "bin": "A-01", "order": "SO-1",
                      "occurred_at": "2026-11-25T09:30:00Z"}),
    )
    .await;
    wait_for("drift revised by the late shipment", WAIT, || async {
        let d = drift_of(&get(&format!("{c}/v1/drift")).await.body, "TEE-002", "ams");
        d.len() == 1 && d[0]["expected"] == 41
    })
    .await;
    assert_eq!(warehouse_total(c, "TEE-002", "ams", "on_hand").await, 40);
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 5, "bin": "A-02",
                      "occurred_at": "2026-11-25T11:00:00Z"}),
    )
    .await;
    wait_total(c, "TEE-002", "ams", "on_hand", 45).await;
    let history = get(&format!("{c}/v1/stock/TEE-002/history?location=ams"))
        .await
        .body;
    assert_eq!(history["explained"], true, "{history}");
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspections_and_write_offs_never_take_more_than_there_is() {
    let site = Site::start("shortfall", "").await;
    let (c, a) = (&site.c, &site.ams);
    let row = |field: &'static str| async move {
        get(&format!("{c}/v1/stock/MUG-001")).await.body["locations"]
            .as_array()
            .and_then(|rows| {
                rows.iter()
                    .find(|r| r["bin"] == "R-1")
                    .map(|r| r[field].clone())
            })
            .unwrap_or(Value::Null)
    };
    post_ok(
        a,
        json!({"sku": "MUG-001", "kind": "return", "quantity": 2, "bin": "R-1", "order": "SO-7",
                      "occurred_at": "2026-11-25T08:00:00Z"}),
    )
    .await;
    wait_total(c, "MUG-001", "ams", "quality_control", 2).await;
    // The original input: 5 inspected while quality control holds 2; 4 written off while
    // nothing is damaged.
    post_ok(a, json!([
        {"sku": "MUG-001", "kind": "inspection", "outcome": "available", "quantity": 5, "bin": "R-1",
         "occurred_at": "2026-11-25T09:00:00Z"},
        {"sku": "MUG-001", "kind": "write_off", "quantity": 4, "bin": "R-1", "occurred_at": "2026-11-25T09:10:00Z"}
    ])).await;
    let shortfalls = format!("{c}/v1/shortfalls");
    wait_for("two shortfalls listed", WAIT, || async {
        get(&shortfalls)
            .await
            .body
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    assert_eq!(row("quality_control").await, 0, "never negative");
    assert_eq!(row("damaged").await, 0, "never negative");
    assert_eq!(row("available").await, 2);
    let list = get(&shortfalls).await.body;
    let inspection = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "inspection")
        .unwrap();
    assert_eq!(
        (
            inspection["state"].clone(),
            inspection["requested"].clone(),
            inspection["held"].clone(),
            inspection["excess"].clone()
        ),
        (json!("quality_control"), json!(5), json!(2), json!(3)),
        "{list}"
    );
    let write_off = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "write_off")
        .unwrap();
    assert_eq!(
        (write_off["state"].clone(), write_off["excess"].clone()),
        (json!("damaged"), json!(4))
    );

    // The missing returns arrive late, ordered before the inspection: the replay takes all
    // 5, the inspection's shortfall is gone; the write-off's stays.
    post_ok(
        a,
        json!({"sku": "MUG-001", "kind": "return", "quantity": 3, "bin": "R-1", "order": "SO-8",
                      "occurred_at": "2026-11-25T08:30:00Z"}),
    )
    .await;
    wait_for("inspection shortfall cleared", WAIT, || async {
        get(&shortfalls)
            .await
            .body
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["kind"] == "write_off")
    })
    .await;
    assert_eq!(row("available").await, 5);
    assert_eq!(row("quality_control").await, 0);
    let history = get(&format!("{c}/v1/stock/MUG-001/history?location=ams/R-1"))
        .await
        .body;
    assert_eq!(history["explained"], true, "{history}");
    site.stop().await;
}

async fn reserve(c: &str, body: Value) -> Reply {
    post(&format!("{c}/v1/reservations"), &body.to_string(), &[]).await
}

fn kinds(history: &Value) -> Vec<String> {
    history["movements"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["kind"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_are_explained_by_history_and_end_fulfilled() {
    let site = Site::start("holds", "").await;
    let (c, a) = (&site.c, &site.ams);
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "A-01"}),
    )
    .await;
    wait_total(c, "TEE-002", "ams", "available", 10).await;
    let r = reserve(
        c,
        json!({"id": "r1", "order": "SO-9", "sku": "TEE-002", "warehouse": "ams", "quantity": 4}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = reserve(
        c,
        json!({"id": "r2", "order": "SO-10", "sku": "TEE-002", "warehouse": "ams", "quantity": 2}),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        get(&format!("{c}/v1/reservations/r2")).await.body["status"],
        "active"
    );
    let released = tokio::task::spawn_blocking({
        let url = format!("{c}/v1/reservations/r2");
        move || {
            ureq::delete(&url)
                .call()
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    })
    .await
    .unwrap();
    assert_eq!(released, 200);

    // The original input: a SKU with a hold; history of the warehouse explains `reserved`.
    let history = get(&format!("{c}/v1/stock/TEE-002/history?location=ams"))
        .await
        .body;
    assert_eq!(history["explained"], true, "{history}");
    assert_eq!(
        kinds(&history),
        [
            "receipt",
            "reservation_created",
            "reservation_created",
            "reservation_released"
        ]
    );
    assert_eq!(history["current"]["reserved"], 4);
    assert_eq!(history["current"]["available"], 6);

    // Per-warehouse totals a person reads, bins beneath; no bin shows negative available.
    let stock = get(&format!("{c}/v1/stock/TEE-002")).await.body;
    let ams = &stock["warehouses"][0];
    assert_eq!(ams["warehouse"], "ams", "{stock}");
    assert_eq!(
        (
            ams["on_hand"].clone(),
            ams["available"].clone(),
            ams["reserved"].clone()
        ),
        (json!(10), json!(6), json!(4))
    );
    assert_eq!(
        ams["bins"],
        json!([{"bin": "A-01", "on_hand": 10, "available": 10, "reserved": 0, "damaged": 0, "quality_control": 0}])
    );

    // Shipped in two parts: the reservation is consumed, then fulfilled.
    post_ok(a, json!({"sku": "TEE-002", "kind": "shipment", "quantity": 3, "bin": "A-01", "order": "SO-9"})).await;
    wait_total(c, "TEE-002", "ams", "reserved", 1).await;
    assert_eq!(
        get(&format!("{c}/v1/reservations/r1")).await.body["status"],
        "active"
    );
    post_ok(a, json!({"sku": "TEE-002", "kind": "shipment", "quantity": 1, "bin": "A-01", "order": "SO-9"})).await;
    wait_total(c, "TEE-002", "ams", "reserved", 0).await;
    let r1 = get(&format!("{c}/v1/reservations/r1")).await.body;
    assert_eq!(
        (r1["status"].clone(), r1["open"].clone()),
        (json!("fulfilled"), json!(0)),
        "{r1}"
    );
    assert!(r1["closed_at_ms"].is_i64(), "{r1}");
    let history = get(&format!("{c}/v1/stock/TEE-002/history?location=ams"))
        .await
        .body;
    assert_eq!(history["explained"], true, "{history}");
    assert!(
        kinds(&history).contains(&"reservation_consumed".to_string()),
        "{history}"
    );
    assert_eq!(history["current"]["on_hand"], 6);
    site.stop().await;
}
