//! Queries per second from a ring of once-a-second samples of the total
//! query count.

use std::collections::VecDeque;
use std::time::Instant;

/// Samples kept: one minute at one a second.
pub(super) const SAMPLES: usize = 60;

/// A ring of `(when, total queries)` samples.
#[derive(Debug)]
pub(super) struct Rate {
    ring: VecDeque<(Instant, u64)>,
}

impl Rate {
    pub(super) fn new() -> Self {
        Rate { ring: VecDeque::with_capacity(SAMPLES) }
    }

    /// Records a sample, dropping the oldest when full.
    pub(super) fn push(&mut self, at: Instant, total: u64) {
        if self.ring.len() == SAMPLES {
            self.ring.pop_front();
        }
        self.ring.push_back((at, total));
    }

    /// Queries per second between the newest sample and the one `back`
    /// samples before it (or the oldest, if fewer are held). With a single
    /// sample, the rate between it and `(now, total_now)`. Zero when there is
    /// no interval to measure.
    pub(super) fn qps(&self, back: usize, now: Instant, total_now: u64) -> f64 {
        let (from, to) = match self.ring.len() {
            0 => return 0.0,
            1 => (self.ring[0], (now, total_now)),
            n => (self.ring[n - 1 - back.clamp(1, n - 1)], self.ring[n - 1]),
        };
        let secs = to.0.saturating_duration_since(from.0).as_secs_f64();
        if secs < 0.001 {
            return 0.0;
        }
        let q = to.1.wrapping_sub(from.1) as f64 / secs;
        (q * 10.0).round() / 10.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rates_over_one_and_ten_samples() {
        let t0 = Instant::now();
        let mut r = Rate::new();
        assert_eq!(r.qps(1, t0, 0), 0.0);
        r.push(t0, 1000);
        // One sample: measured against the live reading.
        assert_eq!(r.qps(1, t0 + Duration::from_millis(500), 1050), 100.0);
        // 100 q/s for 10 s, then 1000 q/s for the last second.
        for i in 1..=10u64 {
            r.push(t0 + Duration::from_secs(i), 1000 + 100 * i);
        }
        r.push(t0 + Duration::from_secs(11), 2000 + 1000);
        assert_eq!(r.qps(1, t0, 0), 1000.0);
        assert_eq!(r.qps(10, t0, 0), (3000.0 - 1100.0) / 10.0);
        // Asking further back than held uses the oldest sample.
        assert_eq!(r.qps(100, t0, 0), 181.8); // 2000 / 11, rounded to 0.1
    }

    #[test]
    fn ring_keeps_sixty_samples() {
        let t0 = Instant::now();
        let mut r = Rate::new();
        for i in 0..200u64 {
            r.push(t0 + Duration::from_secs(i), i * 10);
        }
        assert_eq!(r.ring.len(), SAMPLES);
        assert_eq!(r.qps(1000, t0, 0), 10.0);
    }
}
