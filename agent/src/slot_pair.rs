//! The mechanics of a file of two alternating fixed-size slots, for small
//! state overwritten in place: the buffer's meta and cursor files
//! ([`crate::buffer`]) and the link's read-back point
//! ([`crate::link::point_file`]). Each of those owns its slot layout (magic,
//! version, CRC); this module owns what they share:
//!
//! - a save of generation `g` writes one slot at offset `(g % 2) × slot
//!   length` with one `pwrite` and one `fdatasync`: never a new inode, a
//!   rename or a directory change, so an SD card sees one small data block
//!   per save;
//! - a save torn by a power cut damages only the slot it was writing, since
//!   consecutive generations alternate slots;
//! - the loader takes the valid slot with the highest generation, so it sees
//!   the old value or the new one, never a mix.
//!
//! The file never grows beyond two slots; bytes after them are ignored.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// The file's first two slots' worth of bytes (fewer if it is shorter),
/// read by position: the handle's cursor neither matters nor moves, so the
/// same handle can be read again after a [`write`].
pub fn read(file: &File, slot_len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 2 * slot_len];
    let mut n = 0;
    while n < bytes.len() {
        match file.read_at(&mut bytes[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(n);
    Ok(bytes)
}

/// The generation and value of the newest slot `decode` accepts among the
/// whole slots in `bytes` (a short tail, as a torn first save leaves, is not
/// a slot). On equal generations, which alternating saves never write, the
/// first slot wins.
pub fn newest<T>(
    bytes: &[u8],
    slot_len: usize,
    decode: impl FnMut(&[u8]) -> Option<(u64, T)>,
) -> Option<(u64, T)> {
    bytes
        .chunks_exact(slot_len)
        .take(2)
        .filter_map(decode)
        .reduce(|best, next| if next.0 > best.0 { next } else { best })
}

/// Durably writes `slot`, encoded for `generation`, into the slot that
/// generation alternates to (one `pwrite`, one `fdatasync`).
pub fn write(file: &File, generation: u64, slot: &[u8]) -> io::Result<()> {
    let offset = (generation % 2) * slot.len() as u64;
    file.write_all_at(slot, offset)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// A 16-byte test slot: generation, then a value; valid unless zero.
    fn decode(b: &[u8]) -> Option<(u64, u64)> {
        let generation = u64::from_le_bytes(b[0..8].try_into().unwrap());
        let value = u64::from_le_bytes(b[8..16].try_into().unwrap());
        (generation != 0).then_some((generation, value))
    }

    fn encode(generation: u64, value: u64) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&generation.to_le_bytes());
        b[8..16].copy_from_slice(&value.to_le_bytes());
        b
    }

    fn open(path: &std::path::Path) -> File {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn saves_alternate_slots_and_the_newest_generation_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let file = open(&dir.path().join("s"));
        assert_eq!(newest(&read(&file, 16).unwrap(), 16, decode), None);
        for generation in 1..=5 {
            write(&file, generation, &encode(generation, generation * 10)).unwrap();
            let bytes = read(&file, 16).unwrap();
            assert_eq!(
                newest(&bytes, 16, decode),
                Some((generation, generation * 10))
            );
        }
        assert_eq!(file.metadata().unwrap().len(), 32);
    }

    #[test]
    fn a_damaged_newest_slot_leaves_the_one_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = open(&dir.path().join("s"));
        write(&file, 1, &encode(1, 10)).unwrap();
        write(&file, 2, &encode(2, 20)).unwrap();
        // Generation 2 is in slot 0: a torn save of it reads as invalid.
        file.write_all_at(&[0u8; 8], 0).unwrap();
        assert_eq!(newest(&read(&file, 16).unwrap(), 16, decode), Some((1, 10)));
    }

    #[test]
    fn bytes_past_two_slots_and_a_short_tail_are_not_slots() {
        let mut bytes = encode(7, 70).to_vec();
        bytes.extend_from_slice(&encode(3, 30)[..9]);
        assert_eq!(newest(&bytes, 16, decode), Some((7, 70)));
        let mut three = encode(1, 10).to_vec();
        three.extend_from_slice(&encode(2, 20));
        three.extend_from_slice(&encode(9, 90));
        assert_eq!(newest(&three, 16, decode), Some((2, 20)));
    }

    #[test]
    fn a_file_is_read_up_to_two_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, [1u8; 40]).unwrap();
        assert_eq!(read(&open(&path), 16).unwrap().len(), 32);
        std::fs::write(&path, [1u8; 5]).unwrap();
        assert_eq!(read(&open(&path), 16).unwrap().len(), 5);
    }
}
