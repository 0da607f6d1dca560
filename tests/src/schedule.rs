//! Random fault schedules that can be replayed: a seed printed at the
//! start of a test (or taken from `TRIBUTARY_TEST_SEED`) drives a small
//! xorshift generator, so a failing schedule runs again with
//! `TRIBUTARY_TEST_SEED=<seed>`.

/// A seeded xorshift64 generator.
#[derive(Debug, Clone)]
pub struct Schedule(u64);

impl Schedule {
    /// The generator of `TRIBUTARY_TEST_SEED`, or of a seed from the clock;
    /// prints the seed either way.
    pub fn from_env() -> Schedule {
        let seed: u64 = std::env::var("TRIBUTARY_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| crate::tributary::now_ms() | 1);
        println!("seed {seed} (replay with TRIBUTARY_TEST_SEED={seed})");
        Schedule::new(seed)
    }

    /// The generator of `seed` (0 is taken as 1: xorshift stays at 0).
    pub fn new(seed: u64) -> Schedule {
        Schedule(seed.max(1))
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_schedule_within_bounds() {
        let (mut a, mut b) = (Schedule::new(42), Schedule::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.below(7)).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.below(7)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| x < 7));
        assert!(xs.iter().any(|&x| x != xs[0]), "not constant");
        assert_ne!(Schedule::new(0).below(1000), Schedule::new(0).0);
    }
}
