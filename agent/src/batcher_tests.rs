//! Tests of cutting: limits, order, clock states, and the batcher task's
//! linger.

use super::*;
use crate::buffer::{Buffer, BufferConfig};
use crate::link_idle::IdleSignal;
use crate::sensors::SensorMeta;
use crate::stats::AgentStats;
use proptest::prelude::*;
use tributary_wire::Value;

fn sensor(id: &str) -> Arc<SensorMeta> {
    Arc::new(SensorMeta {
        id: id.to_owned(),
        unit: Some("°C".to_owned()),
        tags: vec![("room".to_owned(), "lab".to_owned())],
    })
}

fn obs(meta: &Arc<SensorMeta>, value: Value) -> Observation {
    Observation {
        sensor: meta.clone(),
        timestamp_ns: 1_795_000_000_000_000_000,
        clock: Clock::Synced,
        value,
    }
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Int),
        (-1e12f64..1e12).prop_map(Value::Float),
        any::<bool>().prop_map(Value::Bool),
        "[a-zA-Z0-9 ]{0,256}".prop_map(Value::Text),
    ]
}

proptest! {
    /// `max_message_size` is enforced by cut's size estimate: every
    /// envelope it cuts fits (unless one reading alone is larger), holds at
    /// most `max_readings`, and all readings come out once, in order per
    /// sensor.
    #[test]
    fn every_cut_envelope_fits_its_limits_and_keeps_every_reading_in_order(
        values in proptest::collection::vec((0usize..3, value()), 1..400),
        max_readings in 1usize..50,
        max_message_size in 1024usize..4096,
    ) {
        let sensors = [sensor("a"), sensor("b"), sensor("c")];
        let limits = BatchLimits { max_readings, max_message_size };
        let sequenced = values
            .iter()
            .enumerate()
            .map(|(i, (s, v))| (obs(&sensors[*s], v.clone()), i as u64));
        let envelopes = cut("dev", 7, &limits, sequenced);
        let mut seen: Vec<(String, u64)> = Vec::new();
        for env in &envelopes {
            let len = env.encode().expect("encodes").len();
            prop_assert!(env.samples.len() <= max_readings);
            prop_assert!(len <= max_message_size || env.samples.len() == 1,
                "{} bytes > {}", len, max_message_size);
            for s in &env.samples {
                seen.push((env.sensor.clone(), s.seq));
            }
        }
        prop_assert_eq!(seen.len(), values.len());
        for id in ["a", "b", "c"] {
            let seqs: Vec<u64> = seen.iter().filter(|(s, _)| s == id).map(|(_, q)| *q).collect();
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            prop_assert_eq!(seqs, sorted);
        }
    }
}

async fn batcher(
    linger: Duration,
    max_readings: usize,
) -> (
    mpsc::Sender<Observation>,
    mpsc::Receiver<Message>,
    tokio::task::JoinHandle<Result<(), BatchError>>,
    tempfile::TempDir,
) {
    batcher_with(linger, max_readings, None).await
}

async fn batcher_with(
    linger: Duration,
    max_readings: usize,
    link_idle: Option<LinkIdle>,
) -> (
    mpsc::Sender<Observation>,
    mpsc::Receiver<Message>,
    tokio::task::JoinHandle<Result<(), BatchError>>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (buffer, _) = Buffer::open(BufferConfig::new(dir.path())).expect("open");
    let (handle, _thread) =
        crate::buffer_owner::spawn(buffer, Arc::new(AgentStats::default())).expect("spawn");
    let (obs_tx, obs_rx) = mpsc::channel(64);
    let (msg_tx, msg_rx) = mpsc::channel(64);
    let task = tokio::spawn(run(
        obs_rx,
        msg_tx,
        handle,
        BatchSettings {
            device: "dev".into(),
            subject_prefix: "tributary".into(),
            limits: BatchLimits {
                max_readings,
                max_message_size: 64 * 1024,
            },
            linger,
            link_idle,
        },
    ));
    (obs_tx, msg_rx, task, dir)
}

#[tokio::test]
async fn a_reading_is_cut_once_the_linger_passes_and_not_before() {
    let (tx, mut rx, _task, _dir) = batcher(Duration::from_millis(200), 100).await;
    let s = sensor("a");
    let start = Instant::now();
    tx.send(obs(&s, Value::Int(1))).await.expect("send");
    tx.send(obs(&s, Value::Int(2))).await.expect("send");
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut within the deadline")
        .expect("a message");
    assert!(start.elapsed() >= Duration::from_millis(200), "lingered");
    assert_eq!(m.readings, 2, "both readings in one message");
    assert_eq!(m.subject, "tributary.dev.a");
    let env = Envelope::decode(&m.bytes).expect("decodes");
    assert_eq!(m.msg_id, env.msg_id());
    assert_eq!(
        env.samples.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[tokio::test]
async fn a_full_message_is_cut_without_waiting_for_the_linger() {
    let (tx, mut rx, _task, _dir) = batcher(Duration::from_secs(3600), 3).await;
    let s = sensor("a");
    for i in 0..3 {
        tx.send(obs(&s, Value::Int(i))).await.expect("send");
    }
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut at once, long before the hour-long linger")
        .expect("a message");
    assert_eq!(m.readings, 3);
}

#[tokio::test]
async fn closing_the_input_cuts_what_is_pending_and_ends_the_batcher() {
    let (tx, mut rx, task, _dir) = batcher(Duration::from_secs(3600), 100).await;
    let s = sensor("a");
    tx.send(obs(&s, Value::Int(1))).await.expect("send");
    drop(tx);
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut at close")
        .expect("a message");
    assert_eq!(m.readings, 1);
    task.await.expect("join").expect("clean end");
    assert!(rx.recv().await.is_none());
}

#[tokio::test]
async fn a_reading_that_finds_the_link_idle_is_cut_at_once() {
    let signal = IdleSignal::new();
    signal.set(true);
    let (tx, mut rx, _task, _dir) =
        batcher_with(Duration::from_secs(3600), 100, Some(signal.watch())).await;
    tx.send(obs(&sensor("a"), Value::Int(1)))
        .await
        .expect("send");
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut at once, long before the hour-long linger")
        .expect("a message");
    assert_eq!(m.readings, 1);
}

#[tokio::test]
async fn readings_wait_while_the_link_is_busy_and_go_together_when_it_becomes_idle() {
    let signal = IdleSignal::new();
    let (tx, mut rx, _task, _dir) =
        batcher_with(Duration::from_secs(3600), 100, Some(signal.watch())).await;
    let s = sensor("a");
    tx.send(obs(&s, Value::Int(1))).await.expect("send");
    tx.send(obs(&s, Value::Int(2))).await.expect("send");
    let early = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
    assert!(early.is_err(), "nothing is cut while the link is busy");
    signal.set(true);
    let m = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut when the link became idle")
        .expect("a message");
    assert_eq!(m.readings, 2, "both readings in one message");
}

#[tokio::test]
async fn a_reading_right_after_a_message_waits_until_the_link_has_taken_that_message() {
    let signal = IdleSignal::new();
    signal.set(true);
    let (tx, mut rx, _task, _dir) =
        batcher_with(Duration::from_secs(3600), 100, Some(signal.watch())).await;
    let s = sensor("a");
    tx.send(obs(&s, Value::Int(1))).await.expect("send");
    let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut at once")
        .expect("a message");
    assert_eq!(first.readings, 1);
    // The flag still says idle, but it was set before that message.
    tx.send(obs(&s, Value::Int(2))).await.expect("send");
    tx.send(obs(&s, Value::Int(3))).await.expect("send");
    let early = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await;
    assert!(
        early.is_err(),
        "the link has not taken the first message yet"
    );
    // The link published the first message and got its ack.
    signal.set(false);
    signal.set(true);
    let second = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("cut once the link is idle again")
        .expect("a message");
    assert_eq!(second.readings, 2);
}

fn clocked(sensor: &Arc<SensorMeta>, clock: Clock, ts: i64) -> Observation {
    Observation {
        sensor: sensor.clone(),
        timestamp_ns: ts,
        clock,
        value: Value::Int(ts),
    }
}

#[test]
fn cut_never_mixes_clock_states_in_one_envelope_and_keeps_order_within_each() {
    let (temp, door) = (sensor("temp"), sensor("door"));
    let limits = BatchLimits {
        max_readings: 100,
        max_message_size: 1 << 20,
    };
    let observations = vec![
        clocked(&temp, Clock::Unsynced, 1),
        clocked(&door, Clock::Unsynced, 2),
        clocked(&temp, Clock::Unsynced, 3),
        // The clock synchronizes (and may jump) between two readings.
        clocked(&temp, Clock::Synced, 4),
        clocked(&door, Clock::Synced, 5),
        clocked(&temp, Clock::Synced, 6),
    ];
    let envelopes = cut("pi", 7, &limits, observations.into_iter().zip(10..));
    let summary: Vec<(&str, Clock, Vec<u64>)> = envelopes
        .iter()
        .map(|e| {
            (
                e.sensor.as_str(),
                e.clock,
                e.samples.iter().map(|s| s.seq).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("temp", Clock::Unsynced, vec![10, 12]),
            ("door", Clock::Unsynced, vec![11]),
            ("temp", Clock::Synced, vec![13, 15]),
            ("door", Clock::Synced, vec![14]),
        ]
    );
    for e in &envelopes {
        e.validate().unwrap();
    }
}

#[test]
fn a_sensor_whose_clock_state_flips_back_keeps_its_readings_in_order() {
    let temp = sensor("temp");
    let limits = BatchLimits {
        max_readings: 100,
        max_message_size: 1 << 20,
    };
    let observations = [
        Clock::Unsynced,
        Clock::Synced,
        Clock::Unsynced,
        Clock::Unsynced,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, c)| clocked(&temp, c, i as i64));
    let envelopes = cut("pi", 7, &limits, observations.zip(0..));
    let summary: Vec<(Clock, Vec<u64>)> = envelopes
        .iter()
        .map(|e| (e.clock, e.samples.iter().map(|s| s.seq).collect()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (Clock::Unsynced, vec![0]),
            (Clock::Synced, vec![1]),
            (Clock::Unsynced, vec![2, 3]),
        ]
    );
}

#[test]
fn cut_sets_the_clock_of_every_envelope_it_splits_by_the_limits() {
    let temp = sensor("temp");
    let limits = BatchLimits {
        max_readings: 2,
        max_message_size: 1 << 20,
    };
    let observations = (0..5).map(|i| clocked(&temp, Clock::Unknown, i));
    let envelopes = cut("pi", 7, &limits, observations.zip(0..));
    assert_eq!(envelopes.len(), 3);
    assert!(envelopes.iter().all(|e| e.clock == Clock::Unknown));
}
