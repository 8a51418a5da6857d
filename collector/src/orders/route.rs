//! Routing: which warehouse ships which line, decided from numbers read inside the ledger
//! writer's transaction, so the decision and the holds it leads to see the same stock.
//!
//! Pure: candidates come in with their routable stock (available less safety stock) and
//! their facts (rank, distance, days to ship); out come the ranking with its reasons and
//! the allocation. Rules combine lexicographically (a later rule only breaks a tie of the
//! earlier ones), like Shopify's ranked / closest / minimise-splits chain; the warehouse
//! name breaks a full tie so that the same input always gives the same answer.

use std::collections::BTreeMap;

use serde::Serialize;

use super::config::{Allocation, Rule};

/// One order line, with what one unit of it takes from a warehouse (a bundle's components,
/// or the SKU itself once).
#[derive(Debug, Clone)]
pub struct Demand {
    pub quantity: u64,
    pub parts: Vec<(String, u64)>,
}

/// A warehouse that passed the filters.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub warehouse: String,
    /// Routable units per SKU the order needs.
    pub stock: BTreeMap<String, u64>,
    /// Position in the channel's ranked list.
    pub rank: Option<usize>,
    /// Kilometres or zone cost to the ship-to address, if known.
    pub distance: Option<u64>,
    /// Local days until it ships (0 = today), if its calendar has a day.
    pub days_to_ship: Option<u32>,
}

/// How one candidate scored on each rule, and which rule put it behind the one before.
#[derive(Debug, Clone, Serialize)]
pub struct Ranked {
    pub warehouse: String,
    pub position: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranked: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance: Option<u64>,
    pub ships_every_line: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub days_to_ship: Option<u32>,
    pub stock: u64,
    /// The first rule on which the warehouse ranked above this one differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub behind_by: Option<String>,
}

/// Units of one line given to one warehouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Alloc {
    pub line: usize,
    pub warehouse: String,
    pub quantity: u64,
}

/// The routing decision.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ranking: Vec<Ranked>,
    pub allocations: Vec<Alloc>,
    /// Units per line no candidate could take.
    pub shortfall: BTreeMap<usize, u64>,
}

/// Total need per SKU over all lines (bundles expanded); `None` on overflow.
pub fn summed(lines: &[Demand]) -> Option<BTreeMap<String, u64>> {
    let mut need: BTreeMap<String, u64> = BTreeMap::new();
    for l in lines {
        for (sku, per) in &l.parts {
            let n = l.quantity.checked_mul(*per)?;
            let slot = need.entry(sku.clone()).or_default();
            *slot = slot.checked_add(n)?;
        }
    }
    Some(need)
}

fn ships_all(c: &Candidate, need: &BTreeMap<String, u64>) -> bool {
    need.iter()
        .all(|(sku, n)| c.stock.get(sku).copied().unwrap_or(0) >= *n)
}

fn key(c: &Candidate, rule: Rule, need: &BTreeMap<String, u64>) -> u64 {
    match rule {
        Rule::Ranked => c.rank.map_or(u64::MAX, |r| r as u64),
        Rule::Closest => c.distance.unwrap_or(u64::MAX),
        Rule::MinimiseSplits => u64::from(!ships_all(c, need)),
        Rule::ShipToday => c.days_to_ship.map_or(u64::MAX, u64::from),
        Rule::MostStock => u64::MAX - stock_of(c, need),
    }
}

fn stock_of(c: &Candidate, need: &BTreeMap<String, u64>) -> u64 {
    need.keys()
        .map(|s| c.stock.get(s).copied().unwrap_or(0))
        .fold(0u64, u64::saturating_add)
}

/// Orders the candidates by the rules, best first, and says why.
pub fn rank(
    mut candidates: Vec<Candidate>,
    rules: &[Rule],
    lines: &[Demand],
) -> (Vec<Candidate>, Vec<Ranked>) {
    let need = summed(lines).unwrap_or_default();
    let keys = |c: &Candidate| -> Vec<u64> { rules.iter().map(|r| key(c, *r, &need)).collect() };
    candidates.sort_by(|a, b| {
        keys(a)
            .cmp(&keys(b))
            .then_with(|| a.warehouse.cmp(&b.warehouse))
    });
    let mut out: Vec<Ranked> = Vec::with_capacity(candidates.len());
    for (i, c) in candidates.iter().enumerate() {
        let behind_by = (i > 0).then(|| {
            let (prev, mine) = (keys(&candidates[i - 1]), keys(c));
            rules
                .iter()
                .zip(prev.iter().zip(&mine))
                .find(|(_, (p, m))| p != m)
                .map_or("name (tie on every rule)".to_string(), |(r, _)| {
                    rule_name(*r).to_string()
                })
        });
        out.push(Ranked {
            warehouse: c.warehouse.clone(),
            position: i + 1,
            ranked: c.rank,
            distance: c.distance,
            ships_every_line: ships_all(c, &need),
            days_to_ship: c.days_to_ship,
            stock: stock_of(c, &need),
            behind_by,
        });
    }
    (candidates, out)
}

/// The rule's name as configured.
pub fn rule_name(r: Rule) -> &'static str {
    match r {
        Rule::Ranked => "ranked",
        Rule::Closest => "closest",
        Rule::MinimiseSplits => "minimise_splits",
        Rule::ShipToday => "ship_today",
        Rule::MostStock => "most_stock",
    }
}

/// Ranks the candidates and allocates every line; what nobody has is the shortfall.
pub fn plan(
    candidates: Vec<Candidate>,
    rules: &[Rule],
    lines: &[Demand],
    allocation: Allocation,
) -> Plan {
    let (mut ranked, ranking) = rank(candidates, rules, lines);
    let mut left: Vec<u64> = lines.iter().map(|l| l.quantity).collect();
    let mut allocations = Vec::new();
    match allocation {
        Allocation::Single => {
            if let Some(best) = best_single(&ranked, lines) {
                take_all(&mut ranked[best], lines, &mut left, &mut allocations);
            }
        }
        Allocation::Split => {
            if let Some(best) = ranked
                .iter()
                .position(|c| covers(c, lines, &left) == total(&left))
            {
                take_all(&mut ranked[best], lines, &mut left, &mut allocations);
            }
            // Greedy set cover: the warehouse covering the most remaining units next, ties
            // to the better ranked; few warehouses, each decision explainable.
            while total(&left) > 0 {
                let best = (0..ranked.len())
                    .max_by_key(|&i| (covers(&ranked[i], lines, &left), std::cmp::Reverse(i)));
                match best {
                    Some(i) if covers(&ranked[i], lines, &left) > 0 => {
                        take_all(&mut ranked[i], lines, &mut left, &mut allocations)
                    }
                    _ => break,
                }
            }
        }
        Allocation::PerUnit => {
            for c in ranked.iter_mut() {
                take_all(c, lines, &mut left, &mut allocations);
            }
        }
    }
    let shortfall = left
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (i, *n))
        .collect();
    Plan {
        ranking,
        allocations,
        shortfall,
    }
}

/// The best-ranked warehouse that ships everything, else the one that ships the most.
fn best_single(ranked: &[Candidate], lines: &[Demand]) -> Option<usize> {
    let left: Vec<u64> = lines.iter().map(|l| l.quantity).collect();
    let all = total(&left);
    ranked
        .iter()
        .position(|c| covers(c, lines, &left) == all)
        .or_else(|| {
            (0..ranked.len())
                .filter(|&i| covers(&ranked[i], lines, &left) > 0)
                .max_by_key(|&i| (covers(&ranked[i], lines, &left), std::cmp::Reverse(i)))
        })
}

fn total(left: &[u64]) -> u64 {
    left.iter().fold(0u64, |a, b| a.saturating_add(*b))
}

/// Units of line `l` that `stock` can ship, at most `want`.
fn fits(stock: &BTreeMap<String, u64>, l: &Demand, want: u64) -> u64 {
    l.parts
        .iter()
        .map(|(sku, per)| stock.get(sku).copied().unwrap_or(0) / per.max(&1))
        .fold(want, u64::min)
}

/// Units of the remaining lines `c` could ship, taking them in line order.
fn covers(c: &Candidate, lines: &[Demand], left: &[u64]) -> u64 {
    let mut stock = c.stock.clone();
    let mut n = 0u64;
    for (l, want) in lines.iter().zip(left) {
        let k = fits(&stock, l, *want);
        consume(&mut stock, l, k);
        n = n.saturating_add(k);
    }
    n
}

fn consume(stock: &mut BTreeMap<String, u64>, l: &Demand, units: u64) {
    for (sku, per) in &l.parts {
        if let Some(s) = stock.get_mut(sku) {
            *s = s.saturating_sub(units.saturating_mul(*per));
        }
    }
}

/// Gives `c` every unit of the remaining lines it can ship.
fn take_all(c: &mut Candidate, lines: &[Demand], left: &mut [u64], out: &mut Vec<Alloc>) {
    for (i, l) in lines.iter().enumerate() {
        let k = fits(&c.stock, l, left[i]);
        if k == 0 {
            continue;
        }
        consume(&mut c.stock, l, k);
        left[i] -= k;
        out.push(Alloc {
            line: i,
            warehouse: c.warehouse.clone(),
            quantity: k,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(w: &str, stock: &[(&str, u64)], rank: Option<usize>, km: u64, days: u32) -> Candidate {
        Candidate {
            warehouse: w.into(),
            stock: stock.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            rank,
            distance: Some(km),
            days_to_ship: Some(days),
        }
    }

    fn line(q: u64, parts: &[(&str, u64)]) -> Demand {
        Demand {
            quantity: q,
            parts: parts.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
        }
    }

    #[test]
    fn rules_combine_lexicographically() {
        let cs = vec![
            cand("a", &[("X", 9)], Some(1), 10, 0),
            cand("b", &[("X", 9)], Some(1), 5, 1),
        ];
        let lines = [line(1, &[("X", 1)])];
        let (_, r) = rank(cs.clone(), &[Rule::ShipToday, Rule::Closest], &lines);
        assert_eq!(
            (r[0].warehouse.as_str(), r[1].behind_by.as_deref()),
            ("a", Some("ship_today"))
        );
        let (_, r) = rank(cs, &[Rule::Ranked, Rule::Closest], &lines);
        assert_eq!(
            (r[0].warehouse.as_str(), r[1].behind_by.as_deref()),
            ("b", Some("closest"))
        );
    }

    #[test]
    fn bundle_components_are_summed_with_other_lines() {
        // Line 0: 2 kits of (MUG x1, LID x1); line 1: 2 MUGs. 4 MUGs needed; a has 3.
        let lines = [line(2, &[("MUG", 1), ("LID", 1)]), line(2, &[("MUG", 1)])];
        let cs = vec![cand("a", &[("MUG", 3), ("LID", 5)], Some(0), 0, 0)];
        let p = plan(cs, &[Rule::Ranked], &lines, Allocation::Split);
        assert_eq!(p.shortfall, BTreeMap::from([(1, 1)]));
        assert_eq!(summed(&lines).unwrap()["MUG"], 4);
    }

    #[test]
    fn split_uses_fewest_warehouses_and_single_refuses_to_split() {
        let lines = [line(2, &[("X", 1)]), line(1, &[("Y", 1)])];
        let cs = vec![
            cand("a", &[("X", 2)], Some(0), 0, 0),
            cand("b", &[("Y", 1)], Some(1), 0, 0),
            cand("c", &[("X", 2), ("Y", 1)], Some(2), 0, 0),
        ];
        let p = plan(cs.clone(), &[Rule::Ranked], &lines, Allocation::Split);
        assert!(p.allocations.iter().all(|a| a.warehouse == "c"));
        let p = plan(cs.clone(), &[Rule::Ranked], &lines, Allocation::PerUnit);
        assert_eq!(
            p.allocations
                .iter()
                .map(|a| a.warehouse.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        let p = plan(
            cs[..2].to_vec(),
            &[Rule::Ranked],
            &lines,
            Allocation::Single,
        );
        assert_eq!(p.shortfall.values().sum::<u64>(), 1);
    }

    #[test]
    fn overflowing_demand_is_refused() {
        assert!(summed(&[line(u64::MAX, &[("X", 2)])]).is_none());
    }
}
