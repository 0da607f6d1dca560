//! The buffer's when-full policies, end to end: a real agent whose hub is away
//! fills a tiny buffer (16 KiB in 4 KiB segments) with a counter sensor, the hub
//! comes back, and the readings that reach the hub's stream show exactly what
//! the policy promised, with the agent's drop counters naming exactly what is
//! missing.
//!
//! One reading per message (`max_readings = 1`), so a dropped buffer record is
//! one dropped reading, and a counter sensor, so a missing reading is a missing
//! counter value.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{
    agent_config, create_stream, missing_counter_values, scrape_metric, settled_stream_envelopes,
    start_agent, stop_cleanly,
};
use tributary_tests::{NatsServer, Result, free_port};
use tributary_wire::Value;

const MAX_SIZE: f64 = 16.0 * 1024.0;

struct Outcome {
    /// Counter values in the hub's stream, each checked to appear once.
    values: BTreeSet<i64>,
    /// `tributary_agent_dropped_records_total` after the drain.
    dropped_records: f64,
    /// `tributary_agent_dropped_readings_total` after the drain.
    dropped_readings: f64,
    /// Most buffer bytes seen while the hub was away.
    peak_buffer_bytes: f64,
}

/// Runs a counter sensor at 100 Hz against a hub that is away until `full`
/// says the buffer overflowed (given the metrics port), then brings the hub
/// back, waits for the buffer to drain and stops the agent.
async fn overflow_then_drain(policy: &str, full: impl Fn(u16) -> Result<bool>) -> Result<Outcome> {
    let mut hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    hub.kill()?;

    let state = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let sensors = format!(
        r#"
[metrics]
listen = "127.0.0.1:{port}"

[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "10ms"
"#
    );
    let config = agent_config(&format!("pi-{policy}"), &leaf, state.path(), &sensors)
        .replacen(
            "[buffer]",
            &format!("[buffer]\nmax_size = \"16 KiB\"\nsegment_size = \"4 KiB\"\nwhen_full = \"{policy}\""),
            1,
        )
        .replacen(
            "[forward]",
            "[forward]\nmax_readings = 1\nmax_message_size = \"1 KiB\"",
            1,
        );
    let mut agent = start_agent(&config)?;

    let mut peak_buffer_bytes: f64 = 0.0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(agent.is_running(), "agent died:\n{}", agent.log_tail(30));
        peak_buffer_bytes =
            peak_buffer_bytes.max(scrape_metric(port, "tributary_agent_buffer_bytes")?);
        if full(port)? {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the buffer never filled up:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    hub.restart()?;
    leaf.wait_leaf_connected(Duration::from_secs(20))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Drained: what is left is the last flush or two of fresh readings (the
    // sensor keeps producing 100 a second), none of it older than a second.
    while scrape_metric(port, "tributary_agent_oldest_unsent_age_seconds")? > 0.0
        || scrape_metric(port, "tributary_agent_buffer_records")? > 60.0
    {
        assert!(
            Instant::now() < deadline,
            "the buffer did not drain:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dropped_records = scrape_metric(port, "tributary_agent_dropped_records_total")?;
    let dropped_readings = scrape_metric(port, "tributary_agent_dropped_readings_total")?;
    stop_cleanly(&mut agent)?;
    let values = counter_values(&hub).await?;
    Ok(Outcome {
        values,
        dropped_records,
        dropped_readings,
        peak_buffer_bytes,
    })
}

/// The counter values in the stream once it stopped growing; no value (and
/// no sequence number) may appear twice.
async fn counter_values(hub: &NatsServer) -> Result<BTreeSet<i64>> {
    let envs = settled_stream_envelopes(hub, Duration::from_millis(1000)).await?;
    let mut values = BTreeSet::new();
    let mut seqs = BTreeSet::new();
    for s in envs.iter().flat_map(|e| e.samples.iter()) {
        let Value::Int(v) = s.value else {
            panic!("counter value {:?}", s.value)
        };
        assert!(values.insert(v), "counter value {v} arrived twice");
        assert!(seqs.insert(s.seq), "sequence {} arrived twice", s.seq);
    }
    Ok(values)
}

/// Whether `v` is one run of consecutive integers.
fn is_one_run(v: &[i64]) -> bool {
    v.windows(2).all(|w| w[1] == w[0] + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_loses_exactly_the_oldest_readings_and_counts_each_of_them() -> Result<()> {
    let out = overflow_then_drain("drop_oldest", |port| {
        Ok(scrape_metric(port, "tributary_agent_dropped_records_total")? >= 200.0)
    })
    .await?;
    let missing = missing_counter_values(&out.values);
    assert!(!missing.is_empty(), "something was dropped");
    assert_eq!(
        missing,
        (0..missing.len() as i64).collect::<Vec<_>>(),
        "only the oldest readings are missing"
    );
    assert_eq!(
        missing.len() as f64,
        out.dropped_records,
        "the drop counter names every missing reading"
    );
    assert_eq!(out.dropped_readings, 0.0, "nothing was refused");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_newest_keeps_the_oldest_readings_and_counts_each_refused_one() -> Result<()> {
    let out = overflow_then_drain("drop_newest", |port| {
        Ok(scrape_metric(port, "tributary_agent_dropped_readings_total")? >= 200.0)
    })
    .await?;
    let missing = missing_counter_values(&out.values);
    assert!(!missing.is_empty(), "something was refused");
    assert!(
        missing[0] > 100,
        "the readings taken before the buffer filled were kept (first missing: {})",
        missing[0]
    );
    assert!(
        is_one_run(&missing),
        "the refused readings are the ones taken while the buffer was full, one run: {missing:?}"
    );
    assert_eq!(missing.len() as f64, out.dropped_readings);
    assert_eq!(missing.len() as f64, out.dropped_records);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_loses_nothing_while_the_buffer_is_full() -> Result<()> {
    let filled_at = std::sync::Mutex::new(None::<Instant>);
    let out = overflow_then_drain("block", |port| {
        // Full, then two more seconds of readings held back in memory.
        let bytes = scrape_metric(port, "tributary_agent_buffer_bytes")?;
        let mut at = filled_at.lock().expect("not poisoned");
        if at.is_none() && bytes >= 0.75 * MAX_SIZE {
            *at = Some(Instant::now());
        }
        Ok(at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)))
    })
    .await?;
    assert!(out.peak_buffer_bytes >= 0.75 * MAX_SIZE);
    assert!(out.peak_buffer_bytes <= MAX_SIZE, "the cap holds");
    assert_eq!(
        missing_counter_values(&out.values),
        Vec::<i64>::new(),
        "no reading is lost"
    );
    assert!(out.values.len() > 400, "{} readings", out.values.len());
    assert_eq!(out.dropped_records, 0.0);
    assert_eq!(out.dropped_readings, 0.0);
    Ok(())
}
