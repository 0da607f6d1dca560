//! The uplink's configuration, `/etc/tributary/uplink.toml`.
//!
//! ```toml
//! [nats]
//! urls = ["nats://hub.example:4222"]
//!
//! [kafka]
//! brokers = "kafka-1:9092,kafka-2:9092"
//! topic = "tributary.readings"
//!
//! [[routes]]
//! subject = "tributary.*.power_*"
//! topic = "power.{2}"
//! ```
//!
//! Tables: `[nats]` (the hub), `[stream]`, `[consumer]`, `[kafka]` (the
//! default route, producer settings, topic creation, dead letters),
//! `[[routes]]` (subject patterns to topics, first match wins),
//! `[exactly_once]`, `[http]` (metrics and health), `[control]`, and the
//! downlink's `[commands]` and `[[downlink]]` ([`crate::downlink`]).

use crate::nats::NatsConnection;
use crate::size::{count, option_count, option_size, size};
use crate::types::NonZeroDuration;
use crate::{Validate, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use toml::Spanned;

/// The whole uplink configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// How to reach the hub's NATS server.
    #[serde(default)]
    pub nats: NatsConnection,
    /// The JetStream stream readings are drained from.
    #[serde(default)]
    pub stream: StreamSection,
    /// The durable pull consumer on that stream.
    #[serde(default)]
    pub consumer: ConsumerSection,
    /// Where records go in Kafka.
    #[serde(default)]
    pub kafka: KafkaSection,
    /// Routing rules, tried in order; the first whose subject pattern
    /// matches decides topic, encoding and key. A message no rule matches
    /// goes to `kafka.topic`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// The exactly-once mode.
    #[serde(default)]
    pub exactly_once: ExactlyOnceSection,
    /// The metrics and health endpoint.
    #[serde(default)]
    pub http: HttpSection,
    /// The uplink as a NATS service (`status`).
    #[serde(default)]
    pub control: crate::control::UplinkControl,
    /// Where commands wait for devices, and where outcomes go.
    #[serde(default)]
    pub commands: crate::downlink::CommandsSection,
    /// Kafka topics of commands to devices (none by default: no downlink).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downlink: Vec<crate::downlink::DownlinkRule>,
}

/// How JetStream stores the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageKind {
    /// On disk (default).
    #[default]
    File,
    /// In memory.
    Memory,
}

/// The `[stream]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSection {
    /// Stream name. Default `"TRIBUTARY"`.
    #[serde(default = "default_stream")]
    pub name: String,
    /// Create the stream when it does not exist (and check an existing one
    /// matches). `false`: bind to an existing stream without changing it.
    /// Default true.
    #[serde(default = "yes")]
    pub create: bool,
    /// Subjects the stream captures. Default `["tributary.>"]`.
    #[serde(default = "default_subjects")]
    pub subjects: Vec<String>,
    /// Storage: `file` (default) or `memory`.
    #[serde(default)]
    pub storage: StorageKind,
    /// Replicas in a clustered hub. Default 1.
    #[serde(default = "one_u32", deserialize_with = "count")]
    pub replicas: NonZeroU32,
    /// How long the hub remembers `Nats-Msg-Id`s to drop resends. Default
    /// `"2m"`; keep it longer than an agent's longest retry cycle.
    #[serde(default = "default_dup_window")]
    pub duplicate_window: NonZeroDuration,
    /// Oldest message kept: older ones are removed whether or not the uplink
    /// has written them to Kafka (so an uplink down for longer loses the
    /// oldest readings). Default `"7d"`; `"0s"`: no age limit.
    #[serde(
        default = "default_max_age",
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub max_age: Option<std::time::Duration>,
    /// Most bytes the stream holds: beyond it the hub deletes the oldest
    /// messages, whether or not the uplink has written them to Kafka (the
    /// stream keeps history by limits; the uplink's acks do not remove
    /// messages). Default `"10 GiB"`; `"0 B"`: no size limit.
    #[serde(
        default = "default_max_bytes",
        skip_serializing_if = "Option::is_none",
        deserialize_with = "option_size"
    )]
    pub max_bytes: Option<bytesize::ByteSize>,
}

fn default_max_age() -> Option<std::time::Duration> {
    Some(std::time::Duration::from_secs(7 * 24 * 3600))
}
fn default_max_bytes() -> Option<bytesize::ByteSize> {
    Some(bytesize::ByteSize::gib(10))
}

fn default_stream() -> String {
    "TRIBUTARY".to_owned()
}
fn default_subjects() -> Vec<String> {
    vec!["tributary.>".to_owned()]
}
fn default_dup_window() -> NonZeroDuration {
    NonZeroDuration::from_secs(120)
}
fn yes() -> bool {
    true
}
fn one_u32() -> NonZeroU32 {
    NonZeroU32::new(1).expect("non-zero")
}

impl Default for StreamSection {
    fn default() -> Self {
        StreamSection {
            name: default_stream(),
            create: true,
            subjects: default_subjects(),
            storage: StorageKind::File,
            replicas: one_u32(),
            duplicate_window: default_dup_window(),
            max_age: default_max_age(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// The `[consumer]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSection {
    /// Durable consumer name, shared by all replicas of the uplink.
    /// Default `"tributary-uplink"`.
    #[serde(default = "default_durable")]
    pub durable: String,
    /// Most messages delivered but not yet acknowledged (bounds memory and
    /// in-flight Kafka writes). Default 1024.
    #[serde(default = "default_max_ack_pending", deserialize_with = "count")]
    pub max_ack_pending: NonZeroUsize,
    /// How long JetStream waits for an ack before redelivering. Default
    /// `"30s"`.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: NonZeroDuration,
    /// Messages asked for per pull request. Default 256.
    #[serde(default = "default_pull_batch", deserialize_with = "count")]
    pub pull_batch: NonZeroUsize,
    /// How long JetStream waits before redelivering a message whose Kafka
    /// write failed (the uplink naks it with this delay). Default `"5s"`.
    #[serde(default = "default_nak_delay")]
    pub nak_delay: NonZeroDuration,
}

fn default_durable() -> String {
    "tributary-uplink".to_owned()
}
fn default_max_ack_pending() -> NonZeroUsize {
    NonZeroUsize::new(1024).expect("non-zero")
}
fn default_ack_wait() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}
fn default_pull_batch() -> NonZeroUsize {
    NonZeroUsize::new(256).expect("non-zero")
}
fn default_nak_delay() -> NonZeroDuration {
    NonZeroDuration::from_secs(5)
}

impl Default for ConsumerSection {
    fn default() -> Self {
        ConsumerSection {
            durable: default_durable(),
            max_ack_pending: default_max_ack_pending(),
            ack_wait: default_ack_wait(),
            pull_batch: default_pull_batch(),
            nak_delay: default_nak_delay(),
        }
    }
}

/// How a message becomes Kafka records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One JSON record per reading (the documented record). Default.
    #[default]
    Json,
    /// The message's bytes as one record, NATS headers as Kafka headers.
    Passthrough,
}

/// What the Kafka record key is. The partition is chosen from the key with
/// murmur2, as the Java client does, so other Kafka tools agree on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// The device id (all readings of a device in one partition, in order).
    /// Default. Messages that are not agent envelopes are keyed by subject.
    #[default]
    Device,
    /// `device/sensor`. Messages that are not envelopes: the subject.
    DeviceSensor,
    /// No key: librdkafka spreads records over partitions.
    None,
}

/// The `[kafka]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, comma separated. Default `"127.0.0.1:9092"`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// The default topic: where messages no `[[routes]]` rule matches go.
    /// Default `"tributary.readings"`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Encoding on the default route: `json` (default) or `passthrough`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Key on the default route: `device` (default), `device_sensor` or
    /// `none`.
    #[serde(default)]
    pub key: KeyMode,
    /// Topic for messages that cannot be decoded (on a `json` route),
    /// routed or written (oversized, refused). Each keeps the message's
    /// bytes (truncated to fit `max_record_bytes`, then saying so) and
    /// carries headers `tributary-dlq-reason`, `tributary-dlq-subject`,
    /// `tributary-dlq-stream-seq`. Default `"tributary.dead-letter"`.
    #[serde(default = "default_dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Create missing topics at start (many clusters disable
    /// auto-creation). `false`: a missing topic is an error at start.
    /// Default false.
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of topics the uplink creates. Default 3.
    #[serde(default = "default_partitions", deserialize_with = "count")]
    pub partitions: NonZeroU32,
    /// Replication factor of topics the uplink creates. Default 1.
    #[serde(default = "one_u32", deserialize_with = "count")]
    pub replication_factor: NonZeroU32,
    /// Topic configs of topics the uplink creates, such as
    /// `"retention.ms" = "604800000"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topic_config: BTreeMap<String, String>,
    /// Largest record the uplink writes; a larger one goes to the
    /// dead-letter topic (with as many of its first bytes as fit). Keep it
    /// at or below the broker's `message.max.bytes`. Default `"1 MiB"`.
    #[serde(default = "default_max_record", deserialize_with = "size")]
    pub max_record_bytes: bytesize::ByteSize,
    /// Compression: `none`, `gzip`, `snappy`, `lz4` (default) or `zstd`.
    #[serde(default)]
    pub compression: Compression,
    /// How long the producer waits to fill a batch. Default `"5ms"`.
    #[serde(default = "default_linger", with = "humantime_serde")]
    pub linger: std::time::Duration,
    /// Largest batch per partition. Default `"1 MiB"`.
    #[serde(default = "default_batch_size", deserialize_with = "size")]
    pub batch_size: bytesize::ByteSize,
    /// How long one Kafka write may take before it counts as failed (and
    /// the JetStream message is redelivered). Default `"30s"`. Not used in
    /// exactly-once mode, where writes are retried until they succeed.
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout: NonZeroDuration,
    /// Any librdkafka producer property, passed through as is, such as
    /// `"sasl.mechanisms" = "PLAIN"`. Applied last (except the reserved
    /// ones, which are refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// Compression codec of the producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4 (default: cheap and effective on JSON).
    #[default]
    Lz4,
    /// zstd (smallest, more CPU).
    Zstd,
}

impl Compression {
    /// The librdkafka `compression.type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_topic() -> String {
    "tributary.readings".to_owned()
}
fn default_dead_letter_topic() -> String {
    "tributary.dead-letter".to_owned()
}
fn default_partitions() -> NonZeroU32 {
    NonZeroU32::new(3).expect("non-zero")
}
fn default_max_record() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(1)
}
fn default_linger() -> std::time::Duration {
    std::time::Duration::from_millis(5)
}
fn default_batch_size() -> bytesize::ByteSize {
    bytesize::ByteSize::mib(1)
}
fn default_delivery_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: default_brokers(),
            topic: default_topic(),
            encoding: Encoding::Json,
            key: KeyMode::Device,
            dead_letter_topic: default_dead_letter_topic(),
            create_topics: false,
            partitions: default_partitions(),
            replication_factor: one_u32(),
            topic_config: BTreeMap::new(),
            max_record_bytes: default_max_record(),
            compression: Compression::Lz4,
            linger: default_linger(),
            batch_size: default_batch_size(),
            delivery_timeout: default_delivery_timeout(),
            properties: BTreeMap::new(),
        }
    }
}

/// One `[[routes]]` rule.
///
/// ```toml
/// [[routes]]
/// subject = "tributary.*.power_*"   # NATS wildcards: `*` one token, `>` the rest
/// topic = "power.{1}"               # {1}: the token the first wildcard matched
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Subject pattern with NATS wildcards: `*` matches one token, a final
    /// `>` one or more. A token such as `power_*` is literal (NATS has no
    /// partial-token wildcard).
    pub subject: Spanned<String>,
    /// Topic name; `{1}`, `{2}`… stand for the tokens the wildcards
    /// matched, in order (`>` stands for all the tokens it matched, joined
    /// by `.`).
    pub topic: Spanned<String>,
    /// `json` (default) or `passthrough`.
    #[serde(default)]
    pub encoding: Encoding,
    /// `device` (default), `device_sensor` or `none`.
    #[serde(default)]
    pub key: KeyMode,
}

/// The `[exactly_once]` table.
///
/// Every record carries its origin (stream sequence and index) in a header;
/// on start the uplink reads the last record of each partition it writes to
/// and skips what is already there. Each Kafka partition must be written by
/// one uplink only: replicas divide the partitions (`replica` of
/// `replicas`, partition `p` belongs to replica `p % replicas`), each with
/// its own durable consumer `<consumer.durable>-<replica>`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactlyOnceSection {
    /// Turn the mode on. Default false (at-least-once).
    #[serde(default)]
    pub enabled: bool,
    /// How many uplinks share the work. Default 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "option_count"
    )]
    pub replicas: Option<NonZeroU32>,
    /// Which one this is, `0..replicas`. Default 0.
    #[serde(default)]
    pub replica: u32,
}

impl ExactlyOnceSection {
    /// How many uplinks share the work (1 when not set).
    pub fn replica_count(&self) -> u32 {
        self.replicas.map_or(1, NonZeroU32::get)
    }
}

/// The `[http]` table: Prometheus metrics at `/metrics`, health at
/// `/health` (200 or 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Listen address, such as `"127.0.0.1:9465"`. Absent: no endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// `/health` fails once NATS or Kafka has been unreachable this long.
    /// Default `"30s"`.
    #[serde(default = "default_unhealthy_after")]
    pub unhealthy_after: NonZeroDuration,
}

fn default_unhealthy_after() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            unhealthy_after: default_unhealthy_after(),
        }
    }
}

/// librdkafka properties the uplink sets itself, because its guarantees
/// depend on them.
pub const RESERVED_KAFKA_PROPERTIES: &[&str] = &[
    "enable.idempotence",
    "acks",
    "bootstrap.servers",
    "partitioner",
    "max.in.flight.requests.per.connection",
    "enable.gapless.guarantee",
    // The uplink applies `kafka.delivery_timeout` itself and replaces the
    // producer; a librdkafka timeout would bump the idempotent producer's
    // epoch, which tansu cannot handle (see the README).
    "message.timeout.ms",
    "delivery.timeout.ms",
];

fn invalid(key: impl Into<String>, msg: impl Into<String>) -> ValidationError {
    ValidationError::new(key, None, msg)
}

fn check_name(key: &str, name: &str, what: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.contains(['.', '*', '>', ' ']) {
        return Err(invalid(
            key,
            format!("a {what} name must not be empty or contain '.', '*', '>' or spaces"),
        ));
    }
    Ok(())
}

fn check_topic(key: &str, topic: &str) -> Result<(), ValidationError> {
    if valid_topic(topic) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("{topic:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)"),
        ))
    }
}

impl Validate for UplinkConfig {
    fn validate(&self, _source: &str) -> Result<(), ValidationError> {
        self.nats.validate()?;
        check_name("stream.name", &self.stream.name, "stream")?;
        if self.stream.subjects.is_empty() {
            return Err(invalid(
                "stream.subjects",
                "at least one subject is required",
            ));
        }
        for s in &self.stream.subjects {
            parse_pattern(s).map_err(|m| invalid("stream.subjects", m))?;
        }
        self.control.validate()?;
        let p = &self.control.subject_prefix;
        let probes = [
            format!("{p}.device.d.status"),
            format!("{p}.event.d.config"),
            format!("{p}.uplink.c.i.status"),
            format!("{p}.cmd.d.a"),
        ];
        if let Some(s) = self.stream.subjects.iter().find(|s| {
            probes
                .iter()
                .any(|probe| crate::control::subject_matches(s, probe))
        }) {
            return Err(invalid(
                "stream.subjects",
                format!(
                    "\"{s}\" would capture the control subjects {p}.> (requests and events would \
                     be stored as readings); narrow it, or move control.subject_prefix"
                ),
            ));
        }
        check_name("consumer.durable", &self.consumer.durable, "consumer")?;
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "at least one broker is required"));
        }
        check_topic("kafka.topic", &self.kafka.topic)?;
        check_topic("kafka.dead_letter_topic", &self.kafka.dead_letter_topic)?;
        for key in self.kafka.properties.keys() {
            if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                return Err(invalid(
                    format!("kafka.properties.{key}"),
                    "is set by the uplink itself (its delivery guarantees depend on it)",
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let pattern = parse_pattern(r.subject.get_ref()).map_err(|m| {
                ValidationError::new(format!("routes[{i}].subject"), Some(r.subject.span()), m)
            })?;
            let wildcards = pattern
                .iter()
                .filter(|t| !matches!(t, PatternToken::Literal(_)))
                .count();
            let parts = parse_template(r.topic.get_ref(), wildcards).map_err(|m| {
                ValidationError::new(format!("routes[{i}].topic"), Some(r.topic.span()), m)
            })?;
            if parts.len() == 1 && matches!(parts[0], TemplatePart::Literal(_)) {
                check_topic(&format!("routes[{i}].topic"), r.topic.get_ref())
                    .map_err(|e| ValidationError::new(e.key, Some(r.topic.span()), e.message))?;
            }
        }
        check_name("commands.stream", &self.commands.stream, "stream")?;
        if self.commands.stream == self.stream.name {
            return Err(invalid(
                "commands.stream",
                "must differ from stream.name (commands and readings are separate streams)",
            ));
        }
        let bucket = &self.commands.positions_bucket;
        if bucket.is_empty()
            || !bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(invalid(
                "commands.positions_bucket",
                format!("{bucket:?} is not a bucket name (letters, digits, '-' and '_')"),
            ));
        }
        check_topic("commands.outcome_topic", &self.commands.outcome_topic)?;
        for (i, rule) in self.downlink.iter().enumerate() {
            let key = format!("downlink[{i}]");
            check_topic(&format!("{key}.topic"), rule.topic.get_ref())
                .map_err(|e| ValidationError::new(e.key, Some(rule.topic.span()), e.message))?;
            rule.validate(&key, &self.control.subject_prefix)?;
        }
        let eo = &self.exactly_once;
        if eo.replica >= eo.replica_count() {
            return Err(invalid(
                "exactly_once.replica",
                format!(
                    "replica {} does not exist: replicas are numbered 0..{}",
                    eo.replica,
                    eo.replica_count()
                ),
            ));
        }
        if eo.enabled {
            if self.kafka.key == KeyMode::None {
                return Err(invalid(
                    "kafka.key",
                    "exactly-once needs a deterministic partition for every record; \
                     `none` lets the producer choose: use `device` or `device_sensor`",
                ));
            }
            if let Some(i) = self.routes.iter().position(|r| r.key == KeyMode::None) {
                return Err(ValidationError::new(
                    format!("routes[{i}].key"),
                    Some(self.routes[i].subject.span()),
                    "exactly-once needs a deterministic partition for every record; \
                     `none` lets the producer choose: use `device` or `device_sensor`",
                ));
            }
        }
        Ok(())
    }
}

#[path = "uplink_patterns.rs"]
mod patterns;
pub use patterns::*;

#[cfg(test)]
#[path = "uplink_tests.rs"]
mod tests;
