//! One process at a time per ledger file.
//!
//! Two collectors on one ledger would both write it and both take the broker session of
//! `stocksync-collector`, kicking each other off; a rebuild beside a running collector
//! rewrites the projection under it. So the collector and `rebuild` take an exclusive lock
//! on the ledger file before anything else (before binding, before the broker), and a
//! second one fails within a moment (`stocksync_runtime::flock`) with a message naming the file, having written nothing. The
//! lock is the OS's (`flock`), released when the process ends, so a crash leaves no stale
//! lock behind; SQLite's own locks are separate and unaffected.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// Why the ledger could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "ledger {path} is in use: another collector (or a rebuild) holds its lock; stop it first"
    )]
    InUse { path: PathBuf },
    #[error("cannot open ledger {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Held for as long as the ledger is in use; dropping it releases the lock.
#[derive(Debug)]
pub struct LedgerLock {
    _file: File,
}

impl LedgerLock {
    /// Locks the ledger file at `path` (creating it if missing), or fails at once.
    pub fn acquire(path: &Path) -> Result<LedgerLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        match stocksync_runtime::flock::lock_exclusive(&file) {
            Ok(()) => Ok(LedgerLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(LockError::InUse {
                path: path.to_owned(),
            }),
            Err(TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_ledger_fails_naming_it() {
        let path = std::env::temp_dir().join(format!("stocksync-lock-{}.db", std::process::id()));
        let first = LedgerLock::acquire(&path).unwrap();
        let err = LedgerLock::acquire(&path).unwrap_err();
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        drop(first);
        LedgerLock::acquire(&path).expect("released on drop");
        let _ = std::fs::remove_file(&path);
    }
}
