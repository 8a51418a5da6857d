//! `stocksync-agent --config agent.toml`: runs the agent until SIGINT or SIGTERM.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stocksync_common::config::{self, AgentConfig};

#[derive(Parser)]
#[command(version, about = "stocksync warehouse agent")]
struct Args {
    /// Path to the agent's TOML config (see deploy/agent.toml).
    #[arg(long, short)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// After the agent refused to start on a rolled-back journal: renumber the movements
    /// journaled under already-used seqs and move the seq counter past the collector's.
    /// Stop the agent and keep a copy of the journal first.
    AcceptRollback,
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
    if let Some(Command::AcceptRollback) = args.command {
        let done = stocksync_agent::journal::accept_rollback(&config.journal.path)?;
        tracing::info!(
            next_seq = done.next_seq,
            renumbered = done.renumbered,
            journal = %config.journal.path.display(),
            "rollback accepted; start the agent"
        );
        return Ok(());
    }
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
