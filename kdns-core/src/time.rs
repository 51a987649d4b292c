//! Time as the caller gives it.
//!
//! kdns-core never reads a clock. Drivers read a monotonic clock once per
//! batch and pass a [`Timestamp`] in; tests pass a virtual clock.

use core::fmt;
use core::ops::{Add, AddAssign};
use core::time::Duration;

/// A point on the caller's monotonic clock, in nanoseconds from an arbitrary
/// origin chosen by the caller (the driver's start, or zero in tests).
#[derive(Copy, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The origin of the clock.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `n` nanoseconds after the origin.
    pub const fn from_nanos(n: u64) -> Self {
        Timestamp(n)
    }

    /// A timestamp `ms` milliseconds after the origin.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms.saturating_mul(1_000_000))
    }

    /// A timestamp `s` seconds after the origin.
    pub const fn from_secs(s: u64) -> Self {
        Timestamp(s.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole seconds since the origin.
    pub const fn as_secs(self) -> u64 {
        self.0 / 1_000_000_000
    }

    /// Time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub const fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        let n = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(n))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        self.saturating_add(d)
    }
}

impl AddAssign<Duration> for Timestamp {
    fn add_assign(&mut self, d: Duration) {
        *self = self.saturating_add(d);
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t+{}.{:09}s", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(2);
        assert_eq!(t + Duration::from_millis(500), Timestamp::from_millis(2500));
        assert_eq!(t.saturating_since(Timestamp::from_secs(3)), Duration::ZERO);
        assert_eq!(Timestamp::from_nanos(u64::MAX) + Duration::from_secs(1), Timestamp::from_nanos(u64::MAX));
        assert_eq!(format!("{:?}", Timestamp::from_millis(1500)), "t+1.500000000s");
    }
}
