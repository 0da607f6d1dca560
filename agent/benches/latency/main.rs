//! Real-time benchmark: how long a reading takes from its timestamp to the
//! hub's acknowledgement, and what the agent writes to disk while the hub
//! is reachable and while it is away, against a bare publisher in the same
//! run.
//!
//! Everything is real: a `nats-server` hub with JetStream on file storage,
//! a leaf node connected to it, and the `tributary-agent` binary of this
//! build (bench profile) as its own process, at its default settings
//! (`forward.linger` 1 ms, `buffer.flush_interval` 1 s) apart from the
//! sensors. For each load (50 sensors at 1 Hz, 10 sensors at 100 Hz):
//!
//! 1. **baseline**: a bare async-nats JetStream publisher through the same
//!    leaf that publishes each reading the moment it is made (one task per
//!    sensor on the agent's schedule, phases included, one envelope per
//!    reading, ack awaited) and records the time from the reading's
//!    timestamp to its ack;
//! 2. **agent**: the agent with the same sensors (simulated), the latency
//!    histogram it exports (`tributary_agent_reading_ack_latency_seconds`,
//!    from the timestamp of a message's first reading to the hub's ack),
//!    disk bytes written per reading by the kernel's count
//!    (`/proc/<pid>/io` `write_bytes`) and peak RSS.
//!
//! Then the agent with the hub away (its leaf URL names a port nothing
//! listens on): disk bytes per reading; and, when a release uplink is
//! built, reading timestamp → arrival in Kafka (`kafka.rs`). Each measurement runs `--rounds`
//! times (default 3) and medians are printed. Quantiles come from the same
//! fixed buckets for agent and baseline, interpolated within a bucket.
//!
//! The maximum of a window is the upper bound of the highest bucket that
//! grew in it (the agent's exact maximum covers its whole life, start-up
//! included).
//!
//! Run: `cargo build --release -p tributary-uplink && cargo bench -p tributary-agent
//! --bench latency [-- --secs S --rounds R --linger-us L --kafka-only 1]`
//! (`--linger-us` sets `forward.linger` instead of the default;
//! `--kafka-only 1` measures only the sensor → Kafka row).

use async_nats::jetstream::{self, message::PublishMessage};
use std::ffi::OsStr;
use std::future::IntoFuture;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tributary_agent::latency::{BUCKETS_US, LatencyHistogram, LatencySnapshot};
use tributary_tests::tributary::{scrape_body, scrape_metric, start_program};
use tributary_tests::{NatsServer, ServerProcess, free_port};
use tributary_wire::{Envelope, Sample, Value};

pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

mod kafka;
#[path = "../support/mod.rs"]
mod support;
use support::{mib, proc_io, proc_status};

const GOAL_P99_US: f64 = 5_000.0;
/// The agent's default `forward.linger`.
const DEFAULT_LINGER_US: u64 = 1_000;

pub(crate) struct Load {
    name: &'static str,
    sensors: usize,
    interval: Duration,
}

pub(crate) const LOADS: [Load; 2] = [
    Load {
        name: "50 sensors at 1 Hz",
        sensors: 50,
        interval: Duration::from_secs(1),
    },
    Load {
        name: "10 sensors at 100 Hz",
        sensors: 10,
        interval: Duration::from_millis(10),
    },
];

fn arg(name: &str, default: u64) -> u64 {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} wants a number"))
        })
        .unwrap_or(default)
}

fn main() -> Result<(), Error> {
    let agent_bin = env!("CARGO_BIN_EXE_tributary-agent");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench(Path::new(agent_bin)))
}

/// One agent run's figures.
struct AgentRun {
    latency: LatencySnapshot,
    readings: f64,
    disk_bytes: f64,
    hwm: u64,
    /// Anonymous resident memory (heap and stacks) at the end of the window;
    /// the rest of the RSS is clean pages of the binary and libc.
    anon: u64,
}

async fn bench(agent_bin: &Path) -> Result<(), Error> {
    let secs = arg("--secs", 30);
    let rounds = arg("--rounds", 3).max(1) as usize;
    let linger_us = arg("--linger-us", DEFAULT_LINGER_US);
    let linger = if linger_us == DEFAULT_LINGER_US {
        String::new()
    } else {
        format!("[forward]\nlinger = \"{linger_us}us\"\n\n")
    };
    println!(
        "agent latency benchmark: {rounds} round(s) of {secs} s per measurement, hub JetStream on file storage, through a leaf, agent defaults (flush 1 s) with linger {} ms",
        linger_us as f64 / 1000.0
    );
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    leaf.wait_leaf_connected(Duration::from_secs(10))?;
    let hub_js = jetstream::new(hub.connect().await?);
    support::create_streams(&hub_js).await?;
    // `--kafka-only 1`: just the sensor -> Kafka row.
    let kafka_only = arg("--kafka-only", 0) == 1;
    for load in LOADS.iter().filter(|_| !kafka_only) {
        let mut base = Vec::new();
        let mut agent = Vec::new();
        for _ in 0..rounds {
            base.push(bare_publisher(&leaf, load, secs).await?);
            agent.push(run_agent(agent_bin, &leaf.client_url(), load, secs, &linger).await?);
        }
        let q = |runs: &[LatencySnapshot], q: f64| {
            median(runs.iter().filter_map(|s| s.quantile_us(q)).collect())
        };
        let agent_lat: Vec<LatencySnapshot> = agent.iter().map(|r| r.latency.clone()).collect();
        let (b50, b99) = (q(&base, 0.5), q(&base, 0.99));
        let (a50, a99) = (q(&agent_lat, 0.5), q(&agent_lat, 0.99));
        let bmax = median(base.iter().map(|s| s.max_us as f64).collect());
        let amax = median(agent_lat.iter().map(|s| s.max_us as f64).collect());
        println!("{}:", load.name);
        println!(
            "  baseline (bare publisher, publish at once): p50 {} p99 {} max {} ({} readings per round)",
            ms(b50),
            ms(b99),
            ms(bmax),
            base[0].count()
        );
        println!(
            "  agent, reading -> hub ack:                 p50 {} p99 {} max <= {} (goal p99 <= {}; p99 - linger = {:.2} x baseline p99, goal <= 2)",
            ms(a50),
            ms(a99),
            ms(amax),
            ms(GOAL_P99_US),
            (a99 - linger_us as f64).max(0.0) / b99.max(1.0)
        );
        println!(
            "  agent disk while connected: {:.2} B written per reading by the kernel's count (goal <= 10); peak RSS {}, of which anonymous (heap, stacks) {}",
            median(
                agent
                    .iter()
                    .map(|r| r.disk_bytes / r.readings.max(1.0))
                    .collect()
            ),
            mib(agent.iter().map(|r| r.hwm).max().unwrap_or(0)),
            mib(agent.iter().map(|r| r.anon).max().unwrap_or(0))
        );
        let per_round: Vec<String> = agent_lat
            .iter()
            .zip(&base)
            .map(|(a, b)| {
                format!(
                    "{}/{}",
                    ms(a.quantile_us(0.99).unwrap_or(0.0)),
                    ms(b.quantile_us(0.99).unwrap_or(0.0))
                )
            })
            .collect();
        println!("  p99 agent/baseline per round: {}", per_round.join(", "));
    }
    let mut away = Vec::new();
    for _ in (0..rounds).filter(|_| !kafka_only) {
        let unreachable = format!("nats://127.0.0.1:{}", free_port());
        let run = run_agent(agent_bin, &unreachable, &LOADS[0], secs, &linger).await?;
        away.push(run.disk_bytes / run.readings.max(1.0));
    }
    if !away.is_empty() {
        println!(
            "hub away, {}: {:.0} B written per reading by the kernel's count (one group commit per flush interval)",
            LOADS[0].name,
            median(away)
        );
    }
    let mut kafka = Vec::new();
    for _ in 0..rounds {
        match kafka::sensor_to_kafka(agent_bin, secs, &linger).await? {
            Some((lat, records)) => kafka.push((lat, records)),
            None => break,
        }
    }
    if !kafka.is_empty() {
        let lats: Vec<LatencySnapshot> = kafka.iter().map(|(l, _)| l.clone()).collect();
        let q = |q: f64| median(lats.iter().filter_map(|s| s.quantile_us(q)).collect());
        println!(
            "sensor -> Kafka through leaf, hub, uplink (release) and tansu, {}: p50 {} p99 {} max <= {} (goal p99 <= 25 ms; {} records in the first round)",
            LOADS[0].name,
            ms(q(0.5)),
            ms(q(0.99)),
            ms(median(lats.iter().map(|s| s.max_us as f64).collect())),
            kafka[0].1
        );
    }
    Ok(())
}

/// Publishes one envelope per reading per sensor the moment it is made and
/// records reading timestamp -> ack.
async fn bare_publisher(
    leaf: &NatsServer,
    load: &Load,
    secs: u64,
) -> Result<LatencySnapshot, Error> {
    let client = async_nats::connect(leaf.client_url()).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .build(client);
    let hist = Arc::new(LatencyHistogram::default());
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for i in 0..load.sensors {
        let (js, hist, interval) = (js.clone(), hist.clone(), load.interval);
        tasks.push(tokio::spawn(async move {
            // The agent's schedule: each sensor first reads after its
            // phase (the same ids as the agent's sensors below).
            let phase = tributary_agent::sensors::phase(&format!("s{i:02}"), interval);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
            let mut seq = (i as u64) << 32;
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                let ts = now_ns();
                let env = Envelope {
                    device: "bare".into(),
                    epoch: 1,
                    sensor: format!("s{i:02}"),
                    unit: Some("°C".into()),
                    clock: tributary_wire::Clock::Synced,
                    tags: Vec::new(),
                    samples: vec![Sample {
                        seq,
                        timestamp_ns: ts,
                        value: Value::Float(21.5),
                    }],
                };
                seq += 1;
                let msg = PublishMessage::build()
                    .payload(env.encode()?.into())
                    .message_id(env.msg_id());
                let ack = js.send_publish(env.subject("baseline"), msg).await?;
                ack.into_future().await?;
                hist.record(((now_ns() - ts) / 1_000) as u64);
            }
            Ok::<(), Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(hist.snapshot())
}

pub(crate) async fn run_agent(
    agent_bin: &Path,
    nats_url: &str,
    load: &Load,
    secs: u64,
    linger: &str,
) -> Result<AgentRun, Error> {
    let state = tempfile::tempdir()?;
    let metrics = free_port();
    let sensors: String = (0..load.sensors)
        .map(|i| {
            format!(
                "[[sensors.simulated]]\nid = \"s{i:02}\"\ninterval = \"{}ms\"\nunit = \"°C\"\n",
                load.interval.as_millis()
            )
        })
        .collect();
    let config = format!(
        "[agent]\ndevice = \"lat\"\nstate_dir = \"{}\"\n\n[nats]\nurls = [\"{nats_url}\"]\n\n{linger}[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n\n{sensors}",
        state.path().display()
    );
    let log: &OsStr = "warn".as_ref();
    let mut agent: ServerProcess = start_program(
        "agent",
        agent_bin.to_path_buf(),
        &config,
        &[("TRIBUTARY_LOG", log)],
    )?;
    let pid = agent.pid().ok_or("agent has no pid")?;
    // Warm-up: connection, the first flushes, the allocator.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let taken = |port| -> Result<f64, Error> {
        let body = scrape_body(port)?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with("tributary_agent_sensor_readings_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    };
    let (w0, r0, l0) = (
        proc_io(pid, "write_bytes:").unwrap_or(0),
        taken(metrics)?,
        histogram(metrics)?,
    );
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (w1, r1, l1) = (
        proc_io(pid, "write_bytes:").unwrap_or(0),
        taken(metrics)?,
        histogram(metrics)?,
    );
    let _ = scrape_metric(metrics, "tributary_agent_acked_readings_total")?;
    let hwm = proc_status(pid, "VmHWM:").unwrap_or(0);
    let anon = proc_status(pid, "RssAnon:").unwrap_or(0);
    agent.terminate(Duration::from_secs(20))?;
    Ok(AgentRun {
        latency: l1.since(&l0),
        readings: r1 - r0,
        disk_bytes: (w1 - w0) as f64,
        hwm,
        anon,
    })
}

/// The agent's reading-to-ack histogram from its metrics endpoint.
fn histogram(port: u16) -> Result<LatencySnapshot, Error> {
    let body = scrape_body(port)?;
    let mut cumulative = Vec::new();
    let mut max_us = 0;
    let mut sum_us = 0;
    for line in body.lines() {
        let value = || line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        if line.starts_with("tributary_agent_reading_ack_latency_seconds_bucket") {
            cumulative.push(value().ok_or("bad bucket line")? as u64);
        } else if line.starts_with("tributary_agent_reading_ack_latency_max_seconds ") {
            max_us = (value().ok_or("bad max line")? * 1e6) as u64;
        } else if line.starts_with("tributary_agent_reading_ack_latency_seconds_sum ") {
            sum_us = (value().ok_or("bad sum line")? * 1e6) as u64;
        }
    }
    if cumulative.len() != BUCKETS_US.len() + 1 {
        return Err(format!(
            "{} histogram buckets, expected {}",
            cumulative.len(),
            BUCKETS_US.len() + 1
        )
        .into());
    }
    let counts = cumulative
        .iter()
        .enumerate()
        .map(|(i, c)| c - if i == 0 { 0 } else { cumulative[i - 1] })
        .collect();
    Ok(LatencySnapshot {
        counts,
        sum_us,
        max_us,
    })
}

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1000.0)
}
