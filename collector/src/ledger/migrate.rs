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

use super::{v1, LedgerError};

/// One step of the file's layout.
pub(crate) struct Migration {
    /// The `user_version` the file has after it.
    pub version: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    pub apply: fn(&Connection) -> rusqlite::Result<()>,
}

/// Every migration, in order; entry `i` brings version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    what: "layout of the last release before versioning",
    apply: v1::apply,
}];

/// The version this binary writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The file's version.
pub(crate) fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Brings the file at `path` (open as `conn`) to `LATEST`; returns the version it had.
pub(crate) fn migrate(conn: &Connection, path: &Path) -> Result<u32, LedgerError> {
    run(conn, path, MIGRATIONS)
}

fn run(conn: &Connection, path: &Path, list: &[Migration]) -> Result<u32, LedgerError> {
    let found = version(conn)?;
    let known = list.len() as u32;
    if found > known {
        return Err(LedgerError::TooNew {
            path: path.display().to_string(),
            found,
            known,
        });
    }
    for m in &list[found as usize..] {
        let tx = conn.unchecked_transaction()?;
        (m.apply)(&tx)?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = m.version, what = m.what, "ledger migrated");
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        run(
            &conn,
            Path::new(":memory:"),
            &MIGRATIONS[..version as usize],
        )
        .unwrap();
        assert_eq!(super::version(&conn).unwrap(), version);
        conn
    }

    #[test]
    fn a_file_at_every_older_version_migrates_to_the_layout_of_a_new_one() {
        let fresh = at(LATEST);
        for from in 0..LATEST {
            let conn = at(from);
            assert_eq!(migrate(&conn, Path::new(":memory:")).unwrap(), from);
            assert_eq!(version(&conn).unwrap(), LATEST);
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
        conn.execute_batch(
            "PRAGMA user_version = 0;
             INSERT INTO stock (sku, warehouse, bin, available, updated_at_ms) VALUES ('TEE', 'ams', 'A-01', 7, 1);",
        )
        .unwrap();
        let before = layout(&conn);
        assert_eq!(migrate(&conn, Path::new("ledger.db")).unwrap(), 0);
        assert_eq!(layout(&conn), before);
        let n: i64 = conn
            .query_row("SELECT available FROM stock WHERE sku = 'TEE'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!((n, version(&conn).unwrap()), (7, LATEST));
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
        assert_eq!(version(&conn).unwrap(), LATEST + 1);
    }

    fn add_a(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);")
    }

    fn add_b(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("CREATE TABLE b (y INTEGER); INSERT INTO a VALUES (2);")
    }

    fn fail_after_a_change(conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch("INSERT INTO a VALUES (3); UPDATE no_such_table SET z = 1;")
    }

    const STEPS: &[Migration] = &[
        Migration {
            version: 1,
            what: "a",
            apply: add_a,
        },
        Migration {
            version: 2,
            what: "b",
            apply: add_b,
        },
        Migration {
            version: 3,
            what: "broken",
            apply: fail_after_a_change,
        },
    ];

    #[test]
    fn each_step_runs_once_in_order_and_a_failing_one_leaves_the_previous_version() {
        let conn = memory();
        let path = Path::new(":memory:");
        assert_eq!(run(&conn, path, &STEPS[..1]).unwrap(), 0);
        assert_eq!(run(&conn, path, &STEPS[..2]).unwrap(), 1);
        assert_eq!(run(&conn, path, &STEPS[..2]).unwrap(), 2);
        assert!(run(&conn, path, STEPS).is_err());
        assert_eq!(version(&conn).unwrap(), 2);
        let rows: Vec<i64> = conn
            .prepare("SELECT x FROM a ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(rows, [1, 2], "the failed step's insert is rolled back");
    }
}
