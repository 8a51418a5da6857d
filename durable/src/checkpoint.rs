//! WAL checkpoints off the writer thread.
//!
//! SQLite checkpoints automatically inside the COMMIT that pushes the WAL past 1000 pages:
//! that commit copies the WAL into the database file and fsyncs it, and every caller of the
//! group (and of the groups queued behind it) waits tens of milliseconds on a busy disk,
//! which is the whole p99 of a durable write at a few thousand commits per second. Here a
//! thread with its own connection runs a PASSIVE checkpoint every `every` (it never blocks
//! the writer, which keeps appending meanwhile); the writer's own automatic checkpoint stays
//! on at a much larger size, as a bound if this thread falls behind.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::watch;

/// WAL pages past which the writer still checkpoints itself (the safety bound).
const WRITER_AUTOCHECKPOINT_PAGES: i64 = 20_000;

/// A running background checkpointer; stops (and closes its connection) when dropped.
pub struct Checkpointer {
    _stop: mpsc::Sender<()>,
    done: watch::Receiver<bool>,
}

impl Checkpointer {
    /// Raises the automatic checkpoint of `writer` (the write connection of `path`) to the
    /// safety bound and starts checkpointing `path` every `every` from a thread of its own.
    pub fn start(writer: &Connection, path: &Path, every: Duration) -> std::io::Result<Self> {
        let conn = crate::open(path).map_err(std::io::Error::other)?;
        writer
            .pragma_update(None, "wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
            .map_err(std::io::Error::other)?;
        let (stop, stopped) = mpsc::channel::<()>();
        let (finished, done) = watch::channel(false);
        std::thread::Builder::new()
            .name("wal-checkpoint".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %e, "background WAL checkpoint failed; retried");
                    }
                }
                drop(conn);
                let _ = finished.send(true);
            })?;
        Ok(Checkpointer { _stop: stop, done })
    }

    /// Resolves once the thread has stopped and closed its connection (after the drop).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            let _ = done.wait_for(|d| *d).await;
        }
    }
}
