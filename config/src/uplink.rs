//! The uplink's configuration, `/etc/tributary/uplink.toml`.
//!
//! ```toml
//! [nats]
//! urls = ["nats://hub.example:4222"]
//!
//! [kafka]
//! brokers = "kafka-1:9092,kafka-2:9092"
//! topic = "tributary.readings"
//! ```

use crate::nats::NatsConnection;
use crate::types::NonZeroDuration;
use crate::{Validate, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::num::{NonZeroU32, NonZeroUsize};

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
    #[serde(default = "one_u32")]
    pub replicas: NonZeroU32,
    /// How long the hub remembers `Nats-Msg-Id`s to drop resends. Default
    /// `"2m"`; keep it longer than an agent's longest retry cycle.
    #[serde(default = "default_dup_window")]
    pub duplicate_window: NonZeroDuration,
    /// Oldest message kept. Absent: no age limit.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub max_age: Option<std::time::Duration>,
    /// Most bytes kept. Absent: no size limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<bytesize::ByteSize>,
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
            max_age: None,
            max_bytes: None,
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
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: NonZeroUsize,
    /// How long JetStream waits for an ack before redelivering. Default
    /// `"30s"`.
    #[serde(default = "default_ack_wait")]
    pub ack_wait: NonZeroDuration,
    /// Messages asked for per pull request. Default 256.
    #[serde(default = "default_pull_batch")]
    pub pull_batch: NonZeroUsize,
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

impl Default for ConsumerSection {
    fn default() -> Self {
        ConsumerSection {
            durable: default_durable(),
            max_ack_pending: default_max_ack_pending(),
            ack_wait: default_ack_wait(),
            pull_batch: default_pull_batch(),
        }
    }
}

/// The `[kafka]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap servers, comma separated. Default `"127.0.0.1:9092"`.
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// Topic readings go to. Default `"tributary.readings"`.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Create missing topics at start (many clusters disable
    /// auto-creation). `false`: a missing topic is an error at start.
    /// Default false.
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of topics the uplink creates. Default 3.
    #[serde(default = "default_partitions")]
    pub partitions: NonZeroU32,
    /// Replication factor of topics the uplink creates. Default 1.
    #[serde(default = "one_u32")]
    pub replication_factor: NonZeroU32,
    /// How long one Kafka write may take before it counts as failed (and
    /// the JetStream message is redelivered). Default `"30s"`.
    #[serde(default = "default_delivery_timeout")]
    pub delivery_timeout: NonZeroDuration,
    /// Any librdkafka producer property, passed through as is, such as
    /// `"compression.type" = "zstd"` or `"sasl.mechanisms" = "PLAIN"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

fn default_brokers() -> String {
    "127.0.0.1:9092".to_owned()
}
fn default_topic() -> String {
    "tributary.readings".to_owned()
}
fn default_partitions() -> NonZeroU32 {
    NonZeroU32::new(3).expect("non-zero")
}
fn default_delivery_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(30)
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            brokers: default_brokers(),
            topic: default_topic(),
            create_topics: false,
            partitions: default_partitions(),
            replication_factor: one_u32(),
            delivery_timeout: default_delivery_timeout(),
            properties: BTreeMap::new(),
        }
    }
}

/// librdkafka properties the uplink sets itself, because its guarantees
/// depend on them.
pub const RESERVED_KAFKA_PROPERTIES: &[&str] = &["enable.idempotence", "acks", "bootstrap.servers"];

impl Validate for UplinkConfig {
    fn validate(&self, _source: &str) -> Result<(), ValidationError> {
        self.nats.validate()?;
        if self.stream.name.is_empty() || self.stream.name.contains(['.', '*', '>', ' ']) {
            return Err(ValidationError::new(
                "stream.name",
                None,
                "a stream name must not be empty or contain '.', '*', '>' or spaces",
            ));
        }
        if self.stream.subjects.is_empty() {
            return Err(ValidationError::new(
                "stream.subjects",
                None,
                "at least one subject is required",
            ));
        }
        if self.consumer.durable.is_empty() || self.consumer.durable.contains(['.', '*', '>', ' '])
        {
            return Err(ValidationError::new(
                "consumer.durable",
                None,
                "a consumer name must not be empty or contain '.', '*', '>' or spaces",
            ));
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ValidationError::new(
                "kafka.brokers",
                None,
                "at least one broker is required",
            ));
        }
        if !valid_topic(&self.kafka.topic) {
            return Err(ValidationError::new(
                "kafka.topic",
                None,
                format!(
                    "{:?} is not a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -)",
                    self.kafka.topic
                ),
            ));
        }
        for key in self.kafka.properties.keys() {
            if RESERVED_KAFKA_PROPERTIES.contains(&key.as_str()) {
                return Err(ValidationError::new(
                    format!("kafka.properties.{key}"),
                    None,
                    "is set by the uplink itself (its delivery guarantees depend on it)",
                ));
            }
        }
        Ok(())
    }
}

/// Whether `t` is a legal Kafka topic name.
pub fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}
