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
