//! The sensor → Kafka row of the latency benchmark: hub, leaf, a tansu
//! broker (memory storage), the release `tributary-uplink` and the agent,
//! with a Kafka consumer that notes each record's arrival.
//!
//! The uplink must be built in release beside the bench
//! (`cargo build --release -p tributary-uplink`); without it the row is
//! skipped with a message.

use crate::{Error, LOADS, run_agent};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tributary_agent::latency::{LatencyHistogram, LatencySnapshot};
use tributary_tests::tributary::{start_program, uplink_config};
use tributary_tests::{Kafka, NatsServer, bins};

const TOPIC: &str = "tributary.readings";
const PARTITIONS: i32 = 3;

/// Reading timestamp → arrival in Kafka for 50 sensors at 1 Hz, or None
/// when no release uplink is there.
pub async fn sensor_to_kafka(
    agent_bin: &Path,
    secs: u64,
    linger: &str,
) -> Result<Option<(LatencySnapshot, u64)>, Error> {
    let Ok(uplink_bin) = bins::uplink() else {
        println!(
            "sensor -> Kafka: skipped (build the uplink first: cargo build --release -p tributary-uplink)"
        );
        return Ok(None);
    };
    let hub = NatsServer::hub()?;
    let leaf = NatsServer::leaf(&hub)?;
    leaf.wait_leaf_connected(Duration::from_secs(10))?;
    let kafka = Kafka::start_memory()?;
    kafka.create_topic(TOPIC, PARTITIONS)?;
    let log: &OsStr = "warn".as_ref();
    let mut uplink = start_program(
        "uplink",
        uplink_bin,
        &uplink_config(&hub, &kafka, TOPIC, "latency"),
        &[("TRIBUTARY_LOG", log)],
    )?;
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("group.id", "latency-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let hist = Arc::new(LatencyHistogram::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Readings taken during run_agent's warm-up (connections, the first
    // pulls) are not counted, as in the hub-ack rows.
    let counted_from = crate::now_ns() + 4_000_000_000;
    let reader = {
        let (hist, stop) = (hist.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut records = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let arrived = crate::now_ns();
                let ts = msg
                    .payload()
                    .and_then(|p| serde_json::from_slice::<serde_json::Value>(p).ok())
                    .and_then(|v| {
                        v["ts"]
                            .as_str()
                            .and_then(tributary_wire::json::parse_rfc3339)
                    });
                if let Some(ts) = ts.filter(|ts| *ts >= counted_from) {
                    hist.record(u64::try_from((arrived - ts) / 1_000).unwrap_or(0));
                    records += 1;
                }
            }
            records
        })
    };
    let run = run_agent(agent_bin, &leaf.client_url(), &LOADS[0], secs, linger).await?;
    let _ = run;
    // Let the last readings arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let records = reader.join().map_err(|_| "the Kafka reader panicked")?;
    uplink.terminate(Duration::from_secs(20))?;
    Ok(Some((hist.snapshot(), records)))
}
