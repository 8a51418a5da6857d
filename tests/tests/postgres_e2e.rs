//! The PostgreSQL store end to end: a real PostgreSQL (its own server per test, see
//! `support::postgres`), a real broker, collector workers as libraries or as real processes.
//!
//! - One stream of mixed movements (receipts, shipments, counts, bins, transfers, returns,
//!   inspections) delivered twice, shuffled and replayed, to a SQLite collector and to a
//!   PostgreSQL worker: every movement is applied once, and the two backends serve the same
//!   stock, row for row.
//! - Failover: three worker processes on one database, four agents streaming; one worker is
//!   SIGKILLed mid-stream, then another. Totals equal what the agents journaled, every
//!   ledger row was applied by the worker holding its warehouse's lease at the time, and at
//!   every moment each warehouse is held by exactly one live worker.
//!
//! Without PostgreSQL installed these tests print a notice and pass; CI sets
//! `STOCKSYNC_REQUIRE_POSTGRES=1`, which makes them fail instead.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use stocksync_collector::Collector;
use stocksync_common::model::*;
use stocksync_common::wire::{self, AckOutcome, Batch};
use support::postgres::Postgres;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// The `[store]` table of a worker.
fn store_toml(pg: &Postgres, worker_id: &str, lease_secs: u64, warehouses: &[&str]) -> String {
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"{worker_id}\"\nlease_secs = {lease_secs}\nwarehouses = {warehouses:?}\n",
        pg.url
    )
}

/// Deterministic pseudo-random numbers (xorshift), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn movement(rng: &mut Rng, seq: u64, warehouse: &str, peer: &str) -> Movement {
    let sku = ["MUG", "LID", "CUP"][rng.next(3) as usize];
    let bin = [None, Some("A-01"), Some("B-02")][rng.next(3) as usize];
    let quantity = 1 + rng.next(20);
    let (kind, references) = match rng.next(10) {
        0 => (MovementKind::Count, References::default()),
        1 => (MovementKind::Shipment, References::default()),
        2 => (
            MovementKind::TransferOut,
            References {
                transfer: Some(format!("T-{seq}")),
                peer_warehouse: Some(peer.into()),
                ..References::default()
            },
        ),
        3 => (MovementKind::Return, References::default()),
        4 => (
            MovementKind::Inspection {
                outcome: InspectionOutcome::Available,
            },
            References::default(),
        ),
        5 => (
            MovementKind::Adjustment {
                direction: Direction::Decrease,
                reason: "broken".into(),
            },
            References::default(),
        ),
        _ => (MovementKind::Receipt, References::default()),
    };
    Movement {
        seq,
        sku: Sku(sku.into()),
        location: Location {
            warehouse: warehouse.into(),
            bin: bin.map(str::to_string),
        },
        source: "wms".into(),
        kind,
        quantity,
        unit: "each".into(),
        unit_quantity: quantity,
        // Out of order on purpose: movements are dated up to an hour apart at random, so
        // counts arrive before and after the deltas they order behind.
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000 + rng.next(3_600_000) as i64,
            offset_seconds: 0,
        },
        references,
        external_id: None,
        note: None,
        origin: Default::default(),
    }
}

/// The batches of one agent: `n` movements, `per` to a batch.
fn batches(
    rng: &mut Rng,
    agent: &str,
    warehouse: &str,
    peer: &str,
    n: u64,
    per: usize,
) -> Vec<Batch> {
    let all: Vec<Movement> = (1..=n)
        .map(|seq| movement(rng, seq, warehouse, peer))
        .collect();
    all.chunks(per)
        .map(|c| Batch {
            agent_id: agent.into(),
            journal_id: 7,
            warehouse: warehouse.into(),
            movements: c.to_vec(),
            sent_at_ms: None,
        })
        .collect()
}

/// Acts as the agents: publishes every batch twice in shuffled order, then resends what is
/// not acknowledged until every batch is. Returns the sum of `applied` over all acks.
async fn deliver(port: u16, client: &str, batches: &[Batch], rng: &mut Rng) -> u64 {
    let mut probe = MqttProbe::connect(port, client).await;
    let agents: BTreeSet<(&str, &str)> = batches
        .iter()
        .map(|b| (b.warehouse.as_str(), b.agent_id.as_str()))
        .collect();
    for (warehouse, agent) in agents {
        probe
            .subscribe(&format!("stocksync/v1/{warehouse}/acks/{agent}"))
            .await;
    }
    let mut order: Vec<usize> = (0..batches.len()).chain(0..batches.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.next(i as u64 + 1) as usize);
    }
    let key = |b: &Batch| (b.agent_id.clone(), b.movements[0].seq);
    let mut unacked: BTreeSet<(String, u64)> = batches.iter().map(key).collect();
    let mut applied = 0u64;
    let deadline = Instant::now() + WAIT;
    let mut pending = order;
    while !unacked.is_empty() {
        assert!(
            Instant::now() < deadline,
            "batches never acknowledged: {unacked:?}"
        );
        for i in pending.drain(..) {
            let b = &batches[i];
            let topic = format!("stocksync/v1/{}/movements", b.warehouse);
            probe.publish(&topic, wire::encode_batch(b)).await;
        }
        let round_end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < round_end && !unacked.is_empty() {
            let left = round_end.saturating_duration_since(Instant::now());
            let Ok(p) = tokio::time::timeout(left, probe.next(WAIT)).await else {
                break;
            };
            let ack = wire::decode_ack(&p.payload).expect("ack decodes");
            match ack.outcome {
                AckOutcome::Applied { applied: a, .. } => applied += u64::from(a),
                other => panic!("batch not applied: {other:?}"),
            }
            unacked.remove(&(ack.agent_id, ack.first_seq));
        }
        pending = (0..batches.len())
            .filter(|i| unacked.contains(&key(&batches[*i])))
            .collect();
    }
    // Two copies of a batch may commit in either order on PostgreSQL (each on its own
    // connection), so the ack that applied may come after the duplicate's: take every ack
    // still on its way before the replays.
    while let Ok(p) = tokio::time::timeout(Duration::from_millis(700), probe.next(WAIT)).await {
        if let AckOutcome::Applied { applied: a, .. } =
            wire::decode_ack(&p.payload).expect("ack").outcome
        {
            applied += u64::from(a);
        }
    }
    // Replays after everything is in: a late resend of the whole stream changes nothing.
    for b in batches.iter().step_by(3) {
        let topic = format!("stocksync/v1/{}/movements", b.warehouse);
        probe.publish(&topic, wire::encode_batch(b)).await;
    }
    let mut replayed = 0;
    while replayed < batches.len().div_ceil(3) {
        let ack = wire::decode_ack(&probe.next(WAIT).await.payload).expect("ack");
        match ack.outcome {
            AckOutcome::Applied {
                applied: a,
                duplicates,
            } => {
                assert_eq!(a, 0, "a replayed batch applied something");
                assert!(duplicates > 0);
                replayed += 1;
            }
            other => panic!("replay not applied: {other:?}"),
        }
    }
    applied
}

/// Waits until the rejects queue served at `url` holds something.
async fn wait_for_a_reject(url: &str) {
    wait_for("the reject is queued", WAIT, || async {
        get(&format!("{url}/v1/rejects"))
            .await
            .body
            .as_array()
            .is_some_and(|r| !r.is_empty())
    })
    .await;
}

/// Every SKU's stock as served, without fields that name when it was computed.
async fn stock_view(url: &str) -> BTreeMap<String, Value> {
    let mut view = BTreeMap::new();
    for sku in ["MUG", "LID", "CUP"] {
        let r = get(&format!("{url}/v1/stock/{sku}")).await;
        assert_eq!(r.status, 200, "{sku}: {}", r.body);
        view.insert(sku.to_string(), r.body);
    }
    for location in ["ams", "ber", "ams/A-01"] {
        let r = get(&format!("{url}/v1/stock?location={location}")).await;
        assert_eq!(r.status, 200, "{location}: {}", r.body);
        view.insert(location.to_string(), r.body);
    }
    view
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_counts_each_movement_once_and_serves_what_sqlite_serves() {
    let dir = TempDir::new("pg-once");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let (dir_a, dir_b) = (TempDir::new("pg-once-a"), TempDir::new("pg-once-b"));
    let (broker_a, broker_b) = (Broker::start(&dir_a), Broker::start(&dir_b));
    let sqlite = Collector::start(collector_config(&dir_a, broker_a.port, 0))
        .await
        .expect("sqlite collector starts");
    let worker = Collector::start(toml_config(&collector_toml(
        &dir_b,
        broker_b.port,
        0,
        &store_toml(&pg, "w1", 3, &["ams", "ber"]),
    )))
    .await
    .expect("postgres worker starts");

    let mut rng = Rng(0x5eed);
    let mut stream = batches(&mut rng, "ams-1", "ams", "ber", 300, 10);
    stream.extend(batches(&mut rng, "ber-1", "ber", "ams", 200, 10));
    let n = 500;
    let to_sqlite = deliver(broker_a.port, "agents-a", &stream, &mut Rng(1)).await;
    let to_postgres = deliver(broker_b.port, "agents-b", &stream, &mut Rng(2)).await;
    assert_eq!(to_sqlite, n, "sqlite applied each movement once");
    assert_eq!(to_postgres, n, "postgres applied each movement once");
    assert_eq!(pg.query("SELECT count(*) FROM ledger"), n.to_string());

    let (a, b) = (
        format!("http://{}", sqlite.http_addr),
        format!("http://{}", worker.http_addr),
    );
    let (expected, served) = (stock_view(&a).await, stock_view(&b).await);
    for (what, value) in &expected {
        assert_eq!(&served[what], value, "{what}: postgres differs from sqlite");
    }
    // Not a vacuous comparison: the stream moved real stock in both warehouses and bins.
    assert!(expected["ams"]["items"].as_array().unwrap().len() >= 6);
    // Changed SKUs went through the outbox, which the publisher consumes (channels on
    // PostgreSQL: postgres_channels.rs).
    wait_for("the publisher consumes the outbox", WAIT, || async {
        pg.query("SELECT count(*) FROM outbox") == "0"
    })
    .await;
    let queued: i64 = pg
        .query("SELECT last_value FROM outbox_id_seq")
        .parse()
        .unwrap();
    assert!(queued >= 3, "changed SKUs were queued in the outbox");
    assert_eq!(pg.query("SELECT worker_id FROM publisher_history"), "w1");

    // The operator's reads: agents, a hostile payload in the rejects queue, readiness.
    for port in [broker_a.port, broker_b.port] {
        publish_once(
            port,
            "hostile",
            "stocksync/v1/ams/movements",
            b"not a batch".to_vec(),
        )
        .await;
    }
    let operator_view = |url: String| async move {
        wait_for_a_reject(&url).await;
        let without = |mut v: Value, keys: &[&str]| {
            for item in v.as_array_mut().expect("a list") {
                for k in keys {
                    item.as_object_mut().expect("an object").remove(*k);
                }
            }
            v
        };
        (
            without(
                get(&format!("{url}/v1/agents")).await.body,
                &["first_seen_ms", "last_seen_ms", "clock_skew_ms"],
            ),
            without(
                get(&format!("{url}/v1/rejects")).await.body,
                &["first_seen_ms", "last_seen_ms"],
            ),
        )
    };
    let (expected, served) = (
        operator_view(a.clone()).await,
        operator_view(b.clone()).await,
    );
    assert_eq!(
        expected.0.as_array().map(Vec::len),
        Some(2),
        "{}",
        expected.0
    );
    assert_eq!(
        expected.1[0]["topic"], "stocksync/v1/ams/movements",
        "{}",
        expected.1
    );
    assert_eq!(
        expected, served,
        "agents and rejects: postgres differs from sqlite"
    );
    let ready = get(&format!("{b}/readyz")).await;
    assert_eq!(
        (ready.status, &ready.body["store"]),
        (200, &Value::from("ok")),
        "{}",
        ready.body
    );
    let (metrics, _) = request("GET", &format!("{b}/metrics"), None, &[]).await;
    let text = metrics.body.as_str().expect("text").to_string();
    assert!(text.contains("stocksync_worker_warehouses 2"), "{text}");

    // What this backend does not serve yet says so, in JSON.
    let r = get(&format!("{b}/openapi.json")).await;
    assert_eq!(r.status, 501);
    assert_eq!(r.body["error"], "not_supported_on_backend");
    sqlite.stop().await.unwrap();
    worker.stop().await.unwrap();
}

const WAREHOUSES: [&str; 4] = ["ams", "ber", "cph", "dub"];

/// A worker process on the shared database and broker.
fn start_worker(dir: &TempDir, pg: &Postgres, broker: u16, id: &str) -> Service {
    let port = free_port();
    let text = collector_toml(dir, broker, port, &store_toml(pg, id, 3, &WAREHOUSES)).replace(
        &format!("{:?}", dir.join("ledger.db")),
        &format!("{:?}", dir.join(&format!("unused-{id}.db"))),
    );
    Service::start(dir, "stocksync-collector", id, &text, port)
}

/// Who holds each warehouse's unexpired lease now.
fn holders(pg: &Postgres) -> BTreeMap<String, String> {
    pg.query("SELECT warehouse, worker_id FROM leases WHERE expires_at > now() AND worker_id IS NOT NULL")
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(w, id)| (w.to_string(), id.to_string()))
        .collect()
}

/// Waits until every warehouse is held, by workers in `live` only.
fn wait_held_by(pg: &Postgres, live: &[&str], what: &str) -> BTreeMap<String, String> {
    let mut last = BTreeMap::new();
    wait_blocking(Duration::from_secs(20), || {
        last = holders(pg);
        last.len() == WAREHOUSES.len() && last.values().all(|w| live.contains(&w.as_str()))
    })
    .unwrap_or_else(|_| panic!("{what}: leases are {last:?}"));
    last
}

/// Every ledger row was inserted by the worker that held its warehouse's lease at that
/// moment: the holding intervals come from `lease_history` (a holding ends where the next
/// taker found it expired or given back).
fn assert_rows_applied_by_holders(pg: &Postgres) {
    let history = pg.query(
        "SELECT warehouse, worker_id, (extract(epoch from taken_at) * 1000)::bigint,
                COALESCE((extract(epoch from lead(previous_expires_at) OVER w) * 1000)::bigint, 9223372036854775807)
         FROM lease_history WINDOW w AS (PARTITION BY warehouse ORDER BY id) ORDER BY id",
    );
    let holdings: Vec<(String, String, i64, i64)> = history
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (
                f[0].into(),
                f[1].into(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
            )
        })
        .collect();
    let rows = pg.query(
        "SELECT warehouse, applied_by, min(received_at_ms), max(received_at_ms), count(*)
         FROM ledger GROUP BY warehouse, applied_by, received_at_ms / 200",
    );
    let mut checked = 0;
    for l in rows.lines() {
        let f: Vec<&str> = l.split('|').collect();
        let (warehouse, worker) = (f[0], f[1]);
        let (first, last): (i64, i64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        let held = holdings.iter().any(|(w, id, from, to)| {
            w == warehouse && id == worker && *from <= first && last <= *to
        });
        assert!(
            held,
            "rows of {warehouse} applied by {worker} between {first} and {last} ms, outside its leases: {holdings:?}"
        );
        checked += f[4].parse::<i64>().unwrap();
    }
    assert_eq!(checked.to_string(), pg.query("SELECT count(*) FROM ledger"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_fail_over_without_losing_or_doubling_a_movement() {
    let dir = TempDir::new("pg-failover");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let mut workers: BTreeMap<&str, Service> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|id| (id, start_worker(&dir, &pg, broker.port, id)))
        .collect();
    wait_held_by(
        &pg,
        &["w1", "w2", "w3"],
        "three workers share the warehouses",
    );

    // Four agents, one per warehouse, each posting receipts of one unit as a stream.
    let mut agents = Vec::new();
    for warehouse in WAREHOUSES {
        let text = agent_toml(
            &dir,
            &format!("{warehouse}-1"),
            warehouse,
            broker.port,
            0,
            "[forward]\nbatch_max = 20\nack_timeout_ms = 2000\n",
        );
        let agent = stocksync_agent::Agent::start(toml_config(&text))
            .await
            .expect("agent starts");
        agents.push((warehouse, format!("http://{}", agent.http_addr), agent));
    }
    const POSTS: usize = 60;
    const PER_POST: usize = 5;
    let (progress_tx, progress) = tokio::sync::watch::channel(0usize);
    let progress_tx = std::sync::Arc::new(progress_tx);
    let mut streams = Vec::new();
    for (_, url, _) in &agents {
        let (url, progress_tx) = (url.clone(), progress_tx.clone());
        streams.push(tokio::spawn(async move {
            for body in receipt_batches(POSTS * PER_POST, PER_POST, &["MUG"]) {
                let r = post(&format!("{url}/v1/movements"), &body, &[]).await;
                assert!(r.status < 300, "agent refused a post: {}", r.body);
                progress_tx.send_modify(|n| *n += 1);
                tokio::time::sleep(Duration::from_millis(40)).await;
            }
        }));
    }
    let wait_progress = |n: usize| {
        let mut progress = progress.clone();
        async move {
            tokio::time::timeout(WAIT, progress.wait_for(|p| *p >= n))
                .await
                .expect("agents keep posting")
                .expect("progress");
        }
    };

    // Mid-stream: SIGKILL the worker holding `ams`, then, once its warehouses moved, another.
    wait_progress(POSTS).await;
    let first = holders(&pg)["ams"].clone();
    workers.get_mut(first.as_str()).unwrap().kill();
    let live: Vec<&str> = workers.keys().copied().filter(|w| *w != first).collect();
    let after_first = wait_held_by(&pg, &live, "the first dead worker's warehouses taken over");
    wait_progress(POSTS * 2).await;
    let second = after_first.values().find(|w| **w != first).unwrap().clone();
    workers.get_mut(second.as_str()).unwrap().kill();
    let last: Vec<&str> = live.iter().copied().filter(|w| *w != second).collect();
    wait_held_by(&pg, &last, "the last worker holds every warehouse");
    for s in streams {
        s.await.expect("stream task");
    }

    // Every movement journaled by the agents is counted once, per warehouse and in total.
    let url = &workers[last[0]].url;
    wait_for("the survivor consumes every warehouse", WAIT, || async {
        get(&format!("{url}/healthz")).await.body["warehouses"] == serde_json::json!(WAREHOUSES)
    })
    .await;
    let expected = (POSTS * PER_POST) as i64;
    let total = expected * WAREHOUSES.len() as i64;
    wait_for(
        "every movement applied",
        Duration::from_secs(60),
        || async { get(&format!("{url}/v1/stock/MUG")).await.body["on_hand"] == total },
    )
    .await;
    let served = get(&format!("{url}/v1/stock/MUG")).await.body;
    for w in served["warehouses"].as_array().unwrap() {
        assert_eq!(w["on_hand"], expected, "{w}");
    }
    // Stays there: no late duplicate lands once the agents are drained.
    assert_eq!(
        pg.query("SELECT count(*) FROM ledger"),
        (expected * WAREHOUSES.len() as i64).to_string()
    );
    assert_rows_applied_by_holders(&pg);
    let appliers = pg.query("SELECT count(DISTINCT applied_by) FROM ledger");
    assert!(appliers.parse::<i32>().unwrap() >= 2, "work was shared out");
    let takeovers = pg.query(&format!(
        "SELECT count(*) FROM lease_history WHERE previous_worker IN ('{first}', '{second}')"
    ));
    assert!(
        takeovers.parse::<i32>().unwrap() >= 2,
        "dead workers' leases were taken over"
    );
    for (_, _, agent) in agents {
        agent.stop().await.unwrap();
    }
}

/// A movement at `ams` for the reservation test, dated in the recent past.
fn stock_move(
    seq: u64,
    sku: &str,
    kind: MovementKind,
    quantity: u64,
    order: Option<&str>,
) -> Movement {
    Movement {
        seq,
        sku: Sku(sku.into()),
        location: Location {
            warehouse: "ams".into(),
            bin: None,
        },
        source: "wms".into(),
        kind,
        quantity,
        unit: "each".into(),
        unit_quantity: quantity,
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000 + seq as i64,
            offset_seconds: 0,
        },
        references: References {
            order: order.map(str::to_string),
            ..References::default()
        },
        external_id: None,
        note: None,
        origin: Default::default(),
    }
}

fn ams_batch(movements: Vec<Movement>) -> Vec<Batch> {
    vec![Batch {
        agent_id: "ams-1".into(),
        journal_id: 7,
        warehouse: "ams".into(),
        movements,
        sent_at_ms: None,
    }]
}

/// An answer without the fields that name when it was made.
fn timeless(mut v: Value) -> Value {
    match &mut v {
        Value::Object(map) => {
            for k in ["created_at_ms", "closed_at_ms", "expires_at_ms"] {
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

/// Every step of the reservation script before the shipment: holds, replays, refusals, a
/// hold that lapses by itself. Returns each answer (status and timeless body).
async fn reserve_before_shipment(url: &str) -> Vec<(u16, Value)> {
    let endpoint = format!("{url}/v1/reservations");
    let mut answers = Vec::new();
    for body in [
        r#"{"id":"r1","order":"O1","sku":"MUG","warehouse":"ams","quantity":3}"#,
        r#"{"id":"r1","order":"O1","sku":"MUG","warehouse":"ams","quantity":3}"#,
        r#"{"id":"r1","order":"O1","sku":"MUG","warehouse":"ams","quantity":4}"#,
        r#"{"id":"r2","order":"O2","sku":"MUG","warehouse":"ams","quantity":8}"#,
        r#"{"id":"r3","order":"O3","sku":"MUG","warehouse":"ams","quantity":0}"#,
        r#"{"id":"r4#1","order":"O4","sku":"MUG","warehouse":"ams","quantity":1}"#,
        r#"{"id":"r4","order":"O4","sku":"MUG","warehouse":"zzz","quantity":1}"#,
        r#"{"id":"r4","order":"O4","sku":"MUG","warehouse":"ams","quantity":1,"colour":"red"}"#,
        r#"{"id":"r5","order":"O5","sku":"MUG","warehouse":"ams","quantity":2,"ttl_secs":1}"#,
    ] {
        let reply = post(&endpoint, body, &[]).await;
        answers.push((reply.status, timeless(reply.body)));
    }
    let stock = get(&format!("{url}/v1/stock/MUG")).await;
    answers.push((stock.status, stock.body));
    wait_for("r5 lapses", WAIT, || async {
        get(&format!("{url}/v1/reservations/r5")).await.body["status"] == "expired"
    })
    .await;
    let stock = get(&format!("{url}/v1/stock/MUG")).await;
    answers.push((stock.status, stock.body));
    answers
}

/// The rest of the script, after a shipment of 2 for order O1: what is left open, the
/// release, the list.
async fn reserve_after_shipment(url: &str) -> Vec<(u16, Value)> {
    let mut answers = Vec::new();
    for (method, path) in [
        ("GET", "/v1/reservations/r1"),
        ("GET", "/v1/stock/MUG"),
        ("DELETE", "/v1/reservations/r1"),
        ("DELETE", "/v1/reservations/nope"),
        ("GET", "/v1/stock/MUG"),
        ("GET", "/v1/reservations?sku=MUG"),
        ("GET", "/v1/reservations?sku=MUG&colour=red"),
    ] {
        let (reply, _) = request(method, &format!("{url}{path}"), None, &[]).await;
        answers.push((reply.status, timeless(reply.body)));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reservations_hold_what_sqlite_holds_and_never_oversell_across_workers() {
    let dir = TempDir::new("pg-reserve");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let (dir_a, dir_b, dir_c) = (
        TempDir::new("pg-reserve-a"),
        TempDir::new("pg-reserve-b"),
        TempDir::new("pg-reserve-c"),
    );
    let (broker_a, broker_b) = (Broker::start(&dir_a), Broker::start(&dir_b));
    let sqlite = Collector::start(collector_config(&dir_a, broker_a.port, 0))
        .await
        .expect("sqlite collector starts");
    let worker = |d: &TempDir, id: &str| {
        Collector::start(toml_config(&collector_toml(
            d,
            broker_b.port,
            0,
            &store_toml(&pg, id, 3, &["ams"]),
        )))
    };
    let w1 = worker(&dir_b, "w1").await.expect("worker 1 starts");
    let (a, b) = (
        format!("http://{}", sqlite.http_addr),
        format!("http://{}", w1.http_addr),
    );
    let receipts = ams_batch(vec![
        stock_move(1, "MUG", MovementKind::Receipt, 10, None),
        stock_move(2, "CUP", MovementKind::Receipt, 10, None),
    ]);
    assert_eq!(
        deliver(broker_a.port, "agents-a", &receipts, &mut Rng(1)).await,
        2
    );
    assert_eq!(
        deliver(broker_b.port, "agents-b", &receipts, &mut Rng(2)).await,
        2
    );

    let (expected, served) = (
        reserve_before_shipment(&a).await,
        reserve_before_shipment(&b).await,
    );
    let statuses: Vec<u16> = expected.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        statuses,
        [201, 200, 409, 409, 422, 422, 422, 422, 201, 200, 200]
    );
    // While r5 held: 10 - 3 - 2 available; once it lapsed only r1's 3 are held.
    assert_eq!(expected[9].1["total"]["available"], 5, "{}", expected[9].1);
    assert_eq!(expected[10].1["total"]["reserved"], 3, "{}", expected[10].1);
    for (i, (want, got)) in expected.iter().zip(&served).enumerate() {
        assert_eq!(want, got, "step {i}: postgres differs from sqlite");
    }

    // A shipment of 2 for order O1, through the ledger, leaves 1 of r1 open.
    let shipment = ams_batch(vec![stock_move(
        3,
        "MUG",
        MovementKind::Shipment,
        2,
        Some("O1"),
    )]);
    assert_eq!(
        deliver(broker_a.port, "agents-a", &shipment, &mut Rng(3)).await,
        1
    );
    assert_eq!(
        deliver(broker_b.port, "agents-b", &shipment, &mut Rng(4)).await,
        1
    );
    // A second worker, started once nothing is in flight: any worker serves reservations.
    let w2 = worker(&dir_c, "w2").await.expect("worker 2 starts");
    let b2 = format!("http://{}", w2.http_addr);
    let (expected, served) = (
        reserve_after_shipment(&a).await,
        reserve_after_shipment(&b2).await,
    );
    assert_eq!(expected[0].1["open"], 1, "{}", expected[0].1);
    assert_eq!(expected[2].1["status"], "released");
    assert_eq!(expected[4].1["total"]["available"], 8, "{}", expected[4].1);
    assert_eq!(expected[4].1["total"]["reserved"], 0);
    assert_eq!(expected[6].0, 400, "an unknown filter is refused");
    for (i, (want, got)) in expected.iter().zip(&served).enumerate() {
        assert_eq!(
            want, got,
            "step {i} after the shipment: postgres differs from sqlite"
        );
    }

    // The race: 40 checkouts for the 10 CUPs at once, through two workers.
    let attempts: Vec<_> = (0..40)
        .map(|i| {
            let url = if i % 2 == 0 { b.clone() } else { b2.clone() };
            tokio::spawn(async move {
                let body = format!(
                    r#"{{"id":"race-{i}","order":"R{i}","sku":"CUP","warehouse":"ams","quantity":1}}"#
                );
                post(&format!("{url}/v1/reservations"), &body, &[]).await.status
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.expect("checkout task"));
    }
    let held = statuses.iter().filter(|s| **s == 201).count();
    let refused = statuses.iter().filter(|s| **s == 409).count();
    assert_eq!((held, refused), (10, 30), "{statuses:?}");
    let cup = get(&format!("{b}/v1/stock/CUP")).await.body;
    assert_eq!(cup["total"]["available"], 0, "{cup}");
    assert_eq!(cup["total"]["reserved"], 10, "{cup}");
    assert_eq!(
        pg.query("SELECT count(*) FROM reservations WHERE sku = 'CUP' AND status = 'active'"),
        "10"
    );
    sqlite.stop().await.unwrap();
    w1.stop().await.unwrap();
    w2.stop().await.unwrap();
}

/// A CA and a server certificate for 127.0.0.1 from the shipped script.
fn pki(dir: &TempDir) -> std::path::PathBuf {
    let out = dir.join("pki");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-test-ca.sh");
    let run = std::process::Command::new("bash")
        .arg(&script)
        .arg(&out)
        .arg("stocksync-collector")
        .output()
        .expect("run make-test-ca.sh");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_reach_postgres_over_tls_and_refuse_a_server_they_cannot_verify() {
    let dir = TempDir::new("pg-tls");
    let certs = pki(&dir).join("certs");
    let Some(pg) = Postgres::start_tls(
        &dir,
        &certs.join("stocksync-server.crt"),
        &certs.join("stocksync-server.key"),
    ) else {
        return;
    };
    let (dir_w, broker_dir) = (TempDir::new("pg-tls-w"), TempDir::new("pg-tls-b"));
    let broker = Broker::start(&broker_dir);
    let worker_toml = |id: &str, extra: &str| {
        collector_toml(
            &dir_w,
            broker.port,
            0,
            &(store_toml(&pg, id, 3, &["ams"]) + extra),
        )
    };
    let trusted = format!("tls_ca_file = {:?}\n", certs.join("stocksync-ca.crt"));
    let worker = Collector::start(toml_config(&worker_toml("w1", &trusted)))
        .await
        .expect("a worker trusting the server's CA starts");
    let receipts = ams_batch(vec![stock_move(1, "MUG", MovementKind::Receipt, 10, None)]);
    assert_eq!(
        deliver(broker.port, "agents", &receipts, &mut Rng(5)).await,
        1
    );
    let url = format!("http://{}", worker.http_addr);
    assert_eq!(on_hand(&url, "MUG").await, 10);
    let encrypted: i64 = pg
        .query("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.client_addr IS NOT NULL")
        .parse()
        .unwrap();
    assert!(encrypted > 0, "the worker's connections are TLS");

    // The server takes TCP clients only over TLS: a worker without TLS is refused ...
    let plain = Collector::start(toml_config(&worker_toml("w2", "")))
        .await
        .err()
        .expect("a plain-text worker is refused");
    assert!(format!("{plain:#}").contains("no encryption"), "{plain:#}");
    // ... and a worker trusting another CA refuses the server's certificate.
    let other_dir = TempDir::new("pg-tls-other");
    let other = pki(&other_dir).join("certs/stocksync-ca.crt");
    let wrong = Collector::start(toml_config(&worker_toml(
        "w3",
        &format!("tls_ca_file = {other:?}\n"),
    )))
    .await
    .err()
    .expect("a worker that cannot verify the server is refused");
    assert!(format!("{wrong:#}").contains("certificate"), "{wrong:#}");
    worker.stop().await.unwrap();
}

/// Runs `stocksync-collector --config <config> move-to-postgres`; its exit and stderr.
fn move_to_postgres(config: &std::path::Path) -> (bool, String) {
    let out = std::process::Command::new(bin("stocksync-collector"))
        .arg("--config")
        .arg(config)
        .arg("move-to-postgres")
        .output()
        .expect("run stocksync-collector move-to-postgres");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_ledger_moves_into_postgres_and_workers_go_on_from_it() {
    let dir = TempDir::new("pg-move");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let (dir_a, dir_b) = (TempDir::new("pg-move-a"), TempDir::new("pg-move-b"));
    let broker = Broker::start(&dir_b);
    let shop = "[[orders.channel]]\nname = \"shop\"\n";
    let sqlite = Collector::start(toml_config(&collector_toml(&dir_a, broker.port, 0, shop)))
        .await
        .expect("sqlite collector starts");
    let a = format!("http://{}", sqlite.http_addr);
    let mut rng = Rng(0x30e);
    let mut stream = batches(&mut rng, "ams-1", "ams", "ber", 200, 10);
    stream.extend(batches(&mut rng, "ber-1", "ber", "ams", 100, 10));
    stream.push(Batch {
        agent_id: "ams-2".into(),
        ..ams_batch(vec![stock_move(1, "MUG", MovementKind::Receipt, 50, None)]).remove(0)
    });
    assert_eq!(
        deliver(broker.port, "agents", &stream, &mut Rng(6)).await,
        301
    );
    let held = post(
        &format!("{a}/v1/reservations"),
        r#"{"id":"r1","order":"O1","sku":"MUG","warehouse":"ams","quantity":4}"#,
        &[],
    )
    .await;
    assert_eq!(held.status, 201, "{}", held.body);
    let placed = post(
        &format!("{a}/v1/orders"),
        r#"{"id":"SO-M","channel":"shop","lines":[{"sku":"MUG","quantity":2}],"ship_to":{"country":"NL"}}"#,
        &[],
    )
    .await;
    assert_eq!(placed.status, 201, "{}", placed.body);
    publish_once(
        broker.port,
        "hostile",
        "stocksync/v1/ams/movements",
        b"junk".to_vec(),
    )
    .await;
    wait_for_a_reject(&a).await;
    let expected = (
        stock_view(&a).await,
        timeless(get(&format!("{a}/v1/reservations/r1")).await.body),
        get(&format!("{a}/v1/rejects")).await.body,
        get(&format!("{a}/v1/orders/SO-M")).await.body,
    );
    let drift = |url: String| async move {
        get(&format!("{url}/v1/exceptions?kind=drift&limit=1000"))
            .await
            .body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["id"].clone(), e["reason"].clone()))
            .collect::<Vec<_>>()
    };
    let drift_before = drift(a.clone()).await;
    assert!(!drift_before.is_empty(), "the stream's counts drifted");

    let config = dir_a.join("move.toml");
    let text = collector_toml(
        &dir_a,
        broker.port,
        0,
        &format!("{shop}{}", store_toml(&pg, "w1", 3, &["ams", "ber"])),
    );
    std::fs::write(&config, &text).expect("write config");
    let (ok, stderr) = move_to_postgres(&config);
    assert!(
        !ok && stderr.contains("in use"),
        "refused while the collector runs: {stderr}"
    );
    assert_eq!(
        pg.query("SELECT to_regclass('ledger') IS NULL"),
        "t",
        "nothing written"
    );
    sqlite.stop().await.unwrap();
    let (ok, stderr) = move_to_postgres(&config);
    assert!(ok, "the move failed: {stderr}");
    let (ok, stderr) = move_to_postgres(&config);
    assert!(!ok && stderr.contains("already holds a ledger"), "{stderr}");

    // A worker goes on from exactly where the SQLite collector stood ...
    let worker = Collector::start(toml_config(&text))
        .await
        .expect("worker starts");
    let b = format!("http://{}", worker.http_addr);
    let served = (
        stock_view(&b).await,
        timeless(get(&format!("{b}/v1/reservations/r1")).await.body),
        get(&format!("{b}/v1/rejects")).await.body,
        get(&format!("{b}/v1/orders/SO-M")).await.body,
    );
    assert_eq!(expected.0, served.0, "stock differs after the move");
    assert_eq!(expected.3, served.3, "the order differs after the move");
    assert_eq!(
        expected.1, served.1,
        "the reservation differs after the move"
    );
    assert_eq!(
        expected.2.as_array().map(Vec::len),
        served.2.as_array().map(Vec::len)
    );
    assert_eq!(expected.2[0]["reason"], served.2[0]["reason"]);
    let mut drift_after = drift(b.clone()).await;
    drift_after.sort_by_key(|(id, _)| id.to_string());
    let mut drift_before = drift_before;
    drift_before.sort_by_key(|(id, _)| id.to_string());
    assert_eq!(drift_before, drift_after, "drift moved with the ledger");
    // ... and agents resending everything apply nothing twice.
    assert_eq!(
        deliver(broker.port, "agents-again", &stream, &mut Rng(7)).await,
        0
    );
    assert_eq!(
        stock_view(&b).await,
        expected.0,
        "a resend after the move changed stock"
    );
    // The open order goes on on the worker: cancelled there, its 2 MUGs come back.
    let mugs = |v: &Value| {
        let t = &v["total"];
        (
            t["available"].as_i64().unwrap(),
            t["reserved"].as_i64().unwrap(),
        )
    };
    let before = mugs(&get(&format!("{b}/v1/stock/MUG")).await.body);
    let cancelled = post(&format!("{b}/v1/orders/SO-M/cancel"), "", &[]).await;
    assert_eq!(cancelled.body["state"], "cancelled", "{}", cancelled.body);
    let after = mugs(&get(&format!("{b}/v1/stock/MUG")).await.body);
    assert_eq!(after, (before.0 + 2, before.1 - 2));
    worker.stop().await.unwrap();
}

/// Poison interleaved with real batches: a refused payload must not be acknowledged to the
/// broker ahead of the batch before it, still committing on another connection. rumqttd
/// drops a client whose PUBACKs arrive out of order, so each such payload knocked the worker
/// off the broker (Mosquitto tolerates it; the embedded broker is the one that tells).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_between_batches_never_knocks_a_worker_off_the_broker() {
    let dir = TempDir::new("pg-poison-order");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let worker = Collector::start(toml_config(&collector_toml(
        &dir,
        broker.port,
        0,
        &store_toml(&pg, "w1", 3, &["ams"]),
    )))
    .await
    .expect("worker starts");
    let url = format!("http://{}", worker.http_addr);
    wait_for("worker subscribed", WAIT, || async {
        get(&format!("{url}/healthz")).await.body["warehouses"] == serde_json::json!(["ams"])
    })
    .await;
    let probe = MqttProbe::connect(broker.port, "ams-9").await;
    let topic = "stocksync/v1/ams/movements";
    for seq in 1..=40 {
        let batch = ams_batch(vec![stock_move(seq, "MUG", MovementKind::Receipt, 1, None)]);
        probe.publish(topic, wire::encode_batch(&batch[0])).await;
        probe.publish(topic, vec![1, 0xff, seq as u8]).await;
    }
    wait_for("every batch counted", WAIT, || async {
        on_hand(&url, "MUG").await == 40
    })
    .await;
    assert_eq!(
        metric(&url, "stocksync_broker_connects_total").await,
        1,
        "the worker lost its broker connection"
    );
    worker.stop().await.unwrap();
}

/// Batches queued for one warehouse are applied together, in one transaction, yet each is
/// still judged alone, as if it had committed before the next: a resend in the same group
/// is a duplicate, the same seqs with other bytes are a rolled-back journal (refused whole,
/// even when the batch that holds them first is in the same group), a recreated journal or
/// a wrong warehouse refuses only its batch. A large batch first keeps the applier busy so
/// the rest queue behind it; the outcome must not depend on how they were grouped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_of_a_group_is_judged_alone() {
    let dir = TempDir::new("pg-group-judged");
    let Some(pg) = Postgres::start(&dir) else {
        return;
    };
    let broker = Broker::start(&dir);
    let worker = Collector::start(toml_config(&collector_toml(
        &dir,
        broker.port,
        0,
        &store_toml(&pg, "w1", 3, &["ams"]),
    )))
    .await
    .expect("worker starts");
    let url = format!("http://{}", worker.http_addr);
    wait_for("worker subscribed", WAIT, || async {
        get(&format!("{url}/healthz")).await.body["warehouses"] == serde_json::json!(["ams"])
    })
    .await;
    let receipts = |seqs: std::ops::RangeInclusive<u64>, quantity: u64| {
        let movements = seqs
            .map(|seq| stock_move(seq, "MUG", MovementKind::Receipt, quantity, None))
            .collect();
        ams_batch(movements).remove(0)
    };
    let big = Batch {
        agent_id: "ams-2".into(),
        ..receipts(1..=400, 1)
    };
    let a = receipts(1..=3, 10);
    let reused = receipts(2..=4, 99);
    let c = receipts(4..=5, 100);
    let recreated = Batch {
        journal_id: 8,
        ..receipts(6..=6, 1000)
    };
    let elsewhere = Batch {
        warehouse: "ber".into(),
        ..receipts(7..=7, 1000)
    };
    let sent = [&big, &a, &reused, &a, &c, &recreated, &elsewhere, &c];
    let mut probe = MqttProbe::connect(broker.port, "group-judge").await;
    probe.subscribe("stocksync/v1/ams/acks/+").await;
    for b in sent {
        probe
            .publish("stocksync/v1/ams/movements", wire::encode_batch(b))
            .await;
    }
    let mut acks = Vec::new();
    while acks.len() < sent.len() {
        let ack = wire::decode_ack(&probe.next(WAIT).await.payload).expect("ack decodes");
        acks.push((ack.agent_id, ack.first_seq, ack.outcome));
    }
    let applied = |applied, duplicates| AckOutcome::Applied {
        applied,
        duplicates,
    };
    let outcome = |agent: &str, first: u64, nth: usize| {
        acks.iter()
            .filter(|(a, f, _)| a == agent && *f == first)
            .nth(nth)
            .map(|(_, _, o)| o.clone())
            .unwrap_or_else(|| panic!("no ack {nth} for {agent} {first}: {acks:?}"))
    };
    assert_eq!(outcome("ams-2", 1, 0), applied(400, 0));
    assert_eq!(outcome("ams-1", 1, 0), applied(3, 0));
    assert_eq!(
        outcome("ams-1", 1, 1),
        applied(0, 3),
        "a resend is a duplicate"
    );
    let reason = |o: AckOutcome| match o {
        AckOutcome::Rejected { reason } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let rolled_back = reason(outcome("ams-1", 2, 0));
    assert!(
        rolled_back.contains("sent seq 2 again with other content"),
        "{rolled_back}"
    );
    assert_eq!(outcome("ams-1", 4, 0), applied(2, 0));
    assert_eq!(outcome("ams-1", 4, 1), applied(0, 2));
    assert!(reason(outcome("ams-1", 6, 0)).contains("journal was recreated"));
    assert!(reason(outcome("ams-1", 7, 0)).contains("does not match topic"));
    // 400 + 3 x 10 + 2 x 100: nothing of the refused batches.
    assert_eq!(on_hand(&url, "MUG").await, 630);
    let rejects = get(&format!("{url}/v1/rejects")).await.body;
    assert_eq!(rejects.as_array().map(Vec::len), Some(3), "{rejects}");
    worker.stop().await.unwrap();
}
