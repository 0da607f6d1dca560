//! The agent's configuration, `/etc/tributary/agent.toml`.
//!
//! ```toml
//! [agent]
//! device = "pi-kitchen"
//!
//! [[sensors.system]]
//! id = "cpu_temp"
//! metric = "cpu_temperature"
//! unit = "°C"
//! ```
//!
//! Everything but `agent.device` has a default.

use crate::nats::NatsConnection;
use crate::sensors::Sensors;
use crate::size::{count, fmt_size, size};
use crate::spans::written;
use crate::types::NonZeroDuration;
use crate::{Validate, ValidationError};
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Who this device is and where it keeps its state.
    pub agent: AgentSection,
    /// How to reach the local NATS server (the leafnode).
    #[serde(default)]
    pub nats: NatsConnection,
    /// How readings are batched and published to the hub.
    #[serde(default)]
    pub forward: ForwardSection,
    /// The on-disk buffer.
    #[serde(default)]
    pub buffer: BufferSection,
    /// The MQTT broker that `[[sensors.mqtt]]` subscribe to.
    #[serde(default)]
    pub mqtt: MqttBroker,
    /// The optional Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// The control plane: the agent as a NATS service, configuration from
    /// the fleet store.
    #[serde(default)]
    pub control: crate::control::ControlSection,
    /// The sensors.
    #[serde(default)]
    pub sensors: Sensors,
    /// The actuators commands from the hub may set.
    #[serde(default, skip_serializing_if = "crate::actuators::Actuators::is_empty")]
    pub actuators: crate::actuators::Actuators,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/tributary")
}

/// The `[agent]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// This device's id: a NATS subject token, unique among all devices.
    pub device: Spanned<String>,
    /// Where the agent keeps its buffer and state. Default
    /// `/var/lib/tributary` (systemd's `StateDirectory`).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
}

/// The `[forward]` table: batching and publishing to the hub.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSection {
    /// Subject prefix; readings go to `<prefix>.<device>.<sensor>`.
    /// Default `"tributary"`.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Most readings in one message. Default 500.
    #[serde(default = "default_max_readings", deserialize_with = "count")]
    pub max_readings: NonZeroUsize,
    /// Largest encoded message. Default `"64 KiB"`.
    #[serde(default = "default_max_message", deserialize_with = "size")]
    pub max_message_size: ByteSize,
    /// How long to wait for the hub's acknowledgement before sending the same
    /// message again. Default `"5s"`.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: NonZeroDuration,
    /// Most messages awaiting the hub's acknowledgement at once. Default 64.
    #[serde(default = "default_in_flight", deserialize_with = "count")]
    pub max_in_flight: NonZeroUsize,
    /// First retry delay after a failure; doubles up to `backoff_max`, with
    /// jitter. Default `"200ms"`.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial: NonZeroDuration,
    /// Longest retry delay. Default `"30s"`.
    #[serde(default = "default_backoff_max")]
    pub backoff_max: NonZeroDuration,
    /// How long a reading that finds the link busy (acks pending, a
    /// backlog, an outage) waits for more readings before its message is cut
    /// and published; a reading that finds the link idle is cut at once
    /// (Nagle's rule), and a message is also cut as soon as the link becomes
    /// idle or `max_readings` or `max_message_size` fill. Longer batches
    /// bursts into fewer messages. Must be shorter than
    /// `buffer.flush_interval`. Default `"1ms"`; `"0s"` publishes every
    /// reading on its own.
    #[serde(
        default = "default_linger",
        deserialize_with = "crate::types::duration",
        serialize_with = "humantime_serde::serialize"
    )]
    pub linger: Duration,
}

fn default_prefix() -> String {
    "tributary".to_owned()
}
fn default_max_readings() -> NonZeroUsize {
    NonZeroUsize::new(500).expect("non-zero")
}
fn default_max_message() -> ByteSize {
    ByteSize::kib(64)
}
fn default_ack_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(5)
}
fn default_in_flight() -> NonZeroUsize {
    NonZeroUsize::new(64).expect("non-zero")
}
fn default_backoff_initial() -> NonZeroDuration {
    NonZeroDuration::from_millis(200)
}
fn default_backoff_max() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}
fn default_linger() -> Duration {
    Duration::from_millis(1)
}

impl Default for ForwardSection {
    fn default() -> Self {
        ForwardSection {
            subject_prefix: default_prefix(),
            max_readings: default_max_readings(),
            max_message_size: default_max_message(),
            ack_timeout: default_ack_timeout(),
            max_in_flight: default_in_flight(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
            linger: default_linger(),
        }
    }
}

/// What the buffer does when it reaches `max_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest readings to make room (default): fresh data wins.
    #[default]
    DropOldest,
    /// Refuse new readings until space is freed: old data wins.
    DropNewest,
    /// Stop taking readings until the hub acknowledged enough to make room.
    Block,
}

/// The `[buffer]` table: the on-disk store-and-forward buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferSection {
    /// Directory of the buffer. Default `<state_dir>/buffer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Most disk space the buffer may use: at least twice `segment_size`.
    /// Default `"64 MiB"`.
    #[serde(default = "default_max_size", deserialize_with = "size")]
    pub max_size: ByteSize,
    /// Size of one segment file: 4 KiB to 2 GiB, at most half of
    /// `max_size`, and room for two messages of `forward.max_message_size`.
    /// Default `"1 MiB"`.
    #[serde(default = "default_segment_size", deserialize_with = "size")]
    pub segment_size: ByteSize,
    /// Every reading is acknowledged by the hub or written and fsynced to the
    /// buffer within this interval of being taken (readings the hub
    /// acknowledges sooner never touch the disk): a power cut can lose at
    /// most the readings of the last interval. Default `"1s"`.
    #[serde(default = "default_flush_interval")]
    pub flush_interval: NonZeroDuration,
    /// What happens when the buffer is full: `drop_oldest` (default),
    /// `drop_newest` or `block`. Full means `max_size` reached, or its file
    /// system about to run out (less than 32 KiB free), whichever comes
    /// first; `tributary_agent_buffer_disk_full_total` counts the latter.
    #[serde(default)]
    pub when_full: WhenFull,
}

fn default_max_size() -> ByteSize {
    ByteSize::mib(64)
}
fn default_segment_size() -> ByteSize {
    ByteSize::mib(1)
}
fn default_flush_interval() -> NonZeroDuration {
    NonZeroDuration::from_secs(1)
}

impl Default for BufferSection {
    fn default() -> Self {
        BufferSection {
            dir: None,
            max_size: default_max_size(),
            segment_size: default_segment_size(),
            flush_interval: default_flush_interval(),
            when_full: WhenFull::default(),
        }
    }
}

/// The `[mqtt]` table: the broker MQTT sensors subscribe to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttBroker {
    /// Broker host. Default `"localhost"`.
    #[serde(default = "default_mqtt_host")]
    pub host: String,
    /// Broker port, 1 to 65535. Default 1883.
    #[serde(default = "default_mqtt_port", deserialize_with = "crate::size::port")]
    pub port: u16,
    /// Client id; kept stable so the broker keeps the session (QoS 1)
    /// across restarts. Default `tributary-<device>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// User name, if the broker wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Password for `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<crate::Secret>,
    /// MQTT keep-alive. Default `"30s"`.
    #[serde(default = "default_keep_alive")]
    pub keep_alive: NonZeroDuration,
    /// Largest payload accepted; larger ones are counted and dropped.
    /// Default `"64 KiB"`.
    #[serde(default = "default_mqtt_max_payload", deserialize_with = "size")]
    pub max_payload: ByteSize,
}

fn default_mqtt_host() -> String {
    "localhost".to_owned()
}
fn default_mqtt_port() -> u16 {
    1883
}
fn default_keep_alive() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}
fn default_mqtt_max_payload() -> ByteSize {
    ByteSize::kib(64)
}

impl Default for MqttBroker {
    fn default() -> Self {
        MqttBroker {
            host: default_mqtt_host(),
            port: default_mqtt_port(),
            client_id: None,
            user: None,
            password: None,
            keep_alive: default_keep_alive(),
            max_payload: default_mqtt_max_payload(),
        }
    }
}

/// The `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Address of the Prometheus text endpoint, such as `"127.0.0.1:9464"`.
    /// Absent: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Watchdog: systemd is pinged only while the batcher and the forwarder
    /// each made progress within this long; must be longer than
    /// `buffer.flush_interval` and `forward.backoff_max`. Default `"60s"`.
    #[serde(default = "default_stall_after")]
    pub stall_after: NonZeroDuration,
}

fn default_stall_after() -> NonZeroDuration {
    NonZeroDuration::from_secs(60)
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            listen: None,
            stall_after: default_stall_after(),
        }
    }
}

/// Default message-size cap of the hub's NATS server (1 MiB).
const NATS_MAX_PAYLOAD: u64 = 1024 * 1024;
/// Smallest segment the buffer accepts.
const MIN_SEGMENT: u64 = 4096;
/// Largest segment the buffer accepts (offsets in a segment are 32-bit).
const MAX_SEGMENT: u64 = 1 << 31;

impl AgentConfig {
    /// The directory of the buffer.
    pub fn buffer_dir(&self) -> PathBuf {
        self.buffer
            .dir
            .clone()
            .unwrap_or_else(|| self.agent.state_dir.join("buffer"))
    }

    /// The MQTT client id.
    pub fn mqtt_client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("tributary-{}", self.agent.device.get_ref()))
    }
}

impl Validate for AgentConfig {
    fn validate(&self, source: &str) -> Result<(), ValidationError> {
        let device = &self.agent.device;
        tributary_wire::subject::validate_token("device", device.get_ref()).map_err(|e| {
            ValidationError::new("agent.device", Some(device.span()), e.to_string())
        })?;
        self.nats.validate()?;
        tributary_wire::subject::validate_prefix(&self.forward.subject_prefix)
            .map_err(|e| ValidationError::new("forward.subject_prefix", None, e.to_string()))?;
        self.validate_timing(source)?;
        if self.forward.max_message_size.as_u64() > NATS_MAX_PAYLOAD
            || self.forward.max_message_size.as_u64() < 1024
        {
            return Err(ValidationError::new(
                "forward.max_message_size",
                None,
                "must be between 1 KiB and 1 MiB (the NATS server's default max_payload)",
            ));
        }
        self.validate_buffer_sizes(source)?;
        self.control
            .validate(source, &self.forward.subject_prefix, device.get_ref())?;
        self.validate_sensors()?;
        self.actuators.validate()
    }
}

/// `value` of `key` as an error message shows it: marked as the default
/// when `source` does not set it.
fn shown(source: &str, key: &str, value: impl std::fmt::Display) -> String {
    if written(source, key) {
        format!("{key} = {value}")
    } else {
        format!("{key} = {value}, the default")
    }
}

/// The first of `keys` that `source` sets, else the first.
fn blamed<'k>(source: &str, keys: &[&'k str]) -> &'k str {
    keys.iter()
        .copied()
        .find(|k| written(source, k))
        .unwrap_or(keys[0])
}

impl AgentConfig {
    /// The watchdog window against the flush interval and retry delays.
    fn validate_timing(&self, source: &str) -> Result<(), ValidationError> {
        let (stall, backoff, flush) = (
            self.metrics.stall_after,
            self.forward.backoff_max,
            self.buffer.flush_interval,
        );
        if stall <= backoff || stall <= flush {
            let other = if stall <= backoff {
                "forward.backoff_max"
            } else {
                "buffer.flush_interval"
            };
            let key = blamed(source, &["metrics.stall_after", other]);
            return Err(ValidationError::new(
                key,
                None,
                format!(
                    "metrics.stall_after must be longer than forward.backoff_max and \
                     buffer.flush_interval ({}; {}; {}), or a hub that is away (or a slow \
                     flush) would look like a stall to the watchdog",
                    shown(source, "metrics.stall_after", format_args!("{stall:?}")),
                    shown(source, "forward.backoff_max", format_args!("{backoff:?}")),
                    shown(source, "buffer.flush_interval", format_args!("{flush:?}")),
                ),
            ));
        }
        let (linger, flush) = (self.forward.linger, self.buffer.flush_interval);
        if linger >= flush.get() {
            let key = blamed(source, &["forward.linger", "buffer.flush_interval"]);
            return Err(ValidationError::new(
                key,
                None,
                format!(
                    "forward.linger must be shorter than buffer.flush_interval ({}; {}): a \
                     reading is on disk or acknowledged by the hub within one flush interval \
                     of being taken",
                    shown(source, "forward.linger", format_args!("{linger:?}")),
                    shown(source, "buffer.flush_interval", format_args!("{flush:?}")),
                ),
            ));
        }
        let (initial, max) = (self.forward.backoff_initial, self.forward.backoff_max);
        if initial > max {
            let key = blamed(source, &["forward.backoff_initial", "forward.backoff_max"]);
            return Err(ValidationError::new(
                key,
                None,
                format!(
                    "forward.backoff_initial must not be longer than forward.backoff_max ({}; {})",
                    shown(
                        source,
                        "forward.backoff_initial",
                        format_args!("{initial:?}")
                    ),
                    shown(source, "forward.backoff_max", format_args!("{max:?}")),
                ),
            ));
        }
        Ok(())
    }

    /// Segment size against the size cap and the message size, blaming the
    /// key the user wrote rather than a default it collided with.
    fn validate_buffer_sizes(&self, source: &str) -> Result<(), ValidationError> {
        const SEG: &str = "buffer.segment_size";
        const MAX: &str = "buffer.max_size";
        const MSG: &str = "forward.max_message_size";
        let (max, seg, msg) = (
            self.buffer.max_size,
            self.buffer.segment_size,
            self.forward.max_message_size,
        );
        let show = |key, v| shown(source, key, format_args!("{:?}", fmt_size(v)));
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&seg.as_u64()) {
            return Err(ValidationError::new(
                SEG,
                None,
                format!("must be between 4 KiB and 2 GiB ({})", show(SEG, seg)),
            ));
        }
        if seg.as_u64() > max.as_u64() / 2 {
            let key = blamed(source, &[SEG, MAX]);
            return Err(ValidationError::new(
                key,
                None,
                format!(
                    "buffer.max_size must be at least twice buffer.segment_size ({}; {}): \
                     raise max_size to at least {:?} or lower segment_size",
                    show(MAX, max),
                    show(SEG, seg),
                    fmt_size(ByteSize(seg.as_u64() * 2)),
                ),
            ));
        }
        if seg.as_u64() < msg.as_u64() * 2 {
            let key = blamed(source, &[SEG, MSG]);
            return Err(ValidationError::new(
                key,
                None,
                format!(
                    "buffer.segment_size must hold at least two messages of \
                     forward.max_message_size ({}; {})",
                    show(SEG, seg),
                    show(MSG, msg),
                ),
            ));
        }
        Ok(())
    }

    /// Sensor ids, deadbands, tags, commands and MQTT topics.
    fn validate_sensors(&self) -> Result<(), ValidationError> {
        let mut seen: HashMap<&str, String> = HashMap::new();
        for (kind, i, s) in self.sensors.all() {
            let id = s.id();
            let key = format!("sensors.{kind}[{i}].id");
            let span = Some(id.span());
            if kind == "mqtt" {
                let static_part: String = strip_templates(id.get_ref());
                if !static_part.is_empty() {
                    tributary_wire::subject::validate_sensor(&static_part)
                        .map_err(|e| ValidationError::new(&key, span.clone(), e.to_string()))?;
                }
            } else {
                tributary_wire::subject::validate_sensor(id.get_ref())
                    .map_err(|e| ValidationError::new(&key, span.clone(), e.to_string()))?;
            }
            if let Some(first) = seen.insert(id.get_ref(), key.clone()) {
                return Err(ValidationError::new(
                    key,
                    span,
                    format!("sensor id {:?} is already used by {first}", id.get_ref()),
                ));
            }
            if let Some(d) = s.deadband() {
                if !(d >= 0.0 && d.is_finite()) {
                    return Err(ValidationError::new(
                        format!("sensors.{kind}[{i}].deadband"),
                        span,
                        "must be a finite number of at least 0",
                    ));
                }
            }
            for (k, v) in s.tags() {
                if k.is_empty()
                    || k.len() > tributary_wire::MAX_TEXT_LEN
                    || v.len() > tributary_wire::MAX_TEXT_LEN
                {
                    return Err(ValidationError::new(
                        format!("sensors.{kind}[{i}].tags"),
                        span,
                        format!(
                            "tag keys must not be empty; keys and values at most {} bytes",
                            tributary_wire::MAX_TEXT_LEN
                        ),
                    ));
                }
            }
        }
        for (i, c) in self.sensors.command.iter().enumerate() {
            if c.command.first().is_none_or(|p| p.is_empty()) {
                return Err(ValidationError::new(
                    format!("sensors.command[{i}].command"),
                    Some(c.id.span()),
                    "must name a program, such as [\"vcgencmd\", \"measure_temp\"]",
                ));
            }
        }
        for (i, m) in self.sensors.mqtt.iter().enumerate() {
            if m.topic.is_empty() {
                return Err(ValidationError::new(
                    format!("sensors.mqtt[{i}].topic"),
                    Some(m.id.span()),
                    "must be an MQTT topic filter such as \"zigbee2mqtt/+\"",
                ));
            }
            for idx in template_indices(m.id.get_ref()) {
                if idx >= m.topic.split('/').count() {
                    return Err(ValidationError::new(
                        format!("sensors.mqtt[{i}].id"),
                        Some(m.id.span()),
                        format!(
                            "uses topic segment {{{idx}}} but topic {:?} has fewer segments",
                            m.topic
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The id template with `{N}` placeholders removed.
fn strip_templates(id: &str) -> String {
    let mut out = String::new();
    let mut rest = id;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// The segment numbers `{N}` used in an id template.
pub fn template_indices(id: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut rest = id;
    while let Some(start) = rest.find('{') {
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        if let Ok(n) = rest[start + 1..start + end].parse() {
            out.push(n);
        }
        rest = &rest[start + end + 1..];
    }
    out
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
