//! The foundation's promises, end to end: a movement posted at a warehouse is counted at the
//! collector exactly once, whatever fails in between (broker outage, agent or collector
//! killed with SIGKILL, duplicate deliveries), and bad input is refused with the field named
//! and kept, never half-journaled. The cases about the collector run on both stores
//! (`<case>::sqlite`, `<case>::postgres`: two workers on one database).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use stocksync_agent::Agent;
use stocksync_common::model::*;
use stocksync_common::wire::{self, AckOutcome, Batch};
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
use support::*;

/// A broker process plus the collector side for `ams`, subscribed; `None` when the backend
/// is PostgreSQL and it is not installed.
async fn central(backend: Backend, dir: &TempDir) -> Option<(Broker, Collectors, String)> {
    let broker = Broker::start(dir);
    let collectors = CollectorSpec::new(backend, dir, broker.port)
        .warehouses(&["ams"])
        .start()
        .await?;
    collectors.wait_held(&["ams"]).await;
    let url = collectors.url().to_string();
    Some((broker, collectors, url))
}

async fn agent(dir: &TempDir, id: &str, warehouse: &str, broker_port: u16) -> (Agent, String) {
    let agent = Agent::start(agent_config(dir, id, warehouse, broker_port, 0))
        .await
        .expect("agent starts");
    let url = format!("http://{}", agent.http_addr);
    (agent, url)
}

on_both_backends!(a_posted_movement_is_visible_at_the_collector_within_one_second);
async fn a_posted_movement_is_visible_at_the_collector_within_one_second(backend: Backend) {
    let dir = TempDir::new("visible");
    let Some((_broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };
    let (agent, a_url) = agent(&dir, "ams-1", "ams", _broker.port).await;
    // Let both sides connect first: the promise is about movements, not about start-up.
    wait_for("agent connected", Duration::from_secs(10), || async {
        get(&format!("{a_url}/v1/status")).await.body["broker"] == "connected"
    })
    .await;

    let started = Instant::now();
    let r = post(
        &format!("{a_url}/v1/movements"),
        r#"{"sku":"SKU-1","kind":"receipt","quantity":7,"bin":"A-01"}"#,
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_for("stock visible", Duration::from_secs(1), || async {
        on_hand(&c_url, "SKU-1").await == 7
    })
    .await;
    let latency = started.elapsed();

    let stock = get(&format!("{c_url}/v1/stock/SKU-1")).await.body;
    assert_eq!(stock["locations"][0]["warehouse"], "ams");
    assert_eq!(stock["locations"][0]["bin"], "A-01");
    assert_eq!(stock["locations"][0]["available"], 7);
    let by_location = get(&format!("{c_url}/v1/stock?location=ams/A-01"))
        .await
        .body;
    assert_eq!(by_location["items"][0]["sku"], "SKU-1");
    eprintln!("post -> visible at collector: {latency:?}");
    agent.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(ten_thousand_movements_posted_while_the_broker_is_down_all_arrive);
async fn ten_thousand_movements_posted_while_the_broker_is_down_all_arrive(backend: Backend) {
    const N: usize = 10_000;
    let dir = TempDir::new("outage");
    let Some((mut broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };
    let (agent, a_url) = agent(&dir, "ams-1", "ams", broker.port).await;
    wait_for("agent connected", Duration::from_secs(10), || async {
        get(&format!("{a_url}/v1/status")).await.body["broker"] == "connected"
    })
    .await;

    broker.kill();
    wait_for("agent sees the outage", Duration::from_secs(10), || async {
        get(&format!("{a_url}/v1/status")).await.body["broker"] == "disconnected"
    })
    .await;

    let skus = ["A", "B", "C", "D", "E", "F", "G"];
    let batches = receipt_batches(N, 100, &skus);
    let started = Instant::now();
    let mut posters = tokio::task::JoinSet::new();
    for chunk in batches.chunks(batches.len() / 8) {
        let (url, chunk) = (format!("{a_url}/v1/movements"), chunk.to_vec());
        posters.spawn_blocking(move || {
            chunk
                .iter()
                .map(|b| post_blocking(&url, b, &[]).status)
                .collect::<Vec<_>>()
        });
    }
    while let Some(statuses) = posters.join_next().await {
        assert!(
            statuses.unwrap().iter().all(|s| *s == 202),
            "every batch accepted while offline"
        );
    }
    let ingest = started.elapsed();
    let status = get(&format!("{a_url}/v1/status")).await.body;
    assert_eq!(status["backlog"], N as u64, "all journaled: {status}");
    let agent_metrics = get(&format!("{a_url}/metrics")).await.body;
    let agent_metrics = agent_metrics.as_str().unwrap();
    assert!(
        agent_metrics.contains(&format!("stocksync_agent_backlog {N}\n")),
        "{agent_metrics}"
    );
    assert!(
        agent_metrics.contains("stocksync_agent_broker_connected 0\n"),
        "{agent_metrics}"
    );
    assert_eq!(
        on_hand(&c_url, "A").await,
        0,
        "nothing can have arrived yet"
    );

    let restarted = Instant::now();
    broker.restart();
    wait_for(
        "all movements at the collector",
        Duration::from_secs(120),
        || async { collectors.metric("stocksync_movements_applied_total").await as usize >= N },
    )
    .await;
    let drain = restarted.elapsed();
    let mut total = 0;
    for (i, sku) in skus.iter().enumerate() {
        let expected = (0..N).filter(|n| n % skus.len() == i).count() as i64;
        assert_eq!(on_hand(&c_url, sku).await, expected, "sku {sku}");
        total += expected;
    }
    assert_eq!(total, N as i64);
    assert_eq!(
        collectors.metric("stocksync_movements_applied_total").await,
        N as u64,
        "nothing counted twice"
    );
    wait_for("agent backlog empty", Duration::from_secs(10), || async {
        get(&format!("{a_url}/v1/status")).await.body["backlog"] == 0
    })
    .await;
    eprintln!(
        "offline ingest: {N} movements in {ingest:?} ({:.0}/s); drain after broker restart: {drain:?} ({:.0}/s)",
        N as f64 / ingest.as_secs_f64(),
        N as f64 / drain.as_secs_f64()
    );
    agent.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(an_agent_killed_mid_forwarding_loses_nothing_and_counts_nothing_twice);
async fn an_agent_killed_mid_forwarding_loses_nothing_and_counts_nothing_twice(backend: Backend) {
    const N: usize = 4_000;
    let dir = TempDir::new("kill-agent");
    let Some((broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };
    let port = free_port();
    // Small batches, one in flight: forwarding takes long enough to be interrupted.
    let extra = "[forward]\nbatch_max = 10\nmax_inflight_batches = 1\nack_timeout_ms = 2000\n";
    let config = agent_toml(&dir, "ams-1", "ams", broker.port, port, extra);
    let mut agent = Service::start(&dir, "stocksync-agent", "agent", &config, port);
    for batch in receipt_batches(N, 500, &["K1", "K2"]) {
        assert_eq!(
            post(&format!("{}/v1/movements", agent.url), &batch, &[])
                .await
                .status,
            202
        );
    }
    wait_for("forwarding under way", Duration::from_secs(30), || async {
        collectors.metric("stocksync_movements_applied_total").await >= 200
    })
    .await;
    agent.kill();
    let at_kill = collectors.metric("stocksync_movements_applied_total").await;
    assert!(
        at_kill < N as u64,
        "forwarding finished before the kill ({at_kill}); the test did not test"
    );

    agent.restart();
    wait_for("all movements applied", Duration::from_secs(60), || async {
        collectors.metric("stocksync_movements_applied_total").await >= N as u64
    })
    .await;
    assert_eq!(
        on_hand(&c_url, "K1").await + on_hand(&c_url, "K2").await,
        N as i64
    );
    assert_eq!(
        collectors.metric("stocksync_movements_applied_total").await,
        N as u64
    );
    eprintln!(
        "killed at {at_kill}/{N} applied; duplicates ignored after restart: {}",
        collectors
            .metric("stocksync_movements_duplicate_total")
            .await
    );
    drop(agent);
    collectors.stop().await;
}

on_both_backends!(a_collector_killed_mid_stream_loses_nothing_and_counts_nothing_twice);
/// On PostgreSQL the worker holding `ams` is killed: the other takes it over by lease, or the
/// killed one, restarted, takes it back.
async fn a_collector_killed_mid_stream_loses_nothing_and_counts_nothing_twice(backend: Backend) {
    const N: usize = 4_000;
    let dir = TempDir::new("kill-collector");
    let broker = Broker::start(&dir);
    let Some(mut collectors) = tokio::task::block_in_place(|| {
        CollectorSpec::new(backend, &dir, broker.port)
            .warehouses(&["ams"])
            .start_processes()
    }) else {
        return;
    };
    collectors.wait_held(&["ams"]).await;
    let mut holder = 0;
    for i in 0..collectors.urls.len() {
        if backend == Backend::Postgres && collectors.held_by(i).await == ["ams"] {
            holder = i;
        }
    }
    let extra = "[forward]\nbatch_max = 10\nmax_inflight_batches = 2\nack_timeout_ms = 2000\n";
    let a_config: stocksync_agent::config::AgentConfig =
        toml_config(&agent_toml(&dir, "ams-1", "ams", broker.port, 0, extra));
    let agent = Agent::start(a_config).await.unwrap();
    let a_url = format!("http://{}", agent.http_addr);
    for batch in receipt_batches(N, 500, &["K1", "K2", "K3"]) {
        assert_eq!(
            post(&format!("{a_url}/v1/movements"), &batch, &[])
                .await
                .status,
            202
        );
    }
    wait_for("stream under way", Duration::from_secs(30), || async {
        collectors.metric("stocksync_movements_applied_total").await >= 200
    })
    .await;
    collectors.procs[holder].kill();
    let backlog_at_kill = get(&format!("{a_url}/v1/status")).await.body["backlog"]
        .as_u64()
        .unwrap();
    assert!(
        backlog_at_kill > 0,
        "stream finished before the kill; the test did not test"
    );

    tokio::task::block_in_place(|| collectors.procs[holder].restart());
    let c_url = collectors.url().to_string();
    wait_for("agent backlog drained", Duration::from_secs(60), || async {
        get(&format!("{a_url}/v1/status")).await.body["backlog"] == 0
    })
    .await;
    let total =
        on_hand(&c_url, "K1").await + on_hand(&c_url, "K2").await + on_hand(&c_url, "K3").await;
    assert_eq!(
        total, N as i64,
        "every movement counted exactly once across the crash"
    );
    eprintln!("collector killed with {backlog_at_kill} movements unacknowledged at the agent");
    agent.stop().await.unwrap();
}

fn movement(seq: u64, sku: &str, quantity: u64) -> Movement {
    Movement {
        seq,
        sku: Sku(sku.into()),
        location: Location {
            warehouse: "ams".into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity,
        unit: "each".into(),
        unit_quantity: quantity,
        occurred_at: OccurredAt {
            unix_ms: 1_795_000_000_000,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Default::default(),
    }
}

on_both_backends!(the_same_batch_twice_and_a_retried_post_are_counted_once);
async fn the_same_batch_twice_and_a_retried_post_are_counted_once(backend: Backend) {
    let dir = TempDir::new("dupes");
    let Some((broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };

    // The same batch delivered twice, straight onto the broker.
    let mut probe = MqttProbe::connect(broker.port, "replayer").await;
    probe.subscribe("stocksync/v1/ams/acks/replayer").await;
    let batch = Batch {
        agent_id: "replayer".into(),
        journal_id: 42,
        warehouse: "ams".into(),
        movements: vec![movement(1, "D1", 3), movement(2, "D1", 4)],
        sent_at_ms: None,
    };
    let payload = wire::encode_batch(&batch);
    probe
        .publish("stocksync/v1/ams/movements", payload.clone())
        .await;
    probe.publish("stocksync/v1/ams/movements", payload).await;
    let first = wire::decode_ack(&probe.next(Duration::from_secs(10)).await.payload).unwrap();
    let second = wire::decode_ack(&probe.next(Duration::from_secs(10)).await.payload).unwrap();
    assert_eq!(
        first.outcome,
        AckOutcome::Applied {
            applied: 2,
            duplicates: 0
        }
    );
    assert_eq!(
        second.outcome,
        AckOutcome::Applied {
            applied: 0,
            duplicates: 2
        }
    );
    assert_eq!((second.first_seq, second.last_seq), (1, 2));
    assert_eq!(on_hand(&c_url, "D1").await, 7);

    // A retried POST with the same idempotency key.
    let (agent, a_url) = agent(&dir, "ams-1", "ams", broker.port).await;
    let body = r#"[{"sku":"D2","kind":"receipt","quantity":5},{"sku":"D2","kind":"shipment","quantity":1}]"#;
    let key = [("idempotency-key", "order-77-attempt")];
    let r1 = post(&format!("{a_url}/v1/movements"), body, &key).await;
    let r2 = post(&format!("{a_url}/v1/movements"), body, &key).await;
    assert_eq!(r1.status, 202);
    assert_eq!(
        r2.status, 200,
        "a replay is answered, not journaled: {:?}",
        r2.body
    );
    assert_eq!(r2.body["replayed"], true);
    assert_eq!(
        (r1.body["first_seq"].clone(), r1.body["last_seq"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(r2.body["first_seq"], r1.body["first_seq"]);

    // A movement id sent twice in different requests (a scanner retrying).
    let scan = r#"{"sku":"D2","kind":"receipt","quantity":10,"id":"scan-0001"}"#;
    assert_eq!(
        post(&format!("{a_url}/v1/movements"), scan, &[]).await.body["journaled"],
        1
    );
    let again = post(&format!("{a_url}/v1/movements"), scan, &[]).await;
    assert_eq!(
        (
            again.body["journaled"].clone(),
            again.body["duplicates"].clone()
        ),
        (json!(0), json!(1))
    );

    wait_for("D2 = 5 - 1 + 10", Duration::from_secs(10), || async {
        on_hand(&c_url, "D2").await == 14
    })
    .await;
    let status = get(&format!("{a_url}/v1/status")).await.body;
    assert_eq!(
        status["last_seq"], 3,
        "three movements journaled in all: {status}"
    );
    agent.stop().await.unwrap();
    collectors.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_whole_with_the_field_named_and_kept() {
    let dir = TempDir::new("invalid");
    // No broker at all: validation and journaling do not depend on the network.
    let (agent, a_url) = agent(&dir, "ams-1", "ams", free_port()).await;
    let good = r#"{"sku":"OK","kind":"receipt","quantity":1}"#;
    let long = "S".repeat(65);
    let oversized = format!("[{}]", vec![good; 1001].join(","));
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (
            "{\"sku\": \"A\", \"kind\": ".into(),
            400,
            "$",
            "malformed JSON",
        ),
        (
            format!("[{good}, {{\"sku\":\"A\",\"kind\":\"teleport\",\"quantity\":1}}]"),
            422,
            "$[1].kind",
            "unknown variant",
        ),
        (
            format!("[{good}, {{\"sku\":\"A\",\"kind\":\"receipt\",\"quantity\":-3}}]"),
            422,
            "$[1].quantity",
            "out of range",
        ),
        (
            r#"{"sku":"A","kind":"receipt","quantity":0}"#.into(),
            422,
            "$.quantity",
            "out of range",
        ),
        (
            r#"{"kind":"receipt","quantity":1}"#.into(),
            422,
            "$.sku",
            "missing field `sku`",
        ),
        (
            r#"{"sku":"","kind":"receipt","quantity":1}"#.into(),
            422,
            "$.sku",
            "empty",
        ),
        (
            format!(r#"{{"sku":"{long}","kind":"receipt","quantity":1}}"#),
            422,
            "$.sku",
            "limit is 64",
        ),
        (
            format!(
                r#"{{"sku":"A","kind":"receipt","quantity":1,"note":"{}"}}"#,
                "n".repeat(513)
            ),
            422,
            "$.note",
            "limit is 512",
        ),
        (oversized, 422, "$", "exceeds the limit of 1000"),
        (
            r#"{"sku":"A","kind":"receipt","quantity":1,"warehouse":"ber"}"#.into(),
            422,
            "$.warehouse",
            "not this agent's warehouse",
        ),
        (
            r#"{"sku":"A","kind":"receipt","quantity":2.5}"#.into(),
            422,
            "$.quantity",
            "quantity must be a whole number of each",
        ),
    ];
    for (body, status, field, detail) in &cases {
        let r = post(&format!("{a_url}/v1/movements"), body, &[]).await;
        assert_eq!(r.status, *status, "{body:.80}: {:?}", r.body);
        assert_eq!(r.body["field"], *field, "{body:.80}: {:?}", r.body);
        let text = r.body["detail"].as_str().unwrap();
        assert!(
            text.contains(detail),
            "{body:.80}: detail {text:?} should mention {detail:?}"
        );
    }
    let status = get(&format!("{a_url}/v1/status")).await.body;
    assert_eq!(
        status["last_seq"], 0,
        "nothing of a refused batch is journaled"
    );
    assert_eq!(
        status["rejects"],
        cases.len() as u64,
        "every refusal is kept"
    );
    let rejects = get(&format!("{a_url}/v1/rejects")).await.body;
    assert_eq!(rejects[0]["field"], "$.quantity");
    assert_eq!(rejects[0]["source"], "http");
    assert!(rejects[0]["payload"].as_str().unwrap().contains("2.5"));
    agent.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_journal_refuses_with_503_and_journals_nothing() {
    let dir = TempDir::new("full");
    let config = agent_toml(&dir, "ams-1", "ams", free_port(), 0, "");
    let config = config.replace("[journal]\n", "[journal]\nmax_backlog = 5\n");
    let agent = Agent::start(toml_config(&config)).await.unwrap();
    let url = format!("http://{}/v1/movements", agent.http_addr);
    let three = r#"[{"sku":"F","kind":"receipt","quantity":1},{"sku":"F","kind":"receipt","quantity":1},{"sku":"F","kind":"receipt","quantity":1}]"#;
    assert_eq!(post(&url, three, &[]).await.status, 202);
    let r = post(&url, three, &[]).await;
    assert_eq!(r.status, 503, "{:?}", r.body);
    assert!(
        r.body["detail"].as_str().unwrap().contains("limit of 5"),
        "{:?}",
        r.body
    );
    let status = get(&format!("http://{}/v1/status", agent.http_addr))
        .await
        .body;
    assert_eq!(
        (status["last_seq"].clone(), status["backlog"].clone()),
        (json!(3), json!(3))
    );
    agent.stop().await.unwrap();
}

on_both_backends!(a_future_wire_version_is_kept_not_dropped_and_not_acknowledged);
async fn a_future_wire_version_is_kept_not_dropped_and_not_acknowledged(backend: Backend) {
    let dir = TempDir::new("future");
    let Some((broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };
    let mut probe = MqttProbe::connect(broker.port, "from-the-future").await;
    probe
        .subscribe("stocksync/v1/ams/acks/from-the-future")
        .await;
    let mut future = wire::encode_batch(&Batch {
        agent_id: "from-the-future".into(),
        journal_id: 9,
        warehouse: "ams".into(),
        movements: vec![movement(1, "V", 1)],
        sent_at_ms: None,
    });
    future[0] = 3;
    probe
        .publish("stocksync/v1/ams/movements", future.clone())
        .await;
    probe.publish("stocksync/v1/ams/movements", future).await;
    // A v1 batch after them: its ack is the first (and only) one the probe may see.
    let v1 = Batch {
        agent_id: "from-the-future".into(),
        journal_id: 9,
        warehouse: "ams".into(),
        movements: vec![movement(5, "V", 2)],
        sent_at_ms: None,
    };
    probe
        .publish("stocksync/v1/ams/movements", wire::encode_batch(&v1))
        .await;
    let ack = wire::decode_ack(&probe.next(Duration::from_secs(10)).await.payload).unwrap();
    assert_eq!(
        (ack.first_seq, ack.last_seq),
        (5, 5),
        "the v3 payload got no ack"
    );

    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert_eq!(rejects.as_array().unwrap().len(), 1, "{rejects}");
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("wire version 3 is unknown"),
        "{rejects}"
    );
    assert_eq!(
        rejects[0]["seen_count"], 2,
        "kept once, every sighting counted"
    );
    assert_eq!(on_hand(&c_url, "V").await, 2);
    collectors.stop().await;
}

on_both_backends!(a_batch_whose_warehouse_does_not_match_its_topic_is_rejected_and_recorded);
async fn a_batch_whose_warehouse_does_not_match_its_topic_is_rejected_and_recorded(
    backend: Backend,
) {
    let dir = TempDir::new("mismatch");
    let Some((broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };
    let mut probe = MqttProbe::connect(broker.port, "sneaky").await;
    // The ack goes to the warehouse the topic proves, not the one the payload claims.
    probe.subscribe("stocksync/v1/ams/acks/sneaky").await;
    let batch = Batch {
        agent_id: "sneaky".into(),
        journal_id: 1,
        warehouse: "ber".into(),
        movements: vec![movement(1, "M", 9)],
        sent_at_ms: None,
    };
    probe
        .publish("stocksync/v1/ams/movements", wire::encode_batch(&batch))
        .await;
    let ack = wire::decode_ack(&probe.next(Duration::from_secs(10)).await.payload).unwrap();
    assert!(
        matches!(&ack.outcome, AckOutcome::Rejected { reason } if reason.contains("does not match topic")),
        "{ack:?}"
    );
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert_eq!(rejects[0]["agent_id"], "sneaky");
    assert_eq!(on_hand(&c_url, "M").await, 0);
    assert_eq!(
        collectors.metric("stocksync_batches_rejected_total").await,
        1
    );
    collectors.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scanner_messages_are_journaled_and_bad_ones_kept_in_the_rejects_queue() {
    let dir = TempDir::new("scanner");
    // About the agent's scanner input: one store is enough.
    let (broker, collectors, c_url) = central(Backend::Sqlite, &dir).await.expect("sqlite");
    let extra = format!(
        "[scanner]\ntopic = \"scanners/ams/+/movements\"\n[scanner.broker]\nport = {}\n",
        broker.port
    );
    let config = agent_toml(&dir, "ams-1", "ams", broker.port, 0, &extra);
    let agent = Agent::start(toml_config(&config)).await.unwrap();
    let a_url = format!("http://{}", agent.http_addr);
    let probe = MqttProbe::connect(broker.port, "scanner-7").await;
    wait_for(
        "scanner input subscribed",
        Duration::from_secs(10),
        || async {
            // Publish until the agent has journaled one: the subscription is live from then on.
            probe
                .publish(
                    "scanners/ams/7/movements",
                    br#"{"sku":"SC","kind":"receipt","quantity":2,"id":"scan-1"}"#.to_vec(),
                )
                .await;
            get(&format!("{a_url}/v1/status")).await.body["last_seq"] == 1
        },
    )
    .await;
    probe
        .publish(
            "scanners/ams/7/movements",
            br#"{"sku":"SC","kind":"receipt","quantity":"lots"}"#.to_vec(),
        )
        .await;
    wait_for("reject recorded", Duration::from_secs(10), || async {
        get(&format!("{a_url}/v1/status")).await.body["rejects"] == 1
    })
    .await;
    let rejects = get(&format!("{a_url}/v1/rejects")).await.body;
    assert_eq!(rejects[0]["source"], "scanner:scanners/ams/7/movements");
    assert_eq!(rejects[0]["field"], "$.quantity");
    wait_for("scan counted once", Duration::from_secs(10), || async {
        on_hand(&c_url, "SC").await == 2
    })
    .await;
    assert_eq!(
        get(&format!("{a_url}/v1/status")).await.body["last_seq"],
        1,
        "retried scan deduplicated by id"
    );
    agent.stop().await.unwrap();
    collectors.stop().await;
}

on_both_backends!(a_recreated_agent_journal_is_refused_not_mistaken_for_duplicates);
async fn a_recreated_agent_journal_is_refused_not_mistaken_for_duplicates(backend: Backend) {
    let dir = TempDir::new("recreated");
    let Some((broker, collectors, c_url)) = central(backend, &dir).await else {
        return;
    };
    let config = agent_config(&dir, "ams-1", "ams", broker.port, 0);
    let journal = config.journal.path.clone();
    let first = Agent::start(config.clone()).await.unwrap();
    let a_url = format!("http://{}", first.http_addr);
    post(
        &format!("{a_url}/v1/movements"),
        r#"{"sku":"J","kind":"receipt","quantity":4}"#,
        &[],
    )
    .await;
    wait_for("first journal applied", Duration::from_secs(10), || async {
        on_hand(&c_url, "J").await == 4
    })
    .await;
    first.stop().await.unwrap();

    // The journal file is lost; the new one starts again at seq 1 under the same agent id.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", journal.display()));
    }
    let second = Agent::start(config).await.unwrap();
    let a_url = format!("http://{}", second.http_addr);
    post(
        &format!("{a_url}/v1/movements"),
        r#"{"sku":"J","kind":"receipt","quantity":5}"#,
        &[],
    )
    .await;
    wait_for(
        "collector refuses the new journal",
        Duration::from_secs(10),
        || async { get(&format!("{a_url}/v1/status")).await.body["refused_by_collector"] == 1 },
    )
    .await;
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("journal was recreated"),
        "{rejects}"
    );
    assert_eq!(
        on_hand(&c_url, "J").await,
        4,
        "seq 1 of the new journal is not taken for a duplicate, nor applied"
    );
    second.stop().await.unwrap();
    collectors.stop().await;
}
