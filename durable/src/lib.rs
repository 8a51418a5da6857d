//! The single-writer primitive of every stocksync SQLite file (the agent's journal, the
//! collector's ledger).
//!
//! SQLite has one writer at a time and an fsync per COMMIT, so one thread owns the write
//! connection and every caller sends it a typed command. The thread takes everything that is
//! waiting (up to `max_group`) and runs it in one transaction: one fsync for the group (group
//! commit). Each command runs in its own savepoint and behind its own panic boundary, so a
//! command that fails or panics is rolled back and fails only its caller; the writer goes on.
//! A caller hears success only after COMMIT returned (the data is on disk and visible to
//! readers); a COMMIT that fails fails every caller of the group, and nothing of it is kept.
//!
//! Readers open their own connections with [`open`]: WAL lets them read while the writer writes.

mod group;
pub mod migrate;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot, watch};

use group::{Job, Typed};

/// Opens `path` the way every stocksync file is opened: WAL (readers beside the writer),
/// `synchronous = FULL` (a commit is fsynced, so an answer after it means on disk) and a
/// busy timeout for the moments another connection holds the lock.
pub fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// How the writer runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name of the writer thread (seen in logs and panics).
    pub name: String,
    /// Most commands folded into one transaction.
    pub max_group: usize,
    /// Commands queued before callers wait.
    pub queue: usize,
}

/// Why a whole group was not committed: nothing of it is on disk.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
pub struct GroupFailure {
    pub detail: String,
    /// SQLite reported a full disk (or a file at its size limit).
    pub disk_full: bool,
}

impl From<rusqlite::Error> for GroupFailure {
    fn from(e: rusqlite::Error) -> GroupFailure {
        GroupFailure {
            disk_full: e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull),
            detail: e.to_string(),
        }
    }
}

/// Why a command did not take effect.
#[derive(Debug)]
pub enum Error<E> {
    /// The command returned an error; its savepoint was rolled back.
    Command(E),
    /// The command panicked; its savepoint was rolled back and the writer went on.
    Panicked(String),
    /// Its group was not committed (COMMIT failed, or a command broke the transaction).
    Group(GroupFailure),
    /// The writer has stopped.
    Closed,
}

impl<E: std::fmt::Display> std::fmt::Display for Error<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Command(e) => e.fmt(f),
            Error::Panicked(what) => write!(f, "write panicked and was rolled back: {what}"),
            Error::Group(failure) => write!(f, "write not committed: {failure}"),
            Error::Closed => f.write_str("writer has stopped"),
        }
    }
}

impl<E: std::fmt::Debug + std::fmt::Display> std::error::Error for Error<E> {}

/// What a command's error means for the rest of its group.
pub trait CommandError {
    /// `Some` when the error leaves the transaction unusable (a full disk): the whole group
    /// is rolled back and every caller in it hears this failure.
    fn breaks_group(&self) -> Option<GroupFailure> {
        None
    }
}

impl CommandError for rusqlite::Error {}

/// The state a writer owns beside its connection (counters, change lists), kept in step with
/// what is on disk: what a rolled-back command or group changed in it is undone.
pub trait Store: Send + 'static {
    /// A note of the state, taken before a command and before a group.
    type Mark;
    fn mark(&self) -> Self::Mark;
    /// Undoes everything changed since `mark` was taken.
    fn rewind(&mut self, mark: Self::Mark);
    /// Runs in the group's transaction just before COMMIT; an error fails the group.
    fn before_commit(&mut self, _conn: &Connection) -> rusqlite::Result<()> {
        Ok(())
    }
    /// After COMMIT returned, before any caller of the group hears.
    fn committed(&mut self) {}
    /// After a group was rolled back (the state is already rewound).
    fn rolled_back(&mut self, _failure: &GroupFailure) {}
}

/// Handle to a writer thread; cheap to clone. The thread ends when the last handle is dropped.
pub struct Writer<S> {
    tx: mpsc::Sender<Box<dyn Job<S>>>,
    closed: watch::Receiver<bool>,
}

impl<S> Clone for Writer<S> {
    fn clone(&self) -> Self {
        Writer {
            tx: self.tx.clone(),
            closed: self.closed.clone(),
        }
    }
}

impl<S: Store> Writer<S> {
    /// Starts the writer thread owning `conn` (opened with [`open`]) and `state`.
    pub fn spawn(conn: Connection, state: S, options: Options) -> std::io::Result<Writer<S>> {
        // Every command runs in a savepoint, so each page it touches first is copied to the
        // statement sub-journal: a temp file by default, one pwrite per page. In memory it
        // costs nothing on disk; it is only needed to roll back a savepoint, never to recover
        // after a crash (the WAL does that).
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(std::io::Error::other)?;
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let (done, closed) = watch::channel(false);
        let max_group = options.max_group.max(1);
        std::thread::Builder::new()
            .name(options.name)
            .spawn(move || {
                group::run(conn, state, rx, max_group);
                // Connection and state are dropped by now: the file is closed.
                let _ = done.send(true);
            })?;
        Ok(Writer { tx, closed })
    }

    /// Queues `op`; `deliver` gets its result on the writer thread once the group is
    /// committed (or the command failed). Returns `Err(Closed)` if the writer has stopped.
    pub async fn submit<T, E, F, D>(&self, op: F, deliver: D) -> Result<(), Error<E>>
    where
        T: Send + 'static,
        E: CommandError + Send + 'static,
        F: FnOnce(&Connection, &mut S) -> Result<T, E> + Send + 'static,
        D: FnOnce(Result<T, Error<E>>) + Send + 'static,
    {
        let job: Box<dyn Job<S>> = Box::new(Typed::new(op, deliver));
        self.tx.send(job).await.map_err(|_| Error::Closed)
    }

    /// Runs `op` in the writer's next group and returns its result once that group is on disk.
    pub async fn call<T, E, F>(&self, op: F) -> Result<T, Error<E>>
    where
        T: Send + 'static,
        E: CommandError + Send + 'static,
        F: FnOnce(&Connection, &mut S) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.submit(op, move |r| drop(reply.send(r))).await?;
        answer.await.unwrap_or(Err(Error::Closed))
    }

    /// Resolves once the writer thread has ended and closed the file.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.clone();
        async move {
            let _ = closed.wait_for(|c| *c).await;
        }
    }
}
