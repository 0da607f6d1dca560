//! Rate-limited logging of sensor failures: the first failure is logged at
//! `warn`, then at most one line per [`LOG_EVERY`] per sensor with the number
//! of failures not logged in between, and one `info` line on recovery. A
//! sensor unplugged for a week thus writes a few lines per hour, not one per
//! reading, to the SD card.

use std::fmt::Display;
use tokio::time::Instant;
use tributary_config::logging::ratelimit::{Decision as WindowDecision, LOG_EVERY, Window};

/// Failure log state of one sensor (or one MQTT connection): the shared
/// [`Window`] on tokio's clock (so paused-clock tests drive it).
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    window: Window,
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
        match self.window.decide(Instant::now().into_std(), LOG_EVERY) {
            WindowDecision::Log { suppressed } => Decision::Log {
                unlogged: suppressed,
            },
            WindowDecision::Quiet => Decision::Quiet,
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
        let failures = self.window.clear();
        if failures > 0 {
            tracing::info!(sensor, failures, "sensor read works again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
