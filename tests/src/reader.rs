//! [`KafkaReader`]: reads a whole topic back from the beginning, for assertions.
//!
//! Every record it reads is validated against the published schema of what it is (a JSON
//! reading, a dead letter: [`crate::schema::check_record`]); a record that breaks it fails
//! the read with [`HarnessError::SchemaViolation`].
//!
//! It `assign`s every partition explicitly (never `subscribe`: consumer groups hang on tansu
//! 0.6.0) and starts each read from offset 0, so every call sees the topic's full contents.
//!
//! ```no_run
//! # fn main() -> tributary_tests::Result<()> {
//! use std::time::Duration;
//! use tributary_tests::{KafkaReader, Record};
//! let reader = KafkaReader::new("127.0.0.1:9092");
//! let records = reader.read_until("readings", 100, Duration::from_secs(30))?;
//! let readings = Record::readings(&records)?; // Vec<JsonReading>
//! let ids: Vec<&str> = records.iter().filter_map(|r| r.header_str("Nats-Msg-Id")).collect();
//! # Ok(()) }
//! ```

use crate::error::{HarnessError, Result};
use crate::kafka::base_consumer;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use tributary_wire::json::JsonReading;

/// One record read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Partition.
    pub partition: i32,
    /// Offset within the partition.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<Vec<u8>>,
    /// Payload, if any.
    pub payload: Option<Vec<u8>>,
    /// Headers in order (a name may repeat).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp in ms since the Unix epoch, if the broker returned one.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first header called `name`, as UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The key as UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The payload parsed as a Tributary JSON reading, after validating it against the
    /// published `schema/reading.schema.json`.
    pub fn reading(&self) -> Result<JsonReading> {
        let value = crate::schema::check_reading_payload(self)?;
        serde_json::from_value(value).map_err(|source| HarnessError::BadRecord {
            partition: self.partition,
            offset: self.offset,
            source,
        })
    }

    /// All payloads parsed as JSON readings, in the given order.
    pub fn readings(records: &[Record]) -> Result<Vec<JsonReading>> {
        records.iter().map(Record::reading).collect()
    }
}

/// Reads topics of one broker from the beginning. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KafkaReader {
    bootstrap: String,
}

impl KafkaReader {
    /// A reader for the broker at `bootstrap` (`host:port`).
    pub fn new(bootstrap: impl Into<String>) -> Self {
        KafkaReader {
            bootstrap: bootstrap.into(),
        }
    }

    /// Reads `topic` from the beginning until at least `count` records arrived; fails with
    /// [`HarnessError::TooFewRecords`] after `timeout`. Records come in partition order of
    /// arrival; within a partition by offset. Waits for the topic to exist.
    pub fn read_until(&self, topic: &str, count: usize, timeout: Duration) -> Result<Vec<Record>> {
        let start = Instant::now();
        let consumer = self.assigned(topic, timeout, false)?;
        let mut records = Vec::new();
        let mut transient = Transient::default();
        while records.len() < count {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(transient.at_deadline(HarnessError::TooFewRecords {
                    topic: topic.to_owned(),
                    want: count,
                    got: records.len(),
                    waited: timeout,
                }));
            }
            poll_one(
                &consumer,
                left.min(Duration::from_millis(200)),
                &mut records,
                &mut transient,
            )?;
        }
        Ok(records)
    }

    /// Reads everything `topic` holds right now: every partition up to its end as a fetch
    /// reports it (librdkafka's partition-EOF event). Use it to assert exact contents (no
    /// duplicates, nothing extra) once the pipeline has gone quiet.
    ///
    /// It does not use `ListOffsets` (`fetch_watermarks`): tansu 0.6.0's memory storage
    /// answers it with the base offset of the most recently written batch plus one, which
    /// cuts off the rest of that batch.
    pub fn read_all(&self, topic: &str, timeout: Duration) -> Result<Vec<Record>> {
        let start = Instant::now();
        let consumer = self.assigned(topic, timeout, true)?;
        let mut transient = Transient::default();
        let partitions = retry(start, timeout, &mut transient, || {
            partitions_of(&consumer, topic)
        })?;
        let mut at_end = std::collections::BTreeSet::new();
        let mut records = Vec::new();
        while at_end.len() < partitions.len() {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(transient.at_deadline(HarnessError::NotAtEnd {
                    topic: topic.to_owned(),
                    got: records.len(),
                    at_end: at_end.len(),
                    partitions: partitions.len(),
                    waited: timeout,
                }));
            }
            if let Some(p) = poll_one(
                &consumer,
                left.min(Duration::from_millis(200)),
                &mut records,
                &mut transient,
            )? {
                at_end.insert(p);
            }
        }
        Ok(records)
    }

    /// All payloads parsed as JSON readings, in the given order (same as [`Record::readings`]).
    pub fn readings(records: &[Record]) -> Result<Vec<JsonReading>> {
        Record::readings(records)
    }

    /// [`read_until`](Self::read_until) on a blocking thread, for async tests.
    pub async fn read_until_async(
        &self,
        topic: &str,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<Record>> {
        let (reader, topic) = (self.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || reader.read_until(&topic, count, timeout))
            .await
            .expect("the reader thread panicked")
    }

    /// [`read_all`](Self::read_all) on a blocking thread, for async tests.
    pub async fn read_all_async(&self, topic: &str, timeout: Duration) -> Result<Vec<Record>> {
        let (reader, topic) = (self.clone(), topic.to_owned());
        tokio::task::spawn_blocking(move || reader.read_all(&topic, timeout))
            .await
            .expect("the reader thread panicked")
    }

    /// A consumer with every partition of `topic` assigned from the beginning; waits up to
    /// `timeout` for the topic to exist. `eof`: report each partition's end.
    fn assigned(&self, topic: &str, timeout: Duration, eof: bool) -> Result<BaseConsumer> {
        let consumer = base_consumer(&self.bootstrap, eof)?;
        let start = Instant::now();
        let partitions = loop {
            match partitions_of(&consumer, topic) {
                Ok(p) if !p.is_empty() => break p,
                Ok(_) | Err(_) if start.elapsed() < timeout => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(_) => {
                    return Err(HarnessError::TooFewRecords {
                        topic: topic.to_owned(),
                        want: 1,
                        got: 0,
                        waited: timeout,
                    });
                }
                Err(e) => return Err(e),
            }
        };
        let mut list = TopicPartitionList::new();
        for p in partitions {
            list.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| HarnessError::kafka("building assignment", e))?;
        }
        consumer
            .assign(&list)
            .map_err(|e| HarnessError::kafka(format!("assigning {topic}"), e))?;
        Ok(consumer)
    }
}

fn partitions_of(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .map_err(|e| HarnessError::kafka(format!("metadata of {topic}"), e))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// The errors a read rode out. Right after a broker restart librdkafka
/// reports `AllBrokersDown` or transport failures while it reconnects by
/// itself; a reader with time left keeps going, and only when its deadline
/// passes does the last such error become the answer.
#[derive(Debug, Default)]
struct Transient {
    last: Option<HarnessError>,
    count: usize,
}

impl Transient {
    fn note(&mut self, e: HarnessError) {
        self.count += 1;
        // Say so once, and then every 50th time: a reconnecting client
        // repeats itself.
        if self.count == 1 || self.count % 50 == 0 {
            eprintln!(
                "KafkaReader: riding out a transient error ({} so far): {e}",
                self.count
            );
        }
        self.last = Some(e);
    }

    /// The error to return at the deadline: the last transient error if there was one,
    /// since it is the likely reason, with `short` (what the read lacked) in its text;
    /// else `short` itself.
    fn at_deadline(self, short: HarnessError) -> HarnessError {
        match self.last {
            Some(HarnessError::Kafka { what, source }) => HarnessError::Kafka {
                what: format!(
                    "reading ({short}; {} transient errors, the last while {what})",
                    self.count
                ),
                source,
            },
            Some(other) => other,
            None => short,
        }
    }
}

/// Runs `f` until it succeeds or `timeout` (counted from `start`) passes,
/// pausing briefly after each failure.
fn retry<T>(
    start: Instant,
    timeout: Duration,
    transient: &mut Transient,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() < timeout => {
                transient.note(e);
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a consumer error means the read cannot succeed however long it
/// waits (everything else, such as `AllBrokersDown` while a broker
/// restarts, is ridden out).
fn fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageConsumptionFatal(_))
        || matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::TopicAuthorizationFailed
                    | RDKafkaErrorCode::GroupAuthorizationFailed
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::InvalidConfig
            )
        )
}

/// Polls once: a record goes into `records`; `Some(partition)` when that partition's end
/// was reached (only with an `eof` consumer).
fn poll_one(
    consumer: &BaseConsumer,
    wait: Duration,
    records: &mut Vec<Record>,
    transient: &mut Transient,
) -> Result<Option<i32>> {
    match consumer.poll(wait) {
        None => Ok(None),
        Some(Err(KafkaError::PartitionEOF(p))) => Ok(Some(p)),
        Some(Err(e)) if fatal(&e) => Err(HarnessError::kafka("fetching records", e)),
        Some(Err(e)) => {
            transient.note(HarnessError::kafka("fetching records", e));
            Ok(None)
        }
        Some(Ok(m)) => {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            let record = Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
                timestamp_ms: m.timestamp().to_millis(),
            };
            crate::schema::check_record(&record)?;
            records.push(record);
            Ok(None)
        }
    }
}
