//! Kafka goes away mid-flow: the uplink stops pulling, reports the outage
//! in `/health` and `/metrics`, and when Kafka returns it resumes by itself
//! with every reading delivered, and librdkafka's reports of the broker it
//! cannot reach are rate-limited in the log.

#[path = "uplink_support/mod.rs"]
mod support;

use std::time::Duration;
use support::{
    Uplink, config_text, distinct_readings, envelope, eventually, http_get, http_port, publish,
};
use tributary_tests::{Kafka, KafkaReader, NatsServer};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reading_is_lost_when_kafka_is_killed_and_restarted_mid_flow() {
    let hub = NatsServer::hub().unwrap();
    let mut kafka = Kafka::start().unwrap(); // sqlite: records survive the restart
    let port = http_port();
    let uplink = Uplink::start("uplink", &config_text(&hub, &kafka, port, "", ""), port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    let (devices, batches, per_batch) = (4u64, 30u64, 5u64);
    let mut published = 0;
    for b in 0..batches {
        for d in 0..devices {
            publish(
                &js,
                &envelope(&format!("pi-{d}"), "temp", b * per_batch + 1, per_batch),
            )
            .await;
            published += per_batch;
        }
        if b == batches / 3 {
            kafka.kill().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kafka has been down for a while now: health says so.
    eventually(WAIT, "health reports the Kafka outage", || {
        http_get(port, "/health")
            .is_ok_and(|(code, body)| code == 503 && body.contains("kafka: down"))
    })
    .await;
    assert!(
        uplink
            .metric("tributary_uplink_kafka_down_seconds")
            .unwrap()
            > 0.0
    );
    kafka.restart().unwrap();
    eventually(WAIT, "health recovers", || {
        http_get(port, "/health").is_ok_and(|(code, _)| code == 200)
    })
    .await;

    // At-least-once: resends after the outage may duplicate records, so
    // wait for every distinct reading rather than for a record count.
    let reader = KafkaReader::new(kafka.bootstrap());
    let counts = distinct_readings(&reader, "readings", published as usize, WAIT).await;
    assert_eq!(counts.len() as u64, published, "some readings are missing");
    for d in 0..devices {
        for seq in 1..=batches * per_batch {
            let id = format!("pi-{d}:1764000000:{seq}");
            assert!(counts.contains_key(&id), "{id} is missing");
        }
    }
    eventually(WAIT, "everything acked", || {
        uplink.metric("tributary_uplink_in_flight") == Some(0.0)
    })
    .await;
    // Every client retried the broker many times a second through the
    // outage; the log has a line per kind of failure per minute.
    let log = uplink.process.log();
    let kafka_warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("tributary_uplink::kafka_log"))
        .collect();
    assert!(
        !kafka_warnings.is_empty() && kafka_warnings.len() <= 20,
        "{} rate-limited Kafka warnings:\n{}",
        kafka_warnings.len(),
        kafka_warnings.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_kafka_fails_health_and_in_flight_stays_bounded_then_everything_flows() {
    let hub = NatsServer::hub().unwrap();
    let mut kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let uplink = Uplink::start("uplink", &config_text(&hub, &kafka, port, "", ""), port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    publish(&js, &envelope("pi-1", "temp", 1, 10)).await;
    let reader = KafkaReader::new(kafka.bootstrap());
    reader.read_until_async("readings", 10, WAIT).await.unwrap();
    assert_eq!(http_get(port, "/health").unwrap().0, 200);

    kafka.pause().unwrap();
    for i in 0..400u64 {
        publish(&js, &envelope("pi-1", "temp", 11 + i * 2, 2)).await;
    }
    eventually(WAIT, "health fails while Kafka is frozen", || {
        http_get(port, "/health").is_ok_and(|(code, _)| code == 503)
    })
    .await;
    let in_flight = uplink.metric("tributary_uplink_in_flight").unwrap();
    assert!(
        in_flight <= 256.0,
        "in flight {in_flight} exceeds max_ack_pending"
    );
    kafka.resume().unwrap();
    // At-least-once: resends after the outage may duplicate records, so
    // wait for every distinct reading rather than for a record count.
    let counts = distinct_readings(&reader, "readings", 810, WAIT).await;
    let missing: Vec<u64> = (1..=810)
        .filter(|seq| !counts.contains_key(&format!("pi-1:1764000000:{seq}")))
        .collect();
    assert!(
        missing.is_empty(),
        "every reading reaches Kafka after the pause; missing sequences {missing:?}"
    );
    eventually(WAIT, "health recovers", || {
        http_get(port, "/health").is_ok_and(|(code, _)| code == 200)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_uplink_in_bound_while_librdkafkas_queue_is_full_and_kafka_is_frozen() {
    let hub = NatsServer::hub().unwrap();
    let mut kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    // A queue of four records: with Kafka frozen it is full after one
    // message of five readings, and the next write waits for room.
    let extra = "[kafka.properties]\n\"queue.buffering.max.messages\" = \"4\"\n";
    let mut uplink = Uplink::start("uplink", &config_text(&hub, &kafka, port, "", extra), port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    publish(&js, &envelope("pi-1", "temp", 1, 2)).await;
    let reader = KafkaReader::new(kafka.bootstrap());
    reader.read_until_async("readings", 2, WAIT).await.unwrap();

    kafka.pause().unwrap();
    for i in 0..20u64 {
        publish(&js, &envelope("pi-1", "temp", 3 + i * 5, 5)).await;
    }
    eventually(WAIT, "health fails while Kafka is frozen", || {
        http_get(port, "/health").is_ok_and(|(code, _)| code == 503)
    })
    .await;
    // The messages were pulled at once; the writes wait for queue room.
    assert!(
        uplink
            .metric("tributary_uplink_consumed_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    // delivery_timeout 5 s + the 5 s drain + a margin.
    let bound = Duration::from_secs(15);
    let started = std::time::Instant::now();
    let status = uplink
        .process
        .terminate(bound + Duration::from_secs(15))
        .expect("the uplink ends after SIGTERM");
    let took = started.elapsed();
    kafka.resume().unwrap();
    assert!(status.success(), "uplink exit {status}");
    assert!(
        took <= bound,
        "SIGTERM took {took:?} with librdkafka's queue full, bound {bound:?}"
    );
}
