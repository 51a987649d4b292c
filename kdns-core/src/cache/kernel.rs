//! The cache's side of the in-kernel answer tier.
//!
//! The XDP program can answer a query itself (XDP_TX) from a BPF map that
//! the worker keeps. The cache decides what goes there and says when a copy
//! must go away; the worker moves entries between the two.
//!
//! - **Promotion.** With the tier on, every hit of an entry that is not in
//!   the kernel counts; at `promote_after` hits the entry is queued
//!   ([`Cache::next_promotion`]). The worker exports it ([`KernelEntry`]),
//!   inserts it into the map and reports back ([`Cache::promoted`]).
//!   Entries that cannot be answered in the kernel (SERVFAIL, a name over
//!   [`KERNEL_NAME_MAX`], more than [`KERNEL_TTLS_MAX`] records, a reply
//!   over the size bound) are marked once and never counted again.
//! - **Coherence.** Whenever an in-kernel entry leaves the cache (evicted,
//!   expired past its stale window, replaced by a fresher answer, removed
//!   for a records change, the whole cache flushed) its key is queued
//!   ([`Cache::take_demotions`]) and the worker deletes it from the map in
//!   the same loop turn. A copy can never be answered after its source
//!   expired: it carries `serve_until`, the entry's expiry, or earlier the
//!   moment a hit would ask for an early refresh, so the refresh still
//!   happens in userspace.
//! - **TTLs.** The copy holds the stored TTLs and the insertion time; the
//!   kernel writes `ttl - (now - inserted) / 1 s`, the arithmetic of
//!   [`Cache::lookup`], so both tiers send the same bytes at the same time.
//! - **Cold entries.** In-kernel hits do not reach the cache, so CLOCK
//!   treats an in-kernel entry as referenced; the worker's sweep demotes
//!   copies whose kernel hit count stopped moving ([`Cache::demote`]).

use super::{Cache, Entry, EntryKind, KeyFlags, IN_KERNEL, LIVE, NANOS, NO_KERNEL, PROMOTING};
use crate::time::Timestamp;
use crate::wire::{Class, Rtype, HEADER_LEN, OPT_LEN};

/// Longest question name (wire form, root label included) the kernel tier holds.
pub const KERNEL_NAME_MAX: usize = 128;
/// Most bytes after the question the kernel tier holds.
pub const KERNEL_BODY_MAX: usize = 488;
/// Most TTL fields (records) of an entry the kernel tier holds.
pub const KERNEL_TTLS_MAX: usize = 16;

/// Settings of the in-kernel tier, as the cache needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelTierConfig {
    /// Hits in userspace before an entry is promoted (1..=255).
    pub promote_after: u8,
    /// Largest reply (DNS message, with an OPT record) the kernel may send:
    /// no larger than any client's UDP size, so never truncated.
    pub max_reply: usize,
    /// Entries queued for promotion at most (per loop turn of the worker).
    pub queue: usize,
}

impl Default for KernelTierConfig {
    fn default() -> Self {
        KernelTierConfig { promote_after: 4, max_reply: 512, queue: 64 }
    }
}

/// The key of an entry in the kernel's map: the question name lower-cased,
/// type, class, DO and CD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelKey {
    name: [u8; KERNEL_NAME_MAX],
    name_len: u8,
    /// QTYPE.
    pub qtype: Rtype,
    /// QCLASS.
    pub qclass: Class,
    /// DO and CD.
    pub flags: KeyFlags,
}

/// Hashes the name's bytes only (the rest of the array is zero in every
/// key, so equal keys still hash alike).
impl core::hash::Hash for KernelKey {
    fn hash<H: core::hash::Hasher>(&self, h: &mut H) {
        h.write(self.name());
        h.write_u16(self.qtype.0);
        h.write_u16(self.qclass.0);
        h.write_u8(self.flags.0);
    }
}

impl KernelKey {
    /// The name in wire form, lower case.
    pub fn name(&self) -> &[u8] {
        &self.name[..usize::from(self.name_len)]
    }

    /// A key from its parts; `None` if the name is longer than [`KERNEL_NAME_MAX`].
    pub fn new(name: &[u8], qtype: Rtype, qclass: Class, flags: KeyFlags) -> Option<KernelKey> {
        let mut k = KernelKey { name: [0; KERNEL_NAME_MAX], name_len: 0, qtype, qclass, flags };
        k.name.get_mut(..name.len())?.copy_from_slice(name);
        k.name[..name.len()].make_ascii_lowercase();
        k.name_len = name.len() as u8;
        Some(k)
    }
}

/// One entry exported for the kernel's map.
#[derive(Debug, Clone)]
pub struct KernelEntry {
    /// Its key.
    pub key: KernelKey,
    /// On the cache's clock: the kernel answers only before this.
    pub serve_until: Timestamp,
    /// On the cache's clock: the stored TTLs are as of this instant.
    pub inserted: Timestamp,
    /// DNS header bytes 2..12 as stored: flags and the four counts
    /// (ARCOUNT without an OPT record).
    pub header: [u8; 10],
    body: [u8; KERNEL_BODY_MAX],
    body_len: u16,
    ttls: [(u16, u32); KERNEL_TTLS_MAX],
    n_ttl: u8,
}

impl Default for KernelEntry {
    fn default() -> Self {
        KernelEntry {
            key: KernelKey { name: [0; KERNEL_NAME_MAX], name_len: 0, qtype: Rtype(0), qclass: Class(0), flags: KeyFlags(0) },
            serve_until: Timestamp::ZERO,
            inserted: Timestamp::ZERO,
            header: [0; 10],
            body: [0; KERNEL_BODY_MAX],
            body_len: 0,
            ttls: [(0, 0); KERNEL_TTLS_MAX],
            n_ttl: 0,
        }
    }
}

impl KernelEntry {
    /// The records after the question (answer, authority, additional; no OPT).
    pub fn body(&self) -> &[u8] {
        &self.body[..usize::from(self.body_len)]
    }

    /// Each TTL field: its offset in [`body`](KernelEntry::body) and the
    /// stored TTL (as of [`inserted`](KernelEntry::inserted)).
    pub fn ttls(&self) -> &[(u16, u32)] {
        &self.ttls[..usize::from(self.n_ttl)]
    }

    /// Fills this entry from `reply`, a local answer that is the same for
    /// every client until the records change (its TTLs do not count down:
    /// no TTL field is rewritten, and it is served until it is taken out).
    /// `q_end` is where its question ends; `opt`, whether it ends with our
    /// OPT record. False, leaving the entry unusable, if the reply is
    /// truncated or its records are over [`KERNEL_BODY_MAX`].
    pub fn load_fixed(&mut self, key: KernelKey, reply: &[u8], q_end: usize, opt: bool, now: Timestamp) -> bool {
        let end = reply.len().saturating_sub(if opt { OPT_LEN } else { 0 });
        let Some(body) = reply.get(q_end..end) else { return false };
        if body.len() > KERNEL_BODY_MAX || reply[2] & 0x02 != 0 {
            return false;
        }
        self.key = key;
        self.header.copy_from_slice(&reply[2..HEADER_LEN]);
        if opt {
            let ar = u16::from_be_bytes([self.header[8], self.header[9]]).wrapping_sub(1);
            self.header[8..10].copy_from_slice(&ar.to_be_bytes());
        }
        self.body[..body.len()].copy_from_slice(body);
        self.body_len = body.len() as u16;
        self.n_ttl = 0;
        self.inserted = now;
        self.serve_until = Timestamp::from_nanos(u64::MAX);
        true
    }

    /// What the XDP program answers from this entry to the DNS message
    /// `query` at `now`, written to `out`: the reference model of
    /// bpf/kdns_xdp.c's tier (tests compare both with the engine). `None`
    /// where the program hands the query to userspace: not the plain
    /// shape it answers (one question, no records but one OPT of version
    /// 0 ending the message, uncompressed name), another key, or at or
    /// after `serve_until`.
    pub fn reply(&self, query: &[u8], now: Timestamp, udp_size: u16, out: &mut [u8]) -> Option<usize> {
        let q = KernelQuery::parse(query)?;
        if q.key != self.key || now >= self.serve_until {
            return None;
        }
        let body = self.body();
        let len = q.question.end + body.len() + if q.opt { OPT_LEN } else { 0 };
        let out = out.get_mut(..len)?;
        let stored = u16::from_be_bytes([self.header[0], self.header[1]]);
        let asked = u16::from_be_bytes([query[2], query[3]]);
        let flags = (stored & !(RD | CD)) | QR | (asked & (RD | CD));
        out[..2].copy_from_slice(&query[..2]);
        out[2..4].copy_from_slice(&flags.to_be_bytes());
        out[4..HEADER_LEN].copy_from_slice(&self.header[2..]);
        out[HEADER_LEN..q.question.end].copy_from_slice(&query[HEADER_LEN..q.question.end]);
        let at = q.question.end;
        out[at..at + body.len()].copy_from_slice(body);
        let age = (now.as_nanos().saturating_sub(self.inserted.as_nanos()) / NANOS) as u32;
        for &(off, ttl) in self.ttls() {
            let f = at + usize::from(off);
            out[f..f + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        if q.opt {
            let ar = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
            let o = &mut out[len - OPT_LEN..];
            o[0] = 0;
            o[1..3].copy_from_slice(&Rtype::OPT.0.to_be_bytes());
            o[3..5].copy_from_slice(&udp_size.to_be_bytes());
            o[5..9].copy_from_slice(&(if q.key.flags.0 & KeyFlags::DO != 0 { 0x8000u32 } else { 0 }).to_be_bytes());
            o[9..11].fill(0);
        }
        Some(len)
    }
}

const QR: u16 = 0x8000;
const RD: u16 = 0x0100;
const CD: u16 = 0x0010;

/// A query of the shape the XDP program answers, as it reads it.
#[derive(Debug, Clone)]
pub struct KernelQuery {
    /// The map key it looks up.
    pub key: KernelKey,
    /// The question's end (header and question bytes).
    pub question: core::ops::Range<usize>,
    /// Whether it carried an OPT record.
    pub opt: bool,
}

impl KernelQuery {
    /// Reads `query` as the XDP program does; `None` for anything it hands
    /// to userspace.
    pub fn parse(query: &[u8]) -> Option<KernelQuery> {
        let h = query.get(..HEADER_LEN)?;
        let flags = u16::from_be_bytes([h[2], h[3]]);
        let count = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
        // QR clear, OPCODE 0; one question, no answers or authority.
        if flags & 0xf800 != 0 || count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
            return None;
        }
        let mut at = HEADER_LEN;
        loop {
            let l = usize::from(*query.get(at)?);
            if l > 63 {
                return None;
            }
            at += 1 + l;
            if at - HEADER_LEN > KERNEL_NAME_MAX {
                return None;
            }
            if l == 0 {
                break;
            }
        }
        let name = &query[HEADER_LEN..at];
        let t = query.get(at..at + 4)?;
        let (qtype, qclass) = (Rtype(u16::from_be_bytes([t[0], t[1]])), Class(u16::from_be_bytes([t[2], t[3]])));
        let end = at + 4;
        let mut dnssec_ok = false;
        let opt = count(10) == 1;
        if opt {
            // Root owner, type OPT, version 0, ending the message.
            let o = query.get(end..end + OPT_LEN)?;
            if o[0] != 0 || u16::from_be_bytes([o[1], o[2]]) != Rtype::OPT.0 || o[6] != 0 {
                return None;
            }
            let rdlen = usize::from(u16::from_be_bytes([o[9], o[10]]));
            if end + OPT_LEN + rdlen != query.len() {
                return None;
            }
            dnssec_ok = o[7] & 0x80 != 0;
        } else if end != query.len() {
            return None;
        }
        let key = KernelKey::new(name, qtype, qclass, KeyFlags::new(dnssec_ok, flags & CD != 0))?;
        Some(KernelQuery { key, question: 0..end, opt })
    }
}

/// A queued promotion: which entry, checked again when it is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promotion {
    idx: u32,
    hash: u64,
}

/// The tier's state inside the cache.
#[derive(Debug)]
pub(super) struct Tier {
    pub(super) on: bool,
    pub(super) promote_after: u8,
    max_reply: usize,
    queue: Vec<Promotion>,
    queue_cap: usize,
    demoted: Vec<KernelKey>,
}

impl Tier {
    pub(super) fn off() -> Tier {
        Tier { on: false, promote_after: u8::MAX, max_reply: 0, queue: Vec::new(), queue_cap: 0, demoted: Vec::new() }
    }

    /// Queues entry `idx` for promotion; false if the queue is full.
    pub(super) fn queue(&mut self, idx: u32, hash: u64) -> bool {
        if self.queue.len() >= self.queue_cap {
            return false;
        }
        self.queue.push(Promotion { idx, hash });
        true
    }
}

impl Cache {
    /// Turns the in-kernel tier's bookkeeping on (allocates its queues).
    pub fn enable_kernel_tier(&mut self, cfg: KernelTierConfig) {
        let queue_cap = cfg.queue.max(1);
        self.tier = Tier {
            on: true,
            promote_after: cfg.promote_after.max(1),
            max_reply: cfg.max_reply,
            queue: Vec::with_capacity(queue_cap),
            queue_cap,
            demoted: Vec::with_capacity(self.entries.len().min(4096)),
        };
    }

    /// Turns the tier's bookkeeping off for good (the kernel cannot send
    /// its answers): nothing is queued any more, and entries thought to be
    /// in the kernel are ordinary entries again.
    pub fn disable_kernel_tier(&mut self) {
        self.tier = Tier::off();
        for e in &mut self.entries {
            e.state &= !(IN_KERNEL | PROMOTING);
            e.hits = 0;
        }
    }

    /// Entries whose copy is in the kernel (a scan of every entry: the
    /// worker keeps its own count).
    #[cfg(test)]
    pub(crate) fn in_kernel(&self) -> usize {
        self.entries.iter().filter(|e| e.state & IN_KERNEL != 0).count()
    }

    /// Exports the next entry queued for promotion into `out`, at `now`.
    /// Entries gone since they were queued, or that the kernel cannot
    /// answer, are skipped. Report the map insert with [`Cache::promoted`].
    pub fn next_promotion(&mut self, now: Timestamp, out: &mut KernelEntry) -> Option<Promotion> {
        while let Some(p) = self.tier.queue.pop() {
            let e = self.entries[p.idx as usize];
            if e.state & (LIVE | PROMOTING) != (LIVE | PROMOTING) || e.hash != p.hash {
                continue;
            }
            self.entries[p.idx as usize].state &= !PROMOTING;
            if now.as_nanos() >= e.expires {
                continue;
            }
            if !self.export_kernel(&e, now.as_nanos(), out) {
                self.entries[p.idx as usize].state |= NO_KERNEL;
                continue;
            }
            return Some(p);
        }
        None
    }

    /// The worker's report on a promotion: `inserted` if the copy is in the
    /// kernel's map now. `false` if the entry went meanwhile (then the
    /// worker deletes the copy it just inserted).
    pub fn promoted(&mut self, p: Promotion, inserted: bool) -> bool {
        let e = &mut self.entries[p.idx as usize];
        if e.state & LIVE == 0 || e.hash != p.hash {
            return false;
        }
        if inserted {
            e.state |= IN_KERNEL;
        }
        true
    }

    /// Keys whose kernel copy must be deleted, since the last call: the
    /// worker deletes them from the map before it answers again.
    pub fn take_demotions(&mut self, out: &mut Vec<KernelKey>) {
        out.append(&mut self.tier.demoted);
    }

    /// The worker took the copy of `key` out of the kernel (it went cold):
    /// the entry counts hits again.
    pub fn demote(&mut self, key: &KernelKey) {
        let Some(k) = self.key(key.name(), key.qtype, key.qclass, key.flags) else { return };
        if let Some(i) = self.find(&k) {
            let e = &mut self.entries[i as usize];
            e.state &= !IN_KERNEL;
            e.hits = 0;
        }
    }

    /// Queues the demotion of a removed in-kernel entry.
    pub(super) fn demote_removed(&mut self, e: &Entry) {
        // An entry with a longer name was never promoted.
        if let Some(key) = self.stored_key(e) {
            self.tier.demoted.push(key);
        }
    }

    /// The kernel key of entry `e`, read from its stored question (the
    /// name is stored lower case); `None` for a name over [`KERNEL_NAME_MAX`].
    fn stored_key(&self, e: &Entry) -> Option<KernelKey> {
        let qlen = usize::from(e.qname_len);
        if qlen > KERNEL_NAME_MAX {
            return None;
        }
        let mut name = [0u8; KERNEL_NAME_MAX];
        let mut tail = [0u8; 4];
        self.store.read_at(e.first_chunk, HEADER_LEN, &mut name[..qlen]);
        self.store.read_at(e.first_chunk, HEADER_LEN + qlen, &mut tail);
        Some(KernelKey {
            name,
            name_len: qlen as u8,
            qtype: Rtype(u16::from_be_bytes([tail[0], tail[1]])),
            qclass: Class(u16::from_be_bytes([tail[2], tail[3]])),
            flags: e.flags,
        })
    }

    /// Fills `out` from entry `e`; false if the kernel cannot answer it.
    fn export_kernel(&self, e: &Entry, now: u64, out: &mut KernelEntry) -> bool {
        let qlen = usize::from(e.qname_len);
        let len = usize::from(e.len);
        let q_end = HEADER_LEN + qlen + 4;
        let n_ttl = usize::from(e.n_ttl);
        if e.kind == EntryKind::ServFail || n_ttl > KERNEL_TTLS_MAX || len < q_end {
            return false;
        }
        let body_len = len - q_end;
        if body_len > KERNEL_BODY_MAX || len + OPT_LEN > self.tier.max_reply {
            return false;
        }
        let Some(key) = self.stored_key(e) else { return false };
        out.key = key;
        self.store.read_at(e.first_chunk, 2, &mut out.header);
        self.store.read_at(e.first_chunk, q_end, &mut out.body[..body_len]);
        out.body_len = body_len as u16;
        for i in 0..n_ttl {
            let mut o = [0u8; 2];
            self.store.read_at(e.first_chunk, len + 2 * i, &mut o);
            let at = usize::from(u16::from_be_bytes(o));
            if at < q_end || at + 4 > len {
                return false;
            }
            let mut ttl = [0u8; 4];
            self.store.read_at(e.first_chunk, at, &mut ttl);
            out.ttls[i] = ((at - q_end) as u16, u32::from_be_bytes(ttl));
        }
        out.n_ttl = n_ttl as u8;
        out.inserted = Timestamp::from_nanos(e.inserted);
        // Serve until the entry expires, or until a hit would ask for an
        // early refresh (the condition of `lookup`), whichever is first.
        let mut until = e.expires;
        if e.orig_ttl >= self.cfg.prefetch_min_ttl {
            let early = u64::from(e.orig_ttl) * NANOS * u64::from(self.cfg.prefetch_percent) / 100;
            until = until.saturating_sub(early);
        }
        if until <= now {
            return false;
        }
        out.serve_until = Timestamp::from_nanos(until);
        true
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;
