//! Golden bytes: envelopes of every format version ever written, committed
//! under `tests/fixtures/` (see its README), must keep decoding to the same
//! fields, whatever later versions add. A fixture is never regenerated: a
//! change that breaks one of these tests breaks agents in the field.

use tributary_wire::{Clock, Envelope, Sample, Value, WIRE_VERSION};

const V1: &[u8] = include_bytes!("fixtures/envelope-v1.bin");
const V2: &[u8] = include_bytes!("fixtures/envelope-v2.bin");

/// The samples both fixtures carry: one of each value type.
fn samples() -> Vec<Sample> {
    vec![
        Sample {
            seq: 7,
            timestamp_ns: 1_764_290_000_123_456_789,
            value: Value::Float(21.5),
        },
        Sample {
            seq: 9,
            timestamp_ns: 1_764_290_001_000_000_000,
            value: Value::Int(3),
        },
        Sample {
            seq: 10,
            timestamp_ns: 1_764_290_002_000_000_000,
            value: Value::Bool(true),
        },
        Sample {
            seq: 11,
            timestamp_ns: 1_764_290_003_000_000_000,
            value: Value::Text("ON".into()),
        },
    ]
}

/// Compares field by field, so a failure names the field that moved.
fn assert_fields(got: &Envelope, clock: Clock) {
    assert_eq!(got.device, "pi-kitchen");
    assert_eq!(got.epoch, 1_764_000_000);
    assert_eq!(got.sensor, "temp");
    assert_eq!(got.unit.as_deref(), Some("°C"));
    assert_eq!(got.tags, vec![("room".to_owned(), "kitchen".to_owned())]);
    assert_eq!(got.clock, clock);
    let expected = samples();
    assert_eq!(got.samples.len(), expected.len());
    for (g, e) in got.samples.iter().zip(&expected) {
        assert_eq!(g.seq, e.seq);
        assert_eq!(g.timestamp_ns, e.timestamp_ns);
        assert_eq!(g.value, e.value);
    }
    assert_eq!(got.msg_id(), "pi-kitchen:1764000000:7+4");
}

#[test]
fn the_golden_version_1_envelope_decodes_with_an_unknown_clock() {
    assert_eq!(V1[0], 1);
    let env = Envelope::decode(V1).expect("version 1 must keep decoding");
    assert_fields(&env, Clock::Unknown);
}

#[test]
fn the_golden_version_2_envelope_decodes_with_its_unsynced_clock() {
    assert_eq!(V2[0], 2);
    let env = Envelope::decode(V2).expect("version 2 must keep decoding");
    assert_fields(&env, Clock::Unsynced);
}

#[test]
fn re_encoding_the_golden_version_2_envelope_gives_identical_bytes() {
    // Holds while this build writes version 2; a build that writes a newer
    // version keeps the two decoding tests above and drops this one.
    assert_eq!(WIRE_VERSION, 2);
    let env = Envelope::decode(V2).unwrap();
    assert_eq!(env.encode().unwrap(), V2);
    assert_eq!(env.encoded_len(), V2.len());
}

#[test]
fn the_two_versions_differ_only_by_the_version_byte_and_the_clock_index() {
    // Version 2 inserts one byte, the clock's index (2 = unsynced), before
    // the samples; everything else is the same postcard. The samples start
    // at byte 41: version (1), device (1 + 10), epoch varint (5), sensor
    // (1 + 4), unit (1 + 1 + 3), tags (1 + 1 + 4 + 1 + 7).
    let head = 41;
    assert_eq!(V1[head], 4, "the sample count");
    assert_eq!(V2.len(), V1.len() + 1);
    assert_eq!(&V2[1..head], &V1[1..head]);
    assert_eq!(V2[head], 2);
    assert_eq!(&V2[head + 1..], &V1[head..]);
}
