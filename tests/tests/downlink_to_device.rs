//! The whole downlink, end to end through real servers: a command record
//! written to Kafka → tributary-uplink → hub command stream → leaf →
//! tributary-agent → a file actuator; the outcome back through the
//! readings path into Kafka's outcome topic.

use std::time::{Duration, Instant};
use tributary_tests::tributary::{agent_config, start_agent, start_uplink, uplink_config};
use tributary_tests::{Kafka, KafkaReader, NatsServer, Result};
use tributary_wire::command::{Outcome, Verdict};

const WAIT: Duration = Duration::from_secs(60);

async fn produce(kafka: &Kafka, key: &str, payload: &str) {
    kafka
        .produce("commands", key, payload.as_bytes())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_written_to_kafka_sets_the_devices_file_and_its_outcome_reaches_kafka()
-> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start_memory()?;
    kafka.create_topic("commands", 1)?;
    let state = tempfile::tempdir().expect("temp dir");
    let sysfs = tempfile::tempdir().expect("temp dir");
    let duty = sysfs.path().join("duty_cycle");
    std::fs::write(&duty, "0\n").unwrap();

    let uplink_toml = format!(
        "{}\n[[downlink]]\ntopic = \"commands\"\n",
        uplink_config(&hub, &kafka, "readings", "e2e")
    );
    let mut uplink = start_uplink(&uplink_toml)?;
    let actuators = format!(
        r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "1s"

[[actuators.file]]
id = "fan"
path = "{}"
accepts = {{ kind = "number", min = 0, max = 100 }}
scale = 10
"#,
        duty.display()
    );
    let mut agent = start_agent(&agent_config("pi-1", &leaf, state.path(), &actuators))?;

    let sent = Instant::now();
    produce(&kafka, "pi-1", r#"{"actuator":"fan","value":40}"#).await;
    produce(
        &kafka,
        "pi-1",
        r#"{"actuator":"fan","value":140,"id":"too-much"}"#,
    )
    .await;
    let reader = KafkaReader::new(kafka.bootstrap());
    let records = reader
        .read_until_async("tributary.outcomes", 2, WAIT)
        .await?;
    let took = sent.elapsed();
    let outcomes: Vec<Outcome> = records
        .iter()
        .map(|r| serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap())
        .collect();
    assert_eq!(outcomes[0].command_id, "commands:0:0");
    assert_eq!(outcomes[0].outcome, Verdict::Applied, "{:?}", outcomes[0]);
    assert_eq!(std::fs::read_to_string(&duty).unwrap().trim(), "400");
    assert_eq!(outcomes[1].command_id, "too-much");
    assert_eq!(outcomes[1].outcome, Verdict::Refused);
    assert!(
        outcomes[1]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("100")),
        "{:?}",
        outcomes[1].reason
    );
    assert_eq!(records[0].key_str(), Some("pi-1"));
    eprintln!("two commands from Kafka to their outcomes in Kafka in {took:?}");
    assert!(agent.terminate(Duration::from_secs(20))?.success());
    assert!(uplink.terminate(Duration::from_secs(30))?.success());
    Ok(())
}
