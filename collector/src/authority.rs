//! Source of truth per warehouse: which system's counts set on_hand, and what movements
//! from every other system do.
//!
//! The treatment of a movement is decided once, when it is first committed, from the config
//! in force, and stored beside it in the ledger; replays and recomputes read the stored
//! treatment, so a projection never depends on when a config change happened relative to a
//! recompute. Invariant: only an `Apply` count ever sets on_hand; a count from anyone else
//! is a `Conflict` (recorded, visible, no effect) or a reject. There is no "newest wins".

use std::collections::HashMap;

use serde::Deserialize;
use stocksync_common::{Movement, MovementKind};

use crate::merge::ReturnsTo;

/// Who is the source of truth for one warehouse, and what happens to everyone else.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LocationPolicy {
    pub warehouse: String,
    /// The authoritative source system (`wms`, `erp`, `scanner`, ...). Only its counts set
    /// on_hand. `None`: every source is authoritative (the open default).
    #[serde(default)]
    pub authority: Option<String>,
    /// What deltas from other sources do.
    #[serde(default)]
    pub other_sources: SourcePolicy,
    /// Where returns are held until inspected.
    #[serde(default)]
    pub returns_to: ReturnsPolicy,
}

impl LocationPolicy {
    /// The default for an unconfigured warehouse: no authority, so every source applies and
    /// every count is authoritative; returns are held in quality control.
    pub fn open(warehouse: &str) -> LocationPolicy {
        LocationPolicy {
            warehouse: warehouse.to_string(),
            authority: None,
            other_sources: SourcePolicy::Apply,
            returns_to: ReturnsPolicy::QualityControl,
        }
    }
}

/// Treatment of movements from a source that is not the location's authority.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SourcePolicy {
    /// Applied, marked provisional until the authority's next count confirms or corrects it.
    #[default]
    Apply,
    /// Recorded in the ledger and shown in history, with no effect on stock.
    Audit,
    /// Kept in the rejects queue (field `source`), no effect on stock.
    Reject,
}

/// Where returns land at a location.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReturnsPolicy {
    #[default]
    QualityControl,
    Available,
}

/// What a movement does to the projection, as decided by its location's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Treatment {
    /// From the authority (or from anyone where no authority is configured): full effect.
    Apply,
    /// A delta from another source under policy `apply`: full effect, marked provisional.
    Provisional,
    /// A delta from another source under policy `audit`: kept and shown, no effect.
    Audit,
    /// From another source under policy `reject`: kept in the ledger and the rejects queue.
    Rejected,
    /// A count from a source that is not the authority: a conflict record, no effect.
    Conflict,
    /// Cancelled by an operator (`POST /v1/movements/void`, see `void`): kept and shown
    /// with who voided it and why, no effect.
    Voided,
}

impl Treatment {
    /// The name stored in the ledger's `treatment` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Treatment::Apply => "apply",
            Treatment::Provisional => "provisional",
            Treatment::Audit => "audit",
            Treatment::Rejected => "rejected",
            Treatment::Conflict => "conflict",
            Treatment::Voided => "voided",
        }
    }

    /// Reads a stored treatment; unknown names (a newer collector's) are treated as audit.
    pub fn parse(s: &str) -> Treatment {
        match s {
            "apply" => Treatment::Apply,
            "provisional" => Treatment::Provisional,
            "rejected" => Treatment::Rejected,
            "conflict" => Treatment::Conflict,
            "voided" => Treatment::Voided,
            _ => Treatment::Audit,
        }
    }

    /// True if the movement changes stock (a conflict count is evaluated, never applied).
    pub fn has_effect(self) -> bool {
        matches!(self, Treatment::Apply | Treatment::Provisional)
    }
}

/// The configured policies, by warehouse.
#[derive(Debug, Clone, Default)]
pub struct Authority {
    policies: HashMap<String, LocationPolicy>,
}

impl Authority {
    /// Policies from the collector's `[[locations]]`.
    pub fn new(locations: &[LocationPolicy]) -> Authority {
        Authority {
            policies: locations
                .iter()
                .map(|p| (p.warehouse.clone(), p.clone()))
                .collect(),
        }
    }

    /// The policy of `warehouse`, or the open default.
    pub fn policy(&self, warehouse: &str) -> LocationPolicy {
        self.policies
            .get(warehouse)
            .cloned()
            .unwrap_or_else(|| LocationPolicy::open(warehouse))
    }

    /// How a new movement is treated at its location.
    pub fn treat(&self, m: &Movement) -> Treatment {
        let policy = self.policy(&m.location.warehouse);
        match &policy.authority {
            None => Treatment::Apply,
            Some(a) if *a == m.source => Treatment::Apply,
            Some(_) => match (policy.other_sources, &m.kind) {
                (SourcePolicy::Reject, _) => Treatment::Rejected,
                (_, MovementKind::Count) => Treatment::Conflict,
                (SourcePolicy::Apply, _) => Treatment::Provisional,
                (SourcePolicy::Audit, _) => Treatment::Audit,
            },
        }
    }

    /// Why a movement was rejected, for the rejects queue.
    pub fn reject_reason(&self, agent_id: &str, m: &Movement) -> String {
        let policy = self.policy(&m.location.warehouse);
        format!(
            "agent `{agent_id}` seq {}: field source: `{}` is not the authority (`{}`) of warehouse `{}`, whose policy for other sources is reject",
            m.seq,
            m.source,
            policy.authority.unwrap_or_default(),
            m.location.warehouse
        )
    }

    /// Where returns land at `warehouse`.
    pub fn returns_to(&self, warehouse: &str) -> ReturnsTo {
        match self.policy(warehouse).returns_to {
            ReturnsPolicy::QualityControl => ReturnsTo::QualityControl,
            ReturnsPolicy::Available => ReturnsTo::Available,
        }
    }
}

/// The stored name of a returns destination.
pub fn returns_to_str(r: ReturnsTo) -> &'static str {
    match r {
        ReturnsTo::QualityControl => "quality_control",
        ReturnsTo::Available => "available",
    }
}

/// Reads a stored returns destination.
pub fn parse_returns_to(s: &str) -> ReturnsTo {
    if s == "available" {
        ReturnsTo::Available
    } else {
        ReturnsTo::QualityControl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksync_common::model::*;

    fn mv(source: &str, kind: MovementKind) -> Movement {
        Movement {
            seq: 1,
            sku: Sku("S".into()),
            location: Location {
                warehouse: "ams".into(),
                bin: None,
            },
            source: source.into(),
            kind,
            quantity: 1,
            unit: "each".into(),
            unit_quantity: 1,
            occurred_at: OccurredAt {
                unix_ms: 0,
                offset_seconds: 0,
            },
            references: References::default(),
            external_id: None,
            note: None,
            origin: Default::default(),
        }
    }

    fn authority(other: SourcePolicy) -> Authority {
        Authority::new(&[LocationPolicy {
            warehouse: "ams".into(),
            authority: Some("wms".into()),
            other_sources: other,
            returns_to: ReturnsPolicy::Available,
        }])
    }

    #[test]
    fn only_the_authority_counts() {
        let a = authority(SourcePolicy::Apply);
        assert_eq!(a.treat(&mv("wms", MovementKind::Count)), Treatment::Apply);
        assert_eq!(
            a.treat(&mv("scanner", MovementKind::Count)),
            Treatment::Conflict
        );
        assert_eq!(
            a.treat(&mv("scanner", MovementKind::Receipt)),
            Treatment::Provisional
        );
        let audit = authority(SourcePolicy::Audit);
        assert_eq!(
            audit.treat(&mv("erp", MovementKind::Receipt)),
            Treatment::Audit
        );
        let reject = authority(SourcePolicy::Reject);
        assert_eq!(
            reject.treat(&mv("erp", MovementKind::Count)),
            Treatment::Rejected
        );
        assert_eq!(a.returns_to("ams"), ReturnsTo::Available);
    }

    #[test]
    fn an_unconfigured_warehouse_is_open() {
        let a = Authority::default();
        let mut m = mv("anyone", MovementKind::Count);
        m.location.warehouse = "ber".into();
        assert_eq!(a.treat(&m), Treatment::Apply);
        assert_eq!(a.returns_to("ber"), ReturnsTo::QualityControl);
    }
}
