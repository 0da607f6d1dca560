//! Starting Tributary's own programs in tests: the agent and the uplink as
//! real processes with a config file in their temp dir, plus helpers to
//! create the hub stream and read back what it holds.

use crate::{NatsServer, ProcessSpec, Result, ServerProcess, bins};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tributary_wire::Envelope;

/// The stream name the tests use.
pub const STREAM: &str = "TRIBUTARY";

/// Starts `tributary-agent run` with `config` written into its temp dir.
pub fn start_agent(config: &str) -> Result<ServerProcess> {
    start_program("agent", bins::agent()?, config, &[])
}

/// [`start_agent`] with extra environment variables (`NOTIFY_SOCKET`, a
/// secret the config names…).
pub fn start_agent_with_env(config: &str, env: &[(&str, &OsStr)]) -> Result<ServerProcess> {
    start_program("agent", bins::agent()?, config, env)
}

/// Starts `tributary-uplink run` with `config` written into its temp dir.
pub fn start_uplink(config: &str) -> Result<ServerProcess> {
    start_program("uplink", bins::uplink()?, config, &[])
}

/// Starts `program run --config <temp dir>/<name>.toml` holding `config`,
/// logging at debug for Tributary's crates unless `env` sets
/// `TRIBUTARY_LOG` (later entries of `env` win).
pub fn start_program(
    name: &str,
    program: PathBuf,
    config: &str,
    env: &[(&str, &OsStr)],
) -> Result<ServerProcess> {
    let dir = tempfile::tempdir()
        .map_err(|e| crate::HarnessError::io("creating temp dir", Path::new("/tmp"), e))?;
    let path = dir.path().join(format!("{name}.toml"));
    std::fs::write(&path, config)
        .map_err(|e| crate::HarnessError::io("writing config", &path, e))?;
    let mut spec = ProcessSpec::new(name, program)
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env(
            "TRIBUTARY_LOG",
            "info,tributary_agent=debug,tributary_uplink=debug",
        );
    for (key, value) in env {
        spec = spec.env(key, value);
    }
    ServerProcess::start(spec, dir)
}

/// An agent configuration: `device` talking to `leaf`, state in
/// `state_dir`, fast flushes and retries for tests, then `sensors` (TOML
/// of `[[sensors.*]]` tables) appended.
pub fn agent_config(device: &str, leaf: &NatsServer, state_dir: &Path, sensors: &str) -> String {
    agent_config_at(device, &leaf.client_url(), state_dir, sensors)
}

/// [`agent_config`] for a NATS URL that need not be a running server (a
/// port nothing listens on, to test an agent that never reaches its leaf).
pub fn agent_config_at(device: &str, url: &str, state_dir: &Path, sensors: &str) -> String {
    format!(
        r#"
[agent]
device = "{device}"
state_dir = "{state}"

[nats]
urls = ["{leaf}"]

[buffer]
flush_interval = "200ms"

[forward]
ack_timeout = "2s"
backoff_initial = "100ms"
backoff_max = "1s"

{sensors}
"#,
        state = state_dir.display(),
        leaf = url
    )
}

#[cfg(feature = "kafka")]
/// An uplink configuration draining `hub` into `topic` on `kafka` (created
/// with 3 partitions) through the durable consumer `durable`.
pub fn uplink_config(hub: &NatsServer, kafka: &crate::Kafka, topic: &str, durable: &str) -> String {
    uplink_config_for(&[hub.client_url()], 1, kafka, topic, durable)
}

#[cfg(feature = "kafka")]
/// [`uplink_config`] for the nodes `urls` of a hub (e.g. a
/// [`crate::NatsCluster`]'s `client_urls()`), the stream at `replicas`.
pub fn uplink_config_for(
    urls: &[String],
    replicas: u32,
    kafka: &crate::Kafka,
    topic: &str,
    durable: &str,
) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"
[nats]
urls = [{hub}]

[stream]
name = "{STREAM}"
subjects = ["tributary.>"]
replicas = {replicas}

[consumer]
durable = "{durable}"
ack_wait = "5s"

[kafka]
brokers = "{kafka}"
topic = "{topic}"
create_topics = true
partitions = 3
"#,
        hub = urls.join(", "),
        kafka = kafka.bootstrap()
    )
}

/// Creates the readings stream on `hub` (file storage, 2 minute duplicate
/// window), retrying while JetStream warms up.
pub async fn create_stream(hub: &NatsServer) -> Result<async_nats::jetstream::stream::Stream> {
    create_stream_of(hub, STREAM, "tributary.>", Duration::from_secs(120)).await
}

/// [`create_stream`] with a duplicate window of `window` (short, to test
/// resends that come after it).
pub async fn create_stream_with_window(
    hub: &NatsServer,
    window: Duration,
) -> Result<async_nats::jetstream::stream::Stream> {
    create_stream_of(hub, STREAM, "tributary.>", window).await
}

/// Creates the command stream on `hub` as the uplink does (file storage,
/// limits retention, 2 minute duplicate window) for the default control
/// prefix `tributary-ctl`, retrying while JetStream warms up.
pub async fn create_command_stream(
    hub: &NatsServer,
) -> Result<async_nats::jetstream::stream::Stream> {
    create_stream_of(
        hub,
        tributary_wire::command::COMMAND_STREAM,
        &tributary_wire::command::stream_subject("tributary-ctl"),
        Duration::from_secs(120),
    )
    .await
}

async fn create_stream_of(
    hub: &NatsServer,
    name: &str,
    subject: &str,
    duplicate_window: Duration,
) -> Result<async_nats::jetstream::stream::Stream> {
    let client = hub.connect().await?;
    let js = async_nats::jetstream::new(client);
    let mut last = String::new();
    for _ in 0..100 {
        match js
            .get_or_create_stream(async_nats::jetstream::stream::Config {
                name: name.to_owned(),
                subjects: vec![subject.to_owned()],
                storage: async_nats::jetstream::stream::StorageType::File,
                duplicate_window,
                ..Default::default()
            })
            .await
        {
            Ok(s) => return Ok(s),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(js_err("create the stream", last))
}

/// Every envelope the hub's stream holds, in stream order, decoded.
pub async fn stream_envelopes(hub: &NatsServer) -> Result<Vec<Envelope>> {
    let client = hub.connect().await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(STREAM)
        .await
        .map_err(|e| js_err("get the stream", e))?;
    let info = stream.info().await.map_err(|e| js_err("stream info", e))?;
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut out = Vec::new();
    for seq in first..=last {
        if last == 0 {
            break;
        }
        let msg = stream
            .get_raw_message(seq)
            .await
            .map_err(|e| js_err(&format!("get message {seq}"), e))?;
        let env = Envelope::decode(&msg.payload)
            .map_err(|e| js_err(&format!("decode message {seq}"), e))?;
        out.push(env);
    }
    Ok(out)
}

/// [`stream_envelopes`] once the stream stopped growing (two reads `quiet`
/// apart find the same count): what the agents delivered after they settled.
pub async fn settled_stream_envelopes(hub: &NatsServer, quiet: Duration) -> Result<Vec<Envelope>> {
    let mut last = usize::MAX;
    loop {
        let envs = stream_envelopes(hub).await?;
        if envs.len() == last {
            return Ok(envs);
        }
        last = envs.len();
        tokio::time::sleep(quiet).await;
    }
}

/// The values of `0..=max(values)` that are not in `values` (the readings of
/// a counter sensor that never arrived).
pub fn missing_counter_values(values: &std::collections::BTreeSet<i64>) -> Vec<i64> {
    let last = *values.last().expect("some readings arrived");
    (0..=last).filter(|v| !values.contains(v)).collect()
}

/// SIGTERM to `agent`; it must exit 0 within 20 s (its log tail otherwise).
pub fn stop_cleanly(agent: &mut ServerProcess) -> Result<()> {
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        agent.log_tail(30)
    );
    Ok(())
}

/// The value of the unlabelled sample `name` on the Prometheus text endpoint
/// `127.0.0.1:port` (as the agent and uplink serve it on `GET /metrics`),
/// retrying for a few seconds while the endpoint is not up yet.
pub fn scrape_metric(port: u16, name: &str) -> Result<f64> {
    let err = |reason: String| crate::HarnessError::Metrics { port, reason };
    let body = scrape_body(port)?;
    let line = body
        .lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .ok_or_else(|| err(format!("no sample {name}")))?;
    line.rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err(format!("bad sample line {line:?}")))
}

/// The whole `GET /metrics` answer of `127.0.0.1:port`, retrying for a few
/// seconds while the endpoint is not up yet.
pub fn scrape_body(port: u16) -> Result<String> {
    use std::io::{Read, Write};
    let mut last = String::new();
    for _ in 0..50 {
        let body = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        });
        match body {
            Ok(body) => return Ok(body),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(crate::HarnessError::Metrics { port, reason: last })
}

fn js_err(what: &str, reason: impl std::fmt::Display) -> crate::HarnessError {
    crate::HarnessError::JetStream {
        what: what.to_owned(),
        reason: reason.to_string(),
    }
}

/// Runs `tributary-uplink fleet --server <url> --timeout 2s <args…>` (the
/// central command) to its end; its output and exit status.
pub fn run_fleet(url: &str, args: &[&str]) -> Result<std::process::Output> {
    let bin = bins::uplink()?;
    std::process::Command::new(&bin)
        .args(["fleet", "--server", url, "--timeout", "2s"])
        .args(args)
        .env("TRIBUTARY_LOG", "warn")
        .env_remove("TRIBUTARY_UPLINK_CONFIG")
        .output()
        .map_err(|e| crate::HarnessError::io("running the fleet command", &bin, e))
}

/// Milliseconds since the Unix epoch, as commands carry them.
pub fn now_ms() -> u64 {
    crate::bench::now_ns() / 1_000_000
}

/// A command as the uplink makes it from record `offset` of partition 0
/// of topic `commands`, issued now and expiring in ten minutes.
pub fn command(
    device: &str,
    id: &str,
    actuator: &str,
    value: tributary_wire::control::JsonValue,
    offset: i64,
) -> tributary_wire::command::Command {
    let issued_at_ms = now_ms();
    tributary_wire::command::Command {
        format: tributary_wire::command::COMMAND_FORMAT,
        id: id.to_owned(),
        device: device.to_owned(),
        actuator: actuator.to_owned(),
        value,
        issued_at_ms,
        expires_at_ms: issued_at_ms + 600_000,
        source: tributary_wire::command::KafkaPosition {
            topic: "commands".into(),
            partition: 0,
            offset,
        },
    }
}

/// Publishes `cmd` into the command stream (control prefix
/// `tributary-ctl`) as the uplink does, with its `Nats-Msg-Id`, and waits
/// for the hub's acknowledgement.
pub async fn publish_command(
    js: &async_nats::jetstream::Context,
    cmd: &tributary_wire::command::Command,
) -> Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", cmd.source.msg_id().as_str());
    let body = serde_json::to_vec(cmd).map_err(|e| js_err("encode the command", e))?;
    js.publish_with_headers(
        tributary_wire::command::command_subject("tributary-ctl", &cmd.device, &cmd.actuator),
        headers,
        body.into(),
    )
    .await
    .map_err(|e| js_err("publish the command", e))?
    .await
    .map_err(|e| js_err("the command's acknowledgement", e))?;
    Ok(())
}

/// A `[[actuators.command]]` `count` (any number) that appends each value
/// it is set to as a line of `log`: the file shows every application.
pub fn counting_actuator(log: &Path) -> String {
    format!(
        r#"
[[actuators.command]]
id = "count"
program = "/bin/sh"
args = ["-c", "echo \"$0\" >> {}", "{{value}}"]
accepts = {{ kind = "number" }}
"#,
        log.display()
    )
}
