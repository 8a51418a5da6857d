//! `stocksync-agent --config agent.toml`: runs the agent until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::Parser;
use stocksync_common::config::{self, AgentConfig};

#[derive(Parser)]
#[command(version, about = "stocksync warehouse agent")]
struct Args {
    /// Path to the agent's TOML config (see deploy/agent.toml).
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rumqttc=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config: AgentConfig = config::load(&args.config)?;
    let mut agent = stocksync_agent::Agent::start(config).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        e = agent.wait() => {
            tracing::error!(error = %e, "agent stopping");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(10), agent.stop()).await;
            return Err(e);
        }
    }
    agent.stop().await
}
