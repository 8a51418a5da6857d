//! Convergence: the projection depends only on the set of movements, never on their arrival
//! order, duplicates or delays.
//!
//! Generated movement sets (receipts, shipments, counts from the authority and from others,
//! transfers between two warehouses, returns, inspections, damage, write-offs, expected
//! receipts, with timestamps that collide and arrive in any order) are delivered through the
//! real ledger on real SQLite files in several shuffled orders with duplicated batches. Every
//! delivery must end in the same stock, drift, conflict and discrepancy records, equal to
//! a small reference model that states the rules in closed form instead of replaying.
//! Between the two halves of each delivery two reservations try to hold stock at ams
//! (shipments carry their orders), one is released in some deliveries; the holds must be
//! each created reservation's quantity less its order's shipments, whatever the order.
//! Some movements are voided by an operator, between and after deliveries (some twice): the
//! result must be the reference of the movements that were not voided.
//! Each delivery's projection is then thrown away and rebuilt from the ledger alone
//! (`rebuild::rebuild`), which must give the same records again.
//!
//! The generator (`convergence/movements.rs`), the reference model (`reference.rs`) and the
//! SQLite delivery (`sqlite.rs`) are shared with the PostgreSQL variant,
//! `tests/tests/postgres_convergence.rs`, which includes them by path.

#[path = "convergence/movements.rs"]
mod movements;
#[path = "convergence/reference.rs"]
mod reference;
#[path = "convergence/sqlite.rs"]
mod sqlite;

use proptest::prelude::*;
use stocksync_common::model::*;

use movements::{movements, spec, AGENTS};
use reference::{reference, with_holds};
use sqlite::deliver;

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn projection_depends_only_on_the_set_of_movements(
        specs in prop::collection::vec(spec(), 1..40),
        seeds in prop::array::uniform3(any::<u64>()),
    ) {
        let all = movements(&specs);
        let voids: std::collections::BTreeSet<(String, u64)> = specs
            .iter()
            .zip(&all)
            .filter(|(s, _)| s.void)
            .map(|(_, (a, m))| (AGENTS[*a].0.to_string(), m.seq))
            .collect();
        // Voided movements count as if they had never been sent.
        let kept: Vec<(usize, Movement)> = all
            .iter()
            .filter(|(a, m)| !voids.contains(&(AGENTS[*a].0.to_string(), m.seq)))
            .cloned()
            .collect();
        let expected = reference(&kept);
        for (i, seed) in seeds.iter().enumerate() {
            let (got, holds) = deliver(&all, &voids, *seed, 1 + i * 2);
            let expected = with_holds(expected.clone(), &kept, &holds);
            prop_assert_eq!(&got, &expected, "delivery {} (seed {}, holds {:?}) differs from the reference", i, seed, holds);
        }
    }
}
