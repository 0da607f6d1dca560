//! Command round trip (`cargo build --release -p tributary-uplink && cargo
//! bench -p tributary-agent --bench commands`): from a command's Kafka
//! write to its application on the device, and to its outcome record in
//! Kafka.
//!
//! Real servers: a hub (JetStream, file storage), a leaf, a tansu broker
//! (memory storage), the release `tributary-uplink` with a `[[downlink]]`
//! rule, and this crate's `tributary-agent` with a file actuator, both at
//! their defaults. In each of `TRIBUTARY_BENCH_ROUNDS` rounds (default 3),
//! `TRIBUTARY_BENCH_COMMANDS` commands (default 100) are written at
//! `TRIBUTARY_BENCH_RATE` per second (default 10), each carrying its write
//! time in its `id`:
//!
//! - **applied**: the outcome's `finished_at_ms` (the device's clock, the
//!   same machine here) minus the write time: what the device saw;
//! - **outcome in Kafka**: when a Kafka reader of `tributary.outcomes`
//!   receives the outcome, minus the write time: the whole loop;
//! - **baseline**, measured in the same run on the same broker: a bare
//!   loop that reads each command record with rdkafka and writes a reply
//!   record at once, as read by the same reader: what Kafka's own
//!   produce → fetch → produce → fetch costs here, the floor of any loop
//!   through Kafka.
//!
//! It prints p50/p99/max per round and the medians over the rounds.

use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::time::Duration;
use tributary_tests::bench::{
    env_u64, id_time, median, now_ns, record_time, send, summary, write_commands,
};
use tributary_tests::tributary::{agent_config, start_program, uplink_config};
use tributary_tests::{Kafka, NatsServer, bins};
use tributary_wire::command::Outcome;

type Error = Box<dyn std::error::Error + Send + Sync>;

const OUTCOMES: &str = "tributary.outcomes";

/// A consumer of partition 0 of each of `topics` from their ends.
fn reader(
    mut kafka: rdkafka::ClientConfig,
    group: &str,
    topics: &[&str],
) -> Result<StreamConsumer, Error> {
    let consumer: StreamConsumer = kafka
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.min.bytes", "1")
        .create()?;
    let mut list = TopicPartitionList::new();
    for t in topics {
        list.add_partition_offset(t, 0, Offset::End)?;
    }
    consumer.assign(&list)?;
    Ok(consumer)
}

fn producer(mut kafka: rdkafka::ClientConfig) -> Result<FutureProducer, Error> {
    Ok(kafka.set("linger.ms", "0").create()?)
}

/// The bare loop: each record of `from` written to `to` at once.
async fn echo(
    kafka: rdkafka::ClientConfig,
    from: &'static str,
    to: &'static str,
) -> Result<(), Error> {
    let consumer = reader(kafka.clone(), "bench-echo", &[from])?;
    let producer = producer(kafka)?;
    loop {
        let m = consumer.recv().await?;
        send(&producer, to, m.payload().unwrap_or_default()).await?;
    }
}

/// Per command write time: (applied ms, arrival ms) from `n` records of
/// `consumer`; `outcomes` says whether they are outcome records.
async fn observe(
    consumer: &StreamConsumer,
    n: u64,
    outcomes: bool,
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let mut seen: HashMap<u64, (f64, f64)> = HashMap::new();
    while (seen.len() as u64) < n {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .map_err(|_| format!("only {} of {n} records arrived", seen.len()))??;
        let arrived = now_ns();
        let payload = m.payload().unwrap_or_default();
        let (sent, applied_ns) = if outcomes {
            let o: Outcome = serde_json::from_slice(payload)?;
            let sent = id_time(&o.command_id).ok_or("an id without time")?;
            (sent, o.finished_at_ms.saturating_mul(1_000_000))
        } else {
            let sent = record_time(std::str::from_utf8(payload)?).ok_or("a record without time")?;
            (sent, arrived)
        };
        let ms = |t: u64| t.saturating_sub(sent) as f64 / 1e6;
        seen.entry(sent).or_insert((ms(applied_ns), ms(arrived)));
    }
    Ok(seen.into_values().unzip())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let rounds = env_u64("TRIBUTARY_BENCH_ROUNDS", 3);
    let n = env_u64("TRIBUTARY_BENCH_COMMANDS", 100);
    let rate = env_u64("TRIBUTARY_BENCH_RATE", 10).max(1);
    let Ok(uplink_bin) = bins::uplink() else {
        println!("skipped: build the uplink first (cargo build --release -p tributary-uplink)");
        return Ok(());
    };
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    leaf.wait_leaf_connected(Duration::from_secs(10))?;
    let kafka = Kafka::start_memory()?;
    for topic in ["commands", "baseline", "baseline.replies", OUTCOMES] {
        kafka.create_topic(topic, 1)?;
    }
    let log: &OsStr = "warn".as_ref();
    let mut uplink = start_program(
        "uplink",
        uplink_bin,
        &format!(
            "{}\n[[downlink]]\ntopic = \"commands\"\n",
            uplink_config(&hub, &kafka, "tributary.readings", "bench")
        ),
        &[("TRIBUTARY_LOG", log)],
    )?;
    let state = tempfile::tempdir()?;
    let fan = state.path().join("fan");
    // The harness's agent configuration, at the agent's default flush interval.
    let config = agent_config(
        "pi-1",
        &leaf,
        state.path(),
        &format!(
            "[[actuators.file]]\nid = \"fan\"\npath = \"{}\"\naccepts = {{ kind = \"number\" }}\n",
            fan.display()
        ),
    )
    .replace("flush_interval = \"200ms\"\n", "");
    let mut agent = start_program(
        "agent",
        env!("CARGO_BIN_EXE_tributary-agent").into(),
        &config,
        &[("TRIBUTARY_LOG", log)],
    )?;
    let echo = tokio::spawn(echo(kafka.client_config(), "baseline", "baseline.replies"));
    let replies = reader(
        kafka.client_config(),
        "bench-replies",
        &["baseline.replies"],
    )?;
    let outcomes = reader(kafka.client_config(), "bench-outcomes", &[OUTCOMES])?;
    let producer = producer(kafka.client_config())?;
    // Warm-up: connections, partition assignments, the agent's consumer.
    write_commands(&producer, "commands", "fan", 3, 2).await?;
    observe(&outcomes, 3, true).await?;
    write_commands(&producer, "baseline", "fan", 3, 2).await?;
    observe(&replies, 3, false).await?;

    println!(
        "command round trip, {n} commands at {rate}/s, ms from the Kafka write (p50 / p99 / max)"
    );
    let (mut base, mut applied, mut back) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let (seen, written) = tokio::join!(
            observe(&replies, n, false),
            write_commands(&producer, "baseline", "fan", n, rate)
        );
        written?;
        let b = summary(seen?.1);
        let (seen, written) = tokio::join!(
            observe(&outcomes, n, true),
            write_commands(&producer, "commands", "fan", n, rate)
        );
        written?;
        let (a, k) = seen?;
        let (a, k) = (summary(a), summary(k));
        for (name, s) in [("baseline", b), ("applied", a), ("outcome", k)] {
            println!(
                "round {round} {name:>8}: {:.1} / {:.1} / {:.1}",
                s[0], s[1], s[2]
            );
        }
        base.push(b);
        applied.push(a);
        back.push(k);
    }
    for (name, r) in [
        ("baseline (Kafka -> Kafka, bare)", &base),
        ("applied on the device", &applied),
        ("outcome in Kafka", &back),
    ] {
        println!(
            "median {name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            median(r, 0),
            median(r, 1),
            median(r, 2)
        );
    }
    echo.abort();
    agent.terminate(Duration::from_secs(20))?;
    uplink.terminate(Duration::from_secs(30))?;
    Ok(())
}
