//! The age of readings on arrival, and their percentiles, in bounded memory.
//!
//! `tail` measures each reading's age when it arrives (this machine's time
//! minus the reading's `ts`) and summarizes them when it stops. Ages go into
//! a log-linear histogram (HdrHistogram's layout, 7 bits of sub-bucket):
//! exact below 128 µs, within 1/128 (0.8 %) above, and never more than
//! about 60 KB however long a `--follow` runs. The maximum is kept exactly.
//! A reading stamped ahead of this machine's clock (clocks of two machines
//! differ) counts as age 0 and is reported as such.

use std::fmt;
use std::time::Duration;

/// Sub-bucket bits: the relative precision is 2^-SUB_BITS.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Buckets for every `u64` of microseconds.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * SUB) as usize;

/// Ages of readings on arrival.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Allocated at the first reading.
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
    ahead: u64,
}

/// Percentiles of a [`Latency`] (see its `Display`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentiles {
    /// Readings measured.
    pub count: u64,
    /// Median age.
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest age, exact.
    pub max: Duration,
    /// Readings stamped ahead of this machine's clock (counted as age 0).
    pub ahead: u64,
}

impl Latency {
    /// Records one age in nanoseconds (negative: stamped ahead of now).
    pub fn record_ns(&mut self, age_ns: i128) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS];
        }
        let us = if age_ns < 0 {
            self.ahead += 1;
            0
        } else {
            u64::try_from(age_ns / 1000).unwrap_or(u64::MAX)
        };
        self.buckets[index(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Readings recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The age at quantile `q` (0..=1) by nearest rank, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                // Never above the exact maximum.
                return Some(Duration::from_micros(middle(i).min(self.max_us)));
            }
        }
        Some(Duration::from_micros(self.max_us))
    }

    /// Count, p50, p90, p99 and max; `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        Some(Percentiles {
            count: self.count,
            p50: self.quantile(0.50)?,
            p90: self.quantile(0.90)?,
            p99: self.quantile(0.99)?,
            max: Duration::from_micros(self.max_us),
            ahead: self.ahead,
        })
    }

    /// The one-line summary `tail` prints when it stops.
    pub fn summary(&self) -> String {
        match self.percentiles() {
            Some(p) => p.to_string(),
            None => "age on arrival: no readings".to_owned(),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "age on arrival of {} readings: p50 {} p90 {} p99 {} max {}",
            self.count,
            human(self.p50),
            human(self.p90),
            human(self.p99),
            human(self.max)
        )?;
        if self.ahead > 0 {
            write!(
                f,
                " ({} stamped ahead of this machine's clock, counted as 0)",
                self.ahead
            )?;
        }
        Ok(())
    }
}

/// An age as people read it: `12.3ms` below 10 s, `42.10s` below an hour,
/// `3.2h` beyond.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        format!("{:.1}ms", s * 1000.0)
    } else if s < 3600.0 {
        format!("{s:.2}s")
    } else {
        format!("{:.1}h", s / 3600.0)
    }
}

/// [`human`] for a signed age in nanoseconds (`-` when stamped ahead).
pub fn human_signed_ns(ns: i128) -> String {
    let d = Duration::from_nanos(u64::try_from(ns.unsigned_abs()).unwrap_or(u64::MAX));
    if ns < 0 {
        format!("-{}", human(d))
    } else {
        human(d)
    }
}

/// The bucket of `us` microseconds.
fn index(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // >= SUB_BITS
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) & (SUB - 1);
    (SUB + u64::from(shift) * SUB + sub) as usize
}

/// The middle of bucket `i`, in microseconds.
fn middle(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = (i - SUB) / SUB;
    let sub = (i - SUB) % SUB;
    let low = (SUB + sub) << shift;
    let width = 1u64 << shift;
    low.saturating_add(width / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_latency_has_no_percentiles_and_says_so() {
        let l = Latency::default();
        assert_eq!(l.percentiles(), None);
        assert_eq!(l.summary(), "age on arrival: no readings");
    }

    #[test]
    fn percentiles_of_known_ages_are_within_one_percent_and_max_is_exact() {
        let mut l = Latency::default();
        // 1 ms .. 100 ms, one reading each.
        for ms in 1..=100u64 {
            l.record_ns(i128::from(ms) * 1_000_000 + 123);
        }
        let p = l.percentiles().unwrap();
        assert_eq!(p.count, 100);
        for (got, want_ms) in [(p.p50, 50.0), (p.p90, 90.0), (p.p99, 99.0)] {
            let got_ms = got.as_secs_f64() * 1000.0;
            assert!(
                (got_ms - want_ms).abs() <= want_ms / 100.0,
                "{got_ms} vs {want_ms}"
            );
        }
        assert_eq!(p.max, Duration::from_micros(100_000));
        let summary = l.summary();
        assert!(
            summary.starts_with("age on arrival of 100 readings: p50 ")
                && summary.ends_with(" max 100.0ms"),
            "{summary}"
        );
    }

    #[test]
    fn small_ages_are_exact_and_a_reading_from_the_future_counts_as_zero() {
        let mut l = Latency::default();
        l.record_ns(-5_000_000);
        l.record_ns(42_000);
        let p = l.percentiles().unwrap();
        assert_eq!(p.p50, Duration::ZERO);
        assert_eq!(p.max, Duration::from_micros(42));
        assert_eq!(p.ahead, 1);
        assert!(
            l.summary()
                .ends_with("(1 stamped ahead of this machine's clock, counted as 0)")
        );
    }

    #[test]
    fn every_bucket_holds_the_values_that_map_to_it_within_its_precision() {
        for us in (0..20_000u64).chain([u64::MAX / 3, u64::MAX]) {
            let m = middle(index(us));
            let err = m.abs_diff(us);
            assert!(err <= us / SUB + 1, "{us}: middle {m}");
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn ages_read_as_milliseconds_seconds_or_hours() {
        assert_eq!(human(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(human(Duration::from_millis(42_100)), "42.10s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 720)), "3.2h");
        assert_eq!(human_signed_ns(-1_500_000), "-1.5ms");
    }
}
