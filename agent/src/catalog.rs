//! The catalog this agent validates and normalises with, kept across restarts.
//!
//! The collector publishes the catalog retained on `topics::CATALOG`; the forwarder's
//! broker connection receives it and hands it here. It is stored in the journal's SQLite
//! file (table `catalog`) before it is used, so after a restart without a network the agent
//! still converts cases to eaches and resolves aliases exactly as before. Invariant: the
//! catalog in use is always one that validated as a whole; a bad one is logged and ignored,
//! the previous one stays. Before any catalog has arrived the catalog is open (any SKU, in
//! eaches).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rusqlite::{params, Connection, OptionalExtension};
use stocksync_common::catalog::{Catalog, CatalogError};

/// Failures to keep or load the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogStoreError {
    #[error("catalog storage error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("catalog refused: {0}")]
    Invalid(#[from] CatalogError),
}

/// The shared, swappable catalog; cheap to read from every request.
pub struct CatalogHandle {
    path: PathBuf,
    current: RwLock<Arc<Catalog>>,
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS catalog (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            body BLOB NOT NULL,
            received_at_ms INTEGER NOT NULL
        )",
    )?;
    Ok(conn)
}

impl CatalogHandle {
    /// Loads the last stored catalog from the journal file at `path`, or starts open.
    pub fn open(path: &Path) -> Result<CatalogHandle, CatalogStoreError> {
        let conn = open(path)?;
        let body: Option<Vec<u8>> = conn
            .query_row("SELECT body FROM catalog WHERE id = 1", [], |r| r.get(0))
            .optional()?;
        let catalog = match body {
            Some(body) => Catalog::from_json(&body)?,
            None => Catalog::default(),
        };
        Ok(CatalogHandle {
            path: path.to_owned(),
            current: RwLock::new(Arc::new(catalog)),
        })
    }

    /// The catalog in use now.
    pub fn current(&self) -> Arc<Catalog> {
        self.current.read().expect("catalog lock").clone()
    }

    /// Validates, stores and then uses a catalog as received from the collector. Returns
    /// whether it differed from the one in use.
    pub fn receive(&self, body: &[u8]) -> Result<bool, CatalogStoreError> {
        let catalog = Catalog::from_json(body)?;
        if catalog.config() == self.current().config() {
            return Ok(false);
        }
        open(&self.path)?.execute(
            "INSERT INTO catalog (id, body, received_at_ms) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET body = excluded.body, received_at_ms = excluded.received_at_ms",
            params![body, crate::input::now().unix_ms],
        )?;
        *self.current.write().expect("catalog lock") = Arc::new(catalog);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::UnitResolver;

    #[test]
    fn a_received_catalog_survives_a_restart() {
        let path = std::env::temp_dir().join(format!(
            "stocksync-catalog-{}-{}.db",
            std::process::id(),
            crate::input::now().unix_ms
        ));
        let handle = CatalogHandle::open(&path).unwrap();
        assert!(handle.current().is_open());
        let body = br#"{"skus":[{"id":"MUG","gtin":null,"base_unit":"each","packs":{"case":12}}],"bundles":[],"aliases":[],"locations":[]}"#;
        assert!(handle.receive(body).unwrap());
        assert!(!handle.receive(body).unwrap());
        assert!(handle
            .receive(b"{\"skus\":[{\"id\":\"A\",\"gtin\":\"123\"}]}")
            .is_err());
        drop(handle);
        let reopened = CatalogHandle::open(&path).unwrap();
        assert_eq!(reopened.current().base_units_per("MUG", "case"), Ok(12));
        std::fs::remove_file(&path).unwrap();
    }
}
