//! Who works on a state file: a running daemon holds an exclusive advisory lock on
//! `<state file>.lock` (released by the OS when the process ends, even by kill -9), so
//! `prmsync erase` knows whether to hand its erasure to the daemon or carry it out itself, and a
//! second daemon on the same state file is refused.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// The held lock; dropping it releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// The lock file of a state file.
pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of `state` if no other process (or other holder in this one) has it;
/// `Ok(None)` when it is held.
pub fn try_hold(state: &Path) -> io::Result<Option<StateLock>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(state))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(StateLock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("dir");
        let state = dir.path().join("state.db");
        let first = try_hold(&state).expect("lock").expect("free");
        assert!(try_hold(&state).expect("lock").is_none(), "held");
        drop(first);
        assert!(try_hold(&state).expect("lock").is_some(), "released");
        assert_eq!(lock_path(&state), dir.path().join("state.db.lock"));
    }
}
