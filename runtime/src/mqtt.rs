//! One place that turns a `BrokerConfig` into rumqttc options, so the agent's forwarder,
//! its scanner input and the collector connect the same way (credentials, keep-alive,
//! payload limit, TCP_NODELAY, TLS).

use std::time::Duration;

use stocksync_common::config::{BrokerConfig, ConfigError};

/// Largest packet we publish, and the broker's `max_packet_size` in the shipped
/// `deploy/mosquitto.conf` (and the embedded broker's limit): the agent cuts its batches to
/// fit, and the collector refuses (rejects queue) any movements payload above it.
pub const MAX_PACKET_BYTES: usize = 1 << 20;

/// Largest packet we read. Larger than [`MAX_PACKET_BYTES`] on purpose: a client that meets
/// a packet above its limit drops the connection without a PUBACK, the broker redelivers the
/// same message on reconnect, and the link is wedged for good. Reading it instead lets the
/// consumer refuse it visibly. Only a broker configured above this (Mosquitto's default is
/// 256 MiB: set `max_packet_size`) can still wedge a link.
pub const MAX_INCOMING_BYTES: usize = 16 << 20;

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
    opts.set_max_packet_size(MAX_INCOMING_BYTES, MAX_PACKET_BYTES);
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

/// A connection error as an operator should read it; a refused login names the broker's reason.
pub fn describe(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectReturnCode as Code;
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            let why = match code {
                Code::BadUserNamePassword => "bad user name or password",
                Code::NotAuthorized => "not authorized",
                Code::BadClientId => "client id refused",
                Code::RefusedProtocolVersion => "protocol version refused",
                Code::ServiceUnavailable => "service unavailable",
                Code::Success => "success",
            };
            format!("broker refused the login: {why}")
        }
        other => other.to_string(),
    }
}

/// Remembers a link's last error so that each new one is logged once, not every retry.
#[derive(Default)]
pub struct LinkErrors {
    last: Option<String>,
}

impl LinkErrors {
    /// The error's text, and whether it differs from the previous one (then log it).
    pub fn record(&mut self, e: &rumqttc::ConnectionError) -> (String, bool) {
        let text = describe(e);
        let new = self.last.as_deref() != Some(text.as_str());
        self.last = Some(text.clone());
        (text, new)
    }

    /// The link is up again: the next error is new.
    pub fn clear(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_login_names_the_reason_and_is_logged_once() {
        let refused = || {
            rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::BadUserNamePassword,
            )
        };
        let mut errors = LinkErrors::default();
        let (text, new) = errors.record(&refused());
        assert_eq!(text, "broker refused the login: bad user name or password");
        assert!(new);
        assert!(
            !errors.record(&refused()).1,
            "the same error again is not new"
        );
        errors.clear();
        assert!(errors.record(&refused()).1);
    }
}
