//! The sellable number of one SKU on one channel: pure arithmetic, no I/O.
//!
//! Invariant: the result never exceeds what the channel's eligible locations hold after its
//! buffers, and is never negative. The order of the rules is fixed and documented in
//! `docs/CHANNELS.md`; every rounding rounds towards selling less.

use std::collections::BTreeSet;

use super::ChannelConfig;

/// A channel's shaping rules, checked once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub safety_units: u64,
    pub safety_percent: u8,
    pub share_percent: u8,
    pub max_listed: Option<u64>,
    pub zero_at_or_below: u64,
}

impl Rules {
    /// The rules of `config`; percents above 100 are refused.
    pub fn from_config(config: &ChannelConfig) -> Result<Rules, String> {
        for (field, v) in [
            ("safety_percent", config.safety_percent),
            ("share_percent", config.share_percent),
        ] {
            if v > 100 {
                return Err(format!("{field} = {v} is above 100"));
            }
        }
        Ok(Rules {
            safety_units: config.safety_units,
            safety_percent: config.safety_percent,
            share_percent: config.share_percent,
            max_listed: config.max_listed,
            zero_at_or_below: config.zero_at_or_below,
        })
    }

    /// Sellable units of a plain SKU whose eligible locations hold `pooled` available units.
    ///
    /// 1. buffered = pooled - safety_units - ceil(pooled * safety_percent / 100)
    /// 2. shared = floor(max(buffered, 0) * share_percent / 100)
    /// 3. listed = min(shared, max_listed)
    /// 4. 0 if listed <= zero_at_or_below, else listed
    pub fn sellable(&self, pooled: i64) -> u64 {
        let pooled = pooled.max(0) as u128;
        let percent_buffer = (pooled * u128::from(self.safety_percent)).div_ceil(100);
        let buffered = pooled
            .saturating_sub(u128::from(self.safety_units))
            .saturating_sub(percent_buffer);
        let shared = buffered * u128::from(self.share_percent) / 100;
        self.list(u64::try_from(shared).unwrap_or(u64::MAX))
    }

    /// Sellable units of a bundle: the kits the channel's eligible warehouses can build
    /// (`buildable`, summed per warehouse, see `crate::buildable`), never more than
    /// min over components of floor(component sellable / qty), where each component
    /// sellable already went through every rule (so buffers and share hold for kits too);
    /// then only the listing rules (max listed, zero-out) apply again.
    pub fn bundle(&self, buildable: u64, components: &[(u64, u64)]) -> u64 {
        let fit = components
            .iter()
            .map(|&(sellable, qty)| sellable.checked_div(qty).unwrap_or(0))
            .min()
            .unwrap_or(0);
        self.list(fit.min(buildable))
    }

    fn list(&self, n: u64) -> u64 {
        let listed = self.max_listed.map_or(n, |max| n.min(max));
        if listed <= self.zero_at_or_below {
            0
        } else {
            listed
        }
    }
}

/// Which locations' stock a channel may sell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Eligible {
    all: bool,
    warehouses: BTreeSet<String>,
    bins: BTreeSet<(String, String)>,
}

impl Eligible {
    /// From config entries: `*`, `<warehouse>` or `<warehouse>/<bin>`.
    pub fn new(entries: &[String]) -> Eligible {
        let mut e = Eligible::default();
        for entry in entries {
            match entry.split_once('/') {
                _ if entry == "*" => e.all = true,
                Some((w, b)) => {
                    e.bins.insert((w.to_string(), b.to_string()));
                }
                None => {
                    e.warehouses.insert(entry.clone());
                }
            }
        }
        e
    }

    /// True if stock at this warehouse and bin (`""` = no bin) counts for the channel.
    pub fn contains(&self, warehouse: &str, bin: &str) -> bool {
        self.all
            || self.warehouses.contains(warehouse)
            || self
                .bins
                .contains(&(warehouse.to_string(), bin.to_string()))
    }

    /// True if any stock of this warehouse may count (to skip irrelevant changes cheaply).
    pub fn touches(&self, warehouse: &str) -> bool {
        self.all
            || self.warehouses.contains(warehouse)
            || self.bins.iter().any(|(w, _)| w == warehouse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            safety_units: 0,
            safety_percent: 0,
            share_percent: 100,
            max_listed: None,
            zero_at_or_below: 0,
        }
    }

    #[test]
    fn plain_rules_pass_stock_through() {
        assert_eq!(rules().sellable(37), 37);
        assert_eq!(rules().sellable(0), 0);
        assert_eq!(rules().sellable(-4), 0, "never negative");
    }

    #[test]
    fn safety_units_are_held_back() {
        let r = Rules {
            safety_units: 5,
            ..rules()
        };
        assert_eq!(r.sellable(12), 7);
        assert_eq!(r.sellable(5), 0);
        assert_eq!(r.sellable(3), 0);
    }

    #[test]
    fn safety_percent_rounds_the_buffer_up() {
        let r = Rules {
            safety_percent: 10,
            ..rules()
        };
        assert_eq!(r.sellable(100), 90);
        // 10% of 15 = 1.5 -> buffer 2.
        assert_eq!(r.sellable(15), 13);
        // Units and percent add up: 100 - 5 - 10.
        let both = Rules {
            safety_units: 5,
            ..r
        };
        assert_eq!(both.sellable(100), 85);
    }

    #[test]
    fn share_rounds_down() {
        let r = Rules {
            share_percent: 50,
            ..rules()
        };
        assert_eq!(r.sellable(9), 4);
        assert_eq!(r.sellable(10), 5);
        assert_eq!(r.sellable(1), 0);
    }

    #[test]
    fn max_listed_caps() {
        let r = Rules {
            max_listed: Some(20),
            ..rules()
        };
        assert_eq!(r.sellable(500), 20);
        assert_eq!(r.sellable(19), 19);
    }

    #[test]
    fn zero_out_threshold_is_inclusive() {
        let r = Rules {
            zero_at_or_below: 3,
            ..rules()
        };
        assert_eq!(r.sellable(3), 0);
        assert_eq!(r.sellable(4), 4);
    }

    #[test]
    fn rules_apply_in_documented_order() {
        let r = Rules {
            safety_units: 5,
            safety_percent: 10,
            share_percent: 50,
            max_listed: Some(40),
            zero_at_or_below: 3,
        };
        // 100 - 5 - 10 = 85; 50% -> 42; max 40.
        assert_eq!(r.sellable(100), 40);
        // 20 - 5 - 2 = 13; 50% -> 6.
        assert_eq!(r.sellable(20), 6);
        // 14 - 5 - 2 = 7; 50% -> 3; at threshold -> 0.
        assert_eq!(r.sellable(14), 0);
    }

    #[test]
    fn bundle_is_min_over_components() {
        let r = rules();
        // 10 of A (2 per bundle) -> 5; 7 of B (1 per bundle) -> 7.
        assert_eq!(r.bundle(u64::MAX, &[(10, 2), (7, 1)]), 5);
        assert_eq!(r.bundle(u64::MAX, &[(10, 2), (0, 1)]), 0);
        assert_eq!(r.bundle(u64::MAX, &[(3, 4)]), 0);
        assert_eq!(
            r.bundle(u64::MAX, &[]),
            0,
            "a bundle without components sells nothing"
        );
        let listed = Rules {
            max_listed: Some(4),
            zero_at_or_below: 1,
            ..rules()
        };
        assert_eq!(listed.bundle(u64::MAX, &[(10, 2), (7, 1)]), 4);
        assert_eq!(listed.bundle(u64::MAX, &[(2, 2)]), 0);
        // Components pooled from two warehouses that build nothing in either: 0, not 5.
        assert_eq!(r.bundle(0, &[(10, 2), (7, 1)]), 0);
        assert_eq!(r.bundle(3, &[(10, 2), (7, 1)]), 3);
    }

    #[test]
    fn eligible_locations() {
        let e = Eligible::new(&["ams".into(), "rtm/A-01".into()]);
        assert!(e.contains("ams", ""));
        assert!(e.contains("ams", "Z-9"));
        assert!(e.contains("rtm", "A-01"));
        assert!(!e.contains("rtm", "A-02"));
        assert!(!e.contains("ber", ""));
        assert!(e.touches("rtm") && !e.touches("ber"));
        assert!(Eligible::new(&["*".into()]).contains("ber", "x"));
    }

    #[test]
    fn percents_above_100_are_refused() {
        let cfg: ChannelConfig =
            toml::from_str("name = \"x\"\nlocations = [\"*\"]\nshare_percent = 150\n").unwrap();
        assert!(Rules::from_config(&cfg)
            .unwrap_err()
            .contains("share_percent"));
    }
}
