//! Opening the buffer: recovery of segments, the cursor and the meta file.

use std::collections::VecDeque;
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::config::BufferConfig;
use super::cursor::{AckWindow, CursorFile};
use super::error::OpenError;
use super::frame::SEGMENT_HEADER_LEN;
use super::log::{Buffer, BufferStats};
use super::meta::{Meta, MetaState};
use super::reader::{ReadCache, ReadPos};
use super::segment::{Segment, list_segments, records_after, scan_segment, segment_path, sync_dir};

/// Name of the subdirectory damaged segments are moved into.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The newest segment ended in an incomplete or invalid record, cut off on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment file.
    pub path: PathBuf,
    /// Where the valid records end (the new file length).
    pub valid_len: u64,
    /// Bytes removed.
    pub truncated_bytes: u64,
    /// What was wrong at `valid_len`.
    pub reason: &'static str,
}

/// A damaged file put into the quarantine directory: a segment with a bad header or a bad
/// record, or an unreadable cursor or meta file. Nothing damaged is ever deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was.
    pub from: PathBuf,
    /// Where it (or, when `kept_records > 0`, a copy of it) is now.
    pub to: PathBuf,
    /// Offset of the first damaged byte found.
    pub offset: u64,
    /// What was wrong.
    pub reason: &'static str,
    /// Records before the damage that stay in the buffer (the live file was cut at
    /// `offset`; the quarantined copy is whole). 0 when the whole file was moved.
    pub kept_records: u64,
    /// Unacknowledged records lost with the damage, when that can be told: exact for an
    /// older segment (the next segment says where it ended), a lower bound for the newest
    /// one (the valid records found after the damage), `None` when not even that is known.
    pub records_lost: Option<u64>,
}

/// Record ids missing between two segments (or between the cursor and the first segment):
/// a segment file was deleted or lost, not by the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The segment found after the gap.
    pub before: PathBuf,
    /// Ids of the unacknowledged records that are gone.
    pub ids: std::ops::Range<u64>,
}

/// What [`Buffer::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenReport {
    /// Whether the meta file was new: a fresh buffer directory with a new epoch.
    pub created: bool,
    /// Whether the meta file was unreadable and replaced (new epoch).
    pub meta_reset: bool,
    /// Whether the cursor file was unreadable (everything kept is delivered again).
    pub cursor_reset: bool,
    /// Segments kept.
    pub segments: usize,
    /// Unacknowledged records recovered (delivered again after open).
    pub records: u64,
    /// Segments deleted because every record in them was already acknowledged.
    pub acked_segments_removed: usize,
    /// Empty or header-only newest segment removed.
    pub empty_segment_removed: bool,
    /// Truncated torn tail, if any.
    pub torn_tail: Option<TornTail>,
    /// Quarantined files (segments, cursor, meta).
    pub quarantined: Vec<Quarantined>,
    /// Ranges of records whose segment file is missing.
    pub missing: Vec<Missing>,
    /// Id the next appended record gets.
    pub next_id: u64,
}

impl OpenReport {
    /// Unacknowledged records lost to damaged or missing files, as far as can be told.
    pub fn records_lost(&self) -> u64 {
        let damaged: u64 = self.quarantined.iter().filter_map(|q| q.records_lost).sum();
        let missing: u64 = self.missing.iter().map(|m| m.ids.end - m.ids.start).sum();
        damaged + missing
    }
}

impl Buffer {
    /// Opens (creating if needed) the buffer in `config.dir`: validates every segment,
    /// truncates a torn tail of the newest one, quarantines damaged ones, removes fully
    /// acknowledged ones, and positions reading at the first unacknowledged record. Reads
    /// every segment once (startup cost grows with the backlog) and holds one segment in
    /// memory while doing so.
    pub fn open(config: BufferConfig) -> Result<(Self, OpenReport), OpenError> {
        config.validate()?;
        let dir = config.dir.clone();
        let dir_err = |source| OpenError::Dir {
            path: dir.clone(),
            source,
        };
        fs::create_dir_all(&dir).map_err(dir_err)?;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OpenError::Io { path, source }
        };
        let mut quarantined = Vec::new();
        let meta_path = dir.join("meta");
        let meta_damaged = Meta::probe(&meta_path).map_err(io_err(&meta_path))?;
        if meta_damaged {
            quarantined.push(quarantine_slot_file(&dir, &meta_path).map_err(io_err(&meta_path))?);
        }
        let (meta, meta_state) = Meta::open(&meta_path).map_err(io_err(&meta_path))?;
        let cursor_path = dir.join("cursor");
        let cursor_damaged = CursorFile::probe(&cursor_path).map_err(io_err(&cursor_path))?;
        if cursor_damaged {
            quarantined
                .push(quarantine_slot_file(&dir, &cursor_path).map_err(io_err(&cursor_path))?);
        }
        let (cursor, _) = CursorFile::open(&cursor_path).map_err(io_err(&cursor_path))?;
        let floor = cursor.persisted();
        let max_record_len = config.max_record_len();

        let mut report = OpenReport {
            created: meta_state == MetaState::Created && !meta_damaged,
            meta_reset: meta_state == MetaState::Reset || meta_damaged,
            cursor_reset: cursor_damaged,
            segments: 0,
            records: 0,
            acked_segments_removed: 0,
            empty_segment_removed: false,
            torn_tail: None,
            quarantined,
            missing: Vec::new(),
            next_id: 0,
        };
        let ids = list_segments(&dir).map_err(dir_err)?;
        let mut segments: VecDeque<Segment> = VecDeque::with_capacity(ids.len());
        let mut read: Option<ReadPos> = None;
        let mut dir_changed = false;
        let mut buf = Vec::new();
        // Where the next segment should start if no file went missing: the cursor (every
        // record below it is acknowledged), then each segment's end.
        let mut expected: Option<u64> = (!report.cursor_reset).then_some(floor);
        for (i, &first_id) in ids.iter().enumerate() {
            let path = segment_path(&dir, first_id);
            let newest = i + 1 == ids.len();
            let scan = scan_segment(&path, first_id, floor, max_record_len, &mut buf)
                .map_err(io_err(&path))?;
            if let Some(start) = expected
                && first_id > start
                && !scan.after_open
                && scan
                    .problem
                    .is_none_or(|(offset, _)| offset >= SEGMENT_HEADER_LEN as u64)
            {
                warn!(
                    segment = %path.display(),
                    missing_ids = ?(start..first_id),
                    reason = "records missing before this segment: a segment file was deleted",
                    "buffer: records missing"
                );
                report.missing.push(Missing {
                    before: path.clone(),
                    ids: start..first_id,
                });
            }
            let mut valid_len = scan.file_len;
            let mut records = scan.records;
            if let Some((offset, reason)) = scan.problem {
                let header_ok = offset >= SEGMENT_HEADER_LEN as u64;
                let torn_creation = !header_ok && scan.file_len <= SEGMENT_HEADER_LEN as u64;
                // Valid records after the bad one mean damage, not a write cut short.
                let after = if header_ok {
                    records_after(&buf, offset, first_id + scan.records, max_record_len)
                } else {
                    0
                };
                if newest && ((header_ok && after == 0) || torn_creation) {
                    if header_ok {
                        let f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err(&path))?;
                        f.set_len(offset).map_err(io_err(&path))?;
                        f.sync_all().map_err(io_err(&path))?;
                    }
                    warn!(
                        segment = %path.display(),
                        valid_len = offset,
                        truncated_bytes = scan.file_len - offset,
                        reason,
                        "buffer: truncated torn tail"
                    );
                    report.torn_tail = Some(TornTail {
                        path: path.clone(),
                        valid_len: offset,
                        truncated_bytes: scan.file_len - offset,
                        reason,
                    });
                    valid_len = offset;
                } else {
                    let lost = |kept: u64| match ids.get(i + 1) {
                        Some(&next) => Some(next.saturating_sub((first_id + kept).max(floor))),
                        None => Some(after),
                    };
                    // Keep the valid records before the damage: a whole copy goes to
                    // quarantine and the live file is cut. Moving the file whole is the
                    // fallback (no header, or no room for a copy).
                    let kept = if header_ok && scan.records > 0 {
                        keep_prefix(&dir, &path, &buf, offset).ok()
                    } else {
                        None
                    };
                    let (to, kept_records) = match kept {
                        Some(to) => (to, scan.records),
                        None => (quarantine(&dir, &path).map_err(io_err(&path))?, 0),
                    };
                    let records_lost = lost(kept_records);
                    warn!(
                        segment = %path.display(),
                        quarantined_to = %to.display(),
                        offset,
                        reason,
                        kept_records,
                        records_lost = ?records_lost,
                        "buffer: quarantined damaged segment"
                    );
                    report.quarantined.push(Quarantined {
                        from: path.clone(),
                        to,
                        offset,
                        reason,
                        kept_records,
                        records_lost,
                    });
                    dir_changed = true;
                    // The loss is reported: the next segment's start is no news.
                    expected = None;
                    if kept_records == 0 {
                        continue;
                    }
                    valid_len = offset;
                    records = kept_records;
                }
            }
            let seg = Segment {
                first_id,
                end_id: first_id + records,
                len: valid_len,
            };
            if report.quarantined.last().is_none_or(|q| q.from != path) {
                expected = Some(seg.end_id.max(expected.unwrap_or(0)));
            }
            if seg.end_id <= floor || (newest && records == 0) {
                fs::remove_file(&path).map_err(io_err(&path))?;
                dir_changed = true;
                if records == 0 {
                    report.empty_segment_removed = true;
                } else {
                    report.acked_segments_removed += 1;
                }
                continue;
            }
            if newest && scan.problem.is_none() {
                // A crash of the process (not of the machine) leaves unsynced bytes in the
                // page cache; make them durable before they are handed out.
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                f.sync_data().map_err(io_err(&path))?;
            }
            if read.is_none() {
                read = Some(match scan.floor_offset {
                    Some(offset) if offset < valid_len => ReadPos {
                        seg: first_id,
                        offset,
                        next_id: first_id.max(floor),
                    },
                    _ => ReadPos::start_of(first_id),
                });
            }
            report.records += seg.end_id - seg.first_id.max(floor);
            segments.push_back(seg);
        }
        let next_id = segments
            .back()
            .map_or(0, |s| s.end_id)
            .max(meta.record_floor())
            .max(floor);
        if dir_changed {
            sync_dir(&dir).map_err(dir_err)?;
        }
        report.segments = segments.len();
        report.next_id = next_id;
        info!(
            dir = %dir.display(),
            segments = report.segments,
            records = report.records,
            next_id,
            created = report.created,
            torn_tail = report.torn_tail.is_some(),
            quarantined = report.quarantined.len(),
            "buffer opened"
        );
        if report.meta_reset {
            warn!(path = %meta_path.display(), "buffer: meta file unreadable, new epoch chosen");
        }
        if report.cursor_reset {
            warn!(path = %cursor_path.display(), "buffer: cursor file unreadable, redelivering all records");
        }
        for q in report
            .quarantined
            .iter()
            .filter(|q| q.from == meta_path || q.from == cursor_path)
        {
            warn!(
                file = %q.from.display(),
                quarantined_to = %q.to.display(),
                reason = q.reason,
                "buffer: quarantined damaged state file"
            );
        }
        let bytes_on_disk = segments.iter().map(|s| s.len).sum();
        let buffer = Buffer {
            max_record_len,
            segments,
            active: None,
            wbuf: Vec::with_capacity(64 * 1024 + max_record_len.min(64 * 1024)),
            next_id,
            committed_id: next_id,
            first_uncommitted_ts: None,
            dir_dirty: false,
            meta,
            cursor,
            window: AckWindow::default(),
            read: read.unwrap_or(ReadPos::start_of(next_id)),
            rcache: ReadCache::default(),
            live_records: report.records,
            bytes_on_disk,
            stats: BufferStats::default(),
            poisoned: false,
            fresh_open: true,
            cfg: config,
        };
        Ok((buffer, report))
    }
}

/// Moves a damaged segment into `dir/quarantine/`, never overwriting an earlier one.
fn quarantine(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir)?;
    let to = free_name(&qdir, path);
    fs::rename(path, &to)?;
    sync_dir(&qdir)?;
    Ok(to)
}

/// Puts a copy of the damaged segment (its bytes are in `buf`) into quarantine, then cuts the
/// live file at `offset`, keeping the valid records before it.
fn keep_prefix(dir: &Path, path: &Path, buf: &[u8], offset: u64) -> std::io::Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir)?;
    let to = free_name(&qdir, path);
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&to)?;
        std::io::Write::write_all(&mut f, buf)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&to);
        return Err(e);
    }
    sync_dir(&qdir)?;
    let f = OpenOptions::new().write(true).open(path)?;
    f.set_len(offset)?;
    f.sync_all()?;
    Ok(to)
}

/// A name in `qdir` for `path`'s file that no earlier quarantined file has.
fn free_name(qdir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut to = qdir.join(name.as_ref());
    let mut n = 1;
    while to.exists() {
        to = qdir.join(format!("{name}.{n}"));
        n += 1;
    }
    to
}

/// Moves an unreadable slot file (cursor, meta) into quarantine; the caller creates a new one.
fn quarantine_slot_file(dir: &Path, path: &Path) -> std::io::Result<Quarantined> {
    let to = quarantine(dir, path)?;
    sync_dir(dir)?;
    Ok(Quarantined {
        from: path.to_path_buf(),
        to,
        offset: 0,
        reason: "no valid slot",
        kept_records: 0,
        records_lost: None,
    })
}
