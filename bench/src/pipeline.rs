//! The physical limit of a durable end-to-end movement: two group commits in series (a
//! journal-shaped table, then a ledger-shaped table with its unique key and stock index) with
//! the wire between them (the same v2 batches through the same broker, QoS 1, decoded on
//! arrival), run as one pipeline in the same process and run as the figure it bounds.
//!
//! Nothing of stocksync is in it: no HTTP, validation, acknowledgements, projection or
//! channels. A ratio against it says how much of the machine's durable pipeline the product
//! uses; a ratio against the broker alone (millions of messages per second) says nothing.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use rumqttc::{Event, Packet, QoS};
use rusqlite::{params, Connection};
use stocksync_common::wire;

use crate::raw::{agent_batch, connect, sample_movement};

/// Movements per journal commit (one HTTP request of the figure).
const PER_COMMIT: usize = 1000;

fn open(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(schema)?;
    Ok(conn)
}

const JOURNAL: &str = "CREATE TABLE movements (seq INTEGER PRIMARY KEY, payload BLOB NOT NULL,
    journaled_at_ms INTEGER NOT NULL, acked_at_ms INTEGER);";

const LEDGER: &str = "CREATE TABLE ledger (id INTEGER PRIMARY KEY, agent_id TEXT NOT NULL,
    seq INTEGER NOT NULL, sku TEXT NOT NULL, warehouse TEXT NOT NULL, bin TEXT NOT NULL,
    kind TEXT NOT NULL, quantity INTEGER NOT NULL, occurred_at_ms INTEGER NOT NULL,
    payload BLOB NOT NULL, UNIQUE (agent_id, seq));
    CREATE INDEX ledger_by_stock ON ledger (sku, warehouse, bin);";

/// Journals `n` movements in commits of `PER_COMMIT`, handing what is committed to the wire
/// in the agent's batches (`raw::agent_batch`), cut across commits as its forwarder cuts its
/// journal.
fn journal(path: &Path, n: usize, out: tokio::sync::mpsc::Sender<Vec<u8>>) -> anyhow::Result<()> {
    let mut conn = open(path, JOURNAL)?;
    let parts: Vec<Vec<u8>> = (0..n as u64)
        .map(|i| wire::encode_movement(&sample_movement(i)))
        .collect();
    let per_batch = agent_batch();
    let mut sent = 0;
    for (c, chunk) in parts.chunks(PER_COMMIT).enumerate() {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO movements (seq, payload, journaled_at_ms) VALUES (?1, ?2, 0)",
            )?;
            for (i, p) in chunk.iter().enumerate() {
                insert.execute(params![(c * PER_COMMIT + i + 1) as i64, p])?;
            }
        }
        tx.commit()?;
        let committed = c * PER_COMMIT + chunk.len();
        while committed - sent >= per_batch || (committed == n && sent < n) {
            let batch = &parts[sent..committed.min(sent + per_batch)];
            let payload =
                wire::encode_batch_from_parts("a1", 1, "ams", 0, batch.iter().map(Vec::as_slice));
            out.blocking_send(payload)?;
            sent += batch.len();
        }
    }
    Ok(())
}

/// Applies decoded batches to the ledger table, folding whatever waits into one commit, until
/// `n` rows are in; returns when the last commit is on disk.
fn ledger(
    path: &Path,
    n: usize,
    input: std_mpsc::Receiver<wire::Batch>,
) -> anyhow::Result<Instant> {
    let mut conn = open(path, LEDGER)?;
    let mut applied = 0usize;
    while applied < n {
        let mut group = vec![input.recv_timeout(Duration::from_secs(60))?];
        group.extend(input.try_iter());
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO ledger (agent_id, seq, sku, warehouse, bin, kind, quantity, occurred_at_ms, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'receipt', ?6, ?7, x'00')",
            )?;
            for batch in &group {
                for m in &batch.movements {
                    applied += insert.execute(params![
                        batch.agent_id,
                        m.seq as i64,
                        m.sku.0,
                        m.location.warehouse,
                        m.location.bin.as_deref().unwrap_or(""),
                        m.quantity,
                        m.occurred_at.unix_ms
                    ])?;
                }
            }
        }
        tx.commit()?;
    }
    Ok(Instant::now())
}

/// Movements per second through journal commit -> broker (QoS 1) -> decode -> ledger commit.
pub fn durable_pipeline(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    port: u16,
    n: usize,
) -> anyhow::Result<f64> {
    let topic = format!("bench/pipeline/{}", std::process::id());
    let (to_ledger, from_wire) = std_mpsc::channel();
    let (sub, mut sub_events) =
        rt.block_on(connect(port, &format!("pipe-sub-{}", std::process::id())))?;
    rt.block_on(async {
        sub.subscribe(&topic, QoS::AtLeastOnce).await?;
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = sub_events.poll().await? {
                return anyhow::Ok(());
            }
        }
    })?;
    let receiver = rt.spawn(async move {
        let _sub = sub;
        while let Ok(e) = sub_events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                let Ok(batch) = wire::decode_batch(&p.payload) else {
                    continue;
                };
                if to_ledger.send(batch).is_err() {
                    return;
                }
            }
        }
    });
    let (publisher, mut pub_events) =
        rt.block_on(connect(port, &format!("pipe-pub-{}", std::process::id())))?;
    let poller = rt.spawn(async move { while pub_events.poll().await.is_ok() {} });
    let (to_wire, mut wire_in) = tokio::sync::mpsc::channel::<Vec<u8>>(64);
    let sender = rt.spawn({
        let topic = topic.clone();
        async move {
            while let Some(payload) = wire_in.recv().await {
                publisher
                    .publish(&topic, QoS::AtLeastOnce, false, payload)
                    .await?;
            }
            anyhow::Ok(())
        }
    });
    let (journal_path, ledger_path) = (dir.join("pipe-journal.db"), dir.join("pipe-ledger.db"));
    let start = Instant::now();
    let applier = std::thread::spawn(move || ledger(&ledger_path, n, from_wire));
    journal(&journal_path, n, to_wire)?;
    let done = applier
        .join()
        .map_err(|_| anyhow::anyhow!("ledger thread panicked"))??;
    rt.block_on(sender)??;
    receiver.abort();
    poller.abort();
    Ok(n as f64 / (done - start).as_secs_f64())
}
