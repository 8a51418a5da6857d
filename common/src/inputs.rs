//! Config types of the agent's standard inputs: GS1 EPCIS 2.0 events and WMS file drops.
//!
//! They live in `common` only because the agent's config file is one `AgentConfig` type;
//! the code that reads them is `agent/src/ingest/epcis/` and `agent/src/ingest/files.rs`.
//! Each input names the `source` its movements are journaled under: the sender's identity
//! comes from which input it used, never from what a payload claims.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `[epcis]`: `POST /v1/epcis/events`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpcisConfig {
    /// Source system the events' movements are journaled under.
    pub source: String,
    /// Most events in one document.
    pub max_events: usize,
    /// Rules checked before the default bizStep x disposition table (first match wins).
    pub rules: Vec<EpcisRule>,
}

impl Default for EpcisConfig {
    fn default() -> Self {
        EpcisConfig {
            source: "epcis".into(),
            max_events: 1000,
            rules: Vec::new(),
        }
    }
}

/// One row of the bizStep x disposition table. Words are CBV bare words (`receiving`) or
/// full URIs for non-CBV vocabulary; an absent field matches anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EpcisRule {
    #[serde(default)]
    pub biz_step: Option<String>,
    #[serde(default)]
    pub disposition: Option<String>,
    /// `true`: only when the event carries a transfer reference; `false`: only without one.
    #[serde(default)]
    pub transfer: Option<bool>,
    pub kind: EpcisKind,
}

/// What an event matched by a rule becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpcisKind {
    Receipt,
    Shipment,
    Count,
    TransferOut,
    TransferIn,
    Return,
    Damage,
    WriteOff,
    InspectionAvailable,
    InspectionDamaged,
    /// No stock meaning: answered `ignored`.
    Ignore,
}

/// `[[files]]`: a watched folder of WMS exports.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The folder watched; `processed/` and `failed/` are created inside it.
    pub path: PathBuf,
    /// Source system the files' movements are journaled under.
    pub source: String,
    /// How often the folder is listed.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// A file is read only once its size and modification time stayed the same this long.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Our column name -> the header the WMS writes (`sku = "Article"`); unnamed columns
    /// are found by their own name. Header names compare case-insensitively.
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Most row errors written to a failed file's `.errors.csv`.
    #[serde(default = "default_max_errors")]
    pub max_errors: usize,
    /// What the files hold.
    #[serde(default)]
    pub format: FileFormat,
}

/// The content of a watched folder's files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// WMS CSV exports, each file journaled whole.
    #[default]
    Csv,
    /// EPCIS 2.0 JSON documents, processed per event like `POST /v1/epcis/events`.
    Epcis,
}

fn default_poll_ms() -> u64 {
    1000
}

fn default_settle_ms() -> u64 {
    2000
}

fn default_max_errors() -> usize {
    1000
}

#[cfg(test)]
mod tests {
    use crate::config::AgentConfig;

    #[test]
    fn the_deploy_example_reads_both_inputs() {
        let config: AgentConfig = toml::from_str(include_str!("../../deploy/agent.toml")).unwrap();
        assert_eq!(config.epcis.source, "epcis");
        assert_eq!(config.files[0].source, "wms");
        assert_eq!(config.files[0].columns["sku"], "Article");
    }
}
