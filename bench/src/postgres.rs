//! Figure: end-to-end movements/s on the PostgreSQL store (HTTP at four agents -> journaled
//! -> forwarded -> applied in one PostgreSQL transaction per batch -> acknowledged) with 1
//! 2 and 3 collector workers, beside its limit: raw multi-row `INSERT`s of the same ledger
//! rows into the same table, one agent batch (`forward.batch_max`) per transaction, on the
//! same server.
//!
//! The server is started here for the run (`initdb` in a temp dir, as the `postgres` user
//! when running as root, since PostgreSQL refuses root), with the distribution's defaults
//! (fsync on). Workers and agents run in this process, as in the other figures. The same run
//! measures reservation latency on both backends (`holds`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stocksync_agent::Agent;
use stocksync_collector::Collector;
use stocksync_common::wire;

use crate::load::{self, client};
use crate::stack::{agent_config, collector_config_with, Broker, BrokerKind};
use crate::util::{free_port, per_s, rate, wait_until, Row, TempDir};

/// Sizes of the PostgreSQL figure.
#[derive(Debug, Clone, clap::Args)]
pub struct PgArgs {
    #[arg(long, value_enum, default_value = "embedded")]
    pub broker: BrokerKind,
    /// Movements in total, spread evenly over the warehouses' agents.
    #[arg(long, default_value_t = 100_000)]
    pub movements: usize,
    #[arg(long, default_value_t = 4)]
    pub warehouses: usize,
    /// Holds taken one after another for the reservation latency on each backend.
    #[arg(long, default_value_t = 2000)]
    pub holds: usize,
}

/// A PostgreSQL server for the run, killed (immediate shutdown) on drop.
/// A PostgreSQL server of its own in a temp dir (also used by `latency --backend postgres`).
pub(crate) struct Server {
    port: u16,
    child: Child,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .ok_or_else(|| anyhow::anyhow!("PostgreSQL not installed (/usr/lib/postgresql/*/bin)"))
}

fn id(flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn as_user(program: &Path, user: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = user {
        c.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    c
}

impl Server {
    pub(crate) fn start(dir: &TempDir) -> anyhow::Result<Server> {
        let bin = bin_dir()?;
        let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
        let user = if root {
            Some((
                id("-u").ok_or_else(|| anyhow::anyhow!("no postgres user"))?,
                id("-g").unwrap_or(0),
            ))
        } else {
            None
        };
        let data = dir.join("pg-data");
        std::fs::create_dir_all(&data)?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))?;
        }
        let status = as_user(&bin.join("initdb"), user)
            .args(["-D", data.to_str().unwrap_or_default()])
            .args([
                "-U",
                "stocksync",
                "--auth=trust",
                "--locale=C",
                "-E",
                "UTF8",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "initdb failed");
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log"))?;
        let child = as_user(&bin.join("postgres"), user)
            .args(["-D", data.to_str().unwrap_or_default()])
            .args([
                "-p",
                &port.to_string(),
                "-k",
                dir.path().to_str().unwrap_or_default(),
            ])
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=100",
            ])
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let server = Server { port, child };
        wait_until(
            "postgres to accept connections",
            Duration::from_secs(20),
            || Ok(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
        )?;
        Ok(server)
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://stocksync@127.0.0.1:{}/{db}", self.port)
    }

    /// A client on database `db`.
    async fn connect(&self, db: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url(db), tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub(crate) async fn create(&self, db: &str) -> anyhow::Result<()> {
        // The server may still be finishing its start-up when the port opens.
        for _ in 0..50 {
            if let Ok(c) = self.connect("postgres").await {
                c.batch_execute(&format!("CREATE DATABASE {db}")).await?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("postgres did not accept connections")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn warehouse(i: usize) -> String {
    format!("wh-{i}")
}

/// Movements/s through `workers` workers and one agent per warehouse.
fn end_to_end(
    rt: &tokio::runtime::Runtime,
    dir: &TempDir,
    server: &Server,
    broker: u16,
    workers: usize,
    args: &PgArgs,
) -> anyhow::Result<f64> {
    let db = format!("bench_w{workers}");
    rt.block_on(server.create(&db))?;
    let warehouses: Vec<String> = (0..args.warehouses).map(warehouse).collect();
    let mut running = Vec::new();
    for w in 0..workers {
        let store = format!(
            "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"w{w}\"\nlease_secs = 3\nwarehouses = {warehouses:?}\n",
            server.url(&db)
        );
        let config = collector_config_with(&dir.join("unused.db"), broker, &store)?;
        running.push(rt.block_on(Collector::start(config))?);
    }
    let db_client = rt.block_on(server.connect(&db))?;
    // Every warehouse held, and shared out evenly, before the clock starts.
    wait_until("leases shared out", Duration::from_secs(30), || {
        // Held, and no worker above its fair share (the leases' own rule, which may leave a
        // worker without any: 4 warehouses on 3 workers are shared 2, 2, 0).
        let row = rt.block_on(db_client.query_one(
            "SELECT coalesce(sum(n), 0)::bigint, coalesce(max(n), 0)::bigint FROM (
                 SELECT count(*) AS n FROM leases WHERE expires_at > now() AND worker_id IS NOT NULL
                 GROUP BY worker_id) per_worker",
            &[],
        ))?;
        let fair = args.warehouses.div_ceil(workers) as i64;
        Ok(row.get::<_, i64>(0) == args.warehouses as i64 && row.get::<_, i64>(1) <= fair)
    })?;
    let per_agent = args.movements / args.warehouses;
    let mut agents = Vec::new();
    for (i, wh) in warehouses.iter().enumerate() {
        let mut config = agent_config(dir, &format!("a{i}-w{workers}"), broker)?;
        config.warehouse = wh.clone();
        let agent = rt.block_on(Agent::start(config))?;
        agents.push((format!("http://{}", agent.http_addr), agent));
    }
    for (url, _) in &agents {
        wait_until("agent to connect", Duration::from_secs(10), || {
            Ok(load::agent_status(&client(), url)?["broker"] == "connected")
        })?;
    }
    let start = Instant::now();
    let posts: Vec<_> = agents
        .iter()
        .map(|(url, _)| {
            let url = format!("{url}/v1/movements");
            std::thread::spawn(move || {
                load::post_all(&url, load::receipt_bodies(per_agent, 1000, 1000), 1)
            })
        })
        .collect();
    for p in posts {
        p.join().map_err(|_| anyhow::anyhow!("post thread"))??;
    }
    for (url, _) in &agents {
        wait_until("agent backlog to drain", Duration::from_secs(900), || {
            let s = load::agent_status(&client(), url)?;
            Ok(
                s["last_seq"].as_u64() == Some(per_agent as u64)
                    && s["backlog"].as_u64() == Some(0),
            )
        })?;
    }
    let took = start.elapsed();
    let total = per_agent * args.warehouses;
    let rows: i64 = rt
        .block_on(db_client.query_one("SELECT count(*) FROM ledger", &[]))?
        .get(0);
    anyhow::ensure!(
        rows == total as i64,
        "ledger holds {rows} rows, expected {total}"
    );
    for (_, agent) in agents {
        rt.block_on(agent.stop())?;
    }
    for w in running {
        rt.block_on(w.stop())?;
    }
    Ok(rate(total as u64, took))
}

/// Raw multi-row INSERTs of `n` ledger rows, one agent batch per transaction, into the
/// migrated schema.
async fn raw_insert(server: &Server, n: usize) -> anyhow::Result<f64> {
    server.create("bench_raw").await?;
    let mut c = server.connect("bench_raw").await?;
    stocksync_collector::store::postgres::schema::migrate(&mut c).await?;
    let start = Instant::now();
    for chunk in (0..n as u64)
        .collect::<Vec<_>>()
        .chunks(crate::raw::agent_batch())
    {
        let ms: Vec<_> = chunk
            .iter()
            .map(|i| crate::raw::sample_movement(*i))
            .collect();
        let seq: Vec<i64> = ms.iter().map(|m| m.seq as i64).collect();
        let sku: Vec<&str> = ms.iter().map(|m| m.sku.as_str()).collect();
        let bin: Vec<&str> = ms.iter().map(|m| m.location.bin_key()).collect();
        let at: Vec<i64> = ms.iter().map(|m| m.occurred_at.unix_ms).collect();
        let payload: Vec<Vec<u8>> = ms.iter().map(wire::encode_movement).collect();
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO ledger (agent_id, seq, sku, warehouse, bin, source, kind, quantity, occurred_at_ms, received_at_ms, payload, treatment, returns_to, applied_by)
             SELECT 'raw', s, k, 'ams', b, 'wms', 'receipt', 1, t, 0, p, 'apply', 'quality_control', 'raw'
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bytea[]) AS m(s, k, b, t, p)
             ON CONFLICT (agent_id, seq) DO NOTHING",
            &[&seq, &sku, &bin, &at, &payload],
        )
        .await?;
        tx.commit().await?;
    }
    Ok(rate(n as u64, start.elapsed()))
}

pub fn run(args: &PgArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("postgres")?;
    let server = Server::start(&dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let broker = Broker::start(args.broker, free_port(), &dir)?;
    let limit = rt.block_on(raw_insert(&server, args.movements))?;
    let name = format!("{:?}", args.broker).to_lowercase();
    let mut rows = Vec::new();
    for workers in [1, 2, 3] {
        let got = end_to_end(&rt, &dir, &server, broker.port, workers, args)?;
        rows.push(Row {
            figure: format!(
                "end-to-end HTTP -> postgres commit -> ack, {workers} worker(s), {} warehouses, {name} broker",
                args.warehouses
            ),
            result: per_s(got),
            limit: format!(
                "{} (raw multi-row INSERT, {}/tx)",
                per_s(limit),
                crate::raw::agent_batch()
            ),
            ratio: Some(got / limit),
            target: "none yet".into(),
            met: None,
            command: format!(
                "stocksync-bench postgres --broker {name} --movements {}",
                args.movements
            ),
        });
    }
    let command = format!("stocksync-bench postgres --holds {}", args.holds);
    rows.extend(crate::holds::sqlite(
        &rt,
        &dir,
        broker.port,
        args.holds,
        &command,
    )?);
    rows.extend(holds_on_postgres(
        &rt,
        &dir,
        &server,
        broker.port,
        args.holds,
        &command,
    )?);
    Ok(rows)
}

/// Reservation latency on one PostgreSQL worker.
fn holds_on_postgres(
    rt: &tokio::runtime::Runtime,
    dir: &TempDir,
    server: &Server,
    broker: u16,
    n: usize,
    command: &str,
) -> anyhow::Result<Vec<Row>> {
    rt.block_on(server.create("bench_holds"))?;
    let store = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"h\"\nlease_secs = 3\nwarehouses = [\"wh-0\"]\n{}",
        server.url("bench_holds"),
        crate::holds::ORDERS_TOML
    );
    let config = collector_config_with(&dir.join("unused.db"), broker, &store)?;
    let worker = rt.block_on(Collector::start(config))?;
    let c = rt.block_on(server.connect("bench_holds"))?;
    let row = crate::holds::postgres(rt, &c, &format!("http://{}", worker.http_addr), n, command);
    rt.block_on(worker.stop())?;
    row
}
