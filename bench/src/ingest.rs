//! Figure: agent durable ingest over HTTP (batched and single-movement requests) against
//! raw SQLite WAL group-commit inserts of the same rows with the same grouping.
//!
//! The agent forwards to a broker port nobody listens on, so only ingest runs: parse,
//! validate, journal, fsync, answer 202. The raw limit gets the best grouping the agent could
//! reach: all concurrent requests folded into one commit.

use crate::load::{self, client};
use crate::raw;
use crate::stack::Stack;
use crate::util::{free_port, per_s, rate, Row, TempDir};

/// Sizes of the ingest figure.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestArgs {
    /// Movements posted in batched requests.
    #[arg(long, default_value_t = 1_000_000)]
    pub movements: usize,
    /// Movements per batched request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Client threads for batched requests.
    #[arg(long, default_value_t = 2)]
    pub batch_threads: usize,
    /// Single-movement requests.
    #[arg(long, default_value_t = 20_000)]
    pub singles: usize,
    /// Client threads (concurrent connections) for single-movement requests.
    #[arg(long, default_value_t = 32)]
    pub single_threads: usize,
}

pub fn run(args: &IngestArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("ingest")?;
    let group = (args.batch * args.batch_threads) as u64;
    // The disk is shared and its fsync time drifts: the limit is measured before and after
    // the agent, and the better of the two is the denominator (a conservative ratio).
    let raw = |label: &str| -> anyhow::Result<(f64, f64)> {
        Ok((
            raw::sqlite_group_commit(
                &dir.join(&format!("raw-b-{label}.db")),
                args.movements as u64,
                group,
            )?,
            raw::sqlite_group_commit(
                &dir.join(&format!("raw-s-{label}.db")),
                args.singles as u64,
                args.single_threads as u64,
            )?,
        ))
    };
    let before = raw("before")?;
    let stack = Stack::start(&dir, free_port(), false)?;
    let url = format!("{}/v1/movements", stack.agent_url);

    let bodies = load::receipt_bodies(args.movements, args.batch, 1000);
    let batched = rate(
        args.movements as u64,
        load::post_all(&url, bodies, args.batch_threads)?,
    );
    let singles = load::receipt_bodies(args.singles, 1, 1000);
    let single = rate(
        args.singles as u64,
        load::post_all(&url, singles, args.single_threads)?,
    );
    let noop = load::get_rate(
        &format!("{}/healthz", stack.agent_url),
        args.singles,
        args.single_threads,
    )?;
    let status = load::agent_status(&client(), &stack.agent_url)?;
    let expected = (args.movements + args.singles) as u64;
    anyhow::ensure!(
        status["last_seq"].as_u64() == Some(expected),
        "agent journaled {} movements, expected {expected}",
        status["last_seq"]
    );
    stack.stop()?;
    let after = raw("after")?;
    eprintln!(
        "raw limits before/after: batched {} / {}, single {} / {}",
        per_s(before.0),
        per_s(after.0),
        per_s(before.1),
        per_s(after.1)
    );
    let (raw_batched, raw_single) = (before.0.max(after.0), before.1.max(after.1));
    let row = |figure: String, got: f64, limit: f64, what: String, share: f64| Row {
        figure,
        result: per_s(got),
        limit: format!("{} ({what})", per_s(limit)),
        ratio: Some(got / limit),
        target: format!(">= {:.0}% of the limit", share * 100.0),
        met: Some(got / limit >= share),
        command: "stocksync-bench ingest".into(),
    };
    // Batches are bound by the journal (the raw group commit); single movements by HTTP
    // round trips on this machine (a no-op GET with the same clients), not by the journal.
    Ok(vec![
        row(
            format!("agent durable ingest, HTTP batches of {}", args.batch),
            batched,
            raw_batched,
            format!("raw WAL FULL, {group} rows/commit"),
            0.5,
        ),
        row(
            "agent durable ingest, HTTP single movement".into(),
            single,
            noop,
            format!(
                "HTTP no-op GET, same {} clients; raw WAL FULL at {} rows/commit: {}",
                args.single_threads,
                args.single_threads,
                per_s(raw_single)
            ),
            0.8,
        ),
    ])
}
