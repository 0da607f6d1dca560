//! Each state of the link on its own, with a scripted publisher and a real
//! buffer thread on a temp dir (the end-to-end tests use real servers).

use super::*;
use crate::buffer::{Buffer, BufferConfig};
use crate::buffer_owner::{self, BufferThread};
use bytes::Bytes;
use std::sync::Mutex;
use tributary_wire::{Envelope, Sample, Value};

/// What the scripted hub does with a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Store and acknowledge at once.
    Ack,
    /// Store, but the acknowledgement is lost.
    StoreSilent,
    /// Refuse the publish (no responders).
    Refuse,
    /// Never answer.
    Silent,
}

/// A scripted hub: a stream without a duplicate window (every publish it
/// stores is a new message), and read backs of what it stored.
#[derive(Debug, Clone)]
pub(super) struct Scripted {
    mode: Arc<Mutex<Mode>>,
    published: Arc<Mutex<Vec<String>>>,
    /// The stream: message ids by stream sequence − 1.
    stored: Arc<Mutex<Vec<String>>>,
    /// Read backs asked for (their start sequences).
    read_backs: Arc<Mutex<Vec<u64>>>,
    /// This many of the next read backs lose the hub part way (a timeout
    /// after the first request was answered).
    unanswered_read_backs: Arc<Mutex<u32>>,
    /// This many of the next read backs get no answer to their first
    /// request (as with the hub away); taken before `unanswered_read_backs`.
    unreachable_read_backs: Arc<Mutex<u32>>,
    /// Read backs take this long.
    read_back_delay: Arc<Mutex<Duration>>,
}

impl Scripted {
    pub(super) fn new(mode: Mode) -> Self {
        Scripted {
            mode: Arc::new(Mutex::new(mode)),
            published: Arc::default(),
            stored: Arc::default(),
            read_backs: Arc::default(),
            unanswered_read_backs: Arc::default(),
            unreachable_read_backs: Arc::default(),
            read_back_delay: Arc::default(),
        }
    }
    pub(super) fn slow_read_back(&self, delay: Duration) {
        *self.read_back_delay.lock().expect("lock") = delay;
    }
    pub(super) fn set(&self, mode: Mode) {
        *self.mode.lock().expect("lock") = mode;
    }
    pub(super) fn published(&self) -> Vec<String> {
        self.published.lock().expect("lock").clone()
    }
    pub(super) fn stored(&self) -> Vec<String> {
        self.stored.lock().expect("lock").clone()
    }
    pub(super) fn read_backs(&self) -> Vec<u64> {
        self.read_backs.lock().expect("lock").clone()
    }
    /// The next `how_many` read backs lose the hub part way.
    pub(super) fn leave_read_backs_unanswered(&self, how_many: u32) {
        *self.unanswered_read_backs.lock().expect("lock") = how_many;
    }
    /// The next `how_many` read backs get no answer at all (the hub away).
    pub(super) fn leave_read_backs_unreachable(&self, how_many: u32) {
        *self.unreachable_read_backs.lock().expect("lock") = how_many;
    }
    pub(super) fn store(&self, msg_id: &str) -> u64 {
        let mut stored = self.stored.lock().expect("lock");
        stored.push(msg_id.to_owned());
        stored.len() as u64
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no responders")]
struct NoResponders;

impl Publisher for Scripted {
    async fn publish(
        &self,
        _subject: &str,
        msg_id: &str,
        _bytes: Bytes,
    ) -> Result<AckFuture, PublishError> {
        let mode = *self.mode.lock().expect("lock");
        self.published.lock().expect("lock").push(msg_id.to_owned());
        match mode {
            Mode::Ack => {
                let seq = self.store(msg_id);
                Ok(Box::pin(async move {
                    Ok(Stored {
                        stream: "S".into(),
                        seq,
                    })
                }))
            }
            Mode::StoreSilent => {
                self.store(msg_id);
                Ok(Box::pin(futures::future::pending()))
            }
            Mode::Refuse => Ok(Box::pin(async {
                Err(PublishError::Ack(Box::new(NoResponders)))
            })),
            Mode::Silent => Ok(Box::pin(futures::future::pending())),
        }
    }

    fn read_back(&self, stream: &str, from: u64) -> ReadBackFuture {
        assert_eq!(stream, "S", "the stream named in the acks");
        self.read_backs.lock().expect("lock").push(from);
        let take = |counter: &Mutex<u32>| {
            let mut left = counter.lock().expect("lock");
            let take = *left > 0;
            *left = left.saturating_sub(1);
            take
        };
        let unreachable = take(&self.unreachable_read_backs);
        let refused = !unreachable && take(&self.unanswered_read_backs);
        let stored = self.stored();
        let delay = *self.read_back_delay.lock().expect("lock");
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            if unreachable {
                return Err(ReadBackError::Unreachable {
                    source: Box::new(ReadBackError::Timeout {
                        what: "the removal of the read-back consumer",
                    }),
                });
            }
            if refused {
                return Err(ReadBackError::Timeout {
                    what: "the read-back consumer",
                });
            }
            let mut found = super::stored::StoredMessages::default();
            let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
            for id in stored.iter().skip(skip) {
                found.insert_msg_id(id);
            }
            Ok(found)
        })
    }
}

fn envelope(seq: u64) -> Envelope {
    Envelope {
        device: "dev".into(),
        epoch: 1,
        sensor: "s".into(),
        unit: None,
        clock: tributary_wire::Clock::Synced,
        tags: Vec::new(),
        samples: vec![Sample {
            seq,
            timestamp_ns: 1_795_000_000_000_000_000,
            value: Value::Int(seq as i64),
        }],
    }
}

pub(super) fn message(seq: u64) -> Message {
    let env = envelope(seq);
    Message {
        bytes: env.encode().expect("encode").into(),
        subject: env.subject("t"),
        msg_id: env.msg_id(),
        readings: 1,
        taken_at: Instant::now(),
        first_timestamp_ns: 0,
    }
}

pub(super) fn msg_id(seq: u64) -> String {
    envelope(seq).msg_id()
}

fn settings() -> LinkSettings {
    LinkSettings {
        subject_prefix: "t".into(),
        ack_timeout: Duration::from_millis(300),
        max_in_flight: 8,
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(100)),
        flush_interval: Duration::from_millis(200),
        drain_deadline: Duration::from_millis(300),
        readback_dir: None,
    }
}

pub(super) struct Harness {
    pub(super) dir: tempfile::TempDir,
    pub(super) publisher: Scripted,
    pub(super) stats: Arc<AgentStats>,
    pub(super) input: mpsc::Sender<Message>,
    /// What the batcher would see of the link's idleness.
    pub(super) idle: LinkIdle,
    stop: CancellationToken,
    link: tokio::task::JoinHandle<Result<(), LinkError>>,
    thread: BufferThread,
}

/// A link over a buffer that already holds `backlog` records.
fn start(mode: Mode, backlog: &[u64]) -> Harness {
    start_in(
        tempfile::tempdir().expect("tempdir"),
        Scripted::new(mode),
        backlog,
        false,
    )
}

/// A link over the buffer in `dir` (plus `backlog`) publishing to
/// `publisher`; `keep_point`: the read-back point is kept in `dir`.
pub(super) fn start_in(
    dir: tempfile::TempDir,
    publisher: Scripted,
    backlog: &[u64],
    keep_point: bool,
) -> Harness {
    let (mut buffer, _) = Buffer::open(BufferConfig::new(dir.path())).expect("open");
    for seq in backlog {
        let _ = buffer
            .append(&envelope(*seq).encode().expect("encode"))
            .expect("append");
    }
    buffer.flush().expect("flush");
    let stats = Arc::new(AgentStats::default());
    let (handle, thread) = buffer_owner::spawn(buffer, stats.clone()).expect("spawn");
    let (input, rx) = mpsc::channel(64);
    let stop = CancellationToken::new();
    let settings = LinkSettings {
        readback_dir: keep_point.then(|| dir.path().to_owned()),
        ..settings()
    };
    let link = Link::new(publisher.clone(), handle, settings, stats.clone());
    let idle = link.idle_watch();
    let link = tokio::spawn(link.run(rx, stop.clone()));
    Harness {
        dir,
        publisher,
        stats,
        input,
        idle,
        stop,
        link,
        thread,
    }
}

impl Harness {
    pub(super) async fn wait_for(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) fn state(&self) -> LinkState {
        LinkState::from_code(self.stats.link_state.load(Ordering::Relaxed))
    }

    pub(super) fn acked(&self) -> u64 {
        self.stats.acked_messages.load(Ordering::Relaxed)
    }

    /// Stops the link and returns the message ids left in the buffer.
    pub(super) async fn stop(self) -> Vec<String> {
        self.stop_keeping_dir().await.0
    }

    /// Stops the link; the message ids left in the buffer, and its dir.
    pub(super) async fn stop_keeping_dir(mut self) -> (Vec<String>, tempfile::TempDir) {
        self.stop.cancel();
        drop(self.input);
        tokio::time::timeout(Duration::from_secs(5), self.link)
            .await
            .expect("the link stops within its bound")
            .expect("join")
            .expect("clean stop");
        self.thread.finished().await.expect("buffer closed");
        let (mut buffer, _) = Buffer::open(BufferConfig::new(self.dir.path())).expect("reopen");
        let left = buffer
            .read(1000)
            .expect("read")
            .iter()
            .map(|r| Envelope::decode(&r.payload).expect("decode").msg_id())
            .collect();
        (left, self.dir)
    }
}

#[tokio::test]
async fn live_publishes_at_once_and_an_acknowledged_message_never_touches_the_disk() {
    let h = start(Mode::Ack, &[]);
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    // What opening a new buffer wrote (its meta file) is not the link's.
    let opened = h.stats.bytes_written.load(Ordering::Relaxed);
    for seq in 0..5 {
        h.input.send(message(seq)).await.expect("send");
    }
    h.wait_for("five acks", |h| h.acked() == 5).await;
    assert_eq!(
        h.publisher.published(),
        (0..5).map(msg_id).collect::<Vec<_>>()
    );
    // Well past the flush interval: nothing was due.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(h.stats.spilled_messages.load(Ordering::Relaxed), 0);
    assert_eq!(
        h.stats.bytes_written.load(Ordering::Relaxed),
        opened,
        "not one byte more"
    );
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn live_spills_a_message_unacknowledged_after_the_flush_interval_and_its_late_ack_clears_it()
{
    let h = start(Mode::Silent, &[]);
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    h.input.send(message(0)).await.expect("send");
    h.wait_for("the spill", |h| {
        h.stats.spilled_messages.load(Ordering::Relaxed) == 1
    })
    .await;
    // The ack never comes: after the ack timeout the link resends from disk.
    h.wait_for("spilling", |h| h.state() == LinkState::Spilling)
        .await;
    h.publisher.set(Mode::Ack);
    h.wait_for("the resend's ack", |h| h.acked() == 1).await;
    assert_eq!(
        h.publisher.published(),
        vec![msg_id(0), msg_id(0)],
        "the same id twice"
    );
    h.wait_for("live again", |h| h.state() == LinkState::Live)
        .await;
    assert!(h.stop().await.is_empty(), "acknowledged on disk too");
}

#[tokio::test]
async fn spilling_publishes_nothing_and_keeps_every_message_within_the_flush_interval() {
    let h = start(Mode::Refuse, &[]);
    h.input.send(message(0)).await.expect("send");
    h.wait_for("spilling", |h| h.state() == LinkState::Spilling)
        .await;
    for seq in 1..4 {
        h.input.send(message(seq)).await.expect("send");
    }
    h.wait_for("all four on disk", |h| {
        h.stats.spilled_messages.load(Ordering::Relaxed) >= 4
    })
    .await;
    assert_eq!(h.acked(), 0);
    let left = h.stop().await;
    assert_eq!(
        left,
        (0..4).map(msg_id).collect::<Vec<_>>(),
        "all kept, in order"
    );
}

#[tokio::test]
async fn catching_up_sends_the_backlog_before_newer_messages_then_goes_live() {
    let h = start(Mode::Ack, &[0, 1, 2]);
    h.input.send(message(3)).await.expect("send");
    h.wait_for("four acks", |h| h.acked() == 4).await;
    assert_eq!(
        h.publisher.published(),
        (0..4).map(msg_id).collect::<Vec<_>>()
    );
    h.wait_for("live", |h| h.state() == LinkState::Live).await;
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn a_refused_backlog_is_rewound_and_resent_in_order_once_the_hub_answers() {
    let h = start(Mode::Refuse, &[0, 1]);
    h.wait_for("spilling", |h| h.state() == LinkState::Spilling)
        .await;
    h.publisher.set(Mode::Ack);
    h.wait_for("two acks", |h| h.acked() == 2).await;
    let published = h.publisher.published();
    assert_eq!(&published[published.len() - 2..], &[msg_id(0), msg_id(1)]);
    assert!(h.stop().await.is_empty());
}

#[tokio::test]
async fn stopping_with_the_hub_silent_ends_within_the_drain_deadline_and_keeps_everything() {
    let h = start(Mode::Silent, &[0]);
    h.input.send(message(1)).await.expect("send");
    h.wait_for("two publishes", |h| h.publisher.published().len() == 2)
        .await;
    let started = Instant::now();
    let left = h.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "stopped in {:?}",
        started.elapsed()
    );
    assert_eq!(left, vec![msg_id(0), msg_id(1)]);
}

#[tokio::test]
async fn the_link_is_idle_only_while_live_with_nothing_in_flight() {
    let h = start(Mode::Ack, &[]);
    h.wait_for("idle at start", |h| h.idle.is_idle()).await;
    h.publisher.set(Mode::Silent);
    h.input.send(message(1)).await.expect("send");
    h.wait_for("busy while the ack is pending", |h| !h.idle.is_idle())
        .await;
    // The ack never comes: the link spills and backs off, still busy.
    h.wait_for("spilling", |h| h.state() == LinkState::Spilling)
        .await;
    assert!(!h.idle.is_idle(), "a spilling link is busy");
    h.publisher.set(Mode::Ack);
    h.wait_for("idle again once the resend is acknowledged", |h| {
        h.state() == LinkState::Live && h.idle.is_idle()
    })
    .await;
    assert!(h.stop().await.is_empty());
}
