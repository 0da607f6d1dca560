//! The [`Buffer`] itself: appending, group commit, size cap, statistics, sequence numbers.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::warn;

use super::config::{BufferConfig, WhenFull};
use super::cursor::{AckWindow, CursorFile};
use super::error::{AppendError, CloseError, FlushError, SeqError};
use super::frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, SegmentHeader, encode_frame_header};
use super::meta::Meta;
use super::reader::{ReadCache, ReadPos};
use super::segment::{Segment, create_segment, segment_path, sync_dir};

/// Appended bytes are collected in memory up to this size before one `write`.
const WRITE_CHUNK: usize = 64 * 1024;

/// Free space the buffer leaves on its file system: an append that would leave less is
/// handled like one that would exceed `max_bytes` (the when-full policy decides). Covers the
/// file system's own allocation granularity and a new segment's first block.
pub const DISK_RESERVE: u64 = 32 * 1024;

/// Result of a successful [`Buffer::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum AppendOutcome {
    /// Stored under this record id (readable after the next [`Buffer::flush`]).
    Stored(u64),
    /// `WhenFull::DropNewest` refused the record; it is counted in `dropped_newest`.
    DroppedNewest,
}

/// Counters and gauges for monitoring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BufferStats {
    /// Records stored and not yet acknowledged (flushed or not).
    pub unacked_records: u64,
    /// Bytes of all segment files.
    pub bytes_on_disk: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Append time of the oldest unacknowledged record, ms since the Unix epoch.
    pub oldest_unacked_appended_at_ms: Option<u64>,
    /// Records dropped by `WhenFull::DropOldest` (unacknowledged records in deleted segments).
    pub dropped_oldest: u64,
    /// Records refused by `WhenFull::DropNewest`, or by any policy when the file system is
    /// full and dropping old segments cannot make room.
    pub dropped_newest: u64,
    /// Appends that found the file system too full (less than [`DISK_RESERVE`] left) before
    /// the buffer reached `max_bytes`; the when-full policy then acted as at the cap.
    pub disk_full: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Payload bytes appended since open.
    pub payload_bytes_appended: u64,
    /// Bytes written to files since open (segments, cursor and meta), before the file system's
    /// own overhead.
    pub bytes_written: u64,
    /// `fdatasync`/`fsync` calls since open.
    pub syncs: u64,
}

/// The segment being appended to.
#[derive(Debug)]
pub(super) struct Active {
    pub file: File,
    /// Bytes handed to `write` so far (header included).
    pub written: u64,
    /// Whether bytes were written since the last sync.
    pub unsynced: bool,
}

/// The on-disk buffer. See the [module documentation](super) for the design.
#[derive(Debug)]
pub struct Buffer {
    pub(super) cfg: BufferConfig,
    pub(super) max_record_len: usize,
    /// Segments, oldest first; when `active` is set it is the last one.
    pub(super) segments: VecDeque<Segment>,
    pub(super) active: Option<Active>,
    pub(super) wbuf: Vec<u8>,
    pub(super) next_id: u64,
    /// Records with smaller ids are durable and may be read.
    pub(super) committed_id: u64,
    pub(super) first_uncommitted_ts: Option<u64>,
    /// A segment file was created since the directory was last synced.
    pub(super) dir_dirty: bool,
    pub(super) meta: Meta,
    pub(super) cursor: CursorFile,
    pub(super) window: AckWindow,
    pub(super) read: ReadPos,
    pub(super) rcache: ReadCache,
    pub(super) live_records: u64,
    pub(super) bytes_on_disk: u64,
    pub(super) stats: BufferStats,
    pub(super) poisoned: bool,
    /// No segment was created since open yet: the next one is flagged `after_open`.
    pub(super) fresh_open: bool,
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Buffer {
    /// The configuration the buffer was opened with.
    pub fn config(&self) -> &BufferConfig {
        &self.cfg
    }

    /// The installation epoch: chosen at random when the buffer directory was first created
    /// and kept for its lifetime. Readings are identified by (device, epoch, sequence).
    pub fn epoch(&self) -> u64 {
        self.meta.epoch()
    }

    /// Hands out `n` consecutive reading sequence numbers that were never handed out before
    /// under this epoch, not even before a crash. Syncs the meta file once per 4096 numbers.
    pub fn allocate_seqs(&mut self, n: u64) -> Result<Range<u64>, SeqError> {
        self.meta.allocate_seqs(n).map_err(|source| SeqError {
            path: self.meta.path().to_path_buf(),
            source,
        })
    }

    /// Id the next appended record will get.
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Largest payload one record may carry.
    pub fn max_record_len(&self) -> usize {
        self.max_record_len
    }

    /// Whether a record of `len` payload bytes fits under the cap right now without dropping
    /// anything. With `WhenFull::Block`, wait (e.g. for the next acknowledgement) until this
    /// is true, then append.
    pub fn would_fit(&self, len: usize) -> bool {
        let needed = self.bytes_needed(len);
        len <= self.max_record_len
            && self.bytes_on_disk + needed <= self.cfg.max_bytes
            && self.disk_has_room(needed)
    }

    /// Whether the file system holding the buffer has room for `needed` more bytes (plus
    /// those appended but not yet written) and still [`DISK_RESERVE`] left. When the free
    /// space cannot be asked for, it is assumed to be there (a write then fails for real).
    fn disk_has_room(&self, needed: u64) -> bool {
        match rustix::fs::statvfs(&self.cfg.dir) {
            Ok(st) => {
                let free = st.f_bavail.saturating_mul(st.f_frsize);
                (self.wbuf.len() as u64)
                    .saturating_add(needed)
                    .saturating_add(DISK_RESERVE)
                    <= free
            }
            Err(_) => true,
        }
    }

    fn needs_roll(&self, frame_len: u64) -> bool {
        match (self.active.as_ref(), self.segments.back()) {
            (Some(_), Some(s)) => s.len + frame_len > self.cfg.segment_bytes,
            _ => true,
        }
    }

    fn bytes_needed(&self, len: usize) -> u64 {
        let frame_len = (FRAME_HEADER_LEN + len) as u64;
        if self.needs_roll(frame_len) {
            frame_len + SEGMENT_HEADER_LEN as u64
        } else {
            frame_len
        }
    }

    /// Appends one record stamped with the current wall-clock time. It is buffered in memory
    /// or in the page cache until the next [`flush`](Self::flush), and only then readable.
    pub fn append(&mut self, payload: &[u8]) -> Result<AppendOutcome, AppendError> {
        self.append_at(payload, now_ms())
    }

    /// Appends one record with an explicit append time (ms since the Unix epoch).
    pub fn append_at(
        &mut self,
        payload: &[u8],
        appended_at_ms: u64,
    ) -> Result<AppendOutcome, AppendError> {
        if self.poisoned {
            return Err(AppendError::Poisoned);
        }
        if payload.len() > self.max_record_len {
            return Err(AppendError::TooLarge {
                len: payload.len(),
                max: self.max_record_len,
            });
        }
        let frame_len = (FRAME_HEADER_LEN + payload.len()) as u64;
        let needed = self.bytes_needed(payload.len());
        let mut disk_full_counted = false;
        loop {
            let over_cap = self.bytes_on_disk + needed > self.cfg.max_bytes;
            // The file system may fill up before the cap (a small SD card, other files):
            // that is full too, and the same policy applies.
            let disk_full = !over_cap && !self.disk_has_room(needed);
            if !over_cap && !disk_full {
                break;
            }
            if disk_full && !disk_full_counted {
                disk_full_counted = true;
                self.stats.disk_full += 1;
            }
            match self.cfg.when_full {
                WhenFull::DropOldest => {
                    // With max_bytes >= 2 * segment_bytes there is always a sealed segment
                    // to drop at the cap; stop rather than loop if that invariant were broken.
                    let sealed = self.segments.len() - usize::from(self.active.is_some());
                    if sealed == 0 {
                        if disk_full {
                            // Only the segment being written is left and the disk is full:
                            // nothing old can make room, so this record cannot be kept.
                            self.stats.dropped_newest += 1;
                            return Ok(AppendOutcome::DroppedNewest);
                        }
                        break;
                    }
                    self.drop_oldest_segment()
                        .map_err(|(path, source)| AppendError::Io { path, source })?;
                }
                WhenFull::DropNewest => {
                    self.stats.dropped_newest += 1;
                    return Ok(AppendOutcome::DroppedNewest);
                }
                WhenFull::Block => {
                    return Err(AppendError::Full {
                        used: self.bytes_on_disk,
                        max_bytes: self.cfg.max_bytes,
                    });
                }
            }
        }
        let id = self.next_id;
        if let Err(source) = self.meta.reserve_record_id(id) {
            self.poisoned = true;
            return Err(AppendError::Io {
                path: self.meta.path().to_path_buf(),
                source,
            });
        }
        if self.needs_roll(frame_len)
            && let Err(source) = self.roll(appended_at_ms)
        {
            self.poisoned = true;
            return Err(AppendError::Io {
                path: segment_path(&self.cfg.dir, id),
                source,
            });
        }
        let header = encode_frame_header(id, appended_at_ms, payload);
        self.wbuf.extend_from_slice(&header);
        self.wbuf.extend_from_slice(payload);
        let seg = self.segments.back_mut().expect("roll created a segment");
        seg.len += frame_len;
        seg.end_id = id + 1;
        self.bytes_on_disk += frame_len;
        self.next_id = id + 1;
        self.live_records += 1;
        self.stats.records_appended += 1;
        self.stats.payload_bytes_appended += payload.len() as u64;
        self.first_uncommitted_ts.get_or_insert(appended_at_ms);
        if self.wbuf.len() >= WRITE_CHUNK
            && let Err(source) = self.write_pending()
        {
            self.poisoned = true;
            return Err(AppendError::Io {
                path: self.active_path(),
                source,
            });
        }
        Ok(AppendOutcome::Stored(id))
    }

    fn active_path(&self) -> std::path::PathBuf {
        let first = self.segments.back().map_or(self.next_id, |s| s.first_id);
        segment_path(&self.cfg.dir, first)
    }

    /// Hands the in-memory bytes to the active segment file (no sync).
    fn write_pending(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let active = self
            .active
            .as_mut()
            .expect("pending bytes belong to the active segment");
        active.file.write_all(&self.wbuf)?;
        active.written += self.wbuf.len() as u64;
        active.unsynced = true;
        self.stats.bytes_written += self.wbuf.len() as u64;
        self.wbuf.clear();
        Ok(())
    }

    /// Seals the active segment (written and synced, so only the newest segment can ever have
    /// a torn tail) and starts a new one at `next_id`.
    fn roll(&mut self, now: u64) -> io::Result<()> {
        if self.active.is_some() {
            self.write_pending()?;
            let sealed = self.active.take().expect("checked above");
            if sealed.unsynced {
                sealed.file.sync_data()?;
                self.stats.syncs += 1;
            }
        }
        let first_id = self.next_id;
        let path = segment_path(&self.cfg.dir, first_id);
        let header = SegmentHeader {
            first_id,
            created_ms: now,
            after_open: self.fresh_open,
        };
        let file = create_segment(&path, &header)?;
        self.fresh_open = false;
        let len = SEGMENT_HEADER_LEN as u64;
        self.active = Some(Active {
            file,
            written: len,
            unsynced: true,
        });
        self.segments.push_back(Segment {
            first_id,
            end_id: first_id,
            len,
        });
        self.bytes_on_disk += len;
        self.stats.bytes_written += len;
        self.dir_dirty = true;
        Ok(())
    }

    /// Group commit: writes everything appended since the last flush, syncs it with one
    /// `fdatasync` (plus one directory sync if a segment was created), makes it readable, and
    /// persists the ack cursor if it moved. A power cut loses at most what was appended since
    /// the last successful flush.
    pub fn flush(&mut self) -> Result<(), FlushError> {
        if self.poisoned {
            return Err(FlushError::Poisoned);
        }
        let path = self.active_path();
        let mut step = || -> io::Result<bool> {
            self.write_pending()?;
            if let Some(active) = self.active.as_mut()
                && active.unsynced
            {
                active.file.sync_data()?;
                active.unsynced = false;
                self.stats.syncs += 1;
            }
            if self.dir_dirty {
                sync_dir(&self.cfg.dir)?;
                self.dir_dirty = false;
                self.stats.syncs += 1;
            }
            Ok(true)
        };
        if let Err(source) = step() {
            self.poisoned = true;
            return Err(FlushError::Io { path, source });
        }
        self.committed_id = self.next_id;
        self.first_uncommitted_ts = None;
        let floor = self.floor();
        match self.cursor.store(floor) {
            Ok(wrote) => self.stats.syncs += u64::from(wrote),
            Err(source) => {
                self.poisoned = true;
                return Err(FlushError::Io {
                    path: self.cursor.path().to_path_buf(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Flushes and lowers the meta reservations so the next open continues without a gap.
    /// Dropping the buffer without `close` is handled like a crash by the next open.
    pub fn close(mut self) -> Result<(), CloseError> {
        self.flush()?;
        let next = self.next_id;
        self.meta.release(next).map_err(|source| CloseError::Meta {
            path: self.meta.path().to_path_buf(),
            source,
        })
    }

    /// Deletes the oldest (sealed) segment to make room, counting its unacknowledged records
    /// in `dropped_oldest`.
    pub(super) fn drop_oldest_segment(&mut self) -> Result<(), (std::path::PathBuf, io::Error)> {
        let Some(&seg) = self.segments.front() else {
            return Ok(());
        };
        let path = segment_path(&self.cfg.dir, seg.first_id);
        // Every record below the segment's end is now acknowledged or dropped: persist that
        // before the file goes, so that an open never mistakes the gap for a lost segment.
        if let Err(e) = self.cursor.store(seg.end_id.max(self.cursor.persisted())) {
            return Err((self.cursor.path().to_path_buf(), e));
        }
        self.rcache.forget(seg.first_id);
        std::fs::remove_file(&path).map_err(|e| (path.clone(), e))?;
        self.segments.pop_front();
        self.bytes_on_disk -= seg.len;
        let floor = self.floor();
        let mut acked_in_window = 0u64;
        let mut removed = 0usize;
        while self
            .window
            .entries
            .front()
            .is_some_and(|e| e.seg == seg.first_id)
        {
            let e = self.window.entries.pop_front().expect("checked");
            acked_in_window += u64::from(e.acked);
            removed += 1;
        }
        self.window.resend_idx = self.window.resend_idx.saturating_sub(removed);
        let lost = seg
            .end_id
            .saturating_sub(floor.max(seg.first_id))
            .saturating_sub(acked_in_window);
        self.live_records -= lost;
        self.stats.dropped_oldest += lost;
        if self.read.seg == seg.first_id {
            self.read = match self.segments.front() {
                Some(next) => ReadPos::start_of(next.first_id),
                None => ReadPos::start_of(self.next_id),
            };
        }
        warn!(
            segment = seg.first_id,
            records_lost = lost,
            "buffer full: dropped oldest segment"
        );
        Ok(())
    }

    /// Lowest id not yet acknowledged: every record below it is acknowledged or dropped.
    pub(super) fn floor(&self) -> u64 {
        self.window
            .entries
            .front()
            .map_or(self.read.next_id, |e| e.id)
    }

    /// Counters and gauges. Costs at most one small read (for the oldest record's age).
    pub fn stats(&mut self) -> BufferStats {
        let oldest = match self.window.entries.front() {
            Some(e) => Some(e.appended_at_ms),
            None => self.peek_read_ts().or(self.first_uncommitted_ts),
        };
        BufferStats {
            unacked_records: self.live_records,
            bytes_on_disk: self.bytes_on_disk,
            segments: self.segments.len(),
            oldest_unacked_appended_at_ms: oldest,
            bytes_written: self.stats.bytes_written
                + self.meta.bytes_written
                + self.cursor.bytes_written,
            ..self.stats
        }
    }
}
