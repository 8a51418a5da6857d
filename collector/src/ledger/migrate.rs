//! Versioned migrations of the ledger file, numbered by SQLite's `PRAGMA user_version`.
//!
//! The file is the count of record and outlives the binary that wrote it, so its layout is
//! changed only by an ordered list of migrations, each applied once, in its own transaction
//! together with the new version number: a crash or a failing step leaves the file at the
//! previous version, never half-way. They run when the ledger opens, before the writer
//! starts and before anything reads. Version 1 is the layout of the last release before
//! versioning (`v1.rs`); a change of layout is a new entry at the end of `MIGRATIONS`, never
//! an edit of an old one. A file with a version this binary does not know was written by a
//! newer release: it is refused, not guessed at, so that a downgrade cannot write rows in a
//! layout it does not understand.

use std::path::Path;

use rusqlite::Connection;
use stocksync_durable::migrate::{self, MigrateError, Migration};

use super::{v1, LedgerError};

/// Every migration of the ledger file, in order; entry `i` brings version `i` to `i + 1`.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    what: "layout of the last release before versioning",
    apply: v1::apply,
}];

/// The version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings the file at `path` (open as `conn`) to `LATEST`; returns the version it had.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<u32, LedgerError> {
    let from = migrate::run(conn, MIGRATIONS).map_err(|e| match e {
        MigrateError::TooNew { found, known } => LedgerError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        },
        MigrateError::Failed { source, .. } | MigrateError::Sqlite(source) => {
            LedgerError::Sqlite(source)
        }
    })?;
    if from < LATEST {
        tracing::info!(path = %path.display(), from, to = LATEST, "ledger layout migrated");
    }
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> u32 {
        migrate::version(conn).unwrap()
    }

    fn memory() -> Connection {
        Connection::open_in_memory().unwrap()
    }

    /// The file's layout: every table and index with its SQL, by name.
    fn layout(conn: &Connection) -> Vec<(String, String)> {
        let mut stmt = conn
            .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn at(version: u32) -> Connection {
        let conn = memory();
        migrate::run(&conn, &MIGRATIONS[..version as usize]).unwrap();
        assert_eq!(self::version(&conn), version);
        conn
    }

    #[test]
    fn a_file_at_every_older_version_migrates_to_the_layout_of_a_new_one() {
        let fresh = at(LATEST);
        for from in 0..LATEST {
            let conn = at(from);
            assert_eq!(migrate(&conn, Path::new(":memory:")).unwrap(), from);
            assert_eq!(version(&conn), LATEST);
            assert_eq!(layout(&conn), layout(&fresh), "from version {from}");
        }
        // Opening again changes nothing.
        let before = layout(&fresh);
        assert_eq!(migrate(&fresh, Path::new(":memory:")).unwrap(), LATEST);
        assert_eq!(layout(&fresh), before);
    }

    #[test]
    fn an_unversioned_file_of_the_last_release_keeps_its_rows_and_layout() {
        // What the last release left: version 1's layout with user_version 0, and rows.
        let conn = at(1);
        let key = crate::stock::StockKey {
            sku: "TEE".into(),
            warehouse: "ams".into(),
            bin: "A-01".into(),
        };
        let level = crate::merge::States {
            available: 7,
            ..Default::default()
        };
        crate::stock::add(&conn, &key, &level, 1).unwrap();
        conn.pragma_update(None, "user_version", 0).unwrap();
        let before = layout(&conn);
        assert_eq!(migrate(&conn, Path::new("ledger.db")).unwrap(), 0);
        assert_eq!(layout(&conn), before);
        let n = crate::stock::states(&conn, &key).unwrap().available;
        assert_eq!((n, version(&conn)), (7, LATEST));
    }

    #[test]
    fn a_file_from_a_newer_release_is_refused_untouched() {
        let conn = at(LATEST);
        conn.pragma_update(None, "user_version", LATEST + 1)
            .unwrap();
        let before = layout(&conn);
        let err = migrate(&conn, Path::new("/var/lib/ledger.db")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/var/lib/ledger.db")
                && text.contains(&format!("version {}", LATEST + 1))
                && text.contains(&format!("knows up to {LATEST}")),
            "{text}"
        );
        assert_eq!(layout(&conn), before);
        assert_eq!(version(&conn), LATEST + 1);
    }
}
