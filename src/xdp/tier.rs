//! A worker's side of the in-kernel answer tier: it copies its hottest
//! cache entries and fixed local answers into the XDP program's answer map
//! and takes them out again (ARCHITECTURE.md, "The in-kernel tier").
//!
//! Every loop turn the worker first deletes the copies whose source went
//! (the engine queues them: a cache entry evicted, expired, replaced,
//! flushed or invalidated by a records change; every local answer when
//! the records change), then inserts what the engine queued for
//! promotion, a bounded number per turn, up to the queue's share of the
//! map. Once a second it reads the kernel's hit count of each
//! copy and takes out those that were not hit since the last look, which
//! makes room for names that became hot and lets the cache's CLOCK see the
//! entry again.
//!
//! The map's keys carry the queue: each worker owns its keys and answers
//! for them exactly as its engine would (each worker has its own cache).

use std::time::Duration;

use kdns_core::cache::{KernelEntry, KernelKey};
use kdns_core::engine::Engine;
use kdns_core::Timestamp;
use kdns_sys::xdp::{AnswerEntry, AnswerMap};
use std::collections::HashMap;

use crate::handle::IoStats;

/// How often the copies' kernel hit counts are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Most promotions per loop turn (a map insert is a system call).
const PROMOTIONS_PER_TURN: usize = 16;

/// A worker's link to the answer map.
pub struct Tier {
    map: AnswerMap,
    queue: u32,
    /// Copies this worker may hold (its share of the map).
    quota: usize,
    /// The kernel clock (CLOCK_MONOTONIC) minus the worker's clock.
    offset_ns: i128,
    /// Copies in the map, with the kernel hit count seen at the last sweep.
    promoted: HashMap<KernelKey, u64>,
    demoted: Vec<KernelKey>,
    entry: Box<KernelEntry>,
    next_sweep: Timestamp,
    /// The interface, whose driver counts XDP_TX sends.
    ifname: String,
    /// Its XDP_TX sends (sent, failed) at the last sweep (`None`: the
    /// driver does not count both).
    tx_counts: Option<(u64, u64)>,
    /// The interface cannot send what the tier answers: off for good.
    off: bool,
}

/// The driver's counts of XDP_TX frames sent and not sent (veth:
/// `rx_queue_N_xdp_tx` and `rx_queue_N_xdp_tx_errors`, summed over
/// queues); `None` unless it has both.
fn xdp_tx_counts(ifname: &str) -> Option<(u64, u64)> {
    let stats = kdns_sys::ethtool::driver_stats(ifname).ok()?;
    let (mut sent, mut failed) = (None::<u64>, None::<u64>);
    for (name, v) in stats {
        if name.ends_with("xdp_tx") {
            sent = Some(sent.unwrap_or(0).wrapping_add(v));
        } else if name.ends_with("xdp_tx_errors") {
            failed = Some(failed.unwrap_or(0).wrapping_add(v));
        }
    }
    sent.zip(failed)
}

impl Tier {
    /// The tier of the worker of `queue`, holding at most `quota` copies.
    /// `now` is the worker's clock, read just now.
    pub fn new(map: AnswerMap, ifname: &str, queue: u32, quota: usize, now: Timestamp) -> Tier {
        let offset_ns = i128::from(kdns_sys::monotonic_ns()) - i128::from(now.as_nanos());
        if let Err(e) = map.clear_queue(queue) {
            tracing::debug!(queue, error = %e, "could not clear the queue's answer map entries");
        }
        Tier {
            map,
            queue,
            quota: quota.max(1),
            offset_ns,
            promoted: HashMap::with_capacity(quota),
            demoted: Vec::new(),
            entry: Box::default(),
            next_sweep: now + SWEEP_EVERY,
            ifname: ifname.to_string(),
            tx_counts: xdp_tx_counts(ifname),
            off: false,
        }
    }

    /// `t` on the kernel's clock (a local answer's "forever" stays so).
    fn kernel_ns(&self, t: Timestamp) -> u64 {
        (i128::from(t.as_nanos()) + self.offset_ns).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// One loop turn's work: demotions first, then promotions, and the
    /// sweep when it is due. Returns whether anything changed.
    pub fn turn(&mut self, engine: &mut Engine, now: Timestamp, io: &IoStats) -> bool {
        if self.off {
            return false;
        }
        engine.kernel_demotions(&mut self.demoted);
        let mut moved = !self.demoted.is_empty();
        for k in self.demoted.drain(..) {
            if self.promoted.remove(&k).is_some() {
                remove(&self.map, self.queue, &k);
                IoStats::add(&io.tier_demoted, 1);
            }
        }
        for _ in 0..PROMOTIONS_PER_TURN {
            let Some(p) = engine.next_kernel_promotion(now, &mut self.entry) else { break };
            moved = true;
            let ok = self.promoted.len() < self.quota && self.insert();
            if !engine.kernel_promoted(p, &self.entry.key, ok) && ok {
                // Gone between its export and now: take the copy out again.
                remove(&self.map, self.queue, &self.entry.key);
                continue;
            }
            if ok {
                self.promoted.insert(self.entry.key, u64::MAX);
                IoStats::add(&io.tier_promoted, 1);
            }
        }
        if now >= self.next_sweep {
            self.next_sweep = now + SWEEP_EVERY;
            if self.nothing_sent() {
                self.turn_off(engine);
                io.tier_entries.set(0);
                return true;
            }
            self.sweep(engine, io);
        }
        io.tier_entries.set(self.promoted.len() as u64);
        moved
    }

    /// Inserts the exported entry; false when the map refused it.
    fn insert(&mut self) -> bool {
        let e = &*self.entry;
        let a = AnswerEntry {
            queue: self.queue,
            name: e.key.name(),
            qtype: e.key.qtype.0,
            qclass: e.key.qclass.0,
            flags: e.key.flags.0,
            serve_until_ns: self.kernel_ns(e.serve_until),
            inserted_ns: self.kernel_ns(e.inserted),
            header: e.header,
            body: e.body(),
            ttls: e.ttls(),
        };
        match self.map.insert(&a) {
            Ok(()) => true,
            Err(err) => {
                tracing::debug!(queue = self.queue, error = %err, "answer map insert failed");
                false
            }
        }
    }

    /// Whether, since the last sweep, the driver failed XDP_TX sends and
    /// sent none: then clients get nothing the kernel answers (a veth whose
    /// peer runs no NAPI fails every one). Some failures among sends are
    /// an overloaded peer (its ring full), not a reason to stop.
    fn nothing_sent(&mut self) -> bool {
        let now = xdp_tx_counts(&self.ifname);
        let verdict = match (self.tx_counts, now) {
            (Some((sent0, failed0)), Some((sent1, failed1))) => failed1 > failed0 && sent1 == sent0,
            _ => false,
        };
        self.tx_counts = now;
        verdict
    }

    /// Empties this queue's part of the map for good and gives the
    /// entries back to the engine: every query goes to the worker again.
    fn turn_off(&mut self, engine: &mut Engine) {
        self.off = true;
        if let Err(e) = self.map.clear_queue(self.queue) {
            tracing::warn!(queue = self.queue, error = %e, "could not clear the queue's answer map entries");
        }
        self.promoted.clear();
        engine.disable_kernel_tier();
        tracing::warn!(
            "{} queue {}: the driver failed every XDP_TX send for a second, so clients do not get the in-kernel tier's answers (a veth whose peer runs no XDP program drops them): the tier is off on this queue, the worker answers every query",
            self.ifname,
            self.queue
        );
    }

    /// Takes out the copies the kernel did not answer from since the last
    /// sweep.
    fn sweep(&mut self, engine: &mut Engine, io: &IoStats) {
        let (map, queue) = (&self.map, self.queue);
        self.promoted.retain(|k, last| {
            let hits = match map.hits(queue, k.name(), k.qtype.0, k.qclass.0, k.flags.0) {
                Ok(Some(h)) => h,
                // Not in the map (it should be): its source counts hits again.
                _ => {
                    engine.kernel_demote(k);
                    return false;
                }
            };
            if hits != *last {
                *last = hits;
                return true;
            }
            remove(map, queue, k);
            engine.kernel_demote(k);
            IoStats::add(&io.tier_cold, 1);
            false
        });
    }
}

fn remove(map: &AnswerMap, queue: u32, k: &KernelKey) {
    if let Err(e) = map.remove(queue, k.name(), k.qtype.0, k.qclass.0, k.flags.0) {
        tracing::debug!(queue, error = %e, "answer map delete failed");
    }
}
