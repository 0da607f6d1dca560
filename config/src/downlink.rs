//! The uplink's downlink settings: `[commands]` (where commands wait for
//! their devices, where Kafka positions and outcomes go) and the
//! `[[downlink]]` rules (which Kafka topics carry commands, and how to read
//! a record into one).
//!
//! ```toml
//! [[downlink]]
//! topic = "tributary.commands"
//! device = "key"              # or "header:<name>", "field:<name>"
//! actuator = "field:actuator" # or "header:<name>", "fixed:<id>"
//! expire_after = "5m"
//! ```
//!
//! A command record is a JSON object with the value to set in `value`
//! (number, string or boolean), and optionally `id` (the command's id; the
//! record's `topic:partition:offset` otherwise) and `expires_at_ms` (the
//! expiry, milliseconds since the Unix epoch; the record's timestamp plus
//! `expire_after` otherwise).

use crate::ValidationError;
use crate::types::NonZeroDuration;
use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The `[commands]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsSection {
    /// The hub stream commands wait in for their devices (created when
    /// missing, with subjects `<control.subject_prefix>.cmd.>`). Default
    /// `"TRIBUTARY_COMMANDS"`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// How long a command waits in that stream for its device at most.
    /// Default `"7d"`.
    #[serde(default = "default_keep")]
    pub keep: NonZeroDuration,
    /// The JetStream key-value bucket holding the next Kafka offset of
    /// each command partition (created when missing). Default
    /// `"tributary-downlink"`.
    #[serde(default = "default_bucket")]
    pub positions_bucket: String,
    /// The Kafka topic the devices' outcomes are written to (one JSON
    /// record per command, keyed by device). Default
    /// `"tributary.outcomes"`.
    #[serde(default = "default_outcome_topic")]
    pub outcome_topic: String,
}

impl Default for CommandsSection {
    fn default() -> Self {
        CommandsSection {
            stream: default_stream(),
            keep: default_keep(),
            positions_bucket: default_bucket(),
            outcome_topic: default_outcome_topic(),
        }
    }
}

fn default_stream() -> String {
    "TRIBUTARY_COMMANDS".into()
}
fn default_keep() -> NonZeroDuration {
    NonZeroDuration::from_secs(7 * 24 * 3600)
}
fn default_bucket() -> String {
    "tributary-downlink".into()
}
fn default_outcome_topic() -> String {
    "tributary.outcomes".into()
}

/// Where in a Kafka record a command's device or actuator is found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum FieldSource {
    /// The record's key (UTF-8).
    Key,
    /// A record header (UTF-8 value).
    Header(String),
    /// A string field of the record's JSON object.
    Field(String),
    /// The same for every record of the rule (`fixed:<id>`).
    Fixed(String),
}

impl TryFrom<String> for FieldSource {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let named = |rest: &str, what: &str| {
            if rest.is_empty() {
                Err(format!("{what}: needs a name after the colon"))
            } else {
                Ok(rest.to_owned())
            }
        };
        if s == "key" {
            return Ok(FieldSource::Key);
        }
        match s.split_once(':') {
            Some(("header", rest)) => named(rest, "header").map(FieldSource::Header),
            Some(("field", rest)) => named(rest, "field").map(FieldSource::Field),
            Some(("fixed", rest)) => {
                tributary_wire::subject::validate_token("actuator", rest)
                    .map_err(|e| e.to_string())?;
                Ok(FieldSource::Fixed(rest.to_owned()))
            }
            _ => Err(format!(
                "{s:?} is not a place in a record: use \"key\", \"header:<name>\", \
                 \"field:<name>\" or \"fixed:<id>\""
            )),
        }
    }
}

impl From<FieldSource> for String {
    fn from(f: FieldSource) -> String {
        match f {
            FieldSource::Key => "key".into(),
            FieldSource::Header(n) => format!("header:{n}"),
            FieldSource::Field(n) => format!("field:{n}"),
            FieldSource::Fixed(n) => format!("fixed:{n}"),
        }
    }
}

/// One `[[downlink]]` rule: a Kafka topic of commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownlinkRule {
    /// The Kafka topic (every partition is read).
    pub topic: Spanned<String>,
    /// Where the device id is. Default `"key"`.
    #[serde(default = "default_device")]
    pub device: FieldSource,
    /// Where the actuator id is. Default `"field:actuator"`.
    #[serde(default = "default_actuator")]
    pub actuator: FieldSource,
    /// The subject a command is published to, with `{device}` and
    /// `{actuator}` filled in. It must be
    /// `<control.subject_prefix>.cmd.{device}.` followed by `{actuator}` or
    /// one fixed token: the devices read `<prefix>.cmd.<device>.>`.
    /// Default `"<control.subject_prefix>.cmd.{device}.{actuator}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Spanned<String>>,
    /// The expiry of a command whose record has no `expires_at_ms`: the
    /// record's timestamp plus this. Default `"5m"`.
    #[serde(default = "default_expire_after")]
    pub expire_after: NonZeroDuration,
}

fn default_device() -> FieldSource {
    FieldSource::Key
}
fn default_actuator() -> FieldSource {
    FieldSource::Field("actuator".into())
}
fn default_expire_after() -> NonZeroDuration {
    NonZeroDuration::from_secs(300)
}

impl DownlinkRule {
    /// The subject template, the default filled in with `control_prefix`.
    pub fn subject_template(&self, control_prefix: &str) -> String {
        self.subject.as_ref().map_or_else(
            || format!("{control_prefix}.cmd.{{device}}.{{actuator}}"),
            |s| s.get_ref().clone(),
        )
    }

    /// Checks the subject template (see [`DownlinkRule::subject`]); `key`
    /// names the rule in the error.
    pub fn validate(&self, key: &str, control_prefix: &str) -> Result<(), ValidationError> {
        let template = self.subject_template(control_prefix);
        let head = format!("{control_prefix}.cmd.{{device}}.");
        let span = self.subject.as_ref().map(Spanned::span);
        let bad = |m: String| ValidationError::new(format!("{key}.subject"), span.clone(), m);
        let Some(last) = template.strip_prefix(&head) else {
            return Err(bad(format!(
                "{template:?} must start with {head:?}: the devices read \
                 {control_prefix}.cmd.<device>.>"
            )));
        };
        if last != "{actuator}" {
            tributary_wire::subject::validate_token("actuator", last)
                .map_err(|e| bad(format!("{template:?}: {e}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_source_reads_every_documented_form_and_refuses_others() {
        let p = |s: &str| FieldSource::try_from(s.to_owned());
        assert_eq!(p("key"), Ok(FieldSource::Key));
        assert_eq!(p("header:dev"), Ok(FieldSource::Header("dev".into())));
        assert_eq!(p("field:device"), Ok(FieldSource::Field("device".into())));
        assert_eq!(p("fixed:vent"), Ok(FieldSource::Fixed("vent".into())));
        assert!(p("field:").unwrap_err().contains("needs a name"));
        assert!(p("fixed:a.b").is_err());
        assert!(p("body").unwrap_err().contains("not a place"));
        assert_eq!(String::from(FieldSource::Header("x".into())), "header:x");
    }
}
