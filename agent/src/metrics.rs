//! The optional Prometheus text endpoint (`[metrics] listen`): per-sensor
//! counters, buffer depth, bytes and oldest age, publish latency and drops.
//!
//! A deliberately tiny HTTP server on the agent's own runtime (one request
//! per connection, `GET /metrics` only), so the Pi binary carries no HTTP
//! stack. It is meant for localhost; connections are handled one at a time.

use crate::stats::AgentStats;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tributary_wire::Clock;

/// Renders every counter in the Prometheus text format.
pub fn render(stats: &AgentStats) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    gauge(
        "tributary_agent_buffer_records",
        "gauge",
        "Messages in the buffer not yet acknowledged by the hub.",
        stats.buffer_records.load(Relaxed),
    );
    gauge(
        "tributary_agent_buffer_bytes",
        "gauge",
        "Bytes the buffer uses on disk.",
        stats.buffer_bytes.load(Relaxed),
    );
    let oldest = stats.oldest_unacked_unix_ms.load(Relaxed);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    gauge(
        "tributary_agent_oldest_unsent_age_seconds",
        "gauge",
        "Age of the oldest reading not yet acknowledged.",
        if oldest == 0 {
            0
        } else {
            now.saturating_sub(oldest) / 1000
        },
    );
    gauge(
        "tributary_agent_dropped_records_total",
        "counter",
        "Buffer records dropped by the when-full policy.",
        stats.dropped_records.load(Relaxed),
    );
    gauge(
        "tributary_agent_dropped_readings_total",
        "counter",
        "Readings refused by the drop_newest policy.",
        stats.dropped_readings.load(Relaxed),
    );
    gauge(
        "tributary_agent_acked_messages_total",
        "counter",
        "Messages acknowledged by the hub.",
        stats.acked_messages.load(Relaxed),
    );
    gauge(
        "tributary_agent_acked_readings_total",
        "counter",
        "Readings in messages acknowledged by the hub.",
        stats.acked_readings.load(Relaxed),
    );
    gauge(
        "tributary_agent_publish_failures_total",
        "counter",
        "Publish attempts that failed or timed out (all retried).",
        stats.publish_failures.load(Relaxed),
    );
    gauge(
        "tributary_agent_publish_latency_microseconds_total",
        "counter",
        "Sum of publish-to-ack latencies; divide by acked messages for the mean.",
        stats.ack_latency_us_total.load(Relaxed),
    );
    gauge(
        "tributary_agent_buffer_bytes_written_total",
        "counter",
        "Bytes written to the buffer's files since start.",
        stats.bytes_written.load(Relaxed),
    );
    gauge(
        "tributary_agent_spilled_messages_total",
        "counter",
        "Messages written to the buffer because the hub had not acknowledged them within the flush interval.",
        stats.spilled_messages.load(Relaxed),
    );
    gauge(
        "tributary_agent_read_backs_total",
        "counter",
        "Read backs of what the hub holds of this device, before resending.",
        stats.read_backs.load(Relaxed),
    );
    gauge(
        "tributary_agent_read_back_failures_total",
        "counter",
        "Read backs that failed or timed out; everything unacknowledged was resent.",
        stats.read_back_failures.load(Relaxed),
    );
    gauge(
        "tributary_agent_already_stored_messages_total",
        "counter",
        "Messages not sent again because the hub already held them.",
        stats.already_stored_messages.load(Relaxed),
    );
    gauge(
        "tributary_agent_buffer_syncs_total",
        "counter",
        "fdatasync/fsync calls of the buffer since start.",
        stats.buffer_syncs.load(Relaxed),
    );
    gauge(
        "tributary_agent_buffer_disk_full_total",
        "counter",
        "Times the buffer's file system was full before its size cap (the when-full policy acted).",
        stats.buffer_disk_full.load(Relaxed),
    );
    gauge(
        "tributary_agent_buffer_quarantined_files_total",
        "counter",
        "Damaged buffer files moved to the quarantine directory when the buffer was opened.",
        stats.buffer_quarantined_files.load(Relaxed),
    );
    gauge(
        "tributary_agent_buffer_lost_records_total",
        "counter",
        "Unacknowledged buffer records lost to damaged or missing files, as far as open could tell.",
        stats.buffer_lost_records.load(Relaxed),
    );
    let state = crate::link::LinkState::from_code(stats.link_state.load(Relaxed));
    let _ = writeln!(
        out,
        "# HELP tributary_agent_link_state The link's state: live (publishing as readings are taken), spilling (backing off, readings go to disk) or catching_up (sending the disk backlog).\n# TYPE tributary_agent_link_state gauge"
    );
    for s in crate::link::LinkState::ALL {
        let _ = writeln!(
            out,
            "tributary_agent_link_state{{state=\"{}\"}} {}",
            s.name(),
            u8::from(s == state)
        );
    }
    let lat = stats.ack_latency.snapshot();
    let _ = writeln!(
        out,
        "# HELP tributary_agent_reading_ack_latency_seconds From the timestamp of a message's first reading to the hub's acknowledgement.\n# TYPE tributary_agent_reading_ack_latency_seconds histogram"
    );
    let mut cumulative = 0u64;
    for (i, n) in lat.counts.iter().enumerate() {
        cumulative += n;
        let le = crate::latency::BUCKETS_US
            .get(i)
            .map_or("+Inf".to_owned(), |us| format!("{}", *us as f64 / 1e6));
        let _ = writeln!(
            out,
            "tributary_agent_reading_ack_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(
        out,
        "tributary_agent_reading_ack_latency_seconds_sum {}\ntributary_agent_reading_ack_latency_seconds_count {cumulative}\n# HELP tributary_agent_reading_ack_latency_max_seconds Largest reading-to-ack latency since start.\n# TYPE tributary_agent_reading_ack_latency_max_seconds gauge\ntributary_agent_reading_ack_latency_max_seconds {}",
        lat.sum_us as f64 / 1e6,
        lat.max_us as f64 / 1e6
    );
    // 1 synchronized, 0 not, -1 unknown: an alert on `== 0` fires only for
    // a clock known to be off, not for devices that cannot tell.
    let clock = match stats.clock() {
        Clock::Synced => 1,
        Clock::Unsynced => 0,
        Clock::Unknown => -1,
    };
    let _ = writeln!(
        out,
        "# HELP tributary_agent_clock_synchronized Whether the system clock is synchronized (readings carry it): 1 yes, 0 no, -1 unknown.\n# TYPE tributary_agent_clock_synchronized gauge\ntributary_agent_clock_synchronized {clock}"
    );
    let sensors = stats.sensors();
    for (name, help) in [
        ("readings", "Readings taken."),
        ("suppressed", "Readings suppressed by the deadband."),
        ("errors", "Failed reads."),
    ] {
        let _ = writeln!(
            out,
            "# HELP tributary_agent_sensor_{name}_total {help}\n# TYPE tributary_agent_sensor_{name}_total counter"
        );
        for (id, c) in &sensors {
            let v = match name {
                "readings" => c.readings,
                "suppressed" => c.suppressed,
                _ => c.errors,
            };
            let _ = writeln!(
                out,
                "tributary_agent_sensor_{name}_total{{sensor=\"{}\"}} {v}",
                id.replace(['\\', '"', '\n'], "_")
            );
        }
    }
    out
}

/// Serves `GET /metrics` on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics endpoint listening");
    loop {
        let (mut conn, _) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    continue;
                }
            },
        };
        let read = tokio::time::timeout(Duration::from_secs(2), request_line(&mut conn)).await;
        let Ok(Ok(request)) = read else { continue };
        let (status, body) = if request.starts_with("GET /metrics") {
            ("200 OK", render(&stats))
        } else {
            ("404 Not Found", "only GET /metrics is served\n".to_owned())
        };
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ =
            tokio::time::timeout(Duration::from_secs(2), conn.write_all(response.as_bytes())).await;
    }
}

/// The request line, returned once the whole request head (up to its blank
/// line, at most 8 KiB) arrived. Clients may send it in several segments, so
/// one `read` could see only `GET `; answering then would be wrong, and
/// closing with request bytes unread makes the kernel reset the connection.
async fn request_line(conn: &mut TcpStream) -> std::io::Result<String> {
    let mut head = BufReader::new(conn).take(8 * 1024);
    let mut first = String::new();
    head.read_line(&mut first).await?;
    let mut line = String::new();
    while head.read_line(&mut line).await? > 0 && !line.trim_end().is_empty() {
        line.clear();
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_carries_buffer_gauges_and_per_sensor_counters() {
        let stats = AgentStats::default();
        stats.buffer_records.store(7, Relaxed);
        stats.reading("temp", &tributary_wire::Value::Float(1.0), 1);
        stats.reading("temp", &tributary_wire::Value::Float(2.0), 2);
        stats.error("door", &"unreadable");
        let text = render(&stats);
        assert!(
            text.contains("tributary_agent_buffer_records 7\n"),
            "{text}"
        );
        assert!(
            text.contains("tributary_agent_sensor_readings_total{sensor=\"temp\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("tributary_agent_sensor_errors_total{sensor=\"door\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_clock_gauge_is_1_when_synchronized_0_when_not_and_minus_1_when_unknown() {
        let stats = AgentStats::default();
        for (clock, value) in [
            (Clock::Unknown, -1),
            (Clock::Synced, 1),
            (Clock::Unsynced, 0),
        ] {
            stats.set_clock(clock);
            let text = render(&stats);
            assert!(
                text.contains(&format!(
                    "# TYPE tributary_agent_clock_synchronized gauge\ntributary_agent_clock_synchronized {value}\n"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn an_oldest_record_stamped_in_the_future_reads_as_age_zero_not_negative() {
        // After the wall clock jumped backwards, the oldest record's append
        // time lies ahead of now.
        let stats = AgentStats::default();
        let future = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            + 3_600_000;
        stats.oldest_unacked_unix_ms.store(future, Relaxed);
        let text = render(&stats);
        assert!(
            text.contains("tributary_agent_oldest_unsent_age_seconds 0\n"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_endpoint_answers_get_metrics_sent_in_pieces_over_real_tcp() {
        let stats = Arc::new(AgentStats::default());
        stats.acked_messages.store(3, Relaxed);
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(addr, stats, stop.clone()));
        let mut body = String::new();
        for _ in 0..50 {
            if let Ok(mut c) = tokio::net::TcpStream::connect(addr).await {
                // In pieces, as `write!` on a socket sends it.
                for piece in ["GET ", "/metrics", " HTTP/1.1\r\n", "Host: x\r\n\r\n"] {
                    c.write_all(piece.as_bytes()).await.unwrap();
                    c.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                c.read_to_string(&mut body).await.unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(
            body.contains("tributary_agent_acked_messages_total 3"),
            "{body}"
        );
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
