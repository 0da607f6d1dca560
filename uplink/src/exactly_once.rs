//! Exactly-once bookkeeping: origins, the highest origin each owned
//! partition holds, and partition ownership among replicas.
//!
//! Every record carries its origin, `(stream sequence, index within the
//! message)`, in the [`ORIGIN_HEADER`](crate::records::ORIGIN_HEADER). The
//! idempotent producer with `enable.gapless.guarantee` and no message
//! timeout makes what a partition holds a prefix of what was sent to it,
//! in order; the consumer is rewound to its ack floor at start, so messages
//! arrive in stream order and origins sent to a partition only grow. Hence
//! the last record of a partition carries the highest origin written there,
//! and anything at or below it is already in Kafka.

use crate::kafka::{KafkaSetupError, base_config};
use crate::kafka_log::LoggingContext;
use crate::records::ORIGIN_HEADER;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;
use tributary_config::uplink::KafkaSection;

/// Where a record comes from: stream sequence, then index in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Origin {
    /// JetStream stream sequence of the message.
    pub seq: u64,
    /// Index of the record among the message's records.
    pub index: u32,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.index)
    }
}

impl Origin {
    /// Parses a header value `seq:index`.
    pub fn parse(bytes: &[u8]) -> Option<Origin> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (seq, index) = s.split_once(':')?;
        Some(Origin {
            seq: seq.parse().ok()?,
            index: index.parse().ok()?,
        })
    }
}

/// Whether `replica` of `replicas` owns `partition`.
pub fn owns(partition: i32, replica: u32, replicas: u32) -> bool {
    u32::try_from(partition).is_ok_and(|p| p % replicas.max(1) == replica)
}

/// The highest origin each partition holds or has been sent in this
/// session, learned lazily from the partition's last record.
#[derive(Debug)]
pub struct HighWater {
    config: KafkaSection,
    marks: HashMap<(Arc<str>, i32), Option<Origin>>,
}

impl HighWater {
    /// Empty: every partition is read on first use.
    pub fn new(config: &KafkaSection) -> HighWater {
        HighWater {
            config: config.clone(),
            marks: HashMap::new(),
        }
    }

    /// The highest origin of `topic`/`partition`.
    pub async fn get(
        &mut self,
        topic: &Arc<str>,
        partition: i32,
    ) -> Result<Option<Origin>, KafkaSetupError> {
        let key = (topic.clone(), partition);
        if let Some(mark) = self.marks.get(&key) {
            return Ok(*mark);
        }
        let (config, t) = (self.config.clone(), topic.to_string());
        let header =
            tokio::task::spawn_blocking(move || last_header(&config, &t, partition, ORIGIN_HEADER))
                .await
                .expect("tail reader thread panicked")?;
        let mark = header.as_deref().and_then(Origin::parse);
        tracing::info!(topic = %topic, partition, last_origin = ?mark.map(|o| o.to_string()), "exactly-once: read the partition's last origin");
        self.marks.insert(key, mark);
        Ok(mark)
    }

    /// Records that `origin` was sent to `topic`/`partition`.
    pub fn advance(&mut self, topic: &Arc<str>, partition: i32, origin: Origin) {
        self.marks.insert((topic.clone(), partition), Some(origin));
    }

    /// The mark of `topic`/`partition`: `current` when it is that
    /// partition's, else read anew (after recording `current`).
    pub async fn mark<'r>(
        &mut self,
        current: Option<Mark<'r>>,
        topic: &'r Arc<str>,
        partition: i32,
    ) -> Result<Mark<'r>, KafkaSetupError> {
        match current {
            Some(m) if m.partition == partition && Arc::ptr_eq(m.topic, topic) => return Ok(m),
            Some(m) => self.record(m),
            None => {}
        }
        Ok(Mark {
            topic,
            partition,
            highest: self.get(topic, partition).await?,
            advanced: false,
        })
    }

    /// Records what was sent under `mark`.
    pub fn record(&mut self, mark: Mark<'_>) {
        if let (true, Some(origin)) = (mark.advanced, mark.highest) {
            self.advance(mark.topic, mark.partition, origin);
        }
    }
}

/// The highest origin of the partition a message's records are going to,
/// kept while they go there: the records of a message mostly share one
/// partition, so it is read from [`HighWater`] once per run of them
/// ([`HighWater::mark`]), raised as records are admitted, and recorded when
/// the records move on or the message is sent ([`HighWater::record`]).
#[derive(Debug)]
pub struct Mark<'r> {
    topic: &'r Arc<str>,
    partition: i32,
    highest: Option<Origin>,
    /// Whether records were admitted since it was read.
    advanced: bool,
}

impl Mark<'_> {
    /// Whether a record of `origin` must be sent: it is above everything
    /// the partition holds or was sent. If so it becomes the highest.
    pub fn admit(&mut self, origin: Origin) -> bool {
        if self.highest.is_some_and(|h| origin <= h) {
            return false;
        }
        self.highest = Some(origin);
        self.advanced = true;
        true
    }
}

/// The value of header `name` of the last record of `topic`/`partition`,
/// `Ok(None)` when the partition is empty or the record lacks the header.
///
/// The end of the partition is where a fetch says it is (the consumer's
/// partition-EOF event, which comes from the fetch response's high
/// watermark), never the `ListOffsets` answer alone: tansu 0.6.0's memory
/// storage answers `ListOffsets(latest)` with the base offset of the most
/// recently written *batch* plus one, which is below the true end whenever
/// that batch holds more than one record. Reading at "high watermark - 1"
/// then finds a record in the middle of the last batch, and exactly-once
/// resends the rest of that batch (the duplicates its SIGKILL test found).
/// That answer is still a lower bound of the end, so reading starts one
/// before it and goes forward to the end.
pub fn last_header(
    config: &KafkaSection,
    topic: &str,
    partition: i32,
    name: &str,
) -> Result<Option<Vec<u8>>, KafkaSetupError> {
    let fail = |reason: String| KafkaSetupError::Tail {
        topic: topic.to_owned(),
        partition,
        reason,
    };
    let mut c = base_config(config);
    c.set("group.id", "tributary-uplink-tail");
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("enable.partition.eof", "true");
    // The end shows as an empty fetch; do not let the broker hold it for
    // the default 500 ms (this read delays the first write to the
    // partition).
    c.set("fetch.wait.max.ms", "10");
    c.set("socket.timeout.ms", "5000");
    let consumer: BaseConsumer<LoggingContext> = c
        .create_with_context(LoggingContext)
        .map_err(KafkaSetupError::Config)?;
    let (low, listed_high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .map_err(|e| fail(format!("watermarks: {e}")))?;
    let start = (listed_high - 1).max(low).max(0);
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(|e| fail(e.to_string()))?;
    consumer.assign(&list).map_err(|e| fail(e.to_string()))?;
    // The header of the last record read so far: `None` before any record.
    let mut last: Option<Option<Vec<u8>>> = None;
    let start_time = Instant::now();
    while start_time.elapsed() < Duration::from_secs(30) {
        match consumer.poll(Duration::from_millis(500)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => {
                debug!(
                    topic,
                    partition, start, listed_high, "read to the end of the partition"
                );
                return Ok(last.flatten());
            }
            Some(Err(e)) => return Err(fail(e.to_string())),
            Some(Ok(m)) => {
                last = Some(m.headers().and_then(|hs| {
                    hs.iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value.map(<[u8]>::to_vec))
                }));
            }
        }
    }
    Err(fail(format!(
        "did not reach the end of the partition from offset {start} within 30s"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_order_by_sequence_then_index_and_parse_back() {
        let a = Origin { seq: 9, index: 5 };
        let b = Origin { seq: 10, index: 0 };
        assert!(a < b);
        assert_eq!(Origin::parse(a.to_string().as_bytes()), Some(a));
        assert_eq!(Origin::parse(b"x:1"), None);
        assert_eq!(Origin::parse(b"17"), None);
    }

    #[test]
    fn replicas_divide_partitions_by_remainder() {
        assert!(owns(4, 0, 2));
        assert!(owns(5, 1, 2));
        assert!(!owns(5, 0, 2));
        assert!((0..12).all(|p| owns(p, 0, 1)));
    }

    fn o(seq: u64, index: u32) -> Origin {
        Origin { seq, index }
    }

    #[tokio::test]
    async fn a_mark_admits_only_origins_above_the_highest_and_is_recorded_when_records_move_on() {
        // Marks already known are not read from Kafka.
        let mut hw = HighWater::new(&KafkaSection::default());
        let t: Arc<str> = Arc::from("t");
        hw.advance(&t, 0, o(5, 2));
        hw.advance(&t, 1, o(1, 0));
        let mut m = hw.mark(None, &t, 0).await.unwrap();
        assert!(!m.admit(o(5, 1)), "below the highest");
        assert!(!m.admit(o(5, 2)), "the highest itself");
        assert!(m.admit(o(5, 3)));
        let mut m = hw.mark(Some(m), &t, 0).await.unwrap();
        assert!(
            !m.admit(o(5, 3)),
            "the same partition keeps its raised mark"
        );
        assert_eq!(
            hw.get(&t, 0).await.unwrap(),
            Some(o(5, 2)),
            "not recorded yet"
        );
        let mut m = hw.mark(Some(m), &t, 1).await.unwrap();
        assert_eq!(
            hw.get(&t, 0).await.unwrap(),
            Some(o(5, 3)),
            "recorded on moving on"
        );
        assert!(m.admit(o(5, 4)));
        hw.record(m);
        assert_eq!(hw.get(&t, 1).await.unwrap(), Some(o(5, 4)));
    }
}
