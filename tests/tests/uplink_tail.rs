//! `tributary-uplink tail` against a real tansu broker, as a user runs it:
//! `--format json` prints each record exactly as stored; `--age` appends
//! each arriving reading's age (`stored` for one already in Kafka when it
//! started) and a latency summary goes to stderr when it stops
//! (at the end, or on SIGTERM while following); partition ends print no
//! librdkafka error lines; an unreachable broker is one clean error line
//! and exit code 1 within the connect timeout.

use rdkafka::producer::{FutureProducer, FutureRecord};
use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tributary_tests::{Kafka, bins};

const TOPIC: &str = "readings";

/// A stored reading of sensor `temp`, taken `ago` before now.
fn record(seq: u64, ago: Duration) -> Vec<u8> {
    let ts = SystemTime::now() - ago;
    let ns = ts.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64;
    format!(
        r#"{{"id":"pi-1:7:{seq}","device":"pi-1","sensor":"temp","epoch":7,"seq":{seq},"ts":"{}","value":{seq},"tags":{{}}}}"#,
        tributary_wire::json::rfc3339(ns)
    )
    .into_bytes()
}

async fn produce(kafka: &Kafka, payloads: &[Vec<u8>]) {
    let producer: FutureProducer = kafka
        .client_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .unwrap();
    for p in payloads {
        producer
            .send(
                FutureRecord::to(TOPIC).key("pi-1").payload(p),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

fn tail(kafka_bootstrap: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bins::uplink().unwrap());
    cmd.args(["tail", "--brokers", kafka_bootstrap, "--topic", TOPIC])
        .args(args)
        .env("TRIBUTARY_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// No librdkafka error lines, no partition-end noise.
fn assert_quiet(stderr: &str) {
    for bad in ["ERROR", "PartitionEOF", "librdkafka", "error"] {
        assert!(!stderr.contains(bad), "{bad:?} in stderr:\n{stderr}");
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_json_as_stored_marks_readings_already_in_kafka_and_logs_no_errors() {
    let kafka = Kafka::start_memory().unwrap();
    kafka.create_topic(TOPIC, 3).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=5)
        .map(|seq| record(seq, Duration::from_millis(500)))
        .collect();
    produce(&kafka, &payloads).await;
    let bootstrap = kafka.bootstrap();

    // JSON: the stored bytes, one per line, in partition order.
    let out =
        run(tail(&bootstrap, &["--from-beginning", "--format", "json"]).stdout(Stdio::piped()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<Vec<u8>> = out
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    lines.sort();
    let mut expected = payloads.clone();
    expected.sort();
    assert_eq!(lines, expected);
    assert_quiet(&text(&out.stderr));

    // Human with ages: all five were in Kafka before tail started, so none
    // arrived while it watched: each line says so, the summary counts none.
    let out = run(tail(&bootstrap, &["--from-beginning", "--age"]).stdout(Stdio::piped()));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 5, "{stdout}");
    for line in stdout.lines() {
        assert!(
            line.ends_with(" stored") && !line.contains(" age="),
            "{line}"
        );
    }
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("age on arrival: no readings\n")
            && stderr.contains("5 readings already in Kafka when tail started are not in it"),
        "{stderr}"
    );
    assert_quiet(&stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_tail_shows_new_readings_and_its_summary_when_terminated() {
    let kafka = Kafka::start_memory().unwrap();
    kafka.create_topic(TOPIC, 2).unwrap();
    produce(&kafka, &[record(1, Duration::ZERO)]).await;
    let mut child = tail(&kafka.bootstrap(), &["--follow", "--age"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = |rx: &mpsc::Receiver<String>| {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a line within 30 s")
    };
    let first = next_line(&rx);
    assert!(
        first.contains("seq=1 ") && first.ends_with(" stored"),
        "{first}"
    );
    // New readings arrive while it follows, past every partition's end.
    produce(
        &kafka,
        &[record(2, Duration::ZERO), record(3, Duration::ZERO)],
    )
    .await;
    let mut seen = vec![next_line(&rx), next_line(&rx)];
    seen.sort();
    assert!(
        seen[0].contains("seq=2 ") && seen[1].contains("seq=3 "),
        "{seen:?}"
    );
    assert!(seen.iter().all(|l| l.contains(" age=")), "{seen:?}");

    sigterm(child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "tail did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("age on arrival of 2 readings: p50 ")
            && stderr.contains("1 readings already in Kafka when tail started are not in it"),
        "{stderr}"
    );
    assert_quiet(&stderr);
}

/// SIGTERM to the child `pid`, as a user or systemd sends it.
fn sigterm(pid: u32) {
    tributary_tests::process::send_signal(pid, libc::SIGTERM).unwrap();
}

#[test]
fn an_unreachable_broker_is_one_error_line_and_exit_code_1_within_the_timeout() {
    // From the harness, so the Kafka broker of the test running alongside can never be given
    // the same port (a bare bind-and-close once handed this test that broker's port in CI).
    let port = tributary_tests::ports::free_port();
    let started = Instant::now();
    let out = run(tail(
        &format!("127.0.0.1:{port}"),
        &["--follow", "--age", "--connect-timeout", "2s"],
    )
    .stdout(Stdio::piped()));
    let waited = started.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(waited < Duration::from_secs(8), "{waited:?}");
    assert!(out.stdout.is_empty());
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.trim_end(),
        format!("error: tail of {TOPIC} at 127.0.0.1:{port}: no Kafka broker answered within 2s"),
        "exactly one line"
    );
}
