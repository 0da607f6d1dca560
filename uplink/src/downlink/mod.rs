//! The downlink, Kafka → NATS: commands from Kafka topics to the hub's
//! command stream, where each device takes its own.
//!
//! # Flow
//!
//! Every partition of every `[[downlink]]` topic is read from where the
//! last run stopped. Each record is read into a [`Command`] by its rule
//! ([`command::read`]) and published into the stream `[commands] stream`
//! (created when missing, subjects `<control prefix>.cmd.>`) on
//! `<control prefix>.cmd.<device>.<actuator>`, with the `Nats-Msg-Id`
//! `topic:partition:offset`. Only after JetStream acknowledged the publish
//! does the partition's position move past the record. A record that is
//! not a command goes to the dead-letter topic (headers
//! `tributary-dlq-reason`, `tributary-dlq-source`) and, once Kafka
//! confirmed it, is passed over the same way. A publish the hub does not
//! acknowledge is retried, every second, until it is, or until shutdown:
//! nothing is skipped.
//!
//! # Where positions live
//!
//! In the JetStream key-value bucket `[commands] positions_bucket`, one key
//! per partition (`<topic>.<partition>`, the next offset to read), not in
//! Kafka's consumer-group offsets: tansu 0.6.0, the broker the tests run
//! against, hangs on a group join, and the offsets then live beside the
//! commands they describe, on the hub, where every uplink finds them. A
//! position is written at most every 200 ms and at shutdown, so a crash
//! republishes at most the last 200 ms of commands: the hub's duplicate
//! window drops them (same `Nats-Msg-Id`), and a device applies a command
//! id at most once anyway.
//!
//! Run the downlink on one uplink (give the others no `[[downlink]]`): two
//! would publish every command twice (the second dropped by the duplicate
//! window within 2 minutes, and by the devices after).

pub mod command;
mod positions;

use crate::health::Health;
use crate::kafka::{self, KafkaSetupError, Topics};
use crate::kafka_log::LoggingContext;
use crate::metrics::Metrics;
use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context, stream};
use command::{NotACommand, RecordView};
use positions::Positions;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_config::UplinkConfig;
use tributary_config::downlink::DownlinkRule;
use tributary_config::logging::{Decision, Window, error_chain, ratelimit::LOG_EVERY};
use tributary_wire::NATS_MSG_ID_HEADER;
use tributary_wire::command::{Command, stream_subject};

/// How long the hub's command stream drops a republished command.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// How often positions are written to the bucket, at most.
const POSITIONS_EVERY: Duration = Duration::from_millis(200);

/// Why the downlink could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DownlinkError {
    /// The command stream could not be created or checked.
    #[error("cannot set up the command stream {stream}")]
    Stream {
        /// The stream.
        stream: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// The positions bucket could not be created, read or written.
    #[error("cannot use the positions bucket {bucket}")]
    Positions {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: async_nats::Error,
    },
    /// Kafka could not be set up (a command topic, the consumer).
    #[error("cannot read the command topics from Kafka")]
    Kafka(#[from] KafkaSetupError),
    /// The Kafka consumer refused an assignment.
    #[error("cannot assign the command partitions")]
    Assign(#[source] rdkafka::error::KafkaError),
}

/// The downlink's share of the uplink: the hub connection, the Kafka
/// settings, counters and the shutdown signal.
#[derive(Debug)]
pub struct Downlink {
    /// The hub.
    pub client: async_nats::Client,
    /// The whole configuration (`[commands]`, `[[downlink]]`, `[kafka]`,
    /// `[control]`).
    pub config: UplinkConfig,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Liveness.
    pub health: Arc<Health>,
}

/// The command stream's settings.
pub fn stream_config(config: &UplinkConfig) -> stream::Config {
    let c = &config.commands;
    stream::Config {
        name: c.stream.clone(),
        description: Some("Tributary commands, waiting for their devices".to_owned()),
        subjects: vec![stream_subject(&config.control.subject_prefix)],
        max_age: c.keep.get(),
        duplicate_window: DUPLICATE_WINDOW,
        storage: stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    }
}

impl Downlink {
    /// Runs until `stop`; an error when it cannot set up (the uplink then
    /// ends, as for any failed part).
    pub async fn run(self, stop: CancellationToken) -> Result<(), DownlinkError> {
        let js = jetstream::new(self.client.clone());
        let cfg = &self.config;
        js.get_or_create_stream(stream_config(cfg))
            .await
            .map_err(|e| DownlinkError::Stream {
                stream: cfg.commands.stream.clone(),
                source: e.into(),
            })?;
        let mut positions = Positions::open(&js, &cfg.commands.positions_bucket).await?;
        let mut topics = Topics::new(&cfg.kafka);
        let mut assignment = TopicPartitionList::new();
        let mut rules: HashMap<String, &DownlinkRule> = HashMap::new();
        for rule in &cfg.downlink {
            let topic: Arc<str> = Arc::from(rule.topic.get_ref().as_str());
            let n = topics.partitions(&topic).await?;
            rules.insert(topic.to_string(), rule);
            for p in 0..n {
                let offset = match positions.get(&topic, p).await? {
                    Some(next) => Offset::Offset(next),
                    None => Offset::Beginning,
                };
                assignment
                    .add_partition_offset(&topic, p, offset)
                    .map_err(DownlinkError::Assign)?;
            }
            info!(topic = %topic, partitions = n, "downlink reads commands");
        }
        let consumer = consumer(&cfg.kafka)?;
        consumer
            .assign(&assignment)
            .map_err(DownlinkError::Assign)?;
        let producer = dead_letter_producer(&cfg.kafka)?;
        let mut tick = tokio::time::interval(POSITIONS_EVERY);
        let mut failures = Window::default();
        loop {
            let msg = tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    positions.flush(&mut failures).await;
                    continue;
                }
                msg = consumer.recv() => msg,
            };
            let msg = match msg {
                Ok(m) => m,
                Err(e) => {
                    if let Decision::Log { suppressed } =
                        failures.decide(std::time::Instant::now(), LOG_EVERY)
                    {
                        warn!(error = %e, suppressed, "reading command topics failed; retrying");
                    }
                    continue;
                }
            };
            let Some(rule) = rules.get(msg.topic()) else {
                continue;
            };
            let headers: Vec<(&str, &[u8])> = msg
                .headers()
                .map(|hs| {
                    hs.iter()
                        .filter_map(|h| h.value.map(|v| (h.key, v)))
                        .collect()
                })
                .unwrap_or_default();
            let view = RecordView {
                topic: msg.topic(),
                partition: msg.partition(),
                offset: msg.offset(),
                key: msg.key(),
                headers: &headers,
                payload: msg.payload(),
                timestamp_ms: msg.timestamp().to_millis(),
            };
            let done = match command::read(rule, &view, now_ms()) {
                Ok(c) => {
                    let template = rule.subject_template(&cfg.control.subject_prefix);
                    self.publish(&js, &command::subject(&template, &c), &c, &stop)
                        .await
                }
                Err(why) => self.dead_letter(&producer, &view, &why, &stop).await,
            };
            if !done {
                break;
            }
            positions.advance(view.topic, view.partition, view.offset + 1);
        }
        positions.flush(&mut failures).await;
        Ok(())
    }

    /// Publishes `command` until the hub acknowledges it; `false` when
    /// `stop` came first.
    async fn publish(
        &self,
        js: &Context,
        subject: &str,
        command: &Command,
        stop: &CancellationToken,
    ) -> bool {
        let payload = serde_json::to_vec(command).expect("a command serializes");
        let mut headers = HeaderMap::new();
        headers.insert(NATS_MSG_ID_HEADER, command.source.msg_id().as_str());
        let mut failures = Window::default();
        loop {
            let attempt = async {
                js.publish_with_headers(subject.to_owned(), headers.clone(), payload.clone().into())
                    .await?
                    .await
                    .map_err(async_nats::Error::from)
            };
            let result = tokio::select! {
                () = stop.cancelled() => return false,
                r = attempt => r,
            };
            match result {
                Ok(_) => {
                    self.metrics.commands_published.fetch_add(1, Relaxed);
                    return true;
                }
                Err(e) => {
                    if let Decision::Log { suppressed } =
                        failures.decide(std::time::Instant::now(), LOG_EVERY)
                    {
                        warn!(error = %error_chain(&*e), subject, suppressed, "the hub did not take a command; retrying");
                    }
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Writes the record's dead letter until Kafka confirms it; `false`
    /// when `stop` came first.
    async fn dead_letter(
        &self,
        producer: &FutureProducer<LoggingContext>,
        view: &RecordView<'_>,
        why: &NotACommand,
        stop: &CancellationToken,
    ) -> bool {
        warn!(topic = view.topic, partition = view.partition, offset = view.offset, reason = %why, "dead-lettering a command record");
        let source = format!("{}:{}:{}", view.topic, view.partition, view.offset);
        let reason = format!("undecodable command: {why}");
        let mut failures = Window::default();
        loop {
            let mut headers = OwnedHeaders::new();
            for (key, value) in view.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(*value),
                });
            }
            headers = headers
                .insert(Header {
                    key: crate::records::DLQ_REASON_HEADER,
                    value: Some(reason.as_bytes()),
                })
                .insert(Header {
                    key: "tributary-dlq-source",
                    value: Some(source.as_bytes()),
                });
            let mut record = FutureRecord::to(&self.config.kafka.dead_letter_topic)
                .payload(view.payload.unwrap_or_default())
                .headers(headers);
            if let Some(k) = view.key {
                record = record.key(k);
            }
            let sent = tokio::select! {
                () = stop.cancelled() => return false,
                r = producer.send(record, self.config.kafka.delivery_timeout.get()) => r,
            };
            match sent {
                Ok(_) => {
                    self.metrics.commands_dead_lettered.fetch_add(1, Relaxed);
                    return true;
                }
                Err((e, _)) => {
                    self.health.kafka_down();
                    if let Decision::Log { suppressed } =
                        failures.decide(std::time::Instant::now(), LOG_EVERY)
                    {
                        warn!(error = %e, suppressed, "cannot write a command's dead letter; retrying");
                    }
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }
}

fn consumer(
    k: &tributary_config::uplink::KafkaSection,
) -> Result<StreamConsumer<LoggingContext>, KafkaSetupError> {
    let mut c = kafka::base_config(k);
    // `assign` only: no group is joined and nothing is committed (the
    // positions live on the hub, see the module docs).
    c.set("group.id", "tributary-uplink-downlink");
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("fetch.wait.max.ms", "50");
    c.create_with_context(LoggingContext)
        .map_err(KafkaSetupError::Config)
}

fn dead_letter_producer(
    k: &tributary_config::uplink::KafkaSection,
) -> Result<FutureProducer<LoggingContext>, KafkaSetupError> {
    kafka::producer_config(k, false)
        .create_with_context(LoggingContext)
        .map_err(KafkaSetupError::Config)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
