//! Buffer configuration: where the log lives, how big it may grow, and what happens when it is
//! full.

use std::path::PathBuf;

use super::error::ConfigError;
use super::frame::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};

/// Default segment size: 1 MiB.
pub const DEFAULT_SEGMENT_BYTES: u64 = 1024 * 1024;
/// Default size cap: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Smallest accepted segment size (a header plus a few small records).
pub const MIN_SEGMENT_BYTES: u64 = 4096;
/// Largest accepted segment size (offsets inside a segment are kept as `u32`).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 31;

/// What [`Buffer::append`](super::Buffer::append) does when the size cap would be exceeded:
/// the configuration's policy itself (`[buffer] when_full`), so there is one enum, not two.
///
/// - `DropOldest`: delete the oldest whole segment, even if some of its records are
///   unacknowledged, and count the records lost in `dropped_oldest`. Fresh data wins.
/// - `DropNewest`: refuse the new record and count it in `dropped_newest`. Old data wins.
/// - `Block`: refuse the new record with [`AppendError::Full`](super::AppendError::Full); the
///   caller keeps the record and retries after acknowledgements freed a segment.
pub use tributary_config::WhenFull;

/// Everything the buffer needs to know to open its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// Directory holding segments, the cursor and the meta file (created if missing).
    pub dir: PathBuf,
    /// Size cap for all segment files together, in bytes. Must be at least twice
    /// `segment_bytes`.
    pub max_bytes: u64,
    /// Size at which a segment is sealed and the next one started, in bytes.
    pub segment_bytes: u64,
    /// Policy applied when an append would exceed `max_bytes`.
    pub when_full: WhenFull,
}

impl BufferConfig {
    /// A configuration with the defaults (64 MiB cap, 1 MiB segments, drop oldest).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            when_full: WhenFull::default(),
        }
    }

    /// Checks the sizes against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(ConfigError::SegmentSize {
                segment_bytes: self.segment_bytes,
                min: MIN_SEGMENT_BYTES,
                max: MAX_SEGMENT_BYTES,
            });
        }
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(ConfigError::MaxBytesTooSmall {
                max_bytes: self.max_bytes,
                segment_bytes: self.segment_bytes,
            });
        }
        Ok(())
    }

    /// Largest payload one record may carry with this configuration.
    pub fn max_record_len(&self) -> usize {
        usize::try_from(self.segment_bytes).unwrap_or(usize::MAX)
            - SEGMENT_HEADER_LEN
            - FRAME_HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_full_deserializes_from_snake_case() {
        #[derive(serde::Deserialize)]
        struct T {
            p: WhenFull,
        }
        for (text, want) in [
            ("drop_oldest", WhenFull::DropOldest),
            ("drop_newest", WhenFull::DropNewest),
            ("block", WhenFull::Block),
        ] {
            let t: T = serde_json::from_str(&format!(r#"{{"p":"{text}"}}"#)).unwrap();
            assert_eq!(t.p, want);
        }
        assert!(serde_json::from_str::<T>(r#"{"p":"DropOldest"}"#).is_err());
    }

    #[test]
    fn a_cap_smaller_than_two_segments_is_rejected() {
        let mut c = BufferConfig::new("/tmp/x");
        c.max_bytes = c.segment_bytes;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MaxBytesTooSmall { .. })
        ));
        c.max_bytes = 2 * c.segment_bytes;
        c.validate().unwrap();
        c.segment_bytes = 100;
        assert!(matches!(c.validate(), Err(ConfigError::SegmentSize { .. })));
    }
}
