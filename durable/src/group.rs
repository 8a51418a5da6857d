//! The writer thread's loop: fold waiting commands into one transaction, run each in its own
//! savepoint behind a panic boundary, commit, then answer.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::mpsc;

use crate::{CommandError, Error, GroupFailure, Store};

/// What running one command inside its savepoint came to.
pub(crate) enum Ran {
    /// Keep its effects.
    Kept,
    /// Roll its savepoint back; the group goes on.
    Failed,
    /// Roll the whole group back.
    Breaks(GroupFailure),
}

/// A queued command with its result type erased.
pub(crate) trait Job<S>: Send {
    fn run(&mut self, conn: &Connection, state: &mut S) -> Ran;
    /// Answers the caller once the group's fate is known.
    fn finish(self: Box<Self>, group: Result<(), &GroupFailure>);
}

pub(crate) struct Typed<F, D, T, E> {
    op: Option<F>,
    deliver: D,
    result: Option<Result<T, Error<E>>>,
}

impl<F, D, T, E> Typed<F, D, T, E> {
    pub(crate) fn new(op: F, deliver: D) -> Self {
        Typed {
            op: Some(op),
            deliver,
            result: None,
        }
    }
}

impl<S, F, D, T, E> Job<S> for Typed<F, D, T, E>
where
    T: Send,
    E: CommandError + Send,
    F: FnOnce(&Connection, &mut S) -> Result<T, E> + Send,
    D: FnOnce(Result<T, Error<E>>) + Send,
{
    fn run(&mut self, conn: &Connection, state: &mut S) -> Ran {
        let Some(op) = self.op.take() else {
            return Ran::Failed;
        };
        let (result, ran) = match catch_unwind(AssertUnwindSafe(|| op(conn, state))) {
            Ok(Ok(value)) => (Ok(value), Ran::Kept),
            Ok(Err(e)) => {
                let ran = e.breaks_group().map_or(Ran::Failed, Ran::Breaks);
                (Err(Error::Command(e)), ran)
            }
            Err(panic) => {
                let what = panic_text(panic.as_ref());
                tracing::error!(panic = %what, "write panicked; rolled back, the writer goes on");
                (Err(Error::Panicked(what)), Ran::Failed)
            }
        };
        self.result = Some(result);
        ran
    }

    fn finish(self: Box<Self>, group: Result<(), &GroupFailure>) {
        let answer = match (self.result, group) {
            // Its own failure is the most precise answer whatever became of the group.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(value)), Ok(())) => Ok(value),
            (_, Err(failure)) => Err(Error::Group(failure.clone())),
            (None, Ok(())) => Err(Error::Closed),
        };
        (self.deliver)(answer)
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-text panic".into())
}

pub(crate) fn run<S: Store>(
    mut conn: Connection,
    mut state: S,
    mut rx: mpsc::Receiver<Box<dyn Job<S>>>,
    max_group: usize,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut group = vec![first];
        while group.len() < max_group {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, &mut state, group);
    }
}

fn commit_group<S: Store>(conn: &mut Connection, state: &mut S, group: Vec<Box<dyn Job<S>>>) {
    let begin = state.mark();
    let mut ran = Vec::with_capacity(group.len());
    let mut waiting = group.into_iter();
    // Our own code between the commands (savepoints, the store's hooks) is behind a boundary
    // too: whatever panics, the callers hear and the writer goes on.
    let result = catch_unwind(AssertUnwindSafe(|| {
        run_group(conn, state, &mut waiting, &mut ran)
    }))
    .unwrap_or_else(|panic| {
        Err(GroupFailure {
            detail: format!("writer panicked: {}", panic_text(panic.as_ref())),
            disk_full: false,
        })
    });
    guarded("the store's after-group hook", || match &result {
        Ok(()) => state.committed(),
        Err(failure) => {
            tracing::error!(error = %failure, "group not committed; every caller in it hears why");
            state.rewind(begin);
            state.rolled_back(failure);
        }
    });
    for job in ran.into_iter().chain(waiting) {
        // A caller's answer callback that panics loses only that answer.
        guarded("an answer callback", || {
            job.finish(result.as_ref().map(|_| ()))
        });
    }
}

/// Runs `f`; a panic in it is logged, never the end of the writer thread.
fn guarded(what: &str, f: impl FnOnce()) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(f)) {
        let text = panic_text(panic.as_ref());
        tracing::error!(panic = %text, "{what} panicked; the writer goes on");
    }
}

fn run_group<S: Store>(
    conn: &mut Connection,
    state: &mut S,
    waiting: &mut std::vec::IntoIter<Box<dyn Job<S>>>,
    ran: &mut Vec<Box<dyn Job<S>>>,
) -> Result<(), GroupFailure> {
    // IMMEDIATE takes the write lock before the first read. A deferred transaction that
    // reads, then writes, fails at once with SQLITE_BUSY when another connection to the
    // file committed in between, and the busy timeout cannot save it.
    let mut tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for mut job in waiting.by_ref() {
        let outcome = run_one(&mut tx, state, job.as_mut());
        ran.push(job);
        outcome?;
    }
    state.before_commit(&tx)?;
    tx.commit()?;
    Ok(())
}

/// Runs one command in its own savepoint: kept, or rolled back with what it changed in `state`.
fn run_one<S: Store>(
    tx: &mut Transaction<'_>,
    state: &mut S,
    job: &mut dyn Job<S>,
) -> Result<(), GroupFailure> {
    let mark = state.mark();
    let mut savepoint = tx.savepoint()?;
    let ran = job.run(&savepoint, state);
    if matches!(ran, Ran::Kept) && !savepoint.is_autocommit() {
        return Ok(savepoint.commit()?);
    }
    state.rewind(mark);
    if savepoint.is_autocommit() {
        // SQLite rolled the whole transaction back (a full disk can): the savepoint is gone
        // and nothing more may run, it would run outside any transaction.
        savepoint.set_drop_behavior(rusqlite::DropBehavior::Ignore);
        return Err(match ran {
            Ran::Breaks(failure) => failure,
            _ => GroupFailure {
                detail: "transaction rolled back by SQLite".into(),
                disk_full: false,
            },
        });
    }
    savepoint.rollback()?;
    savepoint.commit()?;
    match ran {
        Ran::Breaks(failure) => Err(failure),
        _ => Ok(()),
    }
}
