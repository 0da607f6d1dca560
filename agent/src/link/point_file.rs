//! The read-back point on disk ([`ReadBackPoint`], see [`super::stored`]
//! for what it is): written in place every 30 s at most while the link is
//! live, so it must cost the SD card as little as a write can.
//!
//! # Version 2: `<buffer dir>/readback-point.slots` (written since 2026-12)
//!
//! Two 512-byte slots, overwritten in place, alternately
//! ([`crate::slot_pair`]), like the buffer's meta and cursor files: each
//! save is one `pwrite` of one slot and one `fdatasync`, with no new inode,
//! no rename and no directory change. A
//! save torn by a power cut damages only the slot it was writing; the
//! loader takes the valid slot with the higher generation, so it sees the
//! old point or the new one, and an older point is still correct.
//!
//! Slot layout, little-endian:
//!
//! ```text
//! offset  size  field
//!      0     4  magic "TRBP"
//!      4     2  version (2)
//!      6     2  stream name length n (1..=MAX_STREAM_NAME)
//!      8     8  generation (1 for the first save, +1 each save)
//!     16     8  stream sequence
//!     24     n  stream name (UTF-8)
//!   24+n     .  zero
//!    508     4  crc32 of bytes 0..508
//! ```
//!
//! Measured by the kernel's count (`/proc/<pid>/io` `write_bytes`) on this
//! machine's ext4: a save after 30 s of quiet costs 8 KiB (the slot's page
//! and the inode's mtime), where replacing a file by rename cost 24–40 KiB
//! (a new inode, its bitmaps and the directory block, dirtied again each
//! time after writeback), which alone was 22 B per reading at 50 sensors at
//! 1 Hz against a goal of 10.
//!
//! # Version 1: `<buffer dir>/readback-point` (read, no longer written)
//!
//! Text, replaced durably by rename:
//!
//! ```text
//! tributary readback point 1
//! stream TRIBUTARY
//! seq 1234
//! ```
//!
//! An agent upgraded in the field loads it when there is no version 2
//! file (or none with a valid slot); the first version 2 save removes it.
//!
//! A point that cannot be loaded is an error naming the file; the caller
//! then goes without one (a resend can only duplicate, never lose).

use super::stored::ReadBackPoint;
use crate::slot_pair;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The version 1 file's name in the buffer directory (text; read only).
pub const POINT_FILE_V1: &str = "readback-point";
/// The version 2 file's name in the buffer directory (two slots).
pub const POINT_FILE: &str = "readback-point.slots";
/// The version this build writes.
pub const POINT_VERSION: u16 = 2;
/// The longest stream name a slot holds, in bytes (JetStream's own limit
/// is 255 characters in practice; the slot leaves room for more).
pub const MAX_STREAM_NAME: usize = SLOT_LEN - 28;

const MAGIC_V1: &str = "tributary readback point";
const MAGIC: [u8; 4] = *b"TRBP";
const SLOT_LEN: usize = 512;
const CRC_AT: usize = SLOT_LEN - 4;

/// A read-back point file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PointError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a read-back point this build understands.
    #[error("{path} is not a read-back point this build reads: {what}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: &'static str,
    },
    /// The point's stream name is empty or does not fit a slot (nothing was
    /// written; the file on disk keeps the last point that was valid).
    #[error("the stream name is {len} bytes; a read-back point holds 1 to {MAX_STREAM_NAME} bytes")]
    StreamNameLength {
        /// Its length in bytes.
        len: usize,
    },
    /// A step of the save failed.
    #[error("{op} {path}")]
    Save {
        /// What was being done.
        op: &'static str,
        /// The file it was done to.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl ReadBackPoint {
    /// The point saved in `dir`: the version 2 file's newest valid slot,
    /// else the version 1 file; `Ok(None)` when there is neither.
    pub fn load(dir: &Path) -> Result<Option<ReadBackPoint>, PointError> {
        let path = dir.join(POINT_FILE);
        let v2 = match File::open(&path).and_then(|f| slot_pair::read(&f, SLOT_LEN)) {
            Ok(bytes) => Some(newest_slot(&bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(source) => return Err(PointError::Read { path, source }),
        };
        match v2 {
            Some(Some((_, point))) => Ok(Some(point)),
            Some(None) => match load_v1(dir) {
                Ok(Some(older)) => Ok(Some(older)),
                _ => Err(PointError::Format {
                    path,
                    what: "neither slot is valid",
                }),
            },
            None => load_v1(dir),
        }
    }

    /// Saves the point in `dir` (blocking): into the slot the newest valid
    /// one is not in, then `fdatasync`. The first save creates the file
    /// (and syncs the directory) and removes a version 1 file.
    pub fn save(&self, dir: &Path) -> Result<(), PointError> {
        if self.stream.is_empty() || self.stream.len() > MAX_STREAM_NAME {
            return Err(PointError::StreamNameLength {
                len: self.stream.len(),
            });
        }
        let path = dir.join(POINT_FILE);
        let fail = |op: &'static str, p: &Path| {
            let path = p.to_owned();
            move |source| PointError::Save { op, path, source }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(fail("cannot open", &path))?;
        let bytes = slot_pair::read(&file, SLOT_LEN).map_err(fail("cannot read", &path))?;
        // Empty: this save creates the file (or a crash cut the first one short).
        let created = bytes.is_empty();
        let generation = newest_slot(&bytes).map_or(0, |(g, _)| g) + 1;
        slot_pair::write(&file, generation, &self.encode_slot(generation))
            .map_err(fail("cannot write and sync", &path))?;
        if created {
            let v1 = dir.join(POINT_FILE_V1);
            match std::fs::remove_file(&v1) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(source) => return Err(fail("cannot remove", &v1)(source)),
            }
            crate::state_file::sync_dir(&path)
                .map_err(fail("cannot sync the directory of", &path))?;
        }
        Ok(())
    }

    /// One version 2 slot holding this point (the name must fit).
    fn encode_slot(&self, generation: u64) -> [u8; SLOT_LEN] {
        let name = self.stream.as_bytes();
        let mut b = [0u8; SLOT_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..6].copy_from_slice(&POINT_VERSION.to_le_bytes());
        b[6..8].copy_from_slice(&(name.len() as u16).to_le_bytes());
        b[8..16].copy_from_slice(&generation.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..24 + name.len()].copy_from_slice(name);
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A version 2 slot's generation and point; `None` unless it is valid.
    fn decode_slot(b: &[u8]) -> Option<(u64, ReadBackPoint)> {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if b.len() != SLOT_LEN
            || b[0..4] != MAGIC
            || u16_at(4) != POINT_VERSION
            || crc32fast::hash(&b[..CRC_AT]).to_le_bytes() != b[CRC_AT..]
        {
            return None;
        }
        let len = usize::from(u16_at(6));
        if len == 0 || len > MAX_STREAM_NAME {
            return None;
        }
        let stream = std::str::from_utf8(&b[24..24 + len]).ok()?.to_owned();
        Some((
            u64_at(8),
            ReadBackPoint {
                stream,
                seq: u64_at(16),
            },
        ))
    }

    /// The version 1 text (no longer written; for tests).
    #[cfg(test)]
    fn encode_v1(&self) -> String {
        format!("{MAGIC_V1} 1\nstream {}\nseq {}\n", self.stream, self.seq)
    }

    /// Parses a version 1 text; `what` is wrong otherwise.
    pub fn decode_v1(text: &str) -> Result<ReadBackPoint, &'static str> {
        let mut lines = text.lines();
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix(MAGIC_V1))
            .and_then(|v| v.strip_prefix(' '))
            .ok_or("the first line is not `tributary readback point <version>`")?;
        if version.parse::<u32>() != Ok(1) {
            return Err("unknown version");
        }
        let stream = lines
            .next()
            .and_then(|l| l.strip_prefix("stream "))
            .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
            .ok_or("no `stream <name>` line")?;
        let seq = lines
            .next()
            .and_then(|l| l.strip_prefix("seq "))
            .and_then(|s| s.parse().ok())
            .ok_or("no `seq <number>` line")?;
        if lines.next().is_some() {
            return Err("more than three lines");
        }
        Ok(ReadBackPoint {
            stream: stream.to_owned(),
            seq,
        })
    }
}

/// The newest valid slot of a version 2 file's bytes.
fn newest_slot(bytes: &[u8]) -> Option<(u64, ReadBackPoint)> {
    slot_pair::newest(bytes, SLOT_LEN, ReadBackPoint::decode_slot)
}

/// The version 1 file's point; `Ok(None)` when there is no such file.
fn load_v1(dir: &Path) -> Result<Option<ReadBackPoint>, PointError> {
    let path = dir.join(POINT_FILE_V1);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(PointError::Read { path, source }),
    };
    ReadBackPoint::decode_v1(&text)
        .map(Some)
        .map_err(|what| PointError::Format { path, what })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::os::unix::fs::FileExt;

    fn point(stream: &str, seq: u64) -> ReadBackPoint {
        ReadBackPoint {
            stream: stream.into(),
            seq,
        }
    }

    #[test]
    fn the_last_saved_point_is_loaded_and_the_file_stays_two_slots_long() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(ReadBackPoint::load(dir.path()).expect("load"), None);
        for seq in 1..=5 {
            point("TRIBUTARY", seq).save(dir.path()).expect("save");
            assert_eq!(
                ReadBackPoint::load(dir.path()).expect("load"),
                Some(point("TRIBUTARY", seq))
            );
        }
        let len = std::fs::metadata(dir.path().join(POINT_FILE))
            .expect("meta")
            .len();
        assert_eq!(len, 2 * SLOT_LEN as u64);
    }

    #[test]
    fn a_torn_save_leaves_the_point_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        point("S", 10).save(dir.path()).expect("save");
        point("S", 20).save(dir.path()).expect("save");
        // Generation 2 is in slot 0: tear it as a power cut would.
        let path = dir.path().join(POINT_FILE);
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.write_all_at(&[0xee; 7], 17).expect("tear");
        assert_eq!(
            ReadBackPoint::load(dir.path()).expect("load"),
            Some(point("S", 10))
        );
        // The next save goes after the surviving generation and wins.
        point("S", 30).save(dir.path()).expect("save");
        assert_eq!(
            ReadBackPoint::load(dir.path()).expect("load"),
            Some(point("S", 30))
        );
    }

    #[test]
    fn a_version_1_file_is_loaded_until_the_first_save_replaces_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let golden = include_str!("../../tests/fixtures/readback-point-v1");
        std::fs::write(dir.path().join(POINT_FILE_V1), golden).expect("write");
        assert_eq!(
            ReadBackPoint::load(dir.path()).expect("load"),
            Some(point("TRIBUTARY", 1234))
        );
        point("TRIBUTARY", 1300).save(dir.path()).expect("save");
        assert!(!dir.path().join(POINT_FILE_V1).exists(), "removed");
        assert_eq!(
            ReadBackPoint::load(dir.path()).expect("load"),
            Some(point("TRIBUTARY", 1300))
        );
    }

    #[test]
    fn the_golden_bytes_of_both_versions_keep_loading() {
        assert_eq!(
            ReadBackPoint::decode_v1(include_str!("../../tests/fixtures/readback-point-v1")),
            Ok(point("TRIBUTARY", 1234))
        );
        let golden = include_bytes!("../../tests/fixtures/readback-point-v2.slots");
        assert_eq!(golden.len(), 2 * SLOT_LEN);
        // Saved twice (1234, then 1300): generation 2 in slot 0 wins.
        assert_eq!(newest_slot(golden), Some((2, point("TRIBUTARY", 1300))));
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(POINT_FILE), golden).expect("write");
        point("TRIBUTARY", 1400).save(dir.path()).expect("save");
        let bytes = std::fs::read(dir.path().join(POINT_FILE)).expect("read");
        assert_eq!(bytes[..SLOT_LEN], golden[..SLOT_LEN], "slot 0 untouched");
        assert_eq!(newest_slot(&bytes), Some((3, point("TRIBUTARY", 1400))));
    }

    #[test]
    fn a_point_file_that_cannot_be_used_is_an_error_naming_it() {
        for text in [
            "",
            "tributary readback point 2\nstream S\nseq 1\n",
            "tributary readback point 1\nstream \nseq 1\n",
            "tributary readback point 1\nstream S\nseq x\n",
            "tributary readback point 1\nstream S\nseq 1\nmore\n",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::write(dir.path().join(POINT_FILE_V1), text).expect("write");
            let e = ReadBackPoint::load(dir.path()).expect_err(text);
            assert!(e.to_string().contains(POINT_FILE_V1), "{e}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(POINT_FILE), [0xab; 2 * SLOT_LEN]).expect("write");
        let e = ReadBackPoint::load(dir.path()).expect_err("no valid slot");
        assert!(e.to_string().contains(POINT_FILE), "{e}");
    }

    #[test]
    fn a_stream_name_that_is_empty_or_does_not_fit_is_refused_and_the_saved_point_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        point("S", 1).save(dir.path()).expect("save");
        let long = "x".repeat(MAX_STREAM_NAME + 1);
        let e = point(&long, 2).save(dir.path()).expect_err("too long");
        assert!(matches!(e, PointError::StreamNameLength { .. }), "{e}");
        let e = point("", 2).save(dir.path()).expect_err("empty");
        assert!(matches!(e, PointError::StreamNameLength { len: 0 }), "{e}");
        point(&"y".repeat(MAX_STREAM_NAME), 3)
            .save(dir.path())
            .expect("fits");
        assert_eq!(
            ReadBackPoint::load(dir.path()).expect("load"),
            Some(point(&"y".repeat(MAX_STREAM_NAME), 3))
        );
    }

    proptest! {
        #[test]
        fn a_slot_round_trips_and_any_bytes_decode_or_are_refused_without_panic(
            stream in "[A-Za-z0-9_-]{1,64}",
            seq in any::<u64>(),
            generation in any::<u64>(),
            flip in 0usize..SLOT_LEN,
            bytes in proptest::collection::vec(any::<u8>(), 0..1200),
            text in ".{0,200}",
        ) {
            let p = point(&stream, seq);
            let mut slot = p.encode_slot(generation);
            prop_assert_eq!(ReadBackPoint::decode_slot(&slot), Some((generation, p.clone())));
            slot[flip] ^= 0x01;
            prop_assert_eq!(ReadBackPoint::decode_slot(&slot), None, "one flipped bit is caught");
            let _ = newest_slot(&bytes);
            prop_assert_eq!(ReadBackPoint::decode_v1(&p.encode_v1()), Ok(p));
            let _ = ReadBackPoint::decode_v1(&text);
        }
    }
}
