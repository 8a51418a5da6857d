//! Figures on the collector's SQLite file: a full projection rebuild from a large ledger
//! (against a raw scan of the same rows in the same order, the floor of any rebuild), and
//! stock query latency over HTTP on a large projection (against the same SQL on a raw
//! connection to the same file).
//!
//! The ledger is generated directly with big transactions (indexes built after the load),
//! in the real schema (`Ledger::open` creates it) with real wire-encoded movements: receipts
//! and shipments interleaved over every key, 1% counts, 1% transfers to a second warehouse.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use stocksync_collector::ledger::Ledger;
use stocksync_collector::metrics::Metrics;
use stocksync_collector::Collector;
use stocksync_common::model::*;
use stocksync_common::wire;

use crate::load::{client, get_json};
use crate::raw::sample_movement;
use crate::stack::collector_config;
use crate::util::{free_port, Row, Samples, TempDir};

#[derive(Debug, Clone, clap::Args)]
pub struct RebuildArgs {
    /// Ledger rows.
    #[arg(long, default_value_t = 10_000_000)]
    pub rows: u64,
    /// (SKU x bin) keys the rows are spread over.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    /// (SKU x bin) rows in `stock` (10 bins per SKU).
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    /// Queries of each kind.
    #[arg(long, default_value_t = 2000)]
    pub queries: usize,
}

/// SKU and bin of key `k` (10 bins per SKU).
fn key(k: u64) -> (String, String) {
    (format!("SKU-{:07}", k / 10), format!("B-{}", k % 10))
}

fn movement(i: u64, keys: u64) -> (Movement, &'static str) {
    // A multiplicative permutation interleaves keys the way arrival order would.
    let k = (i.wrapping_mul(2_654_435_761)) % keys;
    let (sku, bin) = key(k);
    let mut m = sample_movement(i);
    m.sku = Sku(sku);
    m.location.bin = Some(bin);
    let agent = ["a1", "a2", "a3", "a4"][(i % 4) as usize];
    m.seq = i / 4 + 1;
    m.quantity = 1 + i % 7;
    m.kind = match i % 100 {
        0 => MovementKind::Count,
        1 => {
            m.references.transfer = Some(format!("T-{}", i / 100));
            m.references.peer_warehouse = Some("ber".into());
            MovementKind::TransferOut
        }
        2..=70 => MovementKind::Receipt,
        _ => MovementKind::Shipment,
    };
    (m, agent)
}

/// Creates the collector schema at `path` and fills the ledger with `rows` movements.
pub fn generate_ledger(path: &Path, rows: u64, keys: u64) -> anyhow::Result<()> {
    drop(Ledger::open(path, Arc::new(Metrics::default()))?);
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA synchronous = OFF; DROP INDEX IF EXISTS ledger_by_stock;
         DROP INDEX IF EXISTS ledger_by_transfer; DROP INDEX IF EXISTS ledger_by_peer;",
    )?;
    let mut i = 0u64;
    while i < rows {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, transfer, peer)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12)",
            )?;
            for _ in 0..500_000.min(rows - i) {
                let (m, agent) = movement(i, keys);
                insert.execute(params![
                    agent,
                    m.seq as i64,
                    m.sku.as_str(),
                    m.location.warehouse,
                    m.location.bin_key(),
                    m.source,
                    m.kind.name(),
                    m.quantity as i64,
                    m.occurred_at.unix_ms,
                    wire::encode_movement(&m),
                    m.references.transfer,
                    m.references.peer_warehouse,
                ])?;
                i += 1;
            }
        }
        tx.commit()?;
        eprint!("\rgenerating ledger: {i}/{rows}");
    }
    eprintln!();
    drop(conn);
    // Re-opening recreates the indexes, sorted in one pass.
    drop(Ledger::open(path, Arc::new(Metrics::default()))?);
    Ok(())
}

/// The floor of a rebuild: reading and decoding every row in key order.
fn raw_scan(path: &Path) -> anyhow::Result<(u64, Duration)> {
    let conn = Connection::open(path)?;
    // The same mapping the rebuild uses (see `stocksync_collector::rebuild`).
    conn.pragma_update(None, "mmap_size", 1i64 << 40)?;
    let start = Instant::now();
    let mut stmt = conn.prepare(
        "SELECT agent_id, treatment, returns_to, payload, sku, warehouse, bin FROM ledger ORDER BY sku, warehouse, bin",
    )?;
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    while let Some(r) = rows.next()? {
        let payload = r.get_ref(3)?.as_blob()?;
        wire::decode_movement(payload)?;
        n += 1;
    }
    Ok((n, start.elapsed()))
}

pub fn rebuild(args: &RebuildArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("rebuild")?;
    let path = dir.join("ledger.db");
    let gen = Instant::now();
    generate_ledger(&path, args.rows, args.keys)?;
    eprintln!("generated {} rows in {:.1?}", args.rows, gen.elapsed());
    let (scanned, floor) = raw_scan(&path)?;
    anyhow::ensure!(scanned == args.rows, "scanned {scanned} rows");
    let start = Instant::now();
    let done = stocksync_collector::rebuild::rebuild(&path, |done, total| {
        eprint!(
            "\rrebuild: {done}/{total} {:.1} s",
            start.elapsed().as_secs_f64()
        );
    })?;
    let took = start.elapsed();
    eprintln!();
    anyhow::ensure!(
        done.movements == args.rows,
        "rebuilt {} rows",
        done.movements
    );
    let target = 60.0 * args.rows as f64 / 1e7;
    Ok(vec![Row {
        figure: format!(
            "projection rebuild, {} ledger rows, {} keys",
            args.rows, done.keys
        ),
        result: format!("{:.1} s", took.as_secs_f64()),
        limit: format!(
            "{:.1} s (raw scan + decode in key order)",
            floor.as_secs_f64()
        ),
        ratio: Some(floor.as_secs_f64() / took.as_secs_f64()),
        target: "10M rows < 60 s".into(),
        met: Some(took.as_secs_f64() < target),
        command: format!("stocksync-bench rebuild --rows {}", args.rows),
    }])
}

/// A ledger file whose `stock` has `keys` rows over 10 bins of one warehouse.
fn generate_stock(path: &Path, keys: u64) -> anyhow::Result<()> {
    drop(Ledger::open(path, Arc::new(Metrics::default()))?);
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO stock (sku, warehouse, bin, available, updated_at_ms) VALUES (?1, 'ams', ?2, ?3, 0)",
        )?;
        for k in 0..keys {
            let (sku, bin) = key(k);
            insert.execute(params![sku, bin, (k % 50) as i64])?;
        }
    }
    tx.commit()?;
    Ok(())
}

const BY_SKU: &str = "SELECT sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming FROM stock WHERE sku = ?1 ORDER BY warehouse, bin";
const BY_BIN: &str = "SELECT sku, warehouse, bin, available, reserved, damaged, quality_control, in_transit, incoming FROM stock WHERE warehouse = ?1 AND bin = ?2 ORDER BY sku LIMIT ?3";

fn raw_query(conn: &Connection, sql: &str, p: &[&dyn rusqlite::ToSql]) -> anyhow::Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let mut n = 0;
    while let Some(r) = rows.next()? {
        let _: (String, i64) = (r.get(0)?, r.get(3)?);
        n += 1;
    }
    Ok(n)
}

pub fn query(args: &QueryArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("query")?;
    let path = dir.join("ledger.db");
    generate_stock(&path, args.keys)?;
    let skus = (args.keys / 10).max(1);
    let pick = |i: usize| (i as u64).wrapping_mul(2_654_435_761) % skus;
    let conn = Connection::open(&path)?;
    let (mut raw_sku, mut raw_bin) = (Samples::default(), Samples::default());
    for i in 0..args.queries {
        let sku = format!("SKU-{:07}", pick(i));
        let t = Instant::now();
        anyhow::ensure!(raw_query(&conn, BY_SKU, &[&sku])? > 0, "no rows for {sku}");
        raw_sku.push(t.elapsed());
        let bin = format!("B-{}", i % 10);
        let t = Instant::now();
        raw_query(&conn, BY_BIN, &[&"ams", &bin, &100i64])?;
        raw_bin.push(t.elapsed());
    }
    let rt = tokio::runtime::Runtime::new()?;
    let collector = rt.block_on(Collector::start(collector_config(&path, free_port())?))?;
    let url = format!("http://{}", collector.http_addr);
    let http = client();
    let (mut by_sku, mut by_bin) = (Samples::default(), Samples::default());
    for i in 0..args.queries {
        let sku = format!("SKU-{:07}", pick(i));
        let t = Instant::now();
        let v = get_json(&http, &format!("{url}/v1/stock/{sku}"))?;
        by_sku.push(t.elapsed());
        anyhow::ensure!(
            v["locations"].as_array().is_some_and(|l| l.len() == 10),
            "{v}"
        );
        let t = Instant::now();
        let v = get_json(
            &http,
            &format!("{url}/v1/stock?location=ams/B-{}&limit=100", i % 10),
        )?;
        by_bin.push(t.elapsed());
        anyhow::ensure!(v["items"].as_array().is_some_and(|l| !l.is_empty()), "{v}");
    }
    rt.block_on(collector.stop())?;
    let row = |what: &str, s: &mut Samples, raw: &mut Samples| Row {
        figure: format!("query {what} on {} stock rows", args.keys),
        result: format!(
            "p50 {:.2} / p99 {:.2} ms",
            s.quantile_ms(0.5),
            s.quantile_ms(0.99)
        ),
        limit: format!(
            "p50 {:.2} / p99 {:.2} ms (same SQL, raw connection)",
            raw.quantile_ms(0.5),
            raw.quantile_ms(0.99)
        ),
        ratio: Some(raw.quantile_ms(0.99) / s.quantile_ms(0.99)),
        target: "-".into(),
        met: None,
        command: format!("stocksync-bench query --keys {}", args.keys),
    };
    Ok(vec![
        row("GET /v1/stock/<sku> (10 bins)", &mut by_sku, &mut raw_sku),
        row(
            "GET /v1/stock?location=ams/<bin>&limit=100",
            &mut by_bin,
            &mut raw_bin,
        ),
    ])
}
