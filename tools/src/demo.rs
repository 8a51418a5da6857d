//! The whole system in one process, for a first look on a machine that has only Rust.
//!
//! It wires the real components together through their public entry points: a collector
//! with its embedded broker, one agent per warehouse whose scanner input listens on that same
//! broker, and the scanner simulator feeding them. Nothing here is a shortcut around the
//! product: movements travel scanner -> agent journal -> broker -> collector ledger exactly as
//! in production, so the numbers the demo shows are the numbers the product computes.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use stocksync_agent::config::AgentConfig;
use stocksync_agent::ingest::scanner::ScannerConfig;
use stocksync_agent::Agent;
use stocksync_collector::config::CollectorConfig;
use stocksync_collector::Collector;
use stocksync_common::config::BrokerConfig;
use stocksync_common::topics;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::scenario::Mix;
use crate::simulator::{self, SimConfig, Stats, Target};

/// The demo's warehouses.
pub const WAREHOUSES: [&str; 2] = ["ams", "ber"];
/// The demo's SKUs.
pub const SKUS: [&str; 4] = ["MUG-001", "TEE-002", "CAP-003", "BAG-004"];
/// Eaches per case of every demo SKU.
pub const CASE: u64 = 12;
/// The demo's bundle: one mug and one T-shirt.
pub const BUNDLE: &str = "GIFT-SET";

/// The collector side of the demo: a catalog (so agents convert cases and refuse unknown
/// SKUs offline) and a source of truth for `ams` (its WMS), while `ber` has none, so both
/// ways of handling a disagreeing count are on show: a conflict in ams, drift in ber.
fn collector_config(options: &DemoOptions) -> anyhow::Result<CollectorConfig> {
    let skus: Vec<serde_json::Value> = SKUS
        .iter()
        .map(|id| serde_json::json!({"id": id, "packs": {"case": CASE}}))
        .collect();
    let mut config: CollectorConfig = serde_json::from_value(serde_json::json!({
        "catalog": {
            "skus": skus,
            "bundles": [{"sku": BUNDLE, "components": [
                {"sku": SKUS[0], "quantity": 1},
                {"sku": SKUS[1], "quantity": 1},
            ]}],
        },
        "locations": [{"warehouse": "ams", "authority": "wms", "other_sources": "apply"}],
        // A web shop selling from both warehouses with a small buffer, and the gift set.
        "channels": {"channel": [{
            "name": "web", "locations": ["*"], "safety_units": 2, "mqtt": true,
            "bundles": [BUNDLE],
        }]},
    }))?;
    config.http.listen = local(options.http_port);
    config.embedded_broker.listen = local(options.mqtt_port);
    config.ledger.path = options.data_dir.join("collector-ledger.db");
    Ok(config)
}

/// Where the demo listens and keeps its files.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Collector HTTP port; the agents take the next ports (`+1` for ams, `+2` for ber).
    pub http_port: u16,
    /// Embedded MQTT broker port.
    pub mqtt_port: u16,
    /// Ledger and journals live here.
    pub data_dir: PathBuf,
    /// Simulated movements per second.
    pub rate_per_sec: f64,
}

/// A running demo.
pub struct Demo {
    pub collector_url: String,
    /// `(warehouse, base URL)` of each agent.
    pub agent_urls: Vec<(String, String)>,
    pub stats: Arc<Stats>,
    collector: Collector,
    agents: Vec<Agent>,
    simulator: JoinHandle<anyhow::Result<()>>,
    shutdown: watch::Sender<bool>,
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Refuses to start on a port something else holds: the embedded broker's readiness check
/// would otherwise happily connect to a foreign broker already listening there.
fn ensure_free(port: u16, what: &str, flag: &str) -> anyhow::Result<()> {
    TcpListener::bind(local(port)).map(drop).map_err(|e| {
        anyhow::anyhow!("{what} port {port} is not free ({e}); pick another with {flag}")
    })
}

impl Demo {
    /// Starts the collector, the agents and the simulator.
    pub async fn start(options: DemoOptions) -> anyhow::Result<Demo> {
        let agent_ports: Vec<u16> = (1..=WAREHOUSES.len() as u16)
            .map(|i| options.http_port.saturating_add(i))
            .collect();
        ensure_free(options.mqtt_port, "MQTT", "--mqtt-port")?;
        ensure_free(options.http_port, "collector HTTP", "--http-port")?;
        for port in &agent_ports {
            ensure_free(*port, "agent HTTP", "--http-port")?;
        }
        std::fs::create_dir_all(&options.data_dir)?;

        let collector = Collector::start(collector_config(&options)?).await?;
        let broker = collector.broker.clone();

        let mut agents = Vec::new();
        let mut agent_urls = Vec::new();
        let mut targets = Vec::new();
        for (warehouse, port) in WAREHOUSES.iter().zip(&agent_ports) {
            let agent = Agent::start(agent_config(warehouse, *port, &broker, &options)?).await?;
            let url = format!("http://{}", agent.http_addr);
            targets.push(Target {
                name: warehouse.to_string(),
                topic: format!("scanners/{warehouse}/gun-1/movements"),
                http: Some(url.clone()),
            });
            agent_urls.push((warehouse.to_string(), url));
            agents.push(agent);
        }
        for (_, url) in &agent_urls {
            wait_until_forwarding(url).await?;
        }
        show_collector_rejects(&broker).await?;

        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(Stats::default());
        let sim = SimConfig {
            broker: broker.clone(),
            targets,
            rate_per_sec: options.rate_per_sec,
            count: None,
            skus: SKUS.iter().map(|s| s.to_string()).collect(),
            mix: Mix {
                case_size: Some(CASE),
                ..Mix::default()
            },
            seed: simulator::time_seed(),
        };
        let simulator = tokio::spawn(simulator::run(sim, stats.clone(), shutdown_rx));
        Ok(Demo {
            collector_url: format!("http://{}", collector.http_addr),
            agent_urls,
            stats,
            collector,
            agents,
            simulator,
            shutdown,
        })
    }

    /// What to look at, for people.
    pub fn guide(&self) -> String {
        let c = &self.collector_url;
        let row = |who: &str, url: String, what: &'static str| (who.to_string(), url, what);
        let mut rows = vec![
            row(
                "collector",
                format!("{c}/v1/stock/{}", SKUS[0]),
                "one SKU in every warehouse and bin",
            ),
            row(
                "",
                format!("{c}/v1/stock?location=ams"),
                "everything in Amsterdam",
            ),
            row(
                "",
                format!("{c}/v1/stock/{}/history?location=ber/A-01", SKUS[0]),
                "every movement, running stock",
            ),
            row(
                "",
                format!("{c}/v1/drift"),
                "ber counts that disagreed with the books",
            ),
            row(
                "",
                format!("{c}/v1/conflicts"),
                "ams scanner counts off the books (WMS is authority)",
            ),
            row(
                "",
                format!("{c}/v1/bundles/{BUNDLE}"),
                "gift sets buildable from components",
            ),
            row(
                "",
                format!("{c}/v1/rejects"),
                "payloads the collector kept aside",
            ),
            row(
                "",
                format!("{c}/v1/channels/web/sellable"),
                "what the web shop may sell (also MQTT, retained)",
            ),
            row(
                "",
                format!("{c}/v1/reservations?sku={}", SKUS[0]),
                "stock held for orders at checkout",
            ),
            row("", format!("{c}/metrics"), "counters for monitoring"),
        ];
        for (warehouse, url) in &self.agent_urls {
            rows.push((
                format!("agent {warehouse}"),
                format!("{url}/v1/status"),
                "backlog, broker link, last ack",
            ));
            rows.push((
                String::new(),
                format!("{url}/v1/rejects"),
                "refused scanner messages, by field",
            ));
        }
        let mut out = String::from("\nstocksync demo is running. Look at:\n");
        for (who, url, what) in rows {
            out.push_str(&format!("  {who:<10} {url:<66} {what}\n"));
        }
        let first = &self.agent_urls[0].1;
        out.push_str(&format!(
            "At start the demo published one payload of an unknown wire version (v9) on purpose:\n\
             the collector keeps it in its rejects queue instead of dropping it.\n\
             Add your own movement:\n  curl -X POST {first}/v1/movements -H 'content-type: application/json' \\\n\
             \x20      -d '{{\"sku\":\"{sku}\",\"kind\":\"receipt\",\"quantity\":5}}'\n\
             Hold 2 for an order at checkout (the web shop's number drops at once):\n  curl -X POST {c}/v1/reservations -H 'content-type: application/json' \\\n\
             \x20      -d '{{\"id\":\"r-1\",\"order\":\"WEB-1\",\"sku\":\"{sku}\",\"warehouse\":\"ams\",\"quantity\":2}}'\n\
             Ctrl-C stops everything.\n",
            sku = SKUS[0]
        ));
        out
    }

    /// True once the simulator stopped on its own (which only an error makes it do).
    pub fn simulator_finished(&self) -> bool {
        self.simulator.is_finished()
    }

    /// Stops the simulator, then the agents, then the collector, each letting in-flight work
    /// finish.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let sim = self.simulator.await;
        for agent in self.agents {
            agent.stop().await?;
        }
        self.collector.stop().await?;
        sim??;
        Ok(())
    }
}

fn agent_config(
    warehouse: &str,
    port: u16,
    broker: &BrokerConfig,
    options: &DemoOptions,
) -> anyhow::Result<AgentConfig> {
    let mut config: AgentConfig = serde_json::from_value(serde_json::json!({
        "agent_id": format!("{warehouse}-1"),
        "warehouse": warehouse,
    }))?;
    config.http.listen = local(port);
    config.journal.path = options.data_dir.join(format!("agent-{warehouse}.db"));
    config.broker = broker.clone();
    config.scanner = Some(ScannerConfig {
        broker: broker.clone(),
        topic: format!("scanners/{warehouse}/+/movements"),
        ..ScannerConfig::default()
    });
    Ok(config)
}

/// Waits until the agent reports its forwarder connected and the catalog received, so the
/// first scanner messages do not race the agent's subscriptions and cases are understood.
async fn wait_until_forwarding(base: &str) -> anyhow::Result<()> {
    let url = format!("{base}/v1/status");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let u = url.clone();
        let status = tokio::task::spawn_blocking(move || -> Option<serde_json::Value> {
            ureq::get(&u).call().ok()?.body_mut().read_json().ok()
        })
        .await?;
        if status.is_some_and(|s| s["broker"] == "connected" && s["catalog_skus"] == SKUS.len()) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "agent at {base} did not connect to the broker and receive the catalog within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes one payload of a wire version this build does not know (v9) on ams's movements
/// topic, as an agent from the future would. The collector keeps it in its rejects queue
/// instead of dropping it, which is what `GET /v1/rejects` then shows.
async fn show_collector_rejects(broker: &BrokerConfig) -> anyhow::Result<()> {
    let opts = stocksync_runtime::mqtt::options(broker, "stocksync-demo-future-agent", true)?;
    let (client, mut events) = AsyncClient::new(opts, 8);
    let payload = vec![9u8, 0xde, 0xad, 0xbe, 0xef];
    client
        .publish(topics::movements("ams"), QoS::AtLeastOnce, false, payload)
        .await?;
    let acked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    match acked {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!("broker did not acknowledge the demo's v9 payload within 10 s"),
    }
}
