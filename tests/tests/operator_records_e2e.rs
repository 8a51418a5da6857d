//! The operator's records and views on both backends, by one script: a collector process
//! (SQLite, then a PostgreSQL worker), a real broker (embedded or Mosquitto) and two real
//! agents. The script makes every kind of record the ledger keeps: drift (a count short of
//! what was received), a conflict (a scanner counting a WMS location), a shortfall (an
//! inspection of more than quality control holds), a transfer discrepancy (9 received of
//! 10 shipped), a reversal (a return before its shipment, then settled by it), a
//! collector reject (a hostile payload) and a movement of a SKU the catalog does not know,
//! retried (from the queue, and by `/v1/rejects/<id>/retry`) before and after the catalog
//! learns it, applied once.
//! An operator resolves, comments on and ignores exceptions, one by one and in bulk. Each backend must show them in
//! `/v1/exceptions`
//! with record, source and field, and explain the count in `/v1/stock/<sku>/history` with
//! its drift inline, and list them in `/v1/drift`, `/v1/conflicts`, `/v1/discrepancies`,
//! `/v1/reversals` and `/v1/shortfalls`; and both backends must answer the same JSON, but
//! for the times that say when each run happened.
//!
//! Without PostgreSQL installed the PostgreSQL half prints a notice and the test checks
//! SQLite alone; CI sets `STOCKSYNC_REQUIRE_POSTGRES=1`, which makes it fail instead.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use stocksync_agent::Agent;
use stocksync_common::model::*;
use stocksync_common::wire::{self, Batch};
use support::postgres::Postgres;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// The collector's catalog and policy: ams counts by the WMS; a scanner's count there is a
/// conflict, recorded and not applied.
const POLICY: &str = r#"
[catalog]
[[catalog.skus]]
id = "MUG"
[[catalog.skus]]
id = "LID"
[[locations]]
warehouse = "ams"
authority = "wms"
other_sources = "apply"
"#;

/// A collector process on `broker`; `store` is its `[store]` table ("" for SQLite).
fn collector(dir: &TempDir, broker: u16, store: &str) -> Service {
    let port = free_port();
    let text = collector_toml(dir, broker, port, &format!("{POLICY}{store}"));
    Service::start(dir, "stocksync-collector", "collector", &text, port)
}

/// Answers without what says when they were made (every run has its own clock).
fn timeless(mut v: Value) -> Value {
    const TIMES: [&str; 8] = [
        "first_seen_ms",
        "last_seen_ms",
        "status_at_ms",
        "recorded_at_ms",
        "revised_at_ms",
        "updated_at_ms",
        "at_ms",
        "received_at_ms",
    ];
    match &mut v {
        Value::Object(map) => {
            for k in TIMES {
                map.remove(k);
            }
            for x in map.values_mut() {
                *x = timeless(x.take());
            }
        }
        Value::Array(items) => {
            for x in items.iter_mut() {
                *x = timeless(x.take());
            }
        }
        _ => {}
    }
    v
}

/// The exceptions a filter selects, once there are `n` with `status`.
async fn wait_exceptions(c: &str, query: &str, n: usize, status: &str) -> Vec<Value> {
    let url = format!("{c}/v1/exceptions?{query}");
    wait_for(
        &format!("{n} {status} exceptions for {query}"),
        WAIT,
        || async {
            get(&url).await.body["items"]
                .as_array()
                .is_some_and(|a| a.len() == n && a.iter().all(|e| e["status"] == status))
        },
    )
    .await;
    get(&url).await.body["items"].as_array().unwrap().clone()
}

/// Waits until the agent has `what` (a condition on its `/v1/status`).
async fn agent_until(agent: &str, what: &str, cond: impl Fn(&Value) -> bool) {
    let url = format!("{agent}/v1/status");
    wait_for(what, WAIT, || async { cond(&get(&url).await.body) }).await;
}

/// Posts one movement to an agent, dated `minute` minutes after `base`, and waits until
/// the collector acknowledged it: movements reach the collector in the script's order, so
/// what the queue first shows of each record is the same on every run (the records
/// themselves do not depend on arrival order; an exception's reason is its first sight).
async fn post_at(agent: &str, base: i64, minute: i64, mut body: Value) {
    let at = OccurredAt {
        unix_ms: base + minute * 60_000,
        offset_seconds: 0,
    };
    body["occurred_at"] = json!(at.to_rfc3339());
    let r = post(&format!("{agent}/v1/movements"), &body.to_string(), &[]).await;
    assert_eq!(r.status, 202, "{body} -> {:?}", r.body);
    agent_until(agent, "the movement acknowledged", |s| s["backlog"] == 0).await;
}

/// A batch of agent `ams-2` receiving 7 GHOST at ams, dated `base`.
fn ghost_batch(base: i64) -> Batch {
    let m = Movement {
        seq: 1,
        sku: Sku("GHOST".into()),
        location: Location {
            warehouse: "ams".into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 7,
        unit: "each".into(),
        unit_quantity: 7,
        occurred_at: OccurredAt {
            unix_ms: base + 9 * 60_000,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Default::default(),
    };
    Batch {
        agent_id: "ams-2".into(),
        journal_id: 9,
        warehouse: "ams".into(),
        movements: vec![m],
        sent_at_ms: None,
    }
}

/// The script against one collector; returns what an operator reads afterwards: the queue
/// (every exception in full, by id) and the histories of MUG at ams and its bin.
async fn operator_day(dir: &TempDir, store: &str, base: i64) -> Value {
    let broker = Broker::start(dir);
    let mut service = collector(dir, broker.port, store);
    let c = service.url.clone();
    if !store.is_empty() {
        let health = get(&format!("{c}/healthz")).await.body;
        assert_eq!(health["backend"], "postgres", "{health}");
    }
    let agent_text = agent_toml(dir, "ams-1", "ams", broker.port, 0, "")
        .replace("[http]\n", "[http]\nsources = [\"wms\", \"scanner\"]\n");
    let ams = Agent::start(toml_config(&agent_text)).await.expect("agent");
    let ber = Agent::start(agent_config(dir, "ber-1", "ber", broker.port, 0))
        .await
        .expect("agent");
    let (a, b) = (
        format!("http://{}", ams.http_addr),
        format!("http://{}", ber.http_addr),
    );

    // Both agents validate against the collector's catalog before the first movement.
    for agent in [&a, &b] {
        agent_until(agent, "the catalog", |s| s["validating"] == true).await;
    }

    // Drift: the WMS counts 7 of the 10 received. Conflict: a scanner counts 9.
    let mug = |kind: &str, quantity: u64, source: &str| json!({"sku": "MUG", "kind": kind, "quantity": quantity, "bin": "A-01", "source": source});
    post_at(&a, base, 0, mug("receipt", 10, "wms")).await;
    post_at(&a, base, 1, mug("count", 7, "wms")).await;
    post_at(&a, base, 2, mug("count", 9, "scanner")).await;
    let drift = wait_exceptions(&c, "kind=drift&sku=MUG", 1, "open").await;
    assert_eq!(drift[0]["record"]["quantity"], 7, "{}", drift[0]);
    assert!(
        drift[0]["reason"].as_str().unwrap().contains("expected 10"),
        "{}",
        drift[0]
    );
    assert_eq!(drift[0]["field"], "$.quantity");
    let conflict = wait_exceptions(&c, "kind=conflict", 1, "open").await;
    assert_eq!(conflict[0]["record"]["source"], "scanner");

    // A shortfall: an inspection of 4 where quality control holds nothing.
    let inspection = json!({"sku": "MUG", "kind": "inspection", "outcome": "available",
                            "quantity": 4, "bin": "A-01", "source": "wms"});
    post_at(&a, base, 3, inspection).await;
    let shortfall = wait_exceptions(&c, "kind=shortfall&warehouse=ams", 1, "open").await;
    assert_eq!(shortfall[0]["record"]["quantity"], 4, "{}", shortfall[0]);

    // A transfer of 10 from ams of which ber receives 9.
    let receipt = json!({"sku": "LID", "kind": "receipt", "quantity": 20, "source": "wms"});
    post_at(&a, base, 4, receipt).await;
    let out = json!({"sku": "LID", "kind": "transfer_out", "quantity": 10, "source": "wms",
                     "transfer": "T-1", "peer_warehouse": "ber"});
    post_at(&a, base, 5, out).await;
    let inn = json!({"sku": "LID", "kind": "transfer_in", "quantity": 9,
                     "transfer": "T-1", "peer_warehouse": "ams"});
    post_at(&b, base, 6, inn).await;
    let d = wait_exceptions(&c, "kind=discrepancy", 1, "open").await;
    assert_eq!(
        (&d[0]["record"]["shipped"], &d[0]["record"]["received"]),
        (&json!(10), &json!(9))
    );

    // A return before the shipment it reverses: open, until the shipment settles it.
    let ret =
        json!({"sku": "LID", "kind": "return", "quantity": 2, "order": "SO-1", "source": "wms"});
    post_at(&a, base, 7, ret).await;
    let r = wait_exceptions(&c, "kind=reversal", 1, "open").await;
    assert_eq!(r[0]["record"]["excess"], 2, "{}", r[0]);
    let ship =
        json!({"sku": "LID", "kind": "shipment", "quantity": 3, "order": "SO-1", "source": "wms"});
    post_at(&a, base, 8, ship).await;
    wait_exceptions(&c, "kind=reversal", 1, "resolved").await;

    // A hostile payload on the movements topic: a collector reject.
    publish_once(
        broker.port,
        "hostile",
        "stocksync/v1/ams/movements",
        b"not a batch".to_vec(),
    )
    .await;
    wait_exceptions(&c, "kind=collector_reject", 1, "open").await;

    // A SKU the catalog does not know yet: refused on `$.sku`; retried once the catalog has
    // it, it applies exactly once.
    // (Straight onto the broker as a second agent: the real agent knows the catalog and
    // would refuse it at its own door.)
    publish_once(
        broker.port,
        "ams-2",
        "stocksync/v1/ams/movements",
        wire::encode_batch(&ghost_batch(base)),
    )
    .await;
    let queued = wait_exceptions(&c, "kind=collector_reject&sku=GHOST", 1, "open").await;
    let exception = queued[0]["id"].as_str().unwrap().to_string();
    let act = |action: &str, id: &str| {
        let url = format!("{c}/v1/exceptions/{id}/{action}");
        async move {
            let body = json!({"by": "ops", "comment": "catalog fixed?"}).to_string();
            post(&url, &body, &[]).await
        }
    };
    // Retried from the queue before the fix: open again, one attempt, the reason.
    let r = act("retry", &exception).await;
    assert_eq!(
        (r.status, &r.body["status"]),
        (200, &json!("open")),
        "{}",
        r.body
    );
    assert_eq!(r.body["attempts"], 1, "{}", r.body);
    assert!(
        r.body["reason"].as_str().unwrap().contains("GHOST"),
        "{}",
        r.body
    );
    // A drift is not a record to process again: 409 naming the kind.
    let r = act("retry", drift[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (409, &json!("kind")),
        "{}",
        r.body
    );
    let rejects = get(&format!("{c}/v1/rejects")).await.body;
    let ghost = rejects
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["field"] == "$.sku")
        .unwrap_or_else(|| panic!("the GHOST reject: {rejects}"))["id"]
        .clone();
    let retry = format!("{c}/v1/rejects/{ghost}/retry");
    let r = post(&retry, "", &[]).await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (422, &json!("id")),
        "{}",
        r.body
    );
    assert!(
        r.body["detail"].as_str().unwrap().contains("GHOST"),
        "{}",
        r.body
    );
    let config = dir.join("collector.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "id = \"LID\"\n",
        "id = \"LID\"\n[[catalog.skus]]\nid = \"GHOST\"\n",
    );
    std::fs::write(&config, text).unwrap();
    service.restart();
    // Once the catalog has it: from the queue (applied, resolved), from the queue again and
    // from the rejects list (already applied): 7 GHOST, once.
    let r = act("retry", &exception).await;
    assert_eq!(
        (r.status, &r.body["status"], &r.body["applied"]),
        (200, &json!("resolved"), &json!(1)),
        "{}",
        r.body
    );
    let r = act("retry", &exception).await;
    assert_eq!(
        (&r.body["already_applied"], &r.body["attempts"]),
        (&json!(1), &json!(3)),
        "{}",
        r.body
    );
    let r = post(&retry, "", &[]).await;
    assert_eq!(
        (r.status, &r.body["outcome"]),
        (200, &json!("already_applied")),
        "{}",
        r.body
    );
    assert_eq!(on_hand(&c, "GHOST").await, 7);
    wait_exceptions(&c, "kind=collector_reject&sku=GHOST", 1, "resolved").await;

    // The operator works the queue: resolves the drift (once), comments on the conflict and
    // ignores it; an unknown action names the known ones.
    let (drift_id, conflict_id) = (
        drift[0]["id"].as_str().unwrap(),
        conflict[0]["id"].as_str().unwrap(),
    );
    for (action, id, status, want) in [
        ("resolve", drift_id, 200, json!("resolved")),
        ("resolve", drift_id, 409, Value::Null),
        ("comment", conflict_id, 200, json!("open")),
        ("ignore", conflict_id, 200, json!("ignored")),
        ("frobnicate", conflict_id, 404, Value::Null),
    ] {
        let r = act(action, id).await;
        assert_eq!(
            (r.status, &r.body["status"]),
            (status, &want),
            "{action}: {}",
            r.body
        );
    }

    // In bulk: resolve every shortfall; retry every open discrepancy (skipped: not a record
    // to process again).
    let bulk = |action: &str, kind: &str| {
        let url = format!("{c}/v1/exceptions/{action}");
        let body = json!({"by": "ops", "comment": "weekly sweep", "filter": {"kind": kind}});
        async move { post(&url, &body.to_string(), &[]).await }
    };
    let r = bulk("resolve", "shortfall").await;
    assert_eq!(
        (r.status, &r.body["changed"]),
        (200, &json!(1)),
        "{}",
        r.body
    );
    let r = bulk("retry", "discrepancy").await;
    assert_eq!(
        (r.status, r.body["skipped"].as_array().map(Vec::len)),
        (200, Some(1)),
        "{}",
        r.body
    );
    let r = bulk("resolve", "nonsense").await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (400, &json!("kind")),
        "{}",
        r.body
    );

    // What the operator reads: the whole queue, each exception in full, and the history.
    let mut queue = serde_json::Map::new();
    let list = get(&format!("{c}/v1/exceptions?limit=1000")).await.body;
    assert_eq!(list["total"], 7, "{list}");
    for e in list["items"].as_array().unwrap() {
        let id = e["id"].as_str().unwrap();
        let one = get(&format!("{c}/v1/exceptions/{id}")).await;
        assert_eq!(one.status, 200, "{}", one.body);
        queue.insert(id.to_string(), one.body);
    }
    let bad = get(&format!("{c}/v1/exceptions?kind=nonsense")).await;
    assert_eq!((bad.status, &bad.body["field"]), (400, &json!("kind")));
    let mut history = serde_json::Map::new();
    for location in ["ams", "ams/A-01"] {
        let h = get(&format!("{c}/v1/stock/MUG/history?location={location}")).await;
        assert_eq!(h.status, 200, "{location}: {}", h.body);
        assert_eq!(h.body["explained"], true, "{location}: {}", h.body);
        history.insert(location.to_string(), h.body);
    }
    let mut audit = serde_json::Map::new();
    for list in [
        "drift?sku=MUG",
        "conflicts?all=true",
        "discrepancies",
        "reversals",
        "shortfalls?warehouse=ams",
    ] {
        let r = get(&format!("{c}/v1/{list}")).await;
        assert_eq!(r.status, 200, "{list}: {}", r.body);
        audit.insert(list.to_string(), r.body);
    }
    assert_eq!(audit["drift?sku=MUG"][0]["expected"], 10);
    assert_eq!(audit["discrepancies"][0]["received"], 9);
    let count = history["ams/A-01"]["movements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "count" && m["source"] == "wms")
        .cloned()
        .expect("the count in the history");
    assert_eq!(count["drift"]["difference"], -3, "{count}");
    ams.stop().await.unwrap();
    ber.stop().await.unwrap();
    drop(service);
    timeless(json!({"exceptions": queue, "history": history, "audit": audit}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_shortfalls_and_the_queue_read_the_same_on_sqlite_and_postgres() {
    // One clock for both runs, an hour back: the movements are the same on both.
    let base = OccurredAt::now().unix_ms / 60_000 * 60_000 - 3_600_000;
    let sqlite_dir = TempDir::new("records-sqlite");
    let sqlite = operator_day(&sqlite_dir, "", base).await;
    let dir = TempDir::new("records-postgres");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let store = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"w1\"\nlease_secs = 3\nwarehouses = [\"ams\", \"ber\"]\n",
        pg.url
    );
    let postgres = operator_day(&dir, &store, base).await;
    for part in ["exceptions", "history", "audit"] {
        assert_eq!(
            postgres[part], sqlite[part],
            "{part}: postgres differs from sqlite"
        );
    }
}
