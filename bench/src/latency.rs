//! Figure: latency from POST at the agent to durable at the agent (the 202) and to visible in
//! the collector's stock, at a fixed offered load, coordinated-omission safe.
//!
//! Requests are sent open-loop (see `load::open_loop`) and every latency is measured from the
//! request's due time. "Visible" is observed with an MQTT probe on the agent's ack topic: the
//! collector publishes the ack only after the transaction that updated `stock` is on disk,
//! so the ack's arrival is an upper bound of the moment the stock API shows the movement.
//! The physical limit is two fsyncs (agent journal, collector ledger) plus two broker hops
//! (batch, ack), measured one at a time in the same run.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use stocksync_common::config::BrokerConfig;
use stocksync_common::{topics, wire};

use crate::load::{self, client};
use crate::raw;
use crate::stack::{Broker, BrokerKind, Stack};
use crate::util::{free_port, wait_until, Row, Samples, TempDir};

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Offered load, movements per second (one movement per request).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    #[arg(long, value_enum, default_value = "embedded")]
    pub broker: BrokerKind,
}

/// An ack as the probe saw it.
struct SeenAck {
    at: Instant,
    first: u64,
    last: u64,
}

async fn ack_probe(port: u16) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<SeenAck>> {
    let config = BrokerConfig {
        host: "127.0.0.1".into(),
        port,
        ..Default::default()
    };
    let opts = stocksync_common::mqtt::options(&config, "bench-ack-probe", true)?;
    let (client, mut events) = AsyncClient::new(opts, 64);
    client
        .subscribe(topics::acks("ams", "a1"), QoS::AtLeastOnce)
        .await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
            break;
        }
    }
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(e) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                let at = Instant::now();
                if let Ok(ack) = wire::decode_ack(&p.payload) {
                    let _ = tx.send(SeenAck {
                        at,
                        first: ack.first_seq,
                        last: ack.last_seq,
                    });
                }
            }
        }
    });
    Ok(rx)
}

pub fn run(args: &LatencyArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("latency")?;
    let broker = Broker::start(args.broker, free_port(), &dir)?;
    let stack = Stack::start(&dir, broker.port, true)?;
    wait_until("agent to connect", Duration::from_secs(10), || {
        Ok(load::agent_status(&client(), &stack.agent_url)?["broker"] == "connected")
    })?;
    let mut acks = stack.rt.block_on(ack_probe(broker.port))?;
    let n = (args.rate * args.seconds).ceil() as usize;
    let threads = ((args.rate / 100.0) as usize).clamp(4, 64);
    let bodies = load::receipt_bodies(n, 1, 1000);
    let sent = load::open_loop(
        &format!("{}/v1/movements", stack.agent_url),
        bodies,
        args.rate,
        threads,
    )?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen
        .iter()
        .map(|a: &SeenAck| a.last - a.first + 1)
        .sum::<u64>()
        < n as u64
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let ack = stack
            .rt
            .block_on(async { tokio::time::timeout(left, acks.recv()).await })?
            .ok_or_else(|| anyhow::anyhow!("ack probe stopped"))?;
        seen.push(ack);
    }
    stack.stop()?;
    seen.sort_by_key(|a| a.first);
    let (mut durable, mut visible) = (Samples::default(), Samples::default());
    for s in &sent {
        durable.push(s.answered - s.due);
        let i = seen.partition_point(|a| a.first <= s.first_seq);
        let ack = i
            .checked_sub(1)
            .map(|i| &seen[i])
            .filter(|a| a.last >= s.first_seq)
            .ok_or_else(|| anyhow::anyhow!("seq {} never acknowledged", s.first_seq))?;
        visible.push(ack.at.saturating_duration_since(s.due));
    }
    let mut fsync = raw::sqlite_commit_latency(&dir.join("raw.db"), 200)?;
    let rt = tokio::runtime::Runtime::new()?;
    let mut hop = rt.block_on(raw::mqtt_latency(
        broker.port,
        raw::batch_payload_len(1),
        200,
    ))?;
    let limit = |q: f64, fsyncs: f64, hops: f64, f: &mut Samples, h: &mut Samples| {
        fsyncs * f.quantile_ms(q) + hops * h.quantile_ms(q)
    };
    let name = format!("{:?}", args.broker).to_lowercase();
    let command = format!(
        "stocksync-bench latency --rate {} --broker {name}",
        args.rate
    );
    let mut row = |what: &str, s: &mut Samples, fsyncs: f64, hops: f64, target: &str, ms: f64| {
        let (l50, l99) = (
            limit(0.5, fsyncs, hops, &mut fsync, &mut hop),
            limit(0.99, fsyncs, hops, &mut fsync, &mut hop),
        );
        let p99 = s.quantile_ms(0.99);
        Row {
            figure: format!("latency POST -> {what} at {} movements/s", args.rate),
            result: format!(
                "p50 {:.1} / p99 {:.1} / max {:.1} ms",
                s.quantile_ms(0.5),
                p99,
                s.quantile_ms(1.0)
            ),
            limit: format!("p50 {l50:.1} / p99 {l99:.1} ms ({fsyncs} fsync + {hops} hop)"),
            ratio: Some(l99 / p99),
            target: target.into(),
            met: (ms > 0.0).then_some(p99 < ms),
            command: command.clone(),
        }
    };
    Ok(vec![
        row("durable at agent (202)", &mut durable, 1.0, 0.0, "-", 0.0),
        row(
            "visible at collector (ack)",
            &mut visible,
            2.0,
            2.0,
            "p99 < 50 ms at 5k/s",
            if args.rate >= 5000.0 { 50.0 } else { 0.0 },
        ),
    ])
}
