//! Hostile messages on the stream: garbage, empty, truncated, unknown
//! format versions, messages near and beyond the record limit. None of them
//! may land in a JSON topic; each goes to the dead-letter topic with its
//! reason and its original bytes (truncated, and saying so, only where the
//! whole would not fit in `kafka.max_record_bytes`), is counted, and the
//! agents' readings around them flow on.

#[path = "uplink_support/mod.rs"]
mod support;

use std::time::Duration;
use support::{Uplink, config_text, envelope, http_port, id_counts, publish};
use tributary_tests::{Kafka, KafkaReader, NatsOptions, NatsServer, Record};

const WAIT: Duration = Duration::from_secs(90);
/// The uplink's default `kafka.max_record_bytes` (1 MiB).
const MAX_RECORD: usize = 1 << 20;

/// `n` reproducible pseudo-random bytes (xorshift64).
fn noise(n: usize, mut state: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[3]
        })
        .collect()
}

/// A valid agent envelope with its format-version byte replaced.
fn with_version(version: u8) -> Vec<u8> {
    let mut bytes = envelope("pi-9", "temp", 1, 2).encode().unwrap();
    bytes[0] = version;
    bytes
}

/// The garbage published to `tributary.x.y`, with a name for messages.
fn garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut one_mb = vec![1u8];
    one_mb.extend(noise(999_999, 7));
    vec![
        ("200 random bytes", noise(200, 42)),
        ("an empty message", Vec::new()),
        ("a truncated version-1 envelope", b"\x01\x05probe".to_vec()),
        ("format version 0", with_version(0)),
        ("format version 3", with_version(3)),
        ("format version 255", with_version(255)),
        // Version 2 is a real format; this is not a message of it.
        ("a truncated version-2 envelope", b"\x02\x05probe".to_vec()),
        ("1 MB starting with \\x01", one_mb),
        ("1.5 MB of noise", noise(1_500_000, 9)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_stream_goes_to_the_dead_letter_topic_with_its_bytes_and_never_into_a_json_topic()
 {
    let hub = NatsServer::hub_with(NatsOptions {
        extra_config: "max_payload: 2MB\n".into(),
        ..NatsOptions::default()
    })
    .unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let toml = config_text(
        &hub,
        &kafka,
        port,
        "",
        r#"
[[routes]]
subject = "tributary.raw.>"
topic = "raw"
encoding = "passthrough"
"#,
    );
    let uplink = Uplink::start("uplink", &toml, port);
    let client = hub.connect().await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let send = |subject: &'static str, bytes: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish(subject, bytes.into())
                .await
                .unwrap_or_else(|e| panic!("publishing to {subject}: {e}"))
                .await
                .unwrap_or_else(|e| panic!("the hub's ack on {subject}: {e}"))
                .sequence
        }
    };

    publish(&js, &envelope("pi-1", "temp", 1, 3)).await;
    publish(&js, &envelope("pi-2", "temp", 1, 2)).await;
    let mut sent = Vec::new();
    for (what, bytes) in garbage() {
        let seq = send("tributary.x.y", bytes.clone()).await;
        sent.push((what, seq, bytes));
    }
    // A route that asks for passthrough takes any bytes, up to the limit.
    let raw_small = send("tributary.raw.text", b"not an envelope".to_vec()).await;
    let raw_big_bytes = noise(1_500_000, 11);
    let raw_big = send("tributary.raw.blob", raw_big_bytes.clone()).await;
    publish(&js, &envelope("pi-1", "temp", 4, 2)).await;
    let messages = 3 + sent.len() + 2;

    support::eventually(WAIT, "every message acked", || {
        let (acked, in_flight) = (
            uplink.metric("tributary_uplink_acked_total"),
            uplink.metric("tributary_uplink_in_flight"),
        );
        eprintln!("acked {acked:?} of {messages}, in flight {in_flight:?}");
        acked == Some(messages as f64) && in_flight == Some(0.0)
    })
    .await;

    let reader = KafkaReader::new(kafka.bootstrap());
    // The JSON topic holds the seven readings and nothing else.
    let readings = reader.read_all_async("readings", WAIT).await.unwrap();
    for r in &readings {
        assert!(
            r.reading().is_ok(),
            "a record of the JSON topic is not a JSON reading: {} bytes, headers {:?}",
            r.payload.as_ref().map_or(0, Vec::len),
            r.headers.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }
    let counts = id_counts(&readings);
    assert_eq!(counts.len(), 7, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");

    let dead = reader.read_all_async("dead", WAIT).await.unwrap();
    let by_seq = |seq: u64| -> &Record {
        dead.iter()
            .find(|r| r.header_str("tributary-dlq-stream-seq") == Some(seq.to_string().as_str()))
            .unwrap_or_else(|| panic!("no dead letter for stream sequence {seq}"))
    };
    let reason = |r: &Record| {
        r.header_str("tributary-dlq-reason")
            .unwrap_or("")
            .to_owned()
    };
    for (what, seq, bytes) in &sent {
        let d = by_seq(*seq);
        assert!(
            reason(d).starts_with("undecodable"),
            "{what}: reason {:?}",
            reason(d)
        );
        assert_eq!(d.header_str("tributary-dlq-subject"), Some("tributary.x.y"));
        let kept = d.payload.as_deref().unwrap_or_default();
        if d.header_str("tributary-dlq-truncated") == Some("true") {
            assert_eq!(
                d.header_str("tributary-dlq-size"),
                Some(bytes.len().to_string().as_str()),
                "{what}"
            );
            assert!(bytes.starts_with(kept), "{what}: not a prefix");
            assert!(
                kept.len() <= MAX_RECORD && kept.len() > MAX_RECORD - 4096,
                "{what}: kept {} bytes",
                kept.len()
            );
        } else {
            assert_eq!(kept.len(), bytes.len(), "{what}: length");
            assert!(kept == bytes.as_slice(), "{what}: the bytes differ");
        }
    }
    let truncated: Vec<&str> = sent
        .iter()
        .filter(|(_, seq, _)| by_seq(*seq).header_str("tributary-dlq-truncated").is_some())
        .map(|(what, _, _)| *what)
        .collect();
    assert_eq!(truncated, vec!["1.5 MB of noise"]);

    // Passthrough: the small message as it was, the big one dead-lettered
    // as oversized with what fits of it.
    let raw = reader.read_all_async("raw", WAIT).await.unwrap();
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].payload.as_deref(), Some(&b"not an envelope"[..]));
    let d = by_seq(raw_big);
    assert!(reason(d).starts_with("oversized"), "{}", reason(d));
    assert_eq!(d.header_str("tributary-dlq-truncated"), Some("true"));
    assert_eq!(d.header_str("tributary-dlq-size"), Some("1500000"));
    let kept = d.payload.as_deref().unwrap_or_default();
    assert!(raw_big_bytes.starts_with(kept) && kept.len() > MAX_RECORD - 4096);
    assert!(
        dead.iter()
            .all(|r| r.header_str("tributary-dlq-stream-seq")
                != Some(raw_small.to_string().as_str()))
    );
    assert_eq!(dead.len(), sent.len() + 1);

    let metric = |reason: &str| {
        uplink.metric(&format!(
            "tributary_uplink_dead_lettered_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(metric("undecodable"), Some(sent.len() as f64));
    assert_eq!(metric("oversized"), Some(1.0));
    assert_eq!(uplink.metric("tributary_uplink_naked_total"), Some(0.0));
    assert_eq!(
        uplink.metric("tributary_uplink_terminated_total"),
        Some(0.0)
    );
}
