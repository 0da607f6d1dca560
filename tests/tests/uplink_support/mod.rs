//! Shared pieces of the uplink's end-to-end tests: a config writer, an
//! uplink process, an envelope publisher and a tiny HTTP getter.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tributary_tests::{Kafka, NatsServer, ProcessSpec, Record, ServerProcess, bins, free_port};
use tributary_wire::{Envelope, NATS_MSG_ID_HEADER, Sample, Value};

/// A running `tributary-uplink run` process with its config file.
#[derive(Debug)]
pub struct Uplink {
    pub process: ServerProcess,
    pub config: PathBuf,
    pub http_port: u16,
}

/// The TOML of an uplink for `hub` and `kafka`, with `extra` appended
/// (tables the test needs) and an HTTP port.
pub fn config_text(
    hub: &NatsServer,
    kafka: &Kafka,
    http_port: u16,
    kafka_extra: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[nats]
urls = ["{hub}"]

[stream]
name = "TRIBUTARY"
subjects = ["tributary.>"]

[consumer]
durable = "uplink"
ack_wait = "5s"
nak_delay = "500ms"
max_ack_pending = 256

[kafka]
brokers = "{kafka}"
topic = "readings"
dead_letter_topic = "dead"
create_topics = true
partitions = 3
linger = "2ms"
delivery_timeout = "5s"
{kafka_extra}

[http]
listen = "127.0.0.1:{http_port}"
unhealthy_after = "2s"

{extra}
"#,
        hub = hub.client_url(),
        kafka = kafka.bootstrap(),
    )
}

impl Uplink {
    /// Starts an uplink with `toml` as its configuration and waits until its
    /// health endpoint answers 200.
    pub fn start(name: &str, toml: &str, http_port: u16) -> Uplink {
        let dir = tempfile::Builder::new()
            .prefix("tributary-uplink-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("uplink.toml");
        std::fs::write(&config, toml).expect("writing the config");
        let spec = ProcessSpec::new(name, bins::uplink().expect("the uplink binary"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,tributary_uplink=debug");
        let mut process = ServerProcess::start(spec, dir).expect("starting the uplink");
        process
            .wait_until(Duration::from_secs(60), || {
                match http_get(http_port, "/health") {
                    Ok((200, _)) => Ok(true),
                    Ok((code, body)) => Err(format!("health {code}: {body}")),
                    Err(e) => Err(e.to_string()),
                }
            })
            .expect("the uplink became healthy");
        Uplink {
            process,
            config,
            http_port,
        }
    }

    /// Restarts the process (SIGKILLing it first if it runs) and waits for
    /// it to listen again.
    pub fn restart(&mut self) {
        self.process.respawn().expect("respawning the uplink");
        let port = self.http_port;
        self.process
            .wait_until(Duration::from_secs(60), || {
                Ok(http_get(port, "/metrics").is_ok_and(|(c, _)| c == 200))
            })
            .expect("the uplink came back");
    }

    /// The value of metric `name` (first sample line starting with it).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = http_get(self.http_port, "/metrics").ok()?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// GET `path` on 127.0.0.1:`port`: (status, body) (the harness's).
pub use tributary_tests::prometheus::http_get;

/// An envelope of `count` float readings of `device`/`sensor`, sequence
/// numbers starting at `first`.
pub fn envelope(device: &str, sensor: &str, first: u64, count: u64) -> Envelope {
    Envelope {
        device: device.into(),
        epoch: 1_764_000_000,
        sensor: sensor.into(),
        unit: Some("°C".into()),
        tags: vec![("room".into(), "lab".into())],
        clock: tributary_wire::Clock::Synced,
        samples: (first..first + count)
            .map(|seq| Sample {
                seq,
                timestamp_ns: 1_795_827_723_000_000_000 + seq as i64,
                value: Value::Float(seq as f64 / 10.0),
            })
            .collect(),
    }
}

/// Publishes `env` to the hub's stream as the agent does (subject
/// `tributary.<device>.<sensor>`, `Nats-Msg-Id`) and waits for the ack.
pub async fn publish(js: &async_nats::jetstream::Context, env: &Envelope) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(NATS_MSG_ID_HEADER, env.msg_id().as_str());
    js.publish_with_headers(
        env.subject("tributary"),
        headers,
        env.encode().unwrap().into(),
    )
    .await
    .expect("publish")
    .await
    .expect("the hub's ack");
}

/// How many times each reading id occurs among `records`.
pub fn id_counts(records: &[Record]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in records {
        let id = r
            .header_str(tributary_wire::READING_ID_HEADER)
            .expect("every reading record has its id header")
            .to_owned();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Reads `topic` again and again until it holds `want` distinct reading
/// ids or `timeout` passes, and returns how often each id occurs. For
/// at-least-once runs, where resends may duplicate records, so that a
/// record count says nothing about which readings arrived.
pub async fn distinct_readings(
    reader: &tributary_tests::KafkaReader,
    topic: &str,
    want: usize,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let start = Instant::now();
    let mut counts = BTreeMap::new();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            eprintln!("{topic}: {} of {want} distinct readings", counts.len());
            return counts;
        }
        match reader.read_all_async(topic, left).await {
            Ok(records) => counts = id_counts(&records),
            Err(e) => eprintln!("reading {topic} failed, trying again: {e}"),
        }
        if counts.len() >= want {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls `f` until it is true or `timeout` passes.
pub async fn eventually(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A free port for an uplink's HTTP endpoint.
pub fn http_port() -> u16 {
    free_port()
}
