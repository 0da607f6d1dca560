//! `tributary-uplink tail`: prints readings from a Kafka topic, one line
//! each, optionally filtered by device or sensor and following new ones.
//!
//! It `assign`s every partition explicitly and never joins a consumer
//! group, so it commits nothing and disturbs no one.
//!
//! ```text
//! 2026-11-28T01:02:03.123Z demo-pi/greenhouse_temp seq=42 21.5 °C {room=greenhouse}
//! ```

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tributary_wire::json::JsonReading;

/// What to show.
#[derive(Debug, Clone, Default)]
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
}

/// Why `tail` failed.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// The Kafka client failed.
    #[error("Kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The topic does not exist.
    #[error("topic {0:?} does not exist")]
    NoTopic(String),
    /// Writing the output failed (such as a closed pipe).
    #[error("cannot write: {0}")]
    Io(#[from] std::io::Error),
}

/// One reading as a line: `ts device/sensor seq=N value unit {tags}`.
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
    line
}

/// Prints readings until the end (or forever with `follow`), the limit, or
/// `stop`. Returns how many lines were printed.
pub fn tail(
    opts: &TailOptions,
    stop: &AtomicBool,
    out: &mut dyn Write,
) -> Result<usize, TailError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", &opts.brokers)
        .set("group.id", "tributary-uplink-tail")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A partition's end is where a fetch says it is: tansu 0.6.0's
        // memory storage answers ListOffsets(latest) with the base offset
        // of its last batch plus one, short of the batch's other records.
        .set("enable.partition.eof", "true")
        .set_log_level(RDKafkaLogLevel::Error);
    for (k, v) in &opts.properties {
        cfg.set(k, v);
    }
    let consumer: BaseConsumer = cfg.create()?;
    let md = consumer.fetch_metadata(Some(&opts.topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .filter(|t| t.name() == opts.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(TailError::NoTopic(opts.topic.clone()));
    }
    let back = i64::try_from(opts.limit.unwrap_or(10)).unwrap_or(i64::MAX);
    let mut list = TopicPartitionList::new();
    // Partitions not read to their end yet (without `follow`, the end of the run).
    let mut ends = HashSet::new();
    for p in &partitions {
        let (low, high) = consumer.fetch_watermarks(&opts.topic, *p, Duration::from_secs(10))?;
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
    let mut printed = 0;
    let limit = opts.limit.unwrap_or(usize::MAX);
    let mut idle_since = Instant::now();
    while printed < limit && !stop.load(Ordering::Relaxed) {
        if !opts.follow && ends.is_empty() {
            break;
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            if !opts.follow && idle_since.elapsed() > Duration::from_secs(10) {
                break;
            }
            continue;
        };
        idle_since = Instant::now();
        let m = match m {
            Ok(m) => m,
            Err(KafkaError::PartitionEOF(p)) => {
                ends.remove(&p);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let payload = m.payload().unwrap_or_default();
        let line = match serde_json::from_slice::<JsonReading>(payload) {
            Ok(r) => {
                if opts.device.as_ref().is_some_and(|d| *d != r.device)
                    || opts.sensor.as_ref().is_some_and(|s| *s != r.sensor)
                {
                    continue;
                }
                format_reading(&r)
            }
            Err(_) if opts.device.is_some() || opts.sensor.is_some() => continue,
            Err(_) => format!(
                "{}/{}@{} {} bytes (not a reading)",
                opts.topic,
                m.partition(),
                m.offset(),
                payload.len()
            ),
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_reading_prints_as_one_line_with_millisecond_time_unit_and_tags() {
        let r = JsonReading {
            id: "demo-pi:1:42".into(),
            device: "demo-pi".into(),
            sensor: "greenhouse_temp".into(),
            epoch: 1,
            seq: 42,
            ts: "2026-11-28T01:02:03.123456789Z".into(),
            value: serde_json::json!(21.5),
            unit: Some("°C".into()),
            tags: BTreeMap::from([("room".into(), "greenhouse".into())]),
        };
        assert_eq!(
            format_reading(&r),
            "2026-11-28T01:02:03.123Z demo-pi/greenhouse_temp seq=42 21.5 °C {room=greenhouse}"
        );
        let r = JsonReading {
            ts: "2026-11-28T01:02:03.5Z".into(),
            value: serde_json::json!("ON"),
            unit: None,
            tags: BTreeMap::new(),
            ..r
        };
        assert_eq!(
            format_reading(&r),
            "2026-11-28T01:02:03.500Z demo-pi/greenhouse_temp seq=42 \"ON\""
        );
    }
}
