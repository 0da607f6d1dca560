//! Exactly-once into the hub's stream whatever the outage length: an agent
//! that resends after the stream's duplicate window has passed first reads
//! back which of its messages the stream already holds, and skips them
//! (agent/src/link/stored.rs has the design). Real hub and leaf; the
//! stream's duplicate window is one second, so "longer than the window"
//! takes seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{
    agent_config, create_stream_with_window, settled_stream_envelopes, start_agent,
    stream_envelopes,
};
use tributary_tests::{NatsServer, Result};

const COUNTER: &str = r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "20ms"
"#;

const WINDOW: Duration = Duration::from_secs(1);

/// Sequence numbers the stream holds more than once, with their counts.
fn repeated_seqs(envs: &[tributary_wire::Envelope]) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for s in envs.iter().flat_map(|e| e.samples.iter()) {
        *seen.entry(s.seq).or_insert(0) += 1;
    }
    seen.retain(|_, n| *n > 1);
    seen
}

/// The `held` count of each read back the agent's log reports.
fn agent_read_backs(log: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains("read back what the hub holds"))
        .filter_map(|l| {
            l.split("held=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until the stream holds at least `n` envelopes.
async fn wait_for_envelopes(hub: &NatsServer, n: usize, what: &str) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let have = stream_envelopes(hub).await.map(|e| e.len()).unwrap_or(0);
        if have >= n {
            return Ok(have);
        }
        assert!(Instant::now() < deadline, "{what}: {have} of {n} envelopes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_resent_after_the_duplicate_window_is_read_back_and_never_stored_twice()
-> Result<()> {
    let mut hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream_with_window(&hub, WINDOW).await?;
    let state = tempfile::tempdir().expect("temp dir");
    let config = agent_config("pi-resend", &leaf, state.path(), COUNTER);
    let mut agent = start_agent(&config)?;
    let before = wait_for_envelopes(&hub, 20, "before the outage").await?;

    // The hub goes away: the agent spills its readings to the buffer. When
    // the hub is back the agent sends that backlog, and its acks are only
    // in the agent's memory (the buffer persists acks with its next spill,
    // and a live link does not spill).
    hub.kill()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    hub.restart()?;
    leaf.wait_leaf_connected(Duration::from_secs(30))?;
    wait_for_envelopes(&hub, before + 100, "after the outage").await?;
    // Killed now, the agent restarts with that backlog still unacknowledged
    // on disk, and comes back long after the duplicate window.
    agent.kill()?;
    let earlier = agent_read_backs(&agent.log());
    tokio::time::sleep(WINDOW * 3).await;
    agent.respawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent_read_backs(&agent.log()).len() == earlier.len() {
        assert!(
            Instant::now() < deadline,
            "no read back at start:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = agent.terminate(Duration::from_secs(20))?;
    assert!(
        status.success(),
        "agent exit {status}:\n{}",
        agent.log_tail(40)
    );

    let envs = settled_stream_envelopes(&hub, Duration::from_millis(1500)).await?;
    let repeated = repeated_seqs(&envs);
    assert!(
        repeated.is_empty(),
        "{} sequence numbers stored more than once, e.g. {:?}:\n{}",
        repeated.len(),
        repeated.iter().take(5).collect::<Vec<_>>(),
        agent.log_tail(30)
    );
    let held: u64 = agent_read_backs(&agent.log())[earlier.len()..].iter().sum();
    assert!(
        held > 0,
        "the read back found nothing held, so the test proved nothing:\n{}",
        agent.log_tail(30)
    );
    Ok(())
}
