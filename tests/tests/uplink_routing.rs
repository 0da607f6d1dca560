//! The uplink routes subjects to topics (wildcards, captured tokens, the
//! default topic) and encodes envelopes as JSON records or passes them
//! through; messages declared foreign (header `Tributary-Passthrough`) pass
//! through with their headers; messages that cannot be decoded, routed or
//! written go to the dead-letter topic with reason headers, and the rest
//! flows on. `uplink_hostile.rs` has the garbage.

#[path = "uplink_support/mod.rs"]
mod support;

use std::time::Duration;
use support::{Uplink, config_text, envelope, http_port, id_counts, publish};
use tributary_tests::{Kafka, KafkaReader, NatsServer, Record};
use tributary_wire::{Envelope, NATS_MSG_ID_HEADER};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_json_and_passthrough_records_to_the_topics_their_patterns_name() {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let toml = config_text(
        &hub,
        &kafka,
        port,
        "",
        r#"
[[routes]]
subject = "tributary.*.power"
topic = "power.{1}"
encoding = "passthrough"
key = "device_sensor"

[[routes]]
subject = "tributary.*.door"
topic = "doors"
"#,
    );
    let _uplink = Uplink::start("uplink", &toml, port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    publish(&js, &envelope("pi-1", "temp", 1, 3)).await;
    publish(&js, &envelope("pi-2", "temp", 1, 2)).await;
    let power = envelope("pi-1", "power", 10, 4);
    publish(&js, &power).await;
    publish(&js, &envelope("pi-7", "door", 1, 1)).await;
    let mut h = async_nats::HeaderMap::new();
    h.insert("Content-Type", "text/plain");
    h.insert("Tributary-Passthrough", "1");
    js.publish_with_headers("tributary.legacy.thing", h, "hello".into())
        .await
        .unwrap()
        .await
        .unwrap();

    let reader = KafkaReader::new(kafka.bootstrap());
    // Default topic: 3 + 2 JSON readings and the foreign message.
    let records = reader.read_until_async("readings", 6, WAIT).await.unwrap();
    let (json, foreign): (Vec<Record>, Vec<Record>) = records
        .into_iter()
        .partition(|r| r.header_str(tributary_wire::READING_ID_HEADER).is_some());
    let counts = id_counts(&json);
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1));
    for r in &json {
        let reading = r.reading().unwrap();
        assert_eq!(r.key_str(), Some(reading.device.as_str()));
        assert_eq!(reading.sensor, "temp");
        assert_eq!(reading.unit.as_deref(), Some("°C"));
        assert_eq!(reading.value, serde_json::json!(reading.seq as f64 / 10.0));
    }
    // Readings of one device share a partition (murmur2 of the key).
    let p1: Vec<i32> = json
        .iter()
        .filter(|r| r.key_str() == Some("pi-1"))
        .map(|r| r.partition)
        .collect();
    assert!(p1.windows(2).all(|w| w[0] == w[1]), "{p1:?}");
    assert_eq!(foreign.len(), 1);
    assert_eq!(foreign[0].payload.as_deref(), Some(&b"hello"[..]));
    assert_eq!(foreign[0].key_str(), Some("tributary.legacy.thing"));
    assert_eq!(foreign[0].header_str("Content-Type"), Some("text/plain"));

    // The power rule: passthrough into a topic named after the device.
    let passed = reader
        .read_until_async("power.pi-1", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(passed.len(), 1);
    assert_eq!(passed[0].key_str(), Some("pi-1/power"));
    let env = Envelope::decode(passed[0].payload.as_deref().unwrap()).unwrap();
    assert_eq!(env, power);
    assert_eq!(
        passed[0].header_str(NATS_MSG_ID_HEADER),
        Some(power.msg_id().as_str())
    );

    // The door rule: JSON into a fixed topic.
    let doors = reader.read_until_async("doors", 1, WAIT).await.unwrap();
    assert_eq!(doors[0].reading().unwrap().device, "pi-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_go_to_the_dead_letter_topic_with_reasons_and_the_rest_flows_on() {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let toml = config_text(
        &hub,
        &kafka,
        port,
        "max_record_bytes = \"2 KiB\"",
        r#"
[[routes]]
subject = "tributary.*.routed"
topic = "by-device.{1}"
"#,
    );
    let uplink = Uplink::start("uplink", &toml, port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    publish(&js, &envelope("pi-1", "temp", 1, 2)).await;
    // Claims to be an agent envelope (agent-style message id) but is garbage.
    let mut h = async_nats::HeaderMap::new();
    h.insert(NATS_MSG_ID_HEADER, "pi-9:1:1+1");
    let garbage_ack = js
        .publish_with_headers("tributary.pi-9.temp", h, vec![1u8, 0xff, 0xff].into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Too big for max_record_bytes, declared foreign so that it passes
    // the decoder.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Tributary-Passthrough", "1");
    let big_ack = js
        .publish_with_headers("tributary.blob.dump", h, vec![b'x'; 4096].into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Routes to a topic name Kafka cannot have.
    publish(&js, &envelope("Zigbee:0x1", "routed", 1, 1)).await;
    publish(&js, &envelope("pi-1", "temp", 3, 2)).await;

    let reader = KafkaReader::new(kafka.bootstrap());
    let good = reader.read_until_async("readings", 4, WAIT).await.unwrap();
    assert_eq!(id_counts(&good).len(), 4);
    let dead = reader.read_until_async("dead", 3, WAIT).await.unwrap();
    let reason = |r: &Record| r.header_str("tributary-dlq-reason").unwrap().to_owned();
    let by_subject = |s: &str| {
        dead.iter()
            .find(|r| r.header_str("tributary-dlq-subject") == Some(s))
            .unwrap_or_else(|| panic!("no dead letter for {s}: {dead:?}"))
    };
    let g = by_subject("tributary.pi-9.temp");
    assert!(reason(g).starts_with("undecodable"), "{}", reason(g));
    assert_eq!(
        g.header_str("tributary-dlq-stream-seq"),
        Some(garbage_ack.sequence.to_string().as_str())
    );
    assert_eq!(g.payload.as_deref(), Some(&[1u8, 0xff, 0xff][..]));
    let b = by_subject("tributary.blob.dump");
    assert!(reason(b).starts_with("oversized"), "{}", reason(b));
    assert_eq!(
        b.header_str("tributary-dlq-stream-seq"),
        Some(big_ack.sequence.to_string().as_str())
    );
    assert_eq!(b.header_str("tributary-dlq-size"), Some("4096"));
    assert_eq!(b.header_str("tributary-dlq-truncated"), Some("true"));
    let kept = b.payload.as_deref().unwrap_or_default();
    assert!(
        !kept.is_empty() && kept.len() < 2048 && kept.iter().all(|c| *c == b'x'),
        "{} bytes kept",
        kept.len()
    );
    let u = by_subject("tributary.Zigbee:0x1.routed");
    assert!(reason(u).starts_with("unroutable"), "{}", reason(u));

    // Every one of the five messages (two good, three dead letters) was
    // acknowledged: nothing is pending or in flight.
    support::eventually(WAIT, "all five messages acked", || {
        let (acked, in_flight) = (
            uplink.metric("tributary_uplink_acked_total"),
            uplink.metric("tributary_uplink_in_flight"),
        );
        eprintln!("acked {acked:?}, in flight {in_flight:?}");
        acked == Some(5.0) && in_flight == Some(0.0)
    })
    .await;
    assert_eq!(uplink.metric("tributary_uplink_naked_total"), Some(0.0));
    assert_eq!(
        uplink.metric("tributary_uplink_terminated_total"),
        Some(0.0)
    );
    assert_eq!(
        uplink.metric("tributary_uplink_dead_lettered_total{reason=\"oversized\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_from_the_beginning_prints_every_reading_of_a_topic_then_stops_at_its_end() {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let _uplink = Uplink::start("uplink", &config_text(&hub, &kafka, port, "", ""), port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    // One message of six readings of one device: one batch of six records
    // in one partition, the case tansu's ListOffsets gets wrong.
    publish(&js, &envelope("pi-1", "temp", 1, 6)).await;
    publish(&js, &envelope("pi-2", "temp", 1, 1)).await;
    let reader = KafkaReader::new(kafka.bootstrap());
    reader.read_until_async("readings", 7, WAIT).await.unwrap();

    let out = tokio::task::spawn_blocking({
        let brokers = kafka.bootstrap();
        move || {
            std::process::Command::new(tributary_tests::bins::uplink().unwrap())
                .args(["tail", "--brokers", &brokers, "--topic", "readings"])
                .arg("--from-beginning")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines.len(), 7, "{text}");
    for seq in 1..=6 {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("pi-1/temp seq={seq} "))),
            "pi-1 seq {seq} missing: {text}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains("pi-2/temp seq=1 ")),
        "{text}"
    );
}
