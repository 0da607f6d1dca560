//! The agent's promises against real nats-server processes (a hub with
//! JetStream and a leaf): readings buffered while the hub is away arrive once
//! when it returns, and SIGKILL at random moments loses nothing outside the
//! documented flush window and never repeats a sequence number.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary_tests::tributary::{
    agent_config, create_stream, settled_stream_envelopes, start_agent, stream_envelopes,
};
use tributary_tests::{NatsServer, Result};
use tributary_wire::{Envelope, Value};

const COUNTER: &str = r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "20ms"
"#;

/// (seq, counter value, timestamp) of every counter reading in the stream.
fn counter_readings(envs: &[Envelope]) -> Vec<(u64, i64, i64)> {
    envs.iter()
        .filter(|e| e.sensor == "count")
        .flat_map(|e| e.samples.iter())
        .map(|s| match s.value {
            Value::Int(v) => (s.seq, v, s.timestamp_ns),
            ref other => panic!("counter value {other:?}"),
        })
        .collect()
}

fn assert_no_sequence_repeats(readings: &[(u64, i64, i64)]) {
    let mut seen = BTreeMap::new();
    for (seq, value, _) in readings {
        if let Some(prev) = seen.insert(*seq, *value) {
            panic!("sequence {seq} appears twice (values {prev} and {value})");
        }
    }
}

/// Stops the agent cleanly (it must exit 0), waits for the stream to stop
/// growing and returns its counter readings, checking that no sequence
/// number appears twice.
async fn stop_and_collect(
    agent: &mut tributary_tests::ServerProcess,
    hub: &NatsServer,
) -> Result<Vec<(u64, i64, i64)>> {
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        agent.log_tail(40)
    );
    let readings =
        counter_readings(&settled_stream_envelopes(hub, Duration::from_millis(1500)).await?);
    assert_no_sequence_repeats(&readings);
    Ok(readings)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_buffered_while_the_hub_is_away_reach_the_stream_once_when_it_returns()
-> Result<()> {
    let mut hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(&agent_config("pi-outage", &leaf, state.path(), COUNTER))?;

    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = counter_readings(&stream_envelopes(&hub).await?).len();
    assert!(
        before > 0,
        "nothing arrived before the outage:\n{}",
        agent.log_tail(30)
    );

    // The leaf is cut off from its hub for a while; the agent keeps reading
    // its sensor into the buffer.
    hub.kill()?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    hub.restart()?;
    leaf.wait_leaf_connected(Duration::from_secs(30))?;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let mut readings = stop_and_collect(&mut agent, &hub).await?;
    readings.sort_by_key(|r| r.1);
    let values: Vec<i64> = readings.iter().map(|r| r.1).collect();
    let expected: Vec<i64> = (0..values.len() as i64).collect();
    assert_eq!(
        values, expected,
        "every counter reading exactly once, none missing"
    );
    // 20 ms readings over ~9 s, at least 4 s of them during the outage.
    assert!(
        values.len() > before + 150,
        "{} readings, {before} before the outage",
        values.len()
    );
    assert!(
        agent.log().contains("publishing to the hub failed"),
        "the outage was seen by the agent"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_outside_the_flush_window_and_never_repeats_a_sequence()
-> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(&agent_config("pi-crash", &leaf, state.path(), COUNTER))?;
    let flush_window = Duration::from_millis(200);

    let mut kills = Vec::new();
    for round in 0..6u64 {
        // Pseudo-random moments, different each round and run.
        let jitter = (SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64
            + round * 7919)
            % 1200;
        tokio::time::sleep(Duration::from_millis(700 + jitter)).await;
        agent.kill()?;
        kills.push(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64,
        );
        agent.respawn()?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut readings = stop_and_collect(&mut agent, &hub).await?;
    // Sequence numbers only grow across restarts, so sorting by them lines up
    // the runs of the 7 agent processes; each run's counter starts at 0.
    readings.sort_by_key(|r| r.0);
    let mut runs: Vec<Vec<(u64, i64, i64)>> = Vec::new();
    for r in readings {
        match runs.last_mut() {
            Some(run) if r.1 > run.last().expect("non-empty").1 => run.push(r),
            _ => runs.push(vec![r]),
        }
    }
    assert_eq!(runs.len(), kills.len() + 1, "one run per agent process");
    for (i, run) in runs.iter().enumerate() {
        let values: Vec<i64> = run.iter().map(|r| r.1).collect();
        let expected: Vec<i64> = (0..values.len() as i64).collect();
        assert_eq!(
            values, expected,
            "run {i}: only the tail may be lost, never a reading in the middle"
        );
        if let Some(kill) = kills.get(i) {
            let last_ts = run.last().expect("non-empty").2;
            let lost_window = Duration::from_nanos((kill - last_ts).max(0) as u64);
            assert!(
                lost_window <= flush_window * 2 + Duration::from_millis(600),
                "run {i}: the last delivered reading is {lost_window:?} older than the kill; \
                 the flush window is {flush_window:?}"
            );
        }
    }
    Ok(())
}
