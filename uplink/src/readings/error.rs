//! Why a drain session ended before shutdown: one kind per cause, each with
//! its source, so that [`super::drain`] decides by kind (every kind starts
//! a new session with a new producer; the log says which).

use crate::kafka::KafkaSetupError;
use rdkafka::error::KafkaError;
use std::time::Duration;

/// A drain session's failure. Unacknowledged messages are redelivered by
/// JetStream to the next session; in exactly-once mode the next session
/// first reads what Kafka holds.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// At-least-once: Kafka did not confirm a message's writes within
    /// `kafka.delivery_timeout`; the producer holding them is replaced.
    #[error(
        "Kafka did not confirm the writes of stream sequence {seq} within {timeout:?}; replacing the producer"
    )]
    Stalled {
        /// The message's stream sequence.
        seq: u64,
        /// `kafka.delivery_timeout`.
        timeout: Duration,
    },
    /// librdkafka's queue had no room for that long: Kafka is away or slow.
    #[error("librdkafka's queue stayed full for {waited:?} (Kafka unreachable or slow)")]
    QueueFull {
        /// How long the write waited for room.
        waited: Duration,
    },
    /// A topic's partitions could not be learned after part of a message
    /// was written.
    #[error("topic {topic} became unavailable in the middle of a message")]
    TopicUnavailable {
        /// The topic.
        topic: String,
        /// Why.
        #[source]
        source: KafkaSetupError,
    },
    /// Exactly-once: what a partition holds could not be read.
    #[error("exactly-once: cannot learn what Kafka already holds")]
    Recovery(#[source] KafkaSetupError),
    /// The producer refused a record after others of its message were
    /// queued (or, in exactly-once mode, at all).
    #[error("the producer refused a record")]
    Refused(#[source] KafkaError),
    /// Exactly-once: a write failed; the session starts over from what
    /// Kafka holds.
    #[error("a Kafka write of stream sequence {seq} failed")]
    WriteFailed {
        /// The message's stream sequence.
        seq: u64,
        /// Kafka's answer.
        #[source]
        source: KafkaError,
    },
    /// The idempotent producer is in a fatal state (fenced, epoch lost):
    /// only a new producer can write again.
    #[error("the Kafka producer hit a fatal error at stream sequence {seq}; recreating it")]
    FatalProducer {
        /// The message's stream sequence.
        seq: u64,
        /// Kafka's answer.
        #[source]
        source: KafkaError,
    },
}

impl SessionError {
    /// A short name of the kind, for logs and tests.
    pub fn kind(&self) -> &'static str {
        match self {
            SessionError::Stalled { .. } => "stalled",
            SessionError::QueueFull { .. } => "queue_full",
            SessionError::TopicUnavailable { .. } => "topic_unavailable",
            SessionError::Recovery(_) => "recovery",
            SessionError::Refused(_) => "refused",
            SessionError::WriteFailed { .. } => "write_failed",
            SessionError::FatalProducer { .. } => "fatal_producer",
        }
    }

    /// Whether Kafka itself is away (the health endpoint already says so),
    /// rather than refusing what was sent.
    pub fn kafka_away(&self) -> bool {
        matches!(
            self,
            SessionError::Stalled { .. }
                | SessionError::QueueFull { .. }
                | SessionError::TopicUnavailable { .. }
                | SessionError::Recovery(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;
    use tributary_config::logging::error_chain;

    #[test]
    fn a_session_error_keeps_kafkas_answer_as_its_source() {
        let e = SessionError::WriteFailed {
            seq: 7,
            source: KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut),
        };
        assert_eq!(e.kind(), "write_failed");
        assert!(!e.kafka_away());
        let chain = error_chain(&e);
        assert!(
            chain.starts_with("a Kafka write of stream sequence 7 failed: "),
            "{chain}"
        );
        assert!(chain.contains("timed out"), "{chain}");
    }
}
