//! One agent per state directory: an exclusive `flock` on a lock file in
//! the buffer directory, held for the agent's whole run.
//!
//! Two agents on one buffer would hand out the same sequence numbers, fight
//! over segments and delete each other's files. The lock is advisory and
//! tied to the open file, so the kernel releases it when the process ends,
//! however it ends (no stale lock after a crash or a power cut). The file
//! holds the owner's PID, so a refused start names the other process.

use rustix::fs::{FlockOperation, flock};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the buffer directory.
pub const LOCK_FILE: &str = "lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "{dir} is in use by another tributary-agent ({owner}); stop it first, or give this one its own agent.state_dir"
    )]
    Busy {
        /// The locked directory.
        dir: PathBuf,
        /// Who holds it, as far as the lock file tells.
        owner: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}; check that the directory exists and is writable")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// The held lock; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Locks `dir` (created if missing) for this process.
    pub fn take(dir: &Path) -> Result<StateLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io_err = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err)?;
        if let Err(e) = flock(&file, FlockOperation::NonBlockingLockExclusive) {
            if e == rustix::io::Errno::WOULDBLOCK {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let owner = match text.trim().parse::<u32>() {
                    Ok(pid) => format!("pid {pid}"),
                    Err(_) => "pid unknown".to_owned(),
                };
                return Err(LockError::Busy {
                    dir: dir.to_path_buf(),
                    owner,
                });
            }
            return Err(io_err(e.into()));
        }
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        write!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_and_names_the_owner() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = StateLock::take(dir.path()).expect("first lock");
        // flock locks belong to the open file, so a second open in the same
        // process conflicts just like another process would.
        match StateLock::take(dir.path()) {
            Err(LockError::Busy { owner, .. }) => {
                assert_eq!(owner, format!("pid {}", std::process::id()));
            }
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(held);
        StateLock::take(dir.path()).expect("free again after the first is dropped");
    }
}
