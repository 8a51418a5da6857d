//! The agent's config file (`agent.toml`): the top-level table composed of each component's
//! own section, defined beside the component (`[http]` in `ingest::http`, `[journal]` in
//! `journal`, `[forward]` in `forward`, `[scanner]` in `ingest::scanner`, `[epcis]` in
//! `ingest::epcis`, `[[files]]` in `ingest::files`), plus the rules every input shares: the
//! sources an input may speak for and the clock check.

use serde::Deserialize;
use stocksync_common::config::BrokerConfig;

use crate::forward::ForwardConfig;
use crate::ingest::epcis::EpcisConfig;
use crate::ingest::files::FilesConfig;
use crate::ingest::http::AgentHttpConfig;
use crate::ingest::scanner::ScannerConfig;
use crate::journal::JournalConfig;

/// The agent's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Unique, stable id of this agent; with the journal seq it identifies every movement.
    pub agent_id: String,
    /// The warehouse this agent journals for.
    pub warehouse: String,
    #[serde(default)]
    pub http: AgentHttpConfig,
    #[serde(default)]
    pub journal: JournalConfig,
    /// The central broker the forwarder publishes to.
    #[serde(default)]
    pub broker: BrokerConfig,
    #[serde(default)]
    pub forward: ForwardConfig,
    /// Optional MQTT input from scanners on a (local) broker.
    #[serde(default)]
    pub scanner: Option<ScannerConfig>,
    /// How far ahead of the agent's clock an `occurred_at` may be.
    #[serde(default)]
    pub clock: ClockConfig,
    /// GS1 EPCIS 2.0 events over HTTP (`POST /v1/epcis/events`).
    #[serde(default)]
    pub epcis: EpcisConfig,
    /// Watched folders of WMS CSV exports.
    #[serde(default)]
    pub files: Vec<FilesConfig>,
}

/// The sources one input may speak for. Every input (HTTP listener, scanner topic, file
/// folder) has one: a record claiming a source outside it is refused, because identity
/// comes from how a record arrived, never from what its payload says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceBinding {
    /// Assumed for records that name no source; always one of `sources`.
    pub default_source: String,
    pub sources: Vec<String>,
}

impl SourceBinding {
    /// The binding of an input configured with `default_source` and `sources` (empty: only
    /// the default). `input` names the input in the error.
    pub fn new(input: &str, default_source: &str, sources: &[String]) -> Result<Self, String> {
        if sources.is_empty() {
            return Ok(SourceBinding {
                default_source: default_source.to_string(),
                sources: vec![default_source.to_string()],
            });
        }
        if !sources.iter().any(|s| s == default_source) {
            return Err(format!(
                "{input}: default_source `{default_source}` is not in its sources [{}]",
                sources.join(", ")
            ));
        }
        Ok(SourceBinding {
            default_source: default_source.to_string(),
            sources: sources.to_vec(),
        })
    }
}

/// What the agent does with an `occurred_at` ahead of its own clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AheadPolicy {
    /// Refuse the record (`422 $.occurred_at`, or the rejects queue on the scanner path).
    Refuse,
    /// Journal it at the receive time, with a note on the movement saying what was claimed.
    Clamp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockConfig {
    /// Largest accepted lead of `occurred_at` over the agent's clock, in seconds.
    pub max_ahead_secs: u64,
    pub on_ahead: AheadPolicy,
}

impl Default for ClockConfig {
    fn default() -> Self {
        ClockConfig {
            max_ahead_secs: 300,
            on_ahead: AheadPolicy::Refuse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_agent_config_uses_defaults() {
        let cfg: AgentConfig = toml::from_str("agent_id = \"a1\"\nwarehouse = \"ams\"\n").unwrap();
        assert_eq!(cfg.forward.batch_max, 2000);
        assert!(cfg.scanner.is_none());
    }

    #[test]
    fn typos_are_refused() {
        assert!(toml::from_str::<AgentConfig>(
            "agent_id = \"a\"\nwarehouse = \"w\"\nwarehous = 1\n"
        )
        .is_err());
    }

    #[test]
    fn the_deploy_example_reads_both_inputs() {
        let config: AgentConfig = toml::from_str(include_str!("../../deploy/agent.toml")).unwrap();
        assert_eq!(config.epcis.source, "epcis");
        assert_eq!(config.files[0].source, "wms");
        assert_eq!(config.files[0].columns["sku"], "Article");
    }
}
