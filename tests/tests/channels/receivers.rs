//! Real receivers for channel targets: an axum webhook endpoint that checks signatures and
//! bearer tokens and can be told to answer 429, and an MQTT subscriber that keeps the last
//! message per topic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use rumqttc::{AsyncClient, Event, Packet, QoS};
use serde_json::Value;
use sha2::Sha256;
use stocksync_common::config::BrokerConfig;

use super::harness::wait_for;

#[derive(Default)]
struct HookState {
    secret: Vec<u8>,
    token: Mutex<String>,
    answer_429: AtomicU32,
    bad_signatures: AtomicU32,
    statuses: Mutex<Vec<u16>>,
    /// Latest item per channel SKU.
    values: Mutex<BTreeMap<String, Value>>,
}

/// A webhook receiver on 127.0.0.1.
pub struct Webhook {
    pub addr: SocketAddr,
    state: Arc<HookState>,
    server: tokio::task::JoinHandle<()>,
}

fn check_signature(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (
        headers
            .get("x-stocksync-timestamp")
            .and_then(|v| v.to_str().ok()),
        headers
            .get("x-stocksync-signature")
            .and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Some(hex) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == hex
}

async fn receive(
    State(s): State<Arc<HookState>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let status = if !check_signature(&s.secret, &headers, &body) {
        s.bad_signatures.fetch_add(1, Ordering::SeqCst);
        StatusCode::BAD_REQUEST
    } else if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {}", s.token.lock().unwrap()))
    {
        StatusCode::UNAUTHORIZED
    } else if s
        .answer_429
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        let v: Value = serde_json::from_slice(&body).unwrap();
        let mut values = s.values.lock().unwrap();
        for item in v["items"].as_array().unwrap() {
            values.insert(item["sku"].as_str().unwrap().to_string(), item.clone());
        }
        StatusCode::OK
    };
    s.statuses.lock().unwrap().push(status.as_u16());
    if status == StatusCode::TOO_MANY_REQUESTS {
        return (status, [("retry-after", "1")]).into_response();
    }
    status.into_response()
}

impl Webhook {
    pub async fn start(secret: &[u8], token: &str) -> Webhook {
        Webhook::start_with(secret, token, None).await
    }

    /// The same receiver behind HTTPS, presenting the certificate in `tls` (PEM files).
    #[allow(dead_code)] // used by tls_e2e, not by every suite including this module
    pub async fn start_tls(
        secret: &[u8],
        token: &str,
        tls: &stocksync_runtime::server::HttpTlsConfig,
    ) -> Webhook {
        Webhook::start_with(secret, token, Some(tls)).await
    }

    async fn start_with(
        secret: &[u8],
        token: &str,
        tls: Option<&stocksync_runtime::server::HttpTlsConfig>,
    ) -> Webhook {
        let state = Arc::new(HookState {
            secret: secret.to_vec(),
            token: Mutex::new(token.into()),
            ..HookState::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/stock", post(receive))
            .with_state(state.clone());
        let server = match tls {
            None => tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            }),
            Some(tls) => {
                let server =
                    stocksync_runtime::server::Server::new(listener, Some(tls), Default::default())
                        .expect("test certificate loads");
                tokio::spawn(async move {
                    let (_keep, stop) = tokio::sync::watch::channel(false);
                    server.serve(app, stop).await.unwrap();
                })
            }
        };
        Webhook {
            addr,
            state,
            server,
        }
    }

    pub fn set_token(&self, token: &str) {
        *self.state.token.lock().unwrap() = token.into();
    }

    pub fn answer_429_times(&self, n: u32) {
        self.state.answer_429.store(n, Ordering::SeqCst);
    }

    pub fn bad_signatures(&self) -> u32 {
        self.state.bad_signatures.load(Ordering::SeqCst)
    }

    pub fn statuses(&self) -> Vec<u16> {
        self.state.statuses.lock().unwrap().clone()
    }

    /// Waits until the latest pushed value of each SKU is as given.
    pub async fn wait_values(&self, within: Duration, want: &[(&str, u64)]) {
        wait_for(&format!("webhook values {want:?}"), within, || async {
            let values = self.state.values.lock().unwrap();
            want.iter()
                .all(|(k, v)| values.get(*k).and_then(|i| i["sellable"].as_u64()) == Some(*v))
                .then_some(())
        })
        .await
    }

    pub fn stop(self) {
        self.server.abort();
    }
}

/// An MQTT subscriber keeping the last payload per channel SKU.
pub struct Mqtt {
    client: AsyncClient,
    values: Arc<Mutex<BTreeMap<String, Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mqtt {
    pub async fn subscribe(broker: &BrokerConfig, filter: &str) -> Mqtt {
        let id = format!("test-sub-{}", super::harness::free_port());
        let opts = rumqttc::MqttOptions::new(id, broker.host.clone(), broker.port);
        let (client, mut events) = AsyncClient::new(opts, 100);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let values = Arc::new(Mutex::new(BTreeMap::new()));
        let v = values.clone();
        let task = tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let item: Value = serde_json::from_slice(&p.payload).unwrap();
                        let sku = item["sku"].as_str().unwrap().to_string();
                        v.lock().unwrap().insert(sku, item);
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        Mqtt {
            client,
            values,
            task,
        }
    }

    /// Waits until each SKU's last message carries the given value; returns all messages.
    pub async fn wait_values(
        &self,
        within: Duration,
        want: &[(&str, u64)],
    ) -> BTreeMap<String, Value> {
        wait_for(&format!("MQTT values {want:?}"), within, || async {
            let values = self.values.lock().unwrap();
            want.iter()
                .all(|(k, v)| values.get(*k).and_then(|i| i["sellable"].as_u64()) == Some(*v))
                .then(|| values.clone())
        })
        .await
    }

    pub async fn stop(self) {
        let _ = self.client.disconnect().await;
        self.task.abort();
    }
}
