//! What a movement must satisfy, at the collector, to enter the ledger: its time is not
//! too far ahead of the collector's own clock, and its SKU is in the collector's catalog.
//!
//! Agents check both too, but an agent with a wrong clock or without the catalog yet (it
//! journals while offline) cannot be trusted on either: a count dated 2030 would freeze a
//! bin until 2030, an unknown SKU would reach stock and channels. Such a movement goes to
//! the collector's rejects queue with the field at fault (`$.occurred_at`, `$.sku`); the
//! rest of its batch is applied and the batch is acknowledged, so nothing else waits for
//! it. It is not in the ledger, so it can be retried once the catalog knows the SKU
//! (`POST /v1/rejects/<id>/retry`), and counts exactly once if it then applies.

use std::collections::HashSet;

use stocksync_common::catalog::Catalog;
use stocksync_common::Movement;

/// Default for `[ledger] max_future_skew_secs`.
pub const DEFAULT_MAX_FUTURE_SKEW_SECS: u64 = 300;

/// The collector's own checks of each new movement.
#[derive(Debug, Clone)]
pub struct Intake {
    max_future_skew_ms: i64,
    /// The catalog's SKUs; `None` = an open catalog, any SKU is accepted.
    skus: Option<HashSet<String>>,
}

impl Default for Intake {
    fn default() -> Intake {
        Intake::new(DEFAULT_MAX_FUTURE_SKEW_SECS, None)
    }
}

/// Why a movement is refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: &'static str,
    pub reason: String,
}

impl Intake {
    /// Checks with a future-skew limit and, unless the catalog is open, its SKUs.
    pub fn new(max_future_skew_secs: u64, catalog: Option<&Catalog>) -> Intake {
        let skus = catalog
            .filter(|c| !c.is_open())
            .map(|c| c.config().skus.iter().map(|s| s.id.clone()).collect());
        Intake {
            max_future_skew_ms: i64::try_from(max_future_skew_secs.saturating_mul(1000))
                .unwrap_or(i64::MAX),
            skus,
        }
    }

    /// `None` if `m` (from `agent_id`) may enter the ledger at collector time `now_ms`.
    pub fn check(&self, agent_id: &str, m: &Movement, now_ms: i64) -> Option<Refusal> {
        if let Some(skus) = &self.skus {
            if !skus.contains(m.sku.as_str()) {
                return Some(Refusal {
                    field: "$.sku",
                    reason: format!(
                        "agent `{agent_id}` seq {}: field $.sku: `{}` is not in the collector's catalog; retry once the catalog has it",
                        m.seq, m.sku
                    ),
                });
            }
        }
        let ahead = m.occurred_at.unix_ms.saturating_sub(now_ms);
        if ahead > self.max_future_skew_ms {
            return Some(Refusal {
                field: "$.occurred_at",
                reason: format!(
                    "agent `{agent_id}` seq {}: field $.occurred_at: {} is {} s ahead of the collector's clock (limit {} s); a movement from the future would freeze its bin",
                    m.seq,
                    m.occurred_at.to_rfc3339(),
                    ahead / 1000,
                    self.max_future_skew_ms / 1000
                ),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stocksync_common::catalog::{CatalogConfig, SkuDef};
    use stocksync_common::model::*;

    fn mv(sku: &str, at: i64) -> Movement {
        Movement {
            seq: 7,
            sku: Sku(sku.into()),
            location: Location {
                warehouse: "ams".into(),
                bin: None,
            },
            source: "wms".into(),
            kind: MovementKind::Receipt,
            quantity: 1,
            unit: "each".into(),
            unit_quantity: 1,
            occurred_at: OccurredAt {
                unix_ms: at,
                offset_seconds: 0,
            },
            references: References::default(),
            external_id: None,
            note: None,
            origin: Default::default(),
        }
    }

    #[test]
    fn refuses_the_future_and_unknown_skus() {
        let catalog = Catalog::new(CatalogConfig {
            skus: vec![SkuDef {
                id: "MUG".into(),
                gtin: None,
                base_unit: "each".into(),
                packs: Default::default(),
            }],
            ..CatalogConfig::default()
        })
        .unwrap();
        let intake = Intake::new(300, Some(&catalog));
        let now = 1_800_000_000_000;
        assert_eq!(intake.check("a", &mv("MUG", now + 300_000), now), None);
        let late = intake.check("a", &mv("MUG", now + 300_001), now).unwrap();
        assert_eq!(late.field, "$.occurred_at");
        assert!(late.reason.contains("seq 7"), "{}", late.reason);
        assert_eq!(
            intake.check("a", &mv("CUP", now), now).unwrap().field,
            "$.sku"
        );
        assert_eq!(
            Intake::default().check("a", &mv("CUP", now), now),
            None,
            "open catalog"
        );
    }
}
