//! `stocksync-agent --config agent.toml [--log-format json]`: runs the agent until SIGINT or
//! SIGTERM.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use stocksync_agent::config::AgentConfig;
use stocksync_common::config;

#[derive(Parser)]
#[command(version, about = "stocksync warehouse agent")]
struct Args {
    /// Path to the agent's TOML config (see deploy/agent.toml).
    #[arg(long, short)]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
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

#[derive(Subcommand)]
enum Command {
    /// After the agent refused to start on a rolled-back journal: renumber the movements
    /// journaled under already-used seqs and move the seq counter past the collector's.
    /// Stop the agent and keep a copy of the journal first.
    AcceptRollback,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // Once, on one line (the error's causes are part of its message).
            eprintln!(
                "stocksync-agent: error: {}",
                config::error_report(e.as_ref())
            );
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format, "info,rumqttc=warn");
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
