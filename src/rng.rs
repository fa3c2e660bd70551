//! SplitMix64: a small, well-distributed, seedable generator whose sequence is
//! the same on every platform (sampling and bootstrap resampling use it).

/// The generator's state.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_f64() * n as f64) as usize % n
    }

    /// An input a property test should survive: 0, a negative number, NaN,
    /// +∞, or a positive number anywhere from 10⁻³ to 10⁹.
    pub fn wild_f64(&mut self) -> f64 {
        match self.below(6) {
            0 => 0.0,
            1 => -self.next_f64() * 1e6,
            2 => f64::NAN,
            3 => f64::INFINITY,
            _ => self.next_f64() * 10f64.powi(self.below(12) as i32 - 3),
        }
    }
}
