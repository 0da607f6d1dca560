//! Hostile input at the edge, all at once, in one real agent process (issue
//! #11 item 6): sensor files that return garbage, are enormous, vanish or
//! block; commands that hang, flood their output or exit non-zero; MQTT
//! payloads that are not numbers, not UTF-8, deeply nested or too large.
//! Each is counted as an error of its own sensor, the process stays up, and
//! a counter sensor beside them keeps its schedule gapless into the hub,
//! while the MQTT flow goes on after the worst payloads.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::mosquitto::publish;
use tributary_tests::tributary::{
    agent_config, create_stream, scrape_body, start_agent, stream_envelopes,
};
use tributary_tests::{Mosquitto, NatsServer, Result, free_port};
use tributary_wire::{Envelope, Value};

/// The hostile sensors around `dir` (files made here), MQTT on `mqtt`.
fn hostile_sensors(dir: &Path, mqtt: u16, metrics: u16) -> String {
    let file = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    format!(
        r#"
[mqtt]
host = "127.0.0.1"
port = {mqtt}
max_payload = "1 KiB"

[metrics]
listen = "127.0.0.1:{metrics}"

[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "20ms"

[[sensors.file]]
id = "garbage"
path = {garbage}
interval = "200ms"

[[sensors.file]]
id = "huge"
path = {huge}
interval = "200ms"

[[sensors.file]]
id = "vanishing"
path = {vanishing}
interval = "200ms"

[[sensors.file]]
id = "blocked"
path = {blocked}
interval = "200ms"

[[sensors.command]]
id = "hangs"
command = ["sleep", "1000"]
timeout = "300ms"
interval = "500ms"

[[sensors.command]]
id = "floods"
command = ["yes", "1"]
timeout = "300ms"
interval = "500ms"

[[sensors.command]]
id = "fails"
command = ["sh", "-c", "echo 5; exit 3"]
interval = "500ms"

[[sensors.mqtt]]
id = "plain"
topic = "hostile/plain"

[[sensors.mqtt]]
id = "nested"
topic = "hostile/json"
pointer = "/a/b"
"#,
        garbage = file("garbage"),
        huge = file("huge"),
        vanishing = file("vanishing"),
        blocked = file("blocked"),
    )
}

/// The last value of `sensor` in `envs`.
fn last_value(envs: &[Envelope], sensor: &str) -> Option<Value> {
    envs.iter()
        .filter(|e| e.sensor == sensor)
        .flat_map(|e| e.samples.last())
        .last()
        .map(|s| s.value.clone())
}

/// Waits until the stream's last value of `sensor` is `want`, doing `poke`
/// before each look.
async fn wait_for_value<F, Fut>(hub: &NatsServer, sensor: &str, want: Value, mut poke: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        poke().await;
        let envs = stream_envelopes(hub).await.unwrap_or_default();
        if last_value(&envs, sensor) == Some(want.clone()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sensor} never reached {want:?} (last {:?})",
            last_value(&envs, sensor)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The error counter of each sensor on the agent's metrics endpoint.
fn errors(metrics: u16) -> Result<std::collections::BTreeMap<String, f64>> {
    let body = scrape_body(metrics)?;
    Ok(body
        .lines()
        .filter_map(|l| l.strip_prefix("tributary_agent_sensor_errors_total{sensor=\""))
        .filter_map(|l| {
            let (id, rest) = l.split_once("\"}")?;
            Some((id.to_owned(), rest.trim().parse().ok()?))
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sensors_and_payloads_are_counted_while_the_agent_stays_up_and_the_rest_flows()
-> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let broker = Mosquitto::start()?;
    let state = tempfile::tempdir().expect("temp dir");
    let dir = state.path();
    std::fs::write(dir.join("garbage"), b"\xff\xfe no number here\n").expect("write");
    std::fs::write(dir.join("huge"), vec![b'1'; 8 << 20]).expect("write");
    std::fs::write(dir.join("vanishing"), "7\n").expect("write");
    let made = std::process::Command::new("mkfifo")
        .arg(dir.join("blocked"))
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let metrics = free_port();
    let sensors = hostile_sensors(dir, broker.port(), metrics);
    let mut agent = start_agent(&agent_config("pi-hostile", &leaf, dir, &sensors))?;
    let port = broker.port();

    // Once the MQTT client is subscribed, its plain numbers arrive.
    wait_for_value(&hub, "plain", Value::Int(1), || async {
        publish(port, "hostile/plain", "1").await.expect("publish");
    })
    .await;
    wait_for_value(&hub, "vanishing", Value::Float(7.0), || async {}).await;

    // The worst of MQTT, then a number that must still come through.
    let nested = format!("{}1{}", "{\"a\":".repeat(20_000), "}".repeat(20_000));
    for (topic, payload) in [
        ("hostile/json", nested.into_bytes()),
        ("hostile/json", b"{\"a\": {\"b\": \"warm\"}}".to_vec()),
        ("hostile/plain", b"NaN".to_vec()),
        ("hostile/plain", vec![0xff, 0xfe, 0x00]),
        ("hostile/plain", vec![b'1'; 2 << 20]),
        ("hostile/plain", vec![b'2'; 4096]),
        ("hostile/plain", b"42".to_vec()),
    ] {
        publish(port, topic, payload).await?;
    }
    wait_for_value(&hub, "plain", Value::Int(42), || async {}).await;

    // A file that vanishes is an error until it comes back.
    std::fs::remove_file(dir.join("vanishing")).expect("remove");
    let deadline = Instant::now() + Duration::from_secs(10);
    while errors(metrics)?.get("vanishing").copied().unwrap_or(0.0) < 1.0 {
        assert!(
            Instant::now() < deadline,
            "a vanished file counted no error"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(dir.join("vanishing"), "8\n").expect("write");
    wait_for_value(&hub, "vanishing", Value::Float(8.0), || async {}).await;

    let expected = [
        ("garbage", 1.0),
        ("huge", 1.0),
        ("blocked", 1.0),
        ("hangs", 1.0),
        ("floods", 1.0),
        ("fails", 1.0),
        ("vanishing", 1.0),
        ("nested", 1.0),
        ("plain", 3.0),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counted = errors(metrics)?;
        let short: Vec<_> = expected
            .iter()
            .filter(|(sensor, at_least)| counted.get(*sensor).copied().unwrap_or(0.0) < *at_least)
            .collect();
        if short.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "too few errors counted for {short:?}: {counted:?}\n{}",
            agent.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The counter beside all that keeps its schedule, gapless.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let envs = stream_envelopes(&hub).await?;
        let values: BTreeSet<i64> = envs
            .iter()
            .filter(|e| e.sensor == "count")
            .flat_map(|e| e.samples.iter())
            .filter_map(|s| match s.value {
                Value::Int(v) => Some(v),
                _ => None,
            })
            .collect();
        let last = values.iter().next_back().copied().unwrap_or(0);
        if values.len() > 100 && values.len() as i64 == last + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gapless run of 100 counter readings: {} readings, last {last}",
            values.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(agent.is_running(), "{}", agent.log_tail(40));
    let status = agent.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "exit {status}:\n{}", agent.log_tail(40));
    Ok(())
}
