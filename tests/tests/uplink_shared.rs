//! Two uplinks bound to the same durable consumer split the stream between
//! them, and every reading arrives.

#[path = "uplink_support/mod.rs"]
mod support;

use std::time::Duration;
use support::{Uplink, config_text, envelope, eventually, http_port, id_counts, publish};
use tributary_tests::{Kafka, KafkaReader, NatsServer};

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_uplinks_sharing_a_durable_consumer_split_the_load_without_loss() {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let (pa, pb) = (http_port(), http_port());
    let a = Uplink::start("uplink-a", &config_text(&hub, &kafka, pa, "", ""), pa);
    let b = Uplink::start("uplink-b", &config_text(&hub, &kafka, pb, "", ""), pb);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    let mut published = 0usize;
    for i in 0..300u64 {
        publish(
            &js,
            &envelope(&format!("pi-{}", i % 7), "temp", i * 3 + 1, 3),
        )
        .await;
        published += 3;
    }
    let reader = KafkaReader::new(kafka.bootstrap());
    let records = reader
        .read_until_async("readings", published, WAIT)
        .await
        .unwrap();
    let counts = id_counts(&records);
    assert_eq!(counts.len(), published);
    eventually(WAIT, "both acked everything", || {
        let acked = |u: &Uplink| u.metric("tributary_uplink_acked_total").unwrap_or(0.0);
        acked(&a) + acked(&b) >= 300.0
    })
    .await;
    let (ca, cb) = (
        a.metric("tributary_uplink_consumed_total").unwrap(),
        b.metric("tributary_uplink_consumed_total").unwrap(),
    );
    assert!(
        ca > 0.0 && cb > 0.0,
        "one uplink did all the work: {ca} / {cb}"
    );
}
