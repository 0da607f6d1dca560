//! Downlink latency (`cargo bench -p tributary-uplink --bench downlink`):
//! from a command's Kafka write to its arrival on the hub, as a subscriber
//! of the command subjects sees it.
//!
//! A real hub (JetStream, file storage) and a Kafka broker on tansu's
//! memory storage. In each of `TRIBUTARY_BENCH_ROUNDS` rounds (default 3),
//! `TRIBUTARY_BENCH_COMMANDS` commands (default 1,000) are written at
//! `TRIBUTARY_BENCH_RATE` per second (default 200), each carrying its send
//! time in its `id`:
//!
//! - the baseline: a bare loop, an rdkafka `StreamConsumer` assigned to
//!   the topic and an async-nats JetStream publish awaiting each ack, the
//!   least any Kafka → JetStream bridge does;
//! - the uplink's downlink (in this process, at its defaults), which also
//!   reads each record into a command and keeps its position.
//!
//! It prints p50/p99/max per round and the medians over the rounds.

use async_nats::jetstream;
use futures::StreamExt;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tributary_tests::bench::{env_u64, median, now_ns, record_time, summary, write_commands};
use tributary_tests::{Kafka, NatsServer};
use tributary_uplink::health::Health;
use tributary_uplink::metrics::Metrics;

/// Latencies (ms) of the first `n` messages on `subject`: now minus the
/// send time found after `"id":"t` in the payload.
async fn observe(mut sub: async_nats::Subscriber, n: u64) -> Vec<f64> {
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(30), sub.next()).await else {
            panic!("only {} of {n} commands arrived", out.len());
        };
        let text = std::str::from_utf8(&m.payload).unwrap();
        let sent = record_time(text).expect("a send time in the id");
        out.push(now_ns().saturating_sub(sent) as f64 / 1e6);
    }
    out
}

/// The bare bridge: every record of `topic` published into `subject`.
async fn baseline(
    mut kafka: rdkafka::ClientConfig,
    client: async_nats::Client,
    topic: &'static str,
    stop: CancellationToken,
) {
    let js = jetstream::new(client);
    let consumer: StreamConsumer = kafka
        .set("group.id", "bench-baseline")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    list.add_partition_offset(topic, 0, Offset::End).unwrap();
    consumer.assign(&list).unwrap();
    loop {
        let m = tokio::select! {
            () = stop.cancelled() => return,
            m = consumer.recv() => m.unwrap(),
        };
        let payload = m.payload().unwrap_or_default().to_vec();
        js.publish("bench.cmd.pi-1.vent", payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds = env_u64("TRIBUTARY_BENCH_ROUNDS", 3);
    let n = env_u64("TRIBUTARY_BENCH_COMMANDS", 1_000);
    let rate = env_u64("TRIBUTARY_BENCH_RATE", 200);
    let hub = NatsServer::hub().unwrap();
    let kafka = Kafka::start_memory().unwrap();
    kafka.create_topic("commands", 1).unwrap();
    kafka.create_topic("baseline", 1).unwrap();
    let client = hub.connect().await.unwrap();
    let producer: FutureProducer = kafka
        .client_config()
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let js = jetstream::new(client.clone());
    js.get_or_create_stream(jetstream::stream::Config {
        name: "BENCH".into(),
        subjects: vec!["bench.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let text = format!(
        "[nats]\nurls = [\"{}\"]\n[kafka]\nbrokers = \"{}\"\ncreate_topics = true\n\
         [[downlink]]\ntopic = \"commands\"\n",
        hub.client_url(),
        kafka.bootstrap()
    );
    let config: tributary_config::UplinkConfig =
        tributary_config::parse(&text, "bench.toml".as_ref()).unwrap();
    let stop = CancellationToken::new();
    let uplink = tokio::spawn(tributary_uplink::run_with(
        config,
        stop.clone(),
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
    ));
    tokio::spawn(baseline(
        kafka.client_config(),
        client.clone(),
        "baseline",
        stop.clone(),
    ));
    // Let both bridges assign their partitions before the first round.
    tokio::time::sleep(Duration::from_secs(3)).await;
    println!(
        "downlink latency, Kafka write -> hub, {n} commands at {rate}/s, ms (p50 / p99 / max)"
    );
    let (mut base, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (name, topic, subject, into) in [
            ("baseline", "baseline", "bench.cmd.>", &mut base),
            ("uplink", "commands", "tributary-ctl.cmd.>", &mut ours),
        ] {
            let sub = client.subscribe(subject).await.unwrap();
            client.flush().await.unwrap();
            let seen = tokio::spawn(observe(sub, n));
            write_commands(&producer, topic, "vent", n, rate)
                .await
                .unwrap();
            let s = summary(seen.await.unwrap());
            println!(
                "round {round} {name:>8}: {:.2} / {:.2} / {:.2}",
                s[0], s[1], s[2]
            );
            into.push(s);
        }
    }
    for (name, r) in [("baseline", &base), ("uplink", &ours)] {
        println!(
            "median {name:>8}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            median(r, 0),
            median(r, 1),
            median(r, 2)
        );
    }
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(20), uplink).await;
}
