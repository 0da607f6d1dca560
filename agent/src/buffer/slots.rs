//! The buffer's tiny state files (meta and cursor): three numbers overwritten in place, in a
//! file of two alternating slots ([`crate::slot_pair`] says why a power cut leaves the old
//! value or the new one, never a mix). The file never grows beyond two slots (96 bytes).
//!
//! Slot layout (48 bytes, little-endian): `magic[4] version:u16 reserved:u16 generation:u64
//! values:[u64; 3] crc32:u32 pad:u32`, the CRC covering the 40 bytes before it.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::slot_pair;

use super::frame::{le_u32, le_u64};

const SLOT_LEN: usize = 48;
const SLOT_VERSION: u16 = 1;

/// Values kept in one slot.
pub type SlotValues = [u64; 3];

/// What was found when opening a slot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The file did not exist or was empty: nothing was ever stored.
    Fresh,
    /// The newest valid slot's values.
    Valid(SlotValues),
    /// The file exists but neither slot is valid.
    Corrupt,
}

/// An open two-slot state file.
#[derive(Debug)]
pub struct SlotFile {
    file: File,
    path: PathBuf,
    magic: [u8; 4],
    generation: u64,
}

impl SlotFile {
    /// Opens (creating if missing) the file at `path` and loads the newest valid slot.
    pub fn open(path: &Path, magic: [u8; 4]) -> io::Result<(Self, Loaded)> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let bytes = slot_pair::read(&file, SLOT_LEN)?;
        let best = slot_pair::newest(&bytes, SLOT_LEN, |slot| decode_slot(slot, magic));
        let (generation, loaded) = match best {
            Some((g, v)) => (g, Loaded::Valid(v)),
            None if bytes.is_empty() => (0, Loaded::Fresh),
            None => (0, Loaded::Corrupt),
        };
        let me = Self {
            file,
            path: path.to_path_buf(),
            magic,
            generation,
        };
        Ok((me, loaded))
    }

    /// Whether the file at `path` exists with bytes in it but no valid slot (without
    /// creating or changing it).
    pub fn probe(path: &Path, magic: [u8; 4]) -> io::Result<bool> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let bytes = slot_pair::read(&file, SLOT_LEN)?;
        let valid = slot_pair::newest(&bytes, SLOT_LEN, |slot| decode_slot(slot, magic));
        Ok(!bytes.is_empty() && valid.is_none())
    }

    /// Path of the file (for error messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably stores `values` in the slot not holding the current value (one `pwrite` of 48
    /// bytes and one `fdatasync`).
    pub fn store(&mut self, values: SlotValues) -> io::Result<()> {
        let generation = self.generation + 1;
        let slot = encode_slot(self.magic, generation, values);
        slot_pair::write(&self.file, generation, &slot)?;
        self.generation = generation;
        Ok(())
    }
}

fn encode_slot(magic: [u8; 4], generation: u64, values: SlotValues) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[0..4].copy_from_slice(&magic);
    b[4..6].copy_from_slice(&SLOT_VERSION.to_le_bytes());
    b[8..16].copy_from_slice(&generation.to_le_bytes());
    for (i, v) in values.iter().enumerate() {
        b[16 + 8 * i..24 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[0..40]);
    b[40..44].copy_from_slice(&crc.to_le_bytes());
    b
}

fn decode_slot(b: &[u8], magic: [u8; 4]) -> Option<(u64, SlotValues)> {
    if b[0..4] != magic
        || u16::from_le_bytes([b[4], b[5]]) != SLOT_VERSION
        || crc32fast::hash(&b[0..40]) != le_u32(&b[40..44])
    {
        return None;
    }
    let values = [le_u64(&b[16..24]), le_u64(&b[24..32]), le_u64(&b[32..40])];
    Some((le_u64(&b[8..16]), values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    const MAGIC: [u8; 4] = *b"TEST";

    #[test]
    fn the_newest_stored_values_are_loaded_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let (mut f, loaded) = SlotFile::open(&p, MAGIC).unwrap();
        assert_eq!(loaded, Loaded::Fresh);
        for i in 0..5 {
            f.store([i, i + 1, i + 2]).unwrap();
        }
        drop(f);
        let (_, loaded) = SlotFile::open(&p, MAGIC).unwrap();
        assert_eq!(loaded, Loaded::Valid([4, 5, 6]));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 2 * SLOT_LEN as u64);
    }

    #[test]
    fn a_torn_slot_write_falls_back_to_the_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let (mut f, _) = SlotFile::open(&p, MAGIC).unwrap();
        f.store([1, 1, 1]).unwrap();
        f.store([2, 2, 2]).unwrap();
        drop(f);
        // Generation 2 lives in slot 0: damage it as a torn write would.
        let file = OpenOptions::new().write(true).open(&p).unwrap();
        file.write_all_at(&[0xff; 10], 20).unwrap();
        let (mut f, loaded) = SlotFile::open(&p, MAGIC).unwrap();
        assert_eq!(loaded, Loaded::Valid([1, 1, 1]));
        // The next store must not overwrite the surviving slot's generation order.
        f.store([3, 3, 3]).unwrap();
        drop(f);
        let (_, loaded) = SlotFile::open(&p, MAGIC).unwrap();
        assert_eq!(loaded, Loaded::Valid([3, 3, 3]));
    }

    #[test]
    fn a_file_with_no_valid_slot_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, [0xabu8; 96]).unwrap();
        let (_, loaded) = SlotFile::open(&p, MAGIC).unwrap();
        assert_eq!(loaded, Loaded::Corrupt);
        let (_, loaded) = SlotFile::open(&p, *b"OTHR").unwrap();
        assert_eq!(loaded, Loaded::Corrupt);
    }
}
