//! The published JSON Schemas of what the uplink writes to Kafka (`schema/` at the repository
//! root, shipped in the uplink package), held against every record the tests read back.
//!
//! [`crate::KafkaReader`] checks each record it reads with [`check_record`], so no end-to-end
//! test can read records without validating them:
//!
//! | the record has                  | it is             | checked against                        |
//! |---------------------------------|-------------------|----------------------------------------|
//! | header `tributary-dlq-reason`   | a dead letter     | `dead-letter-headers.schema.json` (its headers as a JSON object, see [`headers_object`]) |
//! | header `tributary-reading-id`   | a JSON reading    | `reading.schema.json` (its value); the header must equal the value's `id` |
//! | neither                         | passed through, or a test's own record | nothing             |
//!
//! [`crate::Record::reading`] validates the payload too, whatever its headers say.
//!
//! [`tansu_registry`] installs the reading schema for tansu's broker-side validation
//! (`tansu broker --schema-registry file://DIR`), in the shape tansu 0.6.0 reads.

use crate::error::{HarnessError, Result};
use crate::reader::Record;
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// `schema/reading.schema.json`: the value of a JSON reading record.
pub const READING_SCHEMA: &str = include_str!("../../schema/reading.schema.json");
/// `schema/dead-letter-headers.schema.json`: the headers of a dead-letter record.
pub const DEAD_LETTER_HEADERS_SCHEMA: &str =
    include_str!("../../schema/dead-letter-headers.schema.json");

/// Header of every JSON reading record: the reading id.
const READING_ID_HEADER: &str = tributary_wire::READING_ID_HEADER;
/// Header of every dead-letter record: why.
const DLQ_REASON_HEADER: &str = "tributary-dlq-reason";

/// The repository's `schema/` directory (what the uplink package installs).
pub fn schema_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives in the workspace")
        .join("schema")
}

fn compile(text: &str) -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(text).expect("a published schema is JSON");
    jsonschema::draft202012::new(&schema).expect("a published schema compiles")
}

fn reading_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| compile(READING_SCHEMA))
}

fn dead_letter_validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| compile(DEAD_LETTER_HEADERS_SCHEMA))
}

fn complaints(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{e} (at {:?})", e.instance_path().to_string()))
        .collect()
}

/// What `reading.schema.json` says against `value` (empty when it validates).
pub fn reading_errors(value: &Value) -> Vec<String> {
    complaints(reading_validator(), value)
}

/// What `dead-letter-headers.schema.json` says against `headers` (empty when they validate).
pub fn dead_letter_header_errors(headers: &[(String, Vec<u8>)]) -> Vec<String> {
    match headers_object(headers) {
        Ok(object) => complaints(dead_letter_validator(), &object),
        Err(e) => vec![e],
    }
}

/// A record's headers as the JSON object the dead-letter schema describes: name to value
/// (UTF-8 text), or to the list of its values in order when the name repeats.
pub fn headers_object(headers: &[(String, Vec<u8>)]) -> Result<Value, String> {
    let mut object = Map::new();
    for (name, value) in headers {
        let text = std::str::from_utf8(value)
            .map_err(|_| format!("header {name:?} is not UTF-8: {value:?}"))?;
        let text = Value::String(text.to_owned());
        match object.get_mut(name) {
            None => {
                object.insert(name.clone(), text);
            }
            Some(Value::Array(values)) => values.push(text),
            Some(first) => *first = Value::Array(vec![first.take(), text]),
        }
    }
    Ok(Value::Object(object))
}

/// Validates `record` by what it is (see the module docs); a violation names the record,
/// the schema and every complaint.
pub fn check_record(record: &Record) -> Result<()> {
    let fail = |schema: &'static str, errors: Vec<String>| HarnessError::SchemaViolation {
        partition: record.partition,
        offset: record.offset,
        schema,
        errors: errors.join("; "),
        record: describe(record),
    };
    if record.header(DLQ_REASON_HEADER).is_some() {
        let errors = dead_letter_header_errors(&record.headers);
        return if errors.is_empty() {
            Ok(())
        } else {
            Err(fail("dead-letter-headers.schema.json", errors))
        };
    }
    if let Some(id) = record.header(READING_ID_HEADER) {
        let value = check_reading_payload(record)?;
        if value.get("id").and_then(Value::as_str).map(str::as_bytes) != Some(id) {
            return Err(fail(
                "reading.schema.json",
                vec![format!(
                    "header {READING_ID_HEADER} {:?} is not the value's id",
                    String::from_utf8_lossy(id)
                )],
            ));
        }
    }
    Ok(())
}

/// The payload of `record` as JSON, validated against `reading.schema.json`.
pub(crate) fn check_reading_payload(record: &Record) -> Result<Value> {
    let value: Value = serde_json::from_slice(record.payload.as_deref().unwrap_or_default())
        .map_err(|source| HarnessError::BadRecord {
            partition: record.partition,
            offset: record.offset,
            source,
        })?;
    let errors = reading_errors(&value);
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(HarnessError::SchemaViolation {
            partition: record.partition,
            offset: record.offset,
            schema: "reading.schema.json",
            errors: errors.join("; "),
            record: describe(record),
        })
    }
}

/// Key, headers and (the start of) the payload, for error messages.
fn describe(record: &Record) -> String {
    let payload = record.payload.as_deref().unwrap_or_default();
    let shown = String::from_utf8_lossy(&payload[..payload.len().min(300)]);
    let headers: Vec<String> = record
        .headers
        .iter()
        .map(|(n, v)| format!("{n}={:?}", String::from_utf8_lossy(v)))
        .collect();
    format!(
        "key {:?}, headers [{}], {} payload bytes: {shown}",
        record.key.as_deref().map(String::from_utf8_lossy),
        headers.join(", "),
        payload.len()
    )
}

/// Installs `reading.schema.json` for `topic` in a tansu 0.6.0 schema registry directory
/// (`tansu broker --schema-registry file://DIR`): `DIR/<topic>.json`, in the shape tansu
/// reads, an object whose `properties.value` is the schema of the record's value (tansu
/// also reads `properties.key`; the key, the bare device id, is no JSON, so it has none).
/// Returns the file written.
pub fn tansu_registry(dir: &Path, topic: &str) -> Result<PathBuf> {
    let value: Value = serde_json::from_str(READING_SCHEMA).expect("the schema is JSON");
    let wrapped = serde_json::json!({
        "title": format!("Kafka records of {topic}"),
        "type": "object",
        "properties": { "value": value },
    });
    let path = dir.join(format!("{topic}.json"));
    let text = serde_json::to_string_pretty(&wrapped).expect("JSON serializes");
    std::fs::write(&path, text).map_err(|e| HarnessError::io("writing schema", &path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(headers: &[(&str, &str)], payload: &str) -> Record {
        Record {
            partition: 0,
            offset: 7,
            key: Some(b"pi-1".to_vec()),
            payload: Some(payload.as_bytes().to_vec()),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
                .collect(),
            timestamp_ms: None,
        }
    }

    const READING: &str = r#"{"id":"pi-1:5:9","device":"pi-1","sensor":"t","epoch":5,"seq":9,"ts":"2026-11-28T01:02:03Z","value":1,"tags":{}}"#;

    #[test]
    fn a_reading_record_validates_and_a_broken_one_is_named_with_its_complaint() {
        check_record(&record(&[(READING_ID_HEADER, "pi-1:5:9")], READING)).unwrap();
        let broken = READING.replace(r#""value":1"#, r#""value":null"#);
        let err = check_record(&record(&[(READING_ID_HEADER, "pi-1:5:9")], &broken))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reading.schema.json") && err.contains("/value") && err.contains("0/7"),
            "{err}"
        );
    }

    #[test]
    fn a_reading_whose_id_header_differs_from_its_value_is_refused() {
        let err = check_record(&record(&[(READING_ID_HEADER, "pi-1:5:10")], READING))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not the value's id"), "{err}");
    }

    #[test]
    fn dead_letter_headers_validate_and_a_missing_or_repeated_one_does_not() {
        let good = [
            ("Nats-Msg-Id", "a"),
            ("tributary-subject", "x.y"),
            ("tributary-dlq-reason", "undecodable envelope: empty"),
            ("tributary-dlq-subject", "x.y"),
            ("tributary-dlq-stream-seq", "42"),
        ];
        check_record(&record(&good, "garbage")).unwrap();
        let mut truncated = good.to_vec();
        truncated.push(("tributary-dlq-truncated", "true"));
        let err = check_record(&record(&truncated, ""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("tributary-dlq-size"), "{err}");
        truncated.push(("tributary-dlq-size", "1500000"));
        check_record(&record(&truncated, "")).unwrap();
        let mut twice = good.to_vec();
        twice.push(("tributary-dlq-stream-seq", "43"));
        assert!(check_record(&record(&twice, "")).is_err());
        let unknown_reason = [
            ("tributary-subject", "x.y"),
            ("tributary-dlq-reason", "because"),
            ("tributary-dlq-subject", "x.y"),
            ("tributary-dlq-stream-seq", "42"),
        ];
        assert!(check_record(&record(&unknown_reason, "")).is_err());
    }

    #[test]
    fn a_record_that_is_neither_a_reading_nor_a_dead_letter_is_not_judged() {
        check_record(&record(&[("tributary-subject", "raw.x")], "any bytes")).unwrap();
    }

    #[test]
    fn repeated_headers_become_a_list_in_order() {
        let h = vec![
            ("a".to_owned(), b"1".to_vec()),
            ("a".to_owned(), b"2".to_vec()),
            ("a".to_owned(), b"3".to_vec()),
            ("b".to_owned(), b"x".to_vec()),
        ];
        assert_eq!(
            headers_object(&h).unwrap(),
            serde_json::json!({"a": ["1", "2", "3"], "b": "x"})
        );
    }

    #[test]
    fn the_tansu_registry_file_wraps_the_schema_as_the_records_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = tansu_registry(dir.path(), "tributary.readings").unwrap();
        assert_eq!(path, dir.path().join("tributary.readings.json"));
        let text = std::fs::read_to_string(&path).unwrap();
        let wrapped: Value = serde_json::from_str(&text).unwrap();
        let shipped: Value = serde_json::from_str(READING_SCHEMA).unwrap();
        assert_eq!(wrapped["properties"]["value"], shipped);
        assert!(wrapped["properties"].get("key").is_none());
    }
}
