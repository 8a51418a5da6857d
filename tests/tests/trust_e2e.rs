//! Trust no sender, end to end: what a hostile or broken publisher can do to the message
//! path. A forged batch must not make another agent drop movements, a poison message must
//! not stop (or wedge) a consumer, and a rolled-back journal must not lose movements silently.
//! The cases about the collector run on both stores (`<case>::sqlite`, `<case>::postgres`:
//! two workers on one database).

mod support;

use std::time::Duration;

use stocksync_agent::Agent;
use stocksync_common::model::*;
use stocksync_common::wire::{self, Ack, AckOutcome, Batch};
use support::backend::{on_both_backends, Backend, CollectorSpec, Collectors};
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

on_both_backends!(a_batch_forged_by_another_warehouse_cannot_make_an_agent_drop_movements);
/// Issue 10, item 1: with its own topic (the ACL allows it), ber-1 publishes a batch that
/// claims to be ams-1's with seqs 1..10^12. Before the fix the collector answered
/// `Rejected` on ams-1's ack topic and ams-1 marked every unacknowledged movement refused.
async fn a_batch_forged_by_another_warehouse_cannot_make_an_agent_drop_movements(backend: Backend) {
    const N: usize = 2000;
    let dir = TempDir::new("forged");
    let broker = Broker::start(&dir);
    // Once, so that the broker keeps the collector's session while it is stopped.
    let Some(mut collectors) = started(backend, &dir, broker.port).await else {
        return;
    };
    collectors.stop_all().await;

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

    collectors.start_all().await;
    let c_url = collectors.url().to_string();
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

    if backend == Backend::Postgres {
        // A worker's session is clean: what reached ber's topic while no worker held ber is
        // gone from the broker (an agent resends its own; an attacker's is nobody's loss).
        // The attacker tries again once ber's worker is subscribed, which a ber agent's
        // movement counted proves.
        let ber = Agent::start(agent_config(&dir, "ber-2", "ber", broker.port, 0))
            .await
            .unwrap();
        let body = r#"{"sku":"B","kind":"receipt","quantity":1}"#;
        let r = post(&format!("http://{}/v1/movements", ber.http_addr), body, &[]).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        wait_for("ber counted", Duration::from_secs(20), || async {
            on_hand(&c_url, "B").await == 1
        })
        .await;
        ber.stop().await.unwrap();
        attacker
            .publish("stocksync/v1/ber/movements", wire::encode_batch(&forged))
            .await;
        wait_for("forged batch kept", Duration::from_secs(10), || async {
            get(&format!("{c_url}/v1/rejects"))
                .await
                .body
                .as_array()
                .is_some_and(|a| !a.is_empty())
        })
        .await;
    }
    // The forged batch is kept and answered on the topic's warehouse, where no ams agent listens.
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .contains("does not match topic"),
        "{rejects}"
    );
    assert_eq!(
        collectors.metric("stocksync_batches_rejected_total").await,
        1
    );
    let answer = wire::decode_ack(&attacker.next(Duration::from_secs(10)).await.payload).unwrap();
    assert!(
        matches!(answer.outcome, AckOutcome::Rejected { .. }),
        "{answer:?}"
    );
    agent.stop().await.unwrap();
    collectors.stop().await;
}

/// The collector side for `ams` and `ber`, each collector connected to the broker.
async fn started(backend: Backend, dir: &TempDir, broker_port: u16) -> Option<Collectors> {
    let collectors = CollectorSpec::new(backend, dir, broker_port)
        .warehouses(&["ams", "ber"])
        .start()
        .await?;
    for url in &collectors.urls {
        wait_for("collector connected", Duration::from_secs(10), || async {
            metric(url, "stocksync_broker_connected").await == 1
        })
        .await;
    }
    collectors.wait_held(&["ams", "ber"]).await;
    Some(collectors)
}

fn reasons(rejects: &serde_json::Value) -> Vec<String> {
    rejects
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

on_both_backends!(poison_batches_are_kept_acknowledged_and_never_stop_counting);
/// Issue 10, items 2 and 3: a batch with `+` in its agent id (the ack topic cannot be
/// published to), undecodable bytes, an empty payload and a 1.5 MB message. Before the fix
/// the first stopped the consumer for good (and again after every restart) and the last
/// wedged it. Each must be kept in the rejects queue, PUBACKed, and counting go on.
async fn poison_batches_are_kept_acknowledged_and_never_stop_counting(backend: Backend) {
    let dir = TempDir::new("poison");
    let broker = Broker::start(&dir);
    let Some(mut collectors) = started(backend, &dir, broker.port).await else {
        return;
    };
    let c_url = collectors.url().to_string();
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
    publish_once(broker.port, "oversized", topic, vec![1; 1_500_000]).await;

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
    for url in &collectors.urls {
        let health = get(&format!("{url}/healthz")).await;
        assert_eq!(health.status, 200, "{:?}", health.body);
        assert_eq!(health.body["tasks"]["consume"], "running");
    }

    // After a restart nothing of it comes back: it was PUBACKed, not left for redelivery.
    collectors.restart_with("").await;
    let c_url = collectors.url().to_string();
    let ack = probe
        .publish_until_answered(
            topic,
            wire::encode_batch(&counted_after_poison()),
            Duration::from_secs(20),
        )
        .await;
    let ack = wire::decode_ack(&ack.payload).unwrap();
    assert_eq!(
        (ack.first_seq, ack.outcome),
        (
            2,
            AckOutcome::Applied {
                applied: 1,
                duplicates: 0
            }
        )
    );
    assert_eq!(on_hand(&c_url, "P").await, 2, "counted after restart");
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    for r in rejects.as_array().unwrap() {
        assert_eq!(r["seen_count"], 1, "redelivered: {r}");
    }
    collectors.stop().await;
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
    publish_once(scanner_port, "scanner-8", topic, huge.into_bytes()).await;
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

/// Copies the journal's files (`.db`, `-wal`, and with `with_watermark` the `.acked` file
/// beside it) from `from` to `to`, removing what `to` has that `from` lacks.
fn copy_journal(from: &std::path::Path, to: &std::path::Path, with_watermark: bool) {
    let mut suffixes = vec!["", "-wal", "-shm"];
    if with_watermark {
        suffixes.push(".acked");
    }
    for suffix in suffixes {
        let (src, dst) = (
            format!("{}{suffix}", from.display()),
            format!("{}{suffix}", to.display()),
        );
        let _ = std::fs::remove_file(&dst);
        if std::path::Path::new(&src).exists() && suffix != "-shm" {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Runs the agent binary with `args` and returns (exit code, output) once it exits.
fn run_agent(dir: &TempDir, log: &str, args: &[&str]) -> (i32, String) {
    let mut proc = Proc::spawn(&bin("stocksync-agent"), args, dir.join(log));
    wait_blocking(Duration::from_secs(20), || proc.try_wait().is_some())
        .unwrap_or_else(|_| panic!("agent did not exit: {}", proc.output()));
    (proc.try_wait().unwrap(), plain(&proc.output()))
}

/// `text` without ANSI colour sequences (the log is coloured).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

on_both_backends!(a_rolled_back_journal_loses_no_new_movement);
/// Issue 10, item 5: an agent killed, its journal restored from a copy, 500 new movements
/// posted. Before the fix they reused applied seqs and the collector dropped all 500 as
/// duplicates. Now the agent refuses to start when it can tell (the collector applied seqs
/// beyond the journal), the collector refuses reused seqs with other bytes when it cannot
/// (the watermark was restored too), and `accept-rollback` gets every movement counted.
async fn a_rolled_back_journal_loses_no_new_movement(backend: Backend) {
    let dir = TempDir::new("rollback");
    let broker = Broker::start(&dir);
    let Some(collectors) = started(backend, &dir, broker.port).await else {
        return;
    };
    let c_url = collectors.url().to_string();
    let port = free_port();
    let config_text = agent_toml(&dir, "ams-1", "ams", broker.port, port, "");
    let mut agent = Service::start(&dir, "stocksync-agent", "agent", &config_text, port);
    let config = dir.join("agent.toml");
    let config = config.to_str().unwrap();
    let journal = dir.join("journal-ams-1.db");
    let backup = dir.join("backup.db");
    let a_url = agent.url.clone();
    let post_and_count = |n: usize, total: i64| {
        let url = a_url.clone();
        let c_url = c_url.clone();
        async move {
            for body in receipt_batches(n, 500, &["R"]) {
                let r = post(&format!("{url}/v1/movements"), &body, &[]).await;
                assert_eq!(r.status, 202, "{:?}", r.body);
            }
            wait_for("counted", Duration::from_secs(30), || async {
                on_hand(&c_url, "R").await == total
            })
            .await;
            wait_for("acked", Duration::from_secs(30), || async {
                status(&url).await["backlog"] == 0
            })
            .await;
        }
    };
    post_and_count(300, 300).await;
    copy_journal(&journal, &backup, true);
    post_and_count(700, 1000).await;

    // The journal file alone is restored: the watermark beside it still says 1000.
    agent.kill();
    copy_journal(&backup, &journal, false);
    let (code, log) = run_agent(&dir, "refused-1.log", &["--config", config]);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("went back in time") && log.contains("applied seqs up to 1000"),
        "{log}"
    );
    assert!(log.contains("accept-rollback"), "{log}");
    let (code, log) = run_agent(
        &dir,
        "accept-1.log",
        &["--config", config, "accept-rollback"],
    );
    assert_eq!(code, 0, "{log}");
    agent.restart();
    post_and_count(500, 1500).await;

    // The whole directory is restored, watermark included: only the collector can tell.
    agent.kill();
    copy_journal(&backup, &journal, true);
    agent.restart();
    let r = post(
        &format!("{}/v1/movements", agent.url),
        &receipt_batches(500, 500, &["R"])[0],
        &[],
    )
    .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    wait_blocking(Duration::from_secs(20), || agent.proc.try_wait().is_some())
        .unwrap_or_else(|_| panic!("agent kept running: {}", agent.proc.output()));
    let log = plain(&agent.proc.output());
    assert!(log.contains("the collector refused seq 301"), "{log}");
    let rejects = get(&format!("{c_url}/v1/rejects")).await.body;
    assert!(
        rejects[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("seq reused with different content"),
        "{rejects}"
    );
    assert_eq!(
        collectors.metric("stocksync_batches_rejected_total").await,
        1
    );
    assert_eq!(
        on_hand(&c_url, "R").await,
        1500,
        "nothing taken for a duplicate"
    );
    let (code, log) = run_agent(&dir, "refused-2.log", &["--config", config]);
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("the collector refused seq 301"), "{log}");
    let (code, log) = run_agent(
        &dir,
        "accept-2.log",
        &["--config", config, "accept-rollback"],
    );
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("renumbered=500"), "{log}");
    agent.restart();
    wait_for("the 500 counted", Duration::from_secs(30), || async {
        on_hand(&c_url, "R").await == 2000
    })
    .await;
    collectors.stop().await;
}

/// Issue 10: a refused broker login was silent at the default log level. Needs a broker that
/// checks passwords, so it runs in the Mosquitto pass (`STOCKSYNC_TEST_BROKER=mosquitto`);
/// the embedded broker has no logins to refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_broker_login_is_shown_with_its_reason() {
    if BrokerKind::from_env() != BrokerKind::Mosquitto {
        eprintln!("runs with STOCKSYNC_TEST_BROKER=mosquitto (the embedded broker has no logins)");
        return;
    }
    let dir = TempDir::new("login");
    let passwd = dir.join("passwd");
    let made = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c", passwd.to_str().unwrap(), "ams-1", "right"])
        .status()
        .expect("mosquitto_passwd");
    assert!(made.success());
    let port = free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\n",
            passwd.display()
        ),
    )
    .unwrap();
    let mosquitto = which("mosquitto").expect("mosquitto installed");
    let _mosquitto = Proc::spawn(
        &mosquitto,
        &["-c", conf.to_str().unwrap()],
        dir.join("mosquitto.log"),
    );
    wait_blocking(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .expect("mosquitto listens");
    let secret = dir.join("secret");
    std::fs::write(&secret, "wrong").unwrap();
    let extra = format!(
        "username = \"ams-1\"\npassword_file = {:?}\n",
        secret.display().to_string()
    );
    // The `[broker]` section is the last one of the generated config: append to it.
    let text = agent_toml(&dir, "ams-1", "ams", port, 0, &extra);
    let agent = Agent::start(toml_config(&text)).await.unwrap();
    let a_url = format!("http://{}", agent.http_addr);
    wait_for("login refusal shown", Duration::from_secs(10), || async {
        status(&a_url).await["broker_last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("broker refused the login"))
    })
    .await;
    assert_eq!(status(&a_url).await["broker"], "disconnected");
    agent.stop().await.unwrap();
}
