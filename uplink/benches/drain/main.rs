//! Drain benchmark (`cargo bench -p tributary-uplink --bench drain`).
//!
//! Pre-loads `TRIBUTARY_BENCH_READINGS` readings (default 1,000,000; 10 per
//! message, 100 devices) into a real hub's JetStream stream (file storage),
//! then, in each of `TRIBUTARY_BENCH_ROUNDS` rounds (default 3), measures
//! against the same servers, with a Kafka broker on tansu's memory storage:
//!
//! - (a) a bare JetStream pull consumer that only acks;
//! - (b) a bare rdkafka `FutureProducer` (idempotent, acks=all, lz4, same
//!   linger) writing the same JSON records, pre-encoded;
//! - (b') the same with a `ThreadedProducer` that only counts delivery
//!   reports, the cheapest way rdkafka offers (the uplink's own way);
//! - the uplink, at-least-once, then exactly-once, each draining the whole
//!   stream through its own durable consumer into its own topic.
//!
//! Each measurement prints readings/s and the CPU each process spent per
//! reading; the summary gives the medians over the rounds and the ratios
//! of the uplink to min(a, b) (the goal) and to min(a, b').

mod baselines;
mod cpu;
mod preload;

use baselines::Record;
use cpu::{Cpu, CpuPerReading};
use preload::{DEVICES, PER_MESSAGE, envelope, preload};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary_tests::{Kafka, NatsServer};
use tributary_uplink::health::Health;
use tributary_uplink::metrics::Metrics;

const PARTITIONS: i32 = 6;

fn config(
    hub: &NatsServer,
    kafka: &Kafka,
    durable: &str,
    topic: &str,
    eo: bool,
) -> tributary_config::UplinkConfig {
    let text = format!(
        r#"
[nats]
urls = ["{}"]
[stream]
subjects = ["tributary.>"]
[consumer]
durable = "{durable}"
max_ack_pending = 32768
pull_batch = 1024
[kafka]
brokers = "{}"
topic = "{topic}"
dead_letter_topic = "bench-dead"
create_topics = true
partitions = {PARTITIONS}
linger = "5ms"
[exactly_once]
enabled = {eo}
"#,
        hub.client_url(),
        kafka.bootstrap()
    );
    tributary_config::parse(&text, "bench.toml".as_ref()).expect("bench config")
}

async fn uplink(hub: &NatsServer, kafka: &Kafka, name: &str, messages: u64, eo: bool) -> Duration {
    let config = config(hub, kafka, name, name, eo);
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(tributary_uplink::run_with(
        config,
        shutdown.clone(),
        metrics.clone(),
        health.clone(),
    ));
    while !health.is_ready() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let start = Instant::now();
    while metrics.acked.load(Relaxed) < messages {
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(!task.is_finished(), "the uplink stopped early");
    }
    let took = start.elapsed();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(metrics.produced.load(Relaxed), messages * PER_MESSAGE);
    took
}

/// The records the uplink writes for `messages` messages.
fn json_records(messages: u64) -> Vec<Record> {
    let mut records = Vec::with_capacity((messages * PER_MESSAGE) as usize);
    for i in 0..messages {
        let env = envelope(i);
        for r in env.readings() {
            records.push((r.device.to_owned(), r.id().to_string(), r.to_json()));
        }
    }
    records
}

/// What is measured, in the order of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Subject {
    Consumer,
    FutureProducer,
    CountingProducer,
    AtLeastOnce,
    ExactlyOnce,
}

impl Subject {
    const ALL: [Subject; 5] = [
        Subject::Consumer,
        Subject::FutureProducer,
        Subject::CountingProducer,
        Subject::AtLeastOnce,
        Subject::ExactlyOnce,
    ];

    fn label(self) -> &'static str {
        match self {
            Subject::Consumer => "(a)  bare JetStream pull consumer, ack only",
            Subject::FutureProducer => "(b)  bare rdkafka FutureProducer",
            Subject::CountingProducer => "(b') bare rdkafka producer, counting reports",
            Subject::AtLeastOnce => "uplink, at-least-once",
            Subject::ExactlyOnce => "uplink, exactly-once",
        }
    }
}

/// One measurement: readings/s and CPU per reading.
#[derive(Debug, Clone, Copy)]
struct Measured {
    rate: f64,
    cpu: CpuPerReading,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn main() {
    let messages = env_number("TRIBUTARY_BENCH_READINGS", 1_000_000) / PER_MESSAGE;
    let readings = messages * PER_MESSAGE;
    let rounds = env_number("TRIBUTARY_BENCH_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let hub = NatsServer::hub().expect("hub nats-server");
        let kafka = Kafka::start_memory().expect("tansu broker (memory storage)");
        let client = hub.connect().await.unwrap();
        let js = async_nats::jetstream::new(client);
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "TRIBUTARY".into(),
            subjects: vec!["tributary.>".into()],
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap();
        let t = Instant::now();
        preload(&js, messages).await;
        println!(
            "pre-loaded {readings} readings in {messages} messages ({PER_MESSAGE} per message, {DEVICES} devices) in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        let records = json_records(messages);
        let mut results: BTreeMap<Subject, Vec<Measured>> = BTreeMap::new();
        for round in 1..=rounds {
            println!("round {round} of {rounds}");
            for subject in Subject::ALL {
                let name = format!("bench-{subject:?}-{round}").to_lowercase();
                let cpu = Cpu::now(&hub, &kafka);
                let took = match subject {
                    Subject::Consumer => baselines::bare_jetstream(&js, &name, messages).await,
                    Subject::FutureProducer => {
                        baselines::future_producer(&kafka, &name, &records).await
                    }
                    Subject::CountingProducer => {
                        baselines::counting_producer(&kafka, &name, &records).await
                    }
                    Subject::AtLeastOnce => uplink(&hub, &kafka, &name, messages, false).await,
                    Subject::ExactlyOnce => uplink(&hub, &kafka, &name, messages, true).await,
                };
                let m = Measured {
                    rate: readings as f64 / took.as_secs_f64(),
                    cpu: cpu.since(&hub, &kafka, readings),
                };
                println!("  {:<44} {:>9.0} readings/s  {}", subject.label(), m.rate, m.cpu);
                results.entry(subject).or_default().push(m);
            }
        }
        summary(&results, rounds);
    });
}

/// Medians over the rounds, and the ratios the goals are about.
fn summary(results: &BTreeMap<Subject, Vec<Measured>>, rounds: u64) {
    let rates = |s: Subject| results[&s].iter().map(|m| m.rate).collect::<Vec<_>>();
    let med = |s: Subject| median(rates(s));
    let cpu = |s: Subject| median(results[&s].iter().map(|m| m.cpu.total()).collect());
    println!("median of {rounds} rounds:");
    for s in Subject::ALL {
        println!(
            "  {:<44} {:>9.0} readings/s  CPU {:.2} µs/reading in all",
            s.label(),
            med(s),
            cpu(s)
        );
    }
    let floor = med(Subject::Consumer).min(med(Subject::FutureProducer));
    let lean = med(Subject::Consumer).min(med(Subject::CountingProducer));
    for (s, goal) in [(Subject::AtLeastOnce, 0.8), (Subject::ExactlyOnce, 0.7)] {
        let per_round: Vec<String> = (0..results[&s].len())
            .map(|i| {
                let f = results[&Subject::Consumer][i]
                    .rate
                    .min(results[&Subject::FutureProducer][i].rate);
                format!("{:.2}", results[&s][i].rate / f)
            })
            .collect();
        println!(
            "  {}: {:.2} of min(a, b) (goal {goal}; rounds {}), {:.2} of min(a, b')",
            s.label(),
            med(s) / floor,
            per_round.join(" "),
            med(s) / lean
        );
    }
}
