//! librdkafka's log lines and error callbacks, routed to `tracing` and
//! rate-limited.
//!
//! librdkafka reports a broker it cannot reach from every client, on every
//! connection attempt: during a Kafka outage that was many WARN lines a
//! second (the producer, plus the metadata consumer the health probe makes
//! every 2 s). Every client of the uplink logs through [`log`] and
//! [`error`] here, which share one [`RateLimited`] for the process: each
//! librdkafka facility (`FAIL`, `ERROR`…) and each error code is logged at
//! most once a minute, with the count of lines not logged in between.
//! A partition end reported as an error is normal for a consumer and only
//! logged at debug.
//!
//! [`LoggingContext`] is the client context of clients that only need
//! their logs handled (admin, metadata and tail consumers); the producer's
//! context ([`crate::kafka::UplinkContext`]) calls the same functions.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use std::sync::LazyLock;
use tracing::{debug, warn};
use tributary_config::logging::{Decision, RateLimited};

/// The process's librdkafka log limiter, shared by every client (clients
/// come and go; an outage does not).
static LIMIT: LazyLock<RateLimited> = LazyLock::new(RateLimited::default);

/// Logs a librdkafka log line: errors and worse at WARN (rate-limited per
/// facility), the rest at DEBUG.
pub fn log(level: RDKafkaLogLevel, facility: &str, message: &str) {
    log_with(&LIMIT, level, facility, message);
}

fn log_with(limit: &RateLimited, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            if let Decision::Log { suppressed } = limit.decide(&format!("log {facility}")) {
                warn!(facility, suppressed, "librdkafka: {message}");
            }
        }
        _ => debug!(facility, "librdkafka: {message}"),
    }
}

/// Logs a librdkafka error callback at WARN, rate-limited per error code;
/// a partition end at DEBUG.
pub fn error(error: &KafkaError, reason: &str) {
    error_with(&LIMIT, error, reason);
}

fn error_with(limit: &RateLimited, error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if code == Some(RDKafkaErrorCode::PartitionEOF) {
        debug!(error = %error, reason, "Kafka partition end");
        return;
    }
    let key = match code {
        Some(c) => format!("error {c:?}"),
        None => "error".to_owned(),
    };
    if let Decision::Log { suppressed } = limit.decide(&key) {
        warn!(error = %error, reason, suppressed, "Kafka client error");
    }
}

/// A client context that logs through [`log`] and [`error`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingContext;

impl ClientContext for LoggingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self::error(&error, reason);
    }
}

impl ConsumerContext for LoggingContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broker_outage_logs_once_per_window_whatever_the_client() {
        let limit = RateLimited::new(std::time::Duration::from_secs(3600));
        for _ in 0..100 {
            log_with(
                &limit,
                RDKafkaLogLevel::Error,
                "FAIL",
                "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed",
            );
            error_with(
                &limit,
                &KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
                "broker down",
            );
        }
        // One line each so far; the next of each is quiet and counted.
        assert_eq!(limit.decide("log FAIL"), Decision::Quiet);
        assert_eq!(
            limit.decide("error BrokerTransportFailure"),
            Decision::Quiet
        );
        assert_eq!(limit.clear("log FAIL"), 101);
    }
}
