//! Counters and the Prometheus text endpoint (`/metrics`, `/health`).
//!
//! The endpoint is a few dozen lines on a tokio `TcpListener` rather than
//! an HTTP framework: it answers two fixed GET paths, and the uplink
//! already links tokio, so a hand-written responder costs nothing and adds
//! no dependency to audit.

use crate::health::Health;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Upper bounds (seconds) of the delivery-latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// Dead-letter reasons, in the order of [`Metrics::dead_lettered`].
pub const DEAD_REASONS: [&str; 4] = ["undecodable", "unroutable", "oversized", "rejected"];

/// The uplink's counters. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Metrics {
    /// JetStream messages received (redeliveries included).
    pub consumed: AtomicU64,
    /// Readings decoded from envelopes.
    pub readings: AtomicU64,
    /// Records Kafka confirmed.
    pub produced: AtomicU64,
    /// Records not written because Kafka already holds them
    /// (exactly-once) or another replica owns their partition.
    pub skipped: AtomicU64,
    /// Messages acknowledged to JetStream.
    pub acked: AtomicU64,
    /// Messages negatively acknowledged (redelivered later).
    pub naked: AtomicU64,
    /// Messages terminated (not redelivered; still in the stream).
    pub terminated: AtomicU64,
    /// Messages dead-lettered, by reason ([`DEAD_REASONS`]).
    pub dead_lettered: [AtomicU64; 4],
    /// Failed Kafka deliveries.
    pub delivery_errors: AtomicU64,
    /// Messages received but not yet acknowledged.
    pub in_flight: AtomicI64,
    /// Messages pending in the JetStream consumer (as of the last message).
    pub js_pending: AtomicU64,
    /// Downlink: commands the hub's command stream acknowledged.
    pub commands_published: AtomicU64,
    /// Downlink: command records sent to the dead-letter topic.
    pub commands_dead_lettered: AtomicU64,
    /// Outcomes of commands, from devices, written to the outcome topic.
    pub outcomes: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Metrics {
    /// Records one Kafka delivery latency.
    pub fn observe_delivery(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.latency_buckets[i].fetch_add(1, Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Counts one dead letter with `reason` (one of [`DEAD_REASONS`]).
    pub fn dead_letter(&self, reason: &str) {
        let i = DEAD_REASONS.iter().position(|r| *r == reason).unwrap_or(3);
        self.dead_lettered[i].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self, health: &Health) -> String {
        let mut o = String::new();
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            "tributary_uplink_consumed_total",
            "JetStream messages received, redeliveries included.",
            self.consumed.load(Relaxed),
        );
        counter(
            "tributary_uplink_readings_total",
            "Readings decoded from agent envelopes.",
            self.readings.load(Relaxed),
        );
        counter(
            "tributary_uplink_produced_total",
            "Records confirmed by Kafka.",
            self.produced.load(Relaxed),
        );
        counter(
            "tributary_uplink_skipped_total",
            "Records not written: already in Kafka (exactly-once) or owned by another replica.",
            self.skipped.load(Relaxed),
        );
        counter(
            "tributary_uplink_acked_total",
            "Messages acknowledged to JetStream.",
            self.acked.load(Relaxed),
        );
        counter(
            "tributary_uplink_naked_total",
            "Messages negatively acknowledged for redelivery.",
            self.naked.load(Relaxed),
        );
        counter(
            "tributary_uplink_terminated_total",
            "Messages terminated (kept in the stream, not redelivered).",
            self.terminated.load(Relaxed),
        );
        counter(
            "tributary_uplink_commands_published_total",
            "Commands read from Kafka and stored in the hub's command stream.",
            self.commands_published.load(Relaxed),
        );
        counter(
            "tributary_uplink_commands_dead_lettered_total",
            "Command records that are not commands, sent to the dead-letter topic.",
            self.commands_dead_lettered.load(Relaxed),
        );
        counter(
            "tributary_uplink_outcomes_total",
            "Command outcomes from devices, converted for the outcome topic.",
            self.outcomes.load(Relaxed),
        );
        counter(
            "tributary_uplink_delivery_errors_total",
            "Failed Kafka deliveries.",
            self.delivery_errors.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP tributary_uplink_dead_lettered_total Messages sent to the dead-letter topic.\n# TYPE tributary_uplink_dead_lettered_total counter"
        );
        for (i, r) in DEAD_REASONS.iter().enumerate() {
            let _ = writeln!(
                o,
                "tributary_uplink_dead_lettered_total{{reason=\"{r}\"}} {}",
                self.dead_lettered[i].load(Relaxed)
            );
        }
        let mut gauge = |name: &str, help: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "tributary_uplink_in_flight",
            "Messages received and not yet acknowledged.",
            self.in_flight.load(Relaxed) as f64,
        );
        gauge(
            "tributary_uplink_jetstream_pending",
            "Messages pending in the JetStream consumer.",
            self.js_pending.load(Relaxed) as f64,
        );
        let down = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
        gauge(
            "tributary_uplink_nats_down_seconds",
            "How long NATS has been unreachable (0 when up).",
            down(health.nats_down_for()),
        );
        gauge(
            "tributary_uplink_kafka_down_seconds",
            "How long Kafka has been unreachable (0 when up).",
            down(health.kafka_down_for()),
        );
        let name = "tributary_uplink_delivery_seconds";
        let _ = writeln!(
            o,
            "# HELP {name} Time from send to Kafka's confirmation.\n# TYPE {name} histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                o,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.latency_buckets[i].load(Relaxed)
            );
        }
        let count = self.latency_count.load(Relaxed);
        let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            o,
            "{name}_sum {}",
            self.latency_sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(o, "{name}_count {count}");
        o
    }
}

/// Binds `addr` (so a bad address fails at start) and serves `/metrics`
/// and `/health` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    unhealthy_after: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                () = shutdown.cancelled() => return,
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        warn!(error = %e, "metrics endpoint: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let (metrics, health) = (metrics.clone(), health.clone());
            tokio::spawn(async move {
                let Ok(Some(head)) =
                    tokio::time::timeout(Duration::from_secs(5), read_head(&mut sock)).await
                else {
                    return;
                };
                let req = String::from_utf8_lossy(&head);
                let path = req.split_whitespace().nth(1).unwrap_or("");
                let (status, body) = match path {
                    "/metrics" => ("200 OK", metrics.render(&health)),
                    "/health" => {
                        let s = health.status(unhealthy_after);
                        (
                            if s.ok {
                                "200 OK"
                            } else {
                                "503 Service Unavailable"
                            },
                            s.detail,
                        )
                    }
                    _ => ("404 Not Found", "try /metrics or /health\n".to_owned()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                if let Err(e) = sock.write_all(resp.as_bytes()).await {
                    debug!(error = %e, "metrics endpoint: write failed");
                }
                let _ = sock.shutdown().await;
            });
        }
    }))
}

/// Largest request head the endpoint reads.
const MAX_HEAD: usize = 8 * 1024;

/// Reads a request head up to its blank line. A client may send the
/// request line in several TCP segments (a `write!` does one write per
/// formatted piece), so a single `read` can return just `GET `: answering
/// that would serve a 404 for a good request, and closing with the rest
/// unread makes the kernel reset the connection. `None` when the peer
/// closes first or the head exceeds [`MAX_HEAD`].
async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 1024];
    loop {
        let n = sock.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(head);
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_counters_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.produced.fetch_add(3, Relaxed);
        m.dead_letter("oversized");
        m.observe_delivery(Duration::from_millis(3));
        let text = m.render(&Health::default());
        assert!(text.contains("tributary_uplink_produced_total 3"), "{text}");
        assert!(text.contains("tributary_uplink_dead_lettered_total{reason=\"oversized\"} 1"));
        assert!(text.contains("tributary_uplink_delivery_seconds_bucket{le=\"0.0025\"} 0"));
        assert!(text.contains("tributary_uplink_delivery_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("tributary_uplink_delivery_seconds_count 1"));
    }

    async fn get(port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Sends the request the way `write!` on a socket does: one write per
    /// formatted piece, here with pauses so they arrive as separate reads.
    async fn get_in_pieces(port: u16, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.set_nodelay(true).unwrap();
        for piece in ["GET ", path, " HTTP/1.1\r\nHost: x\r\n", "\r\n"] {
            s.write_all(piece.as_bytes()).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_endpoint_serves_metrics_and_a_health_that_follows_the_outages() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (metrics, health) = (Arc::new(Metrics::default()), Arc::new(Health::default()));
        let stop = CancellationToken::new();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let task = serve(
            addr,
            metrics,
            health.clone(),
            Duration::from_millis(1),
            stop.clone(),
        )
        .await
        .unwrap();
        assert!(
            get(port, "/metrics")
                .await
                .contains("tributary_uplink_acked_total 0")
        );
        assert!(
            get(port, "/health").await.starts_with("HTTP/1.1 503"),
            "not ready yet"
        );
        health.set_ready(true);
        assert!(get(port, "/health").await.starts_with("HTTP/1.1 200"));
        health.nats_down();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let r = get(port, "/health").await;
        assert!(
            r.starts_with("HTTP/1.1 503") && r.contains("nats: down"),
            "{r}"
        );
        assert!(get(port, "/nope").await.starts_with("HTTP/1.1 404"));
        assert!(
            get_in_pieces(port, "/metrics")
                .await
                .contains("tributary_uplink_acked_total 0"),
            "a request split across segments is still answered"
        );
        stop.cancel();
        task.await.unwrap();
    }
}
