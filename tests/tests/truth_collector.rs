//! Truth holes found by a new user, reproduced with their original input through a real
//! broker, real agents and the real collector, each asserting the corrected rule of
//! `docs/MOVEMENTS.md`: a warehouse-level count counts the warehouse total, inspections and write-offs never take more than there is without an
//! exception record, a fully shipped reservation is fulfilled, and holds are explained by
//! the history and shown under per-warehouse totals. The cases run on both stores
//! (`<case>::sqlite`, `<case>::postgres`: two workers on one database). Kits built in one
//! warehouse, and voids, are in `views_e2e`, on both stores.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
use stocksync_common::model::*;
use stocksync_common::wire::{self, AckOutcome, Batch};
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
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
    collectors: Collectors,
    agents: Vec<Agent>,
    c: String,
    ams: String,
    ber: String,
}

impl Site {
    /// `None` when the backend is PostgreSQL and it is not installed.
    async fn start(backend: Backend, label: &str) -> Option<Site> {
        let dir = TempDir::new(label);
        let broker = Broker::start(&dir);
        let collectors = CollectorSpec::new(backend, &dir, broker.port)
            .extra(EXTRA)
            .warehouses(&["ams", "ber"])
            .start()
            .await?;
        let c = collectors.url().to_string();
        let mut agents = Vec::new();
        let mut urls = Vec::new();
        for (id, warehouse) in [("ams-1", "ams"), ("ber-1", "ber")] {
            // One HTTP listener speaks for the WMS and the ERP in these tests.
            let config = agent_toml(&dir, id, warehouse, broker.port, 0, "")
                .replace("[http]\n", "[http]\nsources = [\"wms\", \"erp\"]\n");
            let agent = Agent::start(toml_config(&config))
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
        Some(Site {
            _dir: dir,
            _broker: broker,
            collectors,
            agents,
            c,
            ber: urls.pop().unwrap(),
            ams: urls.pop().unwrap(),
        })
    }

    async fn stop(mut self) {
        for agent in self.agents.drain(..) {
            agent.stop().await.expect("agent stops");
        }
        self.collectors.stop().await;
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

on_both_backends!(a_warehouse_level_count_counts_the_total_not_on_top_of_the_bins);
async fn a_warehouse_level_count_counts_the_total_not_on_top_of_the_bins(backend: Backend) {
    let Some(site) = Site::start(backend, "wh-count").await else {
        return;
    };
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

on_both_backends!(inspections_and_write_offs_never_take_more_than_there_is);
async fn inspections_and_write_offs_never_take_more_than_there_is(backend: Backend) {
    let Some(site) = Site::start(backend, "shortfall").await else {
        return;
    };
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

on_both_backends!(reservations_are_explained_by_history_and_end_fulfilled);
async fn reservations_are_explained_by_history_and_end_fulfilled(backend: Backend) {
    let Some(site) = Site::start(backend, "holds").await else {
        return;
    };
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

fn movement(
    seq: u64,
    sku: &str,
    bin: &str,
    kind: MovementKind,
    quantity: u64,
    unix_ms: i64,
) -> Movement {
    Movement {
        seq,
        sku: Sku(sku.into()),
        location: Location {
            warehouse: "ams".into(),
            bin: Some(bin.into()),
        },
        source: "scanner".into(),
        kind,
        quantity,
        unit: "each".into(),
        unit_quantity: quantity,
        occurred_at: OccurredAt {
            unix_ms,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Default::default(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Rejects at the collector whose field is `field`.
async fn rejects_on(c: &str, field: &str) -> Vec<Value> {
    get(&format!("{c}/v1/rejects"))
        .await
        .body
        .as_array()
        .map(|a| a.iter().filter(|r| r["field"] == field).cloned().collect())
        .unwrap_or_default()
}

on_both_backends!(a_future_dated_movement_is_refused_by_the_collector_and_freezes_nothing);
async fn a_future_dated_movement_is_refused_by_the_collector_and_freezes_nothing(backend: Backend) {
    let Some(site) = Site::start(backend, "skew").await else {
        return;
    };
    let c = &site.c;
    // An agent with a wrong clock (or one that does not check) forwards a count dated
    // 2030-01-01 in the middle of a batch; the wire path is the only one the collector sees.
    let mut probe = MqttProbe::connect(site._broker.port, "skewed-agent").await;
    probe.subscribe("stocksync/v1/ams/acks/scan-9").await;
    let now = now_ms();
    let batch = Batch {
        agent_id: "scan-9".into(),
        journal_id: 1,
        sent_at_ms: None,
        warehouse: "ams".into(),
        movements: vec![
            movement(
                1,
                "MUG-001",
                "A-01",
                MovementKind::Receipt,
                10,
                now - 60_000,
            ),
            movement(
                2,
                "MUG-001",
                "A-01",
                MovementKind::Count,
                50,
                1_893_456_000_000,
            ),
            movement(
                3,
                "MUG-001",
                "A-01",
                MovementKind::Shipment,
                2,
                now - 30_000,
            ),
        ],
    };
    probe
        .publish("stocksync/v1/ams/movements", wire::encode_batch(&batch))
        .await;
    let ack = wire::decode_ack(&probe.next(WAIT).await.payload).expect("an ack");
    assert_eq!(
        (ack.first_seq, ack.last_seq, ack.outcome),
        (
            1,
            3,
            AckOutcome::Applied {
                applied: 2,
                duplicates: 0
            }
        ),
        "the batch is acknowledged; the refused movement is not applied"
    );
    wait_total(c, "MUG-001", "ams", "on_hand", 8).await;
    let refused = rejects_on(c, "$.occurred_at").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(
        (
            refused[0]["agent_id"].clone(),
            refused[0]["first_seq"].clone()
        ),
        (json!("scan-9"), json!(2))
    );
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("2030-01-01"),
        "{refused:?}"
    );
    // Later movements still count: the bin is not frozen until 2030.
    post_ok(&site.ams, json!({"sku": "MUG-001", "kind": "shipment", "quantity": 3, "bin": "A-01", "order": "SO-1"})).await;
    wait_total(c, "MUG-001", "ams", "on_hand", 5).await;
    site.stop().await;
}

on_both_backends!(unknown_skus_stay_out_of_the_ledger_until_retried_once);
async fn unknown_skus_stay_out_of_the_ledger_until_retried_once(backend: Backend) {
    let dir = TempDir::new("unknown-sku");
    let broker = Broker::start(&dir);
    // The original input: the agent journals before it ever had a catalog, so it accepts
    // any SKU, among them one the collector does not know.
    // (Published before the collector ever subscribed, the batch is resent on the ack timeout.)
    let text = agent_toml(
        &dir,
        "ams-1",
        "ams",
        broker.port,
        0,
        "[forward]\nack_timeout_ms = 300\n",
    );
    let agent = Agent::start(toml_config(&text))
        .await
        .expect("agent starts");
    let a = format!("http://{}", agent.http_addr);
    post_ok(
        &a,
        json!([
            {"sku": "MUG-001", "kind": "receipt", "quantity": 4, "bin": "A-01"},
            {"sku": "GHOST-9", "kind": "receipt", "quantity": 7, "bin": "A-01"},
            {"sku": "TEE-002", "kind": "receipt", "quantity": 2, "bin": "A-01"}
        ]),
    )
    .await;
    let Some(mut collectors) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(EXTRA)
        .warehouses(&["ams"])
        .start()
        .await
    else {
        return;
    };
    let c = collectors.url().to_string();
    wait_sellable(&c, "TEE-002", 2).await;
    wait_sellable(&c, "MUG-001", 4).await;
    let refused = rejects_on(&c, "$.sku").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(refused[0]["reason"].as_str().unwrap().contains("GHOST-9"));
    assert_eq!(
        get(&format!("{c}/v1/stock/GHOST-9")).await.status,
        404,
        "never reached stock"
    );
    assert_eq!(
        sellable(&c, "GHOST-9").await,
        None,
        "never reached a channel"
    );
    wait_for("the agent's backlog is acknowledged", WAIT, || async {
        get(&format!("{a}/v1/status")).await.body["backlog"] == 0
    })
    .await;
    let id = refused[0]["id"].as_i64().unwrap();
    let retry = format!("{c}/v1/rejects/{id}/retry");
    let still = post(&retry, "", &[]).await;
    assert_eq!(still.status, 422, "{:?}", still.body);

    // The catalog learns the SKU; after a restart the reject is retried, exactly once.
    collectors
        .restart_with("[[catalog.skus]]\nid = \"GHOST-9\"\n")
        .await;
    let c = collectors.url().to_string();
    let retry = format!("{c}/v1/rejects/{id}/retry");
    let first = post(&retry, "", &[]).await;
    assert_eq!(
        (first.status, first.body["outcome"].clone()),
        (200, json!("applied")),
        "{:?}",
        first.body
    );
    let second = post(&retry, "", &[]).await;
    assert_eq!(second.body["outcome"], "already_applied");
    let ghost = get(&format!("{c}/v1/stock/GHOST-9")).await.body;
    assert_eq!(ghost["on_hand"], 7, "{ghost}");
    agent.stop().await.expect("agent stops");
    collectors.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_collector_or_a_rebuild_fails_fast_and_disturbs_nothing() {
    let dir = TempDir::new("second");
    let broker = Broker::start(&dir);
    let text = collector_toml(&dir, broker.port, 0, EXTRA);
    std::fs::write(dir.join("collector.toml"), &text).unwrap();
    let running = Collector::start(toml_config(&text))
        .await
        .expect("collector starts");
    let c = format!("http://{}", running.http_addr);
    let agent = Agent::start(agent_config(&dir, "ams-1", "ams", broker.port, 0))
        .await
        .expect("agent starts");
    let a = format!("http://{}", agent.http_addr);
    post_ok(
        &a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 3, "bin": "A-01"}),
    )
    .await;
    wait_total(&c, "TEE-002", "ams", "on_hand", 3).await;
    assert_eq!(metric(&c, "stocksync_broker_connects_total").await, 1);

    // The same ledger again: refused at once, naming the ledger and its lock.
    let err = Collector::start(toml_config(&text))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("ledger.db") && err.contains("lock"), "{err}");
    // The same HTTP port with another ledger: refused naming the port; no ledger written.
    let port = running.http_addr.port();
    let other = text.replace("ledger.db", "other-ledger.db").replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let err = Collector::start(toml_config(&other))
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains(&port.to_string()), "{err}");
    assert!(!dir.join("other-ledger.db").exists(), "nothing written");
    // `rebuild` refuses while the collector runs.
    let config = dir.join("collector.toml");
    let rebuild = std::process::Command::new(bin("stocksync-collector"))
        .args(["--config", config.to_str().unwrap(), "rebuild"])
        .output()
        .expect("rebuild runs");
    let stderr = String::from_utf8_lossy(&rebuild.stderr);
    assert!(
        !rebuild.status.success() && stderr.contains("in use"),
        "{stderr}"
    );

    // The running collector never lost its broker session and still counts.
    post_ok(
        &a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 2, "bin": "A-01"}),
    )
    .await;
    wait_total(&c, "TEE-002", "ams", "on_hand", 5).await;
    assert_eq!(metric(&c, "stocksync_broker_connects_total").await, 1);
    agent.stop().await.expect("agent stops");
    running.stop().await.expect("collector stops");
    let rebuild = std::process::Command::new(bin("stocksync-collector"))
        .args(["--config", config.to_str().unwrap(), "rebuild"])
        .output()
        .expect("rebuild runs");
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
}

on_both_backends!(a_channel_naming_an_unknown_warehouse_is_refused_at_start);
async fn a_channel_naming_an_unknown_warehouse_is_refused_at_start(backend: Backend) {
    let dir = TempDir::new("channel-warehouse");
    let broker = Broker::start(&dir);
    let extra = "[[locations]]\nwarehouse = \"ams\"\n[[channels.channel]]\nname = \"typo\"\nlocations = [\"amss\"]\n";
    let Some(err) = CollectorSpec::new(backend, &dir, broker.port)
        .extra(extra)
        .refused()
        .await
    else {
        return;
    };
    assert!(err.contains("typo") && err.contains("amss"), "{err}");
}

on_both_backends!(filters_unknown_skus_and_warehouses_are_answered_not_ignored);
async fn filters_unknown_skus_and_warehouses_are_answered_not_ignored(backend: Backend) {
    let Some(site) = Site::start(backend, "smalls").await else {
        return;
    };
    let c = &site.c;
    // Drift in both warehouses.
    post_ok(
        &site.ams,
        json!({"sku": "TEE-002", "kind": "count", "quantity": 4, "bin": "A-01"}),
    )
    .await;
    post_ok(
        &site.ber,
        json!({"sku": "TEE-002", "kind": "count", "quantity": 6, "bin": "B-01"}),
    )
    .await;
    wait_for("drift in both warehouses", WAIT, || async {
        get(&format!("{c}/v1/drift"))
            .await
            .body
            .as_array()
            .is_some_and(|a| a.len() == 2)
    })
    .await;
    // The original input: `/v1/drift?warehouse=ber` returned ams rows too.
    let ber = get(&format!("{c}/v1/drift?warehouse=ber")).await;
    assert_eq!(ber.status, 200);
    let warehouses: Vec<&str> = ber
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["warehouse"].as_str().unwrap())
        .collect();
    assert_eq!(warehouses, ["ber"]);
    // A filter a list does not support, or a parameter nobody knows: 400 naming it.
    let unsupported = get(&format!("{c}/v1/discrepancies?warehouse=ams")).await;
    assert_eq!(
        (unsupported.status, unsupported.body["field"].clone()),
        (400, json!("warehouse")),
        "{:?}",
        unsupported.body
    );
    let unknown = get(&format!("{c}/v1/drift?wharehouse=ber")).await;
    assert_eq!(
        (unknown.status, unknown.body["field"].clone()),
        (400, json!("wharehouse")),
        "{:?}",
        unknown.body
    );
    assert_eq!(
        get(&format!("{c}/v1/stock?location=ams&bin=A-01"))
            .await
            .status,
        400
    );

    // An unknown SKU is 404 naming it, not 200 with zeros.
    let nope = get(&format!("{c}/v1/stock/NOPE-1")).await;
    assert_eq!(nope.status, 404);
    assert!(
        nope.body["detail"].as_str().unwrap().contains("NOPE-1"),
        "{:?}",
        nope.body
    );
    assert_eq!(get(&format!("{c}/v1/stock/TEE-002")).await.status, 200);

    // Reserving an unknown SKU or warehouse says so instead of "insufficient stock".
    let sku = reserve(
        c,
        json!({"id": "r1", "order": "SO-1", "sku": "NOPE-1", "warehouse": "ams", "quantity": 1}),
    )
    .await;
    assert_eq!(
        (sku.status, sku.body["field"].clone()),
        (422, json!("$.sku")),
        "{:?}",
        sku.body
    );
    let wh = reserve(
        c,
        json!({"id": "r2", "order": "SO-1", "sku": "TEE-002", "warehouse": "xyz", "quantity": 1}),
    )
    .await;
    assert_eq!(
        (wh.status, wh.body["field"].clone()),
        (422, json!("$.warehouse")),
        "{:?}",
        wh.body
    );
    let short = reserve(
        c,
        json!({"id": "r3", "order": "SO-1", "sku": "TEE-002", "warehouse": "ams", "quantity": 5}),
    )
    .await;
    assert_eq!(
        (short.status, short.body["error"].clone()),
        (409, json!("insufficient stock"))
    );
    site.stop().await;
}
