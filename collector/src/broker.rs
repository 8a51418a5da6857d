//! The embedded MQTT broker (rumqttd), so that a trial needs nothing but Rust.
//!
//! Production sites point the collector and agents at their own broker (Mosquitto with the
//! ACLs in `deploy/`); the embedded one is for trials, demos and tests. It has no ACLs and
//! binds where it is told, which should be loopback unless the operator knows otherwise.
//!
//! rumqttd is most of the collector's dependency tree, so it is behind the `embedded-broker`
//! feature: on for the demo, tools, tests and benches, off in a production build, where a
//! collector without `[broker]` refuses to start with a message saying so.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddedBrokerConfig {
    pub listen: SocketAddr,
    /// Largest MQTT payload the embedded broker accepts, in bytes.
    pub max_payload_bytes: usize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: "127.0.0.1:1883".parse().expect("valid"),
            max_payload_bytes: 1 << 20,
        }
    }
}

/// Errors starting the embedded broker.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("embedded broker failed to start: {0}")]
    Start(String),
    #[error("embedded broker did not accept connections on {0} within 5 s (port in use?)")]
    NotListening(SocketAddr),
    #[error("this collector was built without the embedded MQTT broker (cargo feature `embedded-broker`): configure an external broker in [broker] (see deploy/collector.toml), or build with `--features embedded-broker` for a trial")]
    NotBuilt,
}

/// Starts an embedded MQTT 3.1.1 broker on `listen` in background threads and waits until
/// it accepts connections. It runs until the process exits.
pub fn start_embedded(listen: SocketAddr, max_payload_bytes: usize) -> Result<(), BrokerError> {
    #[cfg(feature = "embedded-broker")]
    return rumqttd_broker::start(listen, max_payload_bytes);
    #[cfg(not(feature = "embedded-broker"))]
    {
        let _ = (listen, max_payload_bytes);
        Err(BrokerError::NotBuilt)
    }
}

#[cfg(feature = "embedded-broker")]
mod rumqttd_broker {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

    use super::BrokerError;

    pub(super) fn start(listen: SocketAddr, max_payload_bytes: usize) -> Result<(), BrokerError> {
        let server = ServerSettings {
            name: "stocksync-v4".into(),
            listen,
            tls: None,
            next_connection_delay_ms: 1,
            connections: ConnectionSettings {
                connection_timeout_ms: 60_000,
                max_payload_size: max_payload_bytes,
                max_inflight_count: 500,
                auth: None,
                external_auth: None,
                dynamic_filters: true,
            },
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: 10_010,
                max_outgoing_packet_count: 200,
                max_segment_size: 100 << 20,
                max_segment_count: 10,
                custom_segment: None,
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(HashMap::from([("1".to_string(), server)])),
            ..Default::default()
        };
        let mut broker = Broker::new(config);
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker stopped");
                }
            })
            .map_err(|e| BrokerError::Start(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if mqtt_handshake(listen).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(BrokerError::NotListening(listen))
    }

    /// A complete MQTT 3.1.1 CONNECT / CONNACK / DISCONNECT: proves the broker serves MQTT, and
    /// unlike a bare TCP connect it does not make the broker log a failed connection.
    fn mqtt_handshake(addr: SocketAddr) -> std::io::Result<()> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        let client_id = b"stocksync-readiness";
        let mut connect = vec![0x10, (12 + client_id.len()) as u8];
        connect.extend_from_slice(&[
            0,
            4,
            b'M',
            b'Q',
            b'T',
            b'T',
            4,
            0x02,
            0,
            10,
            0,
            client_id.len() as u8,
        ]);
        connect.extend_from_slice(client_id);
        stream.write_all(&connect)?;
        let mut connack = [0u8; 4];
        stream.read_exact(&mut connack)?;
        if connack[0] != 0x20 || connack[3] != 0 {
            return Err(std::io::Error::other(
                "broker refused the readiness connection",
            ));
        }
        stream.write_all(&[0xE0, 0x00])
    }
}
