//! The whole downlink, end to end through real servers: a command record
//! written to Kafka → tributary-uplink → hub command stream → leaf →
//! tributary-agent → a file actuator and an MQTT actuator (mosquitto); the
//! outcomes back through the
//! readings path into Kafka's outcome topic; and a stream of commands
//! during which the uplink and the agent are each SIGKILLed and restarted,
//! every command applied at most once and reported.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{
    agent_config, counting_actuator, start_agent, start_uplink, uplink_config,
};
use tributary_tests::{Kafka, KafkaReader, Mosquitto, NatsServer, Result, Schedule};
use tributary_wire::command::{Outcome, Verdict};

const WAIT: Duration = Duration::from_secs(60);

async fn produce(kafka: &Kafka, key: &str, payload: &str) {
    kafka
        .produce("commands", key, payload.as_bytes())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_written_to_kafka_set_the_devices_file_and_mqtt_topic_and_their_outcomes_reach_kafka()
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
    let broker = Mosquitto::start()?;
    let mut vent = broker.watch("cmnd/vent/POWER").await?;
    let actuators = format!(
        r#"
[mqtt]
port = {port}

[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "1s"

[[actuators.file]]
id = "fan"
path = "{duty}"
accepts = {{ kind = "number", min = 0, max = 100 }}
scale = 10

[[actuators.mqtt]]
id = "vent"
topic = "cmnd/vent/POWER"
accepts = {{ kind = "enum", values = ["ON", "OFF"] }}
"#,
        port = broker.port(),
        duty = duty.display()
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
    produce(&kafka, "pi-1", r#"{"actuator":"vent","value":"ON"}"#).await;
    let reader = KafkaReader::new(kafka.bootstrap());
    let records = reader
        .read_until_async("tributary.outcomes", 3, WAIT)
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
    assert_eq!(outcomes[2].command_id, "commands:0:2");
    assert_eq!(outcomes[2].outcome, Verdict::Applied, "{:?}", outcomes[2]);
    assert_eq!(
        vent.next_payload(Duration::from_secs(10)).await.as_deref(),
        Some("ON"),
        "the plain payload on the Tasmota-style topic"
    );
    assert_eq!(records[0].key_str(), Some("pi-1"));
    eprintln!("three commands from Kafka to their outcomes in Kafka in {took:?}");
    assert!(agent.terminate(Duration::from_secs(20))?.success());
    assert!(uplink.terminate(Duration::from_secs(30))?.success());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_streamed_while_the_uplink_and_the_agent_are_killed_are_applied_once_each_and_reported()
-> Result<()> {
    let mut rng = Schedule::from_env();
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start_memory()?;
    kafka.create_topic("commands", 1)?;
    let state = tempfile::tempdir().expect("temp dir");
    let counter = state.path().join("counter");
    let mut uplink = start_uplink(&format!(
        "{}\n[[downlink]]\ntopic = \"commands\"\n",
        uplink_config(&hub, &kafka, "readings", "e2e")
    ))?;
    let actuators = counting_actuator(&counter);
    let mut agent = start_agent(&agent_config("pi-1", &leaf, state.path(), &actuators))?;

    const N: u64 = 40;
    let kill_uplink_after = rng.below(N / 2) + 5;
    let kill_agent_after = rng.below(N / 2) + 10;
    println!("uplink killed after command {kill_uplink_after}, agent after {kill_agent_after}");
    for i in 0..N {
        produce(
            &kafka,
            "pi-1",
            &format!(r#"{{"actuator":"count","value":{i},"id":"k{i}"}}"#),
        )
        .await;
        if i == kill_uplink_after {
            uplink.kill()?;
            uplink.respawn()?;
        }
        if i == kill_agent_after {
            agent.kill()?;
            agent.respawn()?;
        }
        tokio::time::sleep(Duration::from_millis(rng.below(60) + 5)).await;
    }

    // Every command's outcome reaches Kafka (at least once: a record the
    // killed uplink had not yet confirmed comes again, with the same verdict).
    let reader = KafkaReader::new(kafka.bootstrap());
    let deadline = Instant::now() + Duration::from_secs(120);
    let outcomes = loop {
        let records = reader
            .read_all_async("tributary.outcomes", Duration::from_secs(3))
            .await?;
        let mut by_id: BTreeMap<String, Outcome> = BTreeMap::new();
        for r in &records {
            let o: Outcome = serde_json::from_slice(r.payload.as_deref().unwrap()).unwrap();
            if let Some(seen) = by_id.get(&o.command_id) {
                assert_eq!(seen.outcome, o.outcome, "two verdicts for one command");
            }
            by_id.insert(o.command_id.clone(), o);
        }
        if by_id.len() as u64 == N {
            break by_id;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {N} outcomes in Kafka: {:?}\nagent:\n{}\nuplink:\n{}",
            by_id.len(),
            by_id.keys().collect::<Vec<_>>(),
            agent.log_tail(30),
            uplink.log_tail(30)
        );
    };
    let applied: Vec<u64> = std::fs::read_to_string(&counter)
        .unwrap_or_default()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut once = applied.clone();
    once.dedup();
    assert_eq!(once, applied, "applied in order, none twice");
    let mut interrupted = 0;
    for i in 0..N {
        let o = &outcomes[&format!("k{i}")];
        let present = applied.contains(&i);
        match o.outcome {
            Verdict::Applied => assert!(present, "k{i} reported applied, not in the log"),
            // Killed between applying and recording: reported, never redone.
            Verdict::Failed
                if o.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("interrupted")) =>
            {
                interrupted += 1
            }
            _ => panic!("k{i}: {o:?}"),
        }
    }
    assert!(
        interrupted <= 1,
        "one agent kill interrupts at most one command"
    );
    assert!(agent.terminate(Duration::from_secs(20))?.success());
    assert!(uplink.terminate(Duration::from_secs(30))?.success());
    Ok(())
}
