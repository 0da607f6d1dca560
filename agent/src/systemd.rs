//! systemd integration: `Type=notify` readiness and a watchdog that pings
//! only while the pipeline makes progress.
//!
//! Progress means: the batcher completed a flush tick since the last check,
//! and the forwarder either woke up (an ack, a publish, a retry) or had
//! nothing to send. A hung fsync, a deadlock or a wedged forwarder stops the
//! pings, and systemd restarts the agent (which recovers the buffer). A hub
//! that is away for hours is not a stall: the forwarder keeps retrying.
//! Outside systemd (no `NOTIFY_SOCKET`) all of this does nothing.

use crate::stats::AgentStats;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio_util::sync::CancellationToken;

/// Tells systemd the agent is ready (the buffer is open).
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY failed");
    }
}

/// Tells systemd the agent is stopping.
pub fn notify_stopping() {
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
}

/// Pings the systemd watchdog at half its interval while the agent makes
/// progress; does nothing when the watchdog is not enabled.
pub async fn watchdog(stats: Arc<AgentStats>, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    let mut last = (u64::MAX, u64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (
            stats.batcher_ticks.load(Ordering::Relaxed),
            stats.forwarder_wakeups.load(Ordering::Relaxed),
        );
        if progressed(last, now, stats.buffer_records.load(Ordering::Relaxed)) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!("no progress since the last watchdog check; not pinging systemd");
        }
        last = now;
    }
}

/// Whether the pipeline moved between two checks.
fn progressed(last: (u64, u64), now: (u64, u64), buffered: u64) -> bool {
    let batcher = now.0 != last.0;
    let forwarder = now.1 != last.1 || buffered == 0;
    batcher && forwarder
}

#[cfg(test)]
mod tests {
    use super::progressed;

    #[test]
    fn a_ticking_batcher_and_a_waking_forwarder_are_progress() {
        assert!(progressed((1, 1), (2, 2), 10));
    }

    #[test]
    fn an_idle_forwarder_with_an_empty_buffer_is_not_a_stall() {
        assert!(progressed((1, 1), (2, 1), 0));
    }

    #[test]
    fn a_stuck_batcher_or_a_stuck_forwarder_with_a_backlog_is_a_stall() {
        assert!(!progressed((1, 1), (1, 2), 10));
        assert!(!progressed((1, 1), (2, 1), 10));
    }
}
