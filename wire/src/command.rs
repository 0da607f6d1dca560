//! The downlink's contract: commands from Kafka to a device's actuators, and
//! the outcome the device reports for each.
//!
//! ```text
//! Kafka topic ──► tributary-uplink ──► hub stream TRIBUTARY_COMMANDS ══leaf══► agent ──► actuator
//!   (a [[downlink]] rule)    (Nats-Msg-Id = topic:partition:offset)     (applied once)
//!
//! agent ──► <prefix>.<device>.$outcome ──► readings stream ──► uplink ──► Kafka outcome topic
//! ```
//!
//! Subjects (control prefix `tributary-ctl` by default; outside the
//! readings stream's `tributary.>`):
//!
//! | subject                                   | carries            | stored in                 |
//! |-------------------------------------------|--------------------|---------------------------|
//! | `<ctl>.cmd.<device>.<actuator>`           | [`Command`]        | stream [`COMMAND_STREAM`] |
//! | `<readings prefix>.<device>.$outcome`     | [`Outcome`]        | the readings stream       |
//!
//! Each device reads its commands through its own durable consumer
//! ([`consumer_name`]) filtered on its own subjects, applies each command at
//! most once (it remembers the ids it applied), and acknowledges a command
//! only after its outcome is recorded. The outcome rides the readings path
//! (the agent publishes it with JetStream acknowledgement and the
//! `Nats-Msg-Id` [`Outcome::msg_id`]), marked by the header
//! [`KIND_HEADER`] = [`OUTCOME_KIND`], and the uplink writes it to its
//! outcome topic as the JSON document below.
//!
//! Every document carries `format` = [`COMMAND_FORMAT`]; a later version
//! only adds fields (readers ignore what they do not know), and a change
//! that cannot be read the old way gets a new number.

use crate::control::JsonValue;
use serde::{Deserialize, Serialize};

/// The version of the documents below.
pub const COMMAND_FORMAT: u32 = 1;

/// The hub stream holding commands until their devices take them.
pub const COMMAND_STREAM: &str = "TRIBUTARY_COMMANDS";

/// The subject token after a device's readings prefix that carries outcomes
/// (`tributary.<device>.$outcome`). A sensor id cannot start with `$`.
pub const OUTCOME_TOKEN: &str = "$outcome";

/// NATS header that tells the uplink what a message on the readings stream
/// is when it is not an envelope of readings.
pub const KIND_HEADER: &str = "Tributary-Kind";

/// [`KIND_HEADER`]'s value on an outcome.
pub const OUTCOME_KIND: &str = "command-outcome";

/// The subject of a command for `actuator` of `device`.
pub fn command_subject(control_prefix: &str, device: &str, actuator: &str) -> String {
    format!("{control_prefix}.cmd.{device}.{actuator}")
}

/// The filter of `device`'s consumer: every actuator of it.
pub fn device_filter(control_prefix: &str, device: &str) -> String {
    format!("{control_prefix}.cmd.{device}.>")
}

/// The subject every command subject falls under (the stream's subject).
pub fn stream_subject(control_prefix: &str) -> String {
    format!("{control_prefix}.cmd.>")
}

/// The durable consumer `device` reads its commands with.
pub fn consumer_name(device: &str) -> String {
    format!("cmd-{device}")
}

/// The subject of `device`'s outcomes under the readings prefix.
pub fn outcome_subject(readings_prefix: &str, device: &str) -> String {
    format!("{readings_prefix}.{device}.{OUTCOME_TOKEN}")
}

/// A command as the uplink publishes it for a device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// [`COMMAND_FORMAT`].
    pub format: u32,
    /// The command's id: the Kafka record's `id` field when it has one,
    /// otherwise `topic:partition:offset`. The device applies an id at most
    /// once; the outcome names it.
    pub id: String,
    /// The device it is for.
    pub device: String,
    /// The actuator's id in the device's `[[actuators.*]]`.
    pub actuator: String,
    /// The value to set.
    pub value: JsonValue,
    /// When the command was written to Kafka (the record's timestamp), in
    /// milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// After this (milliseconds since the Unix epoch, device clock) the
    /// command is not applied but reported as expired.
    pub expires_at_ms: u64,
    /// Where it came from in Kafka.
    pub source: KafkaPosition,
}

/// A Kafka record's place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KafkaPosition {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl KafkaPosition {
    /// `topic:partition:offset`: the `Nats-Msg-Id` of the command published
    /// for this record, so a replay of the record is dropped by the hub.
    pub fn msg_id(&self) -> String {
        format!("{}:{}:{}", self.topic, self.partition, self.offset)
    }
}

/// What became of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The actuator took the value.
    Applied,
    /// Not attempted: unknown actuator, or a value it does not accept.
    Refused,
    /// Attempted, and the actuator failed (write error, program exit
    /// status, timeout).
    Failed,
    /// It reached the device after its `expires_at_ms`: not applied.
    Expired,
}

impl Verdict {
    /// The name in the JSON document.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Applied => "applied",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
            Verdict::Expired => "expired",
        }
    }
}

/// A device's report on one command, as it reaches Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// [`COMMAND_FORMAT`].
    pub format: u32,
    /// [`Command::id`].
    pub command_id: String,
    /// The device.
    pub device: String,
    /// The actuator named by the command.
    pub actuator: String,
    /// The value the command asked for.
    pub value: JsonValue,
    /// What happened.
    pub outcome: Verdict,
    /// Why, for anything but `applied` (absent then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// [`Command::issued_at_ms`].
    pub issued_at_ms: u64,
    /// When the device received it (device clock, ms since the epoch).
    pub received_at_ms: u64,
    /// When the device finished with it (device clock).
    pub finished_at_ms: u64,
    /// `"unsynced"` when the device's clock was not synchronized (then the
    /// times above and the expiry check are the device's guess); absent
    /// when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<String>,
}

impl Outcome {
    /// The `Nats-Msg-Id` of the outcome's message: one outcome per command
    /// reaches the stream, however often the device resends it.
    pub fn msg_id(&self) -> String {
        format!("outcome:{}:{}", self.device, self.command_id)
    }

    /// Milliseconds from the Kafka write to the device's finish (clocks of
    /// the center and the device; 0 when the device's is behind).
    pub fn latency_ms(&self) -> u64 {
        self.finished_at_ms.saturating_sub(self.issued_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_documented_scheme() {
        assert_eq!(
            command_subject("tributary-ctl", "pi-1", "vent"),
            "tributary-ctl.cmd.pi-1.vent"
        );
        assert_eq!(
            device_filter("tributary-ctl", "pi-1"),
            "tributary-ctl.cmd.pi-1.>"
        );
        assert_eq!(stream_subject("tributary-ctl"), "tributary-ctl.cmd.>");
        assert_eq!(consumer_name("pi-1"), "cmd-pi-1");
        assert_eq!(
            outcome_subject("tributary", "pi-1"),
            "tributary.pi-1.$outcome"
        );
    }

    #[test]
    fn a_command_msg_id_names_its_kafka_record() {
        let p = KafkaPosition {
            topic: "commands".into(),
            partition: 2,
            offset: 41,
        };
        assert_eq!(p.msg_id(), "commands:2:41");
    }

    #[test]
    fn an_outcome_without_a_reason_or_clock_leaves_them_out() {
        let o = Outcome {
            format: COMMAND_FORMAT,
            command_id: "c1".into(),
            device: "pi-1".into(),
            actuator: "vent".into(),
            value: JsonValue::Int(3),
            outcome: Verdict::Applied,
            reason: None,
            issued_at_ms: 1_000,
            received_at_ms: 1_010,
            finished_at_ms: 1_012,
            clock: None,
        };
        let text = serde_json::to_string(&o).unwrap();
        assert!(
            !text.contains("reason") && !text.contains("clock"),
            "{text}"
        );
        assert!(text.contains(r#""outcome":"applied""#), "{text}");
        assert_eq!(o.latency_ms(), 12);
        assert_eq!(o.msg_id(), "outcome:pi-1:c1");
    }
}
