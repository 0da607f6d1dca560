//! What the programs print when their output is captured (a file, a pipe,
//! journald), never a terminal: no control characters at all (no ESC
//! colour codes, nothing below 0x20 but newline and tab), so journald stores
//! every line as text; under systemd (`JOURNAL_STREAM` naming stderr) a
//! syslog priority on every line and no timestamp of their own; and
//! librdkafka's reports of an unreachable broker rate-limited.
//!
//! The agent runs against real hub and leaf nats-servers with a sensor
//! whose errors carry an ESC and a carriage return (its file path has them),
//! the uplink against a real hub with no Kafka listening.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{agent_config, create_stream, stream_envelopes};
use tributary_tests::{NatsServer, ProcessSpec, ServerProcess, bins, free_port};

/// The control characters in `text` other than newline and tab, with the
/// line they are on.
fn control_characters(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.chars().any(|c| c.is_control() && c != '\t'))
        .map(|l| format!("{l:?}"))
        .collect()
}

/// Sensors: one that works, one whose path (and so its error) holds an
/// ESC colour code and a carriage return.
const SENSORS: &str = r#"
[[sensors.simulated]]
id = "ok"
waveform = "counter"
interval = "100ms"

[[sensors.file]]
id = "broken"
path = "/nonexistent/\u001bred\r"
interval = "100ms"
"#;

/// Polls `done` every 100 ms for at most `limit`.
async fn eventually(limit: Duration, what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts `tributary-agent run` with its output in `<dir>/agent.log`;
/// with `journal`, `JOURNAL_STREAM` names that file, as systemd names the
/// stream it connects to stderr.
fn start_agent(config: &str, journal: bool) -> ServerProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).expect("write config");
    let log = dir.path().join("agent.log");
    std::fs::write(&log, "").expect("create log");
    let mut spec = ProcessSpec::new("agent", bins::agent().expect("agent binary"))
        .arg("run")
        .arg("--config")
        .arg(&path)
        .env("TRIBUTARY_LOG", "info");
    if journal {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&log).expect("log metadata");
        spec = spec.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    ServerProcess::start(spec, dir).expect("start agent")
}

/// Runs the agent until a reading reached the hub and the broken sensor
/// failed, stops it, and returns what it printed (without the harness's
/// own lines).
async fn agent_output(journal: bool) -> String {
    let hub = NatsServer::hub().expect("hub");
    let leaf = NatsServer::leaf(&hub).expect("leaf");
    create_stream(&hub).await.expect("stream");
    let state = tempfile::tempdir().expect("state dir");
    let mut agent = start_agent(
        &agent_config("pi-logs", &leaf, state.path(), SENSORS),
        journal,
    );
    eventually(
        Duration::from_secs(30),
        "a reading at the hub",
        async || stream_envelopes(&hub).await.is_ok_and(|e| !e.is_empty()),
    )
    .await;
    eventually(
        Duration::from_secs(30),
        "the broken sensor's error",
        async || agent.log().contains("sensor read failed"),
    )
    .await;
    let status = agent
        .terminate(Duration::from_secs(20))
        .expect("stop agent");
    assert!(status.success(), "agent exit {status}\n{}", agent.log());
    agent
        .log()
        .lines()
        .filter(|l| !l.starts_with("=== harness"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_captured_log_has_no_control_characters_even_from_a_hostile_error() {
    let log = agent_output(false).await;
    assert!(log.contains("sensor read failed"), "{log}");
    assert!(
        log.contains("\\u{1b}red\\r"),
        "the ESC and CR are shown escaped:\n{log}"
    );
    assert_eq!(control_characters(&log), Vec::<String>::new(), "{log}");
    // Not the journal: lines keep their own timestamp.
    assert!(log.lines().all(|l| l.starts_with("20")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_every_line_has_a_priority_and_no_timestamp_of_its_own() {
    let log = agent_output(true).await;
    assert_eq!(control_characters(&log), Vec::<String>::new(), "{log}");
    for line in log.lines() {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("no priority prefix: {line:?}\n{log}"));
        assert!(
            !rest.starts_with("20") && !rest.trim_start().starts_with("20"),
            "journald adds the timestamp: {line:?}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("<4>") && l.contains("sensor read failed")),
        "a warning has priority 4:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.starts_with("<6>")),
        "info lines have priority 6:\n{log}"
    );
}

/// Runs `program` with `args` and output captured; returns (exit code,
/// stdout and stderr).
fn captured(program: &Path, args: &[&str], dir: &Path) -> (Option<i32>, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env_remove("TRIBUTARY_LOG")
        .env_remove("NO_COLOR")
        .output()
        .expect("run program");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

#[test]
fn check_prints_no_control_characters_for_good_and_bad_configurations() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let agent = bins::agent().expect("agent binary");
    let uplink = bins::uplink().expect("uplink binary");
    std::fs::write(
        d.join("good.toml"),
        format!("[agent]\ndevice = \"pi\"\n{SENSORS}"),
    )
    .unwrap();
    std::fs::write(
        d.join("bad.toml"),
        "[agent]\ndevice = \"pi\"\n[buffer]\nmax_size = \"\\u001b[31m\"\n",
    )
    .unwrap();
    std::fs::write(d.join("uplink.toml"), "[kafka]\nbrokers = \"k:9092\"\n").unwrap();
    std::fs::write(d.join("uplink-bad.toml"), "[kafka]\nbrokers = 7\n").unwrap();
    for (program, file, exit) in [
        (&agent, "good.toml", 0),
        (&agent, "bad.toml", 1),
        (&uplink, "uplink.toml", 0),
        (&uplink, "uplink-bad.toml", 1),
    ] {
        let (code, text) = captured(program, &["check", "--config", file], d);
        assert_eq!(code, Some(exit), "{file}: {text}");
        assert_eq!(
            control_characters(&text),
            Vec::<String>::new(),
            "{file}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_uplinks_captured_log_has_no_control_characters_and_kafka_failures_are_rate_limited() {
    let hub = NatsServer::hub().expect("hub");
    let dir = tempfile::tempdir().expect("temp dir");
    // Nothing listens there: every connection attempt fails.
    let kafka = format!("127.0.0.1:{}", free_port());
    std::fs::write(
        dir.path().join("uplink.toml"),
        format!(
            "[nats]\nurls = [\"{}\"]\n[kafka]\nbrokers = \"{kafka}\"\n",
            hub.client_url()
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, text) = tokio::task::spawn_blocking({
        let dir = dir.path().to_owned();
        move || {
            captured(
                &bins::uplink().expect("uplink binary"),
                &["run", "--config", "uplink.toml"],
                &dir,
            )
        }
    })
    .await
    .expect("uplink");
    assert_eq!(
        code,
        Some(1),
        "Kafka unreachable at start is an error: {text}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{text}");
    assert_eq!(control_characters(&text), Vec::<String>::new(), "{text}");
    let librdkafka_lines = text.lines().filter(|l| l.contains("librdkafka:")).count();
    let client_errors = text
        .lines()
        .filter(|l| l.contains("Kafka client error"))
        .count();
    assert!(
        librdkafka_lines <= 3 && client_errors <= 3,
        "{librdkafka_lines} librdkafka and {client_errors} client error lines:\n{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("ERROR") && l.contains("did not answer"))
            .count(),
        1,
        "the fatal error once:\n{text}"
    );
}
