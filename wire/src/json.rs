//! The JSON record written to Kafka: one object per reading.
//!
//! ```json
//! {"id":"pi-kitchen:1764000000:42","device":"pi-kitchen","sensor":"temp",
//!  "epoch":1764000000,"seq":42,"ts":"2026-11-28T01:02:03.123456789Z",
//!  "value":21.5,"unit":"°C","tags":{"room":"kitchen"}}
//! ```
//!
//! | field    | type                          | meaning                                    |
//! |----------|-------------------------------|--------------------------------------------|
//! | `id`     | string                        | stable reading id, `device:epoch:seq`      |
//! | `device` | string                        | device id                                  |
//! | `sensor` | string                        | sensor id                                  |
//! | `epoch`  | integer                       | the agent installation's epoch             |
//! | `seq`    | integer                       | per-device sequence number                 |
//! | `ts`     | string                        | RFC 3339 UTC timestamp, up to nanoseconds  |
//! | `clock`  | string, absent when synced    | `"unsynced"` or `"unknown"`: see below     |
//! | `value`  | number, boolean or string     | the measurement                            |
//! | `unit`   | string, absent when none      | unit of the value                          |
//! | `tags`   | object of strings, may be `{}`| the sensor's tags                          |
//!
//! `clock` is the device's clock state when the reading was taken
//! ([`Clock`]). It is absent when the clock was synchronized, so a record
//! without it carries a timestamp as good as the device's time service.
//! `"unsynced"`: taken before the device's clock was synchronized (a
//! Raspberry Pi has no real-time clock), so `ts` may be hours or years off.
//! `"unknown"`: the agent could not tell (an agent older than envelope
//! format version 2, or a device without a time service the agent knows);
//! `ts` is then whatever the device believed, unverified. Absence is kept
//! for the one state that needs no caution; "unknown" is written out rather
//! than left absent because absence must not claim a synchronization nobody
//! checked. (Records written by an uplink older than this field have no
//! `clock` either.)

use crate::envelope::{Clock, Reading};
use crate::value::Value;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The JSON record of one reading, as written to Kafka and read by `tail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonReading {
    /// Stable reading id, `device:epoch:seq`.
    pub id: String,
    /// Device id.
    pub device: String,
    /// Sensor id.
    pub sensor: String,
    /// The agent installation's epoch.
    pub epoch: u64,
    /// Per-device sequence number.
    pub seq: u64,
    /// RFC 3339 UTC timestamp.
    pub ts: String,
    /// The device's clock state when the reading was taken; absent in JSON
    /// when [`Clock::Synced`] (and read back as that).
    #[serde(default = "synced", skip_serializing_if = "Clock::is_synced")]
    pub clock: Clock,
    /// The measurement.
    pub value: serde_json::Value,
    /// Unit of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The sensor's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn synced() -> Clock {
    Clock::Synced
}

/// Formats nanoseconds since the Unix epoch as an RFC 3339 UTC timestamp
/// (see [`write_rfc3339`]).
pub fn rfc3339(timestamp_ns: i64) -> String {
    let mut out = Vec::with_capacity(30);
    write_rfc3339(&mut out, timestamp_ns);
    String::from_utf8(out).expect("digits and ASCII punctuation")
}

/// Parses an RFC 3339 timestamp back into nanoseconds since the Unix epoch.
pub fn parse_rfc3339(ts: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(ts, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

impl From<&Reading<'_>> for JsonReading {
    fn from(r: &Reading<'_>) -> Self {
        JsonReading {
            id: r.id().to_string(),
            device: r.device.to_owned(),
            sensor: r.sensor.to_owned(),
            epoch: r.epoch,
            seq: r.sample.seq,
            ts: rfc3339(r.sample.timestamp_ns),
            clock: r.clock,
            value: match &r.sample.value {
                Value::Float(f) => serde_json::Number::from_f64(*f)
                    .map_or(serde_json::Value::Null, serde_json::Value::Number),
                Value::Int(i) => serde_json::Value::from(*i),
                Value::Bool(b) => serde_json::Value::Bool(*b),
                Value::Text(t) => serde_json::Value::String(t.clone()),
            },
            unit: r.unit.map(str::to_owned),
            tags: r.tags.iter().cloned().collect(),
        }
    }
}

impl Reading<'_> {
    /// The reading as one line of JSON, as written to Kafka.
    ///
    /// The same bytes as serializing [`JsonReading::from`] this reading.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }

    /// Appends [`to_json`](Self::to_json)'s bytes to `out`.
    ///
    /// Written by hand straight from the borrowed reading, with no
    /// allocation when `out` has room: the uplink does this once per
    /// reading, and serde's struct serialization with a formatted timestamp
    /// cost several times as much. Strings are escaped and numbers written
    /// exactly as `serde_json` does (a test holds the two to the same
    /// bytes).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut int = itoa::Buffer::new();
        out.extend_from_slice(b"{\"id\":\"");
        escape_contents(out, self.device);
        self.write_id_numbers(out);
        out.extend_from_slice(b"\",\"device\":");
        write_str(out, self.device);
        out.extend_from_slice(b",\"sensor\":");
        write_str(out, self.sensor);
        out.extend_from_slice(b",\"epoch\":");
        out.extend_from_slice(int.format(self.epoch).as_bytes());
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(int.format(self.sample.seq).as_bytes());
        out.extend_from_slice(b",\"ts\":\"");
        write_rfc3339(out, self.sample.timestamp_ns);
        match self.clock {
            Clock::Synced => out.extend_from_slice(b"\",\"value\":"),
            Clock::Unsynced => out.extend_from_slice(b"\",\"clock\":\"unsynced\",\"value\":"),
            Clock::Unknown => out.extend_from_slice(b"\",\"clock\":\"unknown\",\"value\":"),
        }
        match &self.sample.value {
            // serde_json writes a non-finite float as null, as
            // `Number::from_f64` -> `Value::Null` does.
            Value::Float(f) if f.is_finite() => {
                out.extend_from_slice(zmij::Buffer::new().format_finite(*f).as_bytes());
            }
            Value::Float(_) => out.extend_from_slice(b"null"),
            Value::Int(i) => out.extend_from_slice(int.format(*i).as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Text(t) => write_str(out, t),
        }
        if let Some(unit) = self.unit {
            out.extend_from_slice(b",\"unit\":");
            write_str(out, unit);
        }
        out.extend_from_slice(b",\"tags\":{");
        let tags = self.tags;
        if tags.windows(2).all(|w| w[0].0 < w[1].0) {
            write_tags(out, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        } else {
            // Ordered by name, the last of duplicate names winning (as
            // collecting them into a `BTreeMap` does).
            let sorted: BTreeMap<&str, &str> =
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            write_tags(out, sorted.into_iter());
        }
        out.extend_from_slice(b"}}");
    }

    /// Appends the reading's id, `device:epoch:seq`, to `out` (the same
    /// text as [`id`](Self::id)'s `Display`).
    pub fn write_id(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.device.as_bytes());
        self.write_id_numbers(out);
    }

    fn write_id_numbers(&self, out: &mut Vec<u8>) {
        let mut int = itoa::Buffer::new();
        out.push(b':');
        out.extend_from_slice(int.format(self.epoch).as_bytes());
        out.push(b':');
        out.extend_from_slice(int.format(self.sample.seq).as_bytes());
    }
}

fn write_tags<'t>(out: &mut Vec<u8>, tags: impl Iterator<Item = (&'t str, &'t str)>) {
    for (i, (k, v)) in tags.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, k);
        out.push(b':');
        write_str(out, v);
    }
}

/// `s` as a JSON string, quoted.
fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_contents(out, s);
    out.push(b'"');
}

/// `s` escaped as `serde_json` escapes string contents: `"`, `\\` and the
/// control characters below 0x20 (as `\b \t \n \f \r` or `\u00xx`);
/// everything else, 0x7f and non-ASCII included, as is.
fn escape_contents(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x09 => b't',
            0x0a => b'n',
            0x0c => b'f',
            0x0d => b'r',
            0x00..=0x1f => b'u',
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        } else {
            out.extend_from_slice(&[b'\\', short]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Appends the RFC 3339 UTC text of `timestamp_ns` to `out`, computed by
/// hand (days to civil date as in Howard Hinnant's `civil_from_days`), the
/// same text as the `time` crate's `Rfc3339` format (a test holds them to
/// it):
/// `YYYY-MM-DDTHH:MM:SS`, then `.` and the nanoseconds without trailing
/// zeros when there are any, then `Z`. Every `i64` of nanoseconds is a
/// year between 1677 and 2262, which RFC 3339 can write.
pub fn write_rfc3339(out: &mut Vec<u8>, timestamp_ns: i64) {
    let secs = timestamp_ns.div_euclid(1_000_000_000);
    let nanos = timestamp_ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let second_of_day = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    let digits = |out: &mut Vec<u8>, value: i64, width: u32| {
        for p in (0..width).rev() {
            // Each digit is 0..=9.
            out.push(b'0' + (value / 10_i64.pow(p) % 10) as u8);
        }
    };
    digits(out, year, 4);
    out.push(b'-');
    digits(out, month, 2);
    out.push(b'-');
    digits(out, day, 2);
    out.push(b'T');
    digits(out, second_of_day / 3600, 2);
    out.push(b':');
    digits(out, second_of_day / 60 % 60, 2);
    out.push(b':');
    digits(out, second_of_day % 60, 2);
    if nanos != 0 {
        out.push(b'.');
        let mut width = 9;
        let mut fraction = nanos;
        while fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
        digits(out, fraction, width);
    }
    out.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, Envelope, Sample};

    #[test]
    fn a_reading_becomes_the_documented_json_object() {
        let env = Envelope {
            device: "pi-kitchen".into(),
            epoch: 1_764_000_000,
            sensor: "temp".into(),
            unit: Some("°C".into()),
            tags: vec![("room".into(), "kitchen".into())],
            clock: Clock::Synced,
            samples: vec![Sample {
                seq: 42,
                timestamp_ns: 1_795_827_723_123_456_789,
                value: Value::Float(21.5),
            }],
        };
        let r = env.readings().next().unwrap();
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": "pi-kitchen:1764000000:42",
                "device": "pi-kitchen",
                "sensor": "temp",
                "epoch": 1_764_000_000u64,
                "seq": 42,
                "ts": "2026-11-28T01:02:03.123456789Z",
                "value": 21.5,
                "unit": "°C",
                "tags": {"room": "kitchen"}
            })
        );
    }

    #[test]
    fn the_clock_field_is_absent_when_synced_and_names_the_state_otherwise() {
        let sample = Sample {
            seq: 1,
            timestamp_ns: 0,
            value: Value::Int(1),
        };
        for (clock, field) in [
            (Clock::Synced, None),
            (Clock::Unsynced, Some("unsynced")),
            (Clock::Unknown, Some("unknown")),
        ] {
            let env = Envelope {
                device: "d".into(),
                epoch: 1,
                sensor: "s".into(),
                unit: None,
                tags: vec![],
                clock,
                samples: vec![sample.clone()],
            };
            let r = env.readings().next().unwrap();
            let raw = String::from_utf8(r.to_json()).unwrap();
            let json: serde_json::Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(json.get("clock").and_then(|c| c.as_str()), field, "{raw}");
            if let Some(name) = field {
                assert!(
                    raw.contains(&format!(
                        "\"ts\":\"1970-01-01T00:00:00Z\",\"clock\":\"{name}\",\"value\""
                    )),
                    "{raw}"
                );
            }
            let back: JsonReading = serde_json::from_str(&raw).unwrap();
            assert_eq!(
                back.clock, clock,
                "a record reads back with its clock: {raw}"
            );
        }
    }

    #[test]
    fn timestamps_round_trip_through_rfc3339_at_nanosecond_precision() {
        for ns in [0i64, 1, 1_795_827_723_123_456_789, -1_000_000_007] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Some(ns), "{ns}");
        }
    }

    #[test]
    fn text_and_bool_values_keep_their_json_types_and_no_unit_means_no_field() {
        let env = Envelope {
            device: "d".into(),
            epoch: 1,
            sensor: "s".into(),
            unit: None,
            tags: vec![],
            clock: Clock::Synced,
            samples: vec![
                Sample {
                    seq: 1,
                    timestamp_ns: 0,
                    value: Value::Text("ON".into()),
                },
                Sample {
                    seq: 2,
                    timestamp_ns: 0,
                    value: Value::Bool(true),
                },
            ],
        };
        let recs: Vec<JsonReading> = env
            .readings()
            .map(|r| serde_json::from_slice(&r.to_json()).unwrap())
            .collect();
        assert_eq!(recs[0].value, serde_json::json!("ON"));
        assert_eq!(recs[1].value, serde_json::json!(true));
        let raw = String::from_utf8(env.readings().next().unwrap().to_json()).unwrap();
        assert!(!raw.contains("unit"), "{raw}");
    }

    #[test]
    fn to_json_writes_the_same_bytes_as_serializing_a_json_reading() {
        let values = [
            Value::Float(21.5),
            Value::Float(-0.0),
            Value::Float(1e-300),
            Value::Float(f64::NAN),
            Value::Float(f64::INFINITY),
            Value::Int(-42),
            Value::Int(i64::MAX),
            Value::Bool(false),
            Value::Text("a \"quoted\" \\ line\nwith\u{1}control and ü".into()),
        ];
        let tag_sets: [Vec<(String, String)>; 4] = [
            vec![],
            vec![("room".into(), "lab".into())],
            vec![("z".into(), "1".into()), ("a".into(), "2\"".into())],
            vec![
                ("b".into(), "first".into()),
                ("a".into(), "x".into()),
                ("b".into(), "last".into()),
            ],
        ];
        let clocks = [Clock::Synced, Clock::Unsynced, Clock::Unknown];
        for (i, tags) in tag_sets.iter().enumerate() {
            for unit in [None, Some("°C".to_owned()), Some("\"".to_owned())] {
                let env = Envelope {
                    clock: clocks[i % clocks.len()],
                    device: format!("pi-\"{i}\u{7f}"),
                    epoch: 1_764_000_000 + i as u64,
                    sensor: "temp/ä".into(),
                    unit,
                    tags: tags.clone(),
                    samples: values
                        .iter()
                        .enumerate()
                        .map(|(n, v)| Sample {
                            seq: n as u64 + 1,
                            timestamp_ns: 1_795_827_723_123_456_789 - n as i64 * 999_999_999,
                            value: v.clone(),
                        })
                        .collect(),
                };
                for r in env.readings() {
                    let slow = serde_json::to_vec(&JsonReading::from(&r)).unwrap();
                    assert_eq!(
                        String::from_utf8(r.to_json()).unwrap(),
                        String::from_utf8(slow).unwrap()
                    );
                }
            }
        }
    }

    /// The `time` crate's RFC 3339 text, the reference of the hand-written one.
    fn time_crate(ns: i64) -> String {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    }

    #[test]
    fn the_hand_written_timestamp_matches_the_time_crate_at_the_edges() {
        for ns in [
            i64::MIN,
            i64::MAX,
            0,
            -1,
            1,
            1_000_000_000,
            -1_000_000_000,
            951_782_400_000_000_000,   // 2000-02-29
            4_107_542_400_000_000_000, // 2100-03-01
            1_795_827_723_100_000_000,
            1_795_827_723_000_000_001,
        ] {
            assert_eq!(rfc3339(ns), time_crate(ns), "{ns}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_hand_written_timestamp_matches_the_time_crate(ns: i64) {
            proptest::prop_assert_eq!(rfc3339(ns), time_crate(ns));
        }

        #[test]
        fn to_json_matches_serde_json_for_any_strings_and_values(
            device in ".{0,12}",
            sensor in "\\PC{0,8}",
            unit in proptest::option::of(".{0,4}"),
            tags in proptest::collection::vec(("[a-c\"\\\\\u{1}]{0,3}", ".{0,5}"), 0..4),
            text in ".{0,16}",
            float: f64,
            int: i64,
            seq: u64,
            epoch: u64,
            ts: i64,
            clock in proptest::prop_oneof![
                proptest::strategy::Just(Clock::Synced),
                proptest::strategy::Just(Clock::Unsynced),
                proptest::strategy::Just(Clock::Unknown),
            ],
        ) {
            for value in [Value::Float(float), Value::Int(int), Value::Text(text.clone()), Value::Bool(int % 2 == 0)] {
                let env = Envelope {
                    device: device.clone(),
                    epoch,
                    sensor: sensor.clone(),
                    unit: unit.clone(),
                    tags: tags.clone(),
                    clock,
                    samples: vec![Sample { seq, timestamp_ns: ts, value }],
                };
                let r = env.readings().next().unwrap();
                let slow = serde_json::to_vec(&JsonReading::from(&r)).unwrap();
                proptest::prop_assert_eq!(
                    String::from_utf8(r.to_json()).unwrap(),
                    String::from_utf8(slow).unwrap()
                );
                let mut id = Vec::new();
                r.write_id(&mut id);
                proptest::prop_assert_eq!(String::from_utf8(id).unwrap(), r.id().to_string());
            }
        }
    }
}
