//! Honest time, end to end: readings taken while the device's clock is not
//! synchronized reach Kafka with `"clock":"unsynced"`, and readings taken
//! after it synchronized carry no clock field, in sequence order, with the
//! agent saying so in its log.
//!
//! The agent asks `timedatectl` (found on `PATH`) when systemd-timesyncd's
//! `/run/systemd/timesync` is absent, as on this test machine; the test puts
//! a stand-in `timedatectl` first on the agent's `PATH` that answers what a
//! file says, and flips that file from `no` to `yes`. On a machine where
//! timesyncd's directory exists it takes precedence, and the test skips.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{agent_config, start_agent_with_env, start_uplink, uplink_config};
use tributary_tests::{Kafka, KafkaReader, NatsServer, Record, Result};
use tributary_wire::Clock;

const TOPIC: &str = "clock.readings";

const SENSORS: &str = r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "100ms"
"#;

fn fake_timedatectl(dir: &Path, state: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("timedatectl");
    std::fs::write(&script, format!("#!/bin/sh\ncat '{}'\n", state.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Readings in sequence order, with their raw JSON.
fn by_seq(records: &[Record]) -> Vec<(u64, Clock, String)> {
    let mut out: Vec<(u64, Clock, String)> = records
        .iter()
        .map(|r| {
            let reading = r.reading().unwrap();
            let raw = String::from_utf8(r.payload.clone().unwrap_or_default()).unwrap();
            (reading.seq, reading.clock, raw)
        })
        .collect();
    out.sort_by_key(|(seq, _, _)| *seq);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_taken_before_the_clock_synchronized_say_unsynced_in_kafka_and_later_ones_do_not()
-> Result<()> {
    if Path::new("/run/systemd/timesync").exists() {
        eprintln!("skipped: systemd-timesyncd's state decides on this machine");
        return Ok(());
    }
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    let kafka = Kafka::start_memory()?;
    let state_dir = tempfile::tempdir().expect("temp dir");
    let bin = tempfile::tempdir().expect("temp dir");
    let state = bin.path().join("synchronized");
    std::fs::write(&state, "no\n").unwrap();
    fake_timedatectl(bin.path(), &state);
    let mut path = OsString::from(bin.path());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());

    let mut uplink = start_uplink(&uplink_config(&hub, &kafka, TOPIC, "clock"))?;
    let mut agent = start_agent_with_env(
        &agent_config("clock-pi", &leaf, state_dir.path(), SENSORS),
        &[("PATH", path.as_os_str())],
    )?;
    let reader = KafkaReader::new(kafka.bootstrap());
    let unsynced = reader
        .read_until_async(TOPIC, 5, Duration::from_secs(60))
        .await?;
    assert!(
        by_seq(&unsynced)
            .iter()
            .all(|(_, c, _)| *c == Clock::Unsynced),
        "{:?}\n{}",
        by_seq(&unsynced),
        agent.log_tail(30)
    );

    // NTP synchronizes the clock; the agent looks again within 5 s.
    std::fs::write(&state, "yes\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut want = 5;
    let readings = loop {
        // Read ever more records (the agent keeps writing) until at least
        // five synced readings are among them.
        want += 20;
        let records = reader
            .read_until_async(TOPIC, want, Duration::from_secs(20))
            .await?;
        let readings = by_seq(&records);
        let synced = readings
            .iter()
            .filter(|(_, c, _)| *c == Clock::Synced)
            .count();
        if synced >= 5 {
            break readings;
        }
        assert!(
            Instant::now() < deadline,
            "no synced readings: {readings:?}\n{}",
            agent.log_tail(30)
        );
    };
    // One switch, in sequence order: unsynced first, then synced, nothing else.
    let first_synced = readings
        .iter()
        .position(|(_, c, _)| *c == Clock::Synced)
        .unwrap();
    for (i, (seq, clock, raw)) in readings.iter().enumerate() {
        if i < first_synced {
            assert_eq!(*clock, Clock::Unsynced, "seq {seq}");
            assert!(raw.contains(r#","clock":"unsynced","#), "{raw}");
        } else {
            assert_eq!(*clock, Clock::Synced, "seq {seq}: {raw}");
            assert!(!raw.contains(r#""clock":"#), "absent when synced: {raw}");
        }
    }

    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(status.success(), "agent exit: {status}");
    let log = agent.log_tail(200);
    assert!(
        log.contains("the system clock is not synchronized"),
        "a warning at start:\n{log}"
    );
    assert!(
        log.contains("the system clock is now synchronized"),
        "an info line when it syncs:\n{log}"
    );
    uplink.terminate(Duration::from_secs(20))?;
    Ok(())
}
