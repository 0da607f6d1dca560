//! `make demo` (`scripts/demo.sh`) on a machine whose usual ports are taken: a process of
//! this test holds 4222 (where Debian's own nats-server service listens) and 9092 (Kafka's
//! port) for the whole run. The demo must move aside by itself, show readings from Kafka,
//! print metrics endpoints that answer, and stop cleanly: exit status 0, no error line, no
//! SIGKILL, nothing it started left running and its ports free again.
//!
//! It runs the binaries of this build and the harness's servers (no install, no build), for
//! `DEMO_SECONDS` seconds: about 15 s in all.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tributary_tests::ports::is_listening;
use tributary_tests::tributary::scrape_body;
use tributary_tests::{bins, pid_exists};

/// The ports the test holds: the leaf's and the broker's defaults.
const HELD: [u16; 2] = [4222, 9092];
const DEMO_SECONDS: u64 = 6;

/// Holds `port` on 127.0.0.1 unless something else already does (then it is taken anyway).
fn hold(port: u16) -> Option<TcpListener> {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(l) => Some(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
        Err(e) => panic!("binding 127.0.0.1:{port}: {e}"),
    }
}

/// Every line the demo printed so far, stdout and stderr interleaved as they came.
type Lines = Arc<Mutex<Vec<String>>>;

fn collect(stream: impl std::io::Read + Send + 'static, lines: &Lines) {
    let lines = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            lines.lock().unwrap().push(line);
        }
    });
}

fn snapshot(lines: &Lines) -> Vec<String> {
    lines.lock().unwrap().clone()
}

/// `port` from `…http://127.0.0.1:<port>/metrics…` after `label`.
fn metrics_port(line: &str, label: &str) -> u16 {
    let rest = &line[line.find(label).unwrap() + label.len()..];
    let rest = rest.trim_start().strip_prefix("http://127.0.0.1:").unwrap();
    rest[..rest.find('/').unwrap()].parse().unwrap()
}

#[test]
fn the_demo_moves_aside_from_taken_ports_shows_readings_and_stops_cleanly() {
    let _held: Vec<TcpListener> = HELD.iter().filter_map(|p| hold(*p)).collect();
    for port in HELD {
        assert!(is_listening(port), "port {port} should be taken");
    }
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut child = Command::new(root.join("scripts/demo.sh"))
        .env("DEMO_SECONDS", DEMO_SECONDS.to_string())
        .env("DEMO_DIR", &demo_dir)
        .env("TRIBUTARY_AGENT_BIN", bins::agent().unwrap())
        .env("TRIBUTARY_UPLINK_BIN", bins::uplink().unwrap())
        .env("TRIBUTARY_NATS_SERVER", bins::nats_server().unwrap())
        .env("TRIBUTARY_TANSU", bins::tansu().unwrap())
        .env_remove("TRIBUTARY_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Lines = Arc::default();
    collect(child.stdout.take().unwrap(), &lines);
    collect(child.stderr.take().unwrap(), &lines);

    // While it runs, the metrics endpoints it printed answer.
    let start = Instant::now();
    let metrics_line = loop {
        if let Some(l) = snapshot(&lines)
            .into_iter()
            .find(|l| l.contains("==> metrics:"))
        {
            break l;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the demo ended before printing its metrics endpoints:\n{}",
            snapshot(&lines).join("\n")
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no metrics line within 60 s:\n{}",
            snapshot(&lines).join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    for (label, metric) in [
        ("agent", "tributary_agent_"),
        ("uplink", "tributary_uplink_"),
    ] {
        let port = metrics_port(&metrics_line, label);
        assert!(!HELD.contains(&port), "{metrics_line}");
        let body = scrape_body(port).unwrap();
        assert!(body.contains(metric), "{label} metrics on {port}: {body}");
    }

    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(DEMO_SECONDS + 90) {
            let _ = tributary_tests::process::send_signal(child.id(), libc::SIGTERM);
            let _ = child.wait();
            panic!(
                "the demo did not end by itself:\n{}",
                snapshot(&lines).join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The output threads end with the demo's (and its tee's) output.
    std::thread::sleep(Duration::from_millis(200));
    let out = snapshot(&lines);
    let text = out.join("\n");
    assert!(status.success(), "the demo exited with {status}:\n{text}");

    let readings = out
        .iter()
        .filter(|l| l.contains(" demo-pi/") && l.contains(" seq="))
        .count();
    assert!(readings > 0, "no readings shown:\n{text}");
    assert!(
        out.iter()
            .any(|l| l == &format!("==> {readings} readings shown")),
        "{text}"
    );
    for port in HELD {
        assert!(
            out.iter()
                .any(|l| l.starts_with(&format!("==> port {port} is taken"))),
            "no word of moving aside from {port}:\n{text}"
        );
    }
    for bad in ["error", "warn", "killed", "terminated", "sigkill"] {
        let found: Vec<&String> = out
            .iter()
            .filter(|l| l.to_lowercase().contains(bad))
            .collect();
        assert!(found.is_empty(), "{bad:?} in the output: {found:?}\n{text}");
    }
    assert!(
        out.iter().any(|l| l.starts_with("age on arrival of ")),
        "the tail's latency summary is shown at the end:\n{text}"
    );
    for log in ["tail.log", "uplink.log", "agent.log", "kafka.log"] {
        let body = std::fs::read_to_string(demo_dir.join(log)).unwrap();
        let errors: Vec<&str> = body.lines().filter(|l| l.contains("ERROR")).collect();
        assert!(errors.is_empty(), "{log}: {errors:?}");
    }

    // Nothing it started is left running, and its ports are free again.
    let pids = std::fs::read_to_string(demo_dir.join("pids")).unwrap();
    let started: Vec<(String, u32)> = pids
        .lines()
        .map(|l| {
            let (name, pid) = l.split_once(' ').unwrap();
            (name.to_owned(), pid.parse().unwrap())
        })
        .collect();
    assert_eq!(
        started.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["nats-hub", "nats-leaf", "kafka", "uplink", "agent", "tail"]
    );
    for (name, pid) in &started {
        assert!(!pid_exists(*pid), "{name} (pid {pid}) is still running");
    }
    let leaf_port = port_after(&text, "leaf nats-server on ");
    let kafka_port = port_after(&text, "Kafka broker (tansu, in memory) on ");
    for port in [leaf_port, kafka_port] {
        assert!(!HELD.contains(&port));
        assert!(!is_listening(port), "port {port} is still open");
    }
}

/// The number printed right after `label` in `text`.
fn port_after(text: &str, label: &str) -> u16 {
    let rest = &text[text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"))
        + label.len()..];
    rest.chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}
