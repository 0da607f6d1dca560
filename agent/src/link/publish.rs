//! What the link publishes through: a [`Publisher`] (JetStream through the
//! leaf in the agent, a scripted one in the state tests) and the backoff
//! between attempts.

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use std::future::{Future, IntoFuture};
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

/// A pending acknowledgement.
pub type AckFuture = Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>;

/// Publishes one message and hands back its acknowledgement.
pub trait Publisher: Send + 'static {
    /// Publishes `bytes` to `subject` with `Nats-Msg-Id` `msg_id`.
    fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        bytes: Bytes,
    ) -> impl Future<Output = Result<AckFuture, PublishError>> + Send;
}

impl Publisher for jetstream::Context {
    async fn publish(
        &self,
        subject: &str,
        msg_id: &str,
        bytes: Bytes,
    ) -> Result<AckFuture, PublishError> {
        let msg = PublishMessage::build().payload(bytes).message_id(msg_id);
        let ack = self
            .send_publish(subject.to_owned(), msg)
            .await
            .map_err(|e| PublishError::Send(Box::new(e)))?;
        Ok(Box::pin(async move {
            ack.into_future()
                .await
                .map(|_| ())
                .map_err(|e| PublishError::Ack(Box::new(e)))
        }))
    }
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
