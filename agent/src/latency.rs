//! A fixed-bucket latency histogram of plain atomics: from a reading's
//! timestamp to the hub's acknowledgement of its message, exported as a
//! Prometheus histogram and read by the forwarding benchmark.
//!
//! Buckets are fine where the real-time goal lies (a few milliseconds) and
//! coarse beyond; the exact maximum is kept as well. Recording is a few
//! relaxed atomic adds, cheap enough for every acknowledgement.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Upper bounds of the buckets in microseconds (the last bucket, +Inf, is
/// implicit): a quarter of a millisecond apart up to 2 ms and half of one
/// up to 5 ms, so a p99 near the 5 ms goal is read to within 0.5 ms.
pub const BUCKETS_US: [u64; 25] = [
    250, 500, 750, 1_000, 1_250, 1_500, 1_750, 2_000, 2_500, 3_000, 3_500, 4_000, 4_500, 5_000,
    6_000, 7_500, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000,
    30_000_000,
];

/// Counts of latencies per bucket, their sum and maximum.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

/// A copy of a histogram's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    /// Count per bucket (not cumulative); the last is +Inf.
    pub counts: Vec<u64>,
    /// Sum of all latencies in µs.
    pub sum_us: u64,
    /// Largest latency seen in µs.
    pub max_us: u64,
}

impl LatencyHistogram {
    /// Records one latency.
    pub fn record(&self, us: u64) {
        let i = BUCKETS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    /// A copy of the counts.
    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self.counts.iter().map(|c| c.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
            max_us: self.max_us.load(Relaxed),
        }
    }
}

impl LatencySnapshot {
    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..=1) in µs, interpolated linearly within its
    /// bucket (the +Inf bucket reports the maximum). None when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut below = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && (below + n) as f64 >= rank {
                let lo = if i == 0 { 0 } else { BUCKETS_US[i - 1] } as f64;
                let hi = BUCKETS_US.get(i).map_or(self.max_us as f64, |&b| b as f64);
                let hi = hi.min(self.max_us as f64).max(lo);
                let within = (rank - below as f64) / n as f64;
                return Some(lo + (hi - lo) * within);
            }
            below += n;
        }
        Some(self.max_us as f64)
    }

    /// The difference `self - earlier`: the counts since `earlier`. The
    /// exact maximum of that window is not known; it is bounded by the
    /// upper bound of the highest bucket that grew (and by this
    /// snapshot's maximum).
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
            .map(|(a, b)| a.saturating_sub(*b))
            .collect();
        let top = counts.iter().rposition(|&n| n > 0);
        let max_us = top.map_or(0, |i| {
            BUCKETS_US
                .get(i)
                .map_or(self.max_us, |&b| b.min(self.max_us))
        });
        LatencySnapshot {
            counts,
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
            max_us,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_bucket_that_holds_them() {
        let h = LatencyHistogram::default();
        for _ in 0..98 {
            h.record(800); // (750, 1000]
        }
        h.record(4_200); // (4000, 4500]
        h.record(12_000); // (10000, 25000]
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile_us(0.5).expect("p50");
        assert!((750.0..=1_000.0).contains(&p50), "{p50}");
        let p99 = s.quantile_us(0.99).expect("p99");
        assert!((4_000.0..=4_500.0).contains(&p99), "{p99}");
        assert_eq!(s.quantile_us(1.0), Some(12_000.0), "capped by the maximum");
        assert_eq!(s.max_us, 12_000);
        assert_eq!(LatencySnapshot::default().quantile_us(0.5), None);
    }

    #[test]
    fn a_latency_on_a_bucket_bound_counts_in_that_bucket_and_beyond_the_last_in_inf() {
        let h = LatencyHistogram::default();
        h.record(250);
        h.record(31_000_000);
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[BUCKETS_US.len()], 1);
        let later = {
            h.record(250);
            h.snapshot()
        };
        let window = later.since(&s);
        assert_eq!(window.count(), 1);
        assert_eq!(window.max_us, 250, "bounded by the bucket that grew");
    }
}
