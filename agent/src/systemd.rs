//! systemd integration: `Type=notify` readiness and a watchdog that pings
//! only while the pipeline makes progress.
//!
//! Progress means: within the last `metrics.stall_after` (default 60 s) the
//! link went through a flush tick, and it either woke up (an ack, a publish,
//! a retry after backoff) or had nothing to send. A hung fsync (the link
//! waits for its spill), a deadlock or a wedged link stops the pings, and
//! systemd restarts the agent (which recovers the buffer). A hub that is
//! away for hours is not a stall: the link keeps retrying.
//! Outside systemd (no `NOTIFY_SOCKET`) all of this does nothing.

use crate::stats::AgentStats;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
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
/// progress: the link went through a flush tick and woke up (or had
/// nothing to send), each within the last `stall_after`. Does nothing when
/// the watchdog is not enabled.
pub async fn watchdog(stats: Arc<AgentStats>, stall_after: Duration, shutdown: CancellationToken) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    let mut progress = Progress::new(Instant::now());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        progress.observe(
            now,
            stats.batcher_ticks.load(Ordering::Relaxed),
            stats.forwarder_wakeups.load(Ordering::Relaxed),
            stats.buffer_records.load(Ordering::Relaxed),
        );
        if progress.healthy(now, stall_after) {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::warn!(
                batcher_idle_s = progress.batcher_idle(now).as_secs(),
                forwarder_idle_s = progress.forwarder_idle(now).as_secs(),
                stall_after_s = stall_after.as_secs(),
                "no progress; not pinging the systemd watchdog"
            );
        }
    }
}

/// When the batcher and the forwarder last moved.
#[derive(Debug, Clone, Copy)]
struct Progress {
    counters: Option<(u64, u64)>,
    batcher_at: Instant,
    forwarder_at: Instant,
}

impl Progress {
    fn new(now: Instant) -> Self {
        Progress {
            counters: None,
            batcher_at: now,
            forwarder_at: now,
        }
    }

    /// Records the counters seen at `now`; a forwarder with an empty buffer
    /// counts as moving (it has nothing to do).
    fn observe(&mut self, now: Instant, batcher_ticks: u64, forwarder_wakeups: u64, buffered: u64) {
        if let Some((ticks, wakeups)) = self.counters {
            if ticks != batcher_ticks {
                self.batcher_at = now;
            }
            if wakeups != forwarder_wakeups || buffered == 0 {
                self.forwarder_at = now;
            }
        }
        self.counters = Some((batcher_ticks, forwarder_wakeups));
    }

    fn batcher_idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.batcher_at)
    }

    fn forwarder_idle(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.forwarder_at)
    }

    /// Whether both moved within `stall_after`.
    fn healthy(&self, now: Instant, stall_after: Duration) -> bool {
        self.batcher_idle(now) <= stall_after && self.forwarder_idle(now) <= stall_after
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;
    use std::time::{Duration, Instant};

    const STALL: Duration = Duration::from_secs(60);

    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn a_ticking_batcher_and_a_waking_forwarder_are_progress() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        for (i, s) in [0u64, 30, 60, 90, 120].into_iter().enumerate() {
            p.observe(at(t0, s), i as u64, i as u64, 10);
            assert!(p.healthy(at(t0, s), STALL));
        }
    }

    #[test]
    fn an_idle_forwarder_with_an_empty_buffer_is_not_a_stall() {
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        for (i, s) in [0u64, 30, 60, 90, 120].into_iter().enumerate() {
            p.observe(at(t0, s), i as u64, 7, 0);
            assert!(p.healthy(at(t0, s), STALL));
        }
    }

    #[test]
    fn a_forwarder_backing_off_less_than_stall_after_between_wakeups_is_not_a_stall() {
        // Checked every 10 s, the forwarder wakes every 30 s (backoff_max).
        let t0 = Instant::now();
        let mut p = Progress::new(t0);
        for s in (0..=300u64).step_by(10) {
            p.observe(at(t0, s), s, s / 30, 500);
            assert!(p.healthy(at(t0, s), STALL), "at {s} s");
        }
    }

    #[test]
    fn a_stuck_batcher_or_a_stuck_forwarder_with_a_backlog_is_a_stall_after_stall_after() {
        let t0 = Instant::now();
        let mut stuck_batcher = Progress::new(t0);
        let mut stuck_forwarder = Progress::new(t0);
        for s in (0..=60u64).step_by(10) {
            stuck_batcher.observe(at(t0, s), 1, s, 10);
            stuck_forwarder.observe(at(t0, s), s, 1, 10);
            assert!(stuck_batcher.healthy(at(t0, s), STALL));
            assert!(stuck_forwarder.healthy(at(t0, s), STALL));
        }
        stuck_batcher.observe(at(t0, 70), 1, 70, 10);
        stuck_forwarder.observe(at(t0, 70), 70, 1, 10);
        assert!(!stuck_batcher.healthy(at(t0, 70), STALL));
        assert!(!stuck_forwarder.healthy(at(t0, 70), STALL));
    }
}
