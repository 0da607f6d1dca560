//! The control plane's contract: the JSON documents the agents and the
//! uplink answer with, and the events they publish, as the central command
//! (`tributary-uplink fleet`) and any other tool read them.
//!
//! Subjects (prefix `tributary-ctl` by default, `[control] subject_prefix`;
//! outside the readings stream's `tributary.>`):
//!
//! | subject                                   | request      | reply                     |
//! |-------------------------------------------|--------------|---------------------------|
//! | `<prefix>.device.<device>.status`         | empty        | [`DeviceStatus`]          |
//! | `<prefix>.device.<device>.read`           | sensor id    | [`ReadReply`]             |
//! | `<prefix>.device.<device>.config`         | empty        | [`ConfigReply`]           |
//! | `<prefix>.uplink.<consumer>.<id>.status`  | empty        | [`UplinkStatus`]          |
//! | `<prefix>.event.<device>.config`          | (published)  | [`ConfigEvent`]           |
//!
//! Both programs are NATS services (`tributary-agent`, `tributary-uplink`),
//! so `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` answer too; an agent's
//! service metadata carries its `device`. A request that fails is answered
//! with the NATS service error headers (`Nats-Service-Error-Code`: 400 bad
//! request, 404 unknown sensor, 503 unavailable, 500 failed) and text.
//!
//! Every document carries `format` = [`CONTROL_FORMAT`]; a later version
//! only adds fields (readers ignore what they do not know), and a change
//! that cannot be read the old way gets a new number.

use serde::{Deserialize, Serialize};

/// The version of the documents below.
pub const CONTROL_FORMAT: u32 = 1;

/// The NATS service name of the agents.
pub const AGENT_SERVICE: &str = "tributary-agent";
/// The NATS service name of the uplinks.
pub const UPLINK_SERVICE: &str = "tributary-uplink";
/// Service metadata key holding an agent's device id.
pub const DEVICE_METADATA: &str = "device";
/// Service metadata key holding an uplink's status subject.
pub const STATUS_SUBJECT_METADATA: &str = "status_subject";

/// A value as JSON shows it: a number, a boolean or a string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JsonValue {
    /// A switch or contact state.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A measurement.
    Float(f64),
    /// A short state string.
    Text(String),
}

impl From<&crate::Value> for JsonValue {
    fn from(v: &crate::Value) -> Self {
        match v {
            crate::Value::Float(f) => JsonValue::Float(*f),
            crate::Value::Int(i) => JsonValue::Int(*i),
            crate::Value::Bool(b) => JsonValue::Bool(*b),
            crate::Value::Text(t) => JsonValue::Text(t.clone()),
        }
    }
}

impl std::fmt::Display for JsonValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonValue::Bool(b) => write!(f, "{b}"),
            JsonValue::Int(i) => write!(f, "{i}"),
            JsonValue::Float(x) => write!(f, "{x}"),
            JsonValue::Text(t) => write!(f, "{t:?}"),
        }
    }
}

/// A device's answer to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    /// [`CONTROL_FORMAT`].
    pub format: u32,
    /// The device id.
    pub device: String,
    /// The agent's version.
    pub version: String,
    /// Seconds since the agent started.
    pub uptime_s: f64,
    /// The installation epoch of its buffer (reading ids are
    /// `device:epoch:seq`).
    pub epoch: u64,
    /// `live`, `spilling` or `catching_up`.
    pub link: String,
    /// The disk buffer and what it dropped.
    pub buffer: BufferStatus,
    /// Messages and readings the hub acknowledged since start.
    pub acked_messages: u64,
    /// Readings in acknowledged messages.
    pub acked_readings: u64,
    /// Publish attempts that failed or timed out.
    pub publish_failures: u64,
    /// `synced`, `unsynced` or `unknown`.
    pub clock: String,
    /// Where the running configuration came from.
    pub config: ConfigOrigin,
    /// Every sensor that has reported, and every configured one.
    pub sensors: Vec<SensorStatus>,
}

/// The buffer part of [`DeviceStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BufferStatus {
    /// Messages not yet acknowledged by the hub.
    pub records: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Age of the oldest reading not yet acknowledged (0 when none).
    pub oldest_unsent_age_s: f64,
    /// Readings refused by the `drop_newest` policy.
    pub dropped_readings: u64,
    /// Messages dropped by the when-full policy.
    pub dropped_records: u64,
}

/// One sensor in [`DeviceStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorStatus {
    /// Sensor id.
    pub id: String,
    /// Readings sent since start.
    pub readings: u64,
    /// Readings suppressed by the deadband.
    pub suppressed: u64,
    /// Failed reads since start.
    pub errors: u64,
    /// The last reading sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<Timed<JsonValue>>,
    /// The last failed read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<Timed<String>>,
}

/// Something with the time it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timed<T> {
    /// What.
    pub value: T,
    /// When, RFC 3339 UTC.
    pub ts: String,
    /// How long ago, in seconds, when the reply was made.
    pub age_s: f64,
}

/// Where a device's running configuration came from, and what the fleet
/// store last offered it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigOrigin {
    /// `file` (the local file alone) or `fleet` (its sensors and MQTT part
    /// from the fleet store).
    pub source: String,
    /// The local file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The fleet store's bucket and key, when it is watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetKey>,
    /// The revision of the fleet value in force (`source = fleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
    /// The last fleet value refused, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

/// A KV bucket and key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetKey {
    /// The bucket.
    pub bucket: String,
    /// The key (the device id).
    pub key: String,
}

/// A fleet value the device refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// Its KV revision.
    pub revision: u64,
    /// The whole error, as `check` prints it.
    pub error: String,
    /// The key it is about, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// 1-based line in the fleet document, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// A device's answer to `read`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadReply {
    /// [`CONTROL_FORMAT`].
    pub format: u32,
    /// The device id.
    pub device: String,
    /// The sensor id.
    pub sensor: String,
    /// The value, when it was taken, and its age.
    pub reading: Timed<JsonValue>,
    /// `now` (read for this request) or `last_received` (an MQTT sensor's
    /// last message).
    pub how: String,
}

/// A device's answer to `config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigReply {
    /// [`CONTROL_FORMAT`].
    pub format: u32,
    /// The device id.
    pub device: String,
    /// Where it came from.
    pub origin: ConfigOrigin,
    /// The resolved configuration as TOML, secrets hidden.
    pub toml: String,
}

/// What a device did with a fleet value, published on
/// `<prefix>.event.<device>.config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEvent {
    /// [`CONTROL_FORMAT`].
    pub format: u32,
    /// The device id.
    pub device: String,
    /// `applied`, `refused` or `cleared` (the key was deleted: back to the
    /// local file).
    pub outcome: String,
    /// The KV revision.
    pub revision: u64,
    /// Why it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<Refusal>,
    /// When, RFC 3339 UTC.
    pub ts: String,
}

/// An uplink's answer to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UplinkStatus {
    /// [`CONTROL_FORMAT`].
    pub format: u32,
    /// The uplink's version.
    pub version: String,
    /// Seconds since it started.
    pub uptime_s: f64,
    /// `at_least_once` or `exactly_once`.
    pub mode: String,
    /// The JetStream stream it drains.
    pub stream: String,
    /// Its durable consumer.
    pub consumer: String,
    /// Messages the consumer has not yet delivered (as last seen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_pending: Option<u64>,
    /// Messages taken from the stream and not yet acknowledged.
    pub in_flight: u64,
    /// Records written to Kafka since start.
    pub produced: u64,
    /// JetStream messages acknowledged since start.
    pub acked: u64,
    /// Records sent to the dead-letter topic since start.
    pub dead_lettered: u64,
    /// Whether the Kafka cluster answered its last probe.
    pub kafka_reachable: bool,
    /// Whether the NATS connection is up.
    pub nats_connected: bool,
    /// Exactly-once mode: the partitions this uplink owns now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owned_partitions: Vec<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_keep_their_kind_through_a_round_trip() {
        for v in [
            JsonValue::Bool(true),
            JsonValue::Int(-3),
            JsonValue::Float(21.5),
            JsonValue::Text("ON".into()),
        ] {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(
                serde_json::from_str::<JsonValue>(&text).unwrap(),
                v,
                "{text}"
            );
        }
        assert_eq!(
            serde_json::to_string(&JsonValue::Float(21.5)).unwrap(),
            "21.5"
        );
    }

    #[test]
    fn a_reader_of_this_version_ignores_fields_a_later_version_adds() {
        let text = r#"{"format":2,"device":"d","outcome":"applied","revision":3,
                       "ts":"2026-12-02T00:00:00Z","something_new":[1,2]}"#;
        let e: ConfigEvent = serde_json::from_str(text).unwrap();
        assert_eq!((e.outcome.as_str(), e.revision), ("applied", 3));
    }
}
