//! Reading committed records, acknowledging them, and rewinding to resend.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::cursor::InFlight;
use super::error::{AckError, ReadError};
use super::frame::{Decoded, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, decode_frame};
use super::log::Buffer;
use super::segment::segment_path;

/// Bytes fetched from a segment per read call.
const READ_CHUNK: usize = 64 * 1024;

/// Where the next record to hand out lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadPos {
    /// First id of the segment (may name a segment not created yet).
    pub seg: u64,
    /// Offset of the next frame in it.
    pub offset: u64,
    /// Id of the next record.
    pub next_id: u64,
}

impl ReadPos {
    /// The first record of the segment starting at `first_id`.
    pub fn start_of(first_id: u64) -> Self {
        Self {
            seg: first_id,
            offset: SEGMENT_HEADER_LEN as u64,
            next_id: first_id,
        }
    }
}

/// A reusable window onto one segment file, so reads are few and large.
#[derive(Debug, Default)]
pub(super) struct ReadCache {
    file: Option<(u64, File)>,
    buf: Vec<u8>,
    /// Segment, file offset and length of the bytes in `buf`.
    cached: Option<(u64, u64, usize)>,
}

impl ReadCache {
    /// Drops anything held for segment `seg` (before it is deleted, so its space is freed).
    pub fn forget(&mut self, seg: u64) {
        if self.file.as_ref().is_some_and(|(s, _)| *s == seg) {
            self.file = None;
        }
        if self.cached.is_some_and(|(s, _, _)| s == seg) {
            self.cached = None;
        }
    }

    /// Bytes of segment `seg` from `offset` on, at least `need` of them unless the file's
    /// available bytes (`avail_end`) end sooner. Returns the start of the slice in `buf`.
    fn fetch(
        &mut self,
        dir: &Path,
        seg: u64,
        offset: u64,
        need: usize,
        avail_end: u64,
    ) -> io::Result<(usize, usize)> {
        if let Some((s, start, len)) = self.cached
            && s == seg
            && start <= offset
            && offset + need as u64 <= start + len as u64
        {
            let at = (offset - start) as usize;
            return Ok((at, len));
        }
        if self.file.as_ref().is_none_or(|(s, _)| *s != seg) {
            self.file = Some((seg, File::open(segment_path(dir, seg))?));
        }
        let (_, file) = self.file.as_ref().expect("opened above");
        let n = usize::try_from(avail_end.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(need.max(READ_CHUNK));
        if self.buf.len() < n {
            self.buf.resize(n, 0);
        }
        self.cached = None;
        file.read_exact_at(&mut self.buf[..n], offset)?;
        self.cached = Some((seg, offset, n));
        Ok((0, n))
    }
}

/// A record frame located in the read cache.
#[derive(Debug, Clone, Copy)]
struct FrameLoc {
    id: u64,
    appended_at_ms: u64,
    payload_at: usize,
    payload_len: usize,
    frame_len: u64,
}

/// A record handed out by [`Buffer::read_into`], borrowed from a [`ReadBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Record id: pass it to [`Buffer::ack`] once the record is safely delivered.
    pub id: u64,
    /// Append time, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// The payload as appended.
    pub payload: &'a [u8],
}

/// An owned record, as returned by [`Buffer::read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Record id: pass it to [`Buffer::ack`] once the record is safely delivered.
    pub id: u64,
    /// Append time, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// The payload as appended.
    pub payload: Vec<u8>,
}

/// Reusable storage for records read in one call; reusing it keeps reads allocation-free.
#[derive(Debug, Default, Clone)]
pub struct ReadBatch {
    data: Vec<u8>,
    entries: Vec<(u64, u64, usize, usize)>,
}

impl ReadBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes all records, keeping the memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.entries.clear();
    }

    fn push(&mut self, id: u64, appended_at_ms: u64, payload: &[u8]) {
        let start = self.data.len();
        self.data.extend_from_slice(payload);
        self.entries
            .push((id, appended_at_ms, start, payload.len()));
    }

    /// The `i`-th record.
    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        let &(id, appended_at_ms, start, len) = self.entries.get(i)?;
        Some(RecordRef {
            id,
            appended_at_ms,
            payload: &self.data[start..start + len],
        })
    }

    /// The records in id order.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl Buffer {
    /// Reads up to `max` committed records not handed out yet (or handed out before a
    /// [`rewind`](Self::rewind) and still unacknowledged), in id order, into `batch` (cleared
    /// first). Records appended but not yet flushed are never returned.
    pub fn read_into(&mut self, batch: &mut ReadBatch, max: usize) -> Result<(), ReadError> {
        batch.clear();
        if self.poisoned {
            return Err(ReadError::Poisoned);
        }
        while batch.len() < max {
            self.normalize_read();
            if self.read.next_id >= self.committed_id {
                break;
            }
            let loc = match self.load_frame() {
                Ok(loc) => loc,
                Err(e) => {
                    self.poisoned = true;
                    return Err(e);
                }
            };
            let pos = self.read;
            self.read.offset += loc.frame_len;
            self.read.next_id += 1;
            if self.window.resending() {
                let e = self.window.entries[self.window.resend_idx];
                debug_assert_eq!(e.id, loc.id, "resend walks the window in order");
                self.window.resend_idx += 1;
                if e.acked {
                    continue;
                }
            } else {
                self.window.entries.push_back(InFlight {
                    id: loc.id,
                    appended_at_ms: loc.appended_at_ms,
                    seg: pos.seg,
                    offset: u32::try_from(pos.offset).expect("segments are below 4 GiB"),
                    frame_len: u32::try_from(loc.frame_len).expect("segments are below 4 GiB"),
                    acked: false,
                });
                self.window.resend_idx = self.window.entries.len();
            }
            let payload = &self.rcache.buf[loc.payload_at..loc.payload_at + loc.payload_len];
            batch.push(loc.id, loc.appended_at_ms, payload);
        }
        Ok(())
    }

    /// Like [`read_into`](Self::read_into), returning owned records.
    pub fn read(&mut self, max: usize) -> Result<Vec<Record>, ReadError> {
        let mut batch = ReadBatch::new();
        self.read_into(&mut batch, max)?;
        Ok(batch
            .iter()
            .map(|r| Record {
                id: r.id,
                appended_at_ms: r.appended_at_ms,
                payload: r.payload.to_vec(),
            })
            .collect())
    }

    /// Marks record `id` as delivered. Acknowledgements may come in any order; the cursor
    /// advances over the contiguous acknowledged prefix, and each segment whose records are
    /// all acknowledged is deleted at once. Returns false if `id` was not handed out or was
    /// already acknowledged (or dropped). The cursor is persisted by the next
    /// [`flush`](Self::flush).
    pub fn ack(&mut self, id: u64) -> Result<bool, AckError> {
        if !self.window.mark(id) {
            return Ok(false);
        }
        self.live_records -= 1;
        while let Some((e, at_read_pos)) = self.window.pop_acked_front() {
            if at_read_pos {
                self.read = ReadPos {
                    seg: e.seg,
                    offset: u64::from(e.offset) + u64::from(e.frame_len),
                    next_id: e.id + 1,
                };
            }
        }
        self.delete_acked_segments()?;
        Ok(true)
    }

    /// Makes every handed-out, unacknowledged record readable again, oldest first (after a
    /// reconnect, to resend what may have been lost in flight).
    pub fn rewind(&mut self) {
        if let Some(front) = self.window.entries.front() {
            self.read = ReadPos {
                seg: front.seg,
                offset: u64::from(front.offset),
                next_id: front.id,
            };
            self.window.resend_idx = 0;
        }
    }

    fn delete_acked_segments(&mut self) -> Result<(), AckError> {
        let floor = self.floor();
        while let Some(&s) = self.segments.front() {
            let is_active = self.active.is_some() && self.segments.len() == 1;
            if is_active || s.end_id > floor {
                break;
            }
            let path = segment_path(&self.cfg.dir, s.first_id);
            self.rcache.forget(s.first_id);
            std::fs::remove_file(&path).map_err(|source| AckError { path, source })?;
            self.segments.pop_front();
            self.bytes_on_disk -= s.len;
        }
        Ok(())
    }

    /// Moves the read position off exhausted or deleted segments.
    pub(super) fn normalize_read(&mut self) {
        loop {
            match self
                .segments
                .binary_search_by_key(&self.read.seg, |s| s.first_id)
            {
                Ok(i) => {
                    let s = self.segments[i];
                    let is_active = self.active.is_some() && i + 1 == self.segments.len();
                    if self.read.next_id < s.end_id || is_active {
                        return;
                    }
                    match self.segments.get(i + 1) {
                        Some(n) => self.read = ReadPos::start_of(n.first_id),
                        None => {
                            self.read = ReadPos::start_of(self.next_id);
                            return;
                        }
                    }
                }
                Err(i) => match self.segments.get(i) {
                    Some(n) => self.read = ReadPos::start_of(n.first_id),
                    None => {
                        // Past every segment: the next record is the next one appended.
                        self.read = ReadPos::start_of(self.next_id);
                        return;
                    }
                },
            }
        }
    }

    /// Bytes of segment `seg` already handed to the file.
    fn available_end(&self, seg: u64) -> u64 {
        match (self.segments.back(), self.active.as_ref()) {
            (Some(last), Some(active)) if last.first_id == seg => active.written,
            _ => self
                .segments
                .binary_search_by_key(&seg, |s| s.first_id)
                .map_or(0, |i| self.segments[i].len),
        }
    }

    fn load_frame(&mut self) -> Result<FrameLoc, ReadError> {
        let ReadPos {
            seg,
            offset,
            next_id,
        } = self.read;
        let avail = self.available_end(seg);
        let mut need = FRAME_HEADER_LEN;
        let corrupt = |reason| ReadError::Corrupt {
            path: segment_path(&self.cfg.dir, seg),
            offset,
            reason,
        };
        loop {
            let (at, len) = self
                .rcache
                .fetch(&self.cfg.dir, seg, offset, need, avail)
                .map_err(|source| ReadError::Io {
                    path: segment_path(&self.cfg.dir, seg),
                    source,
                })?;
            match decode_frame(&self.rcache.buf[at..len], self.max_record_len) {
                Decoded::Frame(f) if f.id == next_id => {
                    return Ok(FrameLoc {
                        id: f.id,
                        appended_at_ms: f.appended_at_ms,
                        payload_at: at + FRAME_HEADER_LEN,
                        payload_len: f.payload.len(),
                        frame_len: f.encoded_len() as u64,
                    });
                }
                Decoded::Frame(_) => return Err(corrupt("record id out of sequence")),
                Decoded::Incomplete { need: n } if n > need && offset + n as u64 <= avail => {
                    need = n;
                }
                Decoded::Incomplete { .. } => return Err(corrupt("record cut short")),
                Decoded::Invalid(reason) => return Err(corrupt(reason)),
            }
        }
    }

    /// Append time of the next record to read, if it is committed.
    pub(super) fn peek_read_ts(&mut self) -> Option<u64> {
        self.normalize_read();
        if self.read.next_id >= self.committed_id {
            return None;
        }
        self.load_frame().ok().map(|l| l.appended_at_ms)
    }
}
