//! Drain benchmark (`cargo bench -p tributary-uplink --bench drain`).
//!
//! Pre-loads `TRIBUTARY_BENCH_READINGS` readings (default 1,000,000; 10 per
//! message, 100 devices) into a real hub's JetStream stream (file storage),
//! then measures against the same servers, with a Kafka broker on tansu's
//! memory storage:
//!
//! - (a) a bare JetStream pull consumer that only acks;
//! - (b) a bare rdkafka producer (idempotent, acks=all, lz4, same linger)
//!   writing the same JSON records, pre-encoded;
//! - the uplink, at-least-once, then exactly-once, each draining the whole
//!   stream through its own durable consumer into its own topic;
//!
//! and prints readings/s and the ratio to min(a, b).

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_tests::{Kafka, NatsServer};
use tributary_uplink::health::Health;
use tributary_uplink::metrics::Metrics;
use tributary_wire::{Envelope, NATS_MSG_ID_HEADER, Sample, Value};

const PER_MESSAGE: u64 = 10;
const DEVICES: u64 = 100;
const PARTITIONS: i32 = 6;

fn envelope(i: u64) -> Envelope {
    let device = format!("pi-{:03}", i % DEVICES);
    let first = (i / DEVICES) * PER_MESSAGE + 1;
    Envelope {
        device,
        epoch: 1_764_000_000,
        sensor: "temp".into(),
        unit: Some("°C".into()),
        tags: vec![("room".into(), "lab".into())],
        samples: (first..first + PER_MESSAGE)
            .map(|seq| Sample {
                seq,
                timestamp_ns: 1_795_827_723_000_000_000 + seq as i64 * 1_000_000,
                value: Value::Float(20.0 + (seq % 50) as f64 / 10.0),
            })
            .collect(),
    }
}

fn config(
    hub: &NatsServer,
    kafka: &Kafka,
    durable: &str,
    topic: &str,
    eo: bool,
) -> tributary_config::UplinkConfig {
    let text = format!(
        r#"
[nats]
urls = ["{}"]
[stream]
subjects = ["tributary.>"]
[consumer]
durable = "{durable}"
max_ack_pending = 8192
pull_batch = 1024
[kafka]
brokers = "{}"
topic = "{topic}"
dead_letter_topic = "bench-dead"
create_topics = true
partitions = {PARTITIONS}
linger = "5ms"
[exactly_once]
enabled = {eo}
"#,
        hub.client_url(),
        kafka.bootstrap()
    );
    tributary_config::parse(&text, "bench.toml".as_ref()).expect("bench config")
}

async fn preload(js: &async_nats::jetstream::Context, messages: u64) {
    let mut acks = futures::stream::FuturesUnordered::new();
    for i in 0..messages {
        let env = envelope(i);
        let mut h = async_nats::HeaderMap::new();
        h.insert(NATS_MSG_ID_HEADER, env.msg_id().as_str());
        acks.push(
            js.publish_with_headers(env.subject("tributary"), h, env.encode().unwrap().into())
                .await
                .expect("publish")
                .into_future(),
        );
        while acks.len() >= 4096 {
            acks.next().await.unwrap().expect("hub ack");
        }
    }
    while let Some(a) = acks.next().await {
        a.expect("hub ack");
    }
}

async fn bare_jetstream(js: &async_nats::jetstream::Context, messages: u64) -> Duration {
    let stream = js.get_stream("TRIBUTARY").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("bench-bare".into()),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 8192,
            ..Default::default()
        })
        .await
        .unwrap();
    let start = Instant::now();
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(1024)
        .messages()
        .await
        .unwrap();
    let mut n = 0;
    while n < messages {
        let m = msgs.next().await.unwrap().unwrap();
        m.ack().await.unwrap();
        n += 1;
    }
    start.elapsed()
}

async fn bare_producer(kafka: &Kafka, messages: u64) -> Duration {
    kafka.create_topic("bench-bare", PARTITIONS).unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.kbytes", "262144")
        .create()
        .unwrap();
    let mut records = Vec::with_capacity((messages * PER_MESSAGE) as usize);
    for i in 0..messages {
        let env = envelope(i);
        for r in env.readings() {
            records.push((r.device.to_owned(), r.id().to_string(), r.to_json()));
        }
    }
    let start = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for (key, id, payload) in &records {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: tributary_wire::READING_ID_HEADER,
            value: Some(id.as_bytes()),
        });
        let mut rec = FutureRecord::to("bench-bare")
            .key(key)
            .payload(payload)
            .headers(headers);
        loop {
            match producer.send_result(rec) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((_, back)) => {
                    rec = back;
                    pending.next().await;
                }
            }
        }
        while pending.len() >= 100_000 {
            pending.next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(r) = pending.next().await {
        r.unwrap().unwrap();
    }
    start.elapsed()
}

async fn uplink(hub: &NatsServer, kafka: &Kafka, messages: u64, eo: bool) -> Duration {
    let (durable, topic) = if eo {
        ("bench-eo", "bench-eo")
    } else {
        ("bench-alo", "bench-alo")
    };
    let config = config(hub, kafka, durable, topic, eo);
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tributary_uplink::run_with(
        config,
        shutdown.clone(),
        metrics.clone(),
        health.clone(),
    ));
    while !health.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    while metrics.acked.load(Relaxed) < messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!task.is_finished(), "the uplink stopped early");
    }
    let took = start.elapsed();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(metrics.produced.load(Relaxed), messages * PER_MESSAGE);
    took
}

fn rate(readings: u64, d: Duration) -> f64 {
    readings as f64 / d.as_secs_f64()
}

fn main() {
    let readings: u64 = std::env::var("TRIBUTARY_BENCH_READINGS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(1_000_000);
    let messages = readings / PER_MESSAGE;
    let readings = messages * PER_MESSAGE;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = NatsServer::hub().expect("hub nats-server");
        let kafka = Kafka::start_memory().expect("tansu broker (memory storage)");
        let client = hub.connect().await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "TRIBUTARY".into(),
            subjects: vec!["tributary.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
        let t = Instant::now();
        preload(&js, messages).await;
        println!(
            "pre-loaded {readings} readings in {messages} messages ({PER_MESSAGE} per message, {DEVICES} devices) in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let a = rate(readings, bare_jetstream(&js, messages).await);
        println!("(a) bare JetStream pull consumer, ack only:  {a:>10.0} readings/s");
        let b = rate(readings, bare_producer(&kafka, messages).await);
        println!("(b) bare rdkafka producer, same records:     {b:>10.0} readings/s");
        let floor = a.min(b);
        let alo = rate(readings, uplink(&hub, &kafka, messages, false).await);
        println!(
            "uplink, at-least-once:                       {alo:>10.0} readings/s  ({:.2} of min(a, b); goal 0.8)",
            alo / floor
        );
        let eo = rate(readings, uplink(&hub, &kafka, messages, true).await);
        println!(
            "uplink, exactly-once:                        {eo:>10.0} readings/s  ({:.2} of min(a, b); goal 0.7)",
            eo / floor
        );
    });
}
