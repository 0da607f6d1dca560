//! Golden files: a buffer directory written by format version 1 of the
//! segment, frame and slot layouts (`agent/tests/fixtures/buffer-v1/`,
//! never to be rewritten) must keep opening, with the same records, the
//! same cursor and the same epoch. A new format version must leave these
//! tests passing unchanged.
//!
//! The directory holds three records (`first`, `second`, `third`, appended
//! at 1_795_000_000_000 + 0, 1, 2 ms), of which the first was acknowledged
//! before a clean close; sequence numbers 0..3 were handed out.

use super::frame::{Decoded, SegmentHeader, decode_frame, encode_frame_header};
use super::*;
use std::path::{Path, PathBuf};

const EPOCH: u64 = 3_919_229_313_130_347_375;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/buffer-v1")
}

/// A copy of the fixture (opening writes: recovery, new reservations).
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture()).expect("fixture dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy");
    }
    dir
}

#[test]
fn a_version_1_buffer_directory_opens_with_its_records_cursor_and_epoch() {
    let dir = copy();
    let (mut buffer, report) = Buffer::open(BufferConfig::new(dir.path())).expect("opens");
    assert_eq!(buffer.epoch(), EPOCH);
    assert!(report.torn_tail.is_none() && report.quarantined.is_empty());
    let records = buffer.read(10).expect("read");
    let got: Vec<(u64, u64, &[u8])> = records
        .iter()
        .map(|r| (r.id, r.appended_at_ms, r.payload.as_slice()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, 1_795_000_000_001, &b"second"[..]),
            (2, 1_795_000_000_002, &b"third"[..]),
        ],
        "the acknowledged first record stays behind the cursor"
    );
    assert_eq!(
        buffer.allocate_seqs(1).expect("seqs"),
        3..4,
        "sequence numbers go on where the clean close left them"
    );
}

#[test]
fn the_version_1_segment_header_and_frames_decode_and_encode_to_the_same_bytes() {
    let bytes = std::fs::read(fixture().join("00000000000000000000.seg")).expect("segment");
    let header = SegmentHeader::decode(&bytes).expect("header");
    assert_eq!(header.first_id, 0);
    assert_eq!(&header.encode()[..], &bytes[..SEGMENT_HEADER_LEN]);
    let mut at = SEGMENT_HEADER_LEN;
    for (id, payload) in [(0u64, &b"first"[..]), (1, b"second"), (2, b"third")] {
        let appended = 1_795_000_000_000 + id;
        let expected = encode_frame_header(id, appended, payload);
        assert_eq!(
            &bytes[at..at + FRAME_HEADER_LEN],
            &expected[..],
            "frame {id}"
        );
        match decode_frame(&bytes[at..], 1 << 20) {
            Decoded::Frame(f) => {
                assert_eq!((f.id, f.appended_at_ms, f.payload), (id, appended, payload));
                at += f.encoded_len();
            }
            other => panic!("frame {id}: {other:?}"),
        }
    }
    assert_eq!(at, bytes.len(), "nothing after the three frames");
}

#[test]
fn the_version_1_slot_files_keep_their_magic_and_size() {
    for (name, magic) in [("cursor", b"TRBC"), ("meta", b"TRBM")] {
        let bytes = std::fs::read(fixture().join(name)).expect("slot file");
        assert_eq!(bytes.len(), 96, "{name}: two 48-byte slots");
        let slots: Vec<&[u8]> = bytes.chunks(48).collect();
        assert!(
            slots.iter().any(|s| &s[0..4] == magic),
            "{name}: a slot with magic {magic:?}"
        );
    }
}
