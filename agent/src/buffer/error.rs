//! Errors, one enum per operation. I/O errors keep their source and name the file involved.
//!
//! After any `Io` error from `append`, `flush` or `read`, the buffer is *poisoned*: a failed
//! write or `fdatasync` leaves the file in an unknown state (and retrying an fsync after a
//! failure is not safe on Linux), so further calls return `Poisoned`. The caller recovers by
//! dropping the buffer and opening it again, which re-scans the files from disk.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// The configuration cannot work.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Segment size outside the supported range.
    #[error("segment_bytes = {segment_bytes} is outside the supported range {min}..={max}")]
    SegmentSize {
        /// Configured value.
        segment_bytes: u64,
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
    },
    /// The cap must hold at least two segments (the one being written and one to drop).
    #[error(
        "max_bytes = {max_bytes} must be at least twice segment_bytes = {segment_bytes}; raise max_bytes or lower segment_bytes"
    )]
    MaxBytesTooSmall {
        /// Configured cap.
        max_bytes: u64,
        /// Configured segment size.
        segment_bytes: u64,
    },
}

/// Opening the buffer failed.
#[derive(Debug, Error)]
pub enum OpenError {
    /// The configuration was rejected before touching the disk.
    #[error("invalid buffer configuration")]
    Config(#[from] ConfigError),
    /// The directory could not be created or listed.
    #[error("cannot use buffer directory {path}; check that it exists and is writable")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
    /// A file in the buffer directory could not be read, written or moved.
    #[error("I/O error on {path} while opening the buffer")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// Appending a record failed; the record was not stored.
#[derive(Debug, Error)]
pub enum AppendError {
    /// The record cannot fit in a segment, now or ever.
    #[error("record of {len} bytes exceeds the largest record a segment holds ({max} bytes)")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// Only with `WhenFull::Block`: the cap is reached. Keep the record and retry after
    /// acknowledgements have freed a segment (see [`Buffer::would_fit`](super::Buffer::would_fit)).
    #[error(
        "buffer is full ({used} of {max_bytes} bytes); retry after acknowledgements free a segment"
    )]
    Full {
        /// Bytes on disk now.
        used: u64,
        /// The configured cap.
        max_bytes: u64,
    },
    /// An earlier I/O error made the buffer unusable; drop it and open it again.
    #[error("buffer is unusable after an earlier I/O error; reopen it")]
    Poisoned,
    /// Writing failed (the buffer is now poisoned).
    #[error("I/O error on {path} while appending")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// Making appended records durable failed.
#[derive(Debug, Error)]
pub enum FlushError {
    /// An earlier I/O error made the buffer unusable; drop it and open it again.
    #[error("buffer is unusable after an earlier I/O error; reopen it")]
    Poisoned,
    /// Writing or syncing failed (the buffer is now poisoned); records appended since the last
    /// successful flush may be lost.
    #[error("I/O error on {path} while flushing")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// Reading records failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// An earlier I/O error made the buffer unusable; drop it and open it again.
    #[error("buffer is unusable after an earlier I/O error; reopen it")]
    Poisoned,
    /// A committed record no longer checks out (the medium changed it after it was written).
    /// The buffer is poisoned; reopening quarantines the segment and keeps the rest.
    #[error(
        "corrupt record in {path} at offset {offset}: {reason}; reopen the buffer to quarantine it"
    )]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte offset of the bad frame.
        offset: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// Reading failed (the buffer is now poisoned).
    #[error("I/O error on {path} while reading")]
    Io {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}

/// Acknowledging a record failed while deleting a fully acknowledged segment. The
/// acknowledgement itself is recorded; deletion is retried on the next acknowledgement.
#[derive(Debug, Error)]
#[error("cannot delete acknowledged segment {path}")]
pub struct AckError {
    /// The segment file.
    pub path: PathBuf,
    /// Underlying error.
    pub source: io::Error,
}

/// Reserving sequence numbers failed; no numbers were handed out.
#[derive(Debug, Error)]
#[error("cannot persist the sequence reservation in {path}")]
pub struct SeqError {
    /// The meta file.
    pub path: PathBuf,
    /// Underlying error.
    pub source: io::Error,
}

/// Closing the buffer cleanly failed. Nothing flushed before is lost; the next open treats it
/// as a crash.
#[derive(Debug, Error)]
pub enum CloseError {
    /// The final flush failed.
    #[error("final flush failed")]
    Flush(#[from] FlushError),
    /// The meta file could not be updated.
    #[error("cannot update {path} on close")]
    Meta {
        /// The meta file.
        path: PathBuf,
        /// Underlying error.
        source: io::Error,
    },
}
