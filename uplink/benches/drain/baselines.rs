//! The baselines the uplink is measured against: a bare JetStream pull
//! consumer that only acks, and bare rdkafka producers writing the same
//! records the uplink writes (pre-encoded, so only the writing counts).

use futures::StreamExt;
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, FutureProducer, FutureRecord, Producer, ProducerContext,
    ThreadedProducer,
};
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tributary_tests::Kafka;

/// One record as the uplink writes it: key, reading id header, JSON.
pub type Record = (String, String, Vec<u8>);

/// Records handed to a producer and not yet confirmed, at most.
const IN_FLIGHT: usize = 100_000;

/// (a) Drains `messages` messages through a new durable pull consumer
/// with the uplink's settings, acking each one.
pub async fn bare_jetstream(
    js: &async_nats::jetstream::Context,
    durable: &str,
    messages: u64,
) -> Duration {
    let stream = js.get_stream("TRIBUTARY").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(durable.into()),
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
    for _ in 0..messages {
        let m = msgs.next().await.unwrap().unwrap();
        m.ack().await.unwrap();
    }
    start.elapsed()
}

/// The uplink's producer settings that matter for speed.
fn producer_config(kafka: &Kafka) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.kbytes", "262144");
    c
}

fn id_header(id: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header {
        key: tributary_wire::READING_ID_HEADER,
        value: Some(id.as_bytes()),
    })
}

/// (b) Writes `records` to a new topic with rdkafka's `FutureProducer`,
/// one delivery future per record, at most [`IN_FLIGHT`] unconfirmed.
pub async fn future_producer(kafka: &Kafka, topic: &str, records: &[Record]) -> Duration {
    kafka.create_topic(topic, crate::PARTITIONS).unwrap();
    let producer: FutureProducer = producer_config(kafka).create().unwrap();
    let start = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for (key, id, payload) in records {
        let mut rec = FutureRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(id_header(id));
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
        while pending.len() >= IN_FLIGHT {
            pending.next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(r) = pending.next().await {
        r.unwrap().unwrap();
    }
    start.elapsed()
}

/// Counts delivery reports, as the uplink's ledger does, instead of
/// completing one future per record.
#[derive(Default)]
struct Counting {
    confirmed: AtomicU64,
    failed: AtomicU64,
}

impl rdkafka::ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => self.confirmed.fetch_add(1, Relaxed),
            Err(_) => self.failed.fetch_add(1, Relaxed),
        };
    }
}

/// (b') Writes `records` to a new topic with a `ThreadedProducer` whose
/// delivery callback only counts: the cheapest way rdkafka offers.
pub async fn counting_producer(kafka: &Kafka, topic: &str, records: &[Record]) -> Duration {
    kafka.create_topic(topic, crate::PARTITIONS).unwrap();
    let producer: ThreadedProducer<Counting> = producer_config(kafka)
        .create_with_context(Counting::default())
        .unwrap();
    let counts = producer.context().clone();
    let answered = || counts.confirmed.load(Relaxed) + counts.failed.load(Relaxed);
    let start = Instant::now();
    for (sent, (key, id, payload)) in records.iter().enumerate() {
        while sent as u64 - answered() >= IN_FLIGHT as u64 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut rec = BaseRecord::to(topic)
            .key(key)
            .payload(payload)
            .headers(id_header(id));
        while let Err((_, back)) = producer.send(rec) {
            rec = back;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    while answered() < records.len() as u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(counts.failed.load(Relaxed), 0, "Kafka refused records");
    start.elapsed()
}
