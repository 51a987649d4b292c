//! Fair shares: what one client may hold of a worker's pending table and
//! how fast it may send misses upstream.
//!
//! A client is an address, or the /N prefix it is in (one per family,
//! configurable: containers behind one NAT, or a /64 per host in IPv6).
//! The table is fixed-size and set-associative (four ways per set, the set
//! chosen by a seeded hash of the prefix), so a flood of source addresses
//! costs no allocation and cannot grow it: a new client takes the way of
//! the least recently seen client with nothing pending. When all four ways
//! of a set hold queries in flight, the newcomer is counted against one
//! shared overflow entry, which has the same limits. Only misses consult
//! the table; cache hits and local answers never touch it.

use core::net::IpAddr;

use crate::time::Timestamp;

/// What a client over its share gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverLimit {
    /// A SERVFAIL at once (the client's resolver may try another server).
    #[default]
    Servfail,
    /// A REFUSED at once.
    Refused,
    /// Nothing (counted as a drop).
    Drop,
}

impl OverLimit {
    /// Every action, in declaration order.
    pub const ALL: [OverLimit; 3] = [OverLimit::Servfail, OverLimit::Refused, OverLimit::Drop];

    /// Its name in the configuration and the stats ("servfail", ...).
    pub const fn name(self) -> &'static str {
        match self {
            OverLimit::Servfail => "servfail",
            OverLimit::Refused => "refused",
            OverLimit::Drop => "drop",
        }
    }
}

/// Per-client limits on cache misses. Every field has a default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientLimits {
    /// IPv4 clients sharing this many leading bits are one client (0..=32).
    /// Default 32: each address.
    pub prefix_v4: u8,
    /// IPv6 clients sharing this many leading bits are one client
    /// (0..=128). Default 64.
    pub prefix_v6: u8,
    /// Most queries one client may have waiting for a backend (in-flight
    /// queries and queries waiting on an identical one); `0` turns the
    /// share off. Default 256 (a sixteenth of the default 4096 slots: a
    /// flood of never-answered names then holds a small part of a
    /// backend's own request list, e.g. Unbound's 1024 per thread).
    pub max_pending: u32,
    /// Misses one client may send upstream per second, sustained; `0`
    /// turns the rate limit off. Default 5000.
    pub miss_rate: u32,
    /// Misses one client may send upstream in a burst. Default 10000.
    pub miss_burst: u32,
    /// What a client over its share gets.
    pub over_limit: OverLimit,
    /// Clients tracked per worker (rounded up to a multiple of 4).
    /// Default 4096.
    pub table_size: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            prefix_v4: 32,
            prefix_v6: 64,
            max_pending: 256,
            miss_rate: 5000,
            miss_burst: 10000,
            over_limit: OverLimit::Servfail,
            table_size: 4096,
        }
    }
}

const WAYS: usize = 4;

/// The overflow entry's index.
pub(crate) const OVERFLOW: u32 = u32::MAX - 1;

/// No entry (queries of no client: refreshes and probes).
pub(crate) const NO_CLIENT: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// 0 = empty, else 4 or 6.
    family: u8,
    /// The prefix (the address masked).
    key: u128,
    pending: u32,
    /// Tokens in thousandths.
    tokens_milli: u64,
    refilled: Timestamp,
    seen: Timestamp,
}

/// Why a query was refused its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The client holds its whole pending share.
    Pending,
    /// The client spent its miss rate.
    Rate,
}

/// The per-worker client table.
#[derive(Debug)]
pub(crate) struct Clients {
    cfg: ClientLimits,
    entries: Vec<Entry>,
    overflow: Entry,
    sets: usize,
    seed: u64,
    mask_v4: u32,
    mask_v6: u128,
    /// Times a client had to share the overflow entry.
    pub overflows: u64,
}

impl Clients {
    pub(crate) fn new(cfg: ClientLimits, seed: u64) -> Clients {
        let sets = cfg.table_size.div_ceil(WAYS).max(1).next_power_of_two();
        let p4 = u32::from(cfg.prefix_v4.min(32));
        let p6 = u32::from(cfg.prefix_v6.min(128));
        Clients {
            cfg,
            entries: vec![Entry::default(); sets * WAYS],
            overflow: Entry::default(),
            sets,
            seed: seed | 1,
            mask_v4: u32::MAX.checked_shl(32 - p4).unwrap_or(0),
            mask_v6: u128::MAX.checked_shl(128 - p6).unwrap_or(0),
            overflows: 0,
        }
    }

    /// Whether any limit is on (else misses skip the table).
    pub(crate) fn enabled(&self) -> bool {
        self.cfg.max_pending > 0 || self.cfg.miss_rate > 0
    }

    fn key(&self, ip: IpAddr) -> (u8, u128) {
        match ip.to_canonical() {
            IpAddr::V4(a) => (4, u128::from(u32::from(a) & self.mask_v4)),
            IpAddr::V6(a) => (6, u128::from(a) & self.mask_v6),
        }
    }

    fn entry(&mut self, i: u32) -> &mut Entry {
        if i == OVERFLOW {
            &mut self.overflow
        } else {
            &mut self.entries[i as usize]
        }
    }

    /// Finds or makes `ip`'s entry (the overflow entry when its set is
    /// busy).
    fn slot(&mut self, ip: IpAddr, now: Timestamp) -> u32 {
        let (family, key) = self.key(ip);
        let h = ((key as u64) ^ ((key >> 64) as u64) ^ u64::from(family)).wrapping_mul(self.seed);
        let set = ((h >> 32) as usize) & (self.sets - 1);
        let base = set * WAYS;
        let ways = &self.entries[base..base + WAYS];
        if let Some(w) = ways.iter().position(|e| e.family == family && e.key == key) {
            return (base + w) as u32;
        }
        let victim = ways.iter().enumerate().filter(|(_, e)| e.pending == 0).min_by_key(|(_, e)| (e.family != 0, e.seen)).map(|(w, _)| w);
        let Some(w) = victim else {
            self.overflows += 1;
            return OVERFLOW;
        };
        let burst = u64::from(self.cfg.miss_burst.max(1)) * 1000;
        self.entries[base + w] = Entry { family, key, pending: 0, tokens_milli: burst, refilled: now, seen: now };
        (base + w) as u32
    }

    /// Admits a miss of `ip` at `now` that will hold one pending slot,
    /// taking a token if it goes upstream (`upstream`; a query that waits
    /// on an identical one in flight does not). The entry to release later
    /// with [`Clients::release`], or why not.
    pub(crate) fn admit(&mut self, ip: IpAddr, now: Timestamp, upstream: bool) -> Result<u32, Refusal> {
        let (max_pending, rate) = (self.cfg.max_pending, self.cfg.miss_rate);
        let burst = u64::from(self.cfg.miss_burst.max(1)) * 1000;
        let i = self.slot(ip, now);
        let e = self.entry(i);
        e.seen = now;
        if max_pending > 0 && e.pending >= max_pending {
            return Err(Refusal::Pending);
        }
        if rate > 0 && upstream {
            let ns = now.as_nanos().saturating_sub(e.refilled.as_nanos());
            // rate per second = rate / 1e6 thousandths per nanosecond.
            let add = u64::try_from(u128::from(ns) * u128::from(rate) / 1_000_000).unwrap_or(u64::MAX);
            e.tokens_milli = e.tokens_milli.saturating_add(add).min(burst);
            e.refilled = now;
            if e.tokens_milli < 1000 {
                return Err(Refusal::Rate);
            }
            e.tokens_milli -= 1000;
        }
        e.pending += 1;
        Ok(i)
    }

    /// A query admitted for entry `i` left the pending table.
    pub(crate) fn release(&mut self, i: u32) {
        if i == NO_CLIENT {
            return;
        }
        let e = self.entry(i);
        e.pending = e.pending.saturating_sub(1);
    }

    /// Queries pending for `ip`'s entry (tests and stats).
    #[cfg(test)]
    pub(crate) fn pending_of(&mut self, ip: IpAddr, now: Timestamp) -> u32 {
        let i = self.slot(ip, now);
        self.entry(i).pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn ms(x: u64) -> Timestamp {
        Timestamp::from_millis(x)
    }

    #[test]
    fn pending_share_is_per_client_and_freed_on_release() {
        let mut c = Clients::new(ClientLimits { max_pending: 2, miss_rate: 0, ..ClientLimits::default() }, 7);
        let a = c.admit(ip("10.0.0.1"), ms(0), true).unwrap();
        let b = c.admit(ip("10.0.0.1"), ms(0), true).unwrap();
        assert_eq!(c.admit(ip("10.0.0.1"), ms(0), true), Err(Refusal::Pending));
        assert!(c.admit(ip("10.0.0.2"), ms(0), true).is_ok(), "a neighbour has its own share");
        c.release(a);
        assert!(c.admit(ip("10.0.0.1"), ms(0), true).is_ok());
        c.release(b);
        assert_eq!(c.pending_of(ip("10.0.0.1"), ms(0)), 1);
    }

    #[test]
    fn a_prefix_is_one_client() {
        let mut c = Clients::new(ClientLimits { max_pending: 1, miss_rate: 0, prefix_v4: 24, prefix_v6: 64, ..ClientLimits::default() }, 7);
        c.admit(ip("10.0.0.1"), ms(0), true).unwrap();
        assert_eq!(c.admit(ip("10.0.0.200"), ms(0), true), Err(Refusal::Pending));
        assert!(c.admit(ip("10.0.1.1"), ms(0), true).is_ok());
        c.admit(ip("fd00::1"), ms(0), true).unwrap();
        assert_eq!(c.admit(ip("fd00::ffff:1"), ms(0), true), Err(Refusal::Pending));
        assert!(c.admit(ip("fd00:0:0:1::1"), ms(0), true).is_ok());
        assert_eq!(c.admit(ip("::ffff:10.0.0.9"), ms(0), true), Err(Refusal::Pending), "IPv4-mapped is IPv4");
    }

    #[test]
    fn the_miss_rate_is_a_token_bucket() {
        let mut c = Clients::new(ClientLimits { max_pending: 0, miss_rate: 100, miss_burst: 10, ..ClientLimits::default() }, 7);
        let x = ip("192.0.2.1");
        for _ in 0..10 {
            c.admit(x, ms(0), true).unwrap();
        }
        assert_eq!(c.admit(x, ms(0), true), Err(Refusal::Rate));
        assert!(c.admit(x, ms(0), false).is_ok(), "waiting on an identical query costs no token");
        assert_eq!(c.admit(x, ms(5), true), Err(Refusal::Rate), "half a token after 5 ms at 100/s");
        assert!(c.admit(x, ms(10), true).is_ok(), "one token after 10 ms");
        assert_eq!(c.admit(x, ms(10), true), Err(Refusal::Rate));
        // Never more than the burst, however long the pause.
        let ok = (0..20).filter(|_| c.admit(x, ms(100_000), true).is_ok()).count();
        assert_eq!(ok, 10);
    }

    #[test]
    fn a_busy_set_sends_newcomers_to_the_overflow_entry() {
        let mut c = Clients::new(ClientLimits { max_pending: 3, miss_rate: 0, table_size: 4, ..ClientLimits::default() }, 7);
        // One set of four ways: fill it with four clients that keep a query.
        for k in 1..=4 {
            c.admit(ip(&format!("10.0.0.{k}")), ms(0), true).unwrap();
        }
        let o = c.admit(ip("10.0.0.5"), ms(0), true).unwrap();
        assert_eq!((o, c.overflows), (OVERFLOW, 1));
        c.admit(ip("10.0.0.6"), ms(0), true).unwrap();
        c.admit(ip("10.0.0.7"), ms(0), true).unwrap();
        assert_eq!(c.admit(ip("10.0.0.8"), ms(0), true), Err(Refusal::Pending), "the overflow entry has the same share");
        // A client with nothing pending gives its way up.
        let first = c.admit(ip("10.0.0.1"), ms(1), true).unwrap();
        c.release(first);
        c.release(first);
        assert!(c.admit(ip("10.0.0.9"), ms(2), true).is_ok_and(|i| i != OVERFLOW));
    }
}
