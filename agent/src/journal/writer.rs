//! What the journal's writer thread (`stocksync-durable`) owns beside its connection: the
//! next seq and the backlog, kept in step with the file. One transaction per group of
//! waiting commands (group commit), one fsync per group. A group that fails (a full disk, a
//! storage error) answers every caller in it with the reason and changes nothing; the writer
//! goes on with the next group, so a full disk is answered `503 disk full` and clears by
//! itself once space is back. A command that fails or panics fails only its caller.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::Connection;
use stocksync_durable::{CommandError, Error, GroupFailure, Store};

use super::{JournalError, Options, Shared};

pub(super) struct State {
    pub(super) shared: Arc<Shared>,
    pub(super) next_seq: u64,
    /// Unacknowledged movements, as of the commands run so far.
    pub(super) backlog: u64,
    pub(super) options: Options,
}

impl Store for State {
    /// `(next_seq, backlog)`: what a rolled-back command or group must give back.
    type Mark = (u64, u64);

    fn mark(&self) -> (u64, u64) {
        (self.next_seq, self.backlog)
    }

    fn rewind(&mut self, (next_seq, backlog): (u64, u64)) {
        // Nothing of a rolled-back command is on disk: its seqs were not used.
        self.next_seq = next_seq;
        self.backlog = backlog;
    }

    fn before_commit(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute(
            "INSERT INTO meta VALUES ('last_seq', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(self.next_seq - 1) as i64],
        )?;
        Ok(())
    }

    fn committed(&mut self) {
        let shared = &self.shared;
        shared.disk_full.store(false, Ordering::Relaxed);
        shared.backlog.store(self.backlog, Ordering::Relaxed);
        let last_seq = self.next_seq - 1;
        if shared.last_seq.swap(last_seq, Ordering::Relaxed) != last_seq {
            shared.appended.notify_waiters();
            shared.appended.notify_one();
        }
    }

    fn rolled_back(&mut self, failure: &GroupFailure) {
        tracing::error!(error = %failure, "journal commit failed");
        self.shared
            .disk_full
            .store(failure.disk_full, Ordering::Relaxed);
    }
}

impl CommandError for JournalError {
    /// On a full disk SQLite may roll the whole transaction back: nothing more may run in
    /// the group (it would run outside any transaction), every caller hears `disk full`.
    fn breaks_group(&self) -> Option<GroupFailure> {
        match self {
            JournalError::DiskFull { detail } => Some(GroupFailure {
                detail: detail.clone(),
                disk_full: true,
            }),
            _ => None,
        }
    }
}

impl From<Error<JournalError>> for JournalError {
    fn from(e: Error<JournalError>) -> JournalError {
        match e {
            Error::Command(e) => e,
            Error::Panicked(what) => JournalError::Failed {
                detail: format!("journal write panicked, rolled back: {what}"),
            },
            Error::Group(failure) if failure.disk_full => JournalError::DiskFull {
                detail: failure.detail,
            },
            Error::Group(failure) => JournalError::Failed {
                detail: failure.detail,
            },
            Error::Closed => JournalError::Closed,
        }
    }
}
