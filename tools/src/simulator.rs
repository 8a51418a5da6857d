//! The scanner simulator: sends a [`Scenario`] to agents the way the floor does, as JSON on
//! scanner MQTT topics (QoS 1) and, for the "WMS" share, as `POST /v1/movements`.
//!
//! It is a client of the agent like any scanner or WMS, and uses only the agent's public
//! interfaces, so what it shows is what a real site gets. It paces itself at a fixed rate
//! and, when given a count, waits for the broker's PUBACK of every scanner message before it
//! disconnects, so "sent N" means the broker has N.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, Packet, QoS};
use stocksync_common::config::BrokerConfig;
use tokio::sync::watch;

use crate::scenario::{Message, Mix, Path, Purpose, Scenario};

/// Where one warehouse's messages go.
#[derive(Debug, Clone)]
pub struct Target {
    /// A label for output (the warehouse code).
    pub name: String,
    /// The scanner topic to publish on, e.g. `scanners/ams/gun-1/movements`.
    pub topic: String,
    /// The agent's base URL for the HTTP share, e.g. `http://127.0.0.1:8081`; without it every
    /// message goes over MQTT.
    pub http: Option<String>,
}

/// What to send, where and how fast.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The broker the scanners publish to.
    pub broker: BrokerConfig,
    pub targets: Vec<Target>,
    /// Messages per second (all targets together).
    pub rate_per_sec: f64,
    /// Stop after this many messages; run until shutdown without one.
    pub count: Option<u64>,
    pub skus: Vec<String>,
    pub mix: Mix,
    /// Seed of the scenario; the same seed sends the same stream.
    pub seed: u64,
}

/// Running totals, readable while the simulator runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Valid movements published on scanner topics (first sends).
    pub scanner: AtomicU64,
    /// Valid movements accepted over HTTP (202 or 200).
    pub http: AtomicU64,
    /// Scanner messages sent a second time with the same id.
    pub resent: AtomicU64,
    /// Deliberately invalid messages sent.
    pub invalid: AtomicU64,
    /// Sends that failed (HTTP error status or transport error, MQTT client error).
    pub failed: AtomicU64,
    /// PUBACKs received from the broker.
    pub pubacks: AtomicU64,
}

impl Stats {
    /// One line for people.
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "sent {} scanner + {} WMS/HTTP movements, {} resent duplicates, {} invalid; {} failed",
            get(&self.scanner),
            get(&self.http),
            get(&self.resent),
            get(&self.invalid),
            get(&self.failed),
        )
    }

    fn mqtt_published(&self) -> u64 {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        get(&self.scanner) + get(&self.resent) + get(&self.invalid)
    }
}

/// Sends until `count` is reached or `shutdown` turns true.
pub async fn run(
    config: SimConfig,
    stats: Arc<Stats>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    anyhow::ensure!(!config.targets.is_empty(), "no target to send to");
    anyhow::ensure!(!config.skus.is_empty(), "no SKU to send");
    anyhow::ensure!(config.rate_per_sec > 0.0, "rate must be positive");
    let client_id = format!("stocksync-scanner-sim-{}", std::process::id());
    let opts = stocksync_runtime::mqtt::options(&config.broker, &client_id, true)?;
    let (client, mut events) = AsyncClient::new(opts, 256);
    let poll_stats = stats.clone();
    let mut poll_shutdown = shutdown.clone();
    let poller = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = poll_shutdown.changed() => return,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    poll_stats.pubacks.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "scanner simulator cannot reach the broker; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    });

    let http = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut scenario = Scenario::new(
        config.seed,
        config.targets.len(),
        config.skus.clone(),
        config.mix,
    );
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate_per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while config.count.is_none_or(|c| sent < c) {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = tick.tick() => {}
        }
        let message = scenario.next_message();
        let target = &config.targets[message.target];
        match (&message.path, &target.http) {
            (Path::Http, Some(base)) => send_http(&http, base, message, &stats).await,
            _ => send_mqtt(&client, &target.topic, message, &stats).await,
        }
        sent += 1;
    }

    if config.count.is_some() {
        wait_for_pubacks(&stats, &shutdown).await;
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    Ok(())
}

async fn send_mqtt(client: &AsyncClient, topic: &str, message: Message, stats: &Stats) {
    let payload = serde_json::to_vec(&message.body).expect("JSON serialises");
    match client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
    {
        Ok(()) => {
            let counter = match message.purpose {
                Purpose::Movement => &stats.scanner,
                Purpose::Resend => &stats.resent,
                Purpose::Invalid => &stats.invalid,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, %topic, "scanner publish failed");
        }
    }
}

async fn send_http(http: &ureq::Agent, base: &str, message: Message, stats: &Stats) {
    let url = format!("{}/v1/movements", base.trim_end_matches('/'));
    let agent = http.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut request = agent.post(&url);
        if let Some(key) = &message.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let mut response = request.send_json(&message.body)?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Ok::<_, ureq::Error>((status, body))
    })
    .await;
    match result {
        Ok(Ok((200 | 202, _))) => {
            stats.http.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Ok((status, body))) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(status, %body, "agent refused a WMS request");
        }
        Ok(Err(e)) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "WMS request failed");
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "WMS request task failed");
        }
    }
}

/// Waits (up to 10 s) until the broker acknowledged every scanner message published.
async fn wait_for_pubacks(stats: &Stats, shutdown: &watch::Receiver<bool>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.pubacks.load(Ordering::Relaxed) < stats.mqtt_published() {
        if Instant::now() > deadline || *shutdown.borrow() {
            tracing::warn!(
                published = stats.mqtt_published(),
                acknowledged = stats.pubacks.load(Ordering::Relaxed),
                "not every scanner message was acknowledged by the broker"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A seed that differs between runs.
pub fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
