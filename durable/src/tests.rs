//! The writer against real SQLite files in a temp directory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rusqlite::Connection;

use super::*;

/// Counts commits and rollbacks; `rows` is what the commands say they inserted.
#[derive(Default)]
struct Counted {
    commits: Arc<AtomicUsize>,
    rollbacks: Arc<AtomicUsize>,
    rows: u64,
    fail_commit: bool,
}

impl Store for Counted {
    type Mark = u64;
    fn mark(&self) -> u64 {
        self.rows
    }
    fn rewind(&mut self, mark: u64) {
        self.rows = mark;
    }
    fn before_commit(&mut self, conn: &Connection) -> rusqlite::Result<()> {
        if self.fail_commit {
            // A failing last statement stands in for a COMMIT that cannot happen.
            conn.execute("INSERT INTO missing (id) VALUES (1)", [])?;
        }
        Ok(())
    }
    fn committed(&mut self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
    }
    fn rolled_back(&mut self, _: &GroupFailure) {
        self.rollbacks.fetch_add(1, Ordering::SeqCst);
    }
}

struct File {
    dir: std::path::PathBuf,
}

impl File {
    fn new(name: &str) -> File {
        let dir =
            std::env::temp_dir().join(format!("stocksync-durable-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conn = open(&dir.join("db")).unwrap();
        conn.execute_batch("CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY)")
            .unwrap();
        File { dir }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.join("db")
    }
    fn writer(&self, state: Counted) -> Writer<Counted> {
        let options = Options {
            name: "test-writer".into(),
            max_group: 64,
            queue: 64,
        };
        Writer::spawn(open(&self.path()).unwrap(), state, options).unwrap()
    }
    fn ids(&self) -> Vec<i64> {
        let conn = open(&self.path()).unwrap();
        let mut stmt = conn.prepare("SELECT id FROM t ORDER BY id").unwrap();
        let ids = stmt.query_map([], |r| r.get(0)).unwrap();
        ids.collect::<Result<_, _>>().unwrap()
    }
}

impl Drop for File {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn insert(id: i64) -> impl FnOnce(&Connection, &mut Counted) -> rusqlite::Result<i64> + Send {
    move |conn, state| {
        conn.execute("INSERT INTO t (id) VALUES (?1)", [id])?;
        state.rows += 1;
        Ok(id)
    }
}

type Answer = tokio::sync::oneshot::Receiver<Result<i64, Error<rusqlite::Error>>>;

/// Queues `op` without waiting for its answer.
async fn queue<F>(writer: &Writer<Counted>, op: F) -> Answer
where
    F: FnOnce(&Connection, &mut Counted) -> rusqlite::Result<i64> + Send + 'static,
{
    let (reply, answer) = tokio::sync::oneshot::channel();
    writer
        .submit(op, move |r| drop(reply.send(r)))
        .await
        .unwrap();
    answer
}

/// Holds the writer inside a command until the returned sender is dropped, so that the
/// commands queued meanwhile form the next group.
async fn hold(writer: &Writer<Counted>) -> (std::sync::mpsc::Sender<()>, Answer) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (running, started) = tokio::sync::oneshot::channel();
    let answer = queue(writer, move |_, _| {
        let _ = running.send(());
        let _ = held.recv();
        Ok(0)
    })
    .await;
    started.await.unwrap();
    (release, answer)
}

#[tokio::test]
async fn waiting_commands_are_folded_into_one_commit() {
    let file = File::new("group");
    let state = Counted::default();
    let commits = state.commits.clone();
    let writer = file.writer(state);
    let (release, held) = hold(&writer).await;
    let mut answers = Vec::new();
    for id in 1..=10 {
        answers.push(queue(&writer, insert(id)).await);
    }
    drop(release);
    held.await.unwrap().unwrap();
    for (id, answer) in (1..=10).zip(answers) {
        assert_eq!(answer.await.unwrap().unwrap(), id);
    }
    assert_eq!(
        commits.load(Ordering::SeqCst),
        2,
        "the held command, then all ten at once"
    );
    assert_eq!(file.ids(), (1..=10).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_failing_command_rolls_back_only_itself() {
    let file = File::new("fail");
    let writer = file.writer(Counted::default());
    let (release, _held) = hold(&writer).await;
    let first = queue(&writer, insert(1)).await;
    let bad = queue(&writer, |conn, state| {
        conn.execute("INSERT INTO t (id) VALUES (2)", [])?;
        state.rows += 1;
        // Fails after a row went in: the row must go with it.
        conn.execute("INSERT INTO t (id) VALUES (1)", [])?;
        Ok(2)
    })
    .await;
    let third = queue(&writer, |conn, state| {
        conn.execute("INSERT INTO t (id) VALUES (3)", [])?;
        state.rows += 1;
        Ok(state.rows as i64)
    })
    .await;
    drop(release);
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert!(matches!(bad.await.unwrap(), Err(Error::Command(_))));
    // The failed command's change to the state was undone too: 1 row, then the third.
    assert_eq!(third.await.unwrap().unwrap(), 2);
    assert_eq!(file.ids(), vec![1, 3]);
}

#[tokio::test]
async fn a_panicking_command_fails_only_its_caller_and_the_writer_goes_on() {
    let file = File::new("panic");
    let writer = file.writer(Counted::default());
    let (release, _held) = hold(&writer).await;
    let before = queue(&writer, insert(1)).await;
    let panicking = queue(&writer, |conn, _| {
        conn.execute("INSERT INTO t (id) VALUES (2)", [])?;
        panic!("overflow in a debug build")
    })
    .await;
    drop(release);
    assert_eq!(before.await.unwrap().unwrap(), 1);
    match panicking.await.unwrap() {
        Err(Error::Panicked(what)) => assert!(what.contains("overflow"), "{what}"),
        other => panic!("expected a panic error, got {other:?}"),
    }
    assert_eq!(writer.call(insert(3)).await.unwrap(), 3);
    assert_eq!(file.ids(), vec![1, 3]);
}

#[tokio::test]
async fn the_reply_comes_after_the_commit() {
    let file = File::new("visible");
    let writer = file.writer(Counted::default());
    let reader = open(&file.path()).unwrap();
    for id in 1..=20 {
        // The moment the caller hears, another connection sees the row.
        writer.call(insert(id)).await.unwrap();
        let seen: i64 = reader
            .query_row("SELECT COUNT(*) FROM t WHERE id = ?1", [id], |r| r.get(0))
            .unwrap();
        assert_eq!(seen, 1, "row {id} not visible when its caller was answered");
    }
}

#[tokio::test]
async fn a_failed_commit_fails_every_caller_of_the_group() {
    let file = File::new("commit");
    let state = Counted {
        fail_commit: true,
        ..Counted::default()
    };
    let rollbacks = state.rollbacks.clone();
    let writer = file.writer(state);
    let (release, held) = hold(&writer).await;
    let answers = [
        queue(&writer, insert(1)).await,
        queue(&writer, insert(2)).await,
    ];
    drop(release);
    assert!(matches!(held.await.unwrap(), Err(Error::Group(_))));
    for answer in answers {
        assert!(matches!(answer.await.unwrap(), Err(Error::Group(_))));
    }
    assert_eq!(rollbacks.load(Ordering::SeqCst), 2);
    assert!(file.ids().is_empty());
}

#[tokio::test]
async fn the_writer_closes_the_file_when_the_last_handle_is_dropped() {
    let file = File::new("closed");
    let writer = file.writer(Counted::default());
    let closed = writer.closed();
    writer.call(insert(1)).await.unwrap();
    drop(writer);
    tokio::time::timeout(std::time::Duration::from_secs(10), closed)
        .await
        .expect("writer thread ended");
}

#[tokio::test]
async fn a_panicking_answer_callback_loses_only_its_answer() {
    let file = File::new("deliver");
    let writer = file.writer(Counted::default());
    writer
        .submit(insert(1), |_| panic!("bug in a caller's callback"))
        .await
        .unwrap();
    assert_eq!(writer.call(insert(2)).await.unwrap(), 2);
    assert_eq!(file.ids(), vec![1, 2]);
}
