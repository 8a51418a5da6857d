//! Physical limits, measured in the same run as the figure they bound: what SQLite (WAL,
//! `synchronous=FULL`, group commit) and the MQTT broker (QoS 1) can do with nothing of
//! stocksync around them, for the same row and payload sizes.
//!
//! These are the denominators of every ratio in `docs/BENCHMARKS.md`, so they use the same
//! settings as the product: the journal's table layout and pragmas, and the client options
//! of `stocksync_runtime::mqtt::options`.

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use rusqlite::{params, Connection};
use stocksync_common::config::BrokerConfig;
use stocksync_common::model::*;
use stocksync_common::wire;

use crate::util::Samples;

/// A movement as the agent journals it, for row and payload sizes.
pub fn sample_movement(i: u64) -> Movement {
    Movement {
        seq: i + 1,
        sku: Sku(format!("SKU-{:06}", i % 1000)),
        location: Location {
            warehouse: "ams".into(),
            bin: Some(format!("B-{}", i % 10)),
        },
        source: "wms".into(),
        kind: MovementKind::Receipt,
        quantity: 1,
        unit: "each".into(),
        unit_quantity: 1,
        occurred_at: OccurredAt {
            unix_ms: 1_750_000_000_000 + i as i64,
            offset_seconds: 0,
        },
        references: References::default(),
        external_id: None,
        note: None,
        origin: Origin {
            input: "http".into(),
            validated: true,
        },
    }
}

/// Movements per forwarded batch: the agent's default `forward.batch_max`, so that every raw
/// limit moves the same batches as the figure it bounds.
pub fn agent_batch() -> usize {
    stocksync_agent::forward::ForwardConfig::default().batch_max
}

/// Size of a forwarded batch of `n` movements on the wire.
pub fn batch_payload_len(n: usize) -> usize {
    let parts: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| wire::encode_movement(&sample_movement(i)))
        .collect();
    wire::encode_batch_from_parts(
        "a1",
        1,
        "ams",
        1_750_000_000_000,
        parts.iter().map(Vec::as_slice),
    )
    .len()
}

fn open_journal_like(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS movements (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL,
             journaled_at_ms INTEGER NOT NULL, acked_at_ms INTEGER, outcome TEXT);
         CREATE INDEX IF NOT EXISTS movements_unacked ON movements (seq) WHERE acked_at_ms IS NULL;",
    )?;
    Ok(conn)
}

/// Inserts `total` journal-sized rows, `per_commit` per fsynced transaction, from one thread.
/// Returns rows per second.
pub fn sqlite_group_commit(path: &Path, total: u64, per_commit: u64) -> anyhow::Result<f64> {
    let mut conn = open_journal_like(path)?;
    let payload = wire::encode_movement(&sample_movement(0));
    let start = Instant::now();
    let mut seq = 0u64;
    while seq < total {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (?1, ?2, ?3)",
            )?;
            for _ in 0..per_commit.min(total - seq) {
                seq += 1;
                insert.execute(params![seq as i64, payload, 0i64])?;
            }
        }
        tx.commit()?;
    }
    Ok(seq as f64 / start.elapsed().as_secs_f64())
}

/// Latency of `n` one-row fsynced commits.
pub fn sqlite_commit_latency(path: &Path, n: usize) -> anyhow::Result<Samples> {
    let conn = open_journal_like(path)?;
    let payload = wire::encode_movement(&sample_movement(0));
    let mut samples = Samples::default();
    for seq in 1..=n {
        let t = Instant::now();
        conn.execute(
            "INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (?1, ?2, 0)",
            params![seq as i64, payload],
        )?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// A client connected (ConnAck seen) to the broker on `port`, with the product's options.
pub(crate) async fn connect(
    port: u16,
    id: &str,
) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let config = BrokerConfig {
        host: "127.0.0.1".into(),
        port,
        ..Default::default()
    };
    let opts = stocksync_runtime::mqtt::options(&config, id, true)?;
    let (client, mut events) = AsyncClient::new(opts, 1024);
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = events.poll().await? {
            return Ok((client, events));
        }
    }
}

/// A subscriber on `topic`, forwarding each received publish's arrival time.
async fn subscriber(
    port: u16,
    topic: &str,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<Instant>> {
    let (client, mut events) = connect(port, &format!("raw-sub-{}", std::process::id())).await?;
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
            break;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(e) = events.poll().await {
            if let Event::Incoming(Packet::Publish(_)) = e {
                let _ = tx.send(Instant::now());
            }
        }
    });
    Ok(rx)
}

/// QoS 1 publish -> receive throughput of `messages` payloads of `payload_len` bytes through
/// the broker on `port`. Returns messages per second.
pub async fn mqtt_throughput(
    port: u16,
    payload_len: usize,
    messages: usize,
) -> anyhow::Result<f64> {
    let topic = format!("bench/raw/{}/throughput", std::process::id());
    let mut received = subscriber(port, &topic).await?;
    let (client, mut events) = connect(port, &format!("raw-pub-{}", std::process::id())).await?;
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let payload = vec![0x5a_u8; payload_len];
    let start = Instant::now();
    let publisher = tokio::spawn({
        let (client, topic) = (client.clone(), topic.clone());
        async move {
            for _ in 0..messages {
                client
                    .publish(&topic, QoS::AtLeastOnce, false, payload.clone())
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    let mut last = start;
    for _ in 0..messages {
        last = tokio::time::timeout(Duration::from_secs(60), received.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("raw subscriber stopped"))?;
    }
    publisher.await??;
    let _ = client.disconnect().await;
    poller.abort();
    Ok(messages as f64 / (last - start).as_secs_f64())
}

/// One-way QoS 1 publish -> receive latency, one message at a time.
pub async fn mqtt_latency(port: u16, payload_len: usize, n: usize) -> anyhow::Result<Samples> {
    let topic = format!("bench/raw/{}/latency", std::process::id());
    let mut received = subscriber(port, &topic).await?;
    let (client, mut events) = connect(port, &format!("raw-lat-{}", std::process::id())).await?;
    let poller = tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut samples = Samples::default();
    for _ in 0..n {
        let t = Instant::now();
        client
            .publish(&topic, QoS::AtLeastOnce, false, vec![0x5a_u8; payload_len])
            .await?;
        let got = tokio::time::timeout(Duration::from_secs(10), received.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("raw subscriber stopped"))?;
        samples.push(got - t);
    }
    let _ = client.disconnect().await;
    poller.abort();
    Ok(samples)
}
