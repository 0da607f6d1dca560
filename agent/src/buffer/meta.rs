//! The meta file: installation epoch and the high-water marks that keep record ids and reading
//! sequence numbers from ever repeating.
//!
//! Ids and sequence numbers are handed out from memory, but only below a *reservation* that is
//! already durable in the meta file. When the next number would reach the reservation, the
//! reservation is moved [`RESERVE_BLOCK`] numbers ahead and synced first. After a crash the
//! counters restart at the reservation, skipping at most one block, so a number handed out
//! before the crash is never handed out again. A clean [`Buffer::close`](super::Buffer::close)
//! lowers the reservations to the next unused numbers, so clean restarts leave no gap.

use std::io;
use std::ops::Range;
use std::path::Path;

use super::slots::{Loaded, SlotFile};

/// How far ahead record ids and sequence numbers are reserved.
pub const RESERVE_BLOCK: u64 = 4096;
const META_MAGIC: [u8; 4] = *b"TRBM";

/// What opening the meta file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaState {
    /// There was no meta file: a new epoch was chosen.
    Created,
    /// The meta file was read.
    Loaded,
    /// The meta file was unreadable: a new epoch was chosen, sequence numbers restart at 0
    /// under it (still unique, because the epoch is part of a reading's id).
    Reset,
}

/// Epoch plus reservations, backed by a two-slot file.
#[derive(Debug)]
pub struct Meta {
    file: SlotFile,
    epoch: u64,
    record_hwm: u64,
    seq_hwm: u64,
    next_seq: u64,
    /// Bytes handed to `write` for this file, for the bytes-written statistic.
    pub bytes_written: u64,
}

impl Meta {
    /// Opens or creates the meta file at `path`.
    pub fn open(path: &Path) -> io::Result<(Self, MetaState)> {
        let (file, loaded) = SlotFile::open(path, META_MAGIC)?;
        let (epoch, record_hwm, seq_hwm, state) = match loaded {
            Loaded::Valid([epoch, record_hwm, seq_hwm]) => {
                (epoch, record_hwm, seq_hwm, MetaState::Loaded)
            }
            Loaded::Fresh => (new_epoch(), 0, 0, MetaState::Created),
            Loaded::Corrupt => (new_epoch(), 0, 0, MetaState::Reset),
        };
        let mut meta = Self {
            file,
            epoch,
            record_hwm,
            seq_hwm,
            next_seq: seq_hwm,
            bytes_written: 0,
        };
        if state != MetaState::Loaded {
            meta.store()?;
        }
        Ok((meta, state))
    }

    /// Whether the meta file at `path` exists but holds no valid slot.
    pub fn probe(path: &Path) -> io::Result<bool> {
        SlotFile::probe(path, META_MAGIC)
    }

    fn store(&mut self) -> io::Result<()> {
        self.file
            .store([self.epoch, self.record_hwm, self.seq_hwm])?;
        self.bytes_written += 48;
        Ok(())
    }

    /// The installation epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Lowest record id that may be handed out after this open.
    pub fn record_floor(&self) -> u64 {
        self.record_hwm
    }

    /// Makes sure `id` lies below a durable reservation, extending it if needed. Returns
    /// whether the file was written.
    pub fn reserve_record_id(&mut self, id: u64) -> io::Result<bool> {
        if id < self.record_hwm {
            return Ok(false);
        }
        self.record_hwm = id + RESERVE_BLOCK;
        self.store()?;
        Ok(true)
    }

    /// Hands out `n` consecutive sequence numbers, never handed out before.
    pub fn allocate_seqs(&mut self, n: u64) -> io::Result<Range<u64>> {
        let start = self.next_seq;
        let end = start + n;
        if end > self.seq_hwm {
            self.seq_hwm = end + RESERVE_BLOCK;
            self.store()?;
        }
        self.next_seq = end;
        Ok(start..end)
    }

    /// On clean close: lowers both reservations to the next unused numbers.
    pub fn release(&mut self, next_record_id: u64) -> io::Result<()> {
        self.record_hwm = next_record_id;
        self.seq_hwm = self.next_seq;
        self.store()
    }

    /// Path of the file (for error messages).
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

fn new_epoch() -> u64 {
    rand::random::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_never_repeat_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta");
        let (mut m, state) = Meta::open(&p).unwrap();
        assert_eq!(state, MetaState::Created);
        let a = m.allocate_seqs(10).unwrap();
        assert_eq!(a, 0..10);
        let b = m.allocate_seqs(5000).unwrap();
        assert_eq!(b, 10..5010);
        drop(m); // crash: no release
        let (mut m, state) = Meta::open(&p).unwrap();
        assert_eq!(state, MetaState::Loaded);
        let c = m.allocate_seqs(1).unwrap();
        assert!(c.start >= b.end, "{c:?} overlaps {b:?}");
    }

    #[test]
    fn a_clean_release_leaves_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meta");
        let (mut m, _) = Meta::open(&p).unwrap();
        let epoch = m.epoch();
        m.allocate_seqs(7).unwrap();
        m.reserve_record_id(3).unwrap();
        m.release(4).unwrap();
        drop(m);
        let (mut m, _) = Meta::open(&p).unwrap();
        assert_eq!(m.epoch(), epoch);
        assert_eq!(m.allocate_seqs(1).unwrap(), 7..8);
        assert_eq!(m.record_floor(), 4);
    }
}
