//! The operator's views and corrections on both stores, through real HTTP, a real broker,
//! real agents and real collector processes: the bundle component view, voiding a
//! movement (exactly once, whichever worker is asked, however often), and what follows from
//! each for channels.
//!
//! Every case runs twice: on one SQLite collector (`<case>::sqlite`) and on two collector
//! worker processes sharing one real PostgreSQL (`<case>::postgres`, which prints a notice
//! and passes when PostgreSQL is not installed; `support::backend`), with the same requests
//! and the same expected answers.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// MUG-001 (case of 12), TEE-002, GIFTSET-01 = 2 x MUG + 1 x TEE, one channel over all.
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

/// A broker, the collector (or two workers) and agents for `ams` and `ber`.
struct Site {
    /// The collector's URL (on PostgreSQL: the first worker's).
    c: String,
    /// Every collector URL (on PostgreSQL: each worker's).
    urls: Vec<String>,
    ams: String,
    ber: String,
    agents: Vec<Agent>,
    collectors: Collectors,
    broker: Broker,
    _dir: TempDir,
}

impl Site {
    /// `None` when the backend is PostgreSQL and it is not installed (the notice is printed).
    async fn start(backend: Backend, label: &str) -> Option<Site> {
        Site::start_with(backend, label, |_| String::new()).await
    }

    /// With `more(dir)` appended to the collector's config.
    async fn start_with(
        backend: Backend,
        label: &str,
        more: impl Fn(&TempDir) -> String,
    ) -> Option<Site> {
        let dir = TempDir::new(label);
        let broker = Broker::start(&dir);
        let collectors = CollectorSpec::new(backend, &dir, broker.port)
            .extra(&format!("{EXTRA}{}", more(&dir)))
            .warehouses(&["ams", "ber"])
            .start()
            .await?;
        let urls = collectors.urls.clone();
        let mut agents = Vec::new();
        let mut agent_urls = Vec::new();
        for (id, warehouse) in [("ams-1", "ams"), ("ber-1", "ber")] {
            let text = agent_toml(&dir, id, warehouse, broker.port, 0, "");
            let agent = Agent::start(toml_config(&text))
                .await
                .expect("agent starts");
            let url = format!("http://{}", agent.http_addr);
            wait_for("agent has the catalog", WAIT, || async {
                get(&format!("{url}/v1/status")).await.body["catalog_skus"] == 2
            })
            .await;
            agents.push(agent);
            agent_urls.push(url);
        }
        Some(Site {
            c: urls[0].clone(),
            urls,
            ber: agent_urls.pop().unwrap(),
            ams: agent_urls.pop().unwrap(),
            agents,
            collectors,
            broker,
            _dir: dir,
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

/// `(warehouse, buildable)` of a bundle view.
fn per_warehouse(view: &Value) -> Vec<(String, u64)> {
    view["warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let warehouse = w["warehouse"].as_str().unwrap().to_string();
            (warehouse, w["buildable"].as_u64().unwrap())
        })
        .collect()
}

on_both_backends!(a_kit_is_built_in_one_warehouse);
async fn a_kit_is_built_in_one_warehouse(backend: Backend) {
    let Some(site) = Site::start(backend, "kits").await else {
        return;
    };
    let c = &site.c;
    // Mugs only in ams, tees only in ber. Pooled they make 10 gift sets; no warehouse can
    // build one.
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
    for url in &site.urls {
        let bundle = get(&format!("{url}/v1/bundles/GIFTSET-01")).await.body;
        assert_eq!(bundle["buildable"], 3, "{bundle}");
        assert_eq!(
            per_warehouse(&bundle),
            [("ams".to_string(), 3), ("ber".to_string(), 0)]
        );
        let ams = &bundle["warehouses"][0]["components"];
        assert_eq!(
            ams,
            &json!([
                {"sku": "MUG-001", "quantity": 2, "available": 20, "buildable": 10},
                {"sku": "TEE-002", "quantity": 1, "available": 3, "buildable": 3},
            ]),
            "{bundle}"
        );
        // The stock view of the bundle carries the same component view.
        let stock = get(&format!("{url}/v1/stock/GIFTSET-01")).await;
        assert_eq!(stock.status, 200, "{:?}", stock.body);
        assert_eq!(stock.body["bundle"], bundle, "{:?}", stock.body);
        assert_eq!(stock.body["on_hand"], 0, "a bundle has no stock of its own");
    }

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
    // Not a bundle: 404 naming the field, on either store.
    let not = get(&format!("{c}/v1/bundles/MUG-001")).await;
    assert_eq!((not.status, not.body["field"].clone()), (404, json!("sku")));
    site.stop().await;
}

async fn void(c: &str, body: Value) -> Reply {
    post(&format!("{c}/v1/movements/void"), &body.to_string(), &[]).await
}

on_both_backends!(an_operator_voids_a_movement_and_the_projection_replays_without_it);
async fn an_operator_voids_a_movement_and_the_projection_replays_without_it(backend: Backend) {
    let Some(site) = Site::start(backend, "void").await else {
        return;
    };
    let (c, a) = (&site.c, &site.ams);
    post_ok(a, json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "A-01", "occurred_at": "2026-11-25T08:00:00Z"})).await;
    post_ok(a, json!({"sku": "TEE-002", "kind": "count", "quantity": 3, "bin": "A-01", "occurred_at": "2026-11-25T09:00:00Z"})).await;
    wait_total(c, "TEE-002", "ams", "on_hand", 3).await;
    wait_sellable(c, "TEE-002", 3).await;
    let request =
        json!({"agent_id": "ams-1", "seq": 2, "by": "j.doe", "reason": "counted the wrong shelf"});
    let first = void(c, request.clone()).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(
        warehouse_total(c, "TEE-002", "ams", "on_hand").await,
        10,
        "replayed without the count"
    );
    wait_sellable(c, "TEE-002", 10).await;
    assert!(
        get(&format!("{c}/v1/drift"))
            .await
            .body
            .as_array()
            .unwrap()
            .is_empty(),
        "its drift is gone"
    );

    // Idempotent, on any collector: the first void stands; an unknown movement is 404.
    for url in &site.urls {
        let again = void(
            url,
            json!({"agent_id": "ams-1", "seq": 2, "by": "someone else", "reason": "again"}),
        )
        .await;
        assert_eq!(again.status, 200);
        assert_eq!(again.body, first.body);
    }
    let unknown = void(
        c,
        json!({"agent_id": "ams-1", "seq": 99, "by": "j.doe", "reason": "typo"}),
    )
    .await;
    assert_eq!(unknown.status, 404, "{:?}", unknown.body);
    assert_eq!(unknown.body["field"], "$.seq");
    let no_reason = void(
        c,
        json!({"agent_id": "ams-1", "seq": 1, "by": "j.doe", "reason": " "}),
    )
    .await;
    assert_eq!(
        (no_reason.status, no_reason.body["field"].clone()),
        (422, json!("$.reason"))
    );

    // History shows the count, marked voided with who and why, and explains the number.
    let history = get(&format!("{c}/v1/stock/TEE-002/history?location=ams/A-01"))
        .await
        .body;
    assert_eq!(history["explained"], true, "{history}");
    let count = &history["movements"][1];
    assert_eq!(
        (count["kind"].clone(), count["treatment"].clone()),
        (json!("count"), json!("voided")),
        "{history}"
    );
    assert_eq!(
        (count["void"]["by"].clone(), count["void"]["reason"].clone()),
        (json!("j.doe"), json!("counted the wrong shelf"))
    );
    // Later movements go on from the replayed number.
    post_ok(a, json!({"sku": "TEE-002", "kind": "shipment", "quantity": 1, "bin": "A-01", "order": "SO-2", "occurred_at": "2026-11-25T10:00:00Z"})).await;
    wait_total(c, "TEE-002", "ams", "on_hand", 9).await;
    site.stop().await;
}

on_both_backends!(a_transfer_leg_voided_by_concurrent_requests_is_voided_once);
async fn a_transfer_leg_voided_by_concurrent_requests_is_voided_once(backend: Backend) {
    let Some(site) = Site::start(backend, "void-once").await else {
        return;
    };
    let (c, a, b) = (&site.c, &site.ams, &site.ber);
    // ams ships 4 of its 10 to ber (T-1); ber receives 3 into a bin of their own.
    post_ok(a, json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "A-01", "occurred_at": "2026-11-25T08:00:00Z"})).await;
    post_ok(a, json!({"sku": "TEE-002", "kind": "transfer_out", "quantity": 4, "bin": "A-01",
                      "transfer": "T-1", "peer_warehouse": "ber", "occurred_at": "2026-11-25T09:00:00Z"})).await;
    post_ok(b, json!({"sku": "TEE-002", "kind": "transfer_in", "quantity": 3, "bin": "B-01",
                      "transfer": "T-1", "peer_warehouse": "ams", "occurred_at": "2026-11-25T10:00:00Z"})).await;
    wait_total(c, "TEE-002", "ber", "available", 3).await;
    wait_total(c, "TEE-002", "ber", "in_transit", 1).await;
    wait_sellable(c, "TEE-002", 9).await;
    let discrepancies = get(&format!("{c}/v1/discrepancies")).await.body;
    assert_eq!(discrepancies[0]["difference"], -1, "{discrepancies}");

    // The receiving leg was keyed in by mistake: six voids at once, spread over every
    // collector, void it once.
    let body = json!({"agent_id": "ber-1", "seq": 1, "by": "j.doe", "reason": "keyed twice"});
    let requests = (0..6).map(|i| {
        let url = site.urls[i % site.urls.len()].clone();
        let body = body.clone();
        tokio::spawn(async move { void(&url, body).await })
    });
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.expect("void request"));
    }
    let created: Vec<&Reply> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &answers {
        assert_eq!(
            (r.status == 201 || r.status == 200, &r.body),
            (true, &created[0].body)
        );
    }
    assert_eq!(created[0].body["previous_treatment"], "apply");

    // Its bin is empty again, what it took off in transit is back, the transfer shows no
    // received leg, and the channel follows.
    let bin = stock_row(c, "TEE-002", "ber", Some("B-01")).await;
    assert_eq!(bin["available"], 0, "{bin}");
    assert_eq!(warehouse_total(c, "TEE-002", "ber", "in_transit").await, 4);
    assert_eq!(warehouse_total(c, "TEE-002", "ams", "available").await, 6);
    wait_sellable(c, "TEE-002", 6).await;
    let discrepancies = get(&format!("{c}/v1/discrepancies")).await.body;
    assert_eq!(discrepancies, json!([]), "only one leg is left");

    // The leg keyed again counts once, on top of the replayed numbers.
    post_ok(b, json!({"sku": "TEE-002", "kind": "transfer_in", "quantity": 4, "bin": "B-01",
                      "transfer": "T-1", "peer_warehouse": "ams", "occurred_at": "2026-11-25T11:00:00Z"})).await;
    wait_total(c, "TEE-002", "ber", "available", 4).await;
    assert_eq!(warehouse_total(c, "TEE-002", "ber", "in_transit").await, 0);
    wait_sellable(c, "TEE-002", 10).await;
    site.stop().await;
}

/// `more` for a channel `web` whose webhook has no receiver (every push fails) and a
/// warehouse silent after 3 s.
fn dead_webhook_and_quick_silence(dir: &TempDir) -> String {
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    format!(
        "[[channels.channel]]\nname = \"web\"\nlocations = [\"ams\"]\n\
         [channels.channel.webhook]\nurl = \"http://127.0.0.1:{}/stock\"\nsecret_file = {:?}\n\
         [channels.channel.webhook.limits]\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n\
         [operations]\nsilent_after_secs = 3\n",
        free_port(),
        dir.join("secret")
    )
}

async fn report(c: &str) -> Value {
    get(&format!("{c}/v1/reports/daily")).await.body
}

on_both_backends!(the_daily_report_lists_drift_silence_failing_channels_and_agents);
async fn the_daily_report_lists_drift_silence_failing_channels_and_agents(backend: Backend) {
    let Some(site) = Site::start_with(backend, "report", dead_webhook_and_quick_silence).await
    else {
        return;
    };
    let (c, a, b) = (&site.c, &site.ams, &site.ber);
    // A count 3 short of the 10 received: drift.
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "A-01"}),
    )
    .await;
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "count", "quantity": 7, "bin": "A-01"}),
    )
    .await;
    post_ok(
        b,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 1, "bin": "B-01"}),
    )
    .await;
    wait_for("the drift is reported", WAIT, || async {
        report(c).await["open_drift"]
            .as_array()
            .is_some_and(|d| d.len() == 1)
    })
    .await;
    let r = report(c).await;
    assert_eq!(r["open_drift"][0]["sku"], "TEE-002", "{r}");
    assert_eq!(r["open_drift"][0]["warehouse"], "ams", "{r}");
    assert_eq!(r["open_conflicts"], json!([]), "{r}");
    assert!(
        r["exceptions"]["unresolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["kind"] == "drift" && u["count"] == 1 && u["age"]["under_1h"] == 1),
        "{r}"
    );
    assert_eq!(r["exceptions"]["opened_on_date"]["drift"], 1, "{r}");

    // ber sends nothing more: silent after 3 s, while ams is heard from.
    wait_for("ber silent", WAIT, || async {
        report(c).await["silent_warehouses"]
            .as_array()
            .is_some_and(|s| s.iter().any(|w| w["warehouse"] == "ber"))
    })
    .await;
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 1, "bin": "A-01"}),
    )
    .await;
    wait_for("ams heard from", WAIT, || async {
        report(c).await["silent_warehouses"]
            .as_array()
            .is_some_and(|s| s.iter().all(|w| w["warehouse"] != "ams"))
    })
    .await;
    let r = report(c).await;
    let silent: Vec<&str> = r["silent_warehouses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["warehouse"].as_str().unwrap())
        .collect();
    assert_eq!(silent, ["ber"], "{r}");
    assert!(r["silent_warehouses"][0]["silent_secs"].as_i64().unwrap() >= 3);
    let agents: Vec<(&str, i64)> = r["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["agent_id"].as_str().unwrap(),
                a["last_seq"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(agents, [("ams-1", 3), ("ber-1", 1)], "{r}");

    // The dead webhook makes web failing, in the report of the collector that publishes.
    wait_for("web is failing", WAIT, || async {
        for url in &site.urls {
            let r = report(url).await;
            let failing = r["channels"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|l| l["channel"] == "web" && l["state"] == "failing")
            });
            if failing {
                return true;
            }
        }
        false
    })
    .await;

    // CSV, by format and by Accept; a bad date names its field; an earlier day opened nothing.
    let csv = get(&format!("{c}/v1/reports/daily?format=csv")).await.body;
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("section,subject,detail,value,since_ms\n"),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("open_drift,TEE-002@ams,")),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("silent_warehouse,ber,")),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("agent,ams-1,ams,3,")),
        "{csv}"
    );
    let (accept, _) = request(
        "GET",
        &format!("{c}/v1/reports/daily"),
        None,
        &[("accept", "text/csv")],
    )
    .await;
    assert!(
        accept
            .body
            .as_str()
            .is_some_and(|b| b.starts_with("section,")),
        "{:?}",
        accept.body
    );
    let bad = get(&format!("{c}/v1/reports/daily?date=27-11-2026")).await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("date"))
    );
    let unknown = get(&format!("{c}/v1/reports/daily?bogus=1")).await;
    assert_eq!(
        (unknown.status, unknown.body["field"].as_str()),
        (400, Some("bogus"))
    );
    let old = get(&format!("{c}/v1/reports/daily?date=2020-01-01"))
        .await
        .body;
    assert_eq!(old["exceptions"]["opened_on_date"], json!({}), "{old}");
    site.stop().await;
}

/// The next alert message about `subject` (others, such as a second silent warehouse, are
/// skipped): `(state, alert_id)`.
async fn next_alert(probe: &mut MqttProbe, subject: &str) -> (String, i64) {
    loop {
        let p = probe.next(WAIT).await;
        let msg: Value = serde_json::from_slice(&p.payload).unwrap();
        if msg["subject"] == subject {
            assert_eq!(p.topic, "stocksync/v1/alerts/warehouse_silent", "{msg}");
            return (
                msg["state"].as_str().unwrap().to_string(),
                msg["alert_id"].as_i64().unwrap(),
            );
        }
    }
}

async fn evaluations(c: &str) -> u64 {
    get(&format!("{c}/v1/alerts")).await.body["evaluations"]
        .as_u64()
        .unwrap_or(0)
}

on_both_backends!(an_alert_fires_once_while_it_holds_and_clears);
async fn an_alert_fires_once_while_it_holds_and_clears(backend: Backend) {
    let quick =
        |_: &TempDir| "[operations]\nevaluate_every_ms = 50\nsilent_after_secs = 2\n".to_string();
    let Some(site) = Site::start_with(backend, "alerts", quick).await else {
        return;
    };
    let (c, b) = (&site.c, &site.ber);
    let mut probe = MqttProbe::connect(site.broker.port, "alert-watcher").await;
    probe.subscribe("stocksync/v1/alerts/#").await;
    post_ok(
        b,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 1, "bin": "B-01"}),
    )
    .await;

    // ber goes quiet: one alert, on MQTT and in the list of every collector.
    let (state, id) = next_alert(&mut probe, "ber").await;
    assert_eq!(state, "firing");
    let seen = evaluations(c).await;
    wait_for("20 more evaluations", WAIT, || async {
        evaluations(c).await >= seen + 20
    })
    .await;
    for url in &site.urls {
        let alerts = get(&format!("{url}/v1/alerts")).await.body;
        let ber: Vec<&Value> = alerts["firing"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["subject"] == "ber")
            .collect();
        assert_eq!(ber.len(), 1, "{alerts}");
        assert_eq!(
            (
                ber[0]["id"].as_i64(),
                ber[0]["rule"].as_str(),
                ber[0]["undelivered"].as_i64()
            ),
            (Some(id), Some("warehouse_silent"), Some(0)),
            "{alerts}"
        );
    }

    for url in &site.urls {
        let metrics = get(&format!("{url}/metrics")).await.body;
        let text = metrics.as_str().unwrap();
        assert!(
            text.contains("stocksync_alerts_firing{rule=\"warehouse_silent\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stocksync_alert_evaluations_total "),
            "{text}"
        );
    }

    // ber is heard from again: the next message about it clears the same alert.
    post_ok(
        b,
        json!({"sku": "MUG-001", "kind": "receipt", "quantity": 1, "bin": "B-01"}),
    )
    .await;
    assert_eq!(
        next_alert(&mut probe, "ber").await,
        ("cleared".to_string(), id),
        "no repeat while it held"
    );
    let alerts = get(&format!("{c}/v1/alerts")).await.body;
    assert!(
        alerts["firing"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["subject"] != "ber"),
        "{alerts}"
    );
    let recent = alerts["recent"].as_array().unwrap();
    let cleared = recent
        .iter()
        .find(|a| a["subject"] == "ber")
        .expect("cleared");
    assert!(cleared["cleared_at_ms"].is_i64(), "{alerts}");
    let bad = get(&format!("{c}/v1/alerts?bogus=1")).await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("bogus"))
    );
    site.stop().await;
}

/// Every API path the dashboard's script calls, up to its first parameter.
fn dashboard_calls(script: &str) -> std::collections::BTreeSet<String> {
    let mut calls = std::collections::BTreeSet::new();
    for quote in ["api(\"", "api(`", "data-csv=\""] {
        for (i, _) in script.match_indices(quote) {
            let rest = &script[i + quote.len()..];
            let end = rest.find(['"', '`', '$', '?']).unwrap_or(rest.len());
            calls.insert(rest[..end].to_string());
        }
    }
    calls
}

on_both_backends!(the_dashboard_and_every_api_it_reads_answer);
async fn the_dashboard_and_every_api_it_reads_answer(backend: Backend) {
    let Some(site) = Site::start(backend, "dashboard").await else {
        return;
    };
    let a = &site.ams;
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "A-01"}),
    )
    .await;
    post_ok(
        a,
        json!({"sku": "TEE-002", "kind": "count", "quantity": 7, "bin": "A-01"}),
    )
    .await;
    for c in &site.urls {
        wait_total(c, "TEE-002", "ams", "on_hand", 7).await;
        // The page, its stylesheet and its script, and `/` leading to it.
        // (The client follows the redirect.)
        let (root, _) = request("GET", &format!("{c}/"), None, &[]).await;
        assert!(
            root.body.as_str().is_some_and(|p| p.contains("app.js")),
            "{:?}",
            root.body
        );
        let (page, headers) = request("GET", &format!("{c}/dashboard"), None, &[]).await;
        assert_eq!(page.status, 200);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert!(page.body.as_str().unwrap().contains("app.js"));
        let (style, _) = request("GET", &format!("{c}/dashboard/style.css"), None, &[]).await;
        assert_eq!(style.status, 200);
        let (script, headers) = request("GET", &format!("{c}/dashboard/app.js"), None, &[]).await;
        assert_eq!(script.status, 200);
        assert!(headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript"));

        // What the script reads: a new call fails here until this test reads it too.
        let script = script.body.as_str().unwrap().to_string();
        let calls: Vec<String> = dashboard_calls(&script).into_iter().collect();
        assert_eq!(
            calls,
            [
                "/v1/agents",
                "/v1/alerts",
                "/v1/channels",
                "/v1/channels/",
                "/v1/exceptions",
                "/v1/exceptions/",
                "/v1/reports/daily",
                "/v1/stock",
                "/v1/stock/",
            ],
            "{script}"
        );
        let open = get(&format!("{c}/v1/exceptions?status=open&limit=1")).await;
        assert_eq!(open.status, 200, "{:?}", open.body);
        let id = open.body["items"][0]["id"]
            .as_str()
            .expect("the drift")
            .to_string();
        for path in [
            "/v1/agents".to_string(),
            "/v1/alerts".into(),
            "/v1/channels".into(),
            "/v1/reports/daily".into(),
            "/v1/reports/daily?format=csv&date=2026-11-27".into(),
            "/v1/stock?location=ams".into(),
            "/v1/stock/TEE-002".into(),
            "/v1/stock/TEE-002/history?location=ams".into(),
            "/v1/exceptions?sku=TEE-002&limit=20".into(),
            "/v1/exceptions?kind=drift&limit=200".into(),
            format!("/v1/exceptions/{id}"),
        ] {
            let r = get(&format!("{c}{path}")).await;
            assert_eq!(r.status, 200, "{path}: {:?}", r.body);
        }
    }
    // The page's actions: an exception resolved with a comment, seen by every collector. (Its
    // other action, a channel's mode switch under `/v1/channels/`, is the channel suites'.)
    let open = get(&format!("{}/v1/exceptions?status=open&limit=1", site.c)).await;
    let id = open.body["items"][0]["id"].as_str().unwrap().to_string();
    let body = json!({"comment": "recounted", "by": "ops"}).to_string();
    let r = post(
        &format!("{}/v1/exceptions/{id}/resolve", site.c),
        &body,
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    for c in &site.urls {
        let e = get(&format!("{c}/v1/exceptions/{id}")).await.body;
        assert_eq!(e["status"], "resolved", "{e}");
    }
    site.stop().await;
}

/// The stock of `sku` as people read it: per location and per warehouse.
async fn stock_view(c: &str, sku: &str) -> (Value, Value) {
    let s = get(&format!("{c}/v1/stock/{sku}")).await.body;
    (s["locations"].clone(), s["warehouses"].clone())
}

/// Runs `stocksync-collector --config <worker config> rebuild`; its stderr.
async fn rebuild(config: std::path::PathBuf) -> String {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin("stocksync-collector"))
            .args(["--config", config.to_str().unwrap(), "rebuild"])
            .output()
            .expect("rebuild runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// The PostgreSQL store's `rebuild`, online beside running workers: a damaged projection
/// comes back to the ledger's replay (holds, in transit, last counts included), every row
/// that differed is reported, and a second rebuild finds nothing. (The SQLite `rebuild`,
/// offline, is `truth_collector::a_second_collector_or_a_rebuild_fails_fast_and_disturbs_nothing`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_rebuild_recomputes_the_projection_beside_running_workers() {
    let Some(site) = Site::start(Backend::Postgres, "pg-rebuild").await else {
        return;
    };
    let (c, a) = (&site.c, &site.ams);
    post_ok(a, json!({"sku": "TEE-002", "kind": "receipt", "quantity": 10, "bin": "A-01", "occurred_at": "2026-11-25T08:00:00Z"})).await;
    post_ok(a, json!({"sku": "TEE-002", "kind": "count", "quantity": 8, "bin": "A-01", "occurred_at": "2026-11-25T09:00:00Z"})).await;
    post_ok(a, json!({"sku": "TEE-002", "kind": "transfer_out", "quantity": 3, "bin": "A-01",
                      "transfer": "T-9", "peer_warehouse": "ber", "occurred_at": "2026-11-25T10:00:00Z"})).await;
    wait_total(c, "TEE-002", "ber", "in_transit", 3).await;
    wait_total(c, "TEE-002", "ams", "on_hand", 5).await;
    let hold =
        json!({"id": "r-1", "order": "SO-1", "sku": "TEE-002", "warehouse": "ams", "quantity": 2});
    let r = post(&format!("{c}/v1/reservations"), &hold.to_string(), &[]).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let before = stock_view(c, "TEE-002").await;
    assert_eq!(warehouse_total(c, "TEE-002", "ams", "reserved").await, 2);

    // The projection is damaged behind the workers' backs.
    let pg = site
        .collectors
        .pg
        .as_ref()
        .expect("a PostgreSQL collector side");
    pg.query("UPDATE stock SET available = available + 5 WHERE sku = 'TEE-002' AND bin = 'A-01'");
    pg.query("UPDATE stock SET in_transit = 0 WHERE sku = 'TEE-002' AND warehouse = 'ber'");
    pg.query("DELETE FROM stock_last_count");
    assert_ne!(stock_view(c, "TEE-002").await, before);

    let config = site.collectors.config_path(0);
    let log = rebuild(config.clone()).await;
    assert!(log.contains("projection rebuilt (postgres)"), "{log}");
    assert!(log.contains("differences=2"), "{log}");
    assert_eq!(log.matches("stock row differed").count(), 2, "{log}");
    assert_eq!(
        stock_view(c, "TEE-002").await,
        before,
        "back to the ledger's replay"
    );
    let last_counts = pg.query("SELECT count(*) FROM stock_last_count");
    assert_eq!(
        last_counts.trim(),
        "1",
        "the count is the key's last barrier again"
    );
    let again = rebuild(config).await;
    assert!(again.contains("differences=0"), "{again}");

    // Batches go on from the rebuilt rows: a receipt before the count replays, one after adds.
    post_ok(a, json!({"sku": "TEE-002", "kind": "receipt", "quantity": 1, "bin": "A-01", "occurred_at": "2026-11-25T08:30:00Z"})).await;
    post_ok(a, json!({"sku": "TEE-002", "kind": "receipt", "quantity": 4, "bin": "A-01", "occurred_at": "2026-11-25T11:00:00Z"})).await;
    wait_total(c, "TEE-002", "ams", "on_hand", 9).await;
    site.stop().await;
}
