//! `cargo run --profile demo -p stocksync-tools --bin stocksync-demo`: the whole system in one
//! process (collector + embedded broker, agents for `ams` and `ber`, simulated scanners)
//! until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stocksync_tools::demo::{Demo, DemoOptions};

#[derive(Parser)]
#[command(version, about = "Run stocksync end to end on this machine")]
struct Args {
    /// Collector HTTP port; the agents listen on the next two ports.
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Embedded MQTT broker port.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// Directory for the ledger and the agents' journals (kept between runs).
    #[arg(long, default_value = "demo-data")]
    data_dir: PathBuf,
    /// Simulated movements per second.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                "warn,stocksync_agent=info,stocksync_collector=info,stocksync_tools=info,rumqttd=off".into()
            }),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let demo = Demo::start(DemoOptions {
        http_port: args.http_port,
        mqtt_port: args.mqtt_port,
        data_dir: args.data_dir,
        rate_per_sec: args.rate,
    })
    .await?;
    println!("{}", demo.guide());

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut report = tokio::time::interval(Duration::from_secs(10));
    report.tick().await;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = report.tick() => {
                println!("{}", demo.stats.summary());
                if demo.simulator_finished() {
                    break;
                }
            }
        }
    }
    println!("stopping: {}", demo.stats.summary());
    demo.stop().await?;
    println!("stopped cleanly");
    Ok(())
}
