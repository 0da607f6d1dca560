//! Self-tests of the Kafka part of the harness against a real tansu broker: topic creation,
//! idempotent acks=all production with headers, reading back with `KafkaReader`, persistence
//! of the sqlite storage across kill and restart.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tributary_tests::{JsonReading, Kafka, KafkaReader, Record};

fn reading(seq: u64) -> JsonReading {
    JsonReading {
        id: format!("dev{}:7:{seq}", seq % 3),
        device: format!("dev{}", seq % 3),
        sensor: "temp".into(),
        epoch: 7,
        seq,
        ts: "2026-11-28T01:02:03.000000001Z".into(),
        clock: tributary_wire::Clock::Synced,
        value: serde_json::json!(20.0 + seq as f64 / 10.0),
        unit: Some("°C".into()),
        tags: BTreeMap::from([("room".into(), "lab".into())]),
    }
}

async fn produce(kafka: &Kafka, topic: &str, seqs: std::ops::Range<u64>) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for seq in seqs {
        let r = reading(seq);
        let payload = serde_json::to_vec(&r).unwrap();
        let headers = OwnedHeaders::new().insert(Header {
            key: "Nats-Msg-Id",
            value: Some(r.id.as_bytes()),
        });
        producer
            .send(
                FutureRecord::to(topic)
                    .key(&r.device)
                    .payload(&payload)
                    .headers(headers),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn seqs(records: &[Record]) -> BTreeSet<u64> {
    Record::readings(records)
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_records_with_headers_are_read_back_from_every_partition() {
    let kafka = Kafka::start_memory().unwrap();
    kafka.create_topic("readings", 3).unwrap();
    produce(&kafka, "readings", 0..30).await;

    let reader = KafkaReader::new(kafka.bootstrap());
    let records = reader
        .read_until_async("readings", 30, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(records.len(), 30);
    assert_eq!(seqs(&records), (0..30).collect());
    let partitions: BTreeSet<i32> = records.iter().map(|r| r.partition).collect();
    assert!(
        partitions.len() > 1,
        "keys spread over partitions: {partitions:?}"
    );
    for record in &records {
        let r = record.reading().unwrap();
        assert_eq!(record.header_str("Nats-Msg-Id"), Some(r.id.as_str()));
        assert_eq!(record.key_str(), Some(r.device.as_str()));
        assert_eq!(r, reading(r.seq));
    }

    let all = reader
        .read_all_async("readings", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(
        all.len(),
        30,
        "read_all returns exactly what the topic holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_broker_keeps_its_topic_and_records_across_kill_and_restart() {
    let mut kafka = Kafka::start().unwrap();
    kafka.create_topic("readings", 2).unwrap();
    produce(&kafka, "readings", 0..10).await;
    let port = kafka.port();
    assert!(kafka.data_dir().join("kafka.db").exists());

    kafka.kill().unwrap();
    kafka.restart().unwrap();
    assert_eq!(kafka.port(), port);
    produce(&kafka, "readings", 10..15).await;

    let all = KafkaReader::new(kafka.bootstrap())
        .read_all_async("readings", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(all.len(), 15);
    assert_eq!(seqs(&all), (0..15).collect());
}

#[test]
fn a_reader_gives_up_with_the_count_it_got() {
    let kafka = Kafka::start_memory().unwrap();
    kafka.create_topic("empty", 1).unwrap();
    let err = KafkaReader::new(kafka.bootstrap())
        .read_until("empty", 1, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(err.contains("read 0 of 1 records"), "{err}");
}

#[test]
fn a_paused_broker_answers_nothing_until_resumed() {
    let mut kafka = Kafka::start_memory().unwrap();
    kafka.create_topic("t", 1).unwrap();
    kafka.pause().unwrap();
    let reader = KafkaReader::new(kafka.bootstrap());
    assert!(reader.read_all("t", Duration::from_secs(2)).is_err());
    kafka.resume().unwrap();
    assert!(
        reader
            .read_all("t", Duration::from_secs(20))
            .unwrap()
            .is_empty()
    );
}
