//! The buffer's frame and header codecs, reachable from the fuzz targets
//! (`fuzz/`). Not an API: thin wrappers over the crate-private functions
//! the buffer itself uses. Whole-directory recovery is fuzzed through the
//! public [`Buffer::open`](super::Buffer::open).

use super::frame::{self, Decoded};

/// What decoding one frame at the start of a byte string gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOutcome<'a> {
    /// A whole, checksummed frame of this many bytes.
    Frame {
        /// Record id.
        id: u64,
        /// Append time.
        appended_at_ms: u64,
        /// Payload.
        payload: &'a [u8],
        /// Bytes of the whole frame.
        encoded_len: usize,
    },
    /// The bytes end before the frame does; `need` bytes are needed.
    Incomplete {
        /// Bytes needed from the frame start.
        need: usize,
    },
    /// Not a frame.
    Invalid(&'static str),
}

/// Decodes the frame at `b[0]` with payloads limited to `max_len`.
pub fn decode_frame(b: &[u8], max_len: usize) -> FrameOutcome<'_> {
    match frame::decode_frame(b, max_len) {
        Decoded::Frame(f) => FrameOutcome::Frame {
            id: f.id,
            appended_at_ms: f.appended_at_ms,
            payload: f.payload,
            encoded_len: f.encoded_len(),
        },
        Decoded::Incomplete { need } => FrameOutcome::Incomplete { need },
        Decoded::Invalid(r) => FrameOutcome::Invalid(r),
    }
}

/// The bytes of a frame as the buffer writes it.
pub fn encode_frame(id: u64, appended_at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = frame::encode_frame_header(id, appended_at_ms, payload).to_vec();
    v.extend_from_slice(payload);
    v
}

/// Decodes a segment header: `(first_id, created_ms, after_open)`.
pub fn decode_segment_header(b: &[u8]) -> Result<(u64, u64, bool), &'static str> {
    frame::SegmentHeader::decode(b).map(|h| (h.first_id, h.created_ms, h.after_open))
}

/// The 32 bytes of a segment header as the buffer writes it.
pub fn encode_segment_header(first_id: u64, created_ms: u64, after_open: bool) -> Vec<u8> {
    frame::SegmentHeader {
        first_id,
        created_ms,
        after_open,
    }
    .encode()
    .to_vec()
}
