//! What the benchmarks that run real servers share: their knobs from the
//! environment, a wall clock in nanoseconds, and the summary of latency
//! samples (p50 / p99 / max per round, medians over rounds).

/// The number in environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(u64::MAX)
}

/// `[p50, p99, max]` of `samples` (0 for each when there are none).
pub fn summary(mut samples: Vec<f64>) -> [f64; 3] {
    if samples.is_empty() {
        return [0.0; 3];
    }
    samples.sort_by(f64::total_cmp);
    let q = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    [q(0.5), q(0.99), samples[samples.len() - 1]]
}

/// The median over `rounds` of field `i` of their summaries.
pub fn median(rounds: &[[f64; 3]], i: usize) -> f64 {
    let mut v: Vec<f64> = rounds.iter().map(|r| r[i]).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_holds_the_median_the_99th_percentile_and_the_maximum() {
        let s = summary((1..=100).rev().map(f64::from).collect());
        assert_eq!(s, [51.0, 99.0, 100.0]);
        assert_eq!(summary(Vec::new()), [0.0; 3]);
        assert_eq!(median(&[[3.0; 3], [1.0; 3], [2.0; 3]], 1), 2.0);
    }
}
