//! One place that turns a `BrokerConfig` into rumqttc options, so the agent's forwarder,
//! its scanner input and the collector connect the same way (credentials, keep-alive,
//! payload limit, TCP_NODELAY, TLS).

use std::time::Duration;

use crate::config::{BrokerConfig, ConfigError};

/// Largest packet we send or accept: a full batch with headroom.
pub const MAX_PACKET_BYTES: usize = 1 << 20;

/// Client options for `config`, with `default_client_id` when the config names none.
pub fn options(
    config: &BrokerConfig,
    default_client_id: &str,
    clean_session: bool,
) -> Result<rumqttc::MqttOptions, ConfigError> {
    let client_id = config
        .client_id
        .clone()
        .unwrap_or_else(|| default_client_id.to_string());
    let mut opts = rumqttc::MqttOptions::new(client_id, config.host.clone(), config.port);
    opts.set_keep_alive(Duration::from_secs(config.keep_alive_secs.max(5)));
    opts.set_clean_session(clean_session);
    opts.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    if let Some((user, password)) = config.credentials()? {
        opts.set_credentials(user, password);
    }
    if let Some(tls) = &config.tls {
        let client_cert = match (&tls.client_cert_file, &tls.client_key_file) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            (Some(path), None) | (None, Some(path)) => {
                return Err(ConfigError::Tls {
                    path: path.clone(),
                    detail: "client_cert_file and client_key_file go together".into(),
                })
            }
        };
        let client =
            crate::tls::client_config(&tls.ca_file, client_cert).map_err(|e| ConfigError::Tls {
                path: e.path,
                detail: e.detail,
            })?;
        opts.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(client),
        ));
    }
    Ok(opts)
}

/// Socket options for every stocksync MQTT connection. TCP_NODELAY: batches, acks and PUBACKs
/// are small writes, and with Nagle's algorithm a second one waits for the peer's delayed
/// ACK (up to 40 ms on Linux) -- measured as ~80 ms median ack latency at 1k movements/s.
pub fn network_options() -> rumqttc::NetworkOptions {
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    net
}
