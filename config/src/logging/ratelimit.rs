//! Rate-limited logging of repeated problems: the first occurrence is
//! logged, then at most one line per window (a minute by default) with the
//! number of occurrences not logged in between, and the count is reset
//! when the problem goes away. An outage of an hour thus writes about 60
//! lines, not one per connection attempt.
//!
//! [`Window`] is the state of one problem (single-threaded, clock passed
//! in); [`RateLimited`] holds one window per key (an error code, a
//! librdkafka facility, a NATS event kind) behind a mutex, for callbacks
//! that run on library threads. The agent's sensor error log follows the
//! same rule per sensor.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two logged occurrences of one problem.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Most keys a [`RateLimited`] tracks; later keys share one window.
const MAX_KEYS: usize = 64;

/// What to do with an occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Log it, saying that `suppressed` occurrences were not logged since
    /// the last line.
    Log {
        /// Occurrences not logged since the last line.
        suppressed: u64,
    },
    /// Stay quiet (counted).
    Quiet,
}

/// The log state of one problem.
#[derive(Debug, Default, Clone)]
pub struct Window {
    last_logged: Option<Instant>,
    suppressed: u64,
    since_ok: u64,
}

impl Window {
    /// Records an occurrence at `now` and decides whether to log it.
    pub fn decide(&mut self, now: Instant, every: Duration) -> Decision {
        self.since_ok += 1;
        match self.last_logged {
            Some(t) if now.saturating_duration_since(t) < every => {
                self.suppressed += 1;
                Decision::Quiet
            }
            _ => {
                self.last_logged = Some(now);
                Decision::Log {
                    suppressed: std::mem::take(&mut self.suppressed),
                }
            }
        }
    }

    /// The problem went away: returns how many occurrences there were
    /// since the last time it did, and logs the next one at once.
    pub fn clear(&mut self) -> u64 {
        let n = self.since_ok;
        *self = Window::default();
        n
    }
}

/// One [`Window`] per key, shareable between threads.
#[derive(Debug)]
pub struct RateLimited {
    every: Duration,
    windows: Mutex<HashMap<String, Window>>,
}

impl Default for RateLimited {
    fn default() -> Self {
        RateLimited::new(LOG_EVERY)
    }
}

impl RateLimited {
    /// Logs each key at most once per `every`.
    pub fn new(every: Duration) -> Self {
        RateLimited {
            every,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records an occurrence of `key` now.
    pub fn decide(&self, key: &str) -> Decision {
        self.decide_at(key, Instant::now())
    }

    /// Records an occurrence of `key` at `now`.
    pub fn decide_at(&self, key: &str, now: Instant) -> Decision {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let key = if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            "(other)"
        } else {
            key
        };
        windows
            .entry(key.to_owned())
            .or_default()
            .decide(now, self.every)
    }

    /// `key`'s problem went away: how many occurrences it had (0 when
    /// none since the last clear).
    pub fn clear(&self, key: &str) -> u64 {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        windows.remove(key).map_or(0, |mut w| w.clear())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn a_repeated_problem_is_logged_once_a_window_with_the_count_in_between() {
        let limit = RateLimited::new(60 * SEC);
        let t0 = Instant::now();
        assert_eq!(limit.decide_at("FAIL", t0), Decision::Log { suppressed: 0 });
        // Ten connection failures a second for 59 seconds: all quiet.
        for tenth in 1..590 {
            let t = t0 + Duration::from_millis(100 * tenth);
            assert_eq!(limit.decide_at("FAIL", t), Decision::Quiet, "at {tenth}");
        }
        assert_eq!(
            limit.decide_at("FAIL", t0 + 60 * SEC),
            Decision::Log { suppressed: 589 }
        );
        assert_eq!(limit.decide_at("FAIL", t0 + 61 * SEC), Decision::Quiet);
    }

    #[test]
    fn keys_are_limited_independently() {
        let limit = RateLimited::new(60 * SEC);
        let t0 = Instant::now();
        assert_eq!(limit.decide_at("a", t0), Decision::Log { suppressed: 0 });
        assert_eq!(limit.decide_at("b", t0), Decision::Log { suppressed: 0 });
        assert_eq!(limit.decide_at("a", t0 + SEC), Decision::Quiet);
    }

    #[test]
    fn a_cleared_problem_reports_its_count_and_is_logged_at_once_next_time() {
        let limit = RateLimited::new(60 * SEC);
        let t0 = Instant::now();
        limit.decide_at("down", t0);
        limit.decide_at("down", t0 + SEC);
        limit.decide_at("down", t0 + 2 * SEC);
        assert_eq!(limit.clear("down"), 3);
        assert_eq!(limit.clear("down"), 0);
        assert_eq!(
            limit.decide_at("down", t0 + 3 * SEC),
            Decision::Log { suppressed: 0 }
        );
    }

    #[test]
    fn many_keys_share_one_window_beyond_the_limit() {
        let limit = RateLimited::new(60 * SEC);
        let t0 = Instant::now();
        for k in 0..MAX_KEYS {
            limit.decide_at(&k.to_string(), t0);
        }
        assert_eq!(
            limit.decide_at("new-1", t0),
            Decision::Log { suppressed: 0 }
        );
        assert_eq!(limit.decide_at("new-2", t0), Decision::Quiet);
    }
}
