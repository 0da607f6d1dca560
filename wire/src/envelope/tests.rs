//! Unit and property tests of the envelope: round trips of both format
//! versions, every way of being wrong, and the byte layout of version 2.

use super::*;
use proptest::prelude::*;

fn sample_envelope() -> Envelope {
    Envelope {
        device: "pi-kitchen".into(),
        epoch: 1_764_000_000,
        sensor: "temp".into(),
        unit: Some("°C".into()),
        tags: vec![("room".into(), "kitchen".into())],
        clock: Clock::Unsynced,
        samples: vec![
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
        ],
    }
}

#[test]
fn an_encoded_envelope_starts_with_the_version_byte_and_decodes_back() {
    let env = sample_envelope();
    let bytes = env.encode().unwrap();
    assert_eq!(bytes[0], WIRE_VERSION);
    assert_eq!(bytes.len(), env.encoded_len());
    assert_eq!(Envelope::decode(&bytes).unwrap(), env);
}

#[test]
fn encoding_is_deterministic_so_resends_carry_identical_bytes() {
    let env = sample_envelope();
    assert_eq!(env.encode().unwrap(), env.clone().encode().unwrap());
    assert_eq!(env.msg_id(), "pi-kitchen:1764000000:7+2");
}

#[test]
fn decoding_rejects_an_unknown_version_and_says_which_versions_it_reads() {
    let mut bytes = sample_envelope().encode().unwrap();
    for version in [0, 3, 255] {
        bytes[0] = version;
        let err = Envelope::decode(&bytes).unwrap_err();
        assert_eq!(err, DecodeError::UnknownVersion(version));
        assert_eq!(
            err.to_string(),
            format!("unknown wire format version {version} (this build reads versions 1 to 2)")
        );
    }
}

/// The version-1 bytes of `env` (whose clock it cannot carry), as an
/// agent before format version 2 wrote them.
fn encode_v1(env: &Envelope) -> Vec<u8> {
    let v1 = EnvelopeV1 {
        device: env.device.clone(),
        epoch: env.epoch,
        sensor: env.sensor.clone(),
        unit: env.unit.clone(),
        tags: env.tags.clone(),
        samples: env.samples.clone(),
    };
    let mut out = vec![1];
    postcard::to_io(&v1, &mut out).unwrap();
    out
}

#[test]
fn this_build_writes_version_2_and_a_version_1_envelope_decodes_with_an_unknown_clock() {
    let env = sample_envelope();
    assert_eq!(env.encode().unwrap()[0], 2);
    let decoded = Envelope::decode(&encode_v1(&env)).unwrap();
    assert_eq!(decoded.clock, Clock::Unknown);
    assert_eq!(
        decoded,
        Envelope {
            clock: Clock::Unknown,
            ..env
        }
    );
}

#[test]
fn the_version_2_body_is_the_version_1_body_with_the_clock_index_before_the_samples() {
    for (clock, index) in [
        (Clock::Unknown, 0),
        (Clock::Synced, 1),
        (Clock::Unsynced, 2),
    ] {
        let env = Envelope {
            clock,
            ..sample_envelope()
        };
        let v1 = encode_v1(&env);
        let v2 = env.encode().unwrap();
        // The samples are the tail of both; the clock goes just before.
        let head = v1.len() - sample_tail_len(&env);
        let mut expected = vec![2];
        expected.extend_from_slice(&v1[1..head]);
        expected.push(index);
        expected.extend_from_slice(&v1[head..]);
        assert_eq!(v2, expected, "{clock}");
    }
}

/// Bytes of the sample vector (its length prefix and every sample) in
/// an encoding of `env`.
fn sample_tail_len(env: &Envelope) -> usize {
    postcard::experimental::serialized_size(&env.samples).unwrap()
}

#[test]
fn an_unknown_clock_index_is_rejected_as_malformed() {
    let env = Envelope {
        clock: Clock::Unsynced,
        ..sample_envelope()
    };
    let mut bytes = env.encode().unwrap();
    let at = bytes.len() - sample_tail_len(&env) - 1;
    assert_eq!(bytes[at], 2);
    bytes[at] = 3;
    assert!(matches!(
        Envelope::decode(&bytes),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn the_clock_names_itself_in_lowercase_in_json() {
    for (clock, name) in [
        (Clock::Unknown, "unknown"),
        (Clock::Synced, "synced"),
        (Clock::Unsynced, "unsynced"),
    ] {
        assert_eq!(clock.as_str(), name);
        assert_eq!(clock.to_string(), name);
        assert_eq!(
            serde_json::to_string(&clock).unwrap(),
            format!("\"{name}\"")
        );
        assert_eq!(clock.is_synced(), clock == Clock::Synced);
    }
}

#[test]
fn decoding_rejects_empty_input() {
    assert_eq!(Envelope::decode(&[]), Err(DecodeError::Empty));
}

#[test]
fn decoding_rejects_every_truncation() {
    let bytes = sample_envelope().encode().unwrap();
    for len in 1..bytes.len() {
        let err = Envelope::decode(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, DecodeError::Truncated | DecodeError::Malformed(_)),
            "len {len}: {err:?}"
        );
    }
    assert_eq!(Envelope::decode(&bytes[..1]), Err(DecodeError::Truncated));
}

#[test]
fn decoding_rejects_trailing_bytes() {
    let mut bytes = sample_envelope().encode().unwrap();
    bytes.extend_from_slice(&[0, 0, 0]);
    assert_eq!(Envelope::decode(&bytes), Err(DecodeError::TrailingBytes(3)));
}

#[test]
fn encoding_refuses_a_device_id_that_is_not_a_subject_token() {
    let mut env = sample_envelope();
    env.device = "pi.kitchen".into();
    let err = env.encode().unwrap_err();
    assert!(err.to_string().contains("pi.kitchen"), "{err}");
}

#[test]
fn encoding_refuses_nan_and_empty_batches() {
    let mut env = sample_envelope();
    env.samples[1].value = Value::Float(f64::NAN);
    assert_eq!(
        env.encode(),
        Err(EncodeError::Invalid(EnvelopeError::NonFinite { seq: 9 }))
    );
    env.samples.clear();
    assert_eq!(
        env.encode(),
        Err(EncodeError::Invalid(EnvelopeError::NoSamples))
    );
}

#[test]
fn reading_ids_print_and_parse_back() {
    let env = sample_envelope();
    let id = env.readings().nth(1).unwrap().id();
    assert_eq!(id.to_string(), "pi-kitchen:1764000000:9");
    assert_eq!(id.to_string().parse::<ReadingId>().unwrap(), id);
    assert!("nope".parse::<ReadingId>().is_err());
    assert!("a:b:c".parse::<ReadingId>().is_err());
}

fn token() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_-]{1,24}"
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-1e12f64..1e12).prop_map(Value::Float),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        ".{0,40}".prop_map(Value::Text),
    ]
}

fn clock() -> impl Strategy<Value = Clock> {
    prop_oneof![
        Just(Clock::Unknown),
        Just(Clock::Synced),
        Just(Clock::Unsynced)
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        token(),
        any::<u64>(),
        token(),
        proptest::option::of(".{0,8}"),
        proptest::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..4),
        clock(),
        proptest::collection::vec((any::<u64>(), any::<i64>(), value()), 1..20),
    )
        .prop_map(
            |(device, epoch, sensor, unit, tags, clock, samples)| Envelope {
                device,
                epoch,
                sensor,
                unit,
                tags: tags.into_iter().collect(),
                clock,
                samples: samples
                    .into_iter()
                    .map(|(seq, timestamp_ns, value)| Sample {
                        seq,
                        timestamp_ns,
                        value,
                    })
                    .collect(),
            },
        )
}

proptest! {
    #[test]
    fn any_valid_envelope_round_trips(env in envelope()) {
        let bytes = env.encode().unwrap();
        prop_assert_eq!(bytes[0], 2);
        prop_assert_eq!(bytes.len(), env.encoded_len());
        for sample in &env.samples {
            // encoded_len_of sizes the fields without a Sample: the same bytes.
            prop_assert_eq!(postcard::to_allocvec(sample).unwrap().len(), sample.encoded_len());
        }
        prop_assert_eq!(Envelope::decode(&bytes).unwrap(), env);
    }

    #[test]
    fn any_valid_version_1_envelope_decodes_to_its_fields_with_an_unknown_clock(env in envelope()) {
        let decoded = Envelope::decode(&encode_v1(&env)).unwrap();
        prop_assert_eq!(decoded, Envelope { clock: Clock::Unknown, ..env });
    }

    #[test]
    fn decoding_a_corrupted_version_1_envelope_never_panics(env in envelope(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = encode_v1(&env);
        let pos = 1 + pos % (bytes.len() - 1);
        bytes[pos] = byte;
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
    }

    #[test]
    fn decoding_a_corrupted_envelope_never_panics(env in envelope(), pos in any::<usize>(), byte in any::<u8>()) {
        let mut bytes = env.encode().unwrap();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        let _ = Envelope::decode(&bytes);
    }
}
