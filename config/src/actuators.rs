//! Actuator definitions: what commands from the hub may set on this device,
//! one `[[actuators.<kind>]]` array per kind.
//!
//! ```toml
//! [[actuators.file]]
//! id = "fan_pwm"
//! path = "/sys/class/hwmon/hwmon2/pwm1"
//! accepts = { kind = "number", min = 0, max = 100 }
//! scale = 2.55        # written value = value * scale + offset
//! format = "integer"
//!
//! [[actuators.mqtt]]
//! id = "vent"
//! topic = "zigbee2mqtt/vent/set"
//! payload = '{"state": {value}}'
//! accepts = { kind = "enum", values = ["ON", "OFF"] }
//!
//! [[actuators.command]]
//! id = "relay"
//! program = "/usr/local/bin/relay"
//! args = ["--set", "{value}"]
//! accepts = { kind = "bool" }
//! timeout = "5s"
//! ```
//!
//! Every kind shares `id` (a subject token, unique among the device's
//! actuators) and the declaration of what it accepts (`accepts`: a `kind`,
//! with `min` and `max` for numbers, `values` for enums). [`Accepts::check`] decides a
//! command's value; the agent refuses what it does not accept.

use crate::ValidationError;
use crate::types::NonZeroDuration;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::PathBuf;
use toml::Spanned;
use tributary_wire::control::JsonValue;

/// The `{value}` placeholder of payloads and arguments.
pub const VALUE_PLACEHOLDER: &str = "{value}";

/// All `[[actuators.*]]` arrays.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actuators {
    /// `[[actuators.mqtt]]`: publish to a topic of the `[mqtt]` broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mqtt: Vec<MqttActuator>,
    /// `[[actuators.file]]`: write a number to a file (sysfs PWM, GPIO).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file: Vec<FileActuator>,
    /// `[[actuators.command]]`: run a program with the value as argument.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<CommandActuator>,
}

/// The kind of value an actuator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptsKind {
    /// A number within `min` and `max` (both optional, inclusive).
    Number,
    /// One of the strings in `values`.
    Enum,
    /// `true` or `false`.
    Bool,
}

/// What an actuator accepts: the table `accepts` with `kind`, `min`, `max`,
/// `values`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepts {
    /// `"number"`, `"enum"` or `"bool"`.
    pub kind: AcceptsKind,
    /// Smallest number accepted (numbers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Largest number accepted (numbers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The strings accepted (enums only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Accepts {
    /// Accepts any number.
    pub fn number() -> Accepts {
        Accepts {
            kind: AcceptsKind::Number,
            min: None,
            max: None,
            values: Vec::new(),
        }
    }

    /// `Ok` when `value` is accepted, else why not (the reason of the
    /// refusal the agent reports).
    pub fn check(&self, value: &JsonValue) -> Result<(), String> {
        match (self.kind, value) {
            (AcceptsKind::Number, JsonValue::Int(_) | JsonValue::Float(_)) => {
                let n = as_number(value).unwrap_or(f64::NAN);
                if !n.is_finite() {
                    return Err(format!("{value} is not a finite number"));
                }
                if let Some(min) = self.min.filter(|m| n < *m) {
                    return Err(format!("{value} is below the minimum {min}"));
                }
                if let Some(max) = self.max.filter(|m| n > *m) {
                    return Err(format!("{value} is above the maximum {max}"));
                }
                Ok(())
            }
            (AcceptsKind::Enum, JsonValue::Text(t)) if self.values.contains(t) => Ok(()),
            (AcceptsKind::Enum, _) => Err(format!(
                "{value} is not one of {}",
                self.values
                    .iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            (AcceptsKind::Bool, JsonValue::Bool(_)) => Ok(()),
            (AcceptsKind::Number, _) => Err(format!("{value} is not a number")),
            (AcceptsKind::Bool, _) => Err(format!("{value} is not true or false")),
        }
    }

    fn validate(
        &self,
        key: &str,
        span: Option<std::ops::Range<usize>>,
    ) -> Result<(), ValidationError> {
        let err = |field: &str, msg: &str| {
            Err(ValidationError::new(
                format!("{key}.{field}"),
                span.clone(),
                msg,
            ))
        };
        match self.kind {
            AcceptsKind::Number => {
                if !self.values.is_empty() {
                    return err("values", "is only for kind = \"enum\"");
                }
                for (field, v) in [("min", self.min), ("max", self.max)] {
                    if v.is_some_and(|v| !v.is_finite()) {
                        return err(field, "must be a finite number");
                    }
                }
                if let (Some(min), Some(max)) = (self.min, self.max) {
                    if min > max {
                        return err("max", "must be at least min");
                    }
                }
            }
            AcceptsKind::Enum | AcceptsKind::Bool => {
                if self.min.is_some() || self.max.is_some() {
                    return err("min", "min and max are only for kind = \"number\"");
                }
                if self.kind == AcceptsKind::Enum && self.values.is_empty() {
                    return err(
                        "values",
                        "must list the accepted strings, such as [\"on\", \"off\"]",
                    );
                }
                if self.kind == AcceptsKind::Bool && !self.values.is_empty() {
                    return err("values", "is only for kind = \"enum\"");
                }
            }
        }
        Ok(())
    }
}

/// The number in `value`, if it is one.
pub fn as_number(value: &JsonValue) -> Option<f64> {
    match value {
        JsonValue::Int(i) => Some(*i as f64),
        JsonValue::Float(f) => Some(*f),
        _ => None,
    }
}

/// How `{value}` appears in an MQTT payload or a program argument: a
/// string bare in a plain payload, JSON-quoted inside a JSON template (a
/// template starting with `{` or `[` other than `{value}` itself).
pub fn render(template: &str, value: &JsonValue) -> String {
    let start = template.trim_start();
    let json_template = start.starts_with(['{', '[']) && !start.starts_with(VALUE_PLACEHOLDER);
    let text = match value {
        JsonValue::Text(t) if json_template => serde_json_string(t),
        JsonValue::Text(t) => t.clone(),
        other => other.to_string(),
    };
    template.replace(VALUE_PLACEHOLDER, &text)
}

/// `s` as a JSON string literal.
fn serde_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn default_payload() -> String {
    VALUE_PLACEHOLDER.to_owned()
}

/// An actuator driven through an MQTT topic of the `[mqtt]` broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttActuator {
    /// Actuator id: a subject token, unique among this device's actuators.
    pub id: Spanned<String>,
    /// Topic to publish to (no wildcards).
    pub topic: String,
    /// The payload, with `{value}` replaced by the value: plain (`"{value}"`,
    /// the default) or a JSON template (`'{"state": {value}}'`, where a
    /// string value is JSON-quoted).
    #[serde(default = "default_payload")]
    pub payload: String,
    /// MQTT QoS 0, 1 (default) or 2. The outcome is `applied` once the
    /// broker acknowledged (QoS 1, 2) or the message was sent (QoS 0).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Publish as a retained message. Default false.
    #[serde(default)]
    pub retain: bool,
    /// What it accepts: an inline table `{ kind = "number", min = 0, max =
    /// 100 }`, `{ kind = "enum", values = ["ON", "OFF"] }` or `{ kind =
    /// "bool" }`.
    pub accepts: Accepts,
}

fn default_qos() -> u8 {
    1
}

/// How a file actuator writes its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NumberFormat {
    /// Rounded to the nearest integer (default): sysfs wants `128`.
    #[default]
    Integer,
    /// As a decimal number (`12.5`).
    Decimal,
}

/// An actuator that writes a number to a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileActuator {
    /// Actuator id: a subject token, unique among this device's actuators.
    pub id: Spanned<String>,
    /// The file written (opened for writing, truncated, not created).
    pub path: PathBuf,
    /// Written = value * scale + offset. Default 1.
    #[serde(default = "one")]
    pub scale: f64,
    /// See `scale`. Default 0.
    #[serde(default)]
    pub offset: f64,
    /// `integer` (default) or `decimal`.
    #[serde(default)]
    pub format: NumberFormat,
    /// What it accepts: an inline table `{ kind = "number", min = 0, max =
    /// 100 }`, `{ kind = "enum", values = ["ON", "OFF"] }` or `{ kind =
    /// "bool" }`.
    pub accepts: Accepts,
}

fn one() -> f64 {
    1.0
}

impl FileActuator {
    /// The text written for `value` (accepted already): a number or a bool
    /// as 1 and 0, scaled.
    pub fn text(&self, value: &JsonValue) -> Option<String> {
        let n = match value {
            JsonValue::Bool(b) => f64::from(u8::from(*b)),
            other => as_number(other)?,
        };
        let v = n * self.scale + self.offset;
        Some(match self.format {
            NumberFormat::Integer => format!("{}\n", v.round() as i64),
            NumberFormat::Decimal => format!("{v}\n"),
        })
    }
}

fn default_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

/// An actuator that runs a program (no shell) with the value in its
/// arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandActuator {
    /// Actuator id: a subject token, unique among this device's actuators.
    pub id: Spanned<String>,
    /// The program: a path or a name looked up in `PATH`; run without a
    /// shell.
    pub program: String,
    /// Its arguments; `{value}` in any of them is replaced by the value.
    #[serde(default)]
    pub args: Vec<String>,
    /// Killed and reported failed when it runs longer. Default `"10s"`.
    #[serde(default = "default_timeout")]
    pub timeout: NonZeroDuration,
    /// What it accepts: an inline table `{ kind = "number", min = 0, max =
    /// 100 }`, `{ kind = "enum", values = ["ON", "OFF"] }` or `{ kind =
    /// "bool" }`.
    pub accepts: Accepts,
}

/// One actuator of any kind.
#[derive(Debug, Clone, Copy)]
pub enum Actuator<'a> {
    /// An MQTT actuator.
    Mqtt(&'a MqttActuator),
    /// A file actuator.
    File(&'a FileActuator),
    /// A command actuator.
    Command(&'a CommandActuator),
}

impl<'a> Actuator<'a> {
    /// Its id.
    pub fn id(&self) -> &'a Spanned<String> {
        match self {
            Actuator::Mqtt(a) => &a.id,
            Actuator::File(a) => &a.id,
            Actuator::Command(a) => &a.id,
        }
    }

    /// What it accepts.
    pub fn accepts(&self) -> &'a Accepts {
        match self {
            Actuator::Mqtt(a) => &a.accepts,
            Actuator::File(a) => &a.accepts,
            Actuator::Command(a) => &a.accepts,
        }
    }
}

impl Actuators {
    /// Every actuator with its kind and index in its array.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, usize, Actuator<'_>)> {
        let m = self
            .mqtt
            .iter()
            .enumerate()
            .map(|(i, a)| ("mqtt", i, Actuator::Mqtt(a)));
        let f = self
            .file
            .iter()
            .enumerate()
            .map(|(i, a)| ("file", i, Actuator::File(a)));
        let c = self
            .command
            .iter()
            .enumerate()
            .map(|(i, a)| ("command", i, Actuator::Command(a)));
        m.chain(f).chain(c)
    }

    /// The actuator named `id`.
    pub fn get(&self, id: &str) -> Option<Actuator<'_>> {
        self.all()
            .map(|(_, _, a)| a)
            .find(|a| a.id().get_ref() == id)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.mqtt.is_empty() && self.file.is_empty() && self.command.is_empty()
    }

    /// Ids, acceptance declarations, topics, programs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (kind, i, a) in self.all() {
            let id = a.id();
            let key = format!("actuators.{kind}[{i}]");
            let span = Some(id.span());
            tributary_wire::subject::validate_token("actuator id", id.get_ref()).map_err(|e| {
                ValidationError::new(format!("{key}.id"), span.clone(), e.to_string())
            })?;
            if let Some(first) = seen.insert(id.get_ref(), key.clone()) {
                return Err(ValidationError::new(
                    format!("{key}.id"),
                    span,
                    format!("actuator id {:?} is already used by {first}", id.get_ref()),
                ));
            }
            a.accepts()
                .validate(&format!("{key}.accepts"), span.clone())?;
            match a {
                Actuator::Mqtt(m) => {
                    if m.topic.is_empty() || m.topic.contains(['+', '#']) {
                        return Err(ValidationError::new(
                            format!("{key}.topic"),
                            span,
                            "must be an MQTT topic without wildcards, such as \"zigbee2mqtt/vent/set\"",
                        ));
                    }
                    if m.qos > 2 {
                        return Err(ValidationError::new(
                            format!("{key}.qos"),
                            span,
                            "must be 0, 1 or 2",
                        ));
                    }
                    if !m.payload.contains(VALUE_PLACEHOLDER) {
                        return Err(ValidationError::new(
                            format!("{key}.payload"),
                            span,
                            "must contain {value}",
                        ));
                    }
                }
                Actuator::File(f) => {
                    if a.accepts().kind == AcceptsKind::Enum {
                        return Err(ValidationError::new(
                            format!("{key}.accepts"),
                            span,
                            "a file actuator writes numbers: kind = \"number\" or \"bool\"",
                        ));
                    }
                    if !f.scale.is_finite() || !f.offset.is_finite() {
                        return Err(ValidationError::new(
                            format!("{key}.scale"),
                            span,
                            "scale and offset must be finite numbers",
                        ));
                    }
                    if f.path.as_os_str().is_empty() {
                        return Err(ValidationError::new(
                            format!("{key}.path"),
                            span,
                            "must name a file",
                        ));
                    }
                }
                Actuator::Command(c) => {
                    if c.program.is_empty() {
                        return Err(ValidationError::new(
                            format!("{key}.program"),
                            span,
                            "must name a program, such as \"/usr/local/bin/relay\"",
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "actuators_tests.rs"]
mod tests;
