//! Reservation and order latency on each backend: one client takes holds one after another
//! over HTTP (`POST /v1/reservations`, each a checked, durable hold), then places orders of
//! 3 lines one after another (`POST /v1/orders`: routing plus three holds in one
//! transaction), on the SQLite collector and on a PostgreSQL worker, each beside the floor
//! of a durable answer on its store measured in the same run: one raw SQLite commit (WAL,
//! fsync), one raw single-row PostgreSQL transaction.

use std::sync::Arc;
use std::time::Instant;

use rusqlite::{params, Connection};
use stocksync_collector::ledger::Ledger;
use stocksync_collector::metrics::Metrics;
use stocksync_collector::Collector;

use crate::load::{client, post};
use crate::util::{Row, Samples, TempDir};

/// SKUs the holds are spread over (one warehouse), each with plenty of stock.
const SKUS: usize = 100;

fn body(i: usize) -> String {
    format!(
        r#"{{"id":"h-{i}","order":"O-{i}","sku":"SKU-{:03}","warehouse":"wh-0","quantity":1}}"#,
        i % SKUS
    )
}

/// Takes `n` holds one after another at `url`; every one must be a 201.
fn hold_all(url: &str, n: usize) -> anyhow::Result<Samples> {
    let http = client();
    let mut lat = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let (status, text) = post(&http, &format!("{url}/v1/reservations"), &body(i))?;
        anyhow::ensure!(status == 201, "hold {i}: {status} {text}");
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// An order of 3 lines on distinct SKUs.
fn order(i: usize) -> String {
    let sku = |k: usize| format!("SKU-{:03}", (i * 3 + k) % SKUS);
    format!(
        r#"{{"id":"o-{i}","channel":"web","lines":[{{"sku":"{}","quantity":1}},{{"sku":"{}","quantity":1}},{{"sku":"{}","quantity":1}}],"ship_to":{{"country":"NL"}}}}"#,
        sku(0),
        sku(1),
        sku(2)
    )
}

/// The order channel both backends route for: a channel that only takes orders, so the
/// figure is routing and holds without a channel publishing beside it.
pub const ORDERS_TOML: &str = "[[orders.channel]]\nname = \"web\"\n";

/// Places `n` orders one after another at `url`; every one must be a 201.
fn order_all(url: &str, n: usize) -> anyhow::Result<Samples> {
    let http = client();
    let mut lat = Samples::default();
    for i in 0..n {
        let t = Instant::now();
        let (status, text) = post(&http, &format!("{url}/v1/orders"), &order(i))?;
        anyhow::ensure!(status == 201, "order {i}: {status} {text}");
        lat.push(t.elapsed());
    }
    Ok(lat)
}

fn order_row(backend: &str, n: usize, mut lat: Samples, mut floor: Samples, command: &str) -> Row {
    Row {
        figure: format!(
            "order latency, {backend}: {n} orders of 3 lines one after another over HTTP"
        ),
        result: format!(
            "p50 {:.2} / p99 {:.2} ms",
            lat.quantile_ms(0.5),
            lat.quantile_ms(0.99)
        ),
        limit: format!(
            "the same floor: p50 {:.2} / p99 {:.2} ms",
            floor.quantile_ms(0.5),
            floor.quantile_ms(0.99)
        ),
        ratio: None,
        target: "none (issue 12 asks for the figure)".into(),
        met: None,
        command: command.into(),
    }
}

fn row(
    backend: &str,
    n: usize,
    mut lat: Samples,
    mut floor: Samples,
    what: &str,
    command: &str,
) -> Row {
    Row {
        figure: format!("reservation latency, {backend}: {n} holds one after another over HTTP"),
        result: format!(
            "p50 {:.2} / p99 {:.2} ms",
            lat.quantile_ms(0.5),
            lat.quantile_ms(0.99)
        ),
        limit: format!(
            "{what}: p50 {:.2} / p99 {:.2} ms",
            floor.quantile_ms(0.5),
            floor.quantile_ms(0.99)
        ),
        ratio: None,
        target: "none (issue 12 asks for the figure)".into(),
        met: None,
        command: command.into(),
    }
}

/// The SQLite collector: stock written into its ledger before it opens it.
pub fn sqlite(
    rt: &tokio::runtime::Runtime,
    dir: &TempDir,
    broker: u16,
    n: usize,
    command: &str,
) -> anyhow::Result<Vec<Row>> {
    let path = dir.join("holds.db");
    drop(Ledger::open(&path, Arc::new(Metrics::default()))?);
    {
        let conn = Connection::open(&path)?;
        let mut insert = conn.prepare(
            "INSERT INTO stock (sku, warehouse, bin, available, updated_at_ms) VALUES (?1, 'wh-0', '', ?2, 0)",
        )?;
        for s in 0..SKUS {
            insert.execute(params![format!("SKU-{s:03}"), 4 * n as i64])?;
        }
    }
    let config = crate::stack::collector_config_with(&path, broker, ORDERS_TOML)?;
    let collector = rt.block_on(Collector::start(config))?;
    let url = format!("http://{}", collector.http_addr);
    let lat = hold_all(&url, n)?;
    let orders = order_all(&url, n)?;
    rt.block_on(collector.stop())?;
    let floor = crate::raw::sqlite_commit_latency(&dir.join("holds-commit.db"), n)?;
    Ok(vec![
        row(
            "SQLite",
            n,
            lat,
            floor.clone(),
            "one raw SQLite commit",
            command,
        ),
        order_row("SQLite", n, orders, floor, command),
    ])
}

/// A PostgreSQL worker on database `db` (created and migrated by the caller's server).
pub async fn postgres_floor(c: &tokio_postgres::Client, n: usize) -> anyhow::Result<Samples> {
    c.batch_execute("CREATE TABLE IF NOT EXISTS commit_floor (id BIGINT PRIMARY KEY)")
        .await?;
    let mut lat = Samples::default();
    for i in 0..n as i64 {
        let t = Instant::now();
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO commit_floor VALUES ({i}); COMMIT"
        ))
        .await?;
        lat.push(t.elapsed());
    }
    Ok(lat)
}

/// Holds on a running PostgreSQL worker at `url` whose database `c` is stocked here.
pub fn postgres(
    rt: &tokio::runtime::Runtime,
    c: &tokio_postgres::Client,
    url: &str,
    n: usize,
    command: &str,
) -> anyhow::Result<Vec<Row>> {
    rt.block_on(async {
        for s in 0..SKUS {
            c.execute(
                "INSERT INTO stock (sku, warehouse, bin, available, updated_at_ms) VALUES ($1, 'wh-0', '', $2, 0)",
                &[&format!("SKU-{s:03}"), &(4 * n as i64)],
            )
            .await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let lat = hold_all(url, n)?;
    let orders = order_all(url, n)?;
    let floor = rt.block_on(postgres_floor(c, n))?;
    Ok(vec![
        row(
            "PostgreSQL (1 worker)",
            n,
            lat,
            floor.clone(),
            "one raw single-row PostgreSQL transaction",
            command,
        ),
        order_row("PostgreSQL (1 worker)", n, orders, floor, command),
    ])
}
