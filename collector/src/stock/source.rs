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
