//! How many of a bundle (kit) can be built, warehouse by warehouse.
//!
//! A kit is assembled in one warehouse from the components that are there: 2 mugs in
//! Amsterdam and a tee in Berlin make no gift set. So the number of kits is a sum over
//! warehouses of min over components of floor(available there / quantity per kit), never a
//! min over components of their pooled totals. The bundle API and every channel's bundle
//! number read it from here, so the two cannot disagree.

use std::collections::BTreeMap;

use crate::stock::AvailableRows;

/// One warehouse's view of a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    pub warehouse: String,
    /// Kits that can be built here.
    pub buildable: u64,
    /// Per component, in the bundle's order: `(sku, quantity per kit, available here)`.
    pub components: Vec<(String, u64, i64)>,
}

/// Kits buildable from one warehouse's available units: min over components of
/// floor(available / quantity); 0 for a bundle without components.
pub fn kits(components: &[(String, u64, i64)]) -> u64 {
    components
        .iter()
        .map(|(_, qty, available)| {
            (available.max(&0).unsigned_abs())
                .checked_div(*qty)
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0)
}

/// Every warehouse holding any component, with what it can build from the stock rows that
/// `include(warehouse, bin)` accepts (a channel's eligible locations, or everything).
pub fn by_warehouse<S: AvailableRows + ?Sized>(
    conn: &S,
    components: &[(String, u64)],
    include: impl Fn(&str, &str) -> bool,
) -> Result<Vec<Site>, S::Error> {
    // warehouse -> component index -> available
    let mut available: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (i, (sku, _)) in components.iter().enumerate() {
        conn.for_each_available(sku, &mut |warehouse, bin, n| {
            if include(warehouse, bin) {
                let per = available
                    .entry(warehouse.to_string())
                    .or_insert_with(|| vec![0; components.len()]);
                per[i] = per[i].saturating_add(n);
            }
        })?;
    }
    Ok(available
        .into_iter()
        .map(|(warehouse, per)| {
            let components: Vec<(String, u64, i64)> = components
                .iter()
                .zip(per)
                .map(|((sku, qty), n)| (sku.clone(), *qty, n))
                .collect();
            Site {
                warehouse,
                buildable: kits(&components),
                components,
            }
        })
        .collect())
}

/// Total kits over `sites`.
pub fn total(sites: &[Site]) -> u64 {
    sites
        .iter()
        .map(|s| s.buildable)
        .fold(0, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    #[test]
    fn a_kit_needs_all_its_components_in_one_warehouse() {
        let conn = Connection::open_in_memory().unwrap();
        crate::ledger::migrate(&conn, std::path::Path::new(":memory:")).unwrap();
        for (sku, warehouse, bin, available) in [
            ("MUG", "ams", "A", 20),
            ("TEE", "ber", "", 10),
            ("MUG", "rtm", "A", 5),
            ("MUG", "rtm", "B", 1),
            ("TEE", "rtm", "", 9),
            ("TEE", "rtm", "X", -4),
        ] {
            let key = crate::stock::StockKey {
                sku: sku.into(),
                warehouse: warehouse.into(),
                bin: bin.into(),
            };
            let level = crate::merge::States {
                available,
                ..Default::default()
            };
            crate::stock::add(&conn, &key, &level, 0).unwrap();
        }
        let parts = [("MUG".to_string(), 2), ("TEE".to_string(), 1)];
        let sites = by_warehouse(&conn, &parts, |_, _| true).unwrap();
        let got: Vec<(&str, u64)> = sites
            .iter()
            .map(|s| (s.warehouse.as_str(), s.buildable))
            .collect();
        // ams: no tee; ber: no mug; rtm: 6 mugs -> 3, 5 tees -> 5.
        assert_eq!(got, [("ams", 0), ("ber", 0), ("rtm", 3)]);
        assert_eq!(total(&sites), 3);
        let only_bin_a = by_warehouse(&conn, &parts, |w, b| w == "rtm" && b != "B").unwrap();
        assert_eq!(total(&only_bin_a), 2);
        assert_eq!(kits(&[]), 0, "a bundle without components builds nothing");
    }
}
