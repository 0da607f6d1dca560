//! MQTT sensors of the agent against a real mosquitto: plain and JSON
//! payloads, ids from topic segments, garbage counted without stopping the
//! flow, reconnection after a broker restart, and a persistent QoS 1 session
//! that delivers what was published while the agent was stopped.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_agent::sensors::{self, Observation, SensorContext, Sensors};
use tributary_agent::stats::AgentStats;
use tributary_config::AgentConfig;
use tributary_tests::Mosquitto;
use tributary_wire::Value;

const WAIT: Duration = Duration::from_secs(20);

/// The sensors every test uses, on the broker at `port`.
fn config(port: u16, client_id: &str) -> AgentConfig {
    let text = format!(
        r#"
[agent]
device = "pi-test"

[mqtt]
host = "127.0.0.1"
port = {port}
client_id = "{client_id}"
max_payload = "1 KiB"

[[sensors.mqtt]]
id = "ready"
topic = "test/ready"

[[sensors.mqtt]]
id = "plain"
topic = "test/plain"
unit = "°C"

[[sensors.mqtt]]
id = "switch"
topic = "tasmota/switch"

[[sensors.mqtt]]
id = "{{1}}_temperature"
topic = "zigbee2mqtt/+"
pointer = "/temperature"
unit = "°C"
tags = {{ source = "zigbee" }}

[[sensors.mqtt]]
id = "{{1}}_humidity"
topic = "zigbee2mqtt/+"
pointer = "/humidity"
unit = "%"
"#
    );
    tributary_config::parse(&text, std::path::Path::new("agent.toml")).expect("valid config")
}

struct Agent {
    sensors: Sensors,
    stop: CancellationToken,
    rx: mpsc::Receiver<Observation>,
    stats: Arc<AgentStats>,
}

impl Agent {
    fn start(cfg: &AgentConfig) -> Agent {
        let stats = Arc::new(AgentStats::default());
        let (tx, rx) = mpsc::channel(64);
        let stop = CancellationToken::new();
        let ctx = SensorContext {
            stats: stats.clone(),
            buffer_dir: std::env::temp_dir(),
            device: "pi-test".into(),
        };
        let sensors = sensors::spawn(cfg, ctx, tx, stop.clone());
        Agent {
            sensors,
            stop,
            rx,
            stats,
        }
    }

    async fn next(&mut self) -> Observation {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an observation in time")
            .expect("channel open")
    }

    /// Publishes on `test/ready` until the agent reports it: its
    /// subscriptions are in place.
    async fn wait_subscribed(&mut self, port: u16) {
        for _ in 0..100 {
            publish(port, "test/ready", "1").await;
            if let Ok(Some(o)) =
                tokio::time::timeout(Duration::from_millis(200), self.rx.recv()).await
            {
                assert_eq!(o.sensor.id, "ready");
                // Drain further ready readings still on their way.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(300), self.rx.recv()).await
                {
                }
                return;
            }
        }
        panic!("the agent never subscribed");
    }

    async fn stop(self) -> Arc<AgentStats> {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.sensors.join())
            .await
            .expect("sensors stop");
        self.stats
    }
}

/// Publishes one QoS 1 message and waits for the broker's PUBACK.
async fn publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>) {
    tributary_tests::mosquitto::publish(port, topic, payload)
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_and_json_payloads_become_readings_with_ids_from_the_topic() {
    let broker = Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    let mut agent = Agent::start(&config(port, "agent-plain-json"));
    agent.wait_subscribed(port).await;

    publish(port, "test/plain", "21.5").await;
    publish(port, "tasmota/switch", "ON").await;
    publish(
        port,
        "zigbee2mqtt/kitchen",
        r#"{"temperature": 22.25, "humidity": 41, "linkquality": 90}"#,
    )
    .await;
    publish(
        port,
        "zigbee2mqtt/cellar",
        r#"{"temperature": 12.5, "humidity": 78.5}"#,
    )
    .await;

    let mut got = BTreeMap::new();
    while got.len() < 6 {
        let o = agent.next().await;
        got.insert(
            o.sensor.id.clone(),
            (o.value, o.sensor.unit.clone(), o.sensor.tags.clone()),
        );
    }
    let zigbee = vec![("source".to_owned(), "zigbee".to_owned())];
    let c = Some("°C".to_owned());
    let pct = Some("%".to_owned());
    assert_eq!(got["plain"], (Value::Float(21.5), c.clone(), vec![]));
    assert_eq!(got["switch"], (Value::Bool(true), None, vec![]));
    assert_eq!(
        got["kitchen_temperature"],
        (Value::Float(22.25), c.clone(), zigbee.clone())
    );
    assert_eq!(
        got["kitchen_humidity"],
        (Value::Int(41), pct.clone(), vec![])
    );
    assert_eq!(got["cellar_temperature"], (Value::Float(12.5), c, zigbee));
    assert_eq!(got["cellar_humidity"], (Value::Float(78.5), pct, vec![]));
    let stats = agent.stop().await;
    assert_eq!(stats.sensor("kitchen_temperature").readings, 1);
    assert_eq!(stats.sensors().values().map(|c| c.errors).sum::<u64>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_payloads_are_counted_and_the_flow_goes_on() {
    let broker = Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    let mut agent = Agent::start(&config(port, "agent-garbage"));
    agent.wait_subscribed(port).await;

    publish(port, "test/plain", "hot").await;
    publish(port, "test/plain", vec![0xff, 0xfe, 0x00]).await;
    publish(port, "test/plain", "NaN").await;
    publish(port, "test/plain", "1".repeat(2000)).await; // over max_payload (1 KiB)
    publish(port, "test/plain", "").await;
    publish(port, "zigbee2mqtt/attic", r#"{"humidity": 55}"#).await; // no /temperature
    publish(port, "zigbee2mqtt/attic", "{not json").await;
    publish(
        port,
        "zigbee2mqtt/a b",
        r#"{"temperature": 1, "humidity": 2}"#,
    )
    .await; // bad id
    publish(port, "test/plain", "5").await;

    // Messages of one publisher arrive in order; the last one proves the
    // client survived everything before it.
    let first = agent.next().await;
    assert_eq!(
        (first.sensor.id.as_str(), &first.value),
        ("attic_humidity", &Value::Int(55))
    );
    let last = agent.next().await;
    assert_eq!(
        (last.sensor.id.as_str(), &last.value),
        ("plain", &Value::Int(5))
    );

    let stats = agent.stop().await;
    assert_eq!(stats.sensor("plain").errors, 5);
    assert_eq!(stats.sensor("plain").readings, 1);
    assert_eq!(stats.sensor("attic_temperature").errors, 2);
    assert_eq!(stats.sensor("attic_humidity").errors, 1);
    assert_eq!(stats.sensor("{1}_temperature").errors, 1);
    assert_eq!(stats.sensor("{1}_humidity").errors, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_while_the_agent_is_stopped_arrives_after_it_restarts() {
    let broker = Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    let cfg = config(port, "agent-persistent");
    let mut agent = Agent::start(&cfg);
    agent.wait_subscribed(port).await;
    agent.stop().await;

    // Nobody is subscribed now; the broker keeps the message for the
    // persistent session of client id "agent-persistent".
    publish(port, "test/plain", "7").await;
    publish(port, "zigbee2mqtt/garage", r#"{"temperature": 3.5}"#).await;

    let mut agent = Agent::start(&cfg);
    let a = agent.next().await;
    let b = agent.next().await;
    assert_eq!((a.sensor.id.as_str(), a.value), ("plain", Value::Int(7)));
    assert_eq!(
        (b.sensor.id.as_str(), b.value),
        ("garage_temperature", Value::Float(3.5))
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_the_broker_restarts() {
    let mut broker = Mosquitto::start().expect("mosquitto");
    let port = broker.port();
    let mut agent = Agent::start(&config(port, "agent-reconnect"));
    agent.wait_subscribed(port).await;

    broker.restart().expect("mosquitto restarts");
    // The session (and its subscriptions) may or may not have survived the
    // kill; either way the agent resubscribes on reconnecting.
    agent.wait_subscribed(port).await;
    publish(port, "test/plain", "8").await;
    let o = agent.next().await;
    assert_eq!((o.sensor.id.as_str(), o.value), ("plain", Value::Int(8)));
    agent.stop().await;
}
