//! Scale-out of the hub (issue #14): a three-node JetStream cluster, the
//! readings stream at three replicas, a leaf whose remote lists every node
//! and an uplink connected to all three. Readings flow through it into
//! Kafka; losing the stream's leader, or every node at once, loses nothing
//! the hub acknowledged, and the uplink carries on by itself.
//!
//! Runs with the Debian nats-server 2.9.10 (or `TRIBUTARY_NATS_SERVER`):
//! clustering, leafnode remotes with several URLs and R3 streams need
//! nothing newer.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tributary_tests::nats::JETSTREAM_DOMAIN;
use tributary_tests::tributary::{
    STREAM, agent_config, start_agent, start_uplink, stop_cleanly, uplink_config_for,
};
use tributary_tests::{
    HarnessError, Kafka, KafkaReader, NatsCluster, NatsServer, Result, ServerProcess,
};
use tributary_wire::Envelope;

const TOPIC: &str = "cluster.readings";

const SENSORS: &str = r#"
[[sensors.simulated]]
id = "count"
waveform = "counter"
interval = "20ms"
"#;

/// A cluster, its leaf, Kafka, one uplink and one agent counting.
struct Rig {
    hub: NatsCluster,
    _leaf: NatsServer,
    _kafka: Kafka,
    uplink: ServerProcess,
    agent: ServerProcess,
    reader: KafkaReader,
    _state: tempfile::TempDir,
}

fn start_rig() -> Result<Rig> {
    let hub = NatsCluster::start(3)?;
    let leaf = hub.leaf()?;
    let kafka = Kafka::start_memory()?;
    let state = tempfile::tempdir().expect("temp dir");
    let uplink = start_uplink(&uplink_config_for(
        &hub.client_urls(),
        3,
        &kafka,
        TOPIC,
        "cluster",
    ))?;
    let agent = start_agent(&agent_config("cluster-pi", &leaf, state.path(), SENSORS))?;
    let reader = KafkaReader::new(kafka.bootstrap());
    Ok(Rig {
        hub,
        _leaf: leaf,
        _kafka: kafka,
        uplink,
        agent,
        reader,
        _state: state,
    })
}

/// One reading, as both Kafka and the stream name it: device, epoch,
/// sensor and sequence number. A stream message (one envelope) carries
/// several readings, so the two are compared as sets of readings, never
/// as counts of messages.
type ReadingKey = (String, u64, String, u64);

fn reading_keys(readings: &[tributary_tests::JsonReading]) -> BTreeSet<ReadingKey> {
    readings
        .iter()
        .map(|r| (r.device.clone(), r.epoch, r.sensor.clone(), r.seq))
        .collect()
}

/// The distinct values of the counter sensor among `readings`.
fn counters(readings: &[tributary_tests::JsonReading]) -> BTreeSet<i64> {
    readings
        .iter()
        .filter(|r| r.sensor == "count")
        .filter_map(|r| r.value.as_i64())
        .collect()
}

/// Waits (up to 90 s) until Kafka holds at least `n` records; their
/// distinct counter values.
async fn wait_for_counters(rig: &mut Rig, n: usize, why: &str) -> Result<BTreeSet<i64>> {
    match rig
        .reader
        .read_until_async(TOPIC, n, Duration::from_secs(90))
        .await
    {
        Ok(records) => Ok(counters(&KafkaReader::readings(&records)?)),
        Err(e) => panic!(
            "{why}: {e}\nuplink:\n{}\nagent:\n{}",
            rig.uplink.log_tail(30),
            rig.agent.log_tail(30)
        ),
    }
}

/// The readings stream's info, asked of the cluster.
async fn stream_info(hub: &NatsCluster) -> Result<async_nats::jetstream::stream::Info> {
    let js = async_nats::jetstream::with_domain(hub.connect().await?, JETSTREAM_DOMAIN);
    let mut stream = js
        .get_stream(STREAM)
        .await
        .expect("the uplink made the stream");
    Ok(stream.info().await.expect("stream info").clone())
}

/// Every reading the stream holds (each message decoded), and its state.
async fn readings_in_stream(
    hub: &NatsCluster,
) -> Result<(BTreeSet<ReadingKey>, async_nats::jetstream::stream::State)> {
    let js = async_nats::jetstream::with_domain(hub.connect().await?, JETSTREAM_DOMAIN);
    let mut stream = js
        .get_stream(STREAM)
        .await
        .expect("the uplink made the stream");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut keys = BTreeSet::new();
    for seq in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let msg = stream
            .get_raw_message(seq)
            .await
            .unwrap_or_else(|e| panic!("stream message {seq} of {state:?}: {e}"));
        let envelope = Envelope::decode(&msg.payload).expect("an agent's envelope");
        keys.extend(envelope.readings().map(|r| {
            (
                r.device.to_owned(),
                r.epoch,
                r.sensor.to_owned(),
                r.sample.seq,
            )
        }));
    }
    Ok((keys, state))
}

/// Stops the agent cleanly (everything it took is acknowledged by the hub
/// then), reads every message of the stream, and waits until Kafka holds
/// exactly the readings the stream holds, and those are every counter value 0..n without a gap: nothing
/// the agent handed over went missing on the way, and nothing the hub
/// acknowledged went missing from its stream. Returns the stream's state.
async fn all_acknowledged_readings_reach_kafka(
    rig: &mut Rig,
) -> Result<async_nats::jetstream::stream::State> {
    stop_cleanly(&mut rig.agent)?;
    // Nothing publishes any more: what the stream holds now is final.
    let (in_stream, state) = readings_in_stream(&rig.hub).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        // While the uplink still writes, a read to the end may not find it.
        let records = match rig
            .reader
            .read_all_async(TOPIC, Duration::from_secs(10))
            .await
        {
            Err(HarnessError::TooFewRecords { .. } | HarnessError::NotAtEnd { .. }) => continue,
            other => other?,
        };
        let readings = KafkaReader::readings(&records)?;
        let in_kafka = reading_keys(&readings);
        let values = counters(&readings);
        let contiguous = values.last().map(|l| *l + 1) == Some(values.len() as i64);
        if in_kafka == in_stream && contiguous {
            return Ok(state);
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {} readings in {} messages (seq {}..={}), Kafka {} distinct; \
             in Kafka, not in the stream: {:?}; in the stream, not in Kafka: {:?}; \
             counter values missing: {:?}\nuplink:\n{}",
            in_stream.len(),
            state.messages,
            state.first_sequence,
            state.last_sequence,
            in_kafka.len(),
            in_kafka.difference(&in_stream).take(20).collect::<Vec<_>>(),
            in_stream.difference(&in_kafka).take(20).collect::<Vec<_>>(),
            tributary_tests::tributary::missing_counter_values(&values)
                .into_iter()
                .take(20)
                .collect::<Vec<_>>(),
            rig.uplink.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readings_flow_through_a_three_node_cluster_into_kafka_from_a_stream_of_three_replicas()
-> Result<()> {
    let mut rig = start_rig()?;
    wait_for_counters(&mut rig, 50, "through the cluster").await?;

    let info = stream_info(&rig.hub).await?;
    assert_eq!(info.config.num_replicas, 3, "the uplink asked for R3");
    let cluster = info.cluster.expect("a clustered stream has cluster info");
    assert!(cluster.leader.is_some(), "the stream has a leader");
    assert_eq!(
        cluster.replicas.len(),
        2,
        "the leader and two followers: {:?}",
        cluster.replicas
    );

    let state = all_acknowledged_readings_reach_kafka(&mut rig).await?;
    assert!(state.messages > 0);
    rig.uplink.terminate(Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_stream_leader_mid_flow_and_its_restart_lose_nothing_and_the_uplink_carries_on()
-> Result<()> {
    let mut rig = start_rig()?;
    let before = wait_for_counters(&mut rig, 30, "before the kill").await?;

    let leader = rig.hub.stream_leader_node(STREAM).await?;
    let killed = rig.hub.server_name(leader).to_owned();
    rig.hub.kill(leader)?;

    // A new leader among the two left, and readings keep arriving.
    let new_leader = rig.hub.stream_leader_node(STREAM).await?;
    assert_ne!(new_leader, leader, "{killed} is dead");
    let during = wait_for_counters(&mut rig, before.len() + 50, "with the leader dead").await?;

    rig.hub.restart(leader)?;
    wait_for_counters(&mut rig, during.len() + 30, "after the restart").await?;

    let state = all_acknowledged_readings_reach_kafka(&mut rig).await?;

    // The restarted node caught up: its replica holds what the stream holds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let jsz = rig.hub.monitor(leader, "/jsz?streams=1")?;
        let json: serde_json::Value = serde_json::from_str(&jsz).expect("/jsz is JSON");
        let held = &json["account_details"][0]["stream_detail"][0]["state"];
        let replica = (
            held["messages"].as_u64(),
            held["first_seq"].as_u64(),
            held["last_seq"].as_u64(),
        );
        let expected = (
            Some(state.messages),
            Some(state.first_sequence),
            Some(state.last_sequence),
        );
        if replica == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{killed}'s replica after its restart (messages, first, last) {replica:?}, \
             the stream {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        rig.uplink.is_running(),
        "the uplink carried on:\n{}",
        rig.uplink.log_tail(30)
    );
    rig.uplink.terminate(Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_killed_and_started_again_loses_nothing_it_acknowledged() -> Result<()> {
    let mut rig = start_rig()?;
    let before = wait_for_counters(&mut rig, 30, "before the outage").await?;

    rig.hub.kill_all_and_restart()?;
    rig.hub.stream_leader_node(STREAM).await?;
    wait_for_counters(&mut rig, before.len() + 50, "after the restart").await?;

    all_acknowledged_readings_reach_kafka(&mut rig).await?;
    assert!(
        rig.uplink.is_running(),
        "the uplink carried on:\n{}",
        rig.uplink.log_tail(30)
    );
    rig.uplink.terminate(Duration::from_secs(20))?;
    Ok(())
}
