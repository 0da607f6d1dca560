//! What the agent remembers about commands across restarts, kept in the
//! state directory (`<state_dir>/commands.json`): the ids of the commands
//! it finished (so a redelivered command is not applied twice) and the
//! outcomes the hub has not acknowledged yet (so an outcome survives a link
//! drop or a restart and is sent again).
//!
//! Format 1, JSON (small: at most [`MAX_REMEMBERED`] ids):
//!
//! ```json
//! {"format":1,"finished":["c1","c2"],"unsent":[{"format":1,"command_id":"c2",…}],"started":"c3"}
//! ```
//!
//! `started` names the command whose actuator is being set: written before
//! the actuator is touched, cleared with its outcome. A command found
//! `started` after a restart is not applied again but reported `failed`
//! (interrupted): at most once, never twice.
//!
//! `finished` is oldest first; past [`MAX_REMEMBERED`] the oldest ids are
//! forgotten (commands apply in order through a consumer with one
//! unacknowledged command at a time, so only a redelivery of a recent one
//! can come back). A golden file of format 1 is committed (`agent/tests/
//! fixtures/commands-v1/commands.json`) and must keep loading. Written to a
//! temporary file beside it, fsynced, renamed over it, and the directory
//! fsynced before the command is acknowledged. A damaged or newer file is
//! an error naming it: the agent stops taking commands rather than risk
//! applying one twice, and leaves the file for a person to look at.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use tributary_wire::command::Outcome;

/// The format this agent writes; it reads it and nothing newer.
pub const FORMAT: u32 = 1;

/// The file's name in the state directory.
pub const FILE_NAME: &str = "commands.json";

/// Most finished command ids remembered.
pub const MAX_REMEMBERED: usize = 1024;

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    format: u32,
    finished: VecDeque<String>,
    #[serde(default)]
    unsent: Vec<Outcome>,
    /// The command being applied: recorded before its actuator is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started: Option<String>,
}

/// Why the memory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
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
    /// The file is not a command memory this agent can read.
    #[error("{} is damaged (not a command memory this agent can read); move it away to take commands again, knowing that a recent command may then be applied twice", path.display())]
    Damaged {
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

/// The finished command ids and unsent outcomes, mirrored on disk.
#[derive(Debug)]
pub struct Memory {
    path: PathBuf,
    stored: Stored,
    limit: usize,
}

impl Memory {
    /// Opens the memory in `state_dir` (empty when there is no file).
    pub fn open(state_dir: &Path) -> Result<Memory, MemoryError> {
        Memory::open_bounded(state_dir, MAX_REMEMBERED)
    }

    /// [`Memory::open`] remembering at most `limit` ids.
    pub fn open_bounded(state_dir: &Path, limit: usize) -> Result<Memory, MemoryError> {
        let path = state_dir.join(FILE_NAME);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => {
                let s: Stored =
                    serde_json::from_slice(&bytes).map_err(|source| MemoryError::Damaged {
                        path: path.clone(),
                        source,
                    })?;
                if s.format > FORMAT {
                    return Err(MemoryError::Newer {
                        path,
                        found: s.format,
                    });
                }
                s
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored {
                format: FORMAT,
                finished: VecDeque::new(),
                unsent: Vec::new(),
                started: None,
            },
            Err(source) => {
                return Err(MemoryError::Io {
                    op: "cannot read",
                    path,
                    source,
                });
            }
        };
        Ok(Memory {
            path,
            stored,
            limit: limit.max(1),
        })
    }

    /// Whether command `id` was finished already.
    pub fn finished(&self, id: &str) -> bool {
        self.stored.finished.iter().any(|f| f == id)
    }

    /// Whether command `id` was being applied when the agent last stopped
    /// (it may or may not have been set).
    pub fn interrupted(&self, id: &str) -> bool {
        self.stored.started.as_deref() == Some(id)
    }

    /// Records that command `id` is about to be applied, durably.
    pub fn start(&mut self, id: &str) -> Result<(), MemoryError> {
        self.stored.started = Some(id.to_owned());
        self.save()
    }

    /// The outcomes not yet acknowledged by the hub, oldest first.
    pub fn unsent(&self) -> &[Outcome] {
        &self.stored.unsent
    }

    /// Records `outcome`'s command as finished and the outcome as unsent,
    /// durably.
    pub fn finish(&mut self, outcome: Outcome) -> Result<(), MemoryError> {
        if !self.finished(&outcome.command_id) {
            self.stored.finished.push_back(outcome.command_id.clone());
            while self.stored.finished.len() > self.limit {
                self.stored.finished.pop_front();
            }
        }
        self.stored
            .unsent
            .retain(|o| o.command_id != outcome.command_id);
        self.stored.unsent.push(outcome);
        self.stored.started = None;
        self.save()
    }

    /// Records that the hub acknowledged the outcome of `command_id`,
    /// durably.
    pub fn sent(&mut self, command_id: &str) -> Result<(), MemoryError> {
        let before = self.stored.unsent.len();
        self.stored.unsent.retain(|o| o.command_id != command_id);
        if self.stored.unsent.len() == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> Result<(), MemoryError> {
        let bytes = serde_json::to_vec(&self.stored).expect("strings and numbers encode");
        crate::state_file::replace(&self.path, &bytes).map_err(|e| MemoryError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_wire::command::{COMMAND_FORMAT, Verdict};
    use tributary_wire::control::JsonValue;

    fn outcome(id: &str) -> Outcome {
        Outcome {
            format: COMMAND_FORMAT,
            command_id: id.into(),
            device: "pi-1".into(),
            actuator: "fan".into(),
            value: JsonValue::Int(40),
            outcome: Verdict::Applied,
            reason: None,
            issued_at_ms: 1,
            received_at_ms: 2,
            finished_at_ms: 3,
            clock: None,
        }
    }

    #[test]
    fn finished_ids_and_unsent_outcomes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Memory::open(dir.path()).unwrap();
        assert!(!m.finished("c1"));
        m.finish(outcome("c1")).unwrap();
        m.finish(outcome("c2")).unwrap();
        m.sent("c1").unwrap();
        m.start("c3").unwrap();
        let mut m = Memory::open(dir.path()).unwrap();
        assert!(m.finished("c1") && m.finished("c2") && !m.finished("c3"));
        assert!(m.interrupted("c3") && !m.interrupted("c2"));
        assert_eq!(m.unsent(), &[outcome("c2")]);
        m.finish(outcome("c3")).unwrap();
        assert!(!Memory::open(dir.path()).unwrap().interrupted("c3"));
        assert!(!dir.path().join("commands.json.tmp").exists());
    }

    #[test]
    fn the_memory_forgets_the_oldest_ids_past_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Memory::open_bounded(dir.path(), 3).unwrap();
        for i in 0..5 {
            m.finish(outcome(&format!("c{i}"))).unwrap();
            m.sent(&format!("c{i}")).unwrap();
        }
        let m = Memory::open_bounded(dir.path(), 3).unwrap();
        let kept: Vec<bool> = (0..5).map(|i| m.finished(&format!("c{i}"))).collect();
        assert_eq!(kept, [false, false, true, true, true]);
    }

    #[test]
    fn a_damaged_or_newer_file_is_refused_clearly_and_left_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(FILE_NAME);
        std::fs::write(&p, b"{\"format\":1,\"finished\":[\"c1\"").unwrap();
        let e = Memory::open(dir.path()).unwrap_err();
        assert!(matches!(e, MemoryError::Damaged { .. }), "{e}");
        assert!(e.to_string().contains("commands.json is damaged"), "{e}");
        std::fs::write(&p, b"{\"format\":2,\"finished\":[]}").unwrap();
        assert!(matches!(
            Memory::open(dir.path()),
            Err(MemoryError::Newer { found: 2, .. })
        ));
        assert!(p.exists());
    }

    #[test]
    fn the_golden_memory_of_format_1_keeps_loading() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/commands-v1");
        let m = Memory::open(&dir).unwrap();
        assert!(m.finished("commands:0:41") && m.finished("c-vent-7"));
        assert_eq!(m.unsent().len(), 1);
        assert_eq!(m.unsent()[0].command_id, "c-vent-7");
        assert_eq!(m.unsent()[0].outcome, Verdict::Refused);
    }
}
