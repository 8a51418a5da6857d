//! `stocksync-collector --config collector.toml [--log-format json]`: runs the collector until
//! SIGINT/SIGTERM.
//! `stocksync-collector broker --listen ADDR`: runs only the embedded MQTT broker.
//! `stocksync-collector [--config FILE] rebuild [--ledger PATH]`: rebuilds the projection from
//! the ledger (collector stopped), with a progress bar on stderr.
//! `stocksync-collector --config FILE move-to-postgres [--ledger PATH]`: copies a SQLite
//! ledger into the config's `[store]` PostgreSQL database (collector stopped).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stocksync_collector::config::CollectorConfig;
use stocksync_common::config;

#[derive(Parser)]
#[command(version, about = "stocksync central collector")]
struct Args {
    /// Path to the collector's TOML config (see deploy/collector.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run only the embedded MQTT broker (for trials and tests).
    Broker {
        #[arg(long, default_value = "127.0.0.1:1883")]
        listen: SocketAddr,
    },
    /// Rebuild the stock projection from the ledger. Refused while a collector runs on it.
    Rebuild {
        /// The ledger file (default: the config's `ledger.path`).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// Copy the SQLite ledger into the PostgreSQL database of `[store]` (which must be
    /// empty), then start workers with `backend = "postgres"`. Refused while a collector
    /// runs on the ledger.
    MoveToPostgres {
        /// The ledger file (default: the config's `ledger.path`).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

fn init_logging(format: LogFormat, default_filter: &str) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    // Secrets never reach the log, whatever RUST_LOG says.
    for directive in stocksync_collector::publish::LOG_DIRECTIVES {
        filter = filter.add_directive(directive.parse().expect("valid log directive"));
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // The log may be a file or a journal: colour codes only on a terminal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, on one line (the error's causes are part of its message).
            eprintln!(
                "stocksync-collector: error: {}",
                config::error_report(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    // rumqttd logs every client disconnect, clean ones included, at ERROR; its start-up
    // failures are caught by the readiness handshake instead. `RUST_LOG=info,rumqttd=debug`
    // brings them back.
    init_logging(args.log_format, "info,rumqttc=warn,rumqttd=off");
    if let Some(Command::Broker { listen }) = args.command {
        stocksync_collector::broker::start_embedded(
            listen,
            stocksync_runtime::mqtt::MAX_PACKET_BYTES,
        )?;
        tracing::info!(%listen, "embedded MQTT broker running");
        wait_for_signal().await?;
        return Ok(());
    }
    let config: CollectorConfig = match &args.config {
        Some(path) => config::load(path)?,
        None => toml::from_str("")?,
    };
    if let Some(Command::Rebuild { ledger }) = args.command {
        if ledger.is_none() && rebuild_postgres(&config).await? {
            return Ok(());
        }
        let path = ledger.unwrap_or(config.ledger.path);
        let start = std::time::Instant::now();
        let done = stocksync_collector::rebuild::rebuild(&path, |done, total| {
            progress_bar(done, total, start.elapsed())
        })?;
        eprintln!();
        tracing::info!(movements = done.movements, keys = done.keys, elapsed = ?start.elapsed(), "projection rebuilt");
        return Ok(());
    }
    if let Some(Command::MoveToPostgres { ledger }) = args.command {
        return move_to_postgres(ledger.unwrap_or(config.ledger.path.clone()), &config).await;
    }
    let mut collector = stocksync_collector::Collector::start(config).await?;
    tokio::select! {
        r = wait_for_signal() => r?,
        e = collector.wait() => {
            tracing::error!(error = %e, "collector stopping");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), collector.stop()).await;
            return Err(e);
        }
    }
    collector.stop().await
}

#[cfg(feature = "postgres")]
async fn move_to_postgres(ledger: PathBuf, config: &CollectorConfig) -> anyhow::Result<()> {
    use stocksync_collector::store::{Backend, StoreConfig};
    let store = StoreConfig::from_table(&config.store)?;
    anyhow::ensure!(
        store.backend == Backend::Postgres,
        "move-to-postgres needs [store] backend = \"postgres\" with the database's url in the config"
    );
    let moved = stocksync_collector::store::postgres::import::move_ledger(&ledger, &store).await?;
    tracing::info!(
        ledger = %ledger.display(),
        agents = moved.agents,
        movements = moved.movements,
        stock_rows = moved.stock_rows,
        reservations = moved.reservations,
        rejects = moved.rejects,
        orders = moved.orders,
        "ledger moved into postgres"
    );
    Ok(())
}

/// `rebuild` when the config's `[store]` is PostgreSQL: one online transaction under the
/// keys' locks; every stock row it changed is logged. `false` for a SQLite store.
#[cfg(feature = "postgres")]
async fn rebuild_postgres(config: &CollectorConfig) -> anyhow::Result<bool> {
    use stocksync_collector::store::{Backend, StoreConfig};
    let store = StoreConfig::from_table(&config.store)?;
    if store.backend != Backend::Postgres {
        return Ok(false);
    }
    let start = std::time::Instant::now();
    let done = stocksync_collector::store::postgres::rebuild::rebuild(&store, |done, total| {
        progress_bar(done, total, start.elapsed())
    })
    .await?;
    eprintln!();
    for (key, before, after) in &done.differences {
        tracing::warn!(sku = %key.sku, warehouse = %key.warehouse, bin = %key.bin, ?before, ?after,
            "stock row differed from the ledger's replay (available, reserved, damaged, quality_control, in_transit, incoming)");
    }
    tracing::info!(movements = done.movements, keys = done.keys, differences = done.differences.len(),
        elapsed = ?start.elapsed(), "projection rebuilt (postgres)");
    Ok(true)
}

#[cfg(not(feature = "postgres"))]
async fn rebuild_postgres(_: &CollectorConfig) -> anyhow::Result<bool> {
    Ok(false)
}

#[cfg(not(feature = "postgres"))]
async fn move_to_postgres(_: PathBuf, _: &CollectorConfig) -> anyhow::Result<()> {
    anyhow::bail!("this collector was built without the `postgres` feature")
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// `[#####.....]  42% 4200000/10000000 12.3 s`, redrawn in place.
fn progress_bar(done: u64, total: u64, elapsed: std::time::Duration) {
    let fraction = if total == 0 {
        1.0
    } else {
        done as f64 / total as f64
    };
    let filled = (fraction * 40.0) as usize;
    eprint!(
        "\r[{}{}] {:3.0}% {done}/{total} {:.1} s",
        "#".repeat(filled),
        ".".repeat(40 - filled.min(40)),
        fraction * 100.0,
        elapsed.as_secs_f64()
    );
}
