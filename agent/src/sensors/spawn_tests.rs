//! Tests of [`spawn`]: the polled-sensor loop, deadband and heartbeat with
//! tokio's paused clock, failure isolation, back-pressure and shutdown.

use super::*;
use std::time::Duration;
use tokio::time::Instant;

fn ctx(stats: &Arc<AgentStats>) -> SensorContext {
    SensorContext {
        stats: stats.clone(),
        buffer_dir: std::env::temp_dir(),
        device: "test".to_owned(),
    }
}

async fn recv(rx: &mut mpsc::Receiver<Observation>) -> Observation {
    tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("an observation in time")
        .expect("channel open")
}

#[tokio::test(start_paused = true)]
async fn a_deadband_suppresses_small_moves_and_a_heartbeat_still_reports() {
    let cfg = test_config(
        "[[sensors.simulated]]\nid = \"count\"\nwaveform = \"counter\"\ninterval = \"1s\"\n\
         deadband = 5.0\nheartbeat = 3\n",
    );
    let stats = Arc::new(AgentStats::default());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    let mut got = Vec::new();
    for _ in 0..4 {
        let o = recv(&mut rx).await;
        got.push((o.value, start.elapsed().as_secs()));
    }
    // Readings 0..9 once a second; every third one is a heartbeat.
    assert_eq!(
        got,
        [
            (Value::Int(0), 0),
            (Value::Int(3), 3),
            (Value::Int(6), 6),
            (Value::Int(9), 9)
        ]
    );
    stop.cancel();
    sensors.join().await;
    let c = stats.sensor("count");
    assert_eq!((c.readings, c.suppressed, c.errors), (4, 6, 0));
}

#[tokio::test(start_paused = true)]
async fn a_large_move_is_sent_at_once_despite_the_deadband() {
    let cfg = test_config(
        "[[sensors.simulated]]\nid = \"saw\"\nwaveform = \"sawtooth\"\nperiod = \"10s\"\n\
         amplitude = 10.0\ninterval = \"1s\"\ndeadband = 3.0\nheartbeat = 100\n",
    );
    let stats = Arc::new(AgentStats::default());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(recv(&mut rx).await.value.as_f64().unwrap().round() as i64);
    }
    // -10, -8, -6, -4, -2, 0 … : sent when more than 3 away from the last sent.
    assert_eq!(got, [-10, -6, -2, 2]);
    stop.cancel();
    sensors.join().await;
}

#[tokio::test(start_paused = true)]
async fn observations_carry_the_sensor_description_and_the_current_time() {
    let cfg = test_config(
        "[[sensors.simulated]]\nid = \"s\"\nunit = \"°C\"\ntags = { room = \"kitchen\", floor = \"1\" }\n",
    );
    let stats = Arc::new(AgentStats::default());
    let (tx, mut rx) = mpsc::channel(4);
    let stop = CancellationToken::new();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    let o = recv(&mut rx).await;
    let want = SensorMeta {
        id: "s".into(),
        unit: Some("°C".into()),
        tags: vec![
            ("floor".into(), "1".into()),
            ("room".into(), "kitchen".into()),
        ],
    };
    assert_eq!(*o.sensor, want);
    let age = now_unix_ns() - o.timestamp_ns;
    assert!((0..5_000_000_000).contains(&age), "{age}");
    stop.cancel();
    sensors.join().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_channel_makes_a_sensor_wait_and_skip_missed_ticks() {
    let cfg = test_config(
        "[[sensors.simulated]]\nid = \"c\"\nwaveform = \"counter\"\ninterval = \"1s\"\n",
    );
    let stats = Arc::new(AgentStats::default());
    let (tx, mut rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let start = Instant::now();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    // Reading 0 filled the channel, reading 1 waited for room since t=1s.
    assert_eq!(recv(&mut rx).await.value, Value::Int(0));
    assert_eq!(recv(&mut rx).await.value, Value::Int(1));
    // The nine ticks missed meanwhile give one late reading at once, not a
    // burst of nine; then the schedule goes on at the next whole second.
    assert_eq!(recv(&mut rx).await.value, Value::Int(2));
    assert_eq!(start.elapsed(), Duration::from_millis(10_500));
    assert_eq!(recv(&mut rx).await.value, Value::Int(3));
    assert_eq!(start.elapsed(), Duration::from_secs(11));
    stop.cancel();
    sensors.join().await;
}

#[tokio::test(start_paused = true)]
async fn join_returns_after_cancel_even_while_sensors_wait_on_a_full_channel() {
    let mut toml = String::new();
    for i in 0..5 {
        toml.push_str(&format!(
            "[[sensors.simulated]]\nid = \"s{i}\"\ninterval = \"1ms\"\n"
        ));
    }
    let cfg = test_config(&toml);
    let stats = Arc::new(AgentStats::default());
    let (tx, _rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    assert_eq!(sensors.tasks(), 5);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), sensors.join())
        .await
        .expect("join after cancel");
    let total: u64 = stats.sensors().values().map(|c| c.readings).sum();
    assert_eq!(
        total, 1,
        "only what fitted in the channel was counted as sent"
    );
}

#[tokio::test]
async fn a_failing_sensor_is_counted_while_the_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    std::fs::write(&good, "1500\n").unwrap();
    let cfg = test_config(&format!(
        "[[sensors.file]]\nid = \"gone\"\npath = {:?}\ninterval = \"20ms\"\n\
         [[sensors.file]]\nid = \"good\"\npath = {:?}\nscale = 0.01\ninterval = \"20ms\"\n\
         [[sensors.command]]\nid = \"nan\"\ncommand = [\"echo\", \"NaN\"]\ninterval = \"20ms\"\n",
        dir.path().join("gone").display().to_string(),
        good.display().to_string(),
    ));
    let stats = Arc::new(AgentStats::default());
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    for _ in 0..5 {
        let o = recv(&mut rx).await;
        assert_eq!(o.sensor.id, "good");
        assert_eq!(o.value, Value::Float(15.0));
    }
    while stats.sensor("gone").errors < 2 || stats.sensor("nan").errors < 2 {
        let _ = recv(&mut rx).await;
    }
    stop.cancel();
    sensors.join().await;
    assert_eq!(stats.sensor("gone").readings, 0);
    assert_eq!(stats.sensor("nan").readings, 0);
    assert!(stats.sensor("good").readings >= 5);
}

#[tokio::test]
async fn system_sensors_report_the_agents_own_health() {
    let cfg = test_config(
        "[[sensors.system]]\nid = \"depth\"\nmetric = \"buffer_depth\"\n\
         [[sensors.system]]\nid = \"free\"\nmetric = \"disk_free\"\n",
    );
    let stats = Arc::new(AgentStats::default());
    stats
        .buffer_records
        .store(42, std::sync::atomic::Ordering::Relaxed);
    let (tx, mut rx) = mpsc::channel(16);
    let stop = CancellationToken::new();
    let sensors = spawn(&cfg, ctx(&stats), tx, stop.clone());
    let mut seen = std::collections::BTreeMap::new();
    while seen.len() < 2 {
        let o = recv(&mut rx).await;
        seen.insert(o.sensor.id.clone(), o.value);
    }
    assert_eq!(seen["depth"], Value::Int(42));
    assert!(matches!(seen["free"], Value::Int(n) if n > 0));
    stop.cancel();
    sensors.join().await;
}

#[test]
fn sensor_phases_are_stable_within_their_interval_and_spread_apart() {
    let second = Duration::from_secs(1);
    assert_eq!(super::phase("temp", second), super::phase("temp", second));
    assert!(super::phase("temp", Duration::from_millis(20)) < Duration::from_millis(20));
    assert!(super::phase("slow", Duration::from_secs(3600)) < super::MAX_PHASE);
    let phases: std::collections::BTreeSet<Duration> = (0..50)
        .map(|i| super::phase(&format!("s{i:02}"), second) / 20_000_000)
        .collect();
    assert!(
        phases.len() > 30,
        "50 sensors fall into {} of 50 slots of 20 ms",
        phases.len()
    );
}
