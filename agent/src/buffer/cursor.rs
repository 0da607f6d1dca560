//! Acknowledgement tracking: the window of handed-out records and the persistent ack cursor.
//!
//! Records handed out by `read` enter the [`AckWindow`] in id order. Acknowledgements may
//! arrive in any order; each one marks its entry, and acknowledged entries are popped from the
//! front, so the front is always the oldest unacknowledged record handed out. The *floor* (the
//! lowest id not yet acknowledged) is the front's id, or the read position when the window is
//! empty. The floor is what the [`CursorFile`] persists: every record below it is acknowledged.

use std::collections::VecDeque;
use std::io;
use std::path::Path;

use super::slots::{Loaded, SlotFile};

const CURSOR_MAGIC: [u8; 4] = *b"TRBC";

/// A record handed out and not yet popped from the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// Record id.
    pub id: u64,
    /// Append time, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// First id of the segment holding it.
    pub seg: u64,
    /// Offset of its frame in that segment.
    pub offset: u32,
    /// Length of its whole frame.
    pub frame_len: u32,
    /// Whether it has been acknowledged.
    pub acked: bool,
}

/// Handed-out records, oldest first, plus the resend position after a rewind.
#[derive(Debug, Default)]
pub struct AckWindow {
    /// Entries in id order.
    pub entries: VecDeque<InFlight>,
    /// Index of the entry the read position is at while resending after a rewind; equal to
    /// `entries.len()` when reading new records.
    pub resend_idx: usize,
}

impl AckWindow {
    /// Marks `id` acknowledged; false if it is not in the window or already acknowledged.
    pub fn mark(&mut self, id: u64) -> bool {
        let Ok(i) = self.entries.binary_search_by_key(&id, |e| e.id) else {
            return false;
        };
        let e = &mut self.entries[i];
        if e.acked {
            return false;
        }
        e.acked = true;
        true
    }

    /// Pops the front entry if it is acknowledged. The second value says whether the read
    /// position was at that entry (resending) and must step past it.
    pub fn pop_acked_front(&mut self) -> Option<(InFlight, bool)> {
        if !self.entries.front().is_some_and(|e| e.acked) {
            return None;
        }
        let e = self.entries.pop_front()?;
        let was_at_read_pos = self.resend_idx == 0;
        self.resend_idx = self.resend_idx.saturating_sub(1);
        Some((e, was_at_read_pos))
    }

    /// True while the read position walks over entries already handed out once.
    pub fn resending(&self) -> bool {
        self.resend_idx < self.entries.len()
    }
}

/// The persistent ack cursor: every record id below the stored value is acknowledged.
#[derive(Debug)]
pub struct CursorFile {
    file: SlotFile,
    persisted: u64,
    /// Bytes handed to `write` for this file.
    pub bytes_written: u64,
}

impl CursorFile {
    /// Opens or creates the cursor file; an unreadable one counts as 0 (everything is delivered
    /// again, the hub dedupes).
    pub fn open(path: &Path) -> io::Result<(Self, Loaded)> {
        let (file, loaded) = SlotFile::open(path, CURSOR_MAGIC)?;
        let persisted = match loaded {
            Loaded::Valid([v, _, _]) => v,
            Loaded::Fresh | Loaded::Corrupt => 0,
        };
        Ok((
            Self {
                file,
                persisted,
                bytes_written: 0,
            },
            loaded,
        ))
    }

    /// Whether the cursor file at `path` exists but holds no valid slot.
    pub fn probe(path: &Path) -> io::Result<bool> {
        SlotFile::probe(path, CURSOR_MAGIC)
    }

    /// The last durably stored floor.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// Durably stores `floor` if it moved. Returns whether the file was written.
    pub fn store(&mut self, floor: u64) -> io::Result<bool> {
        if floor == self.persisted {
            return Ok(false);
        }
        self.file.store([floor, 0, 0])?;
        self.persisted = floor;
        self.bytes_written += 48;
        Ok(true)
    }

    /// Path of the file (for error messages).
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64) -> InFlight {
        InFlight {
            id,
            appended_at_ms: 0,
            seg: 0,
            offset: 0,
            frame_len: 0,
            acked: false,
        }
    }

    #[test]
    fn out_of_order_acks_pop_only_the_contiguous_prefix() {
        let mut w = AckWindow::default();
        w.entries.extend((10..15).map(entry));
        w.resend_idx = 5;
        assert!(w.mark(12));
        assert!(w.mark(11));
        assert!(w.pop_acked_front().is_none(), "10 is still unacknowledged");
        assert!(w.mark(10));
        let popped: Vec<u64> = std::iter::from_fn(|| w.pop_acked_front())
            .map(|(e, _)| e.id)
            .collect();
        assert_eq!(popped, vec![10, 11, 12]);
        assert_eq!(w.entries.front().unwrap().id, 13);
        assert!(!w.mark(12), "already popped");
        assert!(!w.mark(99), "never handed out");
    }

    #[test]
    fn the_cursor_file_keeps_the_last_stored_floor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cursor");
        let (mut c, loaded) = CursorFile::open(&p).unwrap();
        assert_eq!(loaded, Loaded::Fresh);
        assert!(c.store(5).unwrap());
        assert!(!c.store(5).unwrap(), "unchanged floor is not rewritten");
        assert!(c.store(9).unwrap());
        drop(c);
        let (c, _) = CursorFile::open(&p).unwrap();
        assert_eq!(c.persisted(), 9);
    }
}
