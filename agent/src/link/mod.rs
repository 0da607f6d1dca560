//! The edge link: cut messages go to the hub's JetStream at once, and to
//! the disk buffer only when the hub has not acknowledged them in time.
//!
//! # States
//!
//! The link is an explicit state machine (bytebeamio/uplink's serializer
//! is the model); one method per state, each tested on its own:
//!
//! * **Live** — the disk holds nothing unread. Each message is published
//!   the moment the batcher hands it over (up to `max_in_flight` awaiting
//!   acks) and is held in memory until the hub acknowledges it.
//! * **Spilling** — a publish or an ack failed (timeout, no responders
//!   because the leaf lost its hub, disconnect). The window is dropped, the
//!   buffer rewound, every message in memory waits again, and nothing is
//!   published until a jittered exponential backoff ends.
//! * **Reconciling** — after the backoff (and at start, when the last run
//!   left a read-back point), the link reads back which of its messages the
//!   hub's stream already holds ([`stored`], [`readback`]): a message
//!   stored whose ack was lost would otherwise become a second stream
//!   message once the stream's duplicate window has passed. Messages and
//!   spills are served meanwhile; a read back that fails only means
//!   resending everything, as before.
//! * **Catching up** — after reconciling, records are read
//!   from the disk buffer, oldest first, and published, refilling the
//!   window each time half of it came back. New messages wait in memory
//!   behind the backlog, keeping order. When a read finds nothing more
//!   unread, the link is live again.
//!
//! # Durability: the spill
//!
//! In every state, a message must be acknowledged by the hub or on disk
//! within `buffer.flush_interval` of the moment its first reading reached
//! the batcher. When the oldest unacknowledged message in memory reaches
//! that deadline, every unacknowledged message in memory is *spilled*:
//! appended to the buffer and made durable with one `fdatasync` by the
//! buffer thread ([`crate::buffer_owner`]). A power cut therefore loses at
//! most the readings taken within the last flush interval — the same
//! window as before the link was real-time — while a message the hub
//! acknowledges sooner (milliseconds, when the link is up) never touches
//! the SD card. Messages still in flight when spilled are handed out by the
//! buffer at once (their ack acknowledges the record); waiting ones are
//! read back in the catching-up state. A spill also happens early when
//! memory holds more than [`MEMORY_MESSAGES`] messages or
//! [`MEMORY_BYTES`] bytes; while the `block` policy holds a spill back,
//! the link stops taking messages, so the sensors wait.
//!
//! # Order and resends
//!
//! Messages leave in cut order: memory is only published when the disk has
//! nothing unread, and a failure rewinds both. A resend is the identical
//! message (bytes and `Nats-Msg-Id` fixed at the cut), so the hub's
//! duplicate window drops what it already stored, and what the read back
//! found held is not sent at all, however long ago it was stored. Only a failure that
//! loses an ack in the middle of the window can make the hub store a later
//! message before the resent earlier one.
//!
//! # Stopping
//!
//! On shutdown the link takes the batcher's last messages, publishes them
//! if live, waits up to `drain_deadline` for the acks in flight, spills
//! whatever is unacknowledged and closes the buffer: SIGTERM ends within
//! the ack timeout plus one spill, whether or not the hub is reachable.

mod hub;
mod memory;
pub mod point_file;
mod publish;
mod readback;
#[cfg(test)]
mod readback_tests;
mod state;
mod stopping;
pub mod stored;
#[cfg(test)]
mod tests;

pub use hub::HubPublisher;
pub use publish::{
    AckFuture, Backoff, PublishError, Publisher, ReadBackError, ReadBackFuture, Stored,
};
pub use state::LinkState;

use crate::batcher::Message;
use crate::buffer_owner::{BufferGone, BufferHandle, Spilled};
use crate::link_idle::{IdleSignal, LinkIdle};
use crate::stats::AgentStats;
use futures::stream::{FuturesUnordered, StreamExt};
use memory::Memory;
use readback::ReadBack;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most messages held in memory before they are spilled early.
pub const MEMORY_MESSAGES: usize = 4096;
/// Most encoded bytes held in memory before they are spilled early.
pub const MEMORY_BYTES: usize = 2 * 1024 * 1024;
/// While the `block` policy holds a spill back, retry this often.
const BLOCKED_RETRY: Duration = Duration::from_millis(100);

/// How the link publishes.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Subject prefix (for records read back from disk).
    pub subject_prefix: String,
    /// Wait this long for an ack before resending.
    pub ack_timeout: Duration,
    /// Most messages awaiting acks.
    pub max_in_flight: usize,
    /// Backoff policy after failures.
    pub backoff: Backoff,
    /// A message is acknowledged or on disk within this long.
    pub flush_interval: Duration,
    /// On shutdown, wait at most this long for in-flight acks.
    pub drain_deadline: Duration,
    /// Where the read-back point is kept across restarts (the buffer
    /// directory); `None`: read back only after failures of this run.
    pub readback_dir: Option<PathBuf>,
}

/// Why the link stopped with an error. The network never stops it; only
/// the buffer thread's end does (its own error is the cause).
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The buffer thread stopped.
    #[error("the buffer is gone")]
    Buffer(#[from] BufferGone),
}

/// Where a message in flight came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A memory entry, by token.
    Memory(u64),
    /// A buffer record, by id.
    Disk(u64),
}

#[derive(Debug)]
struct Acked {
    origin: Origin,
    readings: usize,
    /// Timestamp of the message's first reading (UTC ns).
    first_ts_ns: i64,
    started: std::time::Instant,
    result: Result<Stored, PublishError>,
}

type InFlight = FuturesUnordered<futures::future::BoxFuture<'static, Acked>>;

/// The state machine's next step.
enum Step {
    To(State),
    Stop,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Live,
    Spilling { retry_at: Instant },
    Reconciling,
    CatchingUp,
}

/// What woke the link up.
enum Event {
    Input(Option<Message>),
    Ack(Acked),
    SpillDue,
    Tick,
    Retry,
    Shutdown,
}

/// Publishes messages through `P`, spilling to the buffer. See the module
/// docs.
pub struct Link<P> {
    publisher: P,
    buffer: BufferHandle,
    settings: LinkSettings,
    stats: Arc<AgentStats>,
    backoff: Backoff,
    memory: Memory,
    window: InFlight,
    /// Memory entries spilled while in flight: token → record id.
    spilled: HashMap<u64, u64>,
    /// Record ids acknowledged, not yet sent to the buffer thread.
    disk_acks: Vec<u64>,
    /// The `block` policy held the last spill back: retry then.
    blocked_until: Option<Instant>,
    tick: tokio::time::Interval,
    readback: ReadBack,
    /// Tells the batcher when a reading may go at once ([`crate::link_idle`]).
    idle: IdleSignal,
}

impl<P> std::fmt::Debug for Link<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("settings", &self.settings)
            .field("memory", &self.memory)
            .field("in_flight", &self.window.len())
            .field("blocked_until", &self.blocked_until)
            .finish_non_exhaustive()
    }
}

impl<P: Publisher> Link<P> {
    /// A link publishing through `publisher`, spilling into `buffer`.
    pub fn new(
        publisher: P,
        buffer: BufferHandle,
        settings: LinkSettings,
        stats: Arc<AgentStats>,
    ) -> Self {
        let mut tick = tokio::time::interval(settings.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Link {
            publisher,
            buffer,
            backoff: settings.backoff.clone(),
            settings,
            stats,
            memory: Memory::default(),
            window: FuturesUnordered::new(),
            spilled: HashMap::new(),
            disk_acks: Vec::new(),
            blocked_until: None,
            tick,
            readback: ReadBack::default(),
            idle: IdleSignal::new(),
        }
    }

    /// Whether this link is idle, for the batcher (see [`crate::link_idle`]).
    pub fn idle_watch(&self) -> LinkIdle {
        self.idle.watch()
    }

    /// Runs until `input` closes (the batcher ended) or `shutdown`, then
    /// stops as the module docs describe. Starts by catching up on what the
    /// buffer holds from earlier runs.
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<Message>,
        shutdown: CancellationToken,
    ) -> Result<(), LinkError> {
        self.readback = ReadBack::open(self.settings.readback_dir.clone()).await;
        let mut state = self.after_backoff();
        loop {
            let public = match state {
                State::Live => LinkState::Live,
                State::Spilling { .. } => LinkState::Spilling,
                State::Reconciling | State::CatchingUp => LinkState::CatchingUp,
            };
            self.stats
                .link_state
                .store(public.code(), Ordering::Relaxed);
            tracing::debug!(state = public.name(), "link state");
            if !matches!(state, State::Live) {
                self.idle.set(false);
            }
            let step = match state {
                State::Live => self.live(&mut input, &shutdown).await?,
                State::Spilling { retry_at } => {
                    self.spilling(retry_at, &mut input, &shutdown).await?
                }
                State::Reconciling => self.reconciling(&mut input, &shutdown).await?,
                State::CatchingUp => self.catching_up(&mut input, &shutdown).await?,
            };
            match step {
                Step::To(next) => state = next,
                Step::Stop => break,
            }
        }
        self.idle.set(false);
        self.stop(&mut input, matches!(state, State::Live)).await
    }

    /// Live: publish memory as it comes; spill what misses its deadline.
    async fn live(
        &mut self,
        input: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Step, LinkError> {
        loop {
            if let Err(e) = self.publish_waiting().await {
                return self.fail(&e).await;
            }
            self.idle
                .set(self.window.is_empty() && !self.memory.has_waiting());
            let event = self.next_event(input, shutdown, None).await;
            if let Some(step) = self.settle(event).await? {
                return Ok(step);
            }
            if self.window.is_empty() && self.memory.len() == 0 {
                self.readback.clean(&self.buffer);
            }
        }
    }

    /// Where the link goes when it may publish again: reconciling when a
    /// read back is due, else catching up.
    fn after_backoff(&self) -> State {
        if self.readback.wanted() {
            State::Reconciling
        } else {
            State::CatchingUp
        }
    }

    /// Spilling: publish nothing until `retry_at`; keep the deadline.
    async fn spilling(
        &mut self,
        retry_at: Instant,
        input: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Step, LinkError> {
        loop {
            match self.next_event(input, shutdown, Some(retry_at)).await {
                Event::Shutdown | Event::Input(None) => return Ok(Step::Stop),
                Event::Input(Some(m)) => self.memory.push(m),
                Event::Retry => return Ok(Step::To(self.after_backoff())),
                Event::SpillDue => {
                    self.spill().await?;
                }
                // The window was dropped on entry; nothing is in flight.
                Event::Ack(_) | Event::Tick => {}
            }
        }
    }

    /// Catching up: send the disk backlog in order; then live.
    async fn catching_up(
        &mut self,
        input: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Step, LinkError> {
        let refill_at = self.settings.max_in_flight / 2;
        let mut exhausted = false;
        loop {
            if !exhausted && self.window.len() <= refill_at {
                let want = self.settings.max_in_flight - self.window.len();
                let records = self.buffer.read(want).await?;
                exhausted = records.len() < want;
                for record in records {
                    if let Err(e) = self.publish_record(record).await {
                        return self.fail(&e).await;
                    }
                }
            }
            if exhausted {
                return Ok(Step::To(State::Live));
            }
            let event = self.next_event(input, shutdown, None).await;
            if let Some(step) = self.settle(event).await? {
                return Ok(step);
            }
        }
    }

    /// An event in a state that publishes (live, catching up): messages
    /// join memory, acks are settled (a failed one fails the link), a due
    /// spill that leaves unread records on disk means catching up (again).
    /// `None`: stay in the state.
    async fn settle(&mut self, event: Event) -> Result<Option<Step>, LinkError> {
        let step = match event {
            Event::Shutdown | Event::Input(None) => return Ok(Some(Step::Stop)),
            Event::Input(Some(m)) => {
                self.memory.push(m);
                None
            }
            Event::Ack(a) => match self.on_ack(a) {
                Ok(()) => None,
                Err(e) => return self.fail(&e).await.map(Some),
            },
            Event::SpillDue => self.spill().await?.then_some(Step::To(State::CatchingUp)),
            Event::Tick | Event::Retry => None,
        };
        self.send_disk_acks().await?;
        Ok(step)
    }

    async fn next_event(
        &mut self,
        input: &mut mpsc::Receiver<Message>,
        shutdown: &CancellationToken,
        retry_at: Option<Instant>,
    ) -> Event {
        let spill_at = self.spill_at();
        let room = self.blocked_until.is_none()
            && self.memory.len() < MEMORY_MESSAGES
            && self.memory.bytes() < MEMORY_BYTES;
        self.stats.forwarder_wakeups.fetch_add(1, Ordering::Relaxed);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            Some(a) = self.window.next(), if !self.window.is_empty() => Event::Ack(a),
            _ = sleep_until(spill_at) => Event::SpillDue,
            _ = sleep_until(retry_at) => Event::Retry,
            m = input.recv(), if room => Event::Input(m),
            _ = self.tick.tick() => {
                // The flush tick: proof of progress for the watchdog.
                self.stats.batcher_ticks.fetch_add(1, Ordering::Relaxed);
                Event::Tick
            }
        }
    }

    /// When the next spill is due: the oldest unacknowledged message's
    /// deadline, now when memory is over its bounds, or the next retry of a
    /// blocked spill.
    fn spill_at(&self) -> Option<Instant> {
        if let Some(at) = self.blocked_until {
            return Some(at);
        }
        if self.memory.len() >= MEMORY_MESSAGES || self.memory.bytes() >= MEMORY_BYTES {
            return Some(Instant::now());
        }
        self.memory
            .oldest_taken_at()
            .map(|at| at + self.settings.flush_interval)
    }

    /// Publishes waiting memory entries while the window has room.
    async fn publish_waiting(&mut self) -> Result<(), PublishError> {
        while self.window.len() < self.settings.max_in_flight && self.memory.has_waiting() {
            let Some((token, m)) = self.memory.publish_next() else {
                break;
            };
            let (subject, msg_id, bytes) = (m.subject.clone(), m.msg_id.clone(), m.bytes.clone());
            let meta = (m.readings, m.first_timestamp_ns);
            if self.already_stored(&msg_id) {
                self.memory.ack(token);
                continue;
            }
            self.publish(Origin::Memory(token), &subject, &msg_id, bytes, meta)
                .await?;
        }
        Ok(())
    }

    async fn publish_record(
        &mut self,
        record: crate::buffer_owner::DiskRecord,
    ) -> Result<(), PublishError> {
        let env = match tributary_wire::Envelope::decode(&record.bytes) {
            Ok(env) => env,
            Err(e) => {
                // Only a format this build does not know can get here (the
                // buffer checks CRCs): nothing can send it, so it is dropped
                // loudly rather than blocking everything behind it.
                tracing::error!(record = record.id, error = %e, "undecodable buffer record dropped");
                self.disk_acks.push(record.id);
                return Ok(());
            }
        };
        let msg_id = env.msg_id();
        if self.already_stored(&msg_id) {
            self.disk_acks.push(record.id);
            return Ok(());
        }
        let subject = env.subject(&self.settings.subject_prefix);
        let first_ts_ns = env.samples.first().map_or(0, |s| s.timestamp_ns);
        self.publish(
            Origin::Disk(record.id),
            &subject,
            &msg_id,
            record.bytes,
            (env.samples.len(), first_ts_ns),
        )
        .await
    }

    async fn publish(
        &mut self,
        origin: Origin,
        subject: &str,
        msg_id: &str,
        bytes: bytes::Bytes,
        (readings, first_ts_ns): (usize, i64),
    ) -> Result<(), PublishError> {
        let timeout = self.settings.ack_timeout;
        let started = std::time::Instant::now();
        let ack = tokio::time::timeout(timeout, self.publisher.publish(subject, msg_id, bytes))
            .await
            .map_err(|_| PublishError::Timeout(timeout))??;
        self.window.push(Box::pin(async move {
            let result = match tokio::time::timeout(timeout, ack).await {
                Ok(r) => r,
                Err(_) => Err(PublishError::Timeout(timeout)),
            };
            Acked {
                origin,
                readings,
                first_ts_ns,
                started,
                result,
            }
        }));
        Ok(())
    }

    /// Settles one acknowledgement; an error is the caller's to fail on.
    fn on_ack(&mut self, a: Acked) -> Result<(), PublishError> {
        self.readback.on_stored(a.result?);
        self.backoff.reset();
        match a.origin {
            Origin::Memory(token) => {
                if !self.memory.ack(token)
                    && let Some(id) = self.spilled.remove(&token)
                {
                    self.disk_acks.push(id);
                }
            }
            Origin::Disk(id) => self.disk_acks.push(id),
        }
        let s = &self.stats;
        s.acked_messages.fetch_add(1, Ordering::Relaxed);
        s.acked_readings
            .fetch_add(a.readings as u64, Ordering::Relaxed);
        s.ack_latency_us_total.fetch_add(
            u64::try_from(a.started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if a.first_ts_ns > 0 {
            let age_ns = crate::sensors::now_unix_ns().saturating_sub(a.first_ts_ns);
            s.ack_latency
                .record(u64::try_from(age_ns / 1_000).unwrap_or(0));
        }
        Ok(())
    }

    async fn send_disk_acks(&mut self) -> Result<(), BufferGone> {
        if self.disk_acks.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.disk_acks);
        self.buffer.ack(ids).await?;
        if self.blocked_until.is_some() {
            // Space may be free now.
            self.blocked_until = Some(Instant::now());
        }
        Ok(())
    }

    /// Spills every unacknowledged memory entry; true if some of them are
    /// now unread on disk (the link must catch up).
    async fn spill(&mut self) -> Result<bool, BufferGone> {
        let entries = self.memory.spill_records();
        if entries.is_empty() {
            self.blocked_until = None;
            return Ok(false);
        }
        self.send_disk_acks().await?;
        let (tokens, records): (Vec<u64>, Vec<_>) = entries.into_iter().unzip();
        let in_flight: Vec<bool> = records.iter().map(|r| r.in_flight).collect();
        let outcome = self.buffer.spill(records).await?;
        let mut unread = false;
        for (i, done) in outcome.done.iter().enumerate() {
            if let Spilled::Stored(id) = done {
                if in_flight[i] {
                    self.spilled.insert(tokens[i], *id);
                } else {
                    unread = true;
                }
            }
        }
        self.memory.remove_spilled(outcome.done.len());
        self.stats.spills.fetch_add(1, Ordering::Relaxed);
        self.stats
            .spilled_messages
            .fetch_add(outcome.done.len() as u64, Ordering::Relaxed);
        self.blocked_until = outcome.blocked.then(|| Instant::now() + BLOCKED_RETRY);
        Ok(unread)
    }

    /// Drops the window, rewinds, and backs off.
    async fn fail(&mut self, e: &PublishError) -> Result<Step, LinkError> {
        let dropped = self.window.len();
        self.window.clear();
        self.spilled.clear();
        self.send_disk_acks().await?;
        self.buffer.rewind().await?;
        self.memory.reset_to_waiting();
        self.readback.failed();
        self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
        let delay = self.backoff.next_delay();
        tracing::warn!(
            error = %crate::error_chain(e),
            in_flight = dropped,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "publishing to the hub failed; will resend"
        );
        Ok(Step::To(State::Spilling {
            retry_at: Instant::now() + delay,
        }))
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}
