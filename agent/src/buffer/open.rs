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
use super::segment::{Segment, list_segments, scan_segment, segment_path, sync_dir};
use super::slots::Loaded;

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

/// A segment moved into the quarantine directory because it is damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    /// Where it was.
    pub from: PathBuf,
    /// Where it is now.
    pub to: PathBuf,
    /// Offset of the first damaged byte found.
    pub offset: u64,
    /// What was wrong.
    pub reason: &'static str,
    /// Unacknowledged records lost with it, when that can be told (not for the newest
    /// segment, whose end is unknown).
    pub records_lost: Option<u64>,
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
    /// Quarantined segments.
    pub quarantined: Vec<Quarantined>,
    /// Id the next appended record gets.
    pub next_id: u64,
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
        let meta_path = dir.join("meta");
        let (meta, meta_state) = Meta::open(&meta_path).map_err(io_err(&meta_path))?;
        let cursor_path = dir.join("cursor");
        let (cursor, cursor_state) =
            CursorFile::open(&cursor_path).map_err(io_err(&cursor_path))?;
        let floor = cursor.persisted();
        let max_record_len = config.max_record_len();

        let mut report = OpenReport {
            created: meta_state == MetaState::Created,
            meta_reset: meta_state == MetaState::Reset,
            cursor_reset: cursor_state == Loaded::Corrupt,
            segments: 0,
            records: 0,
            acked_segments_removed: 0,
            empty_segment_removed: false,
            torn_tail: None,
            quarantined: Vec::new(),
            next_id: 0,
        };
        let ids = list_segments(&dir).map_err(dir_err)?;
        let mut segments: VecDeque<Segment> = VecDeque::with_capacity(ids.len());
        let mut read: Option<ReadPos> = None;
        let mut dir_changed = false;
        let mut buf = Vec::new();
        for (i, &first_id) in ids.iter().enumerate() {
            let path = segment_path(&dir, first_id);
            let newest = i + 1 == ids.len();
            let scan = scan_segment(&path, first_id, floor, max_record_len, &mut buf)
                .map_err(io_err(&path))?;
            let mut valid_len = scan.file_len;
            if let Some((offset, reason)) = scan.problem {
                let header_ok = offset >= SEGMENT_HEADER_LEN as u64;
                let torn_creation = !header_ok && scan.file_len <= SEGMENT_HEADER_LEN as u64;
                if newest && (header_ok || torn_creation) {
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
                    let records_lost = ids
                        .get(i + 1)
                        .map(|&next| next.saturating_sub(first_id.max(floor)));
                    let to = quarantine(&dir, &path).map_err(io_err(&path))?;
                    warn!(
                        segment = %path.display(),
                        quarantined_to = %to.display(),
                        offset,
                        reason,
                        records_lost = ?records_lost,
                        "buffer: quarantined damaged segment"
                    );
                    report.quarantined.push(Quarantined {
                        from: path,
                        to,
                        offset,
                        reason,
                        records_lost,
                    });
                    dir_changed = true;
                    continue;
                }
            }
            let seg = Segment {
                first_id,
                end_id: first_id + scan.records,
                len: valid_len,
            };
            if seg.end_id <= floor || (newest && scan.records == 0) {
                fs::remove_file(&path).map_err(io_err(&path))?;
                dir_changed = true;
                if scan.records == 0 {
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
                    Some(offset) => ReadPos {
                        seg: first_id,
                        offset,
                        next_id: first_id.max(floor),
                    },
                    None => ReadPos::start_of(first_id),
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
            cfg: config,
        };
        Ok((buffer, report))
    }
}

/// Moves a damaged segment into `dir/quarantine/`, never overwriting an earlier one.
fn quarantine(dir: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let qdir = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&qdir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut to = qdir.join(name.as_ref());
    let mut n = 1;
    while to.exists() {
        to = qdir.join(format!("{name}.{n}"));
        n += 1;
    }
    fs::rename(path, &to)?;
    sync_dir(&qdir)?;
    Ok(to)
}
