//! Store-and-forward: committed buffer records go to the hub's JetStream.
//!
//! The forwarder is a small state machine:
//!
//! * **Sending**: it keeps up to `max_in_flight` messages published and
//!   awaiting the hub's acknowledgement, reading the next committed records
//!   from the buffer each time half of the window came back (one read per
//!   half window, not one per acknowledgement). Each acknowledged record
//!   is acknowledged in the buffer, which deletes a segment once every record
//!   in it is acknowledged. A backlog therefore drains at the speed of the
//!   acknowledgement pipeline, not one round trip per message, while fresh
//!   readings keep being committed behind it.
//! * **Backing off**: any failure (ack timeout, no responders because the
//!   leaf lost its hub, disconnect) drops the whole window, rewinds the
//!   buffer so every unacknowledged record is read again in order, and waits
//!   an exponentially growing, jittered delay before sending again. A resend
//!   is the identical record with the identical `Nats-Msg-Id`, so the hub
//!   drops what it already stored. The forwarder never gives up.
//!
//! Order: within a sensor, records leave in buffer order; only a failure
//! that loses an ack in the middle of the window can make the hub store a
//! later message before the resent earlier one.

use crate::batcher::SharedBuffer;
use crate::buffer::{ReadError, Record};
use crate::stats::AgentStats;
use async_nats::jetstream::{self, message::PublishMessage as Publish};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tributary_wire::Envelope;

/// How the forwarder publishes.
#[derive(Debug, Clone)]
pub struct ForwardSettings {
    /// Subject prefix.
    pub subject_prefix: String,
    /// Wait this long for an ack before resending.
    pub ack_timeout: Duration,
    /// Most messages awaiting acks.
    pub max_in_flight: usize,
    /// Backoff policy after failures.
    pub backoff: Backoff,
    /// On shutdown, wait at most this long for in-flight acks.
    pub drain_deadline: Duration,
}

/// Exponential backoff with jitter and a cap.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Longest delay.
    pub max: Duration,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The delay before the next attempt, after one more failure: between
    /// half and all of `min(max, initial * 2^failures)`.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << self.failures.min(20))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        exp.mul_f64(rand::random_range(0.5..=1.0))
    }

    /// Forgets past failures after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// Why the forwarder stopped with an error. It stops only when the buffer
/// itself failed; the network never stops it.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Reading the buffer failed; restart the agent to reopen (and recover)
    /// the buffer.
    #[error("cannot read the buffer")]
    Read(#[from] ReadError),
    /// A blocking task panicked or was cancelled.
    #[error("buffer task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

type AckResult = (
    u64,
    usize,
    Instant,
    Result<
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        tokio::time::error::Elapsed,
    >,
);

/// Publishes buffer records to JetStream. See the module docs.
#[derive(Debug)]
pub struct Forwarder {
    buffer: SharedBuffer,
    js: jetstream::Context,
    settings: ForwardSettings,
    stats: Arc<AgentStats>,
    /// Signalled by the batcher after each commit.
    committed: Arc<Notify>,
    /// Signalled after acknowledgements freed buffer space (for `block`).
    acked: Arc<Notify>,
}

impl Forwarder {
    /// A forwarder publishing through `js`.
    pub fn new(
        buffer: SharedBuffer,
        js: jetstream::Context,
        settings: ForwardSettings,
        stats: Arc<AgentStats>,
        committed: Arc<Notify>,
        acked: Arc<Notify>,
    ) -> Self {
        Forwarder {
            buffer,
            js,
            settings,
            stats,
            committed,
            acked,
        }
    }

    /// Runs until `shutdown`, then waits up to the drain deadline for the
    /// acks of messages in flight.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), ForwardError> {
        let mut in_flight: FuturesUnordered<futures::future::BoxFuture<'static, AckResult>> =
            FuturesUnordered::new();
        let mut backing_off: Option<tokio::time::Instant> = None;
        let mut backoff = self.settings.backoff.clone();
        let mut exhausted = false;
        // Refill the window once half of it came back (or it is empty), in
        // one read: one trip to the blocking pool per half window instead of
        // one per acknowledgement.
        let refill_at = self.settings.max_in_flight / 2;
        loop {
            if backing_off.is_none() && !exhausted && in_flight.len() <= refill_at {
                let want = self.settings.max_in_flight - in_flight.len();
                let records = self.read(want).await?;
                exhausted = records.len() < want;
                for record in records {
                    match self.publish(record).await {
                        Ok(Some(fut)) => in_flight.push(fut),
                        Ok(None) => {}
                        Err(reason) => {
                            backing_off =
                                Some(self.fail(&mut in_flight, &mut backoff, &reason).await?);
                            break;
                        }
                    }
                }
                if backing_off.is_none() && !exhausted {
                    continue;
                }
            }
            self.stats.forwarder_wakeups.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                Some((id, readings, started, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(Ok(_ack)) => {
                            backoff.reset();
                            self.acknowledge(id, readings, started);
                            exhausted = false;
                        }
                        Ok(Err(e)) => {
                            let reason = e.to_string();
                            backing_off = Some(self.fail(&mut in_flight, &mut backoff, &reason).await?);
                        }
                        Err(_) => {
                            backing_off = Some(self.fail(&mut in_flight, &mut backoff, "ack timed out").await?);
                        }
                    }
                }
                _ = self.committed.notified() => exhausted = false,
                _ = sleep_until(backing_off), if backing_off.is_some() => {
                    backing_off = None;
                    exhausted = false;
                }
                _ = shutdown.cancelled() => break,
            }
        }
        self.drain(in_flight).await;
        Ok(())
    }

    async fn drain(
        &mut self,
        mut in_flight: FuturesUnordered<futures::future::BoxFuture<'static, AckResult>>,
    ) {
        let waiting = in_flight.len();
        let deadline = tokio::time::sleep(self.settings.drain_deadline);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = in_flight.next() => match next {
                    Some((id, readings, started, Ok(Ok(_)))) => self.acknowledge(id, readings, started),
                    Some(_) => {}
                    None => break,
                },
                _ = &mut deadline => break,
            }
        }
        tracing::info!(waiting, unanswered = in_flight.len(), "forwarder stopped");
    }

    async fn read(&mut self, max: usize) -> Result<Vec<Record>, ForwardError> {
        let buffer = self.buffer.clone();
        let records = tokio::task::spawn_blocking(move || {
            buffer.lock().expect("buffer mutex poisoned").read(max)
        })
        .await??;
        Ok(records)
    }

    /// Publishes one record; the returned future resolves with its ack.
    async fn publish(
        &mut self,
        record: Record,
    ) -> Result<Option<futures::future::BoxFuture<'static, AckResult>>, String> {
        let env = match Envelope::decode(&record.payload) {
            Ok(env) => env,
            Err(e) => {
                // Only a format this build does not know can get here (the
                // buffer checks CRCs): nothing can send it, so it is dropped
                // loudly rather than blocking everything behind it.
                tracing::error!(record = record.id, error = %e, "undecodable buffer record dropped");
                self.ack_in_buffer(record.id);
                return Ok(None);
            }
        };
        let subject = env.subject(&self.settings.subject_prefix);
        let msg = Publish::build()
            .payload(record.payload.into())
            .message_id(env.msg_id());
        let readings = env.samples.len();
        let started = Instant::now();
        let ack = self
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| e.to_string())?;
        let timeout = self.settings.ack_timeout;
        let id = record.id;
        Ok(Some(Box::pin(async move {
            let result = tokio::time::timeout(timeout, ack.into_future()).await;
            (id, readings, started, result)
        })))
    }

    fn acknowledge(&mut self, id: u64, readings: usize, started: Instant) {
        self.ack_in_buffer(id);
        self.stats.acked_messages.fetch_add(1, Ordering::Relaxed);
        self.stats
            .acked_readings
            .fetch_add(readings as u64, Ordering::Relaxed);
        self.stats.ack_latency_us_total.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn ack_in_buffer(&mut self, id: u64) {
        let result = self.buffer.lock().expect("buffer mutex poisoned").ack(id);
        if let Err(e) = result {
            tracing::warn!(record = id, error = %e, "buffer refused an ack");
        }
        self.acked.notify_one();
    }

    /// Drops the window, rewinds the buffer and returns when to try again.
    async fn fail(
        &mut self,
        in_flight: &mut FuturesUnordered<futures::future::BoxFuture<'static, AckResult>>,
        backoff: &mut Backoff,
        reason: &str,
    ) -> Result<tokio::time::Instant, ForwardError> {
        let dropped = in_flight.len();
        in_flight.clear();
        self.buffer.lock().expect("buffer mutex poisoned").rewind();
        self.stats.publish_failures.fetch_add(1, Ordering::Relaxed);
        let delay = backoff.next_delay();
        tracing::warn!(
            reason,
            in_flight = dropped,
            retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            "publishing to the hub failed; will resend"
        );
        Ok(tokio::time::Instant::now() + delay)
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let d: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        for (i, d) in d.iter().enumerate() {
            let full = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {i}: {d:?} vs {full:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
