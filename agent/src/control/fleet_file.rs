//! The fleet value in force, kept in the state directory
//! (`<state_dir>/fleet-config.json`), so that an agent that restarts while
//! the hub is unreachable starts with the configuration it last applied.
//!
//! Format 1, JSON (small, written rarely, read by people when in doubt):
//!
//! ```json
//! {"format":1,"bucket":"tributary-config","key":"pi-1","revision":7,"toml":"[[sensors.simulated]]\n…"}
//! ```
//!
//! A golden file of format 1 is committed (`agent/tests/fixtures/
//! fleet-config-v1.json`) and must keep loading. Written to a temporary
//! file beside it, fsynced, renamed over it, and the directory fsynced: a
//! power cut leaves the old copy or the new one, never a mix. A copy of a
//! later format, or one that does not parse, is not used (the agent runs
//! the local file until the fleet store answers) and is left in place for
//! a person to look at.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The format this agent writes; it reads it and nothing newer.
pub const FORMAT: u32 = 1;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "fleet-config.json";

/// A fleet value as kept on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    /// [`FORMAT`] when written by this agent.
    pub format: u32,
    /// The KV bucket it came from.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Its KV revision.
    pub revision: u64,
    /// The fleet document.
    pub toml: String,
}

/// Why the kept copy could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FleetFileError {
    /// Reading, writing, syncing or renaming failed.
    #[error("{op} {}", path.display())]
    Io {
        /// What was done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a fleet copy this agent can read.
    #[error("{} is not a fleet configuration copy this agent can read", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer agent.
    #[error("{} has format {found}; this agent reads format {FORMAT}", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u32,
    },
}

/// The path of the copy in `state_dir`.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// Reads the copy at `path`; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<Stored>, FleetFileError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(FleetFileError::Io {
                op: "cannot read",
                path: path.to_owned(),
                source,
            });
        }
    };
    let stored: Stored =
        serde_json::from_slice(&bytes).map_err(|source| FleetFileError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
    if stored.format > FORMAT {
        return Err(FleetFileError::Newer {
            path: path.to_owned(),
            found: stored.format,
        });
    }
    Ok(Some(stored))
}

/// Replaces the copy at `path` with `stored`, durably.
pub fn save(path: &Path, stored: &Stored) -> Result<(), FleetFileError> {
    let bytes = serde_json::to_vec(stored).expect("strings and numbers encode");
    crate::state_file::replace(path, &bytes).map_err(|e| FleetFileError::Io {
        op: e.op,
        path: e.path,
        source: e.source,
    })
}

/// Removes the copy at `path` (the key was deleted), durably.
pub fn remove(path: &Path) -> Result<(), FleetFileError> {
    match std::fs::remove_file(path) {
        Ok(()) => crate::state_file::sync_dir(path).map_err(|source| FleetFileError::Io {
            op: "cannot sync the directory of",
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(FleetFileError::Io {
            op: "cannot remove",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(revision: u64) -> Stored {
        Stored {
            format: FORMAT,
            bucket: "tributary-config".into(),
            key: "pi-1".into(),
            revision,
            toml: "[[sensors.simulated]]\nid = \"t\"\n".into(),
        }
    }

    #[test]
    fn a_saved_copy_loads_back_and_a_new_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert_eq!(load(&p).unwrap(), None);
        save(&p, &stored(1)).unwrap();
        save(&p, &stored(2)).unwrap();
        assert_eq!(load(&p).unwrap(), Some(stored(2)));
        assert!(!p.with_extension("json.tmp").exists());
        remove(&p).unwrap();
        remove(&p).unwrap();
        assert_eq!(load(&p).unwrap(), None);
    }

    #[test]
    fn the_golden_copy_of_format_1_keeps_loading() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fleet-config-v1.json");
        let s = load(&p).unwrap().unwrap();
        assert_eq!((s.format, s.revision, s.key.as_str()), (1, 7, "pi-kitchen"));
        assert!(s.toml.contains("[[sensors.simulated]]"));
    }

    #[test]
    fn a_newer_or_broken_copy_is_an_error_and_is_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        let mut newer = stored(3);
        newer.format = FORMAT + 1;
        std::fs::write(&p, serde_json::to_vec(&newer).unwrap()).unwrap();
        assert!(matches!(
            load(&p),
            Err(FleetFileError::Newer { found: 2, .. })
        ));
        std::fs::write(&p, b"{\"format\":1,").unwrap();
        assert!(matches!(load(&p), Err(FleetFileError::Unreadable { .. })));
        assert!(p.exists());
    }
}
