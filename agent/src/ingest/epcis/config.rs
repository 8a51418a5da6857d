//! `[epcis]` in the agent's config: the source EPCIS events are journaled under and the
//! bizStep x disposition rules that say what an event means.

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
