//! Orders: checkouts of 3 lines routed and held over HTTP (`POST /v1/orders`), beside the
//! same routing-and-hold transactions handed straight to the ledger writer (no HTTP, no
//! JSON): the floor any order API on this store can reach. And the hot-SKU race: many
//! clients at once for fewer units of one SKU, where exactly the units on hand may succeed.
//!
//! Stock is written into the ledger file before the collector opens it (3 warehouses, every
//! SKU plentiful, so every order succeeds and each one is a full routing + hold).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};
use serde_json::json;
use stocksync_collector::ledger::Ledger;
use stocksync_collector::metrics::Metrics;
use stocksync_collector::orders::{self, OrderRequest, Orders, Prepared};
use stocksync_collector::Collector;
use stocksync_common::catalog::Catalog;

use crate::load::{client, get_json, post};
use crate::util::{free_port, per_s, rate, Row, Samples, TempDir};

#[derive(Debug, Clone, clap::Args)]
pub struct OrdersArgs {
    /// Orders placed over HTTP (and again straight against the store).
    #[arg(long, default_value_t = 20_000)]
    pub orders: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// SKUs the lines are drawn from.
    #[arg(long, default_value_t = 1000)]
    pub skus: usize,
    /// Clients racing for the hot SKU.
    #[arg(long, default_value_t = 200)]
    pub racers: usize,
    /// Units of the hot SKU.
    #[arg(long, default_value_t = 100)]
    pub units: u64,
    /// Orders per second for the paced (open-loop) latency run.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of the paced run.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
}

const WAREHOUSES: [&str; 3] = ["ams", "chi", "sin"];

/// Transactions kept in flight against the ledger writer for the limit (its group size).
const STRAIGHT_IN_FLIGHT: usize = 256;

/// Writes `available` of every SKU at every warehouse into a fresh ledger file.
fn stock(path: &Path, skus: usize, available: i64) -> anyhow::Result<()> {
    drop(Ledger::open(path, Arc::new(Metrics::default()))?);
    let mut conn = Connection::open(path)?;
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO stock (sku, warehouse, bin, available, updated_at_ms) VALUES (?1, ?2, 'A-01', ?3, 0)",
        )?;
        for s in 0..skus {
            for wh in WAREHOUSES {
                insert.execute(params![format!("SKU-{s:05}"), wh, available])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn body(i: usize, skus: usize, lines: usize) -> serde_json::Value {
    let pick = |k: usize| (i.wrapping_mul(2_654_435_761).wrapping_add(k * 7919)) % skus;
    let lines: Vec<_> = (0..lines)
        .map(|k| json!({"sku": format!("SKU-{:05}", pick(k)), "quantity": 1}))
        .collect();
    json!({"id": format!("B-{i}"), "channel": "web", "lines": lines,
           "ship_to": {"country": "NL", "lat": 52.0, "lon": 5.0}})
}

const ORDERS_TOML: &str = "[[channels.channel]]\nname = \"web\"\nlocations = [\"*\"]\n";

fn start(path: &Path, rt: &tokio::runtime::Runtime) -> anyhow::Result<Collector> {
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[ledger]\npath = {path:?}\n[embedded_broker]\nlisten = \"127.0.0.1:{}\"\n{ORDERS_TOML}",
        free_port()
    );
    rt.block_on(Collector::start(toml::from_str(&text)?))
}

/// Places `bodies` from `clients` threads; returns wall time, latencies and the statuses.
fn place_all(
    url: &str,
    bodies: Vec<String>,
    clients: usize,
) -> anyhow::Result<(Duration, Samples, Vec<u16>)> {
    let bodies = Arc::new(bodies);
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new((Samples::default(), Vec::new())));
    let start = Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (bodies, next, out, url) =
                (bodies.clone(), next.clone(), out.clone(), url.to_string());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let http = client();
                while let Some(b) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let t = Instant::now();
                    let (status, text) = post(&http, &url, b)?;
                    anyhow::ensure!(status == 201 || status == 409, "{status} {text}");
                    let mut o = out.lock().expect("samples");
                    o.0.push(t.elapsed());
                    o.1.push(status);
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let wall = start.elapsed();
    let (samples, statuses) = std::mem::take(&mut *out.lock().expect("samples"));
    Ok((wall, samples, statuses))
}

/// The same orders handed to the ledger writer directly, `in_flight` at a time.
fn straight(
    path: &Path,
    args: &OrdersArgs,
    in_flight: usize,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Duration> {
    let ledger = Ledger::open(path, Arc::new(Metrics::default()))?;
    let ctx = Arc::new(Orders::new(
        toml::Table::new(),
        ["web".to_string()],
        Arc::new(Catalog::default()),
    )?);
    // The HTTP run routes at the wall clock: so does this one.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let mut prepared = Vec::with_capacity(args.orders);
    for i in 0..args.orders {
        let request = OrderRequest::parse(body(i, args.skus, 3).to_string().as_bytes())?;
        let demand = ledger.read(|c| ctx.demand(&request, c))??;
        prepared.push(Prepared {
            expires_at_ms: None,
            routed_at: request.routed_at(now)?,
            request,
            demand,
            idempotency_key: None,
            by: "bench".into(),
        });
    }
    let start = Instant::now();
    rt.block_on(async {
        let queue = Arc::new(Mutex::new(prepared));
        let mut tasks = Vec::new();
        for _ in 0..in_flight.max(1) {
            let (queue, ledger, ctx) = (queue.clone(), ledger.clone(), ctx.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(p) = queue.lock().expect("queue").pop() else {
                        return Ok::<_, anyhow::Error>(());
                    };
                    let ctx = ctx.clone();
                    let placed = ledger
                        .write(move |tx, t| orders::place(tx, &ctx, p, now, t))
                        .await?;
                    anyhow::ensure!(matches!(placed, orders::Placed::Created(_)), "{placed:?}");
                }
            }));
        }
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(start.elapsed())
}

pub fn run(args: &OrdersArgs) -> anyhow::Result<Vec<Row>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = TempDir::new("orders")?;
    let (http_db, raw_db) = (dir.join("http.db"), dir.join("raw.db"));
    let plenty = i64::try_from(args.orders)
        .unwrap_or(i64::MAX)
        .saturating_mul(3);
    stock(&http_db, args.skus, plenty)?;
    stock(&raw_db, args.skus, plenty)?;
    let collector = start(&http_db, &rt)?;
    let bodies = (0..args.orders)
        .map(|i| body(i, args.skus, 3).to_string())
        .collect();
    let run =
        crate::wire_client::post_all(collector.http_addr, "/v1/orders", bodies, args.clients)?;
    let (wall, mut lat) = (run.wall, run.latencies);
    anyhow::ensure!(
        run.statuses.iter().all(|s| *s == 201),
        "an order was refused"
    );
    let client_share = run.client_cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9);
    rt.block_on(collector.stop())?;
    // The writer's ceiling: as many transactions in flight as one group commit folds.
    let floor = straight(&raw_db, args, STRAIGHT_IN_FLIGHT, &rt)?;
    let (http_rate, raw_rate) = (
        rate(args.orders as u64, wall),
        rate(args.orders as u64, floor),
    );
    let mut rows = vec![Row {
        figure: format!(
            "orders of 3 lines over HTTP, {} clients, {} SKUs x 3 warehouses",
            args.clients, args.skus
        ),
        result: format!(
            "{} orders; p50 {:.2} / p99 {:.2} ms (the load generator used {:.0}% of a core)",
            per_s(http_rate),
            lat.quantile_ms(0.5),
            lat.quantile_ms(0.99),
            client_share * 100.0
        ),
        limit: format!(
            "{} orders (same routing + holds straight to the ledger writer, {STRAIGHT_IN_FLIGHT} in flight)",
            per_s(raw_rate)
        ),
        ratio: Some(http_rate / raw_rate),
        target: ">= 5,000 orders/s".into(),
        met: Some(http_rate >= 5000.0),
        command: format!(
            "stocksync-bench orders --orders {} --clients {}",
            args.orders, args.clients
        ),
    }];
    rows.push(paced(args, &rt, &dir)?);
    rows.push(race(args, &rt, &dir)?);
    Ok(rows)
}

/// Orders sent open-loop at `args.rate`: each latency counts from when the order was due, so
/// a slow answer also delays nobody's clock (no coordinated omission).
fn paced(args: &OrdersArgs, rt: &tokio::runtime::Runtime, dir: &TempDir) -> anyhow::Result<Row> {
    let path = dir.join("paced.db");
    let n = ((args.rate * args.seconds).ceil() as usize).max(1);
    stock(&path, args.skus, i64::try_from(n)?.saturating_mul(3))?;
    let collector = start(&path, rt)?;
    let url = format!("http://{}/v1/orders", collector.http_addr);
    let bodies: Arc<Vec<String>> =
        Arc::new((0..n).map(|i| body(i, args.skus, 3).to_string()).collect());
    // Enough threads that a slow answer never holds back the next due order.
    let threads = ((args.rate / 50.0) as usize).clamp(4, 64);
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Samples::default()));
    let begin = Instant::now() + Duration::from_millis(50);
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (bodies, next, out, url) = (bodies.clone(), next.clone(), out.clone(), url.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let http = client();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(b) = bodies.get(i) else {
                        return Ok(());
                    };
                    let due = begin + interval.mul_f64(i as f64);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let (status, text) = post(&http, &url, b)?;
                    anyhow::ensure!(status == 201, "{status} {text}");
                    out.lock().expect("samples").push(due.elapsed());
                }
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    rt.block_on(collector.stop())?;
    let mut lat = std::mem::take(&mut *out.lock().expect("samples"));
    let p99 = lat.quantile_ms(0.99);
    // The floor of any durable answer here: one SQLite commit (WAL, fsync) on the same disk.
    let mut commit = crate::raw::sqlite_commit_latency(&dir.join("commit.db"), 500)?;
    Ok(Row {
        figure: format!(
            "orders of 3 lines paced at {}/s over HTTP for {} s",
            args.rate, args.seconds
        ),
        result: format!("p50 {:.2} / p99 {p99:.2} ms", lat.quantile_ms(0.5)),
        limit: format!(
            "one raw SQLite commit: p50 {:.2} / p99 {:.2} ms",
            commit.quantile_ms(0.5),
            commit.quantile_ms(0.99)
        ),
        ratio: None,
        target: "p99 < 10 ms at 1,000/s".into(),
        met: (args.rate >= 1000.0).then_some(p99 < 10.0),
        command: format!(
            "stocksync-bench orders --rate {} --seconds {}",
            args.rate, args.seconds
        ),
    })
}

/// `racers` clients at once, one unit each, for `units` units of one SKU.
fn race(args: &OrdersArgs, rt: &tokio::runtime::Runtime, dir: &TempDir) -> anyhow::Result<Row> {
    let path = dir.join("race.db");
    stock(&path, 0, 0)?;
    let conn = Connection::open(&path)?;
    conn.execute(
        "INSERT INTO stock (sku, warehouse, bin, available, updated_at_ms) VALUES ('HOT', 'ams', 'A-01', ?1, 0)",
        [i64::try_from(args.units)?],
    )?;
    drop(conn);
    let collector = start(&path, rt)?;
    let c = format!("http://{}", collector.http_addr);
    let bodies = (0..args.racers)
        .map(|i| json!({"id": format!("H-{i}"), "channel": "web", "lines": [{"sku": "HOT", "quantity": 1}], "ship_to": {"country": "NL"}}).to_string())
        .collect();
    let (_, mut lat, statuses) = place_all(&format!("{c}/v1/orders"), bodies, args.racers)?;
    let won = statuses.iter().filter(|s| **s == 201).count() as u64;
    let stock = get_json(&client(), &format!("{c}/v1/stock/HOT"))?;
    rt.block_on(collector.stop())?;
    let (available, reserved) = (
        stock["total"]["available"].as_i64(),
        stock["total"]["reserved"].as_i64(),
    );
    let exact =
        won == args.units && available == Some(0) && reserved == Some(i64::try_from(args.units)?);
    anyhow::ensure!(
        exact,
        "race: {won} won, available {available:?}, reserved {reserved:?}"
    );
    Ok(Row {
        figure: format!(
            "hot SKU race: {} clients at once for {} units",
            args.racers, args.units
        ),
        result: format!(
            "{won} succeeded, available 0, reserved {}; p99 {:.1} ms",
            args.units,
            lat.quantile_ms(0.99)
        ),
        limit: format!("{} units", args.units),
        ratio: None,
        target: format!("exactly {}", args.units),
        met: Some(exact),
        command: format!(
            "stocksync-bench orders --racers {} --units {}",
            args.racers, args.units
        ),
    })
}
