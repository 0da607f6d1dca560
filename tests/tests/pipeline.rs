//! The walking skeleton, end to end through real servers: simulated sensors
//! → tributary-agent → leaf nats-server → hub nats-server (JetStream) →
//! tributary-uplink → Kafka (tansu), read back and checked reading by
//! reading, down to the clock state the agent saw (the same answer this
//! test gets from the same system: absent when synchronized, otherwise
//! `"clock":"unsynced"`/`"unknown"`).

use std::collections::BTreeMap;
use std::time::Duration;
use tributary_agent::clock::{ClockSource, SystemClock};
use tributary_tests::tributary::{agent_config, start_agent, start_uplink, uplink_config};
use tributary_tests::{JsonReading, Kafka, KafkaReader, NatsServer, Result};

const TOPIC: &str = "e2e.readings";

const SENSORS: &str = r#"
[[sensors.simulated]]
id = "wave"
waveform = "sine"
period = "5s"
amplitude = 4.0
offset = 21.0
unit = "°C"
interval = "50ms"
tags = { room = "lab" }

[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "50ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_simulated_reading_arrives_in_kafka_once_with_its_device_sensor_value_unit_and_sequence()
-> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start_memory()?;
    let state = tempfile::tempdir().expect("temp dir");

    let mut uplink = start_uplink(&uplink_config(&hub, &kafka, TOPIC, "e2e"))?;
    let mut agent = start_agent(&agent_config("e2e-pi", &leaf, state.path(), SENSORS))?;

    let reader = KafkaReader::new(kafka.bootstrap());
    reader
        .read_until_async(TOPIC, 40, Duration::from_secs(60))
        .await?;

    // A clean stop: the agent commits what its sensors took and waits for
    // the hub's acks; then everything it took must reach Kafka.
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "agent exit: {status}\n{}",
        agent.log_tail(40)
    );

    let counted = |records: &[tributary_tests::Record]| {
        records
            .iter()
            .filter(|r| r.reading().map(|j| j.sensor == "count").unwrap_or(false))
            .count()
    };
    // Wait until the counter readings are contiguous from 0 (nothing in flight).
    let mut records = Vec::new();
    for _ in 0..100 {
        records = reader
            .read_all_async(TOPIC, Duration::from_secs(10))
            .await?;
        let readings: Vec<JsonReading> = KafkaReader::readings(&records)?;
        let max = readings
            .iter()
            .filter(|j| j.sensor == "count")
            .filter_map(|j| j.value.as_i64())
            .max()
            .unwrap_or(-1);
        if counted(&records) as i64 == max + 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let readings = KafkaReader::readings(&records)?;
    assert!(readings.len() >= 40, "only {} readings", readings.len());
    let clock = SystemClock::default().probe().await;
    let mut seqs = BTreeMap::new();
    let mut counts = Vec::new();
    for (record, r) in records.iter().zip(&readings) {
        assert_eq!(r.device, "e2e-pi");
        assert_eq!(record.key_str(), Some("e2e-pi"), "key is the device id");
        assert_eq!(
            record.header_str(tributary_wire::READING_ID_HEADER),
            Some(r.id.as_str()),
            "the reading id travels as a header"
        );
        assert_eq!(r.id, format!("e2e-pi:{}:{}", r.epoch, r.seq));
        assert_eq!(r.clock, clock, "the agent's clock state reaches Kafka");
        assert!(
            tributary_wire::json::parse_rfc3339(&r.ts).is_some(),
            "timestamp {:?} is RFC 3339",
            r.ts
        );
        if let Some(previous) = seqs.insert(r.seq, r.id.clone()) {
            panic!("sequence {} appears twice ({previous})", r.seq);
        }
        match r.sensor.as_str() {
            "wave" => {
                let v = r.value.as_f64().expect("wave is a float");
                assert!((17.0..=25.0).contains(&v), "wave value {v}");
                assert_eq!(r.unit.as_deref(), Some("°C"));
                assert_eq!(r.tags.get("room").map(String::as_str), Some("lab"));
            }
            "count" => {
                counts.push(r.value.as_i64().expect("count is an integer"));
                assert_eq!(r.unit, None);
            }
            other => panic!("unexpected sensor {other}"),
        }
    }
    counts.sort_unstable();
    let expected: Vec<i64> = (0..counts.len() as i64).collect();
    assert_eq!(counts, expected, "every counter reading once, none missing");
    assert!(counts.len() >= 10);

    uplink.terminate(Duration::from_secs(20))?;
    Ok(())
}
