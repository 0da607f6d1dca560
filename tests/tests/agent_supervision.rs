//! The agent's supervision and bounded shutdown against real nats-server
//! processes: SIGTERM with no leaf ever reachable, SIGTERM after the leaf
//! died mid-run, a buffer that fails (the process must end non-zero, not
//! stay half alive), sensors whose reads hang forever, and a second agent
//! on a state directory that is already in use.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{
    agent_config, agent_config_at, create_stream, start_agent, stream_envelopes,
};
use tributary_tests::{NatsServer, Result, ServerProcess, free_port};
use tributary_wire::Envelope;

/// `forward.ack_timeout` of [`agent_config`].
const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// What SIGTERM may take beyond the ack timeout: the last spill, the buffer
/// close, the process exit.
const MARGIN: Duration = Duration::from_secs(3);

const COUNTER: &str = r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "20ms"
"#;

/// [`agent_config`] with a leaf URL nothing listens on, and small segments
/// (so that a spill soon creates a new one).
fn unreachable_config(device: &str, state: &Path, sensors: &str) -> String {
    let url = format!("nats://127.0.0.1:{}", free_port());
    agent_config_at(device, &url, state, sensors)
        .replacen("[buffer]\n", "[buffer]\nsegment_size = \"8 KiB\"\n", 1)
        .replacen(
            "[forward]\n",
            "[forward]\nmax_message_size = \"1 KiB\"\n",
            1,
        )
}

/// Polls `cond` every 50 ms until it holds or `within` passes.
fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn segments_in(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("buffer"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .count()
        })
        .unwrap_or(0)
}

/// SIGTERM, and the time it took to exit 0.
fn terminate_in_bound(agent: &mut ServerProcess) -> Duration {
    let started = Instant::now();
    let status = agent
        .terminate(ACK_TIMEOUT + MARGIN + Duration::from_secs(5))
        .expect("the agent exits after SIGTERM");
    let took = started.elapsed();
    assert!(status.success(), "exit {status}:\n{}", agent.log_tail(30));
    assert!(
        took <= ACK_TIMEOUT + MARGIN,
        "SIGTERM took {took:?}, bound {:?}:\n{}",
        ACK_TIMEOUT + MARGIN,
        agent.log_tail(30)
    );
    took
}

/// Sequence numbers of the counter readings in the hub's stream.
fn counter_seqs(envs: &[Envelope]) -> BTreeSet<u64> {
    envs.iter()
        .filter(|e| e.sensor == "count")
        .flat_map(|e| e.samples.iter().map(|s| s.seq))
        .collect()
}

/// Waits until the stream holds every sequence number `0..` up to its
/// largest, with no gap, and at least `min` of them.
async fn wait_for_gapless(hub: &NatsServer, min: usize) -> Result<BTreeSet<u64>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seqs = counter_seqs(&stream_envelopes(hub).await?);
        let last = seqs.iter().next_back().copied().unwrap_or(0);
        if seqs.len() >= min && seqs.len() as u64 == last + 1 {
            return Ok(seqs);
        }
        assert!(
            Instant::now() < deadline,
            "the stream never held a gapless run of {min}: {} seqs, last {last}",
            seqs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_no_leaf_ever_reachable_exits_0_within_the_ack_timeout_and_keeps_the_readings()
-> Result<()> {
    let state = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(&unreachable_config("pi-alone", state.path(), COUNTER))?;
    wait_until(Duration::from_secs(20), "a spilled segment", || {
        segments_in(state.path()) > 0
    });
    terminate_in_bound(&mut agent);

    // The readings it kept reach the hub once a leaf is there.
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let mut agent = start_agent(&agent_config("pi-alone", &leaf, state.path(), COUNTER))?;
    let seqs = wait_for_gapless(&hub, 20).await?;
    assert_eq!(seqs.first(), Some(&0), "the very first reading arrived");
    terminate_in_bound(&mut agent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_the_leaf_died_mid_run_exits_0_in_bound_and_nothing_is_lost() -> Result<()> {
    let hub = NatsServer::hub()?;
    let mut leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let config = agent_config("pi-cut", &leaf, state.path(), COUNTER);
    let mut agent = start_agent(&config)?;
    wait_for_gapless(&hub, 20).await?;
    leaf.kill()?;
    // Readings keep coming while the leaf is gone: they go to disk.
    wait_until(Duration::from_secs(20), "a spilled segment", || {
        segments_in(state.path()) > 0
    });
    terminate_in_bound(&mut agent);

    leaf.restart()?;
    leaf.wait_leaf_connected(Duration::from_secs(20))?;
    let mut agent = start_agent(&config)?;
    let before = counter_seqs(&stream_envelopes(&hub).await?).len();
    let seqs = wait_for_gapless(&hub, before + 20).await?;
    assert!(seqs.len() > before);
    terminate_in_bound(&mut agent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_buffer_ends_the_agent_non_zero_with_the_cause_instead_of_leaving_it_half_alive()
-> Result<()> {
    let state = tempfile::tempdir().expect("temp dir");
    let mut agent = start_agent(&unreachable_config("pi-disk", state.path(), COUNTER))?;
    wait_until(Duration::from_secs(20), "a spilled segment", || {
        segments_in(state.path()) > 0
    });
    // The buffer directory vanishes (a stand-in for a dying SD card): the
    // next segment cannot be created.
    std::fs::remove_dir_all(state.path().join("buffer")).expect("remove the buffer dir");
    let status = agent.wait_for_exit(Duration::from_secs(30))?;
    assert!(
        !status.success(),
        "a broken buffer must end the agent non-zero"
    );
    let log = agent.log();
    assert!(
        log.contains("the buffer failed") || log.contains("buffer thread stopped"),
        "the cause is logged:\n{}",
        agent.log_tail(30)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_whose_reads_hang_forever_cost_only_themselves() -> Result<()> {
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let mut fifo_tables = String::new();
    for i in 0..3 {
        let fifo = state.path().join(format!("stuck{i}"));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo {}", fifo.display());
        fifo_tables.push_str(&format!(
            "[[sensors.file]]\nid = \"stuck{i}\"\npath = {:?}\ninterval = \"200ms\"\n\n",
            fifo.display().to_string()
        ));
    }
    let metrics = free_port();
    let sensors = format!("{fifo_tables}{COUNTER}\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n");
    let mut agent = start_agent(&agent_config("pi-stuck", &leaf, state.path(), &sensors))?;
    // The counter keeps its 20 ms schedule and is delivered...
    let seqs = wait_for_gapless(&hub, 100).await?;
    assert!(seqs.len() >= 100);
    // ...while each stuck sensor counts its missed intervals as errors.
    let body = tributary_tests::tributary::scrape_body(metrics)?;
    for i in 0..3 {
        let line = body
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "tributary_agent_sensor_errors_total{{sensor=\"stuck{i}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no error counter for stuck{i}:\n{body}"));
        let errors: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("value");
        assert!(errors >= 1.0, "stuck{i} counted no error: {line}");
    }
    // The hung reads do not hold up the stop either.
    terminate_in_bound(&mut agent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_a_state_directory_in_use_is_refused_with_the_owners_pid() -> Result<()> {
    let state = tempfile::tempdir().expect("temp dir");
    let config = unreachable_config("pi-twice", state.path(), COUNTER);
    let mut first = start_agent(&config)?;
    wait_until(Duration::from_secs(20), "the first agent's buffer", || {
        first.log().contains("buffer open")
    });
    let mut second = start_agent(&config)?;
    let status = second.wait_for_exit(Duration::from_secs(20))?;
    assert!(!status.success(), "the second agent must not run");
    let pid = first.pid().expect("first runs");
    let log = second.log();
    assert!(
        log.contains("in use by another tributary-agent") && log.contains(&format!("pid {pid}")),
        "the refusal names the other process:\n{log}"
    );
    assert!(first.is_running(), "the first agent is untouched");
    terminate_in_bound(&mut first);
    Ok(())
}
