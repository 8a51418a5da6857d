//! Trust no sender, end to end: what a hostile or broken publisher can do to the message
//! path. A forged batch must not make another agent drop movements, a poison message must
//! not stop (or wedge) a consumer, and a rolled-back journal must not lose movements silently.

mod support;

use std::time::Duration;

use stocksync_agent::Agent;
use stocksync_collector::Collector;
use stocksync_common::model::*;
use stocksync_common::wire::{self, Ack, AckOutcome, Batch};
use support::*;

fn movement(seq: u64, warehouse: &str, sku: &str) -> Movement {
    Movement {
        seq,
        sku: Sku(sku.into()),
        location: Location {
            warehouse: warehouse.into(),
            bin: None,
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 1,
        unit: "each".into(),
        unit_quantity: 1,
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

async fn status(a_url: &str) -> serde_json::Value {
    get(&format!("{a_url}/v1/status")).await.body
}

/// Issue 10, item 1: with its own topic (the ACL allows it), ber-1 publishes a batch that
/// claims to be ams-1's with seqs 1..10^12. Before the fix the collector answered
/// `Rejected` on ams-1's ack topic and ams-1 marked every unacknowledged movement refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_forged_by_another_warehouse_cannot_make_an_agent_drop_movements() {
    const N: usize = 2000;
    let dir = TempDir::new("forged");
    let broker = Broker::start(&dir);
    let config = collector_config(&dir, broker.port, 0);
    // Once, so that the broker keeps the collector's session while it is stopped.
    let collector = Collector::start(config.clone()).await.unwrap();
    let c_url = format!("http://{}", collector.http_addr);
    wait_for("collector connected", Duration::from_secs(10), || async {
        metric(&c_url, "stocksync_broker_connected").await == 1
    })
    .await;
    collector.stop().await.unwrap();

    // Ten movements in flight at a time: the rest are journaled, not yet sent, when the
    // forged answers arrive; those are the ones an obeyed forged ack would drop.
    let extra = "[forward]\nbatch_max = 10\nmax_inflight_batches = 1\n";
    let agent_toml = agent_toml(&dir, "ams-1", "ams", broker.port, 0, extra);
    let agent = Agent::start(toml_config(&agent_toml)).await.unwrap();
    let a_url = format!("http://{}", agent.http_addr);
    wait_for("agent connected", Duration::from_secs(10), || async {
        status(&a_url).await["broker"] == "connected"
    })
    .await;
    for body in receipt_batches(N, 500, &["F"]) {
        assert_eq!(
            post(&format!("{a_url}/v1/movements"), &body, &[])
                .await
                .status,
            202
        );
    }

    let mut attacker = MqttProbe::connect(broker.port, "ber-1").await;
    attacker.subscribe("stocksync/v1/ber/acks/ams-1").await;
    let forged = Batch {
        agent_id: "ams-1".into(),
        journal_id: 1,
        warehouse: "ams".into(),
        movements: vec![
            movement(1, "ams", "F"),
            movement(1_000_000_000_000, "ams", "F"),
        ],
        sent_at_ms: None,
    };
    attacker
        .publish("stocksync/v1/ber/movements", wire::encode_batch(&forged))
        .await;
    // The same harm sent straight to ams-1's ack topic (a broker without ACLs, or another
    // agent of the same warehouse): the agent must ignore ranges it never sent.
    for outcome in [
        AckOutcome::Rejected {
            reason: "forged".into(),
        },
        AckOutcome::Applied {
            applied: 1,
            duplicates: 0,
        },
    ] {
        let ack = Ack {
            agent_id: "ams-1".into(),
            first_seq: 1,
            last_seq: 1_000_000_000_000,
            outcome,
        };
        attacker
            .publish("stocksync/v1/ams/acks/ams-1", wire::encode_ack(&ack))
            .await;
    }
    wait_for("forged acks ignored", Duration::from_secs(10), || async {
        status(&a_url).await["acks_ignored"] == 2
    })
    .await;
    assert_eq!(
        status(&a_url).await["backlog"],
        N,
        "nothing marked acknowledged"
    );

    let collector = Collector::start(config).await.unwrap();
    let c_url = format!("http://{}", collector.http_addr);
    wait_for(
        "every movement counted",
        Duration::from_secs(60),
        || async { on_hand(&c_url, "F").await == N as i64 },
    )
    .await;
    wait_for("backlog drained", Duration::from_secs(30), || async {
        status(&a_url).await["backlog"] == 0
    })
    .await;
    let s = status(&a_url).await;
    assert_eq!(s["refused_by_collector"], 0, "{s}");

    // The forged batch is kept and answered on the topic's warehouse, where no ams agent listens.
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match topic"),
        "{rejects}"
    );
    assert_eq!(metric(&c_url, "stocksync_batches_rejected_total").await, 1);
    let answer = wire::decode_ack(&attacker.next(Duration::from_secs(10)).await.payload).unwrap();
    assert!(
        matches!(answer.outcome, AckOutcome::Rejected { .. }),
        "{answer:?}"
    );
    agent.stop().await.unwrap();
    collector.stop().await.unwrap();
}

/// Publishes one QoS 1 message with a client whose packet limit allows `payload`, and waits
/// until the broker acknowledged it or dropped the connection (a broker may refuse it).
async fn publish_large(port: u16, client_id: &str, topic: &str, payload: Vec<u8>) {
    let mut opts = rumqttc::MqttOptions::new(client_id, "127.0.0.1", port);
    opts.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 16);
    client
        .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn reasons(rejects: &serde_json::Value) -> Vec<String> {
    rejects
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Issue 10, items 2 and 3: a batch with `+` in its agent id (the ack topic cannot be
/// published to), undecodable bytes, an empty payload and a 1.5 MB message. Before the fix
/// the first stopped the consumer for good (and again after every restart) and the last
/// wedged it. Each must be kept in the rejects queue, PUBACKed, and counting go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_batches_are_kept_acknowledged_and_never_stop_counting() {
    let dir = TempDir::new("poison");
    let broker = Broker::start(&dir);
    let config = collector_config(&dir, broker.port, 0);
    let collector = Collector::start(config.clone()).await.unwrap();
    let c_url = format!("http://{}", collector.http_addr);
    wait_for("collector connected", Duration::from_secs(10), || async {
        metric(&c_url, "stocksync_broker_connected").await == 1
    })
    .await;
    let mut probe = MqttProbe::connect(broker.port, "ams-9").await;
    probe.subscribe("stocksync/v1/ams/acks/ams-9").await;
    let topic = "stocksync/v1/ams/movements";
    let wildcard = Batch {
        agent_id: "ams+1".into(),
        journal_id: 3,
        warehouse: "ams".into(),
        movements: vec![movement(1, "ams", "P")],
        sent_at_ms: None,
    };
    probe.publish(topic, wire::encode_batch(&wildcard)).await;
    probe.publish(topic, vec![1, 0xff, 0xff, 0xff]).await;
    probe.publish(topic, Vec::new()).await;
    publish_large(broker.port, "oversized", topic, vec![1; 1_500_000]).await;

    let mut seq = 0;
    let mut counted_after_poison = || {
        seq += 1;
        Batch {
            agent_id: "ams-9".into(),
            journal_id: 9,
            warehouse: "ams".into(),
            movements: vec![movement(seq, "ams", "P")],
            sent_at_ms: None,
        }
    };
    probe
        .publish(topic, wire::encode_batch(&counted_after_poison()))
        .await;
    let ack = wire::decode_ack(&probe.next(Duration::from_secs(10)).await.payload).unwrap();
    assert_eq!(
        (ack.first_seq, ack.outcome),
        (
            1,
            AckOutcome::Applied {
                applied: 1,
                duplicates: 0
            }
        )
    );
    assert_eq!(on_hand(&c_url, "P").await, 1);

    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    let seen = reasons(&rejects);
    assert!(
        seen.iter()
            .any(|r| r.contains("agent_id cannot name an ack topic")),
        "{rejects}"
    );
    assert!(
        seen.iter().any(|r| r.starts_with("malformed v1 payload")),
        "{rejects}"
    );
    assert!(seen.iter().any(|r| r == "empty payload"), "{rejects}");
    // The shipped Mosquitto config and the embedded broker refuse it at the publisher (their
    // max_packet_size equals our clients' limit); the test's Mosquitto has no limit, so there
    // the collector reads it and keeps it.
    let oversized = seen
        .iter()
        .any(|r| r.contains("exceeds the 1048576-byte limit"));
    assert_eq!(oversized, broker.kind == BrokerKind::Mosquitto, "{rejects}");
    let health = get(&format!("{c_url}/healthz")).await;
    assert_eq!(health.status, 200, "{:?}", health.body);
    assert_eq!(health.body["tasks"]["consume"], "running");

    // After a restart nothing of it comes back: it was PUBACKed, not left for redelivery.
    collector.stop().await.unwrap();
    let collector = Collector::start(config).await.unwrap();
    let c_url = format!("http://{}", collector.http_addr);
    probe
        .publish(topic, wire::encode_batch(&counted_after_poison()))
        .await;
    wait_for("counted after restart", Duration::from_secs(10), || async {
        on_hand(&c_url, "P").await == 2
    })
    .await;
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    for r in rejects.as_array().unwrap() {
        assert_eq!(r["seen_count"], 1, "redelivered: {r}");
    }
    collector.stop().await.unwrap();
}

/// Issue 10, item 4: one 1.5 MB scanner message made the scanner link reconnect forever and
/// no later scan was journaled. The scanners' broker is the site's own (here without a
/// packet limit below the message): the agent must read it, refuse it, and go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_scanner_message_is_refused_and_later_scans_are_journaled() {
    let dir = TempDir::new("scanner-poison");
    let broker = Broker::start(&dir);
    let scanner_port = match broker.kind {
        BrokerKind::Mosquitto => broker.port,
        BrokerKind::Embedded => {
            let port = free_port();
            stocksync_collector::broker::start_embedded(([127, 0, 0, 1], port).into(), 8 << 20)
                .unwrap();
            port
        }
    };
    let extra = format!(
        "[scanner]\ntopic = \"scanners/ams/+/movements\"\n[scanner.broker]\nport = {scanner_port}\n"
    );
    let config = agent_toml(&dir, "ams-1", "ams", broker.port, 0, &extra);
    let agent = Agent::start(toml_config(&config)).await.unwrap();
    let a_url = format!("http://{}", agent.http_addr);
    let probe = MqttProbe::connect(scanner_port, "scanner-7").await;
    let topic = "scanners/ams/7/movements";
    wait_for(
        "scanner input subscribed",
        Duration::from_secs(10),
        || async {
            probe
                .publish(
                    topic,
                    br#"{"sku":"SC","kind":"receipt","quantity":1,"id":"scan-1"}"#.to_vec(),
                )
                .await;
            status(&a_url).await["last_seq"] == 1
        },
    )
    .await;
    let huge = format!(
        r#"{{"sku":"SC","kind":"receipt","quantity":1,"note":"{}"}}"#,
        "x".repeat(1_500_000)
    );
    publish_large(scanner_port, "scanner-8", topic, huge.into_bytes()).await;
    probe
        .publish(
            topic,
            br#"{"sku":"SC","kind":"receipt","quantity":1,"id":"scan-2"}"#.to_vec(),
        )
        .await;
    wait_for("later scan journaled", Duration::from_secs(10), || async {
        status(&a_url).await["last_seq"] == 2
    })
    .await;
    let rejects = get(&format!("{a_url}/v1/rejects")).await.body;
    assert_eq!(rejects.as_array().unwrap().len(), 1, "{rejects}");
    assert!(
        rejects[0]["detail"].as_str().unwrap().contains("1500"),
        "{rejects}"
    );
    assert!(rejects[0]["payload"].as_str().unwrap().len() <= 64 * 1024);
    let s = status(&a_url).await;
    assert_eq!(s["scanner"]["connected"], true, "{s}");
    let metrics = get(&format!("{a_url}/metrics")).await.body;
    assert!(metrics
        .as_str()
        .unwrap()
        .contains("stocksync_agent_scanner_connected 1"));
    assert_eq!(
        get(&format!("{a_url}/healthz")).await.body["scanner"],
        "connected"
    );
    agent.stop().await.unwrap();
}

/// A long-running task that ends takes the process down with an error naming it, so that
/// systemd restarts it, instead of the process serving on without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_whose_task_fails_exits_naming_the_task() {
    let dir = TempDir::new("supervised");
    let broker = Broker::start(&dir);
    let port = free_port();
    let mut collector = Service::start(
        &dir,
        "stocksync-collector",
        "collector",
        &collector_toml(&dir, broker.port, port, ""),
        port,
    );
    // Another process breaks the file under the reservation expiry task.
    let ledger = rusqlite::Connection::open(dir.join("ledger.db")).unwrap();
    ledger.busy_timeout(Duration::from_secs(10)).unwrap();
    ledger.execute_batch("DROP TABLE reservations").unwrap();
    let exited = wait_blocking(Duration::from_secs(15), || {
        collector.proc.try_wait().is_some()
    });
    let log = collector.proc.output();
    assert!(exited.is_ok(), "collector still running: {log}");
    assert!(log.contains("task `expire_reservations` ended"), "{log}");
    assert_ne!(
        collector.proc.try_wait(),
        Some(0),
        "exits with failure: {log}"
    );
    collector.kill();
}
