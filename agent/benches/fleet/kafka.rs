//! The fleet's end: a Kafka reader on a thread of its own (`kafka-reader`,
//! its CPU and librdkafka's `rdk:` threads are left out of the agents'
//! share) that notes, for every record, its arrival (sensor → Kafka
//! latency from the reading's `ts`) and which reading it is (device and
//! counter value), so the end can tell every reading arrived, and how
//! many arrived more than once.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tributary_tests::Kafka;
use tributary_tests::bench::now_ns;
use tributary_wire::json::{JsonReading, parse_rfc3339};

/// The name of the reader's thread.
pub const THREAD: &str = "kafka-reader";

#[derive(Default)]
struct Tally {
    /// Per device, how often each counter value arrived.
    seen: HashMap<String, Vec<u32>>,
    /// Sensor → Kafka latencies (µs) since the last [`Reader::take_latencies`].
    latencies: Vec<u64>,
    /// Records that were no reading of the fleet.
    foreign: u64,
}

/// What arrived, against what was taken.
#[derive(Debug, Clone, Copy, Default)]
pub struct Accounting {
    /// Readings taken that never arrived.
    pub missing: u64,
    /// Arrivals beyond the first of a reading.
    pub duplicates: u64,
    /// Records that were not readings of the fleet (should be 0).
    pub foreign: u64,
}

/// Reads `topic` from the beginning until dropped.
pub struct Reader {
    tally: Arc<Mutex<Tally>>,
    records: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    /// Assigns every partition of `topic` from the beginning and starts reading.
    pub fn start(kafka: &Kafka, topic: &str, partitions: i32) -> anyhow::Result<Self> {
        let consumer: BaseConsumer = kafka
            .client_config()
            .set("group.id", "fleet-bench")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "5")
            .set("fetch.min.bytes", "1")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        let tally = Arc::new(Mutex::new(Tally::default()));
        let records = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (tally, records, stop) = (tally.clone(), records.clone(), stop.clone());
            std::thread::Builder::new()
                .name(THREAD.into())
                .spawn(move || read(&consumer, &tally, &records, &stop))?
        };
        Ok(Reader {
            tally,
            records,
            stop,
            thread: Some(thread),
        })
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records.load(Relaxed)
    }

    /// The latencies (µs) of the records that arrived since the last call.
    pub fn take_latencies(&self) -> Vec<u64> {
        std::mem::take(&mut self.tally.lock().expect("tally").latencies)
    }

    /// Readings `0..taken[device]` of each device against what arrived.
    pub fn account(&self, taken: &[(String, i64)]) -> Accounting {
        let tally = self.tally.lock().expect("tally");
        let mut out = Accounting {
            foreign: tally.foreign,
            ..Accounting::default()
        };
        for (device, n) in taken {
            let counts = tally.seen.get(device).map_or(&[][..], Vec::as_slice);
            let n = usize::try_from(*n).unwrap_or(0);
            for v in 0..n.max(counts.len()) {
                match counts.get(v).copied().unwrap_or(0) {
                    0 if v < n => out.missing += 1,
                    0 => {}
                    c => out.duplicates += u64::from(c - 1),
                }
            }
        }
        out
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read(consumer: &BaseConsumer, tally: &Mutex<Tally>, records: &AtomicU64, stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let arrived = i64::try_from(now_ns()).unwrap_or(i64::MAX);
        let reading = msg
            .payload()
            .and_then(|p| serde_json::from_slice::<JsonReading>(p).ok());
        let mut t = tally.lock().expect("tally");
        match reading.as_ref().and_then(|r| Some((r, r.value.as_i64()?))) {
            Some((r, v)) => {
                let counts = t.seen.entry(r.device.clone()).or_default();
                let v = usize::try_from(v).unwrap_or(0);
                if counts.len() <= v {
                    counts.resize(v + 1, 0);
                }
                counts[v] += 1;
                if let Some(ts) = parse_rfc3339(&r.ts) {
                    t.latencies
                        .push(u64::try_from((arrived - ts) / 1_000).unwrap_or(0));
                }
            }
            None => t.foreign += 1,
        }
        drop(t);
        records.fetch_add(1, Relaxed);
    }
}
