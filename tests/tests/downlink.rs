//! The uplink's downlink against a real hub and Kafka broker: command
//! records written to Kafka become commands in the hub's command stream,
//! once each, across an uplink restart; records that are not commands
//! become dead letters; devices' outcomes reach the outcome topic.

#[path = "uplink_support/mod.rs"]
mod support;

use async_nats::jetstream;
use std::time::Duration;
use support::{Uplink, config_text, eventually, http_port};
use tributary_tests::{Kafka, KafkaReader, NatsServer};
use tributary_wire::NATS_MSG_ID_HEADER;
use tributary_wire::command::{COMMAND_STREAM, Command, KIND_HEADER, OUTCOME_KIND};

const WAIT: Duration = Duration::from_secs(60);

const DOWNLINK: &str = r#"
[[downlink]]
topic = "commands"
expire_after = "1m"
"#;

async fn produce(kafka: &Kafka, key: &str, payload: &str) {
    kafka
        .produce("commands", key, payload.as_bytes())
        .await
        .unwrap();
}

/// Every message of the command stream, in order.
async fn commands(js: &jetstream::Context) -> Vec<(String, String, Command)> {
    let Ok(mut s) = js.get_stream(COMMAND_STREAM).await else {
        return Vec::new();
    };
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        let id = m
            .headers
            .get(NATS_MSG_ID_HEADER)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let c: Command = serde_json::from_slice(&m.payload).unwrap();
        out.push((m.subject.to_string(), id, c));
    }
    out
}

/// The command stream's messages once it holds at least `n`.
async fn commands_until(js: &jetstream::Context, n: usize) -> Vec<(String, String, Command)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = commands(js).await;
        if seen.len() >= n {
            return seen;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} commands in the command stream within {WAIT:?}; seen {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_records_become_commands_once_each_across_an_uplink_restart_and_bad_ones_dead_letters()
 {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    kafka.create_topic("commands", 1).unwrap();
    let port = http_port();
    let toml = config_text(&hub, &kafka, port, "", DOWNLINK);
    let mut uplink = Uplink::start("uplink", &toml, port);
    let client = hub.connect().await.unwrap();
    let js = jetstream::new(client);

    produce(&kafka, "pi-1", r#"{"actuator":"vent","value":40}"#).await;
    produce(
        &kafka,
        "pi-2",
        r#"{"actuator":"relay","value":true,"id":"c-2"}"#,
    )
    .await;
    produce(&kafka, "pi-1", "not json").await;
    let seen = commands_until(&js, 2).await;
    let (subject, msg_id, first) = &seen[0];
    assert_eq!(subject, "tributary-ctl.cmd.pi-1.vent");
    assert_eq!(msg_id, "commands:0:0");
    assert_eq!(
        (first.id.as_str(), first.value.to_string().as_str()),
        ("commands:0:0", "40")
    );
    assert_eq!(first.expires_at_ms - first.issued_at_ms, 60_000);
    assert_eq!(seen[1].0, "tributary-ctl.cmd.pi-2.relay");
    assert_eq!(seen[1].2.id, "c-2");

    let reader = KafkaReader::new(kafka.bootstrap());
    let dead = reader.read_until_async("dead", 1, WAIT).await.unwrap();
    assert_eq!(dead[0].payload.as_deref(), Some(&b"not json"[..]));
    assert_eq!(
        dead[0].header_str("tributary-dlq-source"),
        Some("commands:0:2")
    );
    assert!(
        dead[0]
            .header_str("tributary-dlq-reason")
            .is_some_and(|r| r.starts_with("undecodable command: ")),
        "{:?}",
        dead[0].header_str("tributary-dlq-reason")
    );

    // The position was stored: a restarted uplink goes on after the
    // records it already handled (its counter starts at 0 and counts only
    // the new one), so not even the duplicate window is needed.
    eventually(WAIT, "the metrics count the published commands", || {
        uplink.metric("tributary_uplink_commands_published_total") == Some(2.0)
    })
    .await;
    uplink.process.terminate(Duration::from_secs(20)).unwrap();
    let mut uplink = Uplink::start("uplink", &toml, port);
    produce(&kafka, "pi-3", r#"{"actuator":"vent","value":1.5}"#).await;
    let seen = commands_until(&js, 3).await;
    assert_eq!(seen.len(), 3, "nothing republished: {seen:?}");
    assert_eq!(seen[2].1, "commands:0:3");
    assert_eq!(
        uplink.metric("tributary_uplink_commands_published_total"),
        Some(1.0),
        "the restarted uplink published only the new command"
    );
    let dead = reader
        .read_all_async("dead", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1, "the bad record was dead-lettered once");
    uplink.process.terminate(Duration::from_secs(20)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_devices_outcome_reaches_the_outcome_topic_and_a_spoofed_one_the_dead_letters() {
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    let port = http_port();
    let _uplink = Uplink::start("uplink", &config_text(&hub, &kafka, port, "", ""), port);
    let client = hub.connect().await.unwrap();
    let js = jetstream::new(client);
    let outcome = r#"{"format":1,"command_id":"commands:0:0","device":"pi-1","actuator":"vent","value":40,"outcome":"applied","issued_at_ms":1764000000000,"received_at_ms":1764000000010,"finished_at_ms":1764000000012}"#;
    for subject in ["tributary.pi-1.$outcome", "tributary.pi-9.$outcome"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(KIND_HEADER, OUTCOME_KIND);
        js.publish_with_headers(subject, headers, outcome.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let reader = KafkaReader::new(kafka.bootstrap());
    let got = reader
        .read_until_async("tributary.outcomes", 1, WAIT)
        .await
        .unwrap();
    assert_eq!(got[0].payload.as_deref(), Some(outcome.as_bytes()));
    assert_eq!(got[0].key_str(), Some("pi-1"));
    assert_eq!(
        got[0].header_str("tributary-command-id"),
        Some("commands:0:0")
    );
    let dead = reader.read_until_async("dead", 1, WAIT).await.unwrap();
    assert_eq!(
        dead[0].header_str("tributary-dlq-subject"),
        Some("tributary.pi-9.$outcome")
    );
    assert!(
        dead[0]
            .header_str("tributary-dlq-reason")
            .is_some_and(|r| r.starts_with("undecodable command outcome: ")),
    );
}
