//! The operator's queue end to end, through a real broker (embedded or Mosquitto) and a real
//! agent: collector rejects, drift, conflicts and failed channel pushes all land in
//! `/v1/exceptions` with record, source and field; identical failures are one exception
//! with a count; resolve/ignore keep who and why; a resolved exception that happens again
//! opens again, an ignored one stays ignored.
//!
//! Every case but the lease-following one (PostgreSQL only) runs on both backends: on one
//! SQLite collector (`<case>::sqlite`) and on collector workers on their own PostgreSQL
//! (`<case>::postgres`, a notice and a pass when PostgreSQL is not installed).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_collector::Collector;
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::postgres::Postgres;
use support::*;

const WAIT: Duration = Duration::from_secs(15);

/// A catalog, ams with the WMS as its authority, and a channel whose webhook has no
/// receiver (every push fails).
fn extra(dir: &TempDir, more: &str) -> String {
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    format!(
        r#"
[catalog]
[[catalog.skus]]
id = "MUG"
[[catalog.skus]]
id = "LID"
[[locations]]
warehouse = "ams"
authority = "wms"
other_sources = "apply"
[channels]
coalesce_ms = 20
[[channels.channel]]
name = "web"
locations = ["ams"]
[channels.channel.webhook]
url = "http://127.0.0.1:{dead}/stock"
secret_file = {secret:?}
[channels.channel.webhook.limits]
backoff_initial_ms = 50
backoff_max_ms = 200
{more}
"#,
        dead = free_port(),
        secret = dir.join("secret"),
    )
}

/// The store a collector of this suite runs on; `None` from `start` when it is PostgreSQL
/// and that is not installed.
struct Store(Option<Postgres>);

impl Store {
    fn start(backend: Backend, dir: &TempDir) -> Option<Store> {
        match backend {
            Backend::Sqlite => Some(Store(None)),
            Backend::Postgres => Postgres::start(dir).map(|pg| Store(Some(pg))),
        }
    }

    /// Starts a collector (on PostgreSQL, worker `w1` holding ams and ber) with `more`.
    async fn collector(&self, dir: &TempDir, broker: u16, more: &str) -> Collector {
        let store = match &self.0 {
            None => String::new(),
            Some(pg) => format!(
                "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"w1\"\nlease_secs = 3\nwarehouses = [\"ams\", \"ber\"]\n",
                pg.url
            ),
        };
        let text = collector_toml(dir, broker, 0, &format!("{}{store}", extra(dir, more)));
        Collector::start(toml_config(&text))
            .await
            .expect("collector starts")
    }
}

struct Fleet {
    _broker: Broker,
    collector: Collector,
    agent: Agent,
    c: String,
    a: String,
    store: Store,
}

async fn fleet_on(store: Store, dir: &TempDir, more: &str) -> Fleet {
    let broker = Broker::start(dir);
    let collector = store.collector(dir, broker.port, more).await;
    // One HTTP listener shared by the WMS and a scanner (production binds each to its own).
    let agent_text = agent_toml(dir, "ams-1", "ams", broker.port, 0, "")
        .replace("[http]\n", "[http]\nsources = [\"wms\", \"scanner\"]\n");
    let agent = Agent::start(toml_config(&agent_text))
        .await
        .expect("agent starts");
    let c = format!("http://{}", collector.http_addr);
    let a = format!("http://{}", agent.http_addr);
    // The cases publish straight to the movement topics: only once the collector is on the
    // broker and (a PostgreSQL worker) holds both warehouses, so it is subscribed to them.
    wait_for("collector connected", WAIT, || async {
        metric(&c, "stocksync_broker_connected").await == 1
    })
    .await;
    if store.0.is_some() {
        wait_for("ams and ber held", WAIT, || async {
            let held = get(&format!("{c}/healthz")).await.body["warehouses"].clone();
            ["ams", "ber"]
                .iter()
                .all(|w| held.as_array().is_some_and(|h| h.iter().any(|x| x == w)))
        })
        .await;
    }
    Fleet {
        _broker: broker,
        collector,
        agent,
        c,
        a,
        store,
    }
}

async fn post_ok(agent: &str, body: Value) {
    let r = post(&format!("{agent}/v1/movements"), &body.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{body} -> {:?}", r.body);
}

/// The exceptions a filter selects, once there are `n`.
async fn wait_exceptions(c: &str, query: &str, n: usize) -> Vec<Value> {
    let url = format!("{c}/v1/exceptions?{query}");
    wait_for(&format!("{n} exceptions for {query}"), WAIT, || async {
        get(&url).await.body["items"]
            .as_array()
            .is_some_and(|a| a.len() == n)
    })
    .await;
    get(&url).await.body["items"].as_array().unwrap().clone()
}

async fn act(c: &str, id: &str, action: &str, body: Value) -> Reply {
    post(
        &format!("{c}/v1/exceptions/{id}/{action}"),
        &body.to_string(),
        &[],
    )
    .await
}

on_both_backends!(every_kind_lands_in_one_queue_and_operators_act_on_it);
async fn every_kind_lands_in_one_queue_and_operators_act_on_it(backend: Backend) {
    let dir = TempDir::new("operator-queue");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    let f = fleet_on(store, &dir, "").await;
    let (c, a) = (f.c.as_str(), f.a.as_str());

    // Collector rejects: the same undecodable payload three times is one exception.
    let probe = MqttProbe::connect(f.collector.broker.port, "hostile").await;
    for _ in 0..3 {
        probe
            .publish(
                "stocksync/v1/ams/movements",
                b"\xff\xffnot a batch".to_vec(),
            )
            .await;
    }
    probe
        .publish("stocksync/v1/ams/movements", b"\xfeother".to_vec())
        .await;
    wait_for("four rejects", WAIT, || async {
        get(&format!("{c}/v1/rejects"))
            .await
            .body
            .as_array()
            .is_some_and(|r| {
                r.iter()
                    .map(|r| r["seen_count"].as_i64().unwrap())
                    .sum::<i64>()
                    == 4
            })
    })
    .await;
    let rejects = wait_exceptions(c, "kind=collector_reject", 2).await;
    let grouped = rejects
        .iter()
        .find(|e| e["occurrences"] == 3)
        .expect("grouped");
    assert_eq!(grouped["warehouse"], "ams");
    assert_eq!(grouped["status"], "open");
    assert!(grouped["source"]
        .as_str()
        .unwrap()
        .contains("stocksync/v1/ams/movements"));
    assert!(
        grouped["record"]["undecoded"]
            .as_str()
            .unwrap()
            .contains("not a batch"),
        "{grouped}"
    );
    assert!(
        grouped["reason"].as_str().unwrap().contains("wire version"),
        "{grouped}"
    );

    // Drift: the WMS counts 7 where 10 were received. Conflict: a scanner counts 9.
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 10, "bin": "A-01", "source": "wms"}),
    )
    .await;
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "count", "quantity": 7, "bin": "A-01", "source": "wms"}),
    )
    .await;
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "count", "quantity": 9, "bin": "A-01", "source": "scanner"}),
    )
    .await;
    let drift = wait_exceptions(c, "kind=drift&sku=MUG", 1).await;
    assert_eq!(drift[0]["warehouse"], "ams");
    assert_eq!(drift[0]["field"], "$.quantity");
    assert_eq!(
        drift[0]["record"]["quantity"], 7,
        "the count as received: {}",
        drift[0]
    );
    assert!(drift[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("wms via agent ams-1"));
    assert!(
        drift[0]["reason"].as_str().unwrap().contains("expected 10"),
        "{}",
        drift[0]
    );
    let conflict = wait_exceptions(c, "kind=conflict", 1).await;
    assert_eq!(conflict[0]["record"]["source"], "scanner");

    // The channel's webhook has no receiver: its failed pushes are one exception.
    let push = wait_exceptions(c, "kind=channel_push&channel=web", 1).await;
    assert_eq!(push[0]["status"], "open");
    assert!(
        push[0]["source"].as_str().unwrap().contains("webhook"),
        "{}",
        push[0]
    );

    // Filters and paging.
    let all = get(&format!("{c}/v1/exceptions?limit=2")).await.body;
    assert_eq!(all["total"], 5, "{all}");
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let page2 = get(&format!("{c}/v1/exceptions?limit=2&offset=4"))
        .await
        .body;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    // Unknown query keys and malformed values are JSON 400s naming the key, on every list.
    for (url, field) in [
        ("v1/exceptions?bogus=1", "bogus"),
        ("v1/exceptions?limit=many", "query"),
        ("v1/alerts?bogus=1", "bogus"),
        ("v1/orders?bogus=1", "bogus"),
        ("v1/reports/daily?bogus=1", "bogus"),
    ] {
        let r = get(&format!("{c}/{url}")).await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (400, Some(field)),
            "{url}: {:?}",
            r.body
        );
        assert!(r.body["detail"].is_string(), "{url}: {:?}", r.body);
    }
    let r = get(&format!("{a}/v1/rejects?bogus=1")).await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("bogus")),
        "{:?}",
        r.body
    );
    let bad = get(&format!("{c}/v1/exceptions?kind=nope")).await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("kind"))
    );

    // Resolve needs who and why; both are kept in the log.
    let id = drift[0]["id"].as_str().unwrap().to_string();
    let r = act(
        c,
        &id,
        "resolve",
        json!({"by": "ops@example.com", "comment": ""}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("$.comment"))
    );
    let r = act(c, &id, "resolve", json!({"by": "ops@example.com"})).await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    let r = act(
        c,
        &id,
        "resolve",
        json!({"by": "ops@example.com", "comment": "recounted: 7 is right"}),
    )
    .await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("resolved")),
        "{:?}",
        r.body
    );
    let again = act(
        c,
        &id,
        "resolve",
        json!({"by": "ops@example.com", "comment": "twice"}),
    )
    .await;
    assert_eq!(again.status, 409);
    let one = get(&format!("{c}/v1/exceptions/{id}")).await.body;
    assert_eq!(one["status"], "resolved");
    let log = one["log"].as_array().unwrap();
    assert_eq!(log.last().unwrap()["by"], "ops@example.com");
    assert_eq!(log.last().unwrap()["comment"], "recounted: 7 is right");
    assert_eq!(one["records"].as_array().unwrap().len(), 1);
    let missing = get(&format!("{c}/v1/exceptions/drift-0000")).await;
    assert_eq!(
        (missing.status, missing.body["field"].as_str()),
        (404, Some("id"))
    );

    // Bulk: ignore every collector reject at once.
    let r = post(
        &format!("{c}/v1/exceptions/ignore"),
        &json!({"by": "ops", "comment": "hostile test client", "filter": {"kind": "collector_reject"}}).to_string(),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["changed"].as_i64()),
        (200, Some(2)),
        "{:?}",
        r.body
    );
    assert_eq!(
        get(&format!("{c}/v1/exceptions?status=open")).await.body["total"],
        2
    );

    // It happens again: the ignored reject counts it but stays ignored; the resolved drift
    // (same SKU and bin) opens again.
    probe
        .publish(
            "stocksync/v1/ams/movements",
            b"\xff\xffnot a batch".to_vec(),
        )
        .await;
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "count", "quantity": 5, "bin": "A-01", "source": "wms"}),
    )
    .await;
    let gid = grouped["id"].as_str().unwrap();
    wait_for("the ignored reject counted 4", WAIT, || async {
        let e = get(&format!("{c}/v1/exceptions/{gid}")).await.body;
        e["occurrences"] == 4 && e["status"] == "ignored"
    })
    .await;
    wait_for("the drift reopened", WAIT, || async {
        get(&format!("{c}/v1/exceptions/{id}")).await.body["status"] == "open"
    })
    .await;
    let one = get(&format!("{c}/v1/exceptions/{id}")).await.body;
    assert_eq!(one["occurrences"], 2, "{one}");
    assert_eq!(
        one["log"].as_array().unwrap().last().unwrap()["action"],
        "reopened"
    );

    f.agent.stop().await.unwrap();
    f.collector.stop().await.unwrap();
}

on_both_backends!(discrepancies_and_reversals_are_exceptions_that_close_when_settled);
async fn discrepancies_and_reversals_are_exceptions_that_close_when_settled(backend: Backend) {
    let dir = TempDir::new("operator-settle");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    let f = fleet_on(
        store,
        &dir,
        "[[orders.channel]]\nname = \"bo\"\nleftovers = \"backorder\"\n",
    )
    .await;
    let (c, a) = (f.c.as_str(), f.a.as_str());
    let ber = Agent::start(agent_config(&dir, "ber-1", "ber", f._broker.port, 0))
        .await
        .expect("agent starts");
    let b = format!("http://{}", ber.http_addr);

    // 10 shipped from ams, 9 received at ber.
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 20, "source": "wms"}),
    )
    .await;
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "transfer_out", "quantity": 10, "source": "wms",
                      "transfer": "T-1", "peer_warehouse": "ber"}),
    )
    .await;
    post_ok(
        &b,
        json!({"sku": "MUG", "kind": "transfer_in", "quantity": 9,
                       "transfer": "T-1", "peer_warehouse": "ams"}),
    )
    .await;
    let d = wait_exceptions(c, "kind=discrepancy", 1).await;
    assert_eq!(
        (d[0]["sku"].as_str(), d[0]["warehouse"].as_str()),
        (Some("MUG"), Some("ber"))
    );
    assert_eq!(d[0]["record"]["shipped"], 10);
    assert_eq!(d[0]["record"]["received"], 9);
    assert!(d[0]["source"].as_str().unwrap().contains("T-1"));

    // A return before the shipment it reverses: a reversal exception, open...
    post_ok(
        a,
        json!({"sku": "LID", "kind": "receipt", "quantity": 10, "source": "wms"}),
    )
    .await;
    post_ok(
        a,
        json!({"sku": "LID", "kind": "return", "quantity": 2, "order": "SO-1", "source": "wms"}),
    )
    .await;
    let r = wait_exceptions(c, "kind=reversal&sku=LID", 1).await;
    assert_eq!(r[0]["status"], "open");
    assert_eq!(r[0]["record"]["excess"], 2);
    assert_eq!(r[0]["source"], "order SO-1");
    // ...until the shipment arrives and explains it: resolved by the system, logged.
    post_ok(
        a,
        json!({"sku": "LID", "kind": "shipment", "quantity": 3, "order": "SO-1", "source": "wms"}),
    )
    .await;
    let id = r[0]["id"].as_str().unwrap().to_string();
    wait_for("the reversal resolved itself", WAIT, || async {
        get(&format!("{c}/v1/exceptions/{id}")).await.body["status"] == "resolved"
    })
    .await;
    let one = get(&format!("{c}/v1/exceptions/{id}")).await.body;
    let last = one["log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["by"].as_str()),
        (Some("resolved"), Some("stocksync"))
    );

    // An inspection of more than quality control holds: a shortfall.
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "inspection", "outcome": "available", "quantity": 4, "source": "wms"}),
    )
    .await;
    let sf = wait_exceptions(c, "kind=shortfall", 1).await;
    assert_eq!(
        (sf[0]["sku"].as_str(), sf[0]["warehouse"].as_str()),
        (Some("MUG"), Some("ams"))
    );
    assert_eq!(sf[0]["record"]["quantity"], 4, "{}", sf[0]);

    // An order for more MUG than ams and ber have (19), on a channel that backorders: an exception.
    let order = json!({"id": "B-1", "channel": "bo", "lines": [{"sku": "MUG", "quantity": 25}],
                       "ship_to": {"country": "NL", "postcode": "1011"}});
    let r = post(&format!("{c}/v1/orders"), &order.to_string(), &[]).await;
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (201, Some("backorder")),
        "{:?}",
        r.body
    );
    let bo = wait_exceptions(c, "kind=backorder", 1).await;
    assert_eq!(
        (bo[0]["channel"].as_str(), bo[0]["sku"].as_str()),
        (Some("bo"), Some("MUG"))
    );
    assert!(
        bo[0]["reason"].as_str().unwrap().contains("6 x MUG"),
        "{}",
        bo[0]
    );
    assert_eq!(
        bo[0]["record"]["id"], "B-1",
        "the order as received: {}",
        bo[0]
    );
    assert_eq!(bo[0]["source"], "order B-1 from channel bo");

    ber.stop().await.unwrap();
    f.agent.stop().await.unwrap();
    f.collector.stop().await.unwrap();
}

fn put_blocking(url: &str, body: &str) -> u16 {
    ureq::put(url)
        .header("content-type", "application/json")
        .send(body)
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"))
}

async fn report(c: &str) -> Value {
    get(&format!("{c}/v1/reports/daily")).await.body
}

on_both_backends!(daily_report_finds_sold_out_but_listed_and_silent_warehouses);
async fn daily_report_finds_sold_out_but_listed_and_silent_warehouses(backend: Backend) {
    let dir = TempDir::new("operator-report");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    // "shop" sells ams stock through the feed only; "web" (a dead webhook) fails.
    let more = r#"
[[channels.channel]]
name = "shop"
locations = ["ams"]
[operations]
silent_after_secs = 3
sold_out_grace_secs = 1
"#;
    let f = fleet_on(store, &dir, more).await;
    let (c, a) = (f.c.as_str(), f.a.as_str());
    let ber = Agent::start(agent_config(&dir, "ber-1", "ber", f._broker.port, 0))
        .await
        .expect("agent starts");
    let b = format!("http://{}", ber.http_addr);

    // shop lists 5 MUG; frozen, it keeps listing them after they all ship.
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 5, "source": "wms"}),
    )
    .await;
    let feed = format!("{c}/v1/channels/shop/sellable");
    wait_for("shop lists 5 MUG", WAIT, || async {
        get(&feed).await.body["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p["sku"] == "MUG" && p["sellable"] == 5))
    })
    .await;
    let mode = format!("{c}/v1/channels/shop/mode");
    let status = tokio::task::spawn_blocking(move || {
        put_blocking(&mode, r#"{"mode":"frozen","reason":"test"}"#)
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "shipment", "quantity": 5, "source": "wms", "order": "SO-9"}),
    )
    .await;
    wait_for("MUG sold out", WAIT, || async {
        on_hand(c, "MUG").await == 0
    })
    .await;
    wait_for("sold out but listed, after the grace", WAIT, || async {
        report(c).await["sold_out_listed"]
            .as_array()
            .is_some_and(|l| !l.is_empty())
    })
    .await;
    let r = report(c).await;
    let listed = r["sold_out_listed"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{r}");
    assert_eq!(
        (
            listed[0]["channel"].as_str(),
            listed[0]["sku"].as_str(),
            listed[0]["published"].as_i64(),
            listed[0]["available"].as_i64()
        ),
        (Some("shop"), Some("MUG"), Some(5), Some(0)),
        "{r}"
    );

    // ber sends one batch, then nothing: silent after 3 s, while ams keeps sending.
    post_ok(&b, json!({"sku": "LID", "kind": "receipt", "quantity": 1})).await;
    wait_for("ber silent", WAIT, || async {
        report(c).await["silent_warehouses"]
            .as_array()
            .is_some_and(|s| s.iter().any(|w| w["warehouse"] == "ber"))
    })
    .await;
    post_ok(
        a,
        json!({"sku": "LID", "kind": "receipt", "quantity": 1, "source": "wms"}),
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

    // The dead webhook makes web failing; shop (feed only) has no push target.
    let web = r["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["channel"] == "web")
        .cloned();
    assert_eq!(
        web.as_ref().map(|w| w["state"].clone()),
        Some(json!("failing")),
        "{r}"
    );
    // Unresolved exceptions by kind: the channel push failure.
    assert!(
        r["exceptions"]["unresolved"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["kind"] == "channel_push" && u["age"]["under_1h"] == 1),
        "{r}"
    );
    assert_eq!(r["exceptions"]["opened_on_date"]["channel_push"], 1, "{r}");
    assert_eq!(r["agents"].as_array().unwrap().len(), 2);

    // CSV: by format and by Accept; a bad date names its field.
    let csv = get(&format!("{c}/v1/reports/daily?format=csv")).await.body;
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("section,subject,detail,value,since_ms\n"),
        "{csv}"
    );
    assert!(
        csv.contains("sold_out_listed,MUG@shop,available 0,5,"),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("silent_warehouse,ber,")),
        "{csv}"
    );
    let url = format!("{c}/v1/reports/daily");
    let accept = tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .header("accept", "text/csv")
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(accept.starts_with("section,"), "{accept}");
    let bad = get(&format!("{c}/v1/reports/daily?date=27-11-2026")).await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("date"))
    );
    // An earlier day opened nothing.
    let old = get(&format!("{c}/v1/reports/daily?date=2020-01-01"))
        .await
        .body;
    assert_eq!(old["exceptions"]["opened_on_date"], json!({}), "{old}");

    ber.stop().await.unwrap();
    f.agent.stop().await.unwrap();
    f.collector.stop().await.unwrap();
}

/// An HTTP receiver that keeps every alert POSTed to it whose signature checks out.
struct AlertHook {
    addr: std::net::SocketAddr,
    got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    bad: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl AlertHook {
    async fn start(secret: &'static [u8]) -> AlertHook {
        use hmac::{Hmac, Mac};
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let bad = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, b) = (got.clone(), bad.clone());
        let app = axum::Router::new().route(
            "/alerts",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let (g, b) = (g.clone(), b.clone());
                    async move {
                        let h = |k: &str| {
                            headers
                                .get(k)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string()
                        };
                        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
                        mac.update(format!("{}.", h("x-stocksync-timestamp")).as_bytes());
                        mac.update(&body);
                        let want: String = mac
                            .finalize()
                            .into_bytes()
                            .iter()
                            .map(|x| format!("{x:02x}"))
                            .collect();
                        if h("x-stocksync-signature") != format!("sha256={want}") {
                            b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            return axum::http::StatusCode::UNAUTHORIZED;
                        }
                        g.lock()
                            .unwrap()
                            .push(serde_json::from_slice(&body).unwrap());
                        axum::http::StatusCode::OK
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        AlertHook { addr, got, bad }
    }

    fn of_rule(&self, rule: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == rule)
            .cloned()
            .collect()
    }
}

async fn evaluations(c: &str) -> u64 {
    get(&format!("{c}/v1/alerts")).await.body["evaluations"]
        .as_u64()
        .unwrap_or(0)
}

on_both_backends!(alert_fires_once_while_it_holds_and_clears);
async fn alert_fires_once_while_it_holds_and_clears(backend: Backend) {
    let dir = TempDir::new("operator-alerts");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    let hook = AlertHook::start(b"alert-secret").await;
    std::fs::write(dir.join("alert-secret"), "alert-secret\n").unwrap();
    let more = format!(
        r#"
[[channels.channel]]
name = "shop"
locations = ["ams"]
[operations]
evaluate_every_ms = 50
sold_out_grace_secs = 1
[operations.webhook]
url = "http://{}/alerts"
secret_file = {:?}
"#,
        hook.addr,
        dir.join("alert-secret")
    );
    let f = fleet_on(store, &dir, &more).await;
    let (c, a) = (f.c.as_str(), f.a.as_str());
    let mut probe = MqttProbe::connect(f.collector.broker.port, "alert-watcher").await;
    probe.subscribe("stocksync/v1/alerts/#").await;

    // shop lists 5 MUG, is frozen, and they all ship: sold out but listed.
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 5, "source": "wms"}),
    )
    .await;
    let feed = format!("{c}/v1/channels/shop/sellable");
    wait_for("shop lists 5 MUG", WAIT, || async {
        get(&feed).await.body["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|p| p["sku"] == "MUG" && p["sellable"] == 5))
    })
    .await;
    let mode = format!("{c}/v1/channels/shop/mode");
    let m = mode.clone();
    let frozen = tokio::task::spawn_blocking(move || put_blocking(&m, r#"{"mode":"frozen"}"#))
        .await
        .unwrap();
    assert_eq!(frozen, 200);
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "shipment", "quantity": 5, "source": "wms", "order": "SO-1"}),
    )
    .await;

    let firing = probe.next(WAIT).await;
    assert_eq!(firing.topic, "stocksync/v1/alerts/sold_out_listed");
    let msg: Value = serde_json::from_slice(&firing.payload).unwrap();
    assert_eq!(
        (msg["state"].as_str(), msg["subject"].as_str()),
        (Some("firing"), Some("shop/MUG")),
        "{msg}"
    );
    wait_for("webhook got the alert", WAIT, || async {
        hook.of_rule("sold_out_listed").len() == 1
    })
    .await;
    let alerts = get(&format!("{c}/v1/alerts")).await.body;
    assert_eq!(alerts["firing"].as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts["firing"][0]["rule"], "sold_out_listed");

    // It holds for 20 more evaluations: nothing is sent again.
    let seen = evaluations(c).await;
    wait_for("20 evaluations", WAIT, || async {
        evaluations(c).await >= seen + 20
    })
    .await;
    assert_eq!(
        hook.of_rule("sold_out_listed").len(),
        1,
        "no repeat while it holds"
    );
    let metrics = get(&format!("{c}/metrics")).await.body;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("stocksync_alerts_firing{rule=\"sold_out_listed\"} 1"),
        "{metrics}"
    );

    // Live again: shop publishes 0, the condition ends, one "cleared" goes out.
    let live = tokio::task::spawn_blocking(move || put_blocking(&mode, r#"{"mode":"live"}"#))
        .await
        .unwrap();
    assert_eq!(live, 200);
    let cleared = probe.next(WAIT).await;
    let msg: Value = serde_json::from_slice(&cleared.payload).unwrap();
    assert_eq!(
        (msg["state"].as_str(), msg["subject"].as_str()),
        (Some("cleared"), Some("shop/MUG")),
        "the next message clears, no repeat: {msg}"
    );
    wait_for("webhook got the clearing", WAIT, || async {
        hook.of_rule("sold_out_listed").len() == 2
    })
    .await;
    let got = hook.of_rule("sold_out_listed");
    assert_eq!(
        (got[0]["state"].as_str(), got[1]["state"].as_str()),
        (Some("firing"), Some("cleared"))
    );
    assert_eq!(got[0]["alert_id"], got[1]["alert_id"]);
    assert_eq!(hook.bad.load(std::sync::atomic::Ordering::SeqCst), 0);
    let alerts = get(&format!("{c}/v1/alerts")).await.body;
    assert_eq!(alerts["firing"], json!([]), "{alerts}");
    assert_eq!(alerts["recent"][0]["rule"], "sold_out_listed");
    assert!(alerts["recent"][0]["cleared_at_ms"].is_i64());

    f.agent.stop().await.unwrap();
    f.collector.stop().await.unwrap();
}

on_both_backends!(readyz_follows_the_broker_and_logs_are_json_lines);
/// `/readyz` of every collector (the SQLite collector, or each PostgreSQL worker process)
/// follows the broker and says why it is not ready; every log line of the collector
/// processes and of the agent is one JSON object.
async fn readyz_follows_the_broker_and_logs_are_json_lines(backend: Backend) {
    let dir = TempDir::new("operator-readyz");
    let mut broker = Broker::start(&dir);
    let Some(collectors) = tokio::task::block_in_place(|| {
        CollectorSpec::new(backend, &dir, broker.port)
            .warehouses(&["ams"])
            .args(&["--log-format", "json"])
            .start_processes()
    }) else {
        return;
    };
    let aport = free_port();
    let aconf = dir.join("agent.toml");
    std::fs::write(
        &aconf,
        agent_toml(&dir, "ams-1", "ams", broker.port, aport, ""),
    )
    .unwrap();
    let aa = [
        "--config".to_string(),
        aconf.display().to_string(),
        "--log-format".into(),
        "json".into(),
    ];
    let agent = Proc::spawn(
        &bin("stocksync-agent"),
        &aa.iter().map(String::as_str).collect::<Vec<_>>(),
        dir.join("agent.log"),
    );
    let a = format!("http://127.0.0.1:{aport}");

    let ready = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent()
                .get(&url)
                .call()
                .ok()
                .map(|mut r| {
                    (
                        r.status().as_u16(),
                        r.body_mut().read_json::<Value>().unwrap_or(Value::Null),
                    )
                })
        })
        .await
        .unwrap()
    };
    // What a ready collector `i` answers: a worker also names itself.
    let ready_body = |i: usize| {
        let mut body = json!({"status": "ready", "broker": "connected", "store": "ok"});
        if backend == Backend::Postgres {
            body["worker_id"] = json!(format!("w{}", i + 1));
        }
        body
    };
    for (i, c) in collectors.urls.iter().enumerate() {
        wait_for("collector ready", WAIT, || async {
            ready(format!("{c}/readyz"))
                .await
                .is_some_and(|(s, _)| s == 200)
        })
        .await;
        let (_, body) = ready(format!("{c}/readyz")).await.unwrap();
        assert_eq!(body, ready_body(i));
    }
    wait_for("agent ready and connected", WAIT, || async {
        ready(format!("{a}/readyz"))
            .await
            .is_some_and(|(s, b)| s == 200 && b["broker"] == "connected")
    })
    .await;

    // Broker gone: each collector is not ready and says why; the agent still takes movements.
    broker.kill();
    for c in &collectors.urls {
        wait_for("collector not ready", WAIT, || async {
            ready(format!("{c}/readyz")).await.is_some_and(|(s, b)| {
                s == 503
                    && b["status"] == "not ready"
                    && b["broker"] == "disconnected"
                    && b["store"] == "ok"
            })
        })
        .await;
    }
    let (status, body) = ready(format!("{a}/readyz")).await.unwrap();
    assert_eq!(
        (status, body["store"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
    broker.restart();
    for (i, c) in collectors.urls.iter().enumerate() {
        wait_for("collector ready again", WAIT, || async {
            ready(format!("{c}/readyz"))
                .await
                .is_some_and(|(s, b)| s == 200 && b == ready_body(i))
        })
        .await;
    }

    // Every log line of every process is one JSON object with a level and a message.
    let logs = collectors.procs.iter().map(|s| &s.proc).chain([&agent]);
    for p in logs {
        let out = p.output();
        let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(!lines.is_empty(), "no log lines in {}", p.log.display());
        for line in lines {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
        }
    }
}

on_both_backends!(exception_silence_and_channel_rules_fire_and_clear);
/// The rules of `/v1/alerts` other than sold out but listed: too many exceptions in a day, a
/// silent warehouse, a failing channel; each one alert per subject, cleared when it ends.
async fn exception_silence_and_channel_rules_fire_and_clear(backend: Backend) {
    let dir = TempDir::new("operator-rules");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    let more = r#"
[operations]
evaluate_every_ms = 50
exceptions_per_day = 2
silent_after_secs = 2
channel_failing_after_secs = 1
mqtt = false
"#;
    let f = fleet_on(store, &dir, more).await;
    let (c, a) = (f.c.as_str(), f.a.as_str());
    let firing = |rule: &'static str| async move {
        get(&format!("{c}/v1/alerts")).await.body["firing"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|x| x["rule"] == rule)
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };

    // The dead webhook fails for over a second: channel_failing for web/webhook.
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 1, "source": "wms"}),
    )
    .await;
    wait_for("channel_failing fires", WAIT, || async {
        firing("channel_failing").await.len() == 1
    })
    .await;
    assert_eq!(firing("channel_failing").await[0]["subject"], "web/webhook");

    // Three distinct undecodable payloads: three open exceptions in a day, above 2 (the
    // channel push failure is a fourth).
    let probe = MqttProbe::connect(f.collector.broker.port, "noisy").await;
    for n in 0..3u8 {
        probe
            .publish("stocksync/v1/ams/movements", vec![0xff, n])
            .await;
    }
    wait_for("exceptions_per_day fires", WAIT, || async {
        firing("exceptions_per_day").await.len() == 1
    })
    .await;
    let e = &firing("exceptions_per_day").await[0];
    assert_eq!(e["detail"]["threshold"], 2, "{e}");

    // Ignoring them brings the count under the threshold: the alert clears.
    let r = post(
        &format!("{c}/v1/exceptions/ignore"),
        &json!({"by": "ops", "comment": "noise", "filter": {"kind": "collector_reject"}})
            .to_string(),
        &[],
    )
    .await;
    assert_eq!(r.body["changed"], 3, "{:?}", r.body);
    wait_for("exceptions_per_day clears", WAIT, || async {
        firing("exceptions_per_day").await.is_empty()
    })
    .await;

    // ams goes quiet for 2 s: silent; a new batch clears it.
    wait_for("warehouse_silent fires", WAIT, || async {
        firing("warehouse_silent").await.len() == 1
    })
    .await;
    assert_eq!(firing("warehouse_silent").await[0]["subject"], "ams");
    post_ok(
        a,
        json!({"sku": "MUG", "kind": "receipt", "quantity": 1, "source": "wms"}),
    )
    .await;
    wait_for("warehouse_silent clears", WAIT, || async {
        firing("warehouse_silent").await.is_empty()
    })
    .await;
    let alerts = get(&format!("{c}/v1/alerts")).await.body;
    let recent: Vec<&str> = alerts["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert!(
        recent.contains(&"exceptions_per_day") && recent.contains(&"warehouse_silent"),
        "{alerts}"
    );
    // One alert per condition, however many evaluations it held for.
    assert_eq!(
        alerts["recent"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == "warehouse_silent")
            .count(),
        1,
        "{alerts}"
    );

    f.agent.stop().await.unwrap();
    f.collector.stop().await.unwrap();
}

/// Retries exception `id` from the queue.
async fn retry(c: &str, id: &str) -> Reply {
    act(
        c,
        id,
        "retry",
        json!({"by": "ops", "comment": "catalog fixed"}),
    )
    .await
}

on_both_backends!(queue_retry_applies_a_refused_record_once_the_catalog_has_it_exactly_once);
async fn queue_retry_applies_a_refused_record_once_the_catalog_has_it_exactly_once(
    backend: Backend,
) {
    let dir = TempDir::new("operator-retry");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    // The agent journals before it ever had a catalog, so it accepts a SKU the collector
    // does not know (its batch is resent on the ack timeout once the collector is up).
    let text = agent_toml(
        &dir,
        "ams-1",
        "ams",
        broker.port,
        0,
        "[forward]\nack_timeout_ms = 300\n",
    )
    .replace("[http]\n", "[http]\nsources = [\"wms\", \"scanner\"]\n");
    let agent = Agent::start(toml_config(&text))
        .await
        .expect("agent starts");
    let a = format!("http://{}", agent.http_addr);
    post_ok(
        &a,
        json!({"sku": "GHOST", "kind": "receipt", "quantity": 7, "bin": "A-01"}),
    )
    .await;
    let start = |more: &'static str| store.collector(&dir, broker.port, more);
    let collector = start("").await;
    let c = format!("http://{}", collector.http_addr);
    let refused = wait_exceptions(&c, "kind=collector_reject&sku=GHOST", 1).await;
    let id = refused[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            refused[0]["attempts"].as_i64(),
            refused[0]["field"].as_str()
        ),
        (Some(0), Some("$.sku")),
        "{}",
        refused[0]
    );

    // Retried before the catalog is fixed: still open, one attempt, the new reason.
    let r = retry(&c, &id).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("open")),
        "{:?}",
        r.body
    );
    assert_eq!(r.body["attempts"], 1);
    assert!(
        r.body["reason"].as_str().unwrap().contains("GHOST"),
        "{:?}",
        r.body
    );
    let e = get(&format!("{c}/v1/exceptions/{id}")).await.body;
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_i64()),
        (Some("open"), Some(1)),
        "{e}"
    );
    let actions: Vec<&str> = e["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["opened", "retry", "retry failed"]);

    // A kind that cannot be retried answers a JSON 409 naming why, alone or in bulk.
    let push = wait_exceptions(&c, "kind=channel_push", 1).await;
    let r = retry(&c, push[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (409, Some("kind")),
        "{:?}",
        r.body
    );
    assert!(
        r.body["detail"].as_str().unwrap().contains("channel"),
        "{:?}",
        r.body
    );
    let r = post(
        &format!("{c}/v1/exceptions/retry"),
        &json!({"by": "ops", "comment": "all", "filter": {"kind": "channel_push"}}).to_string(),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["changed"].as_i64()),
        (200, Some(0)),
        "{:?}",
        r.body
    );
    assert_eq!(
        r.body["skipped"].as_array().unwrap().len(),
        1,
        "{:?}",
        r.body
    );

    // The catalog learns the SKU: retried (in bulk) it is applied; retried again, still once.
    collector.stop().await.expect("collector stops");
    let collector = start("[[catalog.skus]]\nid = \"GHOST\"\n").await;
    let c = format!("http://{}", collector.http_addr);
    let r = post(
        &format!("{c}/v1/exceptions/retry"),
        &json!({"by": "ops", "comment": "catalog fixed", "filter": {"kind": "collector_reject"}})
            .to_string(),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.body["changed"].as_i64()),
        (200, Some(1)),
        "{:?}",
        r.body
    );
    let done = &r.body["retried"][0];
    assert_eq!(
        (
            done["status"].as_str(),
            done["applied"].as_i64(),
            done["attempts"].as_i64()
        ),
        (Some("resolved"), Some(1), Some(2)),
        "{done}"
    );
    let r = retry(&c, &id).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (200, Some("resolved")),
        "{:?}",
        r.body
    );
    assert_eq!(
        (
            r.body["applied"].as_i64(),
            r.body["already_applied"].as_i64()
        ),
        (Some(0), Some(1))
    );
    assert_eq!(on_hand(&c, "GHOST").await, 7, "applied exactly once");
    let e = get(&format!("{c}/v1/exceptions/{id}")).await.body;
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_i64()),
        (Some("resolved"), Some(3)),
        "{e}"
    );
    agent.stop().await.expect("agent stops");
    collector.stop().await.expect("collector stops");
}

on_both_backends!(agent_rejects_reach_the_collector_queue_by_topic_identity_once);
async fn agent_rejects_reach_the_collector_queue_by_topic_identity_once(backend: Backend) {
    let dir = TempDir::new("operator-agent-rejects");
    let Some(store) = Store::start(backend, &dir) else {
        return;
    };
    let f = fleet_on(store, &dir, "").await;
    let (c, a) = (f.c.as_str(), f.a.as_str());
    wait_for("the agent validates with the catalog", WAIT, || async {
        get(&format!("{a}/v1/status")).await.body["validating"] == true
    })
    .await;
    let body = json!([
        {"sku": "MUG", "kind": "receipt", "quantity": 1, "bin": "A-01"},
        {"sku": "NOPE-7", "kind": "receipt", "quantity": 2, "bin": "A-01"}
    ]);
    let r = post(&format!("{a}/v1/movements"), &body.to_string(), &[]).await;
    assert_eq!(r.status, 422, "{:?}", r.body);

    // The agent keeps its copy; the collector's queue shows it with record, source and field.
    let kept = get(&format!("{a}/v1/rejects")).await.body;
    assert_eq!(kept.as_array().unwrap().len(), 1, "{kept}");
    let e = wait_exceptions(c, "kind=agent_reject", 1).await;
    let e = &e[0];
    assert_eq!(e["warehouse"], "ams", "{e}");
    assert_eq!(e["sku"], "NOPE-7", "{e}");
    assert_eq!(
        e["record"]["quantity"], 2,
        "the refused record as received: {e}"
    );
    assert!(e["field"].as_str().unwrap().ends_with("sku"), "{e}");
    assert!(e["source"].as_str().unwrap().contains("agent ams-1"), "{e}");
    assert!(e["reason"].as_str().unwrap().contains("NOPE-7"), "{e}");

    // Both APIs describe themselves (OpenAPI 3.1, generated from the handlers).
    let described = [
        (c, "/v1/exceptions/{id}/{action}"),
        (a, "/v1/rejects/{id}/retry"),
    ];
    for (base, path) in described {
        let doc = get(&format!("{base}/openapi.json")).await;
        assert_eq!(
            (doc.status, doc.body["openapi"].as_str()),
            (200, Some("3.1.0"))
        );
        assert!(
            doc.body["paths"][path]["post"].is_object(),
            "{base}: {path}"
        );
    }

    // Retried from the collector's queue before the catalog knows NOPE-7: the agent refuses
    // it again; the exception opens again with one attempt and the agent's reason.
    let eid = e["id"].as_str().unwrap().to_string();
    let r = act(c, &eid, "retry", json!({"by": "ops", "comment": "try"})).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (202, Some("retrying")),
        "{:?}",
        r.body
    );
    wait_for("the agent's answer: still refused", WAIT, || async {
        let e = get(&format!("{c}/v1/exceptions/{eid}")).await.body;
        e["status"] == "open" && e["attempts"] == 1
    })
    .await;
    let again = get(&format!("{c}/v1/exceptions/{eid}")).await.body;
    let last = again["log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "retry failed", "{again}");
    assert!(
        last["comment"].as_str().unwrap().contains("NOPE-7"),
        "{again}"
    );

    // Identity is the topic: a reject published for ber is ber's, whatever its payload says;
    // sent twice it is one record. Hostile bytes land in the collector's rejects queue and
    // the consumer goes on.
    let probe = MqttProbe::connect(f.collector.broker.port, "forger").await;
    let forged = json!({"kind": "reject", "id": 1, "received_at_ms": 5, "source": "http", "record": null,
        "field": "$.sku", "detail": "claims to be ams", "payload": "{\"warehouse\":\"ams\"}"});
    for _ in 0..2 {
        probe
            .publish(
                "stocksync/v1/ber/rejects/ber-9",
                forged.to_string().into_bytes(),
            )
            .await;
    }
    probe
        .publish("stocksync/v1/ber/rejects/ber-9", b"\xffnot json".to_vec())
        .await;
    probe
        .publish("stocksync/v1/ber/rejects/ber-9", vec![b' '; 40_000])
        .await;
    let ber = wait_exceptions(c, "kind=agent_reject&warehouse=ber", 1).await;
    assert!(
        ber[0]["source"].as_str().unwrap().contains("agent ber-9"),
        "{}",
        ber[0]
    );
    wait_for(
        "two hostile payloads in the collector's rejects",
        WAIT,
        || async {
            get(&format!("{c}/v1/rejects"))
                .await
                .body
                .as_array()
                .is_some_and(|r| {
                    r.iter()
                        .filter(|r| r["topic"] == "stocksync/v1/ber/rejects/ber-9")
                        .count()
                        == 2
                })
        },
    )
    .await;
    // Still consuming: a later reject arrives.
    let r = post(
        &format!("{a}/v1/movements"),
        &json!({"sku": "ALSO-NOT", "kind": "receipt", "quantity": 1, "bin": "A-01"}).to_string(),
        &[],
    )
    .await;
    assert_eq!(r.status, 422);
    wait_exceptions(c, "kind=agent_reject&warehouse=ams", 2).await;
    let ber = get(&format!(
        "{c}/v1/exceptions/{}",
        ber[0]["id"].as_str().unwrap()
    ))
    .await
    .body;
    assert_eq!(ber["occurrences"], 1, "a resend is the same reject: {ber}");

    // The catalog learns the SKU. Retried from the collector's queue, the agent journals the
    // request exactly once and the exception resolves; retried again (from the queue, or on
    // the agent itself), nothing more is journaled.
    let reject_id = kept[0]["id"].as_i64().unwrap();
    let retry = format!("{a}/v1/rejects/{reject_id}/retry");
    let still = post(&retry, "", &[]).await;
    assert_eq!(
        (still.status, still.body["field"].as_str()),
        (422, Some("$[1].sku")),
        "{:?}",
        still.body
    );
    let broker_port = f.collector.broker.port;
    f.collector.stop().await.unwrap();
    let more = "[[catalog.skus]]\nid = \"NOPE-7\"\n";
    let collector = f.store.collector(&dir, broker_port, more).await;
    let c = format!("http://{}", collector.http_addr);
    wait_for("the agent has the new catalog", WAIT, || async {
        get(&format!("{a}/v1/status")).await.body["catalog_skus"] == 3
    })
    .await;
    let resolved = || async {
        let e = get(&format!("{c}/v1/exceptions/{eid}")).await.body;
        e["status"] == "resolved"
            && e["log"].as_array().unwrap().last().unwrap()["action"] == "retried"
    };
    for attempt in [2, 3] {
        let r = act(
            &c,
            &eid,
            "retry",
            json!({"by": "ops", "comment": "catalog fixed"}),
        )
        .await;
        assert_eq!(
            (r.status, r.body["attempts"].as_i64()),
            (202, Some(attempt)),
            "{:?}",
            r.body
        );
        wait_for("the agent journaled it", WAIT, resolved).await;
    }
    let log = get(&format!("{c}/v1/exceptions/{eid}")).await.body["log"].clone();
    let comments: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["action"] == "retried")
        .map(|l| l["comment"].as_str().unwrap())
        .collect();
    assert_eq!(comments.len(), 2, "{log}");
    let again = post(&retry, "", &[]).await;
    assert_eq!(again.body["outcome"], "already_applied", "{:?}", again.body);
    wait_for("the retried request counted once", WAIT, || async {
        on_hand(&c, "NOPE-7").await == 2 && on_hand(&c, "MUG").await == 1
    })
    .await;
    assert_eq!(
        get(&format!("{a}/v1/status")).await.body["last_seq"],
        2,
        "journaled once"
    );
    f.agent.stop().await.unwrap();
    collector.stop().await.unwrap();
}

/// The holder of `warehouse`'s unexpired lease, if any.
fn lease_holder(pg: &Postgres, warehouse: &str) -> Option<String> {
    let id = pg.query(&format!(
        "SELECT worker_id FROM leases WHERE warehouse = '{warehouse}' AND expires_at > now()"
    ));
    (!id.is_empty()).then_some(id)
}

/// An agent reject as an agent forwards it.
fn agent_reject(id: i64, detail: &str) -> Vec<u8> {
    json!({"kind": "reject", "id": id, "received_at_ms": 1000 + id, "source": "http",
           "record": null, "field": "$.sku", "detail": detail,
           "payload": "{\"sku\":\"NOPE\"}"})
    .to_string()
    .into_bytes()
}

/// On PostgreSQL an agent's rejects are received by the worker holding its warehouse's
/// lease, and follow the lease: after that worker is SIGKILLed, the worker that takes the
/// warehouse over receives the next one. Each is stored once, under the topic's warehouse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_agent_rejects_follow_the_warehouse_leases() {
    let dir = TempDir::new("operator-pg-rejects");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let mut workers: Vec<Service> = ["w1", "w2"]
        .iter()
        .map(|id| {
            let port = free_port();
            let store = format!(
                "\n[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"{id}\"\nlease_secs = 3\nwarehouses = [\"ams\", \"ber\"]\n",
                pg.url
            );
            let text = collector_toml(&dir, broker.port, port, &format!("{}{store}", extra(&dir, "")))
                .replace(
                    &format!("{:?}", dir.join("ledger.db")),
                    &format!("{:?}", dir.join(&format!("unused-{id}.db"))),
                );
            Service::start(&dir, "stocksync-collector", id, &text, port)
        })
        .collect();
    wait_blocking(Duration::from_secs(20), || {
        lease_holder(&pg, "ams").is_some() && lease_holder(&pg, "ber").is_some()
    })
    .expect("both warehouses are held");
    let probe = MqttProbe::connect(broker.port, "agents").await;
    let c = workers[0].url.clone();
    // Sent twice each (a resend): one record each, under the topic's warehouse.
    wait_for("the holders subscribed", WAIT, || async {
        for (warehouse, id) in [("ams", 1), ("ber", 2)] {
            let topic = format!("stocksync/v1/{warehouse}/rejects/{warehouse}-1");
            probe
                .publish(&topic, agent_reject(id, &format!("bad at {warehouse}")))
                .await;
        }
        let listed = get(&format!("{c}/v1/exceptions?kind=agent_reject"))
            .await
            .body;
        listed["total"] == 2
    })
    .await;
    for warehouse in ["ams", "ber"] {
        let e =
            &wait_exceptions(&c, &format!("kind=agent_reject&warehouse={warehouse}"), 1).await[0];
        assert_eq!(e["occurrences"], 1, "{e}");
        assert!(
            e["source"]
                .as_str()
                .unwrap()
                .contains(&format!("agent {warehouse}-1")),
            "{e}"
        );
    }
    assert_eq!(pg.query("SELECT count(*) FROM agent_rejects"), "2");

    // The holder of ams dies; the other worker takes ams over and receives its next reject.
    let holder = lease_holder(&pg, "ams").expect("ams is held");
    let (dead, alive) = if holder == "w1" { (0, 1) } else { (1, 0) };
    workers[dead].kill();
    wait_blocking(Duration::from_secs(20), || {
        lease_holder(&pg, "ams").is_some_and(|w| w != holder)
    })
    .expect("ams is taken over");
    let c = workers[alive].url.clone();
    wait_for("the new holder receives ams's rejects", WAIT, || async {
        probe
            .publish(
                "stocksync/v1/ams/rejects/ams-1",
                agent_reject(3, "bad at ams"),
            )
            .await;
        pg.query("SELECT count(*) FROM agent_rejects WHERE warehouse = 'ams'") == "2"
    })
    .await;
    let e = &wait_exceptions(&c, "kind=agent_reject&warehouse=ams", 1).await[0];
    assert_eq!(e["occurrences"], 2, "two rejects of the same kind: {e}");
}
