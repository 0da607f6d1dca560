//! Segment files: naming, listing, creating and validating them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::frame::{
    Decoded, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, decode_frame, le_u32, le_u64,
};

/// In-memory bookkeeping for one segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Id of the first record (and the file name).
    pub first_id: u64,
    /// One past the id of the last record appended to it.
    pub end_id: u64,
    /// Bytes in the segment, header included (appended, whether or not written yet).
    pub len: u64,
}

/// File name of the segment whose first record is `first_id`: 20 zero-padded decimal digits,
/// so that names sort like ids.
pub fn segment_path(dir: &Path, first_id: u64) -> PathBuf {
    dir.join(format!("{first_id:020}.seg"))
}

/// Parses a segment file name back into its first record id.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// First ids of all segment files in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_segment_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes renames, creations and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates a new segment file and writes its header (not synced).
pub fn create_segment(path: &Path, header: &SegmentHeader) -> io::Result<File> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    file.write_all(&header.encode())?;
    Ok(file)
}

/// What validating a segment file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Length of the file.
    pub file_len: u64,
    /// Valid records, in order, starting at the expected first id.
    pub records: u64,
    /// Bytes up to the end of the last valid record (header included).
    pub valid_len: u64,
    /// First problem found, with its offset; `None` if the whole file is valid.
    pub problem: Option<(u64, &'static str)>,
    /// Offset of the first valid record whose id is at least the requested floor.
    pub floor_offset: Option<u64>,
    /// Append time of the first valid record.
    pub first_appended_at_ms: Option<u64>,
    /// The header's `after_open` flag (false when the header is damaged).
    pub after_open: bool,
}

/// Reads the whole segment into `buf` and checks its header and every record (checksum, and
/// ids consecutive from `first_id`).
pub fn scan_segment(
    path: &Path,
    first_id: u64,
    floor: u64,
    max_record_len: usize,
    buf: &mut Vec<u8>,
) -> io::Result<Scan> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    let file_len = buf.len() as u64;
    let mut scan = Scan {
        file_len,
        records: 0,
        valid_len: 0,
        problem: None,
        floor_offset: None,
        first_appended_at_ms: None,
        after_open: false,
    };
    match SegmentHeader::decode(buf) {
        Ok(h) if h.first_id == first_id => scan.after_open = h.after_open,
        Ok(_) => {
            scan.problem = Some((0, "segment header names another first record id"));
            return Ok(scan);
        }
        Err(reason) => {
            scan.problem = Some((0, reason));
            return Ok(scan);
        }
    }
    let mut offset = SEGMENT_HEADER_LEN;
    let mut id = first_id;
    while offset < buf.len() {
        match decode_frame(&buf[offset..], max_record_len) {
            Decoded::Frame(f) if f.id == id => {
                if id >= floor && scan.floor_offset.is_none() {
                    scan.floor_offset = Some(offset as u64);
                }
                scan.first_appended_at_ms.get_or_insert(f.appended_at_ms);
                offset += f.encoded_len();
                id += 1;
            }
            Decoded::Frame(_) => {
                scan.problem = Some((offset as u64, "record id out of sequence"));
                break;
            }
            Decoded::Incomplete { .. } => {
                scan.problem = Some((offset as u64, "record cut short"));
                break;
            }
            Decoded::Invalid(reason) => {
                scan.problem = Some((offset as u64, reason));
                break;
            }
        }
    }
    scan.records = id - first_id;
    scan.valid_len = offset as u64;
    Ok(scan)
}

/// How many valid records follow, in sequence, somewhere after the bad frame at `offset`:
/// a frame with a higher id than `next_id` that checks out means the bytes at `offset` were
/// damaged after being written whole, not cut short by a crash. Looks only at positions
/// whose header could belong to a later record, so it costs about one pass.
pub fn records_after(buf: &[u8], offset: u64, next_id: u64, max_record_len: usize) -> u64 {
    let start = usize::try_from(offset).unwrap_or(usize::MAX);
    let mut at = start.saturating_add(1);
    while at + FRAME_HEADER_LEN <= buf.len() {
        let b = &buf[at..];
        let id = le_u64(&b[8..16]);
        let plausible = id > next_id
            && id - next_id <= (at - start) as u64 / FRAME_HEADER_LEN as u64 + 1
            && (le_u32(&b[0..4]) as usize) <= max_record_len;
        if plausible && let Decoded::Frame(f) = decode_frame(b, max_record_len) {
            // Count the run of frames from here.
            let mut n = 0;
            let mut pos = at;
            let mut want = f.id;
            while let Decoded::Frame(g) = decode_frame(&buf[pos..], max_record_len) {
                if g.id != want {
                    break;
                }
                n += 1;
                want += 1;
                pos += g.encoded_len();
            }
            return n;
        }
        at += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_sort_like_ids_and_parse_back() {
        let dir = Path::new("/d");
        let a = segment_path(dir, 9);
        let b = segment_path(dir, 10);
        assert!(a.file_name() < b.file_name());
        let name = b.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_segment_name(name), Some(10));
        assert_eq!(parse_segment_name("10.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000001a.seg"), None);
        assert_eq!(parse_segment_name("cursor"), None);
    }
}
