//! The NATS client's connection events, logged rate-limited (feature
//! `client`): while a server is away or flapping, `disconnected`, server and
//! client errors are logged at most once a minute each with the count of
//! those not logged; `connected` too (a flapping link), and each
//! `connected` line says how many disconnects there were since the last. The client's own `event: …` info lines are filtered out by
//! [`crate::logging::QUIET_LIBRARIES`].
//!
//! ```no_run
//! # async fn f() -> Result<(), async_nats::ConnectError> {
//! let log = tributary_config::logging::nats::EventLog::new("hub");
//! let client = async_nats::ConnectOptions::new()
//!     .event_callback(move |event| log.clone().log(event))
//!     .connect("nats://127.0.0.1:4222")
//!     .await?;
//! # Ok(()) }
//! ```

use crate::logging::ratelimit::{Decision, RateLimited};
use async_nats::Event;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Rate-limited logger of one connection's events.
#[derive(Debug, Clone)]
pub struct EventLog {
    server: &'static str,
    limit: Arc<RateLimited>,
    /// Disconnects since the last `connected` line.
    disconnects: Arc<AtomicU64>,
}

impl EventLog {
    /// A logger for the connection to `server` (`"leaf"`, `"hub"`: shown
    /// in every line).
    pub fn new(server: &'static str) -> Self {
        Self::with_window(server, crate::logging::ratelimit::LOG_EVERY)
    }

    /// A logger logging each kind of event at most once per `every`.
    pub fn with_window(server: &'static str, every: std::time::Duration) -> Self {
        EventLog {
            server,
            limit: Arc::new(RateLimited::new(every)),
            disconnects: Arc::default(),
        }
    }

    /// Logs `event` (an `event_callback` of async-nats).
    pub async fn log(self, event: Event) {
        self.log_now(&event);
    }

    /// Logs `event`, synchronously.
    pub fn log_now(&self, event: &Event) {
        let server = self.server;
        let key = match event {
            Event::Connected => {
                if let Decision::Log { suppressed } = self.limit.decide("connected") {
                    let disconnects = self.disconnects.swap(0, Ordering::Relaxed);
                    tracing::info!(server, disconnects, suppressed, "connected to NATS");
                }
                return;
            }
            Event::Disconnected => {
                self.disconnects.fetch_add(1, Ordering::Relaxed);
                "disconnected"
            }
            Event::ServerError(_) => "server error",
            Event::ClientError(_) => "client error",
            Event::SlowConsumer(_) => "slow consumer",
            Event::LameDuckMode | Event::Draining | Event::Closed => {
                tracing::info!(server, event = %event, "NATS connection");
                return;
            }
        };
        if let Decision::Log { suppressed } = self.limit.decide(key) {
            match event {
                Event::Disconnected => {
                    tracing::warn!(server, suppressed, "disconnected from NATS; reconnecting")
                }
                _ => tracing::warn!(server, event = %event, suppressed, "NATS connection problem"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A writer into a shared buffer, for reading back what was logged.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_flapping_connection_logs_one_line_per_kind_and_counts_the_disconnects() {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let log = EventLog::with_window("leaf", std::time::Duration::from_secs(3600));
            log.log_now(&Event::Connected);
            for _ in 0..100 {
                log.log_now(&Event::Disconnected);
                log.log_now(&Event::Connected);
            }
            // Another window: the next line counts every disconnect.
            let later = EventLog {
                limit: Arc::new(RateLimited::new(std::time::Duration::ZERO)),
                ..log.clone()
            };
            later.log_now(&Event::Connected);
        });
        let text = String::from_utf8(capture.0.lock().expect("capture").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("disconnected from NATS"))
                .count(),
            1,
            "{text}"
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("connected to NATS"))
                .count(),
            2,
            "{text}"
        );
        assert!(
            lines.last().is_some_and(|l| l.contains("disconnects=100")),
            "{text}"
        );
    }
}
