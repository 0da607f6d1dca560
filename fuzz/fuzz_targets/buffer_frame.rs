//! Fuzz target: the disk buffer's frame and segment-header readers.
//! Properties: a byte string that decodes as a frame is exactly the bytes the
//! encoder writes for that frame (so no damaged frame is ever accepted as a
//! different one); "incomplete" asks for more bytes than were given; a
//! segment header decodes only when it is the encoder's output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_agent::buffer::fuzz_api::{
    FrameOutcome, decode_frame, decode_segment_header, encode_frame, encode_segment_header,
};

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the payload limit, as a segment size would.
    let (limit, rest) = match data {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => return,
    };
    match decode_frame(rest, limit) {
        FrameOutcome::Frame {
            id,
            appended_at_ms,
            payload,
            encoded_len,
        } => {
            assert!(payload.len() <= limit);
            assert_eq!(encoded_len, 24 + payload.len());
            assert_eq!(
                encode_frame(id, appended_at_ms, payload),
                &rest[..encoded_len],
                "an accepted frame is byte for byte what the encoder writes"
            );
        }
        FrameOutcome::Incomplete { need } => assert!(need > rest.len()),
        FrameOutcome::Invalid(reason) => assert!(!reason.is_empty()),
    }
    if let Ok((first_id, created_ms, after_open)) = decode_segment_header(rest) {
        // Unknown flag bits are ignored, so compare without them.
        let mut want = rest[..28].to_vec();
        want[10] &= 1;
        want[11] = 0;
        assert_eq!(
            encode_segment_header(first_id, created_ms, after_open)[..28],
            want[..]
        );
    }
    // And the other way: an encoded frame always decodes to itself, whole,
    // and cut anywhere is incomplete, never another frame.
    let id = u64::from(limit as u16) << 7;
    let frame = encode_frame(id, 42, rest);
    match decode_frame(&frame, rest.len()) {
        FrameOutcome::Frame {
            id: got, payload, ..
        } => {
            assert_eq!((got, payload), (id, rest));
        }
        other => panic!("an encoded frame did not decode: {other:?}"),
    }
    let cut = usize::from(data[0]) % frame.len();
    assert!(matches!(
        decode_frame(&frame[..cut], rest.len()),
        FrameOutcome::Incomplete { .. }
    ));
});
