//! The engine's side of the in-kernel answer tier: cache entries (the
//! cache's bookkeeping, [`crate::cache`]'s `kernel` module) and local
//! answers (here), behind one interface for the worker.
//!
//! A local answer can go to the kernel when it is *fixed*: the same bytes
//! for every client and every later query until the records change (one
//! instance, static data, NXDOMAIN or NODATA; not a rotated, random or
//! sticky choice among several instances, which the XDP program cannot
//! make). Its TTLs are the records' and do not count down. Hits of fixed
//! answers are counted per question (name, type, class, DO, CD) in a
//! bounded table; at `promote_after` the reply just built is copied and
//! queued. A new snapshot of the records takes every local copy out of the
//! kernel in the worker's same loop turn and starts the counts again, so
//! no copy outlives the records it was built from.

use std::hash::RandomState;

use hashbrown::HashMap;

use super::Engine;
use crate::cache::{KernelEntry, KernelKey, KernelTierConfig, KeyFlags, Promotion};
use crate::time::Timestamp;
use crate::wire::{Class, Rtype, OPT_LEN};

/// Questions whose hits are counted at most; when the table is full, the
/// counts of questions not in the kernel start again.
const COUNTED_MAX: usize = 4096;
/// Local answers queued for promotion at most.
const QUEUE_MAX: usize = 16;

/// A promotion the worker reports back with [`Engine::kernel_promoted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelPromotion {
    /// A cache entry.
    Cache(Promotion),
    /// A local answer, of the records generation it was built from.
    Local(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Counting(u8),
    Queued,
    InKernel,
    /// Cannot be answered in the kernel (records too long).
    Never,
}

/// Fixed local answers on their way to and in the kernel.
#[derive(Debug)]
pub(super) struct LocalTier {
    on: bool,
    promote_after: u8,
    max_reply: usize,
    counted: HashMap<KernelKey, State, RandomState>,
    queue: Vec<KernelEntry>,
    demoted: Vec<KernelKey>,
    /// Counts records snapshots: a promotion of an older one is refused.
    generation: u64,
}

impl LocalTier {
    pub(super) fn off() -> LocalTier {
        LocalTier {
            on: false,
            promote_after: u8::MAX,
            max_reply: 0,
            counted: HashMap::with_hasher(RandomState::new()),
            queue: Vec::new(),
            demoted: Vec::new(),
            generation: 0,
        }
    }

    /// On, with everything allocated up front.
    pub(super) fn new(cfg: KernelTierConfig) -> LocalTier {
        LocalTier {
            on: true,
            promote_after: cfg.promote_after.max(1),
            max_reply: cfg.max_reply,
            // Twice what is ever held: removals leave tombstones, and
            // hashbrown then rehashes in place (no allocation) only while
            // at most half full.
            counted: HashMap::with_capacity_and_hasher(2 * COUNTED_MAX, RandomState::new()),
            queue: Vec::with_capacity(QUEUE_MAX),
            demoted: Vec::with_capacity(COUNTED_MAX),
            generation: 0,
        }
    }

    pub(super) fn on(&self) -> bool {
        self.on
    }

    /// A fixed local answer `reply` to question `qname` (as asked) was
    /// sent; `opt`: it ends with our OPT record.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn hit(&mut self, now: Timestamp, qname: &[u8], qtype: Rtype, qclass: Class, flags: KeyFlags, reply: &[u8], opt: bool) {
        let size = reply.len() + if opt { 0 } else { OPT_LEN };
        if size > self.max_reply {
            return;
        }
        let Some(key) = KernelKey::new(qname, qtype, qclass, flags) else { return };
        let hits = match self.counted.get_mut(&key) {
            Some(State::Counting(n)) => {
                *n = n.saturating_add(1);
                *n
            }
            Some(_) => return,
            None => {
                if self.counted.len() >= COUNTED_MAX {
                    self.counted.retain(|_, s| !matches!(s, State::Counting(_)));
                    if self.counted.len() >= COUNTED_MAX {
                        return;
                    }
                }
                self.counted.insert(key, State::Counting(1));
                1
            }
        };
        if hits < self.promote_after || self.queue.len() >= QUEUE_MAX {
            return;
        }
        let mut e = KernelEntry::default();
        let q_end = crate::wire::HEADER_LEN + qname.len() + 4;
        if e.load_fixed(key, reply, q_end, opt, now) {
            self.queue.push(e);
            self.counted.insert(key, State::Queued);
        } else {
            // Counted no further until the records change.
            self.counted.insert(key, State::Never);
        }
    }

    fn next(&mut self, out: &mut KernelEntry) -> Option<u64> {
        let e = self.queue.pop()?;
        *out = e;
        Some(self.generation)
    }

    fn promoted(&mut self, generation: u64, key: &KernelKey, inserted: bool) -> bool {
        if generation != self.generation {
            return false;
        }
        if let Some(s) = self.counted.get_mut(key) {
            *s = if inserted { State::InKernel } else { State::Counting(0) };
        }
        true
    }

    fn demote(&mut self, key: &KernelKey) -> bool {
        match self.counted.get_mut(key) {
            Some(s) if *s == State::InKernel => {
                *s = State::Counting(0);
                true
            }
            _ => false,
        }
    }

    /// The records changed: every copy leaves the kernel, counts start again.
    pub(super) fn records_changed(&mut self) {
        self.generation += 1;
        for (k, s) in self.counted.drain() {
            if s == State::InKernel {
                self.demoted.push(k);
            }
        }
        self.queue.clear();
    }
}

impl Engine {
    /// Keys whose kernel copy must be deleted, since the last call (cache
    /// entries that went, local answers of older records): the worker
    /// deletes them from the map before it answers again.
    pub fn kernel_demotions(&mut self, out: &mut Vec<KernelKey>) {
        self.cache.take_demotions(out);
        out.append(&mut self.local_tier.demoted);
    }

    /// Exports the next answer queued for the kernel into `out` at `now`:
    /// local answers first, then cache entries. Report the map insert with
    /// [`Engine::kernel_promoted`].
    pub fn next_kernel_promotion(&mut self, now: Timestamp, out: &mut KernelEntry) -> Option<KernelPromotion> {
        if let Some(g) = self.local_tier.next(out) {
            return Some(KernelPromotion::Local(g));
        }
        self.cache.next_promotion(now, out).map(KernelPromotion::Cache)
    }

    /// The worker's report on promotion `p` of `key`: `inserted` if the
    /// copy is in the map now. False if its source went meanwhile (then the
    /// worker deletes the copy it just inserted).
    pub fn kernel_promoted(&mut self, p: KernelPromotion, key: &KernelKey, inserted: bool) -> bool {
        match p {
            KernelPromotion::Cache(p) => self.cache.promoted(p, inserted),
            KernelPromotion::Local(g) => self.local_tier.promoted(g, key, inserted),
        }
    }

    /// The worker took the copy of `key` out of the kernel (it went cold):
    /// its source counts hits again.
    pub fn kernel_demote(&mut self, key: &KernelKey) {
        if !self.local_tier.demote(key) {
            self.cache.demote(key);
        }
    }

    /// Turns the tier's bookkeeping off for good (the kernel cannot send
    /// its answers).
    pub fn disable_kernel_tier(&mut self) {
        self.cache.disable_kernel_tier();
        self.local_tier = LocalTier::off();
    }
}
