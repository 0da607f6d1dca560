//! Rate-limited logging of sensor failures: the first failure is logged at
//! `warn`, then at most one line per [`LOG_EVERY`] per sensor with the number
//! of failures not logged in between, and one `info` line on recovery. A
//! sensor unplugged for a week thus writes a few lines per hour, not one per
//! reading, to the SD card.

use std::fmt::Display;
use std::time::Duration;
use tokio::time::Instant;

/// Least time between two logged failures of one sensor.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);

/// Failure log state of one sensor (or one MQTT connection).
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    last_logged: Option<Instant>,
    unlogged: u64,
    failing_since_ok: u64,
}

/// What [`ErrorLog::failed`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Log this failure; `unlogged` failures were not logged since the last line.
    Log { unlogged: u64 },
    /// Stay quiet.
    Quiet,
}

impl ErrorLog {
    /// Records a failure and says whether to log it.
    pub(crate) fn decide(&mut self) -> Decision {
        let now = Instant::now();
        self.failing_since_ok += 1;
        match self.last_logged {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.unlogged += 1;
                Decision::Quiet
            }
            _ => {
                let unlogged = std::mem::take(&mut self.unlogged);
                self.last_logged = Some(now);
                Decision::Log { unlogged }
            }
        }
    }

    /// Records and maybe logs a failure of `sensor`.
    pub(crate) fn failed(&mut self, sensor: &str, error: &dyn Display) {
        if let Decision::Log { unlogged } = self.decide() {
            tracing::warn!(sensor, error = %error, unlogged, "sensor read failed");
        }
    }

    /// Records a success; logs the recovery of a failing sensor.
    pub(crate) fn ok(&mut self, sensor: &str) {
        if self.failing_since_ok > 0 {
            tracing::info!(
                sensor,
                failures = self.failing_since_ok,
                "sensor read works again"
            );
            self.failing_since_ok = 0;
            self.unlogged = 0;
            self.last_logged = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_are_logged_at_most_once_a_minute_with_the_count_in_between() {
        let mut log = ErrorLog::default();
        assert_eq!(log.decide(), Decision::Log { unlogged: 0 });
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(10)).await;
            assert_eq!(log.decide(), Decision::Quiet);
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(log.decide(), Decision::Log { unlogged: 5 });
        assert_eq!(log.decide(), Decision::Quiet);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovery_resets_the_limit() {
        let mut log = ErrorLog::default();
        assert_eq!(log.decide(), Decision::Log { unlogged: 0 });
        log.ok("s");
        assert_eq!(log.decide(), Decision::Log { unlogged: 0 });
    }
}
