//! `[[files]]` in the agent's config: a watched folder of WMS exports and how to read them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

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
