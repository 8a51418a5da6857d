//! `[store]` in `collector.toml`: which backend keeps the ledger, and how a PostgreSQL
//! worker finds its database and its share of the warehouses.

use std::path::PathBuf;

use serde::Deserialize;

/// The backend.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// One process, the file at `[ledger] path`.
    #[default]
    Sqlite,
    /// Several workers on one PostgreSQL database.
    Postgres,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    pub backend: Backend,
    /// `postgres://user[:password]@host:port/db` (or a libpq key=value string).
    pub url: Option<String>,
    /// A file holding the URL (keeps the password out of the config file); wins over `url`.
    pub url_file: Option<PathBuf>,
    /// This worker's name, unique among the workers on one database.
    pub worker_id: Option<String>,
    /// How long a warehouse lease lasts without renewal; renewed every third of it.
    pub lease_secs: u64,
    /// Warehouses whose movements the workers share out, besides those of `[[locations]]`
    /// and the catalog's location aliases.
    pub warehouses: Vec<String>,
    /// Connections per worker.
    pub pool_size: usize,
    /// CA certificates (PEM) the database's certificate must chain to; set, every
    /// connection requires TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate and key (PEM) for servers that ask for one.
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: Backend::Sqlite,
            url: None,
            url_file: None,
            worker_id: None,
            lease_secs: 10,
            warehouses: Vec::new(),
            pool_size: 4,
            tls_ca_file: None,
            tls_client_cert_file: None,
            tls_client_key_file: None,
        }
    }
}

/// A `[store]` table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreConfigError {
    #[error("[store] {0}")]
    Invalid(String),
    #[error("[store] url_file {path}: {source}")]
    UrlFile {
        path: String,
        source: std::io::Error,
    },
}

impl StoreConfig {
    /// Reads `[store]` from the collector's config.
    pub fn from_table(table: &toml::Table) -> Result<StoreConfig, StoreConfigError> {
        let config: StoreConfig = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| StoreConfigError::Invalid(e.message().to_string()))?;
        if config.backend == Backend::Postgres {
            if config.url.is_none() && config.url_file.is_none() {
                return Err(StoreConfigError::Invalid(
                    "backend = \"postgres\" needs `url` or `url_file`".into(),
                ));
            }
            match config.worker_id.as_deref() {
                None | Some("") => {
                    return Err(StoreConfigError::Invalid(
                        "backend = \"postgres\" needs a `worker_id` unique among the workers"
                            .into(),
                    ))
                }
                Some(id) => stocksync_common::topics::check_level(id)
                    .map_err(|e| StoreConfigError::Invalid(format!("worker_id `{id}`: {e}")))?,
            }
            if config.tls_client_cert_file.is_some() != config.tls_client_key_file.is_some() {
                return Err(StoreConfigError::Invalid(
                    "tls_client_cert_file and tls_client_key_file go together".into(),
                ));
            }
            if config.tls_client_cert_file.is_some() && config.tls_ca_file.is_none() {
                return Err(StoreConfigError::Invalid(
                    "a client certificate needs tls_ca_file (TLS is on only with it)".into(),
                ));
            }
            if config.lease_secs < 3 {
                return Err(StoreConfigError::Invalid(
                    "lease_secs must be at least 3".into(),
                ));
            }
        }
        Ok(config)
    }

    /// The connection string: `url_file`'s content (trimmed), else `url`.
    pub fn url(&self) -> Result<String, StoreConfigError> {
        match &self.url_file {
            Some(path) => std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .map_err(|source| StoreConfigError::UrlFile {
                    path: path.display().to_string(),
                    source,
                }),
            None => Ok(self.url.clone().unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<StoreConfig, StoreConfigError> {
        StoreConfig::from_table(&toml::from_str(text).unwrap())
    }

    #[test]
    fn sqlite_is_the_default() {
        assert_eq!(parse("").unwrap().backend, Backend::Sqlite);
    }

    #[test]
    fn postgres_needs_a_url_and_a_worker_id() {
        assert!(parse("backend = \"postgres\"\nworker_id = \"w1\"").is_err());
        assert!(parse("backend = \"postgres\"\nurl = \"postgres://x\"").is_err());
        let ok =
            parse("backend = \"postgres\"\nurl = \"postgres://x\"\nworker_id = \"w1\"").unwrap();
        assert_eq!(ok.lease_secs, 10);
    }

    #[test]
    fn typos_are_refused() {
        assert!(parse("backend = \"postgres\"\nurll = \"x\"").is_err());
        assert!(parse("backend = \"mysql\"").is_err());
    }
}
