//! Upstream resolvers: the backend pool and (later) the table of in-flight
//! queries.
//!
//! kdns forwards cache misses to a small pool of recursive resolvers
//! (Unbound). There is no separate health checker: the [`Pool`] learns each
//! backend's health from the traffic itself (see [`pool`]). This module holds
//! the pool's vocabulary: ids, configuration, states and per-backend
//! counters.
//!
//! Everything here is sans-IO: the caller passes the time in and performs
//! the sends; the pool only decides and counts.

pub mod pending;
pub mod pool;

pub use pool::Pool;

use core::fmt;
use core::net::SocketAddr;
use core::time::Duration;

use crate::stats::{Counter, Gauge};

/// The largest pool [`Pool::new`] accepts: one bit per backend in a
/// [`TriedSet`] and in the pool's up-mask.
pub const MAX_BACKENDS: usize = 64;

/// Number of buckets in [`BackendStats::rtt_buckets`].
pub const RTT_BUCKETS: usize = 19;

/// Upper bound of the first RTT bucket is `1 << RTT_BASE_LOG2` microseconds.
const RTT_BASE_LOG2: u32 = 6;

/// A backend's index in its [`Pool`] (and in [`Pool::shared_stats`]).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct BackendId(pub u16);

impl BackendId {
    /// The index as a `usize`.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// Configuration of one backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendSpec {
    /// Where the resolver listens.
    pub addr: SocketAddr,
    /// Relative share of traffic (round-robin and least-outstanding); `0`
    /// is treated as `1`.
    pub weight: u16,
}

impl BackendSpec {
    /// A backend at `addr` with weight 1.
    pub const fn new(addr: SocketAddr) -> Self {
        BackendSpec { addr, weight: 1 }
    }

    /// The same backend with weight `weight`.
    pub const fn with_weight(self, weight: u16) -> Self {
        BackendSpec { weight, ..self }
    }
}

impl From<SocketAddr> for BackendSpec {
    fn from(addr: SocketAddr) -> Self {
        BackendSpec::new(addr)
    }
}

/// How [`Pool::select`] spreads queries over the backends that are up.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Smooth weighted round-robin (nginx style): with weights 3:1 the
    /// sequence is `a a b a a a b a ...`, never bursts of one backend.
    #[default]
    RoundRobin,
    /// The backend with the fewest outstanding queries relative to its
    /// weight; ties are broken round-robin.
    LeastOutstanding,
}

/// Thresholds of the in-band health tracking and the try timeouts (see
/// [`pool`]).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct HealthConfig {
    /// This many silent timeouts in a row (no answer at all from the
    /// backend since the try was sent) make a backend suspect, and a probe
    /// then decides (`0` disables the rule). Default 3.
    pub down_after_timeouts: u32,
    /// Number of recent outcomes (answers and silent timeouts) the failure
    /// ratio is computed over, at most 64 (larger values are clamped; `0`
    /// disables the rule). Default 20.
    pub window: u32,
    /// A full window with a share of silent timeouts strictly above this
    /// ratio makes a backend suspect (`>= 1` or NaN disables the rule).
    /// Default 0.5.
    pub down_failure_ratio: f32,
    /// This many good probe answers in a row bring a down backend back up
    /// (`0` is treated as `1`). Default 2.
    pub up_after_successes: u32,
    /// Wait before the first probe after a backend goes down. Default 500 ms.
    pub probe_initial: Duration,
    /// Cap of the probe backoff, which doubles with each failed probe
    /// (raised to `probe_initial` if smaller). Default 8 s.
    pub probe_max: Duration,
    /// The shortest try timeout, however fast a backend answers (at least
    /// 1 ms). Default 50 ms.
    pub try_timeout_min: Duration,
    /// The longest try timeout, and the timeout before a backend's first
    /// answer. Default 800 ms.
    pub try_timeout_max: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            down_after_timeouts: 3,
            window: 20,
            down_failure_ratio: 0.5,
            up_after_successes: 2,
            probe_initial: Duration::from_millis(500),
            probe_max: Duration::from_secs(8),
            try_timeout_min: Duration::from_millis(50),
            try_timeout_max: Duration::from_millis(800),
        }
    }
}

/// Whether a backend takes regular traffic.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Eligible for [`Pool::select`].
    Up,
    /// Out of rotation; reached only by probes ([`Pool::probe_due`]).
    Down,
}

/// A state change reported by [`Pool::on_answer`] / [`Pool::on_timeout`].
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// The backend was up and is now down.
    WentDown,
    /// The backend was down and is now up.
    CameUp,
}

/// A set of backends a query was already sent to (one bit per [`BackendId`];
/// ids of 64 and above are never members).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TriedSet(u64);

impl TriedSet {
    /// The empty set.
    pub const EMPTY: TriedSet = TriedSet(0);

    /// The empty set.
    pub const fn new() -> Self {
        TriedSet(0)
    }

    /// Adds `id` (ignored if `id.0 >= 64`).
    pub fn insert(&mut self, id: BackendId) {
        *self = self.with(id);
    }

    /// The set plus `id` (unchanged if `id.0 >= 64`).
    #[must_use]
    pub const fn with(self, id: BackendId) -> Self {
        match 1u64.checked_shl(id.0 as u32) {
            Some(bit) => TriedSet(self.0 | bit),
            None => self,
        }
    }

    /// Whether `id` is in the set.
    pub const fn contains(self, id: BackendId) -> bool {
        match 1u64.checked_shl(id.0 as u32) {
            Some(bit) => self.0 & bit != 0,
            None => false,
        }
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Number of members.
    pub const fn len(self) -> usize {
        self.0.count_ones() as usize
    }
}

/// Why [`Pool::new`] rejected a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolError {
    /// More than [`MAX_BACKENDS`] backends were given.
    TooManyBackends {
        /// How many were given.
        count: usize,
    },
    /// Two backends share an address, so answers could not be attributed.
    DuplicateAddress(SocketAddr),
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolError::TooManyBackends { count } => {
                write!(f, "{count} backends given, at most {MAX_BACKENDS} supported")
            }
            PoolError::DuplicateAddress(a) => write!(f, "backend {a} listed twice"),
        }
    }
}

impl std::error::Error for PoolError {}

/// Counters of one backend, written by the worker that owns the [`Pool`] and
/// readable from any thread through [`Pool::shared_stats`].
#[derive(Debug)]
pub struct BackendStats {
    /// The backend's address.
    pub addr: SocketAddr,
    /// Queries sent (probes included).
    pub sent: Counter,
    /// Answers received.
    pub answers: Counter,
    /// Tries that timed out with no answer at all from the backend since
    /// they were sent (silent timeouts; they drive the health logic).
    pub timeouts: Counter,
    /// Tries that outlived their timeout while the backend kept answering
    /// others: slow names, not counted against the backend.
    pub slow: Counter,
    /// Answers to tries already timed out or re-sent elsewhere.
    pub late_answers: Counter,
    /// Times the backend became suspect (silent timeouts; a probe decided).
    pub suspected: Counter,
    /// Queries dropped without an outcome ([`Pool::on_cancel`]).
    pub cancelled: Counter,
    /// Outcomes reported with nothing outstanding (an engine bug; ignored).
    pub spurious: Counter,
    /// Probes handed out by [`Pool::probe_due`].
    pub probes: Counter,
    /// Up-to-down transitions.
    pub went_down: Counter,
    /// Down-to-up transitions.
    pub came_up: Counter,
    /// Queries in flight now.
    pub outstanding: Gauge,
    /// 1 while the backend is up, 0 while down.
    pub state_up: Gauge,
    /// The try timeout now in force, in microseconds (see
    /// [`Pool::try_timeout`]).
    pub try_timeout_us: Gauge,
    /// Sum of answer RTTs in microseconds.
    pub rtt_sum_us: Counter,
    /// Number of RTTs in `rtt_sum_us`.
    pub rtt_count: Counter,
    /// RTT histogram: bucket 0 counts RTTs under 64 µs, bucket `i` those in
    /// `[64 << (i-1), 64 << i)` µs, the last one everything from ~8.4 s up.
    pub rtt_buckets: [Counter; RTT_BUCKETS],
}

impl BackendStats {
    fn new(addr: SocketAddr) -> Self {
        let state_up = Gauge::new();
        state_up.set(1);
        BackendStats {
            addr,
            sent: Counter::new(),
            answers: Counter::new(),
            timeouts: Counter::new(),
            slow: Counter::new(),
            late_answers: Counter::new(),
            suspected: Counter::new(),
            cancelled: Counter::new(),
            spurious: Counter::new(),
            probes: Counter::new(),
            went_down: Counter::new(),
            came_up: Counter::new(),
            outstanding: Gauge::new(),
            state_up,
            try_timeout_us: Gauge::new(),
            rtt_sum_us: Counter::new(),
            rtt_count: Counter::new(),
            rtt_buckets: core::array::from_fn(|_| Counter::new()),
        }
    }

    /// The histogram bucket an RTT falls in.
    pub fn bucket_of(rtt: Duration) -> usize {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let log2 = 63 - (us | 1).leading_zeros();
        (log2 + 1).saturating_sub(RTT_BASE_LOG2).min(RTT_BUCKETS as u32 - 1) as usize
    }

    /// Lower and upper bound (exclusive) of bucket `i` in microseconds; the
    /// last bucket has no upper bound.
    pub fn bucket_bounds_us(i: usize) -> (u64, Option<u64>) {
        let upper = 1u64 << (RTT_BASE_LOG2 as usize + i.min(RTT_BUCKETS - 1));
        let lower = if i == 0 { 0 } else { upper / 2 };
        (lower, (i < RTT_BUCKETS - 1).then_some(upper))
    }

    fn record_rtt(&self, rtt: Duration) {
        let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        self.rtt_sum_us.add(us);
        self.rtt_count.inc();
        self.rtt_buckets[Self::bucket_of(rtt)].inc();
    }

    /// Mean answer RTT, `None` before the first answer.
    pub fn mean_rtt(&self) -> Option<Duration> {
        let n = self.rtt_count.get();
        (n > 0).then(|| Duration::from_micros(self.rtt_sum_us.get() / n))
    }

    /// Estimate of the `q` quantile (`0.0..=1.0`, e.g. `0.99`) of answer
    /// RTTs, interpolated within a histogram bucket; zero before the first
    /// answer. RTTs in the last bucket are reported as its lower bound.
    pub fn percentile(&self, q: f64) -> Duration {
        let counts: [u64; RTT_BUCKETS] = core::array::from_fn(|i| self.rtt_buckets[i].get());
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut below = 0;
        for (i, &c) in counts.iter().enumerate() {
            if c > 0 && below + c >= rank {
                let (lo, hi) = Self::bucket_bounds_us(i);
                let Some(hi) = hi else {
                    return Duration::from_micros(lo);
                };
                let frac = (rank - below) as f64 / c as f64;
                let est = lo as f64 + (hi - lo) as f64 * frac;
                return Duration::from_nanos((est * 1000.0) as u64);
            }
            below += c;
        }
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tried_set_holds_ids_below_64() {
        let mut t = TriedSet::new();
        assert!(t.is_empty());
        t.insert(BackendId(0));
        t.insert(BackendId(63));
        t.insert(BackendId(64)); // beyond the limit: ignored
        assert!(t.contains(BackendId(0)) && t.contains(BackendId(63)));
        assert!(!t.contains(BackendId(1)) && !t.contains(BackendId(64)));
        assert_eq!(t.len(), 2);
        assert_eq!(TriedSet::EMPTY.with(BackendId(5)).len(), 1);
    }

    #[test]
    fn rtt_buckets_are_log2_microseconds() {
        let b = |us| BackendStats::bucket_of(Duration::from_micros(us));
        assert_eq!((b(0), b(63), b(64), b(127), b(128)), (0, 0, 1, 1, 2));
        assert_eq!(b(1_000), 4); // [512, 1024) µs
        assert_eq!(b(8_000_000), RTT_BUCKETS - 2);
        assert_eq!(b(9_000_000), RTT_BUCKETS - 1);
        assert_eq!(BackendStats::bucket_of(Duration::MAX), RTT_BUCKETS - 1);
        assert_eq!(BackendStats::bucket_bounds_us(4), (512, Some(1024)));
        assert_eq!(BackendStats::bucket_bounds_us(RTT_BUCKETS - 1).1, None);
    }

    #[test]
    fn percentile_estimates_from_the_histogram() {
        let s = BackendStats::new("127.0.0.1:53".parse().unwrap());
        assert_eq!(s.percentile(0.5), Duration::ZERO);
        assert_eq!(s.mean_rtt(), None);
        for _ in 0..90 {
            s.record_rtt(Duration::from_micros(300)); // [256, 512)
        }
        for _ in 0..10 {
            s.record_rtt(Duration::from_millis(20)); // [16384, 32768) µs
        }
        let p50 = s.percentile(0.5);
        assert!(p50 >= Duration::from_micros(256) && p50 < Duration::from_micros(512));
        let p99 = s.percentile(0.99);
        assert!(p99 >= Duration::from_micros(16_384) && p99 < Duration::from_micros(32_768));
        assert!(s.percentile(0.0) <= p50 && p99 <= s.percentile(1.0));
        assert_eq!(s.percentile(f64::NAN), p50);
        assert_eq!(s.mean_rtt(), Some(Duration::from_micros(2_270)));
        s.record_rtt(Duration::from_secs(60));
        assert_eq!(s.percentile(1.0), Duration::from_micros(64 << 17));
    }

    #[test]
    fn errors_read_well() {
        let e = PoolError::TooManyBackends { count: 70 };
        assert_eq!(e.to_string(), "70 backends given, at most 64 supported");
    }
}
