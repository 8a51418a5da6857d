//! WAL checkpoints off the write path.
//!
//! With SQLite's automatic checkpoint, the COMMIT that crosses the threshold copies the whole
//! WAL into the database file before it returns: every caller of that group waits tens of
//! milliseconds (the p99 of an order or an ack). Here the writer runs with
//! `wal_autocheckpoint = 0` and a thread of its own runs `PASSIVE` checkpoints on its own
//! connection every `every`: they copy what no reader still needs and never wait for, or
//! block, the writer. SQLite rewinds the WAL at the first write after a complete checkpoint,
//! so the file stays about as large as what is written between two checkpoints.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// Runs passive checkpoints until dropped (then one last one).
pub struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

/// Turns automatic checkpoints off on the writer's connection: a [`Checkpointer`] does them.
pub fn leave_to_checkpointer(writer: &Connection) -> rusqlite::Result<()> {
    writer.pragma_update(None, "wal_autocheckpoint", 0)
}

impl Checkpointer {
    /// Starts the thread `name` checkpointing `path` every `every`.
    pub fn spawn(path: &Path, name: &str, every: Duration) -> rusqlite::Result<Checkpointer> {
        let conn = crate::open(path)?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&conn, &flag, every))
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

fn checkpoint(conn: &Connection) {
    // (busy, frames in the WAL, frames copied); a busy answer is retried next time.
    let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, "WAL checkpoint failed; retried at the next interval");
    }
}

fn run(conn: &Connection, stop: &(Mutex<bool>, Condvar), every: Duration) {
    let (lock, wake) = stop;
    let mut stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let (guard, _) = wake
            .wait_timeout(stopped, every)
            .unwrap_or_else(|p| p.into_inner());
        stopped = guard;
        let last = *stopped;
        drop(stopped);
        checkpoint(conn);
        if last {
            return;
        }
        stopped = lock.lock().unwrap_or_else(|p| p.into_inner());
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wal_frames(path: &Path) -> u64 {
        std::fs::metadata(path.with_extension("db-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    #[test]
    fn the_wal_is_copied_back_without_the_writer_checkpointing() {
        let dir = std::env::temp_dir().join(format!("durable-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.db");
        let writer = crate::open(&path).unwrap();
        leave_to_checkpointer(&writer).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        let checkpointer =
            Checkpointer::spawn(&path, "test-ckpt", Duration::from_millis(20)).unwrap();
        for _ in 0..200 {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(4000))", [])
                .unwrap();
        }
        // The writer alone would never copy anything back (automatic checkpoints are off);
        // the checkpointer does, and the next write rewinds the WAL to its start.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            writer
                .execute("INSERT INTO t VALUES (zeroblob(10))", [])
                .unwrap();
            let db = std::fs::metadata(&path).unwrap().len();
            if db > 200 * 4000 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nothing was checkpointed; wal {}",
                wal_frames(&path)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(checkpointer);
        let n: i64 = writer
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert!(n > 200);
        drop(writer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
