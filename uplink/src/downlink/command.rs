//! A Kafka record read into a [`Command`] by its `[[downlink]]` rule, or
//! the reason it cannot be one (it then goes to the dead-letter topic).

use serde_json::{Map, Value};
use tributary_config::downlink::{DownlinkRule, FieldSource};
use tributary_wire::command::{COMMAND_FORMAT, Command, KafkaPosition};
use tributary_wire::control::JsonValue;

/// The parts of a Kafka record a command is read from.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Topic, partition and offset.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The headers, `(name, value)`.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The value.
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp, ms since the epoch (`None`: not set).
    pub timestamp_ms: Option<i64>,
}

/// Why a record is not a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotACommand {
    /// The value is not a JSON object.
    #[error("the record's value is not a JSON object: {0}")]
    NotJson(String),
    /// The device or actuator is not where the rule says.
    #[error("no {what} in the record's {place}")]
    Missing {
        /// `device` or `actuator`.
        what: &'static str,
        /// Where the rule looked.
        place: String,
    },
    /// The device or actuator is not a subject token.
    #[error("{0}")]
    BadId(#[from] tributary_wire::IdError),
    /// `value` is missing or not a number, string or boolean.
    #[error("`value` must be a number, a string or a boolean")]
    BadValue,
    /// `id` or `expires_at_ms` has the wrong type.
    #[error("`{0}` has the wrong type")]
    BadField(&'static str),
}

/// Reads `record` into a command by `rule`; `now_ms` stands in for a record
/// without a timestamp.
pub fn read(
    rule: &DownlinkRule,
    record: &RecordView<'_>,
    now_ms: u64,
) -> Result<Command, NotACommand> {
    let payload = record.payload.unwrap_or_default();
    let object: Map<String, Value> = match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(NotACommand::NotJson("not an object".into())),
        Err(e) => return Err(NotACommand::NotJson(e.to_string())),
    };
    let device = find(&rule.device, "device", record, &object)?;
    tributary_wire::subject::validate_token("device", &device)?;
    let actuator = find(&rule.actuator, "actuator", record, &object)?;
    tributary_wire::subject::validate_token("actuator", &actuator)?;
    let value = match object.get("value") {
        Some(Value::Bool(b)) => JsonValue::Bool(*b),
        Some(Value::String(s)) => JsonValue::Text(s.clone()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => JsonValue::Int(i),
            None => JsonValue::Float(n.as_f64().ok_or(NotACommand::BadValue)?),
        },
        _ => return Err(NotACommand::BadValue),
    };
    let source = KafkaPosition {
        topic: record.topic.to_owned(),
        partition: record.partition,
        offset: record.offset,
    };
    let id = match object.get("id") {
        None | Some(Value::Null) => source.msg_id(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(_) => return Err(NotACommand::BadField("id")),
    };
    let issued_at_ms = record
        .timestamp_ms
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or(now_ms);
    let expires_at_ms = match object.get("expires_at_ms") {
        None | Some(Value::Null) => {
            let after = u64::try_from(rule.expire_after.get().as_millis()).unwrap_or(u64::MAX);
            issued_at_ms.saturating_add(after)
        }
        Some(v) => v.as_u64().ok_or(NotACommand::BadField("expires_at_ms"))?,
    };
    Ok(Command {
        format: COMMAND_FORMAT,
        id,
        device,
        actuator,
        value,
        issued_at_ms,
        expires_at_ms,
        source,
    })
}

/// The subject of `command` by `template` (`{device}`, `{actuator}`).
pub fn subject(template: &str, command: &Command) -> String {
    template
        .replace("{device}", &command.device)
        .replace("{actuator}", &command.actuator)
}

fn find(
    source: &FieldSource,
    what: &'static str,
    record: &RecordView<'_>,
    object: &Map<String, Value>,
) -> Result<String, NotACommand> {
    let missing = |place: String| NotACommand::Missing { what, place };
    match source {
        FieldSource::Key => record
            .key
            .and_then(|k| std::str::from_utf8(k).ok())
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| missing("key".into())),
        FieldSource::Header(name) => record
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .map(str::to_owned)
            .ok_or_else(|| missing(format!("header {name:?}"))),
        FieldSource::Field(name) => match object.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(missing(format!("field {name:?} (a string)"))),
        },
        FieldSource::Fixed(id) => Ok(id.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rule(extra: &str) -> DownlinkRule {
        let text = format!("[[downlink]]\ntopic = \"commands\"\n{extra}");
        let config: tributary_config::UplinkConfig =
            tributary_config::parse(&text, Path::new("u.toml")).unwrap();
        config.downlink[0].clone()
    }

    fn view<'a>(key: Option<&'a [u8]>, payload: &'a [u8]) -> RecordView<'a> {
        RecordView {
            topic: "commands",
            partition: 1,
            offset: 7,
            key,
            headers: &[],
            payload: Some(payload),
            timestamp_ms: Some(1_000),
        }
    }

    #[test]
    fn a_keyed_record_becomes_a_command_with_its_position_as_id_and_the_default_expiry() {
        let c = read(
            &rule(""),
            &view(Some(b"pi-1"), br#"{"actuator":"vent","value":40}"#),
            0,
        )
        .unwrap();
        assert_eq!((c.device.as_str(), c.actuator.as_str()), ("pi-1", "vent"));
        assert_eq!(c.value, JsonValue::Int(40));
        assert_eq!(c.id, "commands:1:7");
        assert_eq!((c.issued_at_ms, c.expires_at_ms), (1_000, 301_000));
        assert_eq!(
            subject("tributary-ctl.cmd.{device}.{actuator}", &c),
            "tributary-ctl.cmd.pi-1.vent"
        );
    }

    #[test]
    fn device_and_actuator_come_from_where_the_rule_says() {
        let r = rule("device = \"field:dev\"\nactuator = \"fixed:relay\"\n");
        let c = read(
            &r,
            &view(
                None,
                br#"{"dev":"pi-2","value":true,"id":"c-9","expires_at_ms":5}"#,
            ),
            0,
        )
        .unwrap();
        assert_eq!((c.device.as_str(), c.actuator.as_str()), ("pi-2", "relay"));
        assert_eq!((c.id.as_str(), c.expires_at_ms), ("c-9", 5));
        let h = rule("device = \"header:device\"\n");
        let headers = [("device", &b"pi-3"[..])];
        let mut v = view(None, br#"{"actuator":"fan","value":"on"}"#);
        v.headers = &headers;
        assert_eq!(read(&h, &v, 0).unwrap().device, "pi-3");
    }

    #[test]
    fn records_that_are_not_commands_say_why() {
        let r = rule("");
        let err =
            |key: Option<&'static [u8]>, p: &'static [u8]| read(&r, &view(key, p), 0).unwrap_err();
        assert!(matches!(
            err(Some(b"pi"), b"not json"),
            NotACommand::NotJson(_)
        ));
        assert!(matches!(err(Some(b"pi"), b"[1]"), NotACommand::NotJson(_)));
        assert!(matches!(
            err(None, br#"{"actuator":"a","value":1}"#),
            NotACommand::Missing { what: "device", .. }
        ));
        assert!(matches!(
            err(Some(b"pi"), br#"{"value":1}"#),
            NotACommand::Missing {
                what: "actuator",
                ..
            }
        ));
        assert!(matches!(
            err(Some(b"pi.x"), br#"{"actuator":"a","value":1}"#),
            NotACommand::BadId(_)
        ));
        assert_eq!(
            err(Some(b"pi"), br#"{"actuator":"a","value":[1]}"#),
            NotACommand::BadValue
        );
        assert_eq!(
            err(
                Some(b"pi"),
                br#"{"actuator":"a","value":1,"expires_at_ms":"soon"}"#
            ),
            NotACommand::BadField("expires_at_ms")
        );
    }
}
