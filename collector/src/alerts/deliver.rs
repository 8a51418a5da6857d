//! Sending alert transitions: a signed JSON POST (`X-Stocksync-Timestamp`,
//! `X-Stocksync-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`, the
//! channel webhooks' scheme) and an MQTT message on `stocksync/v1/alerts/<rule>` (QoS 1).
//! Each destination is marked done separately, so a webhook outage never repeats the MQTT
//! message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::OperationsConfig;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use stocksync_common::config::BrokerConfig;
use tokio::sync::watch;

use super::state::Pending;
use crate::publish::webhook::signature;

struct Webhook {
    url: String,
    secret: Vec<u8>,
    agent: ureq::Agent,
}

/// The configured destinations.
pub struct Deliver {
    webhook: Option<Webhook>,
    mqtt: Option<(AsyncClient, Arc<AtomicBool>)>,
}

/// What one attempt achieved.
pub struct Outcome {
    pub webhook: bool,
    pub mqtt: bool,
    pub error: Option<String>,
}

impl Deliver {
    pub fn start(
        ops: &OperationsConfig,
        broker: &BrokerConfig,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Deliver> {
        Deliver::start_as(ops, broker, None, shutdown)
    }

    /// [`Deliver::start`] with the MQTT client id `client_id` (one per collector worker, so
    /// that workers on one broker do not take each other's session).
    pub fn start_as(
        ops: &OperationsConfig,
        broker: &BrokerConfig,
        client_id: Option<String>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Deliver> {
        let webhook = match &ops.webhook {
            None => None,
            Some(w) => {
                let secret = std::fs::read_to_string(&w.secret_file).map_err(|e| {
                    anyhow::anyhow!(
                        "operations.webhook.secret_file {}: {e}",
                        w.secret_file.display()
                    )
                })?;
                Some(Webhook {
                    url: w.url.clone(),
                    secret: secret.trim().as_bytes().to_vec(),
                    agent: ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(10)))
                        .build()
                        .into(),
                })
            }
        };
        let mqtt = if ops.mqtt {
            Some(connect(broker, client_id, shutdown)?)
        } else {
            None
        };
        Ok(Deliver { webhook, mqtt })
    }

    /// Sends `p` to every destination that has not taken it yet.
    pub async fn send(&mut self, p: &Pending) -> Outcome {
        let body = p.body.to_string().into_bytes();
        let mut out = Outcome {
            webhook: true,
            mqtt: true,
            error: None,
        };
        if let (Some(w), false) = (&self.webhook, p.webhook_done) {
            if let Err(e) = post(w, &body).await {
                out.webhook = false;
                out.error = Some(e);
            }
        }
        if let (Some((client, connected)), false) = (&self.mqtt, p.mqtt_done) {
            let topic = format!("{}/alerts/{}", stocksync_common::topics::PREFIX, p.rule);
            let queued = connected.load(Ordering::Relaxed)
                && client
                    .publish(topic, QoS::AtLeastOnce, false, body)
                    .await
                    .is_ok();
            if !queued {
                out.mqtt = false;
                out.error
                    .get_or_insert_with(|| "MQTT broker not connected".into());
            }
        }
        out
    }
}

async fn post(w: &Webhook, body: &[u8]) -> Result<(), String> {
    let ts = stocksync_common::OccurredAt::now().unix_ms / 1000;
    let headers = vec![
        ("x-stocksync-timestamp", ts.to_string()),
        (
            "x-stocksync-signature",
            format!("sha256={}", signature(&w.secret, ts, body)),
        ),
    ];
    let (agent, url, body) = (w.agent.clone(), w.url.clone(), body.to_vec());
    let status = tokio::task::spawn_blocking(move || {
        let mut req = agent.post(&url).header("content-type", "application/json");
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        req.send(&body[..])
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("POST {url}: {e}"))
    })
    .await
    .map_err(|e| format!("alert webhook task failed: {e}"))??;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("alert webhook answered {status}"))
    }
}

/// An MQTT client of its own, with a flag that says whether it is connected.
fn connect(
    broker: &BrokerConfig,
    client_id: Option<String>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(AsyncClient, Arc<AtomicBool>)> {
    let mut opts = stocksync_runtime::mqtt::options(broker, "stocksync-collector-alerts", true)?;
    match (client_id, &broker.client_id) {
        (Some(id), _) => opts.set_client_id(id),
        (None, Some(id)) => opts.set_client_id(format!("{id}-alerts")),
        (None, None) => &mut opts,
    };
    let (client, mut events) = AsyncClient::new(opts, 256);
    events.set_network_options(stocksync_runtime::mqtt::network_options());
    let connected = Arc::new(AtomicBool::new(false));
    let flag = connected.clone();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => return,
                e = events.poll() => e,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => flag.store(true, Ordering::Relaxed),
                Ok(_) => {}
                Err(_) => {
                    flag.store(false, Ordering::Relaxed);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => return,
                    }
                }
            }
        }
    });
    Ok((client, connected))
}
