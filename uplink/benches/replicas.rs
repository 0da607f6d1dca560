//! Uplink replicas (`cargo bench -p tributary-uplink --bench replicas`,
//! issue #14 item 3): how the release `tributary-uplink` scales by
//! processes on one machine.
//!
//! Pre-loads `TRIBUTARY_BENCH_READINGS` readings (default 1,000,000; the
//! drain benchmark's stream: 10 per message, 100 devices) into a real hub's
//! stream (file storage), then in each of `TRIBUTARY_BENCH_ROUNDS` rounds
//! (default 3) drains the whole stream with, in turn:
//!
//! - 1, 2 and 3 at-least-once replicas bound to one shared durable
//!   consumer (JetStream hands each pull to whichever replica asks);
//! - 2 exactly-once replicas (`[exactly_once] replicas = 2`), each with its
//!   own durable consumer over the whole stream, writing only the
//!   partitions it owns (`p % 2 == replica`).
//!
//! Each drain starts a fresh tansu broker (memory storage) with a topic of 6
//! partitions and fresh consumers, starts the replicas as processes
//! (`tributary_tests::bins::uplink()`: `$TRIBUTARY_UPLINK_BIN`, else the
//! binary `cargo bench` builds beside this bench; the README's figures set
//! it to the shipped release build) and
//! ends when every consumer's ack floor reached the stream's last message;
//! the time from starting the processes to then gives readings/s, and
//! `/proc/<pid>/stat` the CPU µs per reading of the uplinks (together),
//! nats-server and tansu. The replicas' own count of records Kafka
//! confirmed (`tributary_uplink_produced_total`) must cover every reading.
//! The consumer settings are the drain benchmark's (32,768 acks pending,
//! pulls of 1,024, linger 5 ms), so one replica here compares with its
//! in-process uplink.
//!
//! On 2 cores everything (the replicas, nats-server, tansu) shares the same
//! CPU, so readings/s stops growing with replicas early; the CPU per
//! reading is what extrapolates to a machine per replica.

#[path = "drain/preload.rs"]
mod preload;

use anyhow::{Context as _, bail};
use preload::{PER_MESSAGE, preload};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::time::{Duration, Instant};
use tributary_tests::bench::{cpu_seconds, env_u64, median_of};
use tributary_tests::tributary::{scrape_metric, start_program};
use tributary_tests::{Kafka, NatsServer, ServerProcess, bins, free_port};

const STREAM: &str = "TRIBUTARY";
const PARTITIONS: i32 = 6;
/// A drain that takes longer than this failed.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// A way of running replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Setup {
    exactly_once: bool,
    replicas: u32,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::alo(1),
        Setup::alo(2),
        Setup::alo(3),
        Setup {
            exactly_once: true,
            replicas: 2,
        },
    ];

    const fn alo(replicas: u32) -> Setup {
        Setup {
            exactly_once: false,
            replicas,
        }
    }

    fn label(self) -> String {
        let mode = if self.exactly_once {
            "exactly-once, owned partitions"
        } else {
            "at-least-once, shared consumer"
        };
        format!("{} replica(s), {mode}", self.replicas)
    }

    /// The durable consumers the replicas use with durable `name`.
    fn consumers(self, name: &str) -> Vec<String> {
        if self.exactly_once && self.replicas > 1 {
            (0..self.replicas).map(|r| format!("{name}-{r}")).collect()
        } else {
            vec![name.to_owned()]
        }
    }
}

/// One drain.
#[derive(Debug, Clone, Copy)]
struct Drained {
    rate: f64,
    uplinks: f64,
    nats: f64,
    kafka: f64,
}

impl Drained {
    fn total(&self) -> f64 {
        self.uplinks + self.nats + self.kafka
    }
}

impl std::fmt::Display for Drained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>8.0} readings/s  CPU µs/reading: uplinks {:.2} + nats-server {:.2} + tansu {:.2} = {:.2}",
            self.rate,
            self.uplinks,
            self.nats,
            self.kafka,
            self.total()
        )
    }
}

fn config(hub: &NatsServer, kafka: &Kafka, durable: &str, setup: Setup, replica: u32) -> String {
    format!(
        r#"
[nats]
urls = ["{hub}"]
[stream]
name = "{STREAM}"
subjects = ["tributary.>"]
create = false
[consumer]
durable = "{durable}"
max_ack_pending = 32768
pull_batch = 1024
[kafka]
brokers = "{kafka}"
topic = "replicas"
dead_letter_topic = "replicas-dead"
create_topics = true
partitions = {PARTITIONS}
linger = "5ms"
[exactly_once]
enabled = {eo}
replicas = {replicas}
replica = {replica}
[http]
listen = "127.0.0.1:{port}"
[control]
enabled = false
"#,
        hub = hub.client_url(),
        kafka = kafka.bootstrap(),
        eo = setup.exactly_once,
        replicas = if setup.exactly_once {
            setup.replicas
        } else {
            1
        },
        replica = if setup.exactly_once { replica } else { 0 },
        port = free_port(),
    )
}

/// Whether every consumer in `names` acknowledged the stream up to `last`.
async fn drained(js: &async_nats::jetstream::Context, names: &[String], last: u64) -> bool {
    let Ok(stream) = js.get_stream(STREAM).await else {
        return false;
    };
    for name in names {
        match stream.consumer_info(name).await {
            Ok(info) if info.ack_floor.stream_sequence >= last => {}
            _ => return false,
        }
    }
    true
}

/// The `[http] listen` port of a config written by [`config`].
fn http_port_of(config: &str) -> u16 {
    config
        .split("listen = \"127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|p| p.parse().ok())
        .expect("the config has an http port")
}

async fn drain(
    hub: &NatsServer,
    js: &async_nats::jetstream::Context,
    setup: Setup,
    name: &str,
    readings: u64,
    last: u64,
) -> anyhow::Result<Drained> {
    let bin = bins::uplink().context(
        "the replicas bench needs the release uplink: cargo build --release -p tributary-uplink",
    )?;
    let kafka = Kafka::start_memory()?;
    kafka.create_topic("replicas", PARTITIONS)?;
    kafka.create_topic("replicas-dead", 1)?;
    let configs: Vec<String> = (0..setup.replicas)
        .map(|r| config(hub, &kafka, name, setup, r))
        .collect();
    let log: &OsStr = "warn".as_ref();
    let cpu_of = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let (nats_pid, kafka_pid) = (
        hub.pid().context("hub pid")?,
        kafka.pid().context("broker pid")?,
    );
    let (nats0, kafka0) = (cpu_seconds(nats_pid), cpu_seconds(kafka_pid));
    let start = Instant::now();
    let mut uplinks: Vec<ServerProcess> = configs
        .iter()
        .enumerate()
        .map(|(r, c)| {
            start_program(
                &format!("uplink-{r}"),
                bin.clone(),
                c,
                &[("TRIBUTARY_LOG", log)],
            )
        })
        .collect::<Result<_, _>>()?;
    let pids: Vec<u32> = uplinks.iter().filter_map(ServerProcess::pid).collect();
    let consumers = setup.consumers(name);
    let mut uplink_cpu = 0.0;
    loop {
        // Sampled before the check: the processes still live.
        let cpu = cpu_of(&pids);
        if drained(js, &consumers, last).await {
            uplink_cpu = cpu_of(&pids).max(cpu).max(uplink_cpu);
            break;
        }
        uplink_cpu = cpu;
        if start.elapsed() > DRAIN_TIMEOUT {
            bail!(
                "{} did not drain the stream within {DRAIN_TIMEOUT:?}",
                setup.label()
            );
        }
        for u in &mut uplinks {
            if !u.is_running() {
                bail!("{} stopped early:\n{}", u.name(), u.log_tail(20));
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = start.elapsed().as_secs_f64();
    let (nats1, kafka1) = (cpu_seconds(nats_pid), cpu_seconds(kafka_pid));
    let mut produced = 0.0;
    for c in &configs {
        produced += scrape_metric(http_port_of(c), "tributary_uplink_produced_total")?;
    }
    for mut u in uplinks {
        u.terminate(Duration::from_secs(30))?;
    }
    if (produced as u64) < readings {
        bail!(
            "{}: Kafka confirmed {produced} records of {readings}",
            setup.label()
        );
    }
    let per = |cpu: f64| cpu * 1e6 / readings as f64;
    Ok(Drained {
        rate: readings as f64 / took,
        uplinks: per(uplink_cpu),
        nats: per(nats1 - nats0),
        kafka: per(kafka1 - kafka0),
    })
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let messages = env_u64("TRIBUTARY_BENCH_READINGS", 1_000_000) / PER_MESSAGE;
    let readings = messages * PER_MESSAGE;
    let rounds = env_u64("TRIBUTARY_BENCH_ROUNDS", 3).max(1);
    let hub = NatsServer::hub()?;
    let js = async_nats::jetstream::new(hub.connect().await?);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["tributary.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await?;
    let t = Instant::now();
    preload(&js, messages).await;
    let last = js
        .get_stream(STREAM)
        .await?
        .info()
        .await?
        .state
        .last_sequence;
    let (major, minor, patch) = hub.version();
    println!(
        "pre-loaded {readings} readings in {messages} messages in {:.1} s (nats-server {major}.{minor}.{patch}, file storage); load average {}",
        t.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut results: BTreeMap<Setup, Vec<Drained>> = BTreeMap::new();
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        for setup in Setup::ALL {
            let name = format!(
                "r{round}-{}{}",
                if setup.exactly_once { "eo" } else { "alo" },
                setup.replicas
            );
            let d = drain(&hub, &js, setup, &name, readings, last).await?;
            println!("  {:<45} {d}", setup.label());
            results.entry(setup).or_default().push(d);
        }
    }
    println!(
        "median of {rounds} round(s); load average {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let one = median_of(results[&Setup::alo(1)].iter().map(|d| d.rate).collect());
    for setup in Setup::ALL {
        let runs = &results[&setup];
        let m = |f: fn(&Drained) -> f64| median_of(runs.iter().map(f).collect());
        let d = Drained {
            rate: m(|d| d.rate),
            uplinks: m(|d| d.uplinks),
            nats: m(|d| d.nats),
            kafka: m(|d| d.kafka),
        };
        println!(
            "  {:<45} {d}  ({:.2} × one replica)",
            setup.label(),
            d.rate / one
        );
    }
    Ok(())
}
