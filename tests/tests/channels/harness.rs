//! Helpers for the channel suites: a collector with an embedded broker and agents, all
//! in-process on ephemeral 127.0.0.1 ports, temp dirs that clean up, and waits with a
//! deadline. Temp dirs and ports come from `tests/support`.

// Shared by several suites; each uses a subset.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use stocksync_agent::config::AgentConfig;
use stocksync_agent::Agent;
use stocksync_collector::config::CollectorConfig;
use stocksync_collector::Collector;

pub use crate::support::{free_port, TempDir};

/// Polls `check` every 20 ms until it returns `Some`, or fails after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A collector with an embedded broker; `channels_toml` is appended to its config.
pub async fn collector(dir: &TempDir, channels_toml: &str) -> Collector {
    let port = free_port();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:0\"\n[ledger]\npath = \"{}\"\n[embedded_broker]\nlisten = \"127.0.0.1:{port}\"\n{channels_toml}",
        dir.join("ledger.db").display()
    );
    let config: CollectorConfig = toml::from_str(&text).expect("collector config");
    Collector::start(config).await.expect("collector starts")
}

/// An agent for `warehouse` connected to `collector`'s broker.
pub async fn agent(dir: &TempDir, collector: &Collector, warehouse: &str) -> Agent {
    let text = format!(
        "agent_id = \"{warehouse}-1\"\nwarehouse = \"{warehouse}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[journal]\npath = \"{}\"\n[broker]\nhost = \"{}\"\nport = {}\n[forward]\nack_timeout_ms = 1000\n",
        dir.join(&format!("{warehouse}-journal.db")).display(),
        collector.broker.host,
        collector.broker.port
    );
    let config: AgentConfig = toml::from_str(&text).expect("agent config");
    Agent::start(config).await.expect("agent starts")
}

/// POSTs one movement (JSON) to an agent.
pub async fn post_movement(agent: &Agent, movement: serde_json::Value) {
    let url = format!("http://{}/v1/movements", agent.http_addr);
    let status = tokio::task::spawn_blocking(move || {
        ureq::post(&url)
            .send_json(&movement)
            .map(|r| r.status().as_u16())
    })
    .await
    .expect("join")
    .expect("agent accepts the movement");
    assert_eq!(status, 202);
}

/// GETs JSON from `url`.
pub async fn get_json(url: String) -> serde_json::Value {
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("GET")
            .body_mut()
            .read_json::<serde_json::Value>()
            .expect("JSON")
    })
    .await
    .expect("join")
}

/// GETs `url` as text.
pub async fn get_text(url: String) -> String {
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("GET")
            .body_mut()
            .read_to_string()
            .expect("text")
    })
    .await
    .expect("join")
}

/// PUTs JSON to `url` and returns the status.
pub async fn put_json(url: String, body: serde_json::Value) -> u16 {
    tokio::task::spawn_blocking(move || {
        ureq::put(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .send_json(&body)
            .expect("PUT")
            .status()
            .as_u16()
    })
    .await
    .expect("join")
}

/// The channel's feed as `{channel sku: sellable}`.
pub async fn feed(collector: &Collector, channel: &str) -> std::collections::BTreeMap<String, u64> {
    let v = get_json(format!(
        "http://{}/v1/channels/{channel}/sellable",
        collector.http_addr
    ))
    .await;
    v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["sku"].as_str().unwrap().to_string(),
                i["sellable"].as_u64().unwrap(),
            )
        })
        .collect()
}

pub use crate::support::backend::Backend;
use crate::support::backend::{CollectorSpec, Collectors};

/// The warehouses a PostgreSQL worker of the channel suites shares out.
const PG_WAREHOUSES: [&str; 3] = ["ams", "rtm", "ber"];

/// A collector in this process on either backend (`support::backend`: one SQLite collector,
/// or one worker on its own PostgreSQL server) with a broker of the suite's kind; derefs to
/// the collector.
pub struct Stack {
    pub sides: Collectors,
    _broker: crate::support::Broker,
}

impl std::ops::Deref for Stack {
    type Target = Collector;
    fn deref(&self) -> &Collector {
        &self.sides.in_process()[0]
    }
}

impl Stack {
    /// `channels_toml` on `backend`; `None` when it is PostgreSQL and that is not
    /// installed (the notice is printed).
    pub async fn start(backend: Backend, dir: &TempDir, channels_toml: &str) -> Option<Stack> {
        let broker = crate::support::Broker::start(dir);
        let sides = CollectorSpec::new(backend, dir, broker.port)
            .extra(channels_toml)
            .warehouses(&PG_WAREHOUSES)
            .workers(1)
            .start_in_process()
            .await?;
        Some(Stack {
            sides,
            _broker: broker,
        })
    }

    /// Stops the collector and starts it again on the same store (and broker).
    pub async fn restart(mut self) -> Stack {
        self.sides.stop_all().await;
        self.sides.start_all().await;
        self
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.sides.stop().await;
        Ok(())
    }
}

/// Reads Server-Sent Events from `url` on a thread: `(id, data)` per event, until the
/// stream ends or `within` passes.
pub fn sse_events(
    url: String,
    last_event_id: Option<String>,
    within: Duration,
) -> std::sync::mpsc::Receiver<(String, serde_json::Value)> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(within))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(id) = &last_event_id {
            req = req.header("last-event-id", id);
        }
        let Ok(resp) = req.call() else { return };
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        let (mut id, mut data) = (String::new(), String::new());
        for line in reader.lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim());
            } else if line.is_empty() && !data.is_empty() {
                let value = serde_json::from_str(&data).expect("event data is JSON");
                if tx.send((std::mem::take(&mut id), value)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    rx
}
