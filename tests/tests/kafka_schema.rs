//! The published reading schema (`schema/reading.schema.json`) installed in the broker, as
//! tansu 0.6.0 validates records (`tansu broker --schema-registry file://DIR`, the schema in
//! `DIR/<topic>.json`): the broker refuses a record of the readings topic that breaks it
//! (`INVALID_RECORD`), the uplink writes that message to the dead-letter topic with the
//! broker's reason, and the valid readings before and after it flow on.
//!
//! The messages go one after another, each once the previous one is in Kafka: tansu 0.6.0
//! refuses a whole batch without naming the record at fault, so a reading in the same batch
//! as the bad record would be refused with it. Kafka names the culprits (`record_errors`), and
//! librdkafka fails the other records of the batch with `_INVALID_DIFFERENT_RECORD`, which the
//! uplink retries instead of dead-lettering (`uplink/src/kafka.rs`). Each refusal also costs a
//! producer here: tansu fences the producer that bumped its epoch after it, so the dead-letter
//! write fails once and the message comes back, to be dead-lettered by the next producer
//! without asking the broker again (`Refused` in `uplink/src/dead_letter.rs`). Memory storage:
//! tansu's sqlite engine stops answering after its first refusal.

#[path = "uplink_support/mod.rs"]
mod support;

use std::time::Duration;
use support::{Uplink, config_text, envelope, http_get, http_port, publish};
use tributary_tests::{Kafka, KafkaReader, KafkaStorage, NatsServer, Record};

const WAIT: Duration = Duration::from_secs(60);

/// The value of `tributary_uplink_dead_lettered_total{reason="<reason>"}`.
fn dead_lettered(uplink: &Uplink, reason: &str) -> Option<f64> {
    let (_, body) = http_get(uplink.http_port, "/metrics").ok()?;
    let prefix = format!("tributary_uplink_dead_lettered_total{{reason=\"{reason}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_the_broker_refuses_by_the_published_schema_is_dead_lettered_with_the_reason_and_valid_readings_flow_on()
 {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_validating(KafkaStorage::Memory, &["readings"]).unwrap();
    let port = http_port();
    let uplink = Uplink::start("uplink", &config_text(&hub, &kafka, port, "", ""), port);
    let js = async_nats::jetstream::new(hub.connect().await.unwrap());
    let reader = KafkaReader::new(kafka.bootstrap());

    publish(&js, &envelope("pi-1", "temp", 1, 3)).await;
    reader.read_until_async("readings", 3, WAIT).await.unwrap();

    // Passed through into the JSON topic by their publisher's say-so: bytes that are no JSON,
    // and JSON that is no reading. The broker refuses both.
    let bad: [&[u8]; 2] = [b"21.5 degrees", br#"{"temperature":21.5}"#];
    let mut sent = Vec::new();
    for (i, payload) in bad.iter().enumerate() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Tributary-Passthrough", "1");
        let seq = js
            .publish_with_headers("tributary.pi-1.raw", headers, payload.to_vec().into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence;
        sent.push((seq, *payload));
        reader.read_until_async("dead", i + 1, WAIT).await.unwrap();
    }

    publish(&js, &envelope("pi-1", "temp", 4, 2)).await;
    reader.read_until_async("readings", 5, WAIT).await.unwrap();

    // Every message is answered before the topics are judged.
    support::eventually(WAIT, "every message acked", || {
        uplink.metric("tributary_uplink_acked_total") == Some(4.0)
            && uplink.metric("tributary_uplink_in_flight") == Some(0.0)
    })
    .await;
    let readings = reader.read_all_async("readings", WAIT).await.unwrap();
    let mut ids: Vec<String> = Record::readings(&readings)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    let want: Vec<String> = (1..=5)
        .map(|seq| format!("pi-1:1764000000:{seq}"))
        .collect();
    assert_eq!(
        ids, want,
        "the readings topic holds the five readings and nothing else"
    );

    let dead = reader.read_all_async("dead", WAIT).await.unwrap();
    assert_eq!(dead.len(), 2, "{dead:?}");
    for (seq, payload) in &sent {
        let d = dead
            .iter()
            .find(|r| r.header_str("tributary-dlq-stream-seq") == Some(&seq.to_string()))
            .unwrap_or_else(|| panic!("no dead letter of stream sequence {seq}: {dead:?}"));
        let reason = d.header_str("tributary-dlq-reason").unwrap();
        assert!(
            reason.starts_with("rejected by Kafka: ") && reason.contains("InvalidRecord"),
            "{reason}"
        );
        assert_eq!(d.payload.as_deref(), Some(*payload));
        assert_eq!(
            d.header_str("tributary-dlq-subject"),
            Some("tributary.pi-1.raw")
        );
        assert_eq!(d.header_str("Tributary-Passthrough"), Some("1"));
    }
    assert_eq!(dead_lettered(&uplink, "rejected"), Some(2.0));
}
