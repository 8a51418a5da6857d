//! Figure: latency from POST at the agent to durable at the agent (the 202) and to visible in
//! the collector's stock, at a fixed offered load, coordinated-omission safe.
//!
//! Requests are sent open-loop (see `wire_client::open_loop`) and every latency is measured from the
//! request's due time. "Visible" is observed with an MQTT probe on the agent's ack topic: the
//! collector publishes the ack only after the transaction that updated `stock` is on disk,
//! so the ack's arrival is an upper bound of the moment the stock API shows the movement.
//! "Published on a channel" is observed on the channel's retained MQTT topics: movement k of
//! a SKU (in journal order) is published when a value >= k for that SKU arrives.
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
    /// The collector's store: SQLite, or one worker on a PostgreSQL server of its own
    /// (channels published from the outbox by the publisher lease holder).
    #[arg(long, value_enum, default_value = "sqlite")]
    pub backend: Backend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The collector TOML beyond the broker: the channel, and `[store]` on PostgreSQL.
fn collector_extra(
    args: &LatencyArgs,
    dir: &TempDir,
) -> anyhow::Result<(String, Option<crate::postgres::Server>)> {
    let channel = crate::stack::MQTT_CHANNEL;
    if args.backend == Backend::Sqlite {
        return Ok((channel.to_string(), None));
    }
    let server = crate::postgres::Server::start(dir)?;
    tokio::runtime::Runtime::new()?.block_on(server.create("bench_latency"))?;
    let store = format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\nworker_id = \"w1\"\nlease_secs = 3\nwarehouses = [\"ams\"]\n",
        server.url("bench_latency")
    );
    Ok((format!("{store}{channel}"), Some(server)))
}

/// An ack as the probe saw it.
struct SeenAck {
    at: Instant,
    first: u64,
    last: u64,
}

/// A client subscribed to `filter` on the broker at `port`, once the SUBACK is in.
async fn subscribed(
    port: u16,
    client_id: &str,
    filter: &str,
    qos: QoS,
) -> anyhow::Result<(AsyncClient, rumqttc::EventLoop)> {
    let config = BrokerConfig {
        host: "127.0.0.1".into(),
        port,
        ..Default::default()
    };
    let opts = stocksync_runtime::mqtt::options(&config, client_id, true)?;
    let (client, mut events) = AsyncClient::new(opts, 64);
    client.subscribe(filter, qos).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = events.poll().await? {
            return Ok((client, events));
        }
    }
}

async fn ack_probe(port: u16) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<SeenAck>> {
    let acks = topics::acks("ams", "a1");
    let (client, mut events) = subscribed(port, "bench-ack-probe", &acks, QoS::AtLeastOnce).await?;
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

/// Sellable values as a channel subscriber sees them: `(arrival, sku, value)`.
async fn channel_probe(
    port: u16,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedReceiver<(Instant, String, u64)>> {
    let filter = "stocksync/v1/channels/web/sellable/+";
    let (client, mut events) =
        subscribed(port, "bench-channel-probe", filter, QoS::AtMostOnce).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _client = client;
        while let Ok(e) = events.poll().await {
            if let Event::Incoming(Packet::Publish(p)) = e {
                let at = Instant::now();
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&p.payload) {
                    let sku = v["sku"].as_str().unwrap_or_default().to_string();
                    let _ = tx.send((at, sku, v["sellable"].as_u64().unwrap_or(0)));
                }
            }
        }
    });
    Ok(rx)
}

/// When the collector's ack covering `s` reached the probe (`seen` sorted by first seq).
fn acked_at_of(seen: &[SeenAck], s: &load::Sent) -> anyhow::Result<Instant> {
    let i = seen.partition_point(|a| a.first <= s.first_seq);
    i.checked_sub(1)
        .map(|i| &seen[i])
        .filter(|a| a.last >= s.first_seq)
        .map(|a| a.at)
        .ok_or_else(|| anyhow::anyhow!("seq {} never acknowledged", s.first_seq))
}

pub fn run(args: &LatencyArgs) -> anyhow::Result<Vec<Row>> {
    let dir = TempDir::new("latency")?;
    let broker = Broker::start(args.broker, free_port(), &dir)?;
    let (extra, _postgres) = collector_extra(args, &dir)?;
    let stack = Stack::start_with(&dir, broker.port, Some(&extra))?;
    wait_until("agent to connect", Duration::from_secs(10), || {
        Ok(load::agent_status(&client(), &stack.agent_url)?["broker"] == "connected")
    })?;
    let mut acks = stack.rt.block_on(ack_probe(broker.port))?;
    let mut values = stack.rt.block_on(channel_probe(broker.port))?;
    let n = (args.rate * args.seconds).ceil() as usize;
    let threads = ((args.rate / 100.0) as usize).clamp(4, 64);
    const SKUS: usize = 1000;
    let bodies = load::receipt_bodies(n, 1, SKUS);
    let agent: std::net::SocketAddr = stack.agent_url.trim_start_matches("http://").parse()?;
    let (sent, client_cpu) =
        crate::wire_client::open_loop(agent, "/v1/movements", bodies, args.rate, threads)?;
    eprintln!(
        "load generator: {threads} connections on one thread, {:.0}% of a core",
        100.0 * client_cpu.as_secs_f64() / args.seconds
    );
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
    // Every SKU's final value is its number of movements; wait until each was published.
    let mut published: Vec<Vec<(Instant, u64)>> = vec![Vec::new(); SKUS];
    let want = |sku: usize| (n / SKUS + usize::from(sku < n % SKUS)) as u64;
    let mut complete = 0;
    while complete < SKUS.min(n) {
        let left = deadline.saturating_duration_since(Instant::now());
        let (at, sku, value) = stack
            .rt
            .block_on(async { tokio::time::timeout(left, values.recv()).await })?
            .ok_or_else(|| anyhow::anyhow!("channel probe stopped"))?;
        let Some(i) = sku
            .strip_prefix("SKU-")
            .and_then(|i| i.parse::<usize>().ok())
        else {
            continue;
        };
        let before = published[i].last().map_or(0, |p| p.1);
        if value > before {
            published[i].push((at, value));
            if before < want(i) && value >= want(i) {
                complete += 1;
            }
        }
    }
    stack.stop()?;
    seen.sort_by_key(|a| a.first);
    let (mut durable, mut visible) = (Samples::default(), Samples::default());
    // Movement k of a SKU, in journal (seq) order, is in the first value >= k.
    let mut channel = Samples::default();
    // Where the time goes, per movement: 202 -> collector ack, ack -> channel value.
    let (mut forward, mut publish) = (Samples::default(), Samples::default());
    let mut order: Vec<&load::Sent> = sent.iter().collect();
    order.sort_by_key(|s| s.first_seq);
    let mut kth = vec![0u64; SKUS];
    for s in order {
        let (i, sku) = (s.index, s.index % SKUS);
        kth[sku] += 1;
        let at = published[sku]
            .iter()
            .find(|(_, v)| *v >= kth[sku])
            .map(|(at, _)| *at)
            .ok_or_else(|| anyhow::anyhow!("movement {i} (sku {sku}) never published"))?;
        channel.push(at.saturating_duration_since(s.due));
        publish.push(at.saturating_duration_since(acked_at_of(&seen, s)?));
    }
    for s in &sent {
        durable.push(s.answered - s.due);
        let acked = acked_at_of(&seen, s)?;
        visible.push(acked.saturating_duration_since(s.due));
        forward.push(acked.saturating_duration_since(s.answered));
    }
    eprintln!(
        "stages p50/p99: 202 -> ack {:.1}/{:.1} ms, ack -> channel {:.1}/{:.1} ms",
        forward.quantile_ms(0.5),
        forward.quantile_ms(0.99),
        publish.quantile_ms(0.5),
        publish.quantile_ms(0.99)
    );
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
    let (command, on) = match args.backend {
        Backend::Sqlite => (
            format!(
                "stocksync-bench latency --rate {} --broker {name}",
                args.rate
            ),
            String::new(),
        ),
        Backend::Postgres => (
            format!(
                "stocksync-bench latency --rate {} --broker {name} --backend postgres",
                args.rate
            ),
            ", postgres".to_string(),
        ),
    };
    let mut row = |what: &str, s: &mut Samples, fsyncs: f64, hops: f64, target: &str, ms: f64| {
        let (l50, l99) = (
            limit(0.5, fsyncs, hops, &mut fsync, &mut hop),
            limit(0.99, fsyncs, hops, &mut fsync, &mut hop),
        );
        let p99 = s.quantile_ms(0.99);
        Row {
            figure: format!("latency POST -> {what} at {} movements/s{on}", args.rate),
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
            "-",
            0.0,
        ),
        row(
            "published on a channel (MQTT retained)",
            &mut channel,
            2.0,
            3.0,
            "p99 < 50 ms at 5k/s",
            if args.rate >= 5000.0 { 50.0 } else { 0.0 },
        ),
    ])
}
