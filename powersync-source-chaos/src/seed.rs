//! The campaign's pseudo-random numbers: SplitMix64, written out here so that a seed names the
//! same fault schedule and workload choices in every build (a library generator may change its
//! algorithm between versions, which would break "the same seed replays the same schedule").

/// A SplitMix64 generator (Steele, Lea, Flood 2014): 64 bits of state, full period, good enough
/// statistical quality for choosing faults and workload operations. Not for cryptography.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole sequence is determined by `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng { state: seed }
    }

    /// An independent generator for one purpose (`stream` tells purposes apart), so that adding
    /// draws for one purpose does not shift the numbers another purpose sees.
    pub fn fork(seed: u64, stream: u64) -> Self {
        let mut mixer = SeededRng::new(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        SeededRng::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high` (`low` when `high < low`). Uses a 128-bit multiply instead of
    /// `%`, so small ranges carry no visible modulo bias.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        if high <= low {
            return low;
        }
        let span = high - low + 1;
        if span == 0 {
            // low = 0 and high = u64::MAX: every value is in range.
            return self.next_u64();
        }
        let wide = u128::from(self.next_u64()) * u128::from(span);
        // The high half of the product is < span, so it fits in u64.
        low + u64::try_from(wide >> 64).unwrap_or(0)
    }

    /// An index into a collection of `len` items (0 when `len` is 0).
    pub fn index(&mut self, len: usize) -> usize {
        let last = u64::try_from(len.saturating_sub(1)).unwrap_or(u64::MAX);
        usize::try_from(self.between(0, last)).unwrap_or(0)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.between(1, 100) <= percent
    }

    /// A fresh seed for a campaign nobody asked to replay: time and process id, mixed.
    pub fn fresh_seed() -> u64 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let mut rng = SeededRng::new((nanos as u64) ^ (u64::from(std::process::id()) << 32));
        rng.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a: Vec<u64> = {
            let mut r = SeededRng::new(42);
            (0..100).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SeededRng::new(42);
            (0..100).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut c = SeededRng::new(43);
        assert_ne!(a[0], c.next_u64());
    }

    #[test]
    fn known_first_value_pins_the_algorithm() {
        // SplitMix64 with seed 0 starts with 0xE220A8397B1DCDAF (reference implementation).
        assert_eq!(SeededRng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn between_stays_in_range_and_reaches_both_ends() {
        let mut r = SeededRng::new(7);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.between(2, 6);
            assert!((2..=6).contains(&v));
            seen[usize::try_from(v - 2).unwrap()] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.between(9, 3), 9);
        assert_eq!(r.index(0), 0);
    }

    #[test]
    fn forks_differ_by_stream() {
        let a = SeededRng::fork(1, 1).next_u64();
        let b = SeededRng::fork(1, 2).next_u64();
        assert_ne!(a, b);
        assert_eq!(a, SeededRng::fork(1, 1).next_u64());
    }
}
