//! Liveness of the two ends: since when NATS or Kafka has been unreachable.
//!
//! The NATS side is watched through the client's connection state, the
//! Kafka side through librdkafka's error callback, failed deliveries and a
//! periodic metadata probe. `/health` fails once either has been down for
//! longer than `http.unhealthy_after`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Shared health state.
#[derive(Debug, Default)]
pub struct Health {
    nats_down: Mutex<Option<Instant>>,
    kafka_down: Mutex<Option<Instant>>,
    ready: AtomicBool,
}

fn mark(slot: &Mutex<Option<Instant>>, down: bool) {
    let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
    match (down, s.is_some()) {
        (true, false) => *s = Some(Instant::now()),
        (false, true) => *s = None,
        _ => {}
    }
}

fn since(slot: &Mutex<Option<Instant>>) -> Option<Duration> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .map(|t| t.elapsed())
}

/// What `/health` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether the uplink is healthy.
    pub ok: bool,
    /// One line per end.
    pub detail: String,
}

impl Health {
    /// Records that Kafka could not be reached (keeps the first moment).
    pub fn kafka_down(&self) {
        mark(&self.kafka_down, true);
    }
    /// Records that Kafka answered.
    pub fn kafka_up(&self) {
        mark(&self.kafka_down, false);
    }
    /// Records that NATS is disconnected (keeps the first moment).
    pub fn nats_down(&self) {
        mark(&self.nats_down, true);
    }
    /// Records that NATS is connected.
    pub fn nats_up(&self) {
        mark(&self.nats_down, false);
    }
    /// Marks the pipeline as started (stream, consumer and topics ready).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }
    /// Whether the pipeline has started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
    /// How long NATS has been down, if it is.
    pub fn nats_down_for(&self) -> Option<Duration> {
        since(&self.nats_down)
    }
    /// How long Kafka has been down, if it is.
    pub fn kafka_down_for(&self) -> Option<Duration> {
        since(&self.kafka_down)
    }

    /// Healthy unless NATS or Kafka has been down for longer than
    /// `threshold`.
    pub fn status(&self, threshold: Duration) -> Status {
        let line = |name: &str, down: Option<Duration>| match down {
            None => format!("{name}: up"),
            Some(d) => format!("{name}: down for {:.1}s", d.as_secs_f64()),
        };
        let (n, k) = (self.nats_down_for(), self.kafka_down_for());
        let ok =
            self.is_ready() && n.is_none_or(|d| d <= threshold) && k.is_none_or(|d| d <= threshold);
        Status {
            ok,
            detail: format!(
                "{}\n{}\n{}\n",
                if self.is_ready() {
                    "started"
                } else {
                    "starting"
                },
                line("nats", n),
                line("kafka", k)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_only_after_an_outage_outlasts_the_threshold() {
        let h = Health::default();
        assert!(!h.status(Duration::from_secs(1)).ok, "not ready yet");
        h.set_ready(true);
        assert!(h.status(Duration::from_secs(1)).ok);
        h.kafka_down();
        assert!(h.status(Duration::from_secs(60)).ok);
        std::thread::sleep(Duration::from_millis(20));
        let s = h.status(Duration::from_millis(10));
        assert!(!s.ok);
        assert!(s.detail.contains("kafka: down"), "{}", s.detail);
        h.kafka_up();
        assert!(h.status(Duration::from_millis(10)).ok);
    }
}
