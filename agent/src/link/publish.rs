//! What the link publishes through: a [`Publisher`] (the hub's JetStream
//! through the leaf in the agent, [`super::hub::HubPublisher`]; a scripted
//! one in the state tests) and the backoff between attempts.

use super::stored::StoredMessages;
use bytes::Bytes;
use futures::future::BoxFuture;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Why a publish or its acknowledgement failed. Every kind is retried: the
/// link rewinds and resends after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The message could not be handed to the connection.
    #[error("cannot publish")]
    Send(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The hub answered with an error, or nobody answered (no responders:
    /// the leaf has no route to the hub's stream).
    #[error("the hub did not store the message")]
    Ack(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No acknowledgement within `forward.ack_timeout`.
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
}

/// Where the hub stored a message, from its acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The stream that holds it.
    pub stream: String,
    /// Its stream sequence (the original's, for a duplicate).
    pub seq: u64,
}

/// A pending acknowledgement.
pub type AckFuture = Pin<Box<dyn Future<Output = Result<Stored, PublishError>> + Send>>;

/// Why reading back what the hub holds failed. The link waits out
/// [`ReadBackError::Unreachable`]; after the others (a few times in a row)
/// it resends without skipping anything (duplicates possible, nothing lost).
#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    /// A request to the hub's JetStream API got no answer in time (the
    /// hub is away, or this device may not make it: see
    /// `cross/hub/device-user.conf`).
    #[error("the hub did not answer {what} in time")]
    Timeout {
        /// Which request.
        what: &'static str,
    },
    /// A request could not be sent, or nobody answers the API (no
    /// JetStream with the agent's `control.fleet_domain` behind the leaf).
    #[error("cannot ask the hub ({what})")]
    Request {
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The hub answered with an error.
    #[error("the hub refused {what}: {description} (code {code})")]
    Refused {
        /// Which request.
        what: &'static str,
        /// JetStream's error code.
        code: u64,
        /// JetStream's description.
        description: String,
    },
    /// The first request of a read back got no answer: the hub (or the
    /// link to it) is away, or this device may not make it (see
    /// `cross/hub/device-user.conf`). Tried again for as long as it lasts:
    /// a resend now could not be stored either, and one after the hub's
    /// duplicate window would be stored twice.
    #[error("the hub's JetStream API does not answer")]
    Unreachable {
        /// The first request's failure.
        #[source]
        source: Box<ReadBackError>,
    },
    /// The hub's answer is not what JetStream answers.
    #[error("the hub's answer to {what} does not parse")]
    Answer {
        /// Which request.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// The future of a read back; it owns what it needs (the link keeps
/// serving its other events while it runs).
pub type ReadBackFuture = BoxFuture<'static, Result<StoredMessages, ReadBackError>>;

/// Publishes one message and hands back its acknowledgement.
pub trait Publisher: Send + 'static {
    /// Publishes `bytes` to `subject` with `Nats-Msg-Id` `msg_id`.
    fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<AckFuture, PublishError>> + Send;

    /// Reads back which messages of this device `stream` holds from stream
    /// sequence `from` on (see [`super::stored`]).
    fn read_back(&self, stream: &str, from: u64) -> ReadBackFuture;
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
