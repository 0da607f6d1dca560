//! Exactly-once mode: the uplink is SIGKILLed at random moments, many
//! times, while readings flow; afterwards Kafka holds every reading exactly
//! once.

#[path = "uplink_support/mod.rs"]
mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{Uplink, config_text, envelope, eventually, http_port, id_counts, publish};
use tributary_tests::{Kafka, KafkaReader, NatsServer};

const WAIT: Duration = Duration::from_secs(180);

/// A small xorshift generator seeded from the clock (the seed is printed,
/// so a failing run can be told apart).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_sigkills_leave_every_reading_in_kafka_exactly_once() {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let toml = config_text(&hub, &kafka, port, "", "[exactly_once]\nenabled = true\n");
    let mut uplink = Uplink::start("uplink", &toml, port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    let (messages, per_message, devices) = (600u64, 5u64, 6u64);
    let publisher = tokio::spawn(async move {
        for i in 0..messages {
            let device = format!("pi-{}", i % devices);
            let first = (i / devices) * per_message + 1;
            publish(&js, &envelope(&device, "temp", first, per_message)).await;
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    });

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut rng = Rng(seed);
    let kills = 8;
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        uplink.process.kill().unwrap();
        tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        uplink.restart();
    }
    publisher.await.unwrap();

    let total = (messages * per_message) as usize;
    let reader = KafkaReader::new(kafka.bootstrap());
    reader
        .read_until_async("readings", total, WAIT)
        .await
        .unwrap();
    // Let the uplink go quiet, then take everything the topic holds.
    eventually(WAIT, "the uplink acked everything", || {
        uplink.metric("tributary_uplink_in_flight") == Some(0.0)
            && uplink.metric("tributary_uplink_jetstream_pending") == Some(0.0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let records = reader.read_all_async("readings", WAIT).await.unwrap();
    let counts = id_counts(&records);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "{} duplicated readings, e.g. {:?}",
        dups.len(),
        &dups[..dups.len().min(5)]
    );
    assert_eq!(counts.len(), total, "readings missing");
    assert_eq!(records.len(), total);
    for r in &records {
        assert!(
            r.header_str("tributary-origin").is_some(),
            "a record without origin"
        );
    }
}
