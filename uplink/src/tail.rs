//! `tributary-uplink tail`: prints readings from a Kafka topic, one line
//! each, optionally filtered by device or sensor and following new ones.
//!
//! It `assign`s every partition explicitly and never joins a consumer
//! group, so it commits nothing and disturbs no one.
//!
//! Two formats ([`TailFormat`]):
//!
//! ```text
//! 2026-11-28T01:02:03.123Z demo-pi/greenhouse_temp seq=42 21.5 °C {room=greenhouse} age=12.3ms
//! {"id":"demo-pi:1:42","device":"demo-pi",…}
//! ```
//!
//! the human line (with `clock=unsynced`/`clock=unknown` when the reading's
//! time is not known good, and with `--age` its age on arrival: this
//! machine's time minus the reading's `ts`), or the record exactly as stored
//! in Kafka, one per line, for `jq`. With `--age` or `--summary`, the ages
//! are summarized when it stops ([`latency::Latency::summary`]: count, p50,
//! p90, p99, max).
//!
//! Only a record that reaches Kafka while `tail` watches *arrives*: one
//! that was already there (the last 10 it starts with, or everything with
//! `--from-beginning`) is as old as `tail`'s start makes it, not as the
//! pipeline does. Every record read before `tail` first reaches its
//! partition's end counts as already there (the end a fetch reports, not
//! the high watermark, which tansu 0.6.0 answers short of its last batch):
//! its line says `stored` instead of an age and it stays out of the summary
//! ([`TailReport::stored`] counts it).
//!
//! A partition's end is normal, not an error: it ends the run without
//! `--follow` and is otherwise silent. librdkafka's own log lines and error
//! callbacks go to `tracing` through [`TailContext`], at levels that fit a
//! reader: partition ends at trace, broker connection failures (which
//! `tail` reports itself) at debug. When no broker answers within
//! [`TailOptions::connect_timeout`], `tail` fails with one
//! [`TailError::Unreachable`] instead of a stream of errors; a broker lost
//! while following is waited for, with one warning.

pub mod latency;

use latency::{Latency, human_signed_ns};
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tributary_wire::Clock;
use tributary_wire::json::{JsonReading, parse_rfc3339};

/// How readings are printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TailFormat {
    /// One line per reading for people ([`format_reading`]).
    #[default]
    Human,
    /// Each reading's record exactly as stored in Kafka, one per line
    /// (records that are not readings are left out).
    Json,
}

/// What to show.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Bootstrap servers.
    pub brokers: String,
    /// The topic.
    pub topic: String,
    /// Only this device.
    pub device: Option<String>,
    /// Only this sensor.
    pub sensor: Option<String>,
    /// Start at the beginning of each partition; otherwise at the last
    /// `limit` (default 10) records of each.
    pub from_beginning: bool,
    /// Keep waiting for new records instead of stopping at the end.
    pub follow: bool,
    /// Stop after this many lines.
    pub limit: Option<usize>,
    /// Extra librdkafka properties (security settings).
    pub properties: Vec<(String, String)>,
    /// How to print.
    pub format: TailFormat,
    /// Append each reading's age on arrival to its human line.
    pub age: bool,
    /// How long to wait for a broker to answer (at the start, and without
    /// `follow` also later) before giving up with
    /// [`TailError::Unreachable`].
    pub connect_timeout: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            brokers: "127.0.0.1:9092".into(),
            topic: "tributary.readings".into(),
            device: None,
            sensor: None,
            from_beginning: false,
            follow: false,
            limit: None,
            properties: Vec::new(),
            format: TailFormat::Human,
            age: false,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// What a run of `tail` saw; filled while it runs, so it is complete even
/// when the run ends with an error.
#[derive(Debug, Default)]
pub struct TailReport {
    /// Lines printed.
    pub printed: usize,
    /// Records that were not readings (left out of the JSON format).
    pub not_readings: usize,
    /// Ages on arrival of the readings printed that arrived while it ran.
    pub latency: Latency,
    /// Readings printed that were already in Kafka when it started: shown
    /// as `stored`, without an age, and not in `latency`.
    pub stored: usize,
}

/// Why `tail` failed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The Kafka client failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// No broker answered in time.
    #[error("no Kafka broker answered within {0:?}")]
    Unreachable(Duration),
    /// The topic does not exist.
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    /// Writing the output failed (such as a closed pipe).
    #[error("cannot write: {0}")]
    Io(#[from] std::io::Error),
}

/// Routes librdkafka's logs and error callbacks to `tracing` at levels
/// that fit `tail` (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct TailContext;

impl ClientContext for TailContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            // Connection failures: `tail` says it once itself.
            _ if fac == "FAIL" => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
                tracing::error!(facility = fac, "librdkafka: {log_message}")
            }
            RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning => {
                tracing::warn!(facility = fac, "librdkafka: {log_message}")
            }
            _ => tracing::debug!(facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::PartitionEOF) => {
                tracing::trace!(reason, "end of a partition")
            }
            Some(code) if transient(code) => {
                tracing::debug!(error = %error, reason, "Kafka broker connection")
            }
            _ => tracing::warn!(error = %error, reason, "Kafka client error"),
        }
    }
}

impl ConsumerContext for TailContext {}

/// Errors that mean "the broker is not reachable (yet)".
fn transient(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::BrokerTransportFailure
            | RDKafkaErrorCode::AllBrokersDown
            | RDKafkaErrorCode::NetworkException
            | RDKafkaErrorCode::RequestTimedOut
            | RDKafkaErrorCode::OperationTimedOut
            | RDKafkaErrorCode::Resolve
    )
}

/// One reading as a line: `ts device/sensor seq=N value unit {tags}`, then
/// `clock=…` when the clock was not synchronized.
pub fn format_reading(r: &JsonReading) -> String {
    let ts = match r.ts.split_once('.') {
        Some((secs, frac)) => {
            let digits: String = frac
                .chars()
                .take_while(char::is_ascii_digit)
                .take(3)
                .collect();
            format!("{secs}.{digits:0<3}Z")
        }
        None => r.ts.clone(),
    };
    let value = match &r.value {
        serde_json::Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    };
    let mut line = format!("{ts} {}/{} seq={} {value}", r.device, r.sensor, r.seq);
    if let Some(u) = &r.unit {
        line.push(' ');
        line.push_str(u);
    }
    if !r.tags.is_empty() {
        let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        line.push_str(&format!(" {{{}}}", tags.join(",")));
    }
    if r.clock != Clock::Synced {
        line.push_str(" clock=");
        line.push_str(r.clock.as_str());
    }
    line
}

/// A reading's age at `now`, in nanoseconds; `None` when its `ts` does not
/// parse.
pub fn age_ns(r: &JsonReading, now: SystemTime) -> Option<i128> {
    let ts = parse_rfc3339(&r.ts)?;
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i128::try_from(d.as_nanos()).ok()?,
        Err(e) => -i128::try_from(e.duration().as_nanos()).ok()?,
    };
    Some(now - i128::from(ts))
}

/// Where a record was found and whether it was already stored when `tail`
/// started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    partition: i32,
    offset: i64,
    /// Read before `tail` first reached its partition's end: not an arrival.
    stored: bool,
}

/// The line printed for one record, or `None` when it is filtered out.
/// Ages of printed readings that arrived go into `report`.
fn line_for(
    opts: &TailOptions,
    payload: &[u8],
    place: Place,
    arrived: SystemTime,
    report: &mut TailReport,
) -> Option<Vec<u8>> {
    let filtered = opts.device.is_some() || opts.sensor.is_some();
    let Ok(r) = serde_json::from_slice::<JsonReading>(payload) else {
        report.not_readings += 1;
        return match opts.format {
            TailFormat::Json => None,
            TailFormat::Human if filtered => None,
            TailFormat::Human => Some(
                format!(
                    "{}/{}@{} {} bytes (not a reading)",
                    opts.topic,
                    place.partition,
                    place.offset,
                    payload.len()
                )
                .into_bytes(),
            ),
        };
    };
    if opts.device.as_ref().is_some_and(|d| *d != r.device)
        || opts.sensor.as_ref().is_some_and(|s| *s != r.sensor)
    {
        return None;
    }
    let age = if place.stored {
        report.stored += 1;
        None
    } else {
        let age = age_ns(&r, arrived);
        if let Some(age) = age {
            report.latency.record_ns(age);
        }
        Some(age)
    };
    Some(match opts.format {
        TailFormat::Json => payload.to_vec(),
        TailFormat::Human => {
            let mut line = format_reading(&r);
            if opts.age {
                match age {
                    None => line.push_str(" stored"),
                    Some(age) => {
                        line.push_str(" age=");
                        line.push_str(&age.map_or_else(|| "?".to_owned(), human_signed_ns));
                    }
                }
            }
            line.into_bytes()
        }
    })
}

/// The partitions of the topic, or why there are none.
fn partitions(
    consumer: &BaseConsumer<TailContext>,
    opts: &TailOptions,
) -> Result<Vec<i32>, TailError> {
    let md = match consumer.fetch_metadata(Some(&opts.topic), opts.connect_timeout) {
        Ok(md) => md,
        Err(KafkaError::MetadataFetch(code)) if transient(code) => {
            return Err(TailError::Unreachable(opts.connect_timeout));
        }
        Err(e) => return Err(e.into()),
    };
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == opts.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(TailError::NoTopic(opts.topic.clone()));
    }
    Ok(partitions)
}

/// Prints readings until the end (or forever with `follow`), the limit, or
/// `stop`, counting what it printed into `report`.
pub fn tail(
    opts: &TailOptions,
    stop: &AtomicBool,
    out: &mut dyn Write,
    report: &mut TailReport,
) -> Result<(), TailError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.brokers)
        .set("group.id", "tributary-uplink-tail")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A partition's end is where a fetch says it is: tansu 0.6.0's
        // memory storage answers ListOffsets(latest) with the base offset
        // of its last batch plus one, short of the batch's other records.
        .set("enable.partition.eof", "true")
        // A reading's age on arrival should be the pipeline's, not the
        // tail's: fetch again soon instead of librdkafka's 500 ms wait
        // (a broker that holds an empty fetch that long adds up to it).
        .set("fetch.wait.max.ms", "10")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in &opts.properties {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer<TailContext> = cfg.create_with_context(TailContext)?;
    let partitions = partitions(&consumer, opts)?;
    let back = i64::try_from(opts.limit.unwrap_or(10)).unwrap_or(i64::MAX);
    let mut list = TopicPartitionList::new();
    // Partitions not read to their end yet: what they hold was stored before
    // the run, and without `follow` their ends are the end of the run.
    let mut ends = HashSet::new();
    for p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(&opts.topic, *p, opts.connect_timeout)
            .map_err(|e| match e.rdkafka_error_code() {
                Some(code) if transient(code) => TailError::Unreachable(opts.connect_timeout),
                _ => e.into(),
            })?;
        let start = if opts.from_beginning {
            low
        } else {
            (high - back).max(low)
        };
        list.add_partition_offset(&opts.topic, *p, Offset::Offset(start))?;
        if high > start {
            ends.insert(*p);
        }
    }
    consumer.assign(&list)?;
    let limit = opts.limit.unwrap_or(usize::MAX);
    let mut idle_since = Instant::now();
    // Since when the broker is unreachable, while it is.
    let mut lost: Option<Instant> = None;
    while report.printed < limit && !stop.load(Ordering::Relaxed) {
        if !opts.follow && ends.is_empty() {
            break;
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            if !opts.follow && idle_since.elapsed() > opts.connect_timeout {
                if lost.is_some() {
                    return Err(TailError::Unreachable(opts.connect_timeout));
                }
                break;
            }
            continue;
        };
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                idle_since = Instant::now();
                ends.remove(&p);
                continue;
            }
            Err(e) if e.rdkafka_error_code().is_some_and(transient) => {
                if lost.is_none() {
                    tracing::warn!(brokers = %opts.brokers, "lost the Kafka broker; waiting for it");
                    lost = Some(Instant::now());
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let arrived = SystemTime::now();
        idle_since = Instant::now();
        if let Some(since) = lost.take() {
            tracing::info!(after = ?since.elapsed(), "the Kafka broker is back");
        }
        let payload = m.payload().unwrap_or_default();
        let place = Place {
            partition: m.partition(),
            offset: m.offset(),
            stored: ends.contains(&m.partition()),
        };
        if let Some(line) = line_for(opts, payload, place, arrived, report) {
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            out.flush()?;
            report.printed += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
