//! The one-process-per-file lock both processes take on their SQLite file (the collector's
//! ledger, the agent's journal lock file).
//!
//! `flock` belongs to the open file description, and a child being spawned anywhere in the
//! process shares every descriptor from fork until its exec closes them (close-on-exec). On a
//! busy machine that window lasts milliseconds, so a process restarting its collector or agent
//! in place (tests, an embedding supervisor) could see its own released lock as "in use". A
//! short bounded retry tells that instant from a real second owner, which still fails within
//! [`WAIT`] with a message naming the file.

use std::fs::{File, TryLockError};
use std::time::{Duration, Instant};

/// How long a lock held by someone else is waited for before giving up.
pub const WAIT: Duration = Duration::from_millis(1500);

/// Takes `file`'s exclusive lock, retrying for up to [`WAIT`] while it is held elsewhere.
pub fn lock_exclusive(file: &File) -> Result<(), TryLockError> {
    let deadline = Instant::now() + WAIT;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(25));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_released_during_the_wait_is_taken_and_a_held_one_is_refused() {
        let path = std::env::temp_dir().join(format!("stocksync-flock-{}", std::process::id()));
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap()
        };
        let first = open();
        first.try_lock().unwrap();
        let second = open();
        assert!(matches!(
            lock_exclusive(&second),
            Err(TryLockError::WouldBlock)
        ));
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(first);
        });
        lock_exclusive(&second).expect("taken once the first holder let go");
        releaser.join().unwrap();
        let _ = std::fs::remove_file(&path);
    }
}
