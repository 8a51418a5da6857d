//! The journal's writer thread: one connection, one transaction per group of waiting
//! commands (group commit), one fsync per group. A group that fails (a full disk, a storage
//! error, even a panic in it) answers every caller in it with the reason and changes nothing;
//! the writer goes on with the next group, so a full disk is answered `503 disk full` and
//! clears by itself once space is back.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{Connection, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::write::apply;
use super::{now_ms, Appended, Command, JournalError, Options, Shared, MAX_GROUP};

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) next_seq: u64,
    pub(super) options: Options,
}

/// A command's answer, held until the group's commit is on disk.
pub(super) enum Pending {
    Append(
        oneshot::Sender<Result<Appended, JournalError>>,
        Result<Appended, JournalError>,
    ),
    Ack(
        oneshot::Sender<Result<u64, JournalError>>,
        Result<u64, JournalError>,
    ),
    Reject(
        oneshot::Sender<Result<(), JournalError>>,
        Result<(), JournalError>,
    ),
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(c) => group.push(c),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    /// Runs and commits one group; on failure (or a panic in it) every caller in it hears
    /// why, and the writer goes on with the next group.
    fn commit_group(&mut self, group: Vec<Command>) {
        let seq_before = self.next_seq;
        let mut pending = Vec::with_capacity(group.len());
        let mut rest = group.into_iter();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.try_commit(&mut rest, &mut pending)
        }))
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Failure::Panic(what))
        });
        match result {
            Ok(()) => {
                self.shared.disk_full.store(false, Ordering::Relaxed);
                if self.next_seq != seq_before {
                    self.shared
                        .last_seq
                        .store(self.next_seq - 1, Ordering::Relaxed);
                    self.shared.appended.notify_waiters();
                    self.shared.appended.notify_one();
                }
                for p in pending {
                    p.deliver(&self.shared);
                }
            }
            Err(failure) => {
                // Nothing of the group is on disk: seqs were not used.
                tracing::error!(error = %failure, "journal commit failed");
                self.next_seq = seq_before;
                let disk_full = matches!(failure, Failure::DiskFull(_));
                self.shared.disk_full.store(disk_full, Ordering::Relaxed);
                for p in pending {
                    p.fail(failure.to_error());
                }
                for command in rest {
                    command.fail(failure.to_error());
                }
            }
        }
    }

    fn try_commit(
        &mut self,
        commands: &mut std::vec::IntoIter<Command>,
        pending: &mut Vec<Pending>,
    ) -> Result<(), Failure> {
        let backlog_before = self.shared.backlog.load(Ordering::Relaxed);
        // IMMEDIATE takes the write lock before the first read. A deferred transaction that
        // reads, then writes, fails at once with SQLITE_BUSY when another connection to the
        // file committed in between, and the busy timeout cannot save it.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut backlog = backlog_before;
        for command in commands.by_ref() {
            let answer = apply(
                &tx,
                command,
                &mut self.next_seq,
                &mut backlog,
                &self.options,
            )?;
            let full = answer.as_ref().and_then(Pending::disk_full);
            pending.extend(answer);
            // On a full disk SQLite may roll the whole transaction back; nothing more may
            // run in this group (it would run outside any transaction).
            if let Some(detail) = full {
                return Err(Failure::DiskFull(detail));
            }
            if tx.is_autocommit() {
                return Err(Failure::Storage("transaction rolled back by SQLite".into()));
            }
        }
        tx.execute(
            "INSERT INTO meta VALUES ('last_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(self.next_seq - 1) as i64],
        )?;
        tx.commit()?;
        self.shared.backlog.store(backlog, Ordering::Relaxed);
        Ok(())
    }
}

/// Why a group did not commit, in the words its callers get.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("disk full: {0}")]
    DiskFull(String),
    #[error("{0}")]
    Storage(String),
    #[error("journal write panicked, group rolled back: {0}")]
    Panic(String),
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Failure {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => Failure::DiskFull(e.to_string()),
            _ => Failure::Storage(e.to_string()),
        }
    }
}

impl Failure {
    fn to_error(&self) -> JournalError {
        match self {
            Failure::DiskFull(detail) => JournalError::DiskFull {
                detail: detail.clone(),
            },
            other => JournalError::Failed {
                detail: other.to_string(),
            },
        }
    }
}

impl Pending {
    /// The detail of a disk-full failure this command met, if it met one.
    fn disk_full(&self) -> Option<String> {
        let error = match self {
            Pending::Append(_, Err(e)) => e,
            Pending::Ack(_, Err(e)) => e,
            Pending::Reject(_, Err(e)) => e,
            _ => return None,
        };
        match error {
            JournalError::DiskFull { detail } => Some(detail.clone()),
            _ => None,
        }
    }

    fn deliver(self, shared: &Shared) {
        match self {
            Pending::Append(tx, r) => drop(tx.send(r)),
            Pending::Ack(tx, r) => {
                if r.is_ok() {
                    shared.last_ack_ms.store(now_ms(), Ordering::Relaxed);
                }
                drop(tx.send(r))
            }
            Pending::Reject(tx, r) => drop(tx.send(r)),
        }
    }

    fn fail(self, e: JournalError) {
        match self {
            Pending::Append(tx, _) => drop(tx.send(Err(e))),
            Pending::Ack(tx, _) => drop(tx.send(Err(e))),
            Pending::Reject(tx, _) => drop(tx.send(Err(e))),
        }
    }
}

impl Command {
    fn fail(self, e: JournalError) {
        match self {
            Command::Append { reply, .. } => drop(reply.send(Err(e))),
            Command::AppendStream { reply, .. } => drop(reply.send(Err(e))),
            Command::Ack { reply, .. } => drop(reply.send(Err(e))),
            Command::Reject { reply, .. } => drop(reply.send(Err(e))),
            Command::Prune { .. } | Command::RejectForwarded { .. } => {}
        }
    }
}
