//! [`KafkaReader`]: reads a whole topic back from the beginning, for assertions.
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

    /// The payload parsed as a Tributary JSON reading.
    pub fn reading(&self) -> Result<JsonReading> {
        serde_json::from_slice(self.payload.as_deref().unwrap_or_default()).map_err(|source| {
            HarnessError::BadRecord {
                partition: self.partition,
                offset: self.offset,
                source,
            }
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
        let consumer = self.assigned(topic, timeout)?;
        let mut records = Vec::new();
        while records.len() < count {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(HarnessError::TooFewRecords {
                    topic: topic.to_owned(),
                    want: count,
                    got: records.len(),
                    waited: timeout,
                });
            }
            poll_one(
                &consumer,
                left.min(Duration::from_millis(200)),
                &mut records,
            )?;
        }
        Ok(records)
    }

    /// Reads everything `topic` holds right now: all records up to each partition's high
    /// watermark at the time of the call. Use it to assert exact contents (no duplicates,
    /// nothing extra) once the pipeline has gone quiet.
    pub fn read_all(&self, topic: &str, timeout: Duration) -> Result<Vec<Record>> {
        let start = Instant::now();
        let consumer = self.assigned(topic, timeout)?;
        let partitions = partitions_of(&consumer, topic)?;
        let mut high = Vec::with_capacity(partitions.len());
        for p in &partitions {
            let (_, h) = consumer
                .fetch_watermarks(topic, *p, Duration::from_secs(5))
                .map_err(|e| HarnessError::kafka(format!("watermarks of {topic}/{p}"), e))?;
            high.push((*p, h));
        }
        let want: i64 = high.iter().map(|(_, h)| h).sum();
        let mut records = Vec::new();
        let done = |records: &[Record]| {
            high.iter().all(|(p, h)| {
                *h == 0
                    || records
                        .iter()
                        .any(|r| r.partition == *p && r.offset + 1 >= *h)
            })
        };
        while !done(&records) {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(HarnessError::TooFewRecords {
                    topic: topic.to_owned(),
                    want: usize::try_from(want).unwrap_or(usize::MAX),
                    got: records.len(),
                    waited: timeout,
                });
            }
            poll_one(
                &consumer,
                left.min(Duration::from_millis(200)),
                &mut records,
            )?;
        }
        records.retain(|r| high.iter().any(|(p, h)| r.partition == *p && r.offset < *h));
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
    /// `timeout` for the topic to exist.
    fn assigned(&self, topic: &str, timeout: Duration) -> Result<BaseConsumer> {
        let consumer = base_consumer(&self.bootstrap)?;
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

fn poll_one(consumer: &BaseConsumer, wait: Duration, records: &mut Vec<Record>) -> Result<()> {
    match consumer.poll(wait) {
        None => Ok(()),
        Some(Err(e)) => Err(HarnessError::kafka("fetching records", e)),
        Some(Ok(m)) => {
            let headers = m
                .headers()
                .map(|hs| {
                    hs.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default();
            records.push(Record {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().map(<[u8]>::to_vec),
                headers,
                timestamp_ms: m.timestamp().to_millis(),
            });
            Ok(())
        }
    }
}
