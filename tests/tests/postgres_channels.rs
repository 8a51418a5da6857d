//! Channel publishing on the PostgreSQL backend end to end: a real PostgreSQL (its own
//! server per test), a real broker, agents posting movements, workers as libraries or as
//! real processes, and a channel subscriber that records every message it receives.
//!
//! - One worker: the channels' retained MQTT values (a pooled channel with a kit, and one
//!   warehouse with units kept back) and a webhook (answering 429 once) follow the
//!   movements; the feed equals a SQLite collector's fed the same movements, and the 429 is
//!   in the channel's error queue.
//! - Failover: three worker processes on one database, four agents streaming receipts (so
//!   stock only grows); the worker holding the publisher lease is SIGKILLed mid-stream, then
//!   the one that took over. Each take-over comes within two lease times, the subscriber's
//!   final values equal the stock, and no SKU's value or version (cursor) ever goes back.
//! - A publisher frozen (SIGSTOP) mid-stream is replaced, and once woken sends nothing
//!   older: its pass holding the lease row is ended by the server, its tasks stop at the
//!   fence.
//! - The rollback switch set on a worker that does not publish holds on the publisher and
//!   its successor; the SSE stream of any worker follows the publisher; a Shopify target
//!   goes on across a take-over from the quantities kept in the database.
//!
//! Without PostgreSQL installed these tests print a notice and pass; CI sets
//! `STOCKSYNC_REQUIRE_POSTGRES=1`, which makes them fail instead.

#[path = "channels/harness.rs"]
mod harness;
// Shared with channels_e2e; this suite uses the webhook receiver only.
#[allow(dead_code)]
#[path = "channels/receivers.rs"]
mod receivers;
#[path = "channels/shopify_fake.rs"]
mod shopify_fake;
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

/// The catalog both backends share: a kit of two mugs and a lid.
const CATALOG: &str = "[[catalog.skus]]\nid = \"MUG\"\n[[catalog.skus]]\nid = \"LID\"\n\
    [[catalog.bundles]]\nsku = \"KIT\"\ncomponents = [{ sku = \"MUG\", quantity = 2 }, { sku = \"LID\", quantity = 1 }]\n";

/// The `web` channel: every warehouse, with the kit.
const WEB: &str =
    "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\nbundles = [\"KIT\"]\nmqtt = true\n";

/// A worker's `[store]` and the channels every worker shares; `outlet` (ams only, 2 kept
/// back) gets `outlet_extra` (its webhook).
fn worker_extra(pg: &Postgres, worker_id: &str, outlet_extra: &str) -> String {
    format!(
        "{CATALOG}[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"{worker_id}\"\nlease_secs = {LEASE_SECS}\nwarehouses = {WAREHOUSES:?}\n\
         {WEB}[[channels.channel]]\nname = \"outlet\"\nlocations = [\"ams\"]\nsafety_units = 2\nmqtt = true\n{outlet_extra}",
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
    // outlet also pushes to a webhook, which answers its first push 429.
    let hook = receivers::Webhook::start(b"s3cret", "t1").await;
    hook.answer_429_times(1);
    std::fs::write(dir.join("secret"), "s3cret\n").unwrap();
    std::fs::write(dir.join("token"), "t1\n").unwrap();
    let outlet_hook = format!(
        "[channels.channel.webhook]\nurl = \"http://{}/stock\"\nsecret_file = {:?}\ntoken_file = {:?}\n\
         [channels.channel.webhook.limits]\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n",
        hook.addr,
        dir.join("secret"),
        dir.join("token")
    );
    let worker = Collector::start(toml_config(&collector_toml(
        &dir,
        broker.port,
        0,
        &worker_extra(&pg, "w1", &outlet_hook),
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
        &format!("{CATALOG}{WEB}"),
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
        .wait_last(&[
            ("web", "MUG", 11),
            ("outlet", "MUG", 4),
            ("web", "LID", 3),
            // A kit is built in one warehouse: ber has 5 mugs and 3 lids, ams no lid.
            ("web", "KIT", 2),
        ])
        .await;
    hook.wait_values(WAIT, &[("MUG", 4)]).await;
    assert_eq!(hook.bad_signatures(), 0);
    assert!(hook.statuses().contains(&429), "{:?}", hook.statuses());
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
        Some(3),
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
    // The 429 is in outlet's error queue, resolved by the delivery after it.
    let errors = get(&format!("{b}/v1/channels/outlet/errors")).await.body;
    assert_eq!(errors[0]["target"], "webhook", "{errors}");
    assert!(errors[0]["resolved_at_ms"].is_i64(), "{errors}");
    let r = get(&format!("{b}/v1/channels/nope")).await;
    assert_eq!((r.status, &r.body["field"]), (404, &Value::from("channel")));
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
    let text = collector_toml(dir, broker, port, &worker_extra(pg, id, "")).replace(
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
    const POSTS: usize = 300;
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

    // Mid-stream, once the channel has shown some values: SIGKILL the publishing worker;
    // once another publishes, SIGKILL that one too.
    let mut killed = Vec::new();
    let mut received_at_takeover = 0;
    for round in 1..=2 {
        tokio::time::timeout(WAIT, progress.clone().wait_for(|p| *p >= POSTS * round))
            .await
            .expect("agents keep posting")
            .unwrap();
        let shown = subscriber.seen.lock().unwrap().len();
        wait_for("the channel publishes mid-stream", WAIT, || async {
            subscriber.seen.lock().unwrap().len() > shown
        })
        .await;
        let holder = publisher(&pg).expect("a publisher");
        let killed_at = Instant::now();
        workers.get_mut(holder.as_str()).unwrap().kill();
        killed.push(holder);
        wait_blocking(Duration::from_secs(20), || {
            publisher(&pg).is_some_and(|w| !killed.contains(&w))
        })
        .expect("another worker takes the publisher lease");
        let took = killed_at.elapsed();
        let posted = *progress.borrow();
        assert!(
            posted < POSTS * WAREHOUSES.len(),
            "take-over {round} happened mid-stream ({posted} posts)"
        );
        assert!(
            took <= Duration::from_secs(LEASE_SECS * 2),
            "take-over {round} after {took:?}, lease {LEASE_SECS} s"
        );
        received_at_takeover = subscriber.seen.lock().unwrap().len();
    }
    let last = publisher(&pg).expect("the last worker publishes");
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
            ("web", "KIT", total / 2),
        ])
        .await;
    let url = &workers[last.as_str()].url;
    assert_eq!(on_hand(url, "MUG").await, total as i64);
    let received = subscriber.assert_never_back(true);
    assert!(
        received > received_at_takeover,
        "the last publisher published ({received_at_takeover} messages at its take-over, {received} in all)"
    );
    let takeovers = pg.query(&format!(
        "SELECT count(*) FROM publisher_history WHERE previous_worker IN ('{}', '{}')",
        killed[0], killed[1]
    ));
    assert_eq!(takeovers, "2", "the take-overs are recorded");
    for (_, agent) in agents {
        agent.stop().await.unwrap();
    }
}

fn signal(service: &Service, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, &service.proc.pid().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_publisher_that_wakes_up_sends_nothing_older() {
    let dir = TempDir::new("pg-channel-frozen");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let subscriber = Subscriber::start(broker.port).await;
    let workers: BTreeMap<&str, Service> = ["w1", "w2"]
        .into_iter()
        .map(|id| (id, start_worker(&dir, &pg, broker.port, id)))
        .collect();
    wait_blocking(Duration::from_secs(20), || publisher(&pg).is_some())
        .expect("a worker takes the publisher lease");
    let (url, agent) = start_agent(&dir, "ams", broker.port).await;
    const POSTS: usize = 250;
    let (progress_tx, progress) = tokio::sync::watch::channel(0usize);
    let stream = tokio::spawn(async move {
        for body in receipt_batches(POSTS * 2, 2, &["MUG", "LID"]) {
            let r = post(&format!("{url}/v1/movements"), &body, &[]).await;
            assert!(r.status < 300, "agent refused a post: {}", r.body);
            progress_tx.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    tokio::time::timeout(WAIT, progress.clone().wait_for(|p| *p >= POSTS / 5))
        .await
        .expect("agent keeps posting")
        .unwrap();
    // Freeze the publisher mid-delivery; the other worker takes over; then wake it.
    let frozen = publisher(&pg).expect("a publisher");
    signal(&workers[frozen.as_str()], "-STOP");
    wait_blocking(Duration::from_secs(20), || {
        publisher(&pg).is_some_and(|w| w != frozen)
    })
    .expect("the other worker takes the publisher lease");
    let shown = subscriber.seen.lock().unwrap().len();
    wait_for("the new publisher publishes", WAIT, || async {
        subscriber.seen.lock().unwrap().len() > shown + 5
    })
    .await;
    signal(&workers[frozen.as_str()], "-CONT");
    stream.await.expect("stream task");
    assert!(
        *progress.borrow() == POSTS,
        "the stream went on through the freeze"
    );
    let per_sku = POSTS as u64;
    subscriber
        .wait_last(&[
            ("web", "MUG", per_sku),
            ("web", "LID", per_sku),
            ("outlet", "MUG", per_sku - 2),
        ])
        .await;
    // The woken worker gave the lease up and sent nothing older meanwhile.
    subscriber.assert_never_back(true);
    assert_ne!(publisher(&pg).as_deref(), Some(frozen.as_str()));
    agent.stop().await.unwrap();
}

/// PUTs `mode` for `channel` on the worker at `url` as `ops`; returns the state answered.
async fn set_mode(url: &str, channel: &str, mode: &str) -> Value {
    let body = serde_json::json!({"mode": mode, "reason": "incident 7", "set_by": "ops"});
    let (r, _) = request(
        "PUT",
        &format!("{url}/v1/channels/{channel}/mode"),
        Some(&body.to_string()),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["state"].clone()
}

/// The rollback switch is shared: a mode set on a worker that does not publish is in force
/// on the publisher from its next pass, shown the same by every worker with who set it and
/// why, kept in the database with every change, and still in force after the publisher is
/// SIGKILLed and another worker takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_mode_set_on_any_worker_holds_on_the_publisher_and_across_a_take_over() {
    let dir = TempDir::new("pg-channel-mode");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let subscriber = Subscriber::start(broker.port).await;
    let mut workers: BTreeMap<&str, Service> = ["w1", "w2"]
        .into_iter()
        .map(|id| (id, start_worker(&dir, &pg, broker.port, id)))
        .collect();
    wait_blocking(Duration::from_secs(20), || publisher(&pg).is_some())
        .expect("a worker takes the publisher lease");
    let holder = publisher(&pg).expect("a publisher");
    let other = if holder == "w1" { "w2" } else { "w1" };
    let (holder_url, other_url) = (
        workers[holder.as_str()].url.clone(),
        workers[other].url.clone(),
    );
    let (url, agent) = start_agent(&dir, "ams", broker.port).await;
    let receive = |n: u64| {
        let url = url.clone();
        async move {
            let body = serde_json::json!({"sku": "MUG", "kind": "receipt", "quantity": n});
            let r = post(&format!("{url}/v1/movements"), &body.to_string(), &[]).await;
            assert!(r.status < 300, "{}", r.body);
        }
    };
    receive(10).await;
    subscriber
        .wait_last(&[("web", "MUG", 10), ("outlet", "MUG", 8)])
        .await;

    // Frozen through the worker that does not publish: outlet moves on, web keeps 10.
    let state = set_mode(&other_url, "web", "frozen").await;
    assert_eq!(
        (&state["mode"], &state["set_by"], &state["reason"]),
        (
            &Value::from("frozen"),
            &Value::from("ops"),
            &Value::from("incident 7")
        )
    );
    for url in [&holder_url, &other_url] {
        let web = get(&format!("{url}/v1/channels/web")).await.body;
        assert_eq!(web["state"], state, "{url}: {web}");
        let feed = get(&format!("{url}/v1/channels/web/sellable")).await.body;
        assert_eq!(feed["mode"], "frozen", "{feed}");
    }
    receive(5).await;
    subscriber.wait_last(&[("outlet", "MUG", 13)]).await;
    assert_eq!(subscriber.last()[&("web".into(), "MUG".into())], 10);

    // The publisher dies; the other worker takes over and keeps web frozen.
    workers.get_mut(holder.as_str()).unwrap().kill();
    wait_blocking(Duration::from_secs(20), || {
        publisher(&pg).as_deref() == Some(other)
    })
    .expect("the other worker takes the publisher lease");
    receive(1).await;
    subscriber.wait_last(&[("outlet", "MUG", 14)]).await;
    assert_eq!(subscriber.last()[&("web".into(), "MUG".into())], 10);
    assert_eq!(
        pg.query("SELECT value FROM channel_sellable WHERE channel = 'web' AND sku = 'MUG'"),
        "10"
    );

    // Zero, then live again: the new publisher follows each switch.
    assert_eq!(set_mode(&other_url, "web", "zero").await["mode"], "zero");
    subscriber
        .wait_last(&[("web", "MUG", 0), ("outlet", "MUG", 14)])
        .await;
    assert_eq!(set_mode(&other_url, "web", "live").await["mode"], "live");
    subscriber.wait_last(&[("web", "MUG", 16)]).await;
    subscriber.assert_never_back(false);
    assert_eq!(
        pg.query("SELECT string_agg(mode || ' by ' || set_by, ', ' ORDER BY id) FROM channel_mode_changes WHERE channel = 'web'"),
        "frozen by ops, zero by ops, live by ops"
    );
    // An unknown channel or mode is refused, naming the field.
    let (r, _) = request(
        "PUT",
        &format!("{other_url}/v1/channels/nope/mode"),
        Some(r#"{"mode": "zero"}"#),
        &[],
    )
    .await;
    assert_eq!((r.status, &r.body["field"]), (404, &Value::from("channel")));
    let (r, _) = request(
        "PUT",
        &format!("{other_url}/v1/channels/web/mode"),
        Some(r#"{"mode": "off"}"#),
        &[],
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.body);
    agent.stop().await.unwrap();
}

/// The SSE stream is served by any worker: a client of the worker that does not publish
/// gets every change the publisher (another process) stores, in cursor order, one event
/// per change with the cursor as id; a client that reconnects to the publisher with its
/// `Last-Event-ID` gets exactly what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sse_stream_of_any_worker_follows_the_publisher_and_resumes() {
    let dir = TempDir::new("pg-channel-sse");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let workers: BTreeMap<&str, Service> = ["w1", "w2"]
        .into_iter()
        .map(|id| (id, start_worker(&dir, &pg, broker.port, id)))
        .collect();
    wait_blocking(Duration::from_secs(20), || publisher(&pg).is_some())
        .expect("a worker takes the publisher lease");
    let holder = publisher(&pg).expect("a publisher");
    let other = if holder == "w1" { "w2" } else { "w1" };
    let stream = |worker: &str| format!("{}/v1/channels/web/sellable/stream", workers[worker].url);
    let events = harness::sse_events(format!("{}?since=0", stream(other)), None, WAIT);
    let (url, agent) = start_agent(&dir, "ams", broker.port).await;
    // One receipt at a time, each seen before the next: ten values of web/MUG in order.
    let mut seen = Vec::new();
    for n in 1..=10u64 {
        let body = serde_json::json!({"sku": "MUG", "kind": "receipt", "quantity": 1});
        let r = post(&format!("{url}/v1/movements"), &body.to_string(), &[]).await;
        assert!(r.status < 300, "{}", r.body);
        loop {
            let (id, v) = events
                .recv_timeout(WAIT)
                .expect("an event from the other worker");
            let cursor: i64 = id.parse().expect("the id is a cursor");
            assert_eq!(v["cursor"], cursor, "{v}");
            if let Some((prev, _)) = seen.last() {
                assert!(cursor > *prev, "cursor {cursor} after {prev}");
            }
            seen.push((cursor, v.clone()));
            if v["sku"] == "MUG" && v["sellable"] == n {
                break;
            }
        }
    }
    let mugs: Vec<u64> = seen
        .iter()
        .filter(|(_, v)| v["sku"] == "MUG")
        .map(|(_, v)| v["sellable"].as_u64().unwrap())
        .collect();
    // The new publisher's first pass lists the catalog's MUG at 0 before any receipt.
    let after_zero = mugs.strip_prefix(&[0]).unwrap_or(&mugs);
    assert_eq!(
        after_zero,
        (1..=10).collect::<Vec<_>>(),
        "every value, in order"
    );
    // Reconnect to the publisher after the fourth event: what was missed, and only that,
    // folded as on SQLite to the newest value per SKU, in cursor order.
    let (fourth, _) = &seen[3];
    let resumed = harness::sse_events(stream(&holder), Some(fourth.to_string()), WAIT);
    let missed: Vec<&(i64, Value)> = seen[4..]
        .iter()
        .enumerate()
        .filter(|(i, (_, v))| {
            seen[5 + i..]
                .iter()
                .all(|(_, later)| later["sku"] != v["sku"])
        })
        .map(|(_, e)| e)
        .collect();
    assert!(!missed.is_empty());
    for (cursor, v) in missed {
        let (id, again) = resumed.recv_timeout(WAIT).expect("a resumed event");
        assert_eq!((id, &again), (cursor.to_string(), v));
    }
    assert!(
        resumed.recv_timeout(Duration::from_millis(500)).is_err(),
        "nothing more"
    );
    agent.stop().await.unwrap();
}

/// A Shopify target on PostgreSQL: the publisher sets the outlet's quantities with
/// compare-and-set from what Shopify was last seen to hold (kept in the database); after the
/// publisher is SIGKILLed, its successor goes on from there (a change made on Shopify
/// meanwhile is met as a stale compare-and-set and re-read), and Shopify ends at the stock
/// with no request breaking the contract.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_targets_publish_from_the_database_across_a_take_over() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = TempDir::new("pg-channel-shopify");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let (mug, lid) = (
        "gid://shopify/InventoryItem/1",
        "gid://shopify/InventoryItem/2",
    );
    // Shopify holds 3 mugs stocksync has never seen.
    let shop = shopify_fake::FakeShopify::start(&[(mug, 3)], 0).await;
    std::fs::write(dir.join("shop-token"), shopify_fake::FakeShopify::token()).unwrap();
    let outlet_shop = format!(
        "[channels.channel.shopify]\nurl = \"http://{}/admin/api/graphql.json\"\nlocation_id = \"gid://shopify/Location/1\"\ntoken_file = {:?}\n\
         [channels.channel.shopify.limits]\nbackoff_initial_ms = 50\nbackoff_max_ms = 500\n\
         [[catalog.aliases]]\nsource = \"outlet\"\nexternal = \"{mug}\"\nsku = \"MUG\"\n\
         [[catalog.aliases]]\nsource = \"outlet\"\nexternal = \"{lid}\"\nsku = \"LID\"\n",
        shop.addr,
        dir.join("shop-token"),
    );
    let mut workers: BTreeMap<&str, Service> = ["w1", "w2"]
        .into_iter()
        .map(|id| {
            let port = free_port();
            let text = collector_toml(
                &dir,
                broker.port,
                port,
                &worker_extra(&pg, id, &outlet_shop),
            )
            .replace(
                &format!("{:?}", dir.join("ledger.db")),
                &format!("{:?}", dir.join(&format!("unused-{id}.db"))),
            );
            (
                id,
                Service::start(&dir, "stocksync-collector", id, &text, port),
            )
        })
        .collect();
    wait_blocking(Duration::from_secs(20), || publisher(&pg).is_some())
        .expect("a worker takes the publisher lease");
    let (url, agent) = start_agent(&dir, "ams", broker.port).await;
    let receive = |sku: &'static str, n: u64| {
        let url = url.clone();
        async move {
            let body = serde_json::json!({"sku": sku, "kind": "receipt", "quantity": n});
            let r = post(&format!("{url}/v1/movements"), &body.to_string(), &[]).await;
            assert!(r.status < 300, "{}", r.body);
        }
    };
    receive("MUG", 10).await;
    receive("LID", 4).await;
    // The outlet keeps 2 back.
    wait_for("shopify holds 8 mugs and 2 lids", WAIT, || async {
        shop.quantity(mug) == Some(8) && shop.quantity(lid) == Some(2)
    })
    .await;
    assert_eq!(
        pg.query(&format!(
            "SELECT quantity FROM channel_remote WHERE channel = 'outlet' AND target = 'shopify' AND sku = '{mug}'"
        )),
        "8"
    );

    let holder = publisher(&pg).expect("a publisher");
    workers.get_mut(holder.as_str()).unwrap().kill();
    wait_blocking(Duration::from_secs(20), || {
        publisher(&pg).is_some_and(|w| w != holder)
    })
    .expect("the other worker takes the publisher lease");
    // Someone changes Shopify's number meanwhile: the successor's set from the 8 its
    // predecessor left is stale, so it reads Shopify again and wins.
    shop.set_quantity(mug, 1);
    receive("MUG", 5).await;
    wait_for("shopify holds 13 mugs", WAIT, || async {
        shop.quantity(mug) == Some(13)
    })
    .await;
    let seen = shop.seen();
    assert!(
        seen.stale.load(SeqCst) >= 1,
        "the stale compare-and-set was met"
    );
    assert_eq!(seen.contract_violations.load(SeqCst), 0);
    assert!(shop
        .references()
        .iter()
        .all(|r| r.starts_with("stocksync://channels/outlet/changes/")));
    agent.stop().await.unwrap();
    shop.stop();
}
