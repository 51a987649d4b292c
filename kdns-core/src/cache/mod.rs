//! The per-core answer cache.
//!
//! One worker owns one `Cache`: no locks, and no atomics on the hit path
//! (the counters are single-writer, see [`crate::stats`]). Everything is
//! allocated in [`Cache::new`]: an entry table of `max_entries`, a hash
//! index sized for it, and `max_bytes` of answer storage in 128-byte chunks.
//!
//! An answer is stored in wire form (OPT stripped, ID zeroed) followed by
//! the offsets of its TTL fields. A hit copies it out, counts every TTL down
//! by the entry's age and hands it to the engine, which patches the client's
//! ID, the client's spelling of the name and the OPT record.
//!
//! Keys are the question name compared without case, QTYPE, QCLASS and the
//! DO and CD bits. The name is not stored twice: it is compared against the
//! question inside the stored answer.
//!
//! Eviction is CLOCK: a hit sets a bit; the hand clears set bits and evicts
//! the first entry it finds without one (or past its stale window), so hot
//! entries survive a scan of one-off names.

pub mod dump;
mod kernel;
mod key;
mod store;
mod warm;

use core::time::Duration;
use std::sync::Arc;

use hashbrown::HashTable;

use crate::stats::{Counter, Gauge};
use crate::time::Timestamp;
use crate::wire::{Header, Message, Rcode, Rtype, HEADER_LEN};
pub use kernel::{KernelEntry, KernelKey, KernelTierConfig, Promotion, KERNEL_BODY_MAX, KERNEL_NAME_MAX, KERNEL_TTLS_MAX};
use key::{eq_lower, splitmix};
pub use key::{Key, KeyFlags};
use store::ChunkStore;
pub use store::CHUNK;
pub use warm::ImportReport;

/// Most records an answer may have to be cached (TTL offsets kept per record).
pub const MAX_RECORDS: usize = 256;

/// Cache sizing and TTL policy.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    /// Most entries held.
    pub max_entries: usize,
    /// Bytes of answer storage (rounded down to 128-byte chunks).
    pub max_bytes: usize,
    /// TTLs below this are raised to it (seconds).
    pub min_ttl: u32,
    /// TTLs above this are lowered to it (seconds).
    pub max_ttl: u32,
    /// Cap on the negative-caching TTL (RFC 2308; seconds).
    pub negative_max_ttl: u32,
    /// How long a SERVFAIL is cached (seconds; capped at 30).
    pub servfail_ttl: u32,
    /// How long an expired entry may still be served when no backend
    /// answers (RFC 8767).
    pub stale_window: Duration,
    /// TTL put on stale answers (RFC 8767 suggests 30 s).
    pub stale_ttl: u32,
    /// A hit within this percentage of an entry's original TTL of expiring
    /// asks for an early refresh.
    pub prefetch_percent: u32,
    /// Entries with an original TTL below this are never refreshed early.
    pub prefetch_min_ttl: u32,
    /// Answers longer than this are not cached.
    pub max_answer_len: usize,
}

/// Bytes of answer storage per entry that [`CacheConfig::for_entries`]
/// provides: one chunk, plus a quarter for the answers that need more.
pub const BYTES_PER_ENTRY: usize = CHUNK + CHUNK / 4;

impl CacheConfig {
    /// The defaults, sized for `max_entries` entries.
    pub fn for_entries(max_entries: usize) -> CacheConfig {
        CacheConfig { max_entries, max_bytes: max_entries * BYTES_PER_ENTRY, ..CacheConfig::default() }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: 65_536,
            max_bytes: 65_536 * BYTES_PER_ENTRY,
            min_ttl: 0,
            max_ttl: 86_400,
            negative_max_ttl: 3_600,
            servfail_ttl: 2,
            stale_window: Duration::from_secs(3_600),
            stale_ttl: 30,
            prefetch_percent: 10,
            prefetch_min_ttl: 10,
            max_answer_len: 16_384,
        }
    }
}

/// What kind of answer an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// NOERROR with answers.
    Positive,
    /// NXDOMAIN or NODATA, cached for the SOA minimum.
    Negative,
    /// SERVFAIL, cached for a few seconds.
    ServFail,
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh answer of `len` bytes is in the output buffer, TTLs counted
    /// down; when `refresh` is set the entry is close to expiry and the
    /// caller should refresh it from a backend (asked once per entry).
    Hit {
        /// Answer length.
        len: usize,
        /// Ask a backend now, before the entry expires.
        refresh: bool,
        /// What kind of answer it is.
        kind: EntryKind,
    },
    /// A fresh answer exists but is longer than the output buffer.
    TooLong {
        /// The answer's length.
        len: usize,
    },
    /// Only an expired answer within the stale window exists.
    Stale,
    /// Nothing usable.
    Miss,
}

/// Why an answer was not cached (not an error: counted, then forwarded on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCached {
    /// TC was set.
    Truncated,
    /// An rcode that is not cached (REFUSED, NOTIMP, ...).
    Rcode,
    /// A negative answer without an SOA: no TTL to cache it for (RFC 2308).
    NoSoa,
    /// A TTL of zero.
    ZeroTtl,
    /// Longer than `max_answer_len` or than the whole store.
    TooLong,
    /// More than [`MAX_RECORDS`] records.
    TooManyRecords,
    /// The answer's question is not the key's, or is compressed.
    QuestionMismatch,
    /// No entry could be freed (should not happen with sane sizes).
    NoRoom,
}

/// Cache counters, readable from another thread.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Entries held.
    pub entries: Gauge,
    /// Bytes of answer storage in use (whole chunks).
    pub bytes: Gauge,
    /// Answers stored.
    pub inserts: Counter,
    /// Entries evicted to make room.
    pub evictions: Counter,
    /// Entries dropped because they expired past their stale window.
    pub expired: Counter,
    /// Entries loaded from a dump (warm restart).
    pub loaded: Counter,
    /// Records of a dump skipped at load because they had expired meanwhile.
    pub load_expired: Counter,
}

const LIVE: u8 = 1;
const REFERENCED: u8 = 2;
const REFRESHING: u8 = 4;
/// A copy of the entry is in the in-kernel tier's map (see [`kernel`]).
const IN_KERNEL: u8 = 8;
/// Queued for the in-kernel tier.
const PROMOTING: u8 = 16;
/// Cannot go to the in-kernel tier (too long, too many records, SERVFAIL).
const NO_KERNEL: u8 = 32;
const NANOS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    inserted: u64,
    expires: u64,
    stale_until: u64,
    orig_ttl: u32,
    first_chunk: u32,
    len: u16,
    n_ttl: u16,
    qname_len: u8,
    flags: KeyFlags,
    state: u8,
    /// Hits counted towards a promotion to the in-kernel tier.
    hits: u8,
    kind: EntryKind,
}

const EMPTY: Entry = Entry {
    hash: 0,
    inserted: 0,
    expires: 0,
    stale_until: 0,
    orig_ttl: 0,
    first_chunk: 0,
    len: 0,
    n_ttl: 0,
    qname_len: 0,
    flags: KeyFlags(0),
    state: 0,
    hits: 0,
    kind: EntryKind::Positive,
};

/// The per-core cache. See the module docs.
#[derive(Debug)]
pub struct Cache {
    cfg: CacheConfig,
    seed: (u64, u64),
    index: HashTable<u32>,
    entries: Vec<Entry>,
    free_entries: Vec<u32>,
    store: ChunkStore,
    hand: usize,
    scratch: Vec<u8>,
    stats: Arc<CacheStats>,
    tier: kernel::Tier,
}

impl Cache {
    /// A cache sized by `cfg`; `seed` keys the hash (pass a random value so
    /// clients cannot aim collisions at one bucket).
    pub fn new(cfg: CacheConfig, seed: u64) -> Cache {
        let n = cfg.max_entries.clamp(1, u32::MAX as usize - 1);
        let chunks = (cfg.max_bytes / CHUNK).max(1);
        let scratch = vec![0; cfg.max_answer_len.min(u16::MAX as usize) + 2 * MAX_RECORDS];
        Cache {
            // Two odd, seed-derived keys (splitmix64 steps) for the hash.
            seed: (splitmix(seed) | 1, splitmix(seed ^ 0x9e37_79b9_7f4a_7c15) | 1),
            // Twice the entries: evictions leave tombstones, and hashbrown then
            // rehashes in place (no allocation) only while at most half full.
            index: HashTable::with_capacity(2 * n),
            entries: vec![EMPTY; n],
            free_entries: (0..n as u32).rev().collect(),
            store: ChunkStore::new(chunks),
            hand: 0,
            scratch,
            stats: Arc::new(CacheStats::default()),
            tier: kernel::Tier::off(),
            cfg,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }

    /// Counters, shareable with another thread.
    pub fn stats(&self) -> &Arc<CacheStats> {
        &self.stats
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len() - self.free_entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated for the cache in all (entries, index, storage).
    pub fn memory(&self) -> usize {
        let index = self.index.capacity() * (core::mem::size_of::<u32>() + 1);
        self.entries.len() * core::mem::size_of::<Entry>() + self.free_entries.capacity() * 4 + index + self.store.memory()
    }

    fn find(&self, key: &Key<'_>) -> Option<u32> {
        let (entries, store) = (&self.entries, &self.store);
        let qlen = key.name.len();
        let mut tail = [0u8; 4];
        tail[..2].copy_from_slice(&key.qtype.0.to_be_bytes());
        tail[2..].copy_from_slice(&key.qclass.0.to_be_bytes());
        self.index
            .find(key.hash, |&i| {
                let e = &entries[i as usize];
                if e.hash != key.hash || e.flags != key.flags || e.qname_len as usize != qlen {
                    return false;
                }
                // Stored names are lower case (see `insert`).
                match store.first_chunk_slice(e.first_chunk, HEADER_LEN, qlen + 4) {
                    Some(stored) => eq_lower(key.name, &stored[..qlen]) && stored[qlen..] == tail,
                    None => {
                        store.eq_ignore_case(e.first_chunk, HEADER_LEN, key.name)
                            && store.eq_ignore_case(e.first_chunk, HEADER_LEN + qlen, &tail)
                    }
                }
            })
            .copied()
    }

    /// Looks `key` up at `now`. On a hit the answer is copied into `out`
    /// with every TTL counted down by the entry's age; the caller patches
    /// the ID, the name's spelling and the OPT record.
    #[inline]
    pub fn lookup(&mut self, now: Timestamp, key: &Key<'_>, out: &mut [u8]) -> Lookup {
        let Some(i) = self.find(key) else { return Lookup::Miss };
        let now = now.as_nanos();
        let e = &mut self.entries[i as usize];
        if now >= e.expires {
            if now < e.stale_until {
                return Lookup::Stale;
            }
            self.stats.expired.inc();
            self.remove_index(i);
            return Lookup::Miss;
        }
        let len = e.len as usize;
        if len > out.len() {
            return Lookup::TooLong { len };
        }
        e.state |= REFERENCED;
        if self.tier.on && e.state & (IN_KERNEL | PROMOTING | NO_KERNEL) == 0 {
            e.hits = e.hits.saturating_add(1);
            if e.hits >= self.tier.promote_after {
                e.hits = 0;
                if self.tier.queue(i, e.hash) {
                    e.state |= PROMOTING;
                }
            }
        }
        let mut refresh = false;
        if e.state & REFRESHING == 0
            && e.orig_ttl >= self.cfg.prefetch_min_ttl
            && (e.expires - now) * 100 < u64::from(e.orig_ttl) * NANOS * u64::from(self.cfg.prefetch_percent)
        {
            e.state |= REFRESHING;
            refresh = true;
        }
        let e = *e;
        let age = (now.saturating_sub(e.inserted) / NANOS) as u32;
        copy_out(&self.store, &e, out, |ttl| ttl.saturating_sub(age));
        Lookup::Hit { len, refresh, kind: e.kind }
    }

    /// Copies an expired entry still within its stale window into `out`,
    /// every TTL set to `stale_ttl` (RFC 8767). For when no backend answers.
    pub fn lookup_stale(&mut self, now: Timestamp, key: &Key<'_>, out: &mut [u8]) -> Option<usize> {
        let i = self.find(key)?;
        let e = self.entries[i as usize];
        let now = now.as_nanos();
        if now >= e.stale_until || e.len as usize > out.len() || e.kind == EntryKind::ServFail {
            return None;
        }
        let stale_ttl = self.cfg.stale_ttl;
        copy_out(&self.store, &e, out, |_| stale_ttl);
        Some(e.len as usize)
    }

    /// Whether an expired entry within its stale window exists for `key`.
    pub fn has_stale(&self, now: Timestamp, key: &Key<'_>) -> bool {
        self.find(key).is_some_and(|i| {
            let e = &self.entries[i as usize];
            e.kind != EntryKind::ServFail && now.as_nanos() < e.stale_until
        })
    }

    /// Stores `answer` (a parsed backend answer to the question of `key`)
    /// at `now`. The answer's OPT record is left out; TTLs are clamped to
    /// the configured bounds; negative answers are kept for the SOA minimum.
    pub fn insert(&mut self, now: Timestamp, key: &Key<'_>, answer: &[u8], msg: &Message) -> Result<EntryKind, NotCached> {
        let (kind, _) = self.store(now, key, answer, msg)?;
        self.stats.inserts.inc();
        Ok(kind)
    }

    /// [`Cache::insert`] without the count; also returns the entry's index.
    fn store(&mut self, now: Timestamp, key: &Key<'_>, answer: &[u8], msg: &Message) -> Result<(EntryKind, u32), NotCached> {
        let h = Header::new_checked(answer).map_err(|_| NotCached::QuestionMismatch)?;
        if h.tc() {
            return Err(NotCached::Truncated);
        }
        let q = &msg.question;
        if q.name.is_compressed() || q.qtype != key.qtype || q.qclass != key.qclass || !q.name.eq_wire_ignore_case(answer, key.name) {
            return Err(NotCached::QuestionMismatch);
        }
        let kind = match h.rcode() {
            Rcode::NOERROR if h.ancount() > 0 => EntryKind::Positive,
            Rcode::NOERROR | Rcode::NXDOMAIN => EntryKind::Negative,
            Rcode::SERVFAIL => EntryKind::ServFail,
            _ => return Err(NotCached::Rcode),
        };
        // Copy the answer without its OPT record into scratch.
        let (opt_at, opt_len) = match msg.edns() {
            Some(e) => (e.offset, e.options_offset + e.options_len as usize - e.offset),
            None => (answer.len(), 0),
        };
        let end = msg.sections.end;
        let len = end - opt_len;
        if len > self.cfg.max_answer_len.min(u16::MAX as usize) {
            return Err(NotCached::TooLong);
        }
        let scratch = &mut self.scratch;
        scratch[..opt_at.min(end)].copy_from_slice(&answer[..opt_at.min(end)]);
        if opt_len > 0 {
            scratch[opt_at..len].copy_from_slice(&answer[opt_at + opt_len..end]);
            let ar = h.arcount() - 1;
            scratch[10..12].copy_from_slice(&ar.to_be_bytes());
        }
        scratch[..2].fill(0);
        // Store the question name lower case: lookups then compare words.
        scratch[HEADER_LEN..HEADER_LEN + key.name.len()].make_ascii_lowercase();
        // Walk the records: TTL offsets (shifted past the OPT) and the TTL.
        let (lo, hi) = (self.cfg.min_ttl, self.cfg.max_ttl.max(self.cfg.min_ttl));
        let mut ttl = u32::MAX;
        let mut n_ttl = 0usize;
        let mut soa_ttl = None;
        for r in msg.sections.records(answer) {
            if r.rtype == Rtype::OPT {
                continue;
            }
            if n_ttl == MAX_RECORDS {
                return Err(NotCached::TooManyRecords);
            }
            let off = if r.ttl_offset > opt_at { r.ttl_offset - opt_len } else { r.ttl_offset };
            let mut t = r.ttl.clamp(lo, hi);
            if kind == EntryKind::Negative && r.rtype == Rtype::SOA && soa_ttl.is_none() && r.ttl_offset < msg.sections.additional {
                let min = r.soa_minimum(answer).unwrap_or(0);
                let neg = r.ttl.min(min).clamp(lo, self.cfg.negative_max_ttl.max(lo));
                soa_ttl = Some(neg);
                t = neg;
            }
            scratch[off..off + 4].copy_from_slice(&t.to_be_bytes());
            scratch[len + 2 * n_ttl..len + 2 * n_ttl + 2].copy_from_slice(&(off as u16).to_be_bytes());
            n_ttl += 1;
            ttl = ttl.min(t);
        }
        match kind {
            EntryKind::Negative if soa_ttl.is_none() => return Err(NotCached::NoSoa),
            EntryKind::ServFail => ttl = self.cfg.servfail_ttl.min(30),
            _ => {}
        }
        if ttl == 0 || ttl == u32::MAX {
            return Err(NotCached::ZeroTtl);
        }
        let blob_len = len + 2 * n_ttl;
        let need = ChunkStore::chunks_for(blob_len);
        if need > self.store.capacity() / 4 {
            return Err(NotCached::TooLong);
        }
        let mut hits = 0;
        if let Some(old) = self.find(key) {
            if self.entries[old as usize].state & IN_KERNEL != 0 {
                // A refreshed hot answer: promoted again at its next hit.
                hits = self.tier.promote_after.saturating_sub(1);
            }
            self.remove_index(old);
        }
        if !self.make_room(now.as_nanos(), need) {
            return Err(NotCached::NoRoom);
        }
        let first = self.store.store(&self.scratch[..blob_len]).ok_or(NotCached::NoRoom)?;
        let idx = self.free_entries.pop().ok_or(NotCached::NoRoom)?;
        let now = now.as_nanos();
        let expires = now + u64::from(ttl) * NANOS;
        let stale = u64::try_from(self.cfg.stale_window.as_nanos()).unwrap_or(u64::MAX);
        self.entries[idx as usize] = Entry {
            hash: key.hash,
            inserted: now,
            expires,
            stale_until: if kind == EntryKind::ServFail { expires } else { expires.saturating_add(stale) },
            orig_ttl: ttl,
            first_chunk: first,
            len: len as u16,
            n_ttl: n_ttl as u16,
            qname_len: key.name.len() as u8,
            flags: key.flags,
            state: LIVE,
            hits,
            kind,
        };
        let entries = &self.entries;
        self.index.insert_unique(key.hash, idx, |&i| entries[i as usize].hash);
        self.update_gauges();
        Ok((kind, idx))
    }

    /// Drops the entry for `key`, if any.
    pub fn remove(&mut self, key: &Key<'_>) -> bool {
        match self.find(key) {
            Some(i) => {
                self.remove_index(i);
                true
            }
            None => false,
        }
    }

    /// Lets a failed early refresh be asked again by a later hit.
    pub fn refresh_failed(&mut self, key: &Key<'_>) {
        if let Some(i) = self.find(key) {
            self.entries[i as usize].state &= !REFRESHING;
        }
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        for i in 0..self.entries.len() as u32 {
            if self.entries[i as usize].state & LIVE != 0 {
                self.remove_index(i);
            }
        }
    }

    /// Drops every entry whose question name is `name` (wire form, case
    /// ignored), whatever its type. Used when local records change.
    pub fn remove_name(&mut self, name: &[u8]) -> usize {
        let mut n = 0;
        for i in 0..self.entries.len() as u32 {
            let e = self.entries[i as usize];
            if e.state & LIVE != 0 && e.qname_len as usize == name.len() && self.store.eq_ignore_case(e.first_chunk, HEADER_LEN, name) {
                self.remove_index(i);
                n += 1;
            }
        }
        n
    }

    fn remove_index(&mut self, i: u32) {
        let e = self.entries[i as usize];
        if e.state & IN_KERNEL != 0 {
            self.demote_removed(&e);
        }
        if let Ok(slot) = self.index.find_entry(e.hash, |&x| x == i) {
            slot.remove();
        }
        self.store.release(e.first_chunk);
        self.entries[i as usize] = EMPTY;
        self.free_entries.push(i);
        self.update_gauges();
    }

    fn update_gauges(&self) {
        self.stats.entries.set(self.len() as u64);
        self.stats.bytes.set(((self.store.capacity() - self.store.free()) * CHUNK) as u64);
    }

    /// Runs the CLOCK hand until an entry slot and `chunks` chunks are free.
    fn make_room(&mut self, now: u64, chunks: usize) -> bool {
        let n = self.entries.len();
        let mut steps = 0;
        while self.free_entries.is_empty() || self.store.free() < chunks {
            if steps > 2 * n {
                return false;
            }
            steps += 1;
            let i = self.hand;
            self.hand = if i + 1 == n { 0 } else { i + 1 };
            let e = &mut self.entries[i];
            if e.state & LIVE == 0 {
                continue;
            }
            if e.stale_until <= now {
                self.stats.expired.inc();
            } else if e.state & (REFERENCED | IN_KERNEL) != 0 {
                // In-kernel entries are hit where the cache cannot see it;
                // the tier's own sweep demotes them when they go cold.
                e.state &= !REFERENCED;
                continue;
            } else {
                self.stats.evictions.inc();
            }
            self.remove_index(i as u32);
        }
        true
    }
}

/// Copies entry `e` into `out` and rewrites each TTL with `ttl(stored)`.
#[inline]
fn copy_out(store: &ChunkStore, e: &Entry, out: &mut [u8], ttl: impl Fn(u32) -> u32) {
    let len = e.len as usize;
    let n = 2 * e.n_ttl as usize;
    let patch = |out: &mut [u8], o: &[u8]| {
        let at = u16::from_be_bytes([o[0], o[1]]) as usize;
        if let Some(f) = out.get_mut(at..at + 4) {
            let t = u32::from_be_bytes([f[0], f[1], f[2], f[3]]);
            f.copy_from_slice(&ttl(t).to_be_bytes());
        }
    };
    match store.first_chunk_slice(e.first_chunk, 0, len + n) {
        // One chunk (the common case): copy, then patch from the offsets in place.
        Some(blob) => {
            out[..len].copy_from_slice(&blob[..len]);
            for o in blob[len..].chunks_exact(2) {
                patch(out, o);
            }
        }
        None => {
            store.read(e.first_chunk, len, out);
            for i in 0..e.n_ttl as usize {
                let mut o = [0u8; 2];
                store.read_at(e.first_chunk, len + 2 * i, &mut o);
                patch(out, &o);
            }
        }
    }
}

#[cfg(test)]
mod tests;
