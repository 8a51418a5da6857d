//! Figures: end-to-end throughput (HTTP at the agent -> journaled -> forwarded -> applied and
//! acknowledged at the collector) against the raw durable pipeline (`pipeline`: two group
//! commits with the wire between them), and backlog drain after an outage against raw QoS 1
//! throughput through the same broker with the same payload size.
//!
//! "Done" is the agent's own view: backlog 0 and every seq journaled, which it reaches only
//! when the collector's ack for the last batch (sent after its durable commit) has arrived.
//! The collector's counters are then checked so a figure never counts lost movements.

use std::time::{Duration, Instant};

use crate::load::{self, client};
use crate::raw;
use crate::stack::{Broker, BrokerKind, Stack};
use crate::util::{free_port, per_s, rate, wait_until, Row, TempDir};

/// Sizes of the end-to-end figure.
#[derive(Debug, Clone, clap::Args)]
pub struct E2eArgs {
    #[arg(long, value_enum, default_value = "embedded")]
    pub broker: BrokerKind,
    #[arg(long, default_value_t = 200_000)]
    pub movements: usize,
}

/// Sizes of the drain figure.
#[derive(Debug, Clone, clap::Args)]
pub struct DrainArgs {
    #[arg(long, value_enum, default_value = "embedded")]
    pub broker: BrokerKind,
    #[arg(long, default_value_t = 1_000_000)]
    pub movements: usize,
}

/// Waits until the agent has `n` movements journaled and none unacknowledged.
fn wait_drained(agent_url: &str, n: usize, timeout: Duration) -> anyhow::Result<Instant> {
    let http = client();
    wait_until("agent backlog to drain", timeout, || {
        let s = load::agent_status(&http, agent_url)?;
        Ok(s["last_seq"].as_u64() == Some(n as u64) && s["backlog"].as_u64() == Some(0))
    })
}

/// The collector applied exactly `n` movements, none twice.
fn check_collector(collector_url: &str, n: usize) -> anyhow::Result<()> {
    let http = client();
    let applied = load::metric(&http, collector_url, "stocksync_movements_applied_total")?;
    anyhow::ensure!(
        applied == n as u64,
        "collector applied {applied} movements, expected {n}"
    );
    let on_hand = load::get_json(&http, &format!("{collector_url}/v1/stock/SKU-000000"))?
        ["on_hand"]
        .as_i64()
        .unwrap_or(-1);
    let expected = n.div_ceil(1000) as i64;
    anyhow::ensure!(
        on_hand == expected,
        "SKU-000000 on_hand {on_hand}, expected {expected}"
    );
    Ok(())
}

/// Raw QoS 1 throughput through `port` in movements per second (batches of the agent's).
fn raw_limit(rt: &tokio::runtime::Runtime, port: u16, n: usize) -> anyhow::Result<f64> {
    let batch = raw::agent_batch();
    let messages = (n / batch).clamp(50, 2000);
    let len = raw::batch_payload_len(batch);
    Ok(rt.block_on(raw::mqtt_throughput(port, len, messages))? * batch as f64)
}

pub fn run(args: &E2eArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("e2e")?;
    let broker = Broker::start(args.broker, free_port(), &dir)?;
    let stack = Stack::start(&dir, broker.port, true)?;
    wait_until("agent to connect", Duration::from_secs(10), || {
        Ok(load::agent_status(&client(), &stack.agent_url)?["broker"] == "connected")
    })?;
    let bodies = load::receipt_bodies(args.movements, 1000, 1000);
    let start = Instant::now();
    load::post_all(&format!("{}/v1/movements", stack.agent_url), bodies, 2)?;
    let done = wait_drained(&stack.agent_url, args.movements, Duration::from_secs(600))?;
    let got = rate(args.movements as u64, done - start);
    check_collector(&stack.collector_url, args.movements)?;
    stack.stop()?;
    let rt = tokio::runtime::Runtime::new()?;
    let limit = crate::pipeline::durable_pipeline(&rt, dir.path(), broker.port, args.movements)?;
    let name = format!("{:?}", args.broker).to_lowercase();
    Ok(vec![Row {
        figure: format!("end-to-end HTTP -> collector ack, {name} broker"),
        result: per_s(got),
        limit: format!(
            "{} (raw pipeline: journal commit -> QoS 1 -> ledger commit, same broker)",
            per_s(limit)
        ),
        ratio: Some(got / limit),
        target: ">= 100k/s".into(),
        met: Some(got >= 100_000.0),
        command: format!("stocksync-bench e2e --broker {name}"),
    }])
}

pub fn drain(args: &DrainArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("drain")?;
    let port = free_port();
    let stack = Stack::start(&dir, port, true)?;
    let bodies = load::receipt_bodies(args.movements, 1000, 1000);
    let journal_time = load::post_all(&format!("{}/v1/movements", stack.agent_url), bodies, 2)?;
    let status = load::agent_status(&client(), &stack.agent_url)?;
    anyhow::ensure!(status["backlog"].as_u64() == Some(args.movements as u64));
    eprintln!(
        "journaled {} movements with the broker down in {journal_time:.1?}; starting the broker",
        args.movements
    );
    let start = Instant::now();
    let broker = Broker::start(args.broker, port, &dir)?;
    let done = wait_drained(&stack.agent_url, args.movements, Duration::from_secs(900))?;
    let took = done - start;
    let got = rate(args.movements as u64, took);
    check_collector(&stack.collector_url, args.movements)?;
    stack.stop()?;
    let rt = tokio::runtime::Runtime::new()?;
    let limit = raw_limit(&rt, broker.port, args.movements)?;
    let name = format!("{:?}", args.broker).to_lowercase();
    let target_s = 30.0 * args.movements as f64 / 1e6;
    Ok(vec![Row {
        figure: format!(
            "backlog drain of {} movements, {name} broker",
            args.movements
        ),
        result: format!("{:.1} s ({})", took.as_secs_f64(), per_s(got)),
        limit: format!("{} (raw QoS 1, {}/msg)", per_s(limit), raw::agent_batch()),
        ratio: Some(got / limit),
        target: "1M in < 30 s".into(),
        met: Some(took.as_secs_f64() < target_s),
        command: format!(
            "stocksync-bench drain --broker {name} --movements {}",
            args.movements
        ),
    }])
}
