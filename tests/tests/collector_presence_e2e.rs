//! A second collector on the same broker fails fast with a clear message instead of taking
//! over the running one's MQTT session (before, both flapped forever); a collector restarted
//! after a SIGKILL is not refused by its predecessor's presence. Real processes, real broker.

mod support;

use std::time::Duration;

use stocksync_common::model::*;
use stocksync_common::wire::{self, AckOutcome, Batch};
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

/// Publishes a one-movement batch and waits for the collector's ack.
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
    probe
        .publish("stocksync/v1/ams/movements", wire::encode_batch(&batch))
        .await;
    let ack = wire::decode_ack(&probe.next(Duration::from_secs(10)).await.payload).unwrap();
    assert_eq!(
        ack.outcome,
        AckOutcome::Applied {
            applied: 1,
            duplicates: 0
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
