//! Disk trouble on the edge, through the real agent binary: the buffer's
//! file system (a 3 MiB tmpfs, mostly taken by another file) fills up while
//! the hub is away, and damaged buffer files are found at start. The agent
//! keeps running, its when-full policy acts as documented, its counters say
//! what was dropped, quarantined or lost, and it delivers the rest once the
//! hub (and the space) is back.
//!
//! One reading per message (`max_readings = 1`) from a counter sensor, so a
//! buffer record is one reading and a missing reading a missing value.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tributary_tests::tributary::{
    agent_config, create_stream, missing_counter_values, scrape_metric, settled_stream_envelopes,
    start_agent, stop_cleanly,
};
use tributary_tests::{NatsServer, Result, ServerProcess, TinyFs, free_port};
use tributary_wire::Value;

fn config(
    device: &str,
    leaf: &NatsServer,
    state: &std::path::Path,
    port: u16,
    sensor: &str,
) -> String {
    let sensors = format!(
        r#"
[metrics]
listen = "127.0.0.1:{port}"

[[sensors.simulated]]
id = "{sensor}"
waveform = "counter"
interval = "5ms"
"#
    );
    agent_config(device, leaf, state, &sensors)
        .replacen("[buffer]", "[buffer]\nsegment_size = \"8 KiB\"", 1)
        .replacen(
            "[forward]",
            "[forward]\nmax_readings = 1\nmax_message_size = \"1 KiB\"",
            1,
        )
}

/// Polls `metric` on `port` until `ok` holds, the agent staying up.
async fn wait_metric(
    agent: &mut ServerProcess,
    port: u16,
    metric: &str,
    ok: impl Fn(f64) -> bool,
    secs: u64,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        assert!(agent.is_running(), "agent died:\n{}", agent.log_tail(40));
        let v = scrape_metric(port, metric)?;
        if ok(v) {
            return Ok(v);
        }
        assert!(
            Instant::now() < deadline,
            "{metric} stayed at {v}:\n{}",
            agent.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The values of sensor `sensor` in the stream once it stopped growing; none twice.
async fn counter_values(hub: &NatsServer, sensor: &str) -> Result<BTreeSet<i64>> {
    let envs = settled_stream_envelopes(hub, Duration::from_millis(1000)).await?;
    let mut values = BTreeSet::new();
    for e in envs.iter().filter(|e| e.sensor == sensor) {
        for s in &e.samples {
            let Value::Int(v) = s.value else {
                panic!("counter value {:?}", s.value)
            };
            assert!(values.insert(v), "counter value {v} arrived twice");
        }
    }
    Ok(values)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_disk_filling_up_while_the_hub_is_away_drops_the_oldest_counts_it_and_recovers()
-> Result<()> {
    let Some(fs) = TinyFs::mount("3m")? else {
        return Ok(());
    };
    let mut hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    hub.kill()?;
    let state = fs.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    // Another program's file leaves the buffer about 200 KiB of its 64 MiB cap.
    let hog = fs.fill_leaving("other-program.log", 200 * 1024)?;
    let port = free_port();
    let mut agent = start_agent(&config("pi-disk", &leaf, &state, port, "count"))?;

    wait_metric(
        &mut agent,
        port,
        "tributary_agent_buffer_disk_full_total",
        |v| v > 0.0,
        90,
    )
    .await?;
    let dropped = wait_metric(
        &mut agent,
        port,
        "tributary_agent_dropped_records_total",
        |v| v >= 100.0,
        90,
    )
    .await?;
    assert!(dropped >= 100.0);
    let bytes = scrape_metric(port, "tributary_agent_buffer_bytes")?;
    assert!(
        bytes < 200.0 * 1024.0,
        "the buffer stayed within the free space: {bytes}"
    );

    // Space returns and the hub comes back: everything kept is delivered.
    std::fs::remove_file(&hog).expect("free the space");
    hub.restart()?;
    leaf.wait_leaf_connected(Duration::from_secs(20))?;
    wait_metric(
        &mut agent,
        port,
        "tributary_agent_oldest_unsent_age_seconds",
        |v| v == 0.0,
        90,
    )
    .await?;
    wait_metric(
        &mut agent,
        port,
        "tributary_agent_buffer_records",
        |v| v < 60.0,
        90,
    )
    .await?;
    let dropped = scrape_metric(port, "tributary_agent_dropped_records_total")?;
    let refused = scrape_metric(port, "tributary_agent_dropped_readings_total")?;
    stop_cleanly(&mut agent)?;
    let values = counter_values(&hub, "count").await?;
    let missing = missing_counter_values(&values);
    assert_eq!(
        missing,
        (0..missing.len() as i64).collect::<Vec<_>>(),
        "only the oldest readings are missing (drop_oldest)"
    );
    assert_eq!(
        missing.len() as f64,
        dropped,
        "the drop counter names every missing reading"
    );
    assert_eq!(refused, 0.0);
    assert!(values.len() > 1000, "{} readings delivered", values.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_buffer_files_at_start_are_quarantined_logged_counted_and_the_rest_delivered()
-> Result<()> {
    let mut hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    create_stream(&hub).await?;
    hub.kill()?;
    let state = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut agent = start_agent(&config("pi-damage", &leaf, state.path(), port, "count"))?;
    wait_metric(
        &mut agent,
        port,
        "tributary_agent_buffer_bytes",
        |v| v > 6.0 * 8192.0,
        90,
    )
    .await?;
    stop_cleanly(&mut agent)?;

    // Damage: a flipped byte in the second segment, the fourth deleted, the
    // cursor overwritten.
    let dir = state.path().join("buffer");
    let mut segs: Vec<_> = std::fs::read_dir(&dir)
        .expect("buffer dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 5, "{segs:?}");
    let mut second = std::fs::read(&segs[1]).expect("read");
    second[4000] ^= 0x10;
    std::fs::write(&segs[1], &second).expect("write");
    std::fs::remove_file(&segs[3]).expect("delete");
    std::fs::write(dir.join("cursor"), [0xee; 96]).expect("cursor");

    hub.restart()?;
    leaf.wait_leaf_connected(Duration::from_secs(20))?;
    let mut agent = start_agent(&config("pi-damage", &leaf, state.path(), port, "after"))?;
    let quarantined = wait_metric(
        &mut agent,
        port,
        "tributary_agent_buffer_quarantined_files_total",
        |v| v > 0.0,
        30,
    )
    .await?;
    assert_eq!(quarantined, 2.0, "the segment's copy and the cursor");
    let lost = scrape_metric(port, "tributary_agent_buffer_lost_records_total")?;
    wait_metric(
        &mut agent,
        port,
        "tributary_agent_buffer_records",
        |v| v < 60.0,
        90,
    )
    .await?;
    let log = agent.log();
    for (file, reason) in [
        (segs[1].display().to_string(), "record checksum mismatch"),
        (segs[4].display().to_string(), "a segment file was deleted"),
        (dir.join("cursor").display().to_string(), "no valid slot"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("WARN") && l.contains(&file) && l.contains(reason)),
            "no WARN naming {file} and {reason:?}:\n{log}"
        );
    }
    stop_cleanly(&mut agent)?;
    let q = dir.join("quarantine");
    assert!(q.join(segs[1].file_name().expect("name")).exists());
    assert!(q.join("cursor").exists());

    let values = counter_values(&hub, "count").await?;
    let missing = missing_counter_values(&values);
    assert!(!missing.is_empty());
    assert_eq!(
        missing.len() as f64,
        lost,
        "the lost counter names every missing reading"
    );
    assert!(
        values.len() > 150,
        "the undamaged records were delivered: {}",
        values.len()
    );
    Ok(())
}
