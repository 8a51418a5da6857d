//! Available units per location, from whichever store holds them: the pure channel and
//! bundle computations (`publish::compute`, `buildable`) read stock through this trait, so
//! the SQLite collector (reading its ledger lazily) and the PostgreSQL publisher (one query
//! per pass into `Rows`) share the same code and cannot disagree about a number.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use rusqlite::Connection;

/// A read-only view of the `available` column of the stock rows.
pub trait AvailableRows {
    type Error;

    /// Every SKU that has a stock row.
    fn skus(&self) -> Result<BTreeSet<String>, Self::Error>;

    /// Calls `f(warehouse, bin, available)` for every stock row of `sku`.
    fn for_each_available(
        &self,
        sku: &str,
        f: &mut dyn FnMut(&str, &str, i64),
    ) -> Result<(), Self::Error>;
}

impl AvailableRows for Connection {
    type Error = rusqlite::Error;

    fn skus(&self) -> rusqlite::Result<BTreeSet<String>> {
        super::skus(self)
    }

    fn for_each_available(
        &self,
        sku: &str,
        f: &mut dyn FnMut(&str, &str, i64),
    ) -> rusqlite::Result<()> {
        super::for_each_available(self, sku, f)
    }
}

/// Stock rows loaded into memory: `(warehouse, bin, available)` per SKU.
#[derive(Debug, Default)]
pub struct Rows {
    by_sku: BTreeMap<String, Vec<(String, String, i64)>>,
}

impl Rows {
    /// Adds one stock row.
    pub fn insert(&mut self, sku: String, warehouse: String, bin: String, available: i64) {
        self.by_sku
            .entry(sku)
            .or_default()
            .push((warehouse, bin, available));
    }
}

impl AvailableRows for Rows {
    type Error = Infallible;

    fn skus(&self) -> Result<BTreeSet<String>, Infallible> {
        Ok(self.by_sku.keys().cloned().collect())
    }

    fn for_each_available(
        &self,
        sku: &str,
        f: &mut dyn FnMut(&str, &str, i64),
    ) -> Result<(), Infallible> {
        for (warehouse, bin, available) in self.by_sku.get(sku).into_iter().flatten() {
            f(warehouse, bin, *available);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed<S: AvailableRows>(s: &S, sku: &str) -> Vec<(String, String, i64)>
    where
        S::Error: std::fmt::Debug,
    {
        let mut out = Vec::new();
        s.for_each_available(sku, &mut |w, b, n| out.push((w.into(), b.into(), n)))
            .unwrap();
        out.sort();
        out
    }

    /// The same rows through the ledger and in memory give the same answers, down to the
    /// kits a bundle builds per warehouse.
    #[test]
    fn ledger_and_loaded_rows_read_alike() {
        let conn = Connection::open_in_memory().unwrap();
        crate::ledger::migrate(&conn, std::path::Path::new(":memory:")).unwrap();
        let mut rows = Rows::default();
        for (sku, warehouse, bin, available) in [
            ("MUG", "ams", "A", 20),
            ("MUG", "ams", "", -3),
            ("LID", "ber", "", 10),
            ("MUG", "rtm", "B", 7),
            ("LID", "rtm", "", 4),
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
            rows.insert(sku.into(), warehouse.into(), bin.into(), available);
        }
        assert_eq!(conn.skus().unwrap(), rows.skus().unwrap());
        for sku in ["MUG", "LID", "CUP"] {
            assert_eq!(listed(&conn, sku), listed(&rows, sku), "{sku}");
        }
        let parts = [("MUG".to_string(), 2), ("LID".to_string(), 1)];
        let from_ledger = crate::buildable::by_warehouse(&conn, &parts, |_, _| true).unwrap();
        let from_rows = crate::buildable::by_warehouse(&rows, &parts, |_, _| true).unwrap();
        assert_eq!(from_ledger, from_rows);
        assert_eq!(crate::buildable::total(&from_rows), 3);
    }
}
