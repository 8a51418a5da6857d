//! Versioned migrations of a stocksync SQLite file, numbered by `PRAGMA user_version`.
//!
//! A file outlives the binary that wrote it, so its layout changes only through an ordered
//! list of migrations, each applied once, in its own transaction together with the new
//! version number: a crash or a failing step leaves the file at the previous version, never
//! half-way. A file with a version the list does not reach was written by a newer release
//! and is refused untouched, so that an older binary never writes rows in a layout it does
//! not understand. Each file's owner keeps its own list (the collector's ledger, the agent's
//! journal); a change of layout is a new entry at its end, never an edit of an old one.

use rusqlite::Connection;

/// One step of a file's layout.
pub struct Migration {
    /// The `user_version` the file has after it; entry `i` of a list has version `i + 1`.
    pub version: u32,
    /// What it changes, for the log.
    pub what: &'static str,
    pub apply: fn(&Connection) -> rusqlite::Result<()>,
}

/// Why a file was not migrated.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("layout version {found}, but this binary knows up to {known}: it was written by a newer release")]
    TooNew { found: u32, known: u32 },
    #[error("migration to version {version} ({what}) failed and was rolled back: {source}")]
    Failed {
        version: u32,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// The file's version (0 for a file no migration has touched).
pub fn version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
}

/// Applies every migration of `list` the file has not had, in order, each in its own
/// transaction; returns the version the file had. `conn` must not be in a transaction.
pub fn run(conn: &Connection, list: &[Migration]) -> Result<u32, MigrateError> {
    let found = version(conn)?;
    let known = list.len() as u32;
    if found > known {
        return Err(MigrateError::TooNew { found, known });
    }
    for (i, m) in list.iter().enumerate().skip(found as usize) {
        debug_assert_eq!(
            m.version as usize,
            i + 1,
            "migrations are numbered in order"
        );
        let failed = |source| MigrateError::Failed {
            version: m.version,
            what: m.what,
            source,
        };
        let tx = conn.unchecked_transaction()?;
        (m.apply)(&tx).map_err(failed)?;
        tx.pragma_update(None, "user_version", m.version)?;
        tx.commit()?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn a_rows(conn: &Connection) -> Vec<i64> {
        conn.prepare("SELECT x FROM a ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn each_step_runs_once_in_order_from_every_older_version() {
        for from in 0..=2 {
            let conn = Connection::open_in_memory().unwrap();
            run(&conn, &STEPS[..from]).unwrap();
            assert_eq!(run(&conn, &STEPS[..2]).unwrap(), from as u32);
            assert_eq!(run(&conn, &STEPS[..2]).unwrap(), 2, "nothing left to do");
            assert_eq!(a_rows(&conn), [1, 2], "from version {from}");
        }
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version_and_nothing_of_itself() {
        let conn = Connection::open_in_memory().unwrap();
        let err = run(&conn, STEPS).unwrap_err();
        assert!(
            matches!(err, MigrateError::Failed { version: 3, .. }),
            "{err}"
        );
        assert_eq!(version(&conn).unwrap(), 2);
        assert_eq!(
            a_rows(&conn),
            [1, 2],
            "the failed step's insert is rolled back"
        );
    }

    #[test]
    fn a_file_from_a_newer_release_is_refused_untouched() {
        let conn = Connection::open_in_memory().unwrap();
        run(&conn, STEPS.get(..2).unwrap()).unwrap();
        let err = run(&conn, &STEPS[..1]).unwrap_err();
        assert!(
            matches!(err, MigrateError::TooNew { found: 2, known: 1 }),
            "{err}"
        );
        assert_eq!(version(&conn).unwrap(), 2);
    }
}
