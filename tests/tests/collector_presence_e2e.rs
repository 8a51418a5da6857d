//! A second collector on the same broker fails fast with a clear message instead of taking
//! over the running one's MQTT session (before, both flapped forever); a collector restarted
//! after a SIGKILL is not refused by its predecessor's presence. Real processes, real broker.
//!
//! Each backend's promise (`<case>::sqlite`, `<case>::postgres`): one SQLite collector per
//! broker; PostgreSQL workers with their own ids share the warehouses by leases, while a
//! worker reusing a running one's id, or a SQLite collector beside workers, fails fast.

mod support;

use std::time::Duration;

use stocksync_common::model::*;
use stocksync_common::wire::{self, AckOutcome, Batch};
use support::backend::{on_both_backends, Backend, CollectorSpec};
use support::*;

fn receipt(seq: u64) -> Movement {
    Movement {
        seq,
        sku: Sku("MUG".into()),
        location: Location {
            warehouse: "ams".into(),
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

/// Publishes a one-movement batch (again until answered, as an agent resends) and waits for
/// the collector's ack.
async fn applied_once(broker: u16, seq: u64) {
    let mut probe = MqttProbe::connect(broker, &format!("agent-{seq}")).await;
    probe.subscribe("stocksync/v1/ams/acks/ams-1").await;
    let batch = Batch {
        agent_id: "ams-1".into(),
        journal_id: 1,
        warehouse: "ams".into(),
        movements: vec![receipt(seq)],
        sent_at_ms: None,
    };
    let ack = probe
        .publish_until_answered(
            "stocksync/v1/ams/movements",
            wire::encode_batch(&batch),
            Duration::from_secs(20),
        )
        .await;
    let ack = wire::decode_ack(&ack.payload).unwrap();
    assert_eq!(
        ack.outcome,
        AckOutcome::Applied {
            applied: 1,
            duplicates: 0
        }
    );
}

on_both_backends!(a_second_collector_on_the_same_broker);
async fn a_second_collector_on_the_same_broker(backend: Backend) {
    match backend {
        Backend::Sqlite => a_second_sqlite_collector_on_the_same_broker_fails_fast().await,
        Backend::Postgres => a_second_postgres_worker_shares_the_warehouses_by_leases().await,
    }
}

/// Runs the collector binary with `config_text` and returns its output once it has exited,
/// failing, within 20 s.
fn refused_process(dir: &TempDir, name: &str, config_text: &str) -> String {
    let config = dir.join(&format!("{name}.toml"));
    std::fs::write(&config, config_text).unwrap();
    let mut proc = Proc::spawn(
        &bin("stocksync-collector"),
        &["--config", config.to_str().unwrap()],
        dir.join(&format!("{name}.log")),
    );
    wait_blocking(Duration::from_secs(20), || proc.try_wait().is_some())
        .unwrap_or_else(|_| panic!("{name} kept running: {}", proc.output()));
    assert_ne!(proc.try_wait(), Some(0), "{}", proc.output());
    proc.output()
}

async fn a_second_postgres_worker_shares_the_warehouses_by_leases() {
    let dir = TempDir::new("presence-pg");
    let broker = Broker::start(&dir);
    let Some(mut workers) = CollectorSpec::new(Backend::Postgres, &dir, broker.port)
        .warehouses(&["ams", "ber"])
        .workers(1)
        .start_processes()
    else {
        return;
    };
    workers.wait_held(&["ams", "ber"]).await;
    applied_once(broker.port, 1).await;

    // A second worker with its own id on the same database starts and takes its fair share:
    // each warehouse held by exactly one of the two.
    let w2 = workers.add_worker();
    wait_for("the warehouses split", Duration::from_secs(20), || async {
        let (a, b) = (workers.held_by(0).await, workers.held_by(w2).await);
        a.len() == 1 && b.len() == 1 && a != b
    })
    .await;
    workers.wait_held(&["ams", "ber"]).await;
    applied_once(broker.port, 2).await;

    // A worker reusing a running one's id would take its MQTT session: refused at start.
    let text = workers.worker_toml("w1", free_port());
    let out = refused_process(&dir, "w1-again", &text);
    assert!(
        out.contains("another collector is connected to this broker"),
        "{out}"
    );
    // So is a SQLite collector beside the workers (it would apply every warehouse).
    let other = TempDir::new("presence-pg-sqlite");
    let out = refused_process(
        &dir,
        "sqlite",
        &collector_toml(&other, broker.port, free_port(), ""),
    );
    assert!(
        out.contains("another collector is connected to this broker"),
        "{out}"
    );

    // Neither disturbed the workers: both still healthy, every movement counted once.
    for url in &workers.urls {
        let health = get(&format!("{url}/healthz")).await;
        assert_eq!(health.status, 200, "{}", health.body);
    }
    applied_once(broker.port, 3).await;
    assert_eq!(on_hand(&workers.urls[w2], "MUG").await, 3);

    // w1 killed: w2 takes its warehouse over within the lease time and applies it.
    workers.procs[0].kill();
    wait_for("w2 holds both", Duration::from_secs(20), || async {
        workers.held_by(w2).await == ["ams", "ber"]
    })
    .await;
    applied_once(broker.port, 4).await;
    assert_eq!(on_hand(&workers.urls[w2], "MUG").await, 4);
}

async fn a_second_sqlite_collector_on_the_same_broker_fails_fast() {
    let dir = TempDir::new("presence");
    let broker = Broker::start(&dir);
    let first_port = free_port();
    let mut first = Service::start(
        &dir,
        "stocksync-collector",
        "first",
        &collector_toml(&dir, broker.port, first_port, ""),
        first_port,
    );
    applied_once(broker.port, 1).await;

    // Its own ledger and port, so only the broker is shared.
    let other = TempDir::new("presence-second");
    let second_port = free_port();
    let second_config = dir.join("second.toml");
    std::fs::write(
        &second_config,
        collector_toml(&other, broker.port, second_port, ""),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let mut second = Proc::spawn(
        &bin("stocksync-collector"),
        &["--config", second_config.to_str().unwrap()],
        dir.join("second.log"),
    );
    wait_blocking(Duration::from_secs(20), || second.try_wait().is_some())
        .unwrap_or_else(|_| panic!("second collector kept running: {}", second.output()));
    assert_ne!(second.try_wait(), Some(0), "{}", second.output());
    assert!(
        second
            .output()
            .contains("another collector is connected to this broker"),
        "{}",
        second.output()
    );
    eprintln!("second collector refused after {:?}", started.elapsed());

    // The first was never disturbed: still connected, still applying.
    let health = get(&format!("{}/healthz", first.url)).await;
    assert_eq!(health.status, 200, "{}", health.body);
    applied_once(broker.port, 2).await;
    assert_eq!(on_hand(&first.url, "MUG").await, 2);

    // Killed, the first's will clears its presence: the second now starts at once.
    first.kill();
    let second = Service::start(
        &dir,
        "stocksync-collector",
        "second",
        &collector_toml(&other, broker.port, second_port, ""),
        second_port,
    );
    applied_once(broker.port, 3).await;
    assert_eq!(on_hand(&second.url, "MUG").await, 1);
}
