//! Channel publishing on the PostgreSQL backend end to end: a real PostgreSQL (its own
//! server per test), a real broker, agents posting movements, workers as libraries or as
//! real processes, and a channel subscriber that records every message it receives.
//!
//! - One worker: the channel's retained MQTT values and its feed follow the movements.
//! - Failover: three worker processes on one database, four agents streaming receipts (so
//!   stock only grows); the worker holding the publisher lease is SIGKILLed mid-stream.
//!   Another takes the lease within the lease time, the subscriber's final values equal the
//!   stock, and no SKU's value or version (cursor) ever goes back.
//!
//! Without PostgreSQL installed these tests print a notice and pass; CI sets
//! `STOCKSYNC_REQUIRE_POSTGRES=1`, which makes them fail instead.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use stocksync_collector::Collector;
use support::postgres::Postgres;
use support::*;

const WAIT: Duration = Duration::from_secs(30);
const WAREHOUSES: [&str; 4] = ["ams", "ber", "cph", "dub"];
const LEASE_SECS: u64 = 3;

/// A worker's `[store]` and the channels every worker shares.
fn worker_extra(pg: &Postgres, worker_id: &str) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"{worker_id}\"\nlease_secs = {LEASE_SECS}\nwarehouses = {WAREHOUSES:?}\n\
         [[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\nmqtt = true\n\
         [[channels.channel]]\nname = \"outlet\"\nlocations = [\"ams\"]\nsafety_units = 2\nmqtt = true\n",
        pg.url
    )
}

/// One message a channel subscriber received.
#[derive(Debug, Clone)]
struct Seen {
    channel: String,
    sku: String,
    sellable: u64,
    cursor: i64,
}

/// Records every message on every channel's sellable topics, in arrival order.
struct Subscriber {
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Subscriber {
    async fn start(port: u16) -> Subscriber {
        let mut probe = MqttProbe::connect(port, "channel-subscriber").await;
        probe.subscribe("stocksync/v1/channels/+/sellable/+").await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let p = probe.next(Duration::from_secs(3600)).await;
                let v: Value = serde_json::from_slice(&p.payload).expect("channel payload");
                record.lock().unwrap().push(Seen {
                    channel: v["channel"].as_str().expect("channel").into(),
                    sku: v["sku"].as_str().expect("sku").into(),
                    sellable: v["sellable"].as_u64().expect("sellable"),
                    cursor: v["cursor"].as_i64().expect("cursor"),
                });
            }
        });
        Subscriber { seen, task }
    }

    /// The last value received per (channel, SKU).
    fn last(&self) -> BTreeMap<(String, String), u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| ((s.channel.clone(), s.sku.clone()), s.sellable))
            .collect()
    }

    async fn wait_last(&self, want: &[(&str, &str, u64)]) {
        let want: BTreeMap<(String, String), u64> = want
            .iter()
            .map(|(c, s, v)| ((c.to_string(), s.to_string()), *v))
            .collect();
        let deadline = Instant::now() + WAIT;
        loop {
            let last = self.last();
            if want.iter().all(|(k, v)| last.get(k) == Some(v)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "channel values {last:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Per (channel, SKU), its version (cursor) never went back, nor its value when stock
    /// only grows. Returns the number of messages received.
    fn assert_never_back(&self, stock_only_grows: bool) -> usize {
        let seen = self.seen.lock().unwrap();
        let mut last: BTreeMap<(&str, &str), &Seen> = BTreeMap::new();
        for s in seen.iter() {
            if let Some(prev) = last.insert((&s.channel, &s.sku), s) {
                assert!(
                    s.cursor >= prev.cursor && (!stock_only_grows || s.sellable >= prev.sellable),
                    "{}/{} went back from {prev:?} to {s:?}",
                    s.channel,
                    s.sku
                );
            }
        }
        seen.len()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_agent(
    dir: &TempDir,
    warehouse: &str,
    broker: u16,
) -> (String, stocksync_agent::Agent) {
    let text = agent_toml(
        dir,
        &format!("{warehouse}-1"),
        warehouse,
        broker,
        0,
        "[forward]\nbatch_max = 20\nack_timeout_ms = 2000\n",
    );
    let agent = stocksync_agent::Agent::start(toml_config(&text))
        .await
        .expect("agent starts");
    (format!("http://{}", agent.http_addr), agent)
}

/// A channel's feed as served, without the fields that name when or in which log
/// position it was stored.
async fn feed(url: &str, channel: &str) -> Value {
    let mut v = get(&format!("{url}/v1/channels/{channel}/sellable"))
        .await
        .body;
    v.as_object_mut().expect("feed").remove("cursor");
    for item in v["items"].as_array_mut().expect("items") {
        let item = item.as_object_mut().expect("item");
        item.remove("cursor");
        item.remove("updated_at_ms");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_worker_publishes_channels_from_the_outbox() {
    let dir = TempDir::new("pg-channels");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let subscriber = Subscriber::start(broker.port).await;
    let worker = Collector::start(toml_config(&collector_toml(
        &dir,
        broker.port,
        0,
        &worker_extra(&pg, "w1"),
    )))
    .await
    .expect("postgres worker starts with channels");
    // A SQLite collector beside it, fed the same movements, serves the feed to compare.
    let dir_b = TempDir::new("pg-channels-sqlite");
    let broker_b = Broker::start(&dir_b);
    let sqlite = Collector::start(toml_config(&collector_toml(
        &dir_b,
        broker_b.port,
        0,
        "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\nmqtt = true\n",
    )))
    .await
    .expect("sqlite collector starts");
    let mut agents = Vec::new();
    for (d, port) in [(&dir, broker.port), (&dir_b, broker_b.port)] {
        agents.push([
            start_agent(d, "ams", port).await,
            start_agent(d, "ber", port).await,
        ]);
    }
    let post_both = |at: usize, body: Value| {
        let urls: Vec<String> = agents.iter().map(|a| a[at].0.clone()).collect();
        async move {
            for url in urls {
                let r = post(&format!("{url}/v1/movements"), &body.to_string(), &[]).await;
                assert!(r.status < 300, "{}", r.body);
            }
        }
    };
    let (ams, ber) = (0, 1);
    post_both(
        ams,
        serde_json::json!({"sku": "MUG", "kind": "receipt", "quantity": 10}),
    )
    .await;
    post_both(
        ber,
        serde_json::json!({"sku": "MUG", "kind": "receipt", "quantity": 5}),
    )
    .await;
    // web pools every warehouse; outlet sells ams only, keeping 2 back.
    subscriber
        .wait_last(&[("web", "MUG", 15), ("outlet", "MUG", 8)])
        .await;
    post_both(
        ams,
        serde_json::json!({"sku": "MUG", "kind": "shipment", "quantity": 4}),
    )
    .await;
    post_both(
        ber,
        serde_json::json!({"sku": "LID", "kind": "receipt", "quantity": 3}),
    )
    .await;
    subscriber
        .wait_last(&[("web", "MUG", 11), ("outlet", "MUG", 4), ("web", "LID", 3)])
        .await;
    // outlet does not sell from ber: its LID is 0 if it is listed at all.
    let outlet_lid = subscriber
        .last()
        .get(&("outlet".into(), "LID".into()))
        .copied();
    assert!(matches!(outlet_lid, None | Some(0)), "{outlet_lid:?}");
    // Consumed outbox rows are pruned; the stored values carry their version.
    wait_for("the outbox is consumed", WAIT, || async {
        pg.query("SELECT count(*) FROM outbox") == "0"
    })
    .await;
    assert_eq!(
        pg.query("SELECT value FROM channel_sellable WHERE channel = 'web' AND sku = 'MUG'"),
        "11"
    );
    assert_eq!(
        pg.query("SELECT worker_id FROM publisher_lease WHERE expires_at > now()"),
        "w1"
    );
    subscriber.assert_never_back(false);

    // The channel API serves the same JSON as the SQLite collector's.
    let (a, b) = (
        format!("http://{}", sqlite.http_addr),
        format!("http://{}", worker.http_addr),
    );
    wait_for("the sqlite feed catches up", WAIT, || async {
        feed(&a, "web").await == feed(&b, "web").await
    })
    .await;
    let served = feed(&b, "web").await;
    assert_eq!(
        served["items"].as_array().map(Vec::len),
        Some(2),
        "{served}"
    );
    let snapshot = get(&format!("{b}/v1/channels/web/sellable")).await.body;
    let cursor = snapshot["cursor"].as_i64().expect("cursor");
    let first = snapshot["items"][0]["cursor"]
        .as_i64()
        .expect("item cursor");
    let changes = get(&format!("{b}/v1/channels/web/sellable?since={}", first - 1)).await;
    assert_eq!(changes.status, 200, "{}", changes.body);
    assert_eq!(changes.body["cursor"], cursor, "{}", changes.body);
    assert_eq!(changes.body["more"], false);
    let keys =
        |v: &Value| -> Vec<String> { v.as_object().expect("object").keys().cloned().collect() };
    let (listed_a, listed_b) = (
        get(&format!("{a}/v1/channels")).await.body,
        get(&format!("{b}/v1/channels")).await.body,
    );
    assert_eq!(
        keys(&listed_a[0]),
        keys(&listed_b[0]),
        "{listed_a} / {listed_b}"
    );
    assert_eq!(listed_b[1]["name"], "web");
    assert_eq!(listed_b[1]["cursor"], cursor);
    assert_eq!(
        get(&format!("{b}/v1/channels/web/errors")).await.body,
        serde_json::json!([])
    );
    let r = get(&format!("{b}/v1/channels/nope")).await;
    assert_eq!((r.status, &r.body["field"]), (404, &Value::from("channel")));
    let (r, _) = request(
        "PUT",
        &format!("{b}/v1/channels/web/mode"),
        Some(r#"{"mode": "frozen"}"#),
        &[],
    )
    .await;
    assert_eq!(
        (r.status, &r.body["error"]),
        (501, &Value::from("not_supported_on_backend"))
    );
    for pair in agents {
        for (_, agent) in pair {
            agent.stop().await.unwrap();
        }
    }
    worker.stop().await.unwrap();
    sqlite.stop().await.unwrap();
}

/// A worker process on the shared database and broker.
fn start_worker(dir: &TempDir, pg: &Postgres, broker: u16, id: &str) -> Service {
    let port = free_port();
    let text = collector_toml(dir, broker, port, &worker_extra(pg, id)).replace(
        &format!("{:?}", dir.join("ledger.db")),
        &format!("{:?}", dir.join(&format!("unused-{id}.db"))),
    );
    Service::start(dir, "stocksync-collector", id, &text, port)
}

/// The worker holding the unexpired publisher lease, if any.
fn publisher(pg: &Postgres) -> Option<String> {
    let id = pg.query("SELECT worker_id FROM publisher_lease WHERE expires_at > now()");
    (!id.is_empty()).then_some(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_fails_over_and_no_channel_value_goes_back() {
    let dir = TempDir::new("pg-channel-failover");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let subscriber = Subscriber::start(broker.port).await;
    let mut workers: BTreeMap<&str, Service> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|id| (id, start_worker(&dir, &pg, broker.port, id)))
        .collect();
    wait_blocking(Duration::from_secs(20), || publisher(&pg).is_some())
        .expect("a worker takes the publisher lease");

    // Four agents, one per warehouse, each posting receipts of one unit as a stream.
    const POSTS: usize = 150;
    const PER_POST: usize = 4;
    let mut agents = Vec::new();
    for warehouse in WAREHOUSES {
        agents.push(start_agent(&dir, warehouse, broker.port).await);
    }
    let (progress_tx, progress) = tokio::sync::watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let mut streams = Vec::new();
    for (url, _) in &agents {
        let (url, progress_tx) = (url.clone(), progress_tx.clone());
        streams.push(tokio::spawn(async move {
            for body in receipt_batches(POSTS * PER_POST, PER_POST, &["MUG", "LID"]) {
                let r = post(&format!("{url}/v1/movements"), &body, &[]).await;
                assert!(r.status < 300, "agent refused a post: {}", r.body);
                progress_tx.send_modify(|n| *n += 1);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }

    // Mid-stream, once the channel has shown some values: SIGKILL the publishing worker.
    tokio::time::timeout(WAIT, progress.clone().wait_for(|p| *p >= POSTS))
        .await
        .expect("agents keep posting")
        .unwrap();
    wait_for("the channel publishes mid-stream", WAIT, || async {
        !subscriber.last().is_empty()
    })
    .await;
    let first = publisher(&pg).expect("a publisher");
    let killed_at = Instant::now();
    workers.get_mut(first.as_str()).unwrap().kill();
    let mut next = None;
    wait_blocking(Duration::from_secs(20), || {
        next = publisher(&pg).filter(|w| *w != first);
        next.is_some()
    })
    .expect("another worker takes the publisher lease");
    let took = killed_at.elapsed();
    let posted = *progress.borrow();
    assert!(
        posted < POSTS * WAREHOUSES.len(),
        "the take-over happened mid-stream ({posted} posts)"
    );
    assert!(
        took <= Duration::from_secs(LEASE_SECS * 2),
        "take-over after {took:?}, lease {LEASE_SECS} s"
    );
    let received_at_kill = subscriber.seen.lock().unwrap().len();
    for s in streams {
        s.await.expect("stream task");
    }

    // The channel ends at the stock: every receipt, pooled (web) or at ams only (outlet).
    let per_sku = (POSTS * PER_POST / 2) as u64;
    let total = per_sku * WAREHOUSES.len() as u64;
    subscriber
        .wait_last(&[
            ("web", "MUG", total),
            ("web", "LID", total),
            ("outlet", "MUG", per_sku - 2),
            ("outlet", "LID", per_sku - 2),
        ])
        .await;
    let url = &workers[next.as_deref().unwrap()].url;
    assert_eq!(on_hand(url, "MUG").await, total as i64);
    let received = subscriber.assert_never_back(true);
    assert!(
        received > received_at_kill,
        "the new publisher published ({received_at_kill} messages before the kill, {received} after)"
    );
    let takeovers = pg.query(&format!(
        "SELECT count(*) FROM publisher_history WHERE previous_worker = '{first}'"
    ));
    assert_eq!(takeovers, "1", "the take-over is recorded");
    for (_, agent) in agents {
        agent.stop().await.unwrap();
    }
}
