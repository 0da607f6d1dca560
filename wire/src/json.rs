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
//! | `value`  | number, boolean or string     | the measurement                            |
//! | `unit`   | string, absent when none      | unit of the value                          |
//! | `tags`   | object of strings, may be `{}`| the sensor's tags                          |

use crate::envelope::Reading;
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
    /// The measurement.
    pub value: serde_json::Value,
    /// Unit of the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// The sensor's tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Formats nanoseconds since the Unix epoch as an RFC 3339 UTC timestamp.
pub fn rfc3339(timestamp_ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(timestamp_ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
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
    /// The same bytes as serializing [`JsonReading::from`] this reading,
    /// written straight from the borrowed reading: no owned copies of its
    /// strings, tags or value (the uplink does this once per reading).
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        serde_json::to_writer(&mut out, &JsonReadingRef(self))
            .expect("JSON of plain data cannot fail");
        out
    }
}

/// [`JsonReading`]'s serialization, borrowing from the reading.
struct JsonReadingRef<'r, 'a>(&'r Reading<'a>);

impl Serialize for JsonReadingRef<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.0;
        let id = format_args!("{}:{}:{}", r.device, r.epoch, r.sample.seq);
        let fields = if r.unit.is_some() { 9 } else { 8 };
        let mut st = s.serialize_struct("JsonReading", fields)?;
        st.serialize_field("id", &Collected(id))?;
        st.serialize_field("device", r.device)?;
        st.serialize_field("sensor", r.sensor)?;
        st.serialize_field("epoch", &r.epoch)?;
        st.serialize_field("seq", &r.sample.seq)?;
        st.serialize_field("ts", &rfc3339(r.sample.timestamp_ns))?;
        match &r.sample.value {
            // serde_json writes a non-finite float as null, as
            // `Number::from_f64` -> `Value::Null` does.
            Value::Float(f) => st.serialize_field("value", f)?,
            Value::Int(i) => st.serialize_field("value", i)?,
            Value::Bool(b) => st.serialize_field("value", b)?,
            Value::Text(t) => st.serialize_field("value", t)?,
        }
        if let Some(unit) = r.unit {
            st.serialize_field("unit", unit)?;
        } else {
            st.skip_field("unit")?;
        }
        st.serialize_field("tags", &Tags(r.tags))?;
        st.end()
    }
}

/// A `Display` value serialized as a string.
struct Collected<'a>(std::fmt::Arguments<'a>);

impl Serialize for Collected<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Tags as a JSON object ordered by name, the last of duplicate names
/// winning (as collecting them into a `BTreeMap` does).
struct Tags<'a>(&'a [(String, String)]);

impl Serialize for Tags<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let tags = self.0;
        if tags.windows(2).all(|w| w[0].0 < w[1].0) {
            s.collect_map(tags.iter().map(|(k, v)| (k, v)))
        } else {
            let sorted: BTreeMap<&str, &str> =
                tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            s.collect_map(sorted)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Envelope, Sample};

    #[test]
    fn a_reading_becomes_the_documented_json_object() {
        let env = Envelope {
            device: "pi-kitchen".into(),
            epoch: 1_764_000_000,
            sensor: "temp".into(),
            unit: Some("°C".into()),
            tags: vec![("room".into(), "kitchen".into())],
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
        for (i, tags) in tag_sets.iter().enumerate() {
            for unit in [None, Some("°C".to_owned()), Some("\"".to_owned())] {
                let env = Envelope {
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
}
