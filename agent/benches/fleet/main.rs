//! Fleet simulator (`cargo bench -p tributary-agent --bench fleet`): N
//! devices on one machine through real leafs, a clustered hub and one,
//! then two uplinks into Kafka (issue #14 item 2).
//!
//! - **Devices** (`TRIBUTARY_FLEET_DEVICES`, default 1,000), each the
//!   agent's own parts in this process ([`device`]): its own configuration,
//!   buffer directory and buffer thread, batcher, link and NATS
//!   connection, one counter sensor every `TRIBUTARY_FLEET_INTERVAL_MS`
//!   (default 1,000 ms), phases spread over the interval.
//! - **Leafs** (`TRIBUTARY_FLEET_LEAFS`, default 4): real nats-servers
//!   without JetStream, each device assigned to one (`i % M`) and
//!   authenticating there with its own user and password; its permissions
//!   are the shipped `cross/hub/device-user.conf` rendered for it, so it
//!   may publish only its own subjects (`tributary.<device>.>`…). In
//!   production each Pi runs its own leaf, which presents these
//!   credentials to the hub; here M leafs stand in for 1,000, because
//!   1,000 nats-server processes (an idle leaf takes 15–20 MB of RSS, and
//!   runs its own timers and goroutines) would spend the machine's 2 cores on
//!   themselves. Four leafs keep a few hundred client connections each and
//!   still spread their links over all three hub nodes; the leafnode
//!   connection count per hub node is left to the capacity model (README).
//! - **Hub**: [`NatsCluster`] of three nodes, the stream at `replicas = 3`,
//!   file storage, the server's default sync (see the README).
//! - **Uplinks**: the release `tributary-uplink` (`cargo build --release -p
//!   tributary-uplink` first), at-least-once on one shared durable
//!   consumer: first one, then a second one joins.
//! - **Kafka**: tansu, memory storage, a topic of 3 partitions, read back
//!   by [`kafka::Reader`].
//!
//! After a warm-up (`TRIBUTARY_FLEET_WARMUP_SECS`, default 10) each phase
//! measures `TRIBUTARY_BENCH_ROUNDS` (default 3) windows of
//! `TRIBUTARY_FLEET_SECS` (default 20) seconds: readings taken and
//! arrived in Kafka per second, sensor → Kafka p50/p99 of the records that
//! arrived in the window, and CPU µs per arrived reading of every process
//! (`/proc/<pid>/stat`; the agents are this process minus the Kafka
//! reader's threads). Medians over the rounds are printed per phase.
//! Memory per device is this process's RSS growth over starting the
//! devices, divided by N. At the end the devices stop as an agent does
//! (drained), and every reading taken must arrive in Kafka: missing must
//! be 0, duplicates (at-least-once) are counted.

mod device;
mod kafka;

use anyhow::{Context as _, bail};
use device::Device;
use futures::{StreamExt, TryStreamExt};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tributary_agent::latency::LatencySnapshot;
use tributary_tests::bench::{
    cpu_seconds, env_u64, median_of, self_cpu_seconds, self_threads_cpu_seconds, status_bytes,
    summary,
};
use tributary_tests::nats::NatsOptions;
use tributary_tests::tributary::{STREAM, start_program, uplink_config_for};
use tributary_tests::{Kafka, NatsCluster, NatsServer, ServerProcess, bins};

const TOPIC: &str = "fleet.readings";
const PARTITIONS: i32 = 3;
/// Devices started at once.
const START_CONCURRENCY: usize = 32;
/// How long one device may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

/// CPU seconds used so far, per component.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    agents: f64,
    reader: f64,
    leafs: f64,
    /// Per hub node, the stream's leader first.
    hubs: [f64; 3],
    uplinks: f64,
    broker: f64,
}

impl Cpu {
    fn hubs(&self) -> f64 {
        self.hubs.iter().sum()
    }

    fn total(&self) -> f64 {
        self.agents + self.leafs + self.hubs() + self.uplinks + self.broker
    }

    /// µs per reading between `self` and `later`.
    fn per_reading(&self, later: &Cpu, readings: u64) -> Cpu {
        let per = |a: f64, b: f64| (b - a) * 1e6 / readings.max(1) as f64;
        Cpu {
            agents: per(self.agents, later.agents),
            reader: per(self.reader, later.reader),
            leafs: per(self.leafs, later.leafs),
            hubs: [0, 1, 2].map(|i| per(self.hubs[i], later.hubs[i])),
            uplinks: per(self.uplinks, later.uplinks),
            broker: per(self.broker, later.broker),
        }
    }
}

/// The processes whose CPU is counted.
struct Procs {
    leafs: Vec<u32>,
    /// The stream's leader first.
    hubs: [u32; 3],
    uplinks: Vec<u32>,
    broker: u32,
}

impl Procs {
    fn cpu(&self) -> Cpu {
        let sum = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
        let reader = self_threads_cpu_seconds(|n| n == kafka::THREAD || n.starts_with("rdk:"));
        Cpu {
            agents: self_cpu_seconds() - reader,
            reader,
            leafs: sum(&self.leafs),
            hubs: self.hubs.map(cpu_seconds),
            uplinks: sum(&self.uplinks),
            broker: cpu_seconds(self.broker),
        }
    }
}

/// One measured window.
#[derive(Debug, Clone, Copy)]
struct Round {
    taken_per_s: f64,
    arrived_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu: Cpu,
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.cpu;
        write!(
            f,
            "taken {:.0}/s, in Kafka {:.0} readings/s, sensor -> Kafka p50 {:.1} ms / p99 {:.1} ms; \
             CPU µs/reading: agents {:.0} + leafs {:.0} + hub nodes {:.0} (leader {:.0}, followers {:.0} \
             and {:.0}) + uplinks {:.0} + broker {:.0} = {:.0} (Kafka reader, not counted: {:.0})",
            self.taken_per_s,
            self.arrived_per_s,
            self.p50_ms,
            self.p99_ms,
            c.agents,
            c.leafs,
            c.hubs(),
            c.hubs[0],
            c.hubs[1],
            c.hubs[2],
            c.uplinks,
            c.broker,
            c.total(),
            c.reader
        )
    }
}

/// The median of every field over `rounds`.
fn medians(rounds: &[Round]) -> Round {
    let m = |f: fn(&Round) -> f64| median_of(rounds.iter().map(f).collect());
    Round {
        taken_per_s: m(|r| r.taken_per_s),
        arrived_per_s: m(|r| r.arrived_per_s),
        p50_ms: m(|r| r.p50_ms),
        p99_ms: m(|r| r.p99_ms),
        cpu: Cpu {
            agents: m(|r| r.cpu.agents),
            reader: m(|r| r.cpu.reader),
            leafs: m(|r| r.cpu.leafs),
            hubs: [
                m(|r| r.cpu.hubs[0]),
                m(|r| r.cpu.hubs[1]),
                m(|r| r.cpu.hubs[2]),
            ],
            uplinks: m(|r| r.cpu.uplinks),
            broker: m(|r| r.cpu.broker),
        },
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

async fn bench() -> anyhow::Result<()> {
    let n = usize::try_from(env_u64("TRIBUTARY_FLEET_DEVICES", 1_000))?.max(1);
    let m = usize::try_from(env_u64("TRIBUTARY_FLEET_LEAFS", 4))?.clamp(1, n);
    let interval = Duration::from_millis(env_u64("TRIBUTARY_FLEET_INTERVAL_MS", 1_000).max(1));
    let rounds = usize::try_from(env_u64("TRIBUTARY_BENCH_ROUNDS", 3))?.max(1);
    let secs = env_u64("TRIBUTARY_FLEET_SECS", 20).max(1);
    let warmup = Duration::from_secs(env_u64("TRIBUTARY_FLEET_WARMUP_SECS", 10));
    let uplink_bin = bins::uplink().context(
        "the fleet bench needs the release uplink: cargo build --release -p tributary-uplink",
    )?;
    let mut hub = NatsCluster::start(3)?;
    let (major, minor, patch) = hub.version();
    println!(
        "fleet: {n} devices, one reading every {interval:?} each, through {m} leafs, a 3-node \
         hub (nats-server {major}.{minor}.{patch}, stream R3, file storage, sync {}), tansu \
         (memory), {rounds} round(s) of {secs} s per phase; load average {}",
        std::env::var("TRIBUTARY_HUB_SYNC_INTERVAL").unwrap_or_else(|_| "default".into()),
        loadavg()
    );
    let kafka = Kafka::start_memory()?;
    kafka.create_topic(TOPIC, PARTITIONS)?;
    let uplink_config = uplink_config_for(&hub.client_urls(), 3, &kafka, TOPIC, "fleet");
    let mut uplinks = vec![start_uplink("uplink-a", &uplink_bin, &uplink_config)?];
    wait_for_stream(&hub).await?;
    let reader = kafka::Reader::start(&kafka, TOPIC, PARTITIONS)?;
    let leafs = start_leafs(&hub, n, m)?;
    let leaf_urls: Vec<String> = leafs.iter().map(NatsServer::client_url).collect();

    let state = tempfile::tempdir()?;
    let rss_before = status_bytes(None, "VmRSS");
    let started = Instant::now();
    let devices: Vec<Device> = futures::stream::iter(0..n)
        .map(|i| {
            let id = device::device_id(i);
            let dir = state.path().join(&id);
            let url = leaf_urls[i % m].clone();
            let phase = interval.mul_f64(i as f64 / n as f64);
            async move {
                let cfg = device::config(&id, &url, &dir)?;
                tokio::time::timeout(START_TIMEOUT, Device::start(cfg, phase, interval))
                    .await
                    .with_context(|| format!("{id} did not start within {START_TIMEOUT:?}"))?
            }
        })
        .buffer_unordered(START_CONCURRENCY)
        .try_collect()
        .await?;
    println!(
        "{n} devices started in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(warmup).await;
    let rss_after = status_bytes(None, "VmRSS");

    let leader = hub.stream_leader_node(STREAM).await?;
    let node_pid = |i: usize| hub.process(i).pid().context("a hub node's pid");
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut procs = Procs {
        leafs: leafs.iter().filter_map(NatsServer::pid).collect(),
        hubs: [
            node_pid(leader)?,
            node_pid(followers[0])?,
            node_pid(followers[1])?,
        ],
        uplinks: uplinks.iter().filter_map(ServerProcess::pid).collect(),
        broker: kafka.pid().context("the broker's pid")?,
    };
    let mut phases = Vec::new();
    for phase in 1..=2usize {
        if phase == 2 {
            uplinks.push(start_uplink("uplink-b", &uplink_bin, &uplink_config)?);
            procs.uplinks = uplinks.iter().filter_map(ServerProcess::pid).collect();
            tokio::time::sleep(warmup).await;
        }
        let mut results = Vec::new();
        for round in 1..=rounds {
            let r = measure(&devices, &reader, &procs, Duration::from_secs(secs)).await;
            println!("{phase} uplink(s), round {round}: {r}");
            results.push(r);
        }
        let med = medians(&results);
        println!("{phase} uplink(s), median of {rounds}: {med}");
        phases.push(med);
    }

    // Every reading once: stop the devices as the agent stops (drained),
    // then wait for Kafka to hold everything they took.
    let hub_ack = merged_ack_latency(&devices);
    let spilled: u64 = devices
        .iter()
        .map(|d| d.stats.spilled_messages.load(Relaxed))
        .sum();
    let stopping = Instant::now();
    let taken: Vec<(String, i64)> = futures::stream::iter(devices)
        .map(Device::stop)
        .buffer_unordered(64)
        .try_collect()
        .await?;
    let total: i64 = taken.iter().map(|(_, t)| t).sum();
    let accounting = wait_for_all(&reader, &taken).await;
    println!(
        "devices stopped in {:.1} s; the agents' own sensor -> hub ack: p50 {:.1} ms / p99 {:.1} ms \
         over the whole run; {spilled} message(s) spilled to disk",
        stopping.elapsed().as_secs_f64(),
        hub_ack.quantile_us(0.5).unwrap_or(0.0) / 1000.0,
        hub_ack.quantile_us(0.99).unwrap_or(0.0) / 1000.0,
    );
    println!(
        "memory per simulated device: {:.1} KiB (RSS {:.1} -> {:.1} MiB for {n} devices)",
        rss_after.saturating_sub(rss_before) as f64 / 1024.0 / n as f64,
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
    );
    println!(
        "every reading once: {total} taken, {} missing, {} duplicate(s) (at-least-once), {} foreign record(s); load average {}",
        accounting.missing,
        accounting.duplicates,
        accounting.foreign,
        loadavg()
    );
    println!("summary (medians):");
    for (i, p) in phases.iter().enumerate() {
        println!("  {} uplink(s): {p}", i + 1);
    }
    for mut u in uplinks {
        u.terminate(Duration::from_secs(30))?;
    }
    if accounting.missing > 0 || accounting.foreign > 0 {
        bail!("{} reading(s) never arrived in Kafka", accounting.missing);
    }
    Ok(())
}

fn start_uplink(name: &str, bin: &Path, config: &str) -> anyhow::Result<ServerProcess> {
    let log: &OsStr = "warn".as_ref();
    Ok(start_program(
        name,
        bin.to_path_buf(),
        config,
        &[("TRIBUTARY_LOG", log)],
    )?)
}

/// Waits until the first uplink created the stream (R3).
async fn wait_for_stream(hub: &NatsCluster) -> anyhow::Result<()> {
    let js = async_nats::jetstream::with_domain(
        hub.connect().await?,
        tributary_tests::nats::JETSTREAM_DOMAIN,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while js.get_stream(STREAM).await.is_err() {
        if Instant::now() > deadline {
            bail!("the uplink did not create the stream {STREAM} within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// `m` leafs of `hub`; leaf `l` knows the devices `i % m == l`, each with
/// the shipped per-device user entry.
fn start_leafs(hub: &NatsCluster, n: usize, m: usize) -> anyhow::Result<Vec<NatsServer>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cross/hub/device-user.conf");
    let template =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    (0..m)
        .map(|l| {
            let users: Vec<String> = (l..n)
                .step_by(m)
                .map(|i| {
                    let id = device::device_id(i);
                    template
                        .replace("@DEVICE@", &id)
                        .replace("@PASSWORD@", &device::password(&id))
                })
                .collect();
            let extra_config = format!(
                "authorization {{\n  users = [\n{}\n  ]\n}}\n",
                users.join("\n")
            );
            Ok(hub.leaf_with(NatsOptions {
                extra_config,
                ..NatsOptions::default()
            })?)
        })
        .collect()
}

/// Measures one window of `secs`.
async fn measure(
    devices: &[Device],
    reader: &kafka::Reader,
    procs: &Procs,
    secs: Duration,
) -> Round {
    let taken = || devices.iter().map(|d| d.taken.load(Relaxed)).sum::<i64>();
    let (t0, r0, c0) = (taken(), reader.records(), procs.cpu());
    reader.take_latencies();
    let start = Instant::now();
    tokio::time::sleep(secs).await;
    let (t1, r1, c1) = (taken(), reader.records(), procs.cpu());
    let elapsed = start.elapsed().as_secs_f64();
    let lat = summary(
        reader
            .take_latencies()
            .into_iter()
            .map(|us| us as f64)
            .collect(),
    );
    Round {
        taken_per_s: (t1 - t0) as f64 / elapsed,
        arrived_per_s: (r1 - r0) as f64 / elapsed,
        p50_ms: lat[0] / 1000.0,
        p99_ms: lat[1] / 1000.0,
        cpu: c0.per_reading(&c1, r1 - r0),
    }
}

/// The agents' hub-ack histograms added up.
fn merged_ack_latency(devices: &[Device]) -> LatencySnapshot {
    let mut all = LatencySnapshot::default();
    for d in devices {
        let s = d.stats.ack_latency.snapshot();
        if all.counts.is_empty() {
            all.counts = vec![0; s.counts.len()];
        }
        for (a, c) in all.counts.iter_mut().zip(&s.counts) {
            *a += c;
        }
        all.sum_us += s.sum_us;
        all.max_us = all.max_us.max(s.max_us);
    }
    all
}

/// Waits until nothing taken is missing, or nothing arrived for 30 s.
async fn wait_for_all(reader: &kafka::Reader, taken: &[(String, i64)]) -> kafka::Accounting {
    let mut last = (reader.records(), Instant::now());
    loop {
        let a = reader.account(taken);
        if a.missing == 0 {
            // A moment more for late duplicates to be counted too.
            tokio::time::sleep(Duration::from_secs(2)).await;
            return reader.account(taken);
        }
        let now = reader.records();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(30) {
            return a;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
