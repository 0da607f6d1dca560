//! The Kafka side: the producer's settings, topics (created or checked),
//! partition counts, reading the last record of a partition (for the
//! exactly-once mode), and which write errors are permanent or fatal.

use crate::deliveries::Ledger;
use crate::health::Health;
use crate::kafka_log::{self, LoggingContext};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext, ThreadedProducer};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::info;
use tributary_config::ValidationError;
use tributary_config::uplink::KafkaSection;

/// The producer the uplink writes with: its delivery reports settle the
/// tickets of its [`Ledger`] (see [`crate::deliveries`]).
pub type Producer<T> = ThreadedProducer<UplinkContext<T>>;

/// Why Kafka could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused the configuration (a bad property name or value).
    #[error("the Kafka client configuration is refused: {0}")]
    Config(#[source] KafkaError),
    /// A topic the uplink routes to does not exist and `create_topics` is
    /// false.
    #[error("Kafka topic {0:?} does not exist; create it, or set `kafka.create_topics = true`")]
    MissingTopic(String),
    /// Creating a topic failed.
    #[error("cannot create Kafka topic {topic:?}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// The brokers did not answer.
    #[error("Kafka at {brokers} did not answer a metadata request: {reason}")]
    Unreachable {
        /// The bootstrap servers.
        brokers: String,
        /// Why (in the message, so not also a `source`).
        reason: KafkaError,
    },
    /// A partition's last record could not be read.
    #[error("cannot read the last record of {topic}/{partition}: {reason}")]
    Tail {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Why.
        reason: String,
    },
}

/// The producer's context: routes librdkafka's logs to `tracing`
/// (rate-limited, see [`crate::kafka_log`]), records
/// broker outages for the health endpoint, and settles delivery reports in
/// the ledger.
#[derive(Debug)]
pub struct UplinkContext<T> {
    health: Arc<Health>,
    ledger: Arc<Ledger<T>>,
}

impl<T> UplinkContext<T> {
    /// A context reporting to `health`, with an empty ledger.
    pub fn new(health: Arc<Health>) -> Self {
        UplinkContext {
            health,
            ledger: Arc::default(),
        }
    }

    /// The ledger of the messages this producer writes.
    pub fn ledger(&self) -> &Arc<Ledger<T>> {
        &self.ledger
    }
}

impl<T: Send + Sync + 'static> ProducerContext for UplinkContext<T> {
    /// The record's [`Ticket`](crate::deliveries::Ticket).
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, ticket: usize) {
        self.ledger
            .settle(ticket, result.as_ref().map(|_| ()).map_err(|(e, _)| e));
    }
}

impl<T: Send + Sync + 'static> ClientContext for UplinkContext<T> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        kafka_log::log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::AllBrokersDown | RDKafkaErrorCode::BrokerTransportFailure)
        ) {
            self.health.kafka_down();
        }
        kafka_log::error(&error, reason);
    }
}

/// Settings shared by every client (security and bootstrap): the user's
/// properties that are not producer-only.
pub(crate) fn base_config(k: &KafkaSection) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    c.set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in &k.properties {
        if key.starts_with("security.")
            || key.starts_with("sasl.")
            || key.starts_with("ssl.")
            || key.starts_with("ssl_")
            || key.starts_with("client.")
            || key.starts_with("socket.")
            || key.starts_with("broker.")
        {
            c.set(key, value);
        }
    }
    c
}

/// The producer's configuration: idempotent, acks=all, the Java client's
/// partitioner, batching and compression from the config, then the user's
/// pass-through properties. `exactly_once` turns gaps into fatal errors, so
/// that a partition always holds a prefix of what was sent to it.
///
/// librdkafka never times a message out (`message.timeout.ms = 0`), in
/// either mode: when an idempotent producer's messages time out, librdkafka
/// bumps the producer epoch *locally* and goes on with the same producer id
/// and sequence 0. Kafka accepts that (KIP-360); tansu 0.6.0 does not: its
/// memory storage answers `ProducerFenced` to every later write, and its
/// sqlite storage panics in its storage task and then fails every request
/// until restarted. At-least-once mode enforces `kafka.delivery_timeout`
/// itself instead (see [`crate::readings`]): a write not confirmed in time
/// ends the session, and the next one uses a new producer (a new producer
/// id, which every broker accepts).
pub fn producer_config(k: &KafkaSection, exactly_once: bool) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    c.set_log_level(RDKafkaLogLevel::Warning);
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set("max.in.flight.requests.per.connection", "5");
    c.set("partitioner", "murmur2_random");
    c.set("compression.type", k.compression.as_str());
    c.set("linger.ms", k.linger.as_millis().to_string());
    c.set(
        "batch.size",
        k.batch_size.as_u64().clamp(1, 2_147_483_647).to_string(),
    );
    let max_record = k.max_record_bytes.as_u64();
    c.set(
        "message.max.bytes",
        (max_record + 64 * 1024)
            .clamp(1000, 1_000_000_000)
            .to_string(),
    );
    c.set("queue.buffering.max.kbytes", "262144");
    c.set("message.timeout.ms", "0");
    if exactly_once {
        c.set("enable.gapless.guarantee", "true");
    }
    for (key, value) in &k.properties {
        c.set(key, value);
    }
    c
}

/// librdkafka properties whose value is a file librdkafka reads when a
/// client starts (`probe` and directories are left to librdkafka).
const FILE_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.location",
    "ssl.crl.location",
    "sasl.kerberos.keytab",
];

/// What `check` verifies of `[kafka]` beyond the configuration's own
/// rules, as the clients will see it: librdkafka accepts every property,
/// name and value, of the producer (which gets all of them), and the files
/// the properties name can be read. Contacts no broker.
pub fn check_config(k: &KafkaSection, exactly_once: bool) -> Result<(), ValidationError> {
    if let Err(e) = producer_config(k, exactly_once).create_native_config() {
        let (key, message) = match &e {
            KafkaError::ClientConfig(_, description, key, _) => {
                (format!("kafka.properties.{key}"), description.clone())
            }
            other => ("kafka.properties".to_owned(), other.to_string()),
        };
        return Err(ValidationError::new(
            key,
            None,
            format!("librdkafka refuses it: {message}"),
        ));
    }
    for name in FILE_PROPERTIES {
        let Some(value) = k.properties.get(*name) else {
            continue;
        };
        let path = std::path::Path::new(value);
        if value == "probe" || path.is_dir() {
            continue;
        }
        if let Err(e) = std::fs::File::open(path) {
            return Err(ValidationError::new(
                format!("kafka.properties.{name}"),
                None,
                format!("cannot read {value}: {e}"),
            ));
        }
    }
    Ok(())
}

/// Creates a producer whose ledger holds a `T` per message in flight.
pub fn producer<T: Send + Sync + 'static>(
    k: &KafkaSection,
    exactly_once: bool,
    health: Arc<Health>,
) -> Result<Producer<T>, KafkaSetupError> {
    producer_config(k, exactly_once)
        .create_with_context(UplinkContext::new(health))
        .map_err(KafkaSetupError::Config)
}

/// Warms a new producer up before a session hands it readings: one
/// metadata request per topic over the producer's own client, so it has
/// connected and knows the topics' leaders before the first send. Without
/// it the first sends of a session waited for that (measured with tansu in
/// `make demo`: the first 4 readings after a start took 0.5 to 1.3 s to be
/// confirmed, the rest under 10 ms; with it, the warm-up took 52 ms and the
/// first readings arrived like the rest). Blocking: run it on a blocking
/// thread. An error only says the warm-up did not finish within `timeout`
/// per topic; the session then meets the broker as it would have anyway.
pub fn warm_up<T: Send + Sync + 'static>(
    producer: &Producer<T>,
    topics: &[Arc<str>],
    timeout: Duration,
) -> Result<(), KafkaError> {
    use rdkafka::producer::Producer as _;
    for topic in topics {
        producer.client().fetch_metadata(Some(topic), timeout)?;
    }
    Ok(())
}

/// Partition counts of the topics the uplink writes to, learned from
/// metadata; topics are created on first use when the config says so.
#[derive(Debug)]
pub struct Topics {
    config: KafkaSection,
    counts: HashMap<Arc<str>, i32>,
}

impl Topics {
    /// An empty cache for `config`'s brokers.
    pub fn new(config: &KafkaSection) -> Topics {
        Topics {
            config: config.clone(),
            counts: HashMap::new(),
        }
    }

    /// The partition count of `topic`, creating it first when missing and
    /// `create_topics` is set.
    pub async fn partitions(&mut self, topic: &Arc<str>) -> Result<i32, KafkaSetupError> {
        if let Some(n) = self.counts.get(topic) {
            return Ok(*n);
        }
        let config = self.config.clone();
        let name = topic.to_string();
        let n = tokio::task::spawn_blocking(move || lookup_or_create(&config, &name))
            .await
            .expect("topic lookup thread panicked")?;
        self.counts.insert(topic.clone(), n);
        Ok(n)
    }
}

fn metadata_consumer(
    config: &KafkaSection,
) -> Result<BaseConsumer<LoggingContext>, KafkaSetupError> {
    let mut c = base_config(config);
    // librdkafka wants a group id even for `assign`; no group is joined
    // and nothing is committed.
    c.set("group.id", "tributary-uplink-tail");
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("socket.timeout.ms", "5000");
    c.create_with_context(LoggingContext)
        .map_err(KafkaSetupError::Config)
}

/// The partition count of `topic`, or `None` when it does not exist.
fn partition_count(
    consumer: &BaseConsumer<LoggingContext>,
    config: &KafkaSection,
    topic: &str,
) -> Result<Option<i32>, KafkaSetupError> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|reason| KafkaSetupError::Unreachable {
            brokers: config.brokers.clone(),
            reason,
        })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| i32::try_from(t.partitions().len()).unwrap_or(i32::MAX)))
}

fn lookup_or_create(config: &KafkaSection, topic: &str) -> Result<i32, KafkaSetupError> {
    let consumer = metadata_consumer(config)?;
    if let Some(n) = partition_count(&consumer, config, topic)? {
        return Ok(n);
    }
    if !config.create_topics {
        return Err(KafkaSetupError::MissingTopic(topic.to_owned()));
    }
    let admin: AdminClient<LoggingContext> = base_config(config)
        .create_with_context(LoggingContext)
        .map_err(KafkaSetupError::Config)?;
    let partitions = i32::try_from(config.partitions.get()).unwrap_or(i32::MAX);
    let rf = i32::try_from(config.replication_factor.get()).unwrap_or(i32::MAX);
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in &config.topic_config {
        new = new.set(k, v);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = futures::executor::block_on(admin.create_topics([&new], &opts)).map_err(|e| {
        KafkaSetupError::CreateTopic {
            topic: topic.to_owned(),
            reason: e.to_string(),
        }
    })?;
    for r in results {
        match r {
            Ok(_) => info!(topic, partitions, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(KafkaSetupError::CreateTopic {
                    topic: topic.to_owned(),
                    reason: code.to_string(),
                });
            }
        }
    }
    let start = Instant::now();
    loop {
        if let Some(n) = partition_count(&consumer, config, topic)? {
            return Ok(n);
        }
        if start.elapsed() > Duration::from_secs(15) {
            return Err(KafkaSetupError::CreateTopic {
                topic: topic.to_owned(),
                reason: "created, but the brokers' metadata does not list it after 15s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A metadata client for [`Prober::probe`], made once: one set of
/// librdkafka threads and connections for the uplink's life, not one every
/// probe.
#[derive(Clone)]
pub struct Prober {
    consumer: Arc<BaseConsumer<LoggingContext>>,
    brokers: String,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("brokers", &self.brokers)
            .finish_non_exhaustive()
    }
}

impl Drop for Prober {
    /// The last one destroys the client off the runtime: librdkafka waits
    /// there for requests to a frozen broker to time out, which must not
    /// hold a stop (the process may end first; nothing is lost).
    fn drop(&mut self) {
        if Arc::strong_count(&self.consumer) == 1 {
            let consumer = self.consumer.clone();
            let _ = std::thread::Builder::new()
                .name("kafka-probe-drop".into())
                .spawn(move || drop(consumer));
        }
    }
}

impl Prober {
    /// A prober of `config`'s brokers.
    pub fn new(config: &KafkaSection) -> Result<Prober, KafkaSetupError> {
        Ok(Prober {
            consumer: Arc::new(metadata_consumer(config)?),
            brokers: config.brokers.clone(),
        })
    }

    /// Whether the brokers answer a metadata request within 5 s (blocks).
    pub fn probe(&self) -> Result<(), KafkaSetupError> {
        self.consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .map(|_| ())
            .map_err(|reason| KafkaSetupError::Unreachable {
                brokers: self.brokers.clone(),
                reason,
            })
    }
}

/// A record refused by Kafka for good: writing it again cannot succeed.
///
/// A broker that validates records (a schema) refuses a batch with
/// `INVALID_RECORD` and names the records at fault; librdkafka fails those
/// with `InvalidRecord` (permanent: dead-lettered) and the others of the
/// batch with `InvalidDifferentRecord`, which is not permanent: they are
/// written again.
pub(crate) fn permanent(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::MessageBatchTooLarge
                | RDKafkaErrorCode::InvalidTopic
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownPartition
        )
    )
}

/// Errors after which an idempotent producer accepts nothing more and must
/// be replaced.
pub(crate) fn fatal(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch
                | RDKafkaErrorCode::OutOfOrderSequenceNumber
                | RDKafkaErrorCode::UnknownProducerId
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(brokers: String) -> KafkaSection {
        KafkaSection {
            brokers,
            ..KafkaSection::default()
        }
    }

    #[test]
    fn a_new_producer_warms_up_against_a_real_broker_for_every_topic_it_is_given() {
        let kafka = tributary_tests::Kafka::start_memory().unwrap();
        kafka.create_topic("readings", 3).unwrap();
        kafka.create_topic("other", 1).unwrap();
        let k = section(kafka.bootstrap());
        let producer: Producer<()> = producer(&k, false, Arc::default()).unwrap();
        let topics = [Arc::from("readings"), Arc::from("other")];
        warm_up(&producer, &topics, Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_warm_up_with_no_broker_gives_up_with_an_error_after_its_timeout() {
        let k = section(format!("127.0.0.1:{}", tributary_tests::ports::free_port()));
        let producer: Producer<()> = producer(&k, false, Arc::default()).unwrap();
        let started = Instant::now();
        let result = warm_up(&producer, &[Arc::from("readings")], Duration::from_secs(1));
        assert!(result.is_err(), "{result:?}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it must give up"
        );
    }

    #[test]
    fn a_record_at_fault_is_refused_for_good_and_its_innocent_batch_mates_are_retried() {
        let at_fault = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord);
        let batch_mate = KafkaError::MessageProduction(RDKafkaErrorCode::InvalidDifferentRecord);
        assert!(permanent(&at_fault) && !fatal(&at_fault));
        assert!(!permanent(&batch_mate) && !fatal(&batch_mate));
    }
}
