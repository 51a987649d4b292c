//! The one pseudo-random generator of kdns: xorshift64*, seeded by the
//! caller. Used for query IDs, source-port slots and 0x20 spellings (the
//! engine), and for the IDs of health-check probes. Not cryptographic: its
//! output only has to be unpredictable to an off-path spoofer that never
//! sees the seed, and cheap on the miss path (a `rand` crate generator
//! would pull in a dependency for three multiply-and-shift lines). Given
//! the same seed it gives the same sequence, so engine tests are
//! deterministic.

/// xorshift64* (Vigna): 64 bits of state, never zero.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value; zero is made odd).
    pub const fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The next 16 bits (the high ones, the best mixed): a DNS ID.
    #[inline]
    pub fn next_u16(&mut self) -> u16 {
        (self.next_u64() >> 48) as u16
    }

    /// The state itself, as a cheap random value for a caller that will
    /// [`Rng::stir`] after using it (the local records' picks on the hit
    /// path, where a full step per answer is not needed).
    #[inline]
    pub fn peek(&self) -> u64 {
        self.0
    }

    /// Moves the state on without drawing (after [`Rng::peek`]).
    #[inline]
    pub fn stir(&mut self) {
        self.0 = self.0.rotate_left(23).wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_sequence_and_never_stuck() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        let mut z = Rng::new(0);
        assert_ne!(z.next_u64(), 0);
        let ids: std::collections::HashSet<u16> = (0..1000).map(|_| z.next_u16()).collect();
        assert!(ids.len() > 950, "16-bit draws repeat too often: {}", ids.len());
    }
}
