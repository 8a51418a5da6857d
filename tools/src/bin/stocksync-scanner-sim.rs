//! `stocksync-scanner-sim`: publishes simulated scanner movements (JSON, QoS 1) to a broker,
//! for trying a site's agent, for benchmarks and for the demo's scanners.

use clap::Parser;
use stocksync_common::config::BrokerConfig;
use stocksync_tools::scenario::Mix;
use stocksync_tools::simulator::{self, SimConfig, Stats, Target};

#[derive(Parser)]
#[command(
    version,
    about = "Simulated warehouse scanners publishing movements over MQTT"
)]
struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// Broker username.
    #[arg(long)]
    username: Option<String>,
    /// File holding the broker password (kept off the command line).
    #[arg(long)]
    password_file: Option<std::path::PathBuf>,
    /// Topic to publish on; must match the agent's `[scanner] topic` filter.
    #[arg(long, default_value = "scanners/ams/gun-1/movements")]
    topic: String,
    /// Agent base URL (e.g. http://127.0.0.1:8081); when set, every `--http-every`th
    /// movement is POSTed there as a WMS would.
    #[arg(long)]
    agent_url: Option<String>,
    /// Messages per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// Stop after this many messages (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<u64>,
    /// Comma-separated SKUs to move.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "MUG-001,TEE-002,CAP-003,BAG-004"
    )]
    skus: Vec<String>,
    /// One message in N is deliberately invalid (0: never).
    #[arg(long, default_value_t = 40)]
    invalid_every: u64,
    /// One message in N repeats the previous scanner message with the same id (0: never).
    #[arg(long, default_value_t = 25)]
    resend_every: u64,
    /// One message in N goes over HTTP when --agent-url is set (0: never).
    #[arg(long, default_value_t = 5)]
    http_every: u64,
    /// One message in N is a cycle count of a bin (0: never).
    #[arg(long, default_value_t = 30)]
    count_every: u64,
    /// Every Nth count is deliberately one unit short (0: never).
    #[arg(long, default_value_t = 3)]
    miscount_every: u64,
    /// Report some receipts in cases of this many eaches (the catalog must define a `case`
    /// pack of that size for every SKU).
    #[arg(long)]
    case_size: Option<u64>,
    /// Scenario seed; the same seed sends the same stream (default: time-based).
    #[arg(long)]
    seed: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let config = SimConfig {
        broker: BrokerConfig {
            host: args.host,
            port: args.port,
            username: args.username,
            password_file: args.password_file,
            ..BrokerConfig::default()
        },
        targets: vec![Target {
            name: args.topic.clone(),
            topic: args.topic,
            http: args.agent_url,
        }],
        rate_per_sec: args.rate,
        count: args.count,
        skus: args.skus,
        mix: Mix {
            invalid_every: args.invalid_every,
            resend_every: args.resend_every,
            http_every: args.http_every,
            count_every: args.count_every,
            miscount_every: args.miscount_every,
            case_size: args.case_size,
        },
        seed: args.seed.unwrap_or_else(simulator::time_seed),
    };
    let stats = std::sync::Arc::new(Stats::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut run = tokio::spawn(simulator::run(config, stats.clone(), stopped));
    tokio::select! {
        r = &mut run => r??,
        _ = tokio::signal::ctrl_c() => {
            let _ = stop.send(true);
            run.await??;
        }
    }
    println!("{}", stats.summary());
    Ok(())
}
