//! Byte layout of segment headers and record frames (all integers little-endian).
//!
//! Encoding writes into fixed-size arrays, so the append path allocates nothing; decoding
//! borrows the payload from the caller's buffer.

/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TRIBSEG\0";
/// Segment format version written by this code.
pub const SEGMENT_VERSION: u16 = 1;
/// Length of the segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Length of a record frame header (before the payload).
pub const FRAME_HEADER_LEN: usize = 24;

/// Fixed header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Id of the first record the segment holds (also its file name).
    pub first_id: u64,
    /// Wall-clock time the segment was created, ms since the Unix epoch.
    pub created_ms: u64,
    /// The first segment created after the buffer was opened (flag bit 0 of the header's
    /// `reserved` field; 0 in files written before it existed). Ids may jump before such a
    /// segment (a crash skips up to one reservation block); before any other segment a jump
    /// means a segment file went missing.
    pub after_open: bool,
}

/// Flag bit of [`SegmentHeader::after_open`].
const FLAG_AFTER_OPEN: u16 = 1;

impl SegmentHeader {
    /// `magic[8] version:u16 flags:u16 first_id:u64 created_ms:u64 crc32:u32`, where the CRC
    /// covers the 28 bytes before it (`flags` was `reserved`, always 0, before
    /// [`after_open`](Self::after_open); unknown bits are ignored).
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut b = [0u8; SEGMENT_HEADER_LEN];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8..10].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
        let flags = if self.after_open { FLAG_AFTER_OPEN } else { 0 };
        b[10..12].copy_from_slice(&flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.first_id.to_le_bytes());
        b[20..28].copy_from_slice(&self.created_ms.to_le_bytes());
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses a header, saying what is wrong with it when it is not valid.
    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < SEGMENT_HEADER_LEN {
            return Err("segment header is incomplete");
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic");
        }
        if crc32fast::hash(&b[0..28]) != le_u32(&b[28..32]) {
            return Err("segment header checksum mismatch");
        }
        if u16::from_le_bytes([b[8], b[9]]) != SEGMENT_VERSION {
            return Err("unsupported segment format version");
        }
        Ok(Self {
            first_id: le_u64(&b[12..20]),
            created_ms: le_u64(&b[20..28]),
            after_open: u16::from_le_bytes([b[10], b[11]]) & FLAG_AFTER_OPEN != 0,
        })
    }
}

/// Encodes a frame header: `len:u32 crc32:u32 id:u64 appended_at_ms:u64`. The CRC covers `len`,
/// `id`, `appended_at_ms` and the payload, so a damaged length is caught as well.
pub fn encode_frame_header(id: u64, appended_at_ms: u64, payload: &[u8]) -> [u8; FRAME_HEADER_LEN] {
    let mut h = [0u8; FRAME_HEADER_LEN];
    let len = u32::try_from(payload.len()).expect("record length checked by caller");
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h[16..24].copy_from_slice(&appended_at_ms.to_le_bytes());
    let crc = frame_crc(&h, payload);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
    h
}

fn frame_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[0..4]);
    hasher.update(&header[8..24]);
    hasher.update(payload);
    hasher.finalize()
}

/// A record decoded from a byte slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Record id.
    pub id: u64,
    /// Append time, ms since the Unix epoch.
    pub appended_at_ms: u64,
    /// The payload, borrowed from the input.
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Bytes the whole frame occupies.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Outcome of decoding at one position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A complete, checksummed frame.
    Frame(Frame<'a>),
    /// The input ends before the frame does; `need` is the whole frame's length (or the header
    /// length when even the header is cut).
    Incomplete {
        /// Bytes needed from the frame start.
        need: usize,
    },
    /// The bytes are not a valid frame.
    Invalid(&'static str),
}

/// Decodes the frame starting at `b[0]`. `max_len` bounds the payload length so that a damaged
/// length field is reported as invalid rather than as a huge incomplete frame.
pub fn decode_frame(b: &[u8], max_len: usize) -> Decoded<'_> {
    if b.len() < FRAME_HEADER_LEN {
        return Decoded::Incomplete {
            need: FRAME_HEADER_LEN,
        };
    }
    let len = le_u32(&b[0..4]) as usize;
    if len > max_len {
        return Decoded::Invalid("record length exceeds the segment size");
    }
    let total = FRAME_HEADER_LEN + len;
    if b.len() < total {
        return Decoded::Incomplete { need: total };
    }
    let payload = &b[FRAME_HEADER_LEN..total];
    if frame_crc(&b[..FRAME_HEADER_LEN], payload) != le_u32(&b[4..8]) {
        return Decoded::Invalid("record checksum mismatch");
    }
    Decoded::Frame(Frame {
        id: le_u64(&b[8..16]),
        appended_at_ms: le_u64(&b[16..24]),
        payload,
    })
}

pub(crate) fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().expect("4 bytes"))
}

pub(crate) fn le_u64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(id: u64, ts: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = encode_frame_header(id, ts, payload).to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn a_frame_round_trips_with_little_endian_fields() {
        let b = frame_bytes(0x0102_0304_0506_0708, 99, b"hello");
        assert_eq!(&b[0..4], &5u32.to_le_bytes());
        assert_eq!(&b[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        match decode_frame(&b, 1000) {
            Decoded::Frame(f) => {
                assert_eq!(f.id, 0x0102_0304_0506_0708);
                assert_eq!(f.appended_at_ms, 99);
                assert_eq!(f.payload, b"hello");
                assert_eq!(f.encoded_len(), b.len());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn an_empty_payload_is_a_valid_frame() {
        let b = frame_bytes(7, 1, b"");
        assert!(
            matches!(decode_frame(&b, 10), Decoded::Frame(f) if f.id == 7 && f.payload.is_empty())
        );
    }

    #[test]
    fn every_flipped_bit_is_detected() {
        let b = frame_bytes(42, 1234, b"payload bytes");
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(decode_frame(&c, 1 << 20), Decoded::Frame(_)),
                "bit {i} flip went unnoticed"
            );
        }
    }

    #[test]
    fn a_cut_frame_is_incomplete_not_invalid() {
        let b = frame_bytes(1, 2, &[7u8; 40]);
        for cut in 0..b.len() {
            assert!(matches!(
                decode_frame(&b[..cut], 1000),
                Decoded::Incomplete { .. }
            ));
        }
    }

    #[test]
    fn zero_filled_bytes_are_not_a_frame() {
        assert!(matches!(
            decode_frame(&[0u8; 64], 1000),
            Decoded::Invalid(_)
        ));
    }

    #[test]
    fn a_length_beyond_the_segment_size_is_invalid() {
        let b = frame_bytes(1, 2, &[0u8; 100]);
        assert!(matches!(decode_frame(&b, 99), Decoded::Invalid(_)));
    }

    #[test]
    fn a_segment_header_round_trips_and_rejects_damage() {
        let h = SegmentHeader {
            first_id: 77,
            created_ms: 5,
            after_open: true,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[13] ^= 1;
        assert!(SegmentHeader::decode(&bad).is_err());
        assert!(SegmentHeader::decode(&b[..31]).is_err());
    }
}
