//! The published JSON Schema of the Kafka reading record
//! (`schema/reading.schema.json`) against the writer: every record
//! [`Reading::write_json`] can produce from a valid envelope validates, for
//! any ids, tags, texts, numbers, timestamps and clock states; and the
//! schema refuses what the writer never writes, so that a change of either
//! shows up here first.

use proptest::prelude::*;
use std::sync::OnceLock;
use tributary_wire::{Clock, Envelope, Sample, Value, subject};

const SCHEMA: &str = include_str!("../../schema/reading.schema.json");

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("the schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the schema compiles")
    })
}

/// The schema's complaints about `record`, one line each.
fn errors(record: &serde_json::Value) -> Vec<String> {
    validator()
        .iter_errors(record)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn envelope(clock: Clock, value: Value) -> Envelope {
    Envelope {
        device: "pi-kitchen".into(),
        epoch: 1_764_000_000,
        sensor: "temp".into(),
        unit: Some("°C".into()),
        tags: vec![("room".into(), "kitchen".into())],
        clock,
        samples: vec![Sample {
            seq: 42,
            timestamp_ns: 1_795_827_723_123_456_789,
            value,
        }],
    }
}

fn record_of(env: &Envelope) -> serde_json::Value {
    let r = env.readings().next().expect("one sample");
    serde_json::from_slice(&r.to_json()).expect("write_json writes JSON")
}

#[test]
fn the_schema_is_a_valid_draft_2020_12_schema() {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA).unwrap();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert!(jsonschema::meta::is_valid(&schema));
}

#[test]
fn the_readme_example_record_validates() {
    let record = record_of(&envelope(Clock::Synced, Value::Float(21.5)));
    assert_eq!(errors(&record), Vec::<String>::new(), "{record}");
}

/// Turns a good record into one the writer never writes.
type Breaker = fn(&mut serde_json::Value);

#[test]
fn the_schema_refuses_what_the_writer_never_writes() {
    let good = record_of(&envelope(Clock::Unsynced, Value::Int(7)));
    assert!(errors(&good).is_empty(), "{good}");
    let cases: [(&str, Breaker); 13] = [
        ("a version field (a future record version)", |r| {
            r["v"] = 2.into()
        }),
        ("an unknown field", |r| r["extra"] = "x".into()),
        ("no tags", |r| {
            r.as_object_mut().unwrap().remove("tags");
        }),
        ("no value", |r| {
            r.as_object_mut().unwrap().remove("value");
        }),
        ("a null value (a non-finite float)", |r| {
            r["value"] = serde_json::Value::Null
        }),
        ("an object value", |r| r["value"] = serde_json::json!({})),
        ("clock \"synced\" (synchronized is absent)", |r| {
            r["clock"] = "synced".into()
        }),
        ("a timestamp with an offset", |r| {
            r["ts"] = "2026-11-28T01:02:03+01:00".into()
        }),
        ("a timestamp with trailing zeros", |r| {
            r["ts"] = "2026-11-28T01:02:03.120Z".into()
        }),
        ("a negative sequence number", |r| r["seq"] = (-1).into()),
        ("a fractional epoch", |r| r["epoch"] = 1.5.into()),
        ("a device id with a dot", |r| r["device"] = "pi.1".into()),
        ("a tag that is not a string", |r| {
            r["tags"]["room"] = 1.into()
        }),
    ];
    for (what, break_it) in cases {
        let mut bad = good.clone();
        break_it(&mut bad);
        assert!(!errors(&bad).is_empty(), "{what} passed: {bad}");
    }
}

/// Ids the agent accepts: any non-control characters, then only those
/// that are NATS subject tokens (no '.', '*', '>', whitespace).
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{1,24}",
        "[a-z0-9:_\u{feff}\u{85}\u{a0}-]{1,130}",
        "[\u{10000}-\u{10ffff}]{1,40}",
    ]
    .prop_filter("a NATS subject token", |s| {
        subject::validate_token("id", s).is_ok()
    })
}

/// Texts of at most 256 bytes, control characters and all.
fn text() -> impl Strategy<Value = String> {
    prop_oneof!["(?s).{0,40}", "[ä-ü]{120,130}", "\\PC{0,8}"]
        .prop_filter("256 bytes", |s| s.len() <= tributary_wire::MAX_TEXT_LEN)
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        text().prop_map(Value::Text),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_record_the_writer_makes_of_a_valid_envelope_validates(
        device in token(),
        sensor in token(),
        epoch: u64,
        seq: u64,
        timestamp_ns: i64,
        value in value(),
        unit in proptest::option::of(text()),
        tags in proptest::collection::btree_map(text(), text(), 0..=32),
        clock in prop_oneof![Just(Clock::Synced), Just(Clock::Unsynced), Just(Clock::Unknown)],
    ) {
        let env = Envelope {
            device,
            epoch,
            sensor,
            unit,
            tags: tags.into_iter().collect(),
            clock,
            samples: vec![Sample { seq, timestamp_ns, value }],
        };
        prop_assert_eq!(env.validate(), Ok(()));
        let record = record_of(&env);
        prop_assert_eq!(errors(&record), Vec::<String>::new(), "{}", record);
    }
}
