//! The backend pool: backend selection, in-band health tracking and each
//! backend's retransmission timeout.
//!
//! A [`Pool`] holds up to [`MAX_BACKENDS`] resolvers. The engine asks it for
//! a backend with [`Pool::select`] and reports what happened to each query
//! ([`Pool::on_sent`], then exactly one of [`Pool::on_answer`],
//! [`Pool::on_timeout`] or [`Pool::on_cancel`]). From those reports alone the
//! pool decides which backends are [`BackendState::Up`]:
//!
//! * A slow name is not a dead backend. When a try times out, the engine
//!   first asks [`Pool::answered_since`]: a backend that answered anything
//!   after the try was sent is alive, the name is slow, and nothing is
//!   reported (the query keeps waiting). Only a *silent* timeout, one with
//!   no answer at all from that backend since the try left, is reported
//!   with [`Pool::on_timeout`].
//! * `down_after_timeouts` silent timeouts in a row, or more than
//!   `down_failure_ratio` of them among the last `window` outcomes, make a
//!   backend *suspect*: a probe (one real query, `id.server CH TXT`) is due
//!   at once. Any answer clears the suspicion; the probe timing out takes
//!   the backend down. A zone whose servers never answer therefore costs
//!   probes, not backends.
//! * A down backend gets no regular traffic. [`Pool::probe_due`] hands it
//!   out for a probe after `probe_initial`; each failed probe doubles the
//!   wait, up to `probe_max`. A successful probe makes the next one due at
//!   once, and `up_after_successes` good probes in a row bring the backend
//!   back up.
//! * Each backend's try timeout ([`Pool::try_timeout`]) follows its answer
//!   round-trip times as TCP's and Unbound's RTO do (RFC 6298: smoothed RTT
//!   plus four times its variation), within `try_timeout_min` and
//!   `try_timeout_max`; before the first answer it is `try_timeout_max`.
//! * Queries still outstanding when a backend changes state are *stale*:
//!   their outcomes are counted in the stats but do not drive the health
//!   logic.
//!
//! All decisions read plain fields owned by the worker; the atomics in
//! [`BackendStats`] are written alongside for other threads to read through
//! [`Pool::shared_stats`]. Nothing allocates after [`Pool::new`].

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;
use std::sync::Arc;

pub use super::{
    BackendId, BackendSpec, BackendState, BackendStats, HealthConfig, PoolError, Selection, Transition, TriedSet, MAX_BACKENDS,
};
use crate::time::Timestamp;

mod health;

/// Probe progress of a down or suspect backend.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Probe {
    /// No probe out; one is due at `Slot::next_probe`.
    Idle,
    /// Returned by `probe_due`, waiting for the engine's `on_sent`.
    Dispensed,
    /// Sent at `sent_at`, waiting for its answer or timeout.
    InFlight { sent_at: Timestamp },
}

/// The worker-owned state of one backend (plain fields, read by selection).
#[derive(Clone, Debug)]
struct Slot {
    weight: i64,
    /// Smooth weighted round-robin credit.
    current: i64,
    outstanding: u32,
    /// Outstanding queries whose outcome must not drive health decisions.
    stale: u32,
    state: BackendState,
    /// Time of the last state change (start of the current epoch).
    since: Timestamp,
    /// Silent timeouts since the last answer.
    timeouts_in_row: u32,
    /// Recent outcomes, newest in bit 0; 1 = silent timeout.
    window_bits: u64,
    window_filled: u32,
    /// Up, but silent for too long: a probe decides.
    suspect: bool,
    good_probes: u32,
    probe: Probe,
    /// Down: when the next probe is due. Up: the earliest time a suspect
    /// probe may be sent (one per `probe_initial`).
    next_probe: Timestamp,
    backoff: Duration,
    /// When the last answer of any kind arrived.
    last_answer: Option<Timestamp>,
    /// Smoothed RTT and its mean deviation in microseconds (RFC 6298);
    /// `srtt_us == 0`: no sample yet.
    srtt_us: u64,
    rttvar_us: u64,
}

/// The backend pool (see the module docs). Owned by one worker.
#[derive(Debug)]
pub struct Pool {
    slots: Vec<Slot>,
    addrs: Vec<SocketAddr>,
    /// `addr_key` of each backend, scanned by `find`.
    keys: Vec<u64>,
    /// Bit `i` set while backend `i` is up.
    up: u64,
    cfg: HealthConfig,
    window_mask: u64,
    /// A full window with more failures than this goes down.
    ratio_limit: u32,
    selection: Selection,
    /// Where least-outstanding starts its scan (round-robin tie break).
    cursor: usize,
    stats: Arc<[BackendStats]>,
}

/// Address comparison for answer sources: IPv4-mapped IPv6 equals IPv4,
/// flow info is ignored and a zero scope id matches any.
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    let scope = |s: SocketAddr| match s {
        SocketAddr::V6(v6) => v6.scope_id(),
        SocketAddr::V4(_) => 0,
    };
    let (sa, sb) = (scope(a), scope(b));
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical() && (sa == sb || sa == 0 || sb == 0)
}

/// A cheap key equal for all addresses `same_endpoint` considers equal.
fn addr_key(a: SocketAddr) -> u64 {
    let ip = match a.ip().to_canonical() {
        IpAddr::V4(v4) => u64::from(u32::from(v4)),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            (x as u64) ^ ((x >> 64) as u64).rotate_left(17)
        }
    };
    ip ^ (u64::from(a.port()) << 48)
}

impl Pool {
    /// A pool of `specs`, all up, in the given order ([`BackendId`]`(i)` is
    /// `specs[i]`). An empty pool is allowed; it never selects anything.
    pub fn new(specs: &[BackendSpec], cfg: HealthConfig, selection: Selection) -> Result<Pool, PoolError> {
        if specs.len() > MAX_BACKENDS {
            return Err(PoolError::TooManyBackends { count: specs.len() });
        }
        for (i, s) in specs.iter().enumerate() {
            if specs[..i].iter().any(|o| same_endpoint(o.addr, s.addr)) {
                return Err(PoolError::DuplicateAddress(s.addr));
            }
        }
        let mut cfg = cfg;
        cfg.window = cfg.window.min(64);
        cfg.up_after_successes = cfg.up_after_successes.max(1);
        cfg.probe_max = cfg.probe_max.max(cfg.probe_initial);
        cfg.try_timeout_min = cfg.try_timeout_min.max(Duration::from_millis(1));
        cfg.try_timeout_max = cfg.try_timeout_max.max(cfg.try_timeout_min);
        let window_mask = 1u64.checked_shl(cfg.window).map_or(u64::MAX, |b| b - 1);
        let r = cfg.down_failure_ratio;
        let ratio_limit = if cfg.window == 0 || r.is_nan() || r >= 1.0 {
            u32::MAX
        } else {
            // The epsilon keeps 0.7 * 10 at 7 despite f32 rounding.
            (f64::from(r.max(0.0)) * f64::from(cfg.window) + 1e-6).floor() as u32
        };
        let slots = specs
            .iter()
            .map(|s| Slot {
                weight: i64::from(s.weight.max(1)),
                current: 0,
                outstanding: 0,
                stale: 0,
                state: BackendState::Up,
                since: Timestamp::ZERO,
                timeouts_in_row: 0,
                window_bits: 0,
                window_filled: 0,
                suspect: false,
                good_probes: 0,
                probe: Probe::Idle,
                next_probe: Timestamp::ZERO,
                backoff: cfg.probe_initial,
                last_answer: None,
                srtt_us: 0,
                rttvar_us: 0,
            })
            .collect();
        let all = 1u64.checked_shl(specs.len() as u32).map_or(u64::MAX, |b| b - 1);
        let max_us = u64::try_from(cfg.try_timeout_max.as_micros()).unwrap_or(u64::MAX);
        let stats: Arc<[BackendStats]> = specs.iter().map(|s| BackendStats::new(s.addr)).collect();
        for st in stats.iter() {
            st.try_timeout_us.set(max_us);
        }
        Ok(Pool {
            slots,
            addrs: specs.iter().map(|s| s.addr).collect(),
            keys: specs.iter().map(|s| addr_key(s.addr)).collect(),
            up: all,
            cfg,
            window_mask,
            ratio_limit,
            selection,
            cursor: 0,
            stats,
        })
    }

    /// The health configuration in force (after clamping, see
    /// [`HealthConfig`]).
    pub fn config(&self) -> &HealthConfig {
        &self.cfg
    }

    /// Number of backends.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the pool has no backends.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The ids of all backends.
    pub fn ids(&self) -> impl Iterator<Item = BackendId> {
        (0..self.slots.len() as u16).map(BackendId)
    }

    /// The address of backend `id`. Panics if `id` is not from this pool.
    pub fn addr(&self, id: BackendId) -> SocketAddr {
        self.addrs[id.index()]
    }

    /// The backend at `addr` (IPv4-mapped IPv6 sources match IPv4 backends),
    /// if any. A scan of one `u64` per backend.
    pub fn find(&self, addr: SocketAddr) -> Option<BackendId> {
        let key = addr_key(addr);
        self.keys.iter().zip(&self.addrs).position(|(&k, &a)| k == key && same_endpoint(a, addr)).map(|i| BackendId(i as u16))
    }

    /// Whether backend `id` is up. Panics if `id` is not from this pool.
    pub fn state(&self, id: BackendId) -> BackendState {
        self.slots[id.index()].state
    }

    /// Number of backends that are up.
    pub fn up_count(&self) -> usize {
        self.up.count_ones() as usize
    }

    /// Queries in flight to backend `id`. Panics if `id` is not from this
    /// pool.
    pub fn outstanding(&self, id: BackendId) -> u32 {
        self.slots[id.index()].outstanding
    }

    /// When backend `id` is next due a probe: `None` while it is up and not
    /// suspect, or a probe to it is out. Panics if `id` is not from this
    /// pool.
    pub fn next_probe(&self, id: BackendId) -> Option<Timestamp> {
        let s = &self.slots[id.index()];
        s.wants_probe().then_some(s.next_probe)
    }

    /// Whether backend `id` is up but suspect (silent; a probe decides).
    pub fn is_suspect(&self, id: BackendId) -> bool {
        self.slots[id.index()].suspect
    }

    /// Whether backend `id` answered anything (a query or a probe) at or
    /// after `t`: if so, a try sent to it at `t` that timed out met a slow
    /// name, not a dead backend.
    pub fn answered_since(&self, id: BackendId, t: Timestamp) -> bool {
        self.slots.get(id.index()).and_then(|s| s.last_answer).is_some_and(|a| a >= t)
    }

    /// Panic mode: when no backend is up, any backend (round-robin),
    /// skipping `tried` while others remain. A pool that has marked every
    /// backend down may be wrong (an overload burst of timeouts can take
    /// the last healthy one down); asking anyway beats failing every query
    /// at once. `None` only for an empty pool.
    pub fn select_any(&mut self, tried: TriedSet) -> Option<BackendId> {
        let n = self.slots.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor % n;
        let pick = (0..n).map(|k| (start + k) % n).find(|&i| !tried.contains(BackendId(i as u16))).unwrap_or(start);
        self.cursor = (pick + 1) % n;
        Some(BackendId(pick as u16))
    }

    /// Chooses an up backend not in `tried` for a query, or `None` if there
    /// is none. `now` is unused today (selection does not depend on time).
    pub fn select(&mut self, now: Timestamp, tried: TriedSet) -> Option<BackendId> {
        let _ = now;
        let eligible = self.up & !tried.0;
        if eligible == 0 {
            return None;
        }
        if eligible & (eligible - 1) == 0 {
            return Some(BackendId(eligible.trailing_zeros() as u16));
        }
        let i = match self.selection {
            Selection::RoundRobin => self.pick_weighted(eligible),
            Selection::LeastOutstanding => self.pick_least(eligible),
        };
        Some(BackendId(i as u16))
    }

    fn pick_weighted(&mut self, mut eligible: u64) -> usize {
        let (mut total, mut best, mut best_cur) = (0, 0, i64::MIN);
        while eligible != 0 {
            let i = eligible.trailing_zeros() as usize;
            eligible &= eligible - 1;
            let s = &mut self.slots[i];
            s.current += s.weight;
            total += s.weight;
            if s.current > best_cur {
                (best, best_cur) = (i, s.current);
            }
        }
        self.slots[best].current -= total;
        best
    }

    fn pick_least(&mut self, eligible: u64) -> usize {
        // Scan from the cursor upwards, then wrap, so ties go round-robin.
        let from_cursor = eligible & (u64::MAX << self.cursor);
        let (mut best, mut best_load, mut best_w) = (usize::MAX, 0u64, 1u64);
        for mut bits in [from_cursor, eligible & !from_cursor] {
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let s = &self.slots[i];
                let (load, w) = (u64::from(s.outstanding), s.weight as u64);
                // load / w < best_load / best_w, without division.
                if best == usize::MAX || load * best_w < best_load * w {
                    (best, best_load, best_w) = (i, load, w);
                }
            }
        }
        self.cursor = (best + 1) % self.slots.len();
        best
    }

    /// A down backend whose probe is due at `now` (the most overdue one), for
    /// the engine to send one real query to as a probe. The engine then calls
    /// [`Pool::on_sent`] for it (or [`Pool::on_cancel`] if it could not send);
    /// the backend is not returned again until the probe's outcome is known.
    pub fn probe_due(&mut self, now: Timestamp) -> Option<BackendId> {
        let mut best: Option<usize> = None;
        for (i, s) in self.slots.iter().enumerate() {
            if s.wants_probe() && s.next_probe <= now && best.is_none_or(|b| s.next_probe < self.slots[b].next_probe) {
                best = Some(i);
            }
        }
        let i = best?;
        self.slots[i].probe = Probe::Dispensed;
        self.stats[i].probes.inc();
        Some(BackendId(i as u16))
    }

    /// The earliest time a probe becomes due; `None` if no backend is down
    /// or suspect, or each of them has a probe out.
    pub fn next_probe_at(&self) -> Option<Timestamp> {
        self.slots.iter().filter(|s| s.wants_probe()).map(|s| s.next_probe).min()
    }

    /// Counters of backend `id`. Panics if `id` is not from this pool.
    pub fn stats(&self, id: BackendId) -> &BackendStats {
        &self.stats[id.index()]
    }

    /// All backends' counters, indexed by [`BackendId::index`], for another
    /// thread to read while the worker runs.
    pub fn shared_stats(&self) -> Arc<[BackendStats]> {
        Arc::clone(&self.stats)
    }
}

#[cfg(test)]
mod tests;
