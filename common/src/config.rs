//! Loading config files, and the broker options both processes use to reach MQTT.
//!
//! Every field has a default that is safe for a single-machine trial; the annotated
//! examples in `deploy/` document each one for operators. Unknown keys are refused so that a
//! typo is an error at start-up, not a silently ignored setting. Each process's own config
//! types live beside the code that uses them (`stocksync_agent::config`,
//! `stocksync_collector::config`, the HTTP listener's in `stocksync_runtime::server`); only
//! what crosses a process boundary stays here.

use std::path::PathBuf;

use serde::Deserialize;

/// Failure to load a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot read password file {path}: {source}")]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS file {path}: {detail}")]
    Tls { path: PathBuf, detail: String },
}

/// An error and its causes on one line, each cause once: errors here carry their source in
/// their own message, so printing the chain as well would say everything twice.
pub fn error_report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Loads and parses a TOML config file.
pub fn load<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// How to reach an MQTT broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerConfig {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    /// File holding the password (kept out of the config so configs can be shared).
    pub password_file: Option<PathBuf>,
    /// MQTT client id; defaults to one derived from the agent id or `stocksync-collector`.
    pub client_id: Option<String>,
    pub keep_alive_secs: u64,
    /// `[broker.tls]`: connect over TLS. Without it the link is plain MQTT.
    pub tls: Option<MqttTlsConfig>,
}

/// TLS towards an MQTT broker: the CA to trust and, if the broker asks, a client certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM file of the CA(s) the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate (chain) this client presents; needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            host: "127.0.0.1".into(),
            port: 1883,
            username: None,
            password_file: None,
            client_id: None,
            keep_alive_secs: 15,
            tls: None,
        }
    }
}

impl BrokerConfig {
    /// Username and password, reading the password file if one is set.
    pub fn credentials(&self) -> Result<Option<(String, String)>, ConfigError> {
        let Some(user) = &self.username else {
            return Ok(None);
        };
        let password = match &self.password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Secret {
                    path: path.clone(),
                    source,
                })?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
            None => String::new(),
        };
        Ok(Some((user.clone(), password)))
    }
}
