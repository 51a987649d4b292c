//! The pending table: every query forwarded to a backend and not yet
//! answered, with its deadline.
//!
//! Preallocated and bounded: `capacity` slots and an index from the 16-bit
//! outgoing ID to the slot (64 Ki entries, 256 KiB). A query keeps its ID
//! for all its tries, so a late answer from a backend asked earlier is
//! still recognised.
//!
//! Deadlines differ per backend (each try waits for that backend's own
//! retransmission timeout), so they are not armed in time order. They sit
//! in a hashed timing wheel: [`WHEEL`] buckets of [`TICK_NS`] nanoseconds,
//! each an intrusive doubly linked list through the slots, and a bitmap of
//! the non-empty buckets. Arming and disarming are O(1); finding the next
//! due bucket is a scan of the bitmap (128 words at most). A deadline
//! further away than the wheel's horizon is filed in the last bucket and
//! filed again when that bucket comes round. A binary heap would need
//! lazy deletion, whose dead entries grow with the answer rate rather than
//! with the table; the wheel stays within the slots it has.

use crate::time::Timestamp;
use crate::upstream::BackendId;

const NONE: u32 = u32::MAX;

/// Width of one wheel bucket: 2^20 ns, about 1.05 ms.
pub const TICK_NS: u64 = 1 << 20;

/// Buckets in the wheel: with [`TICK_NS`] a horizon of about 8.6 s.
pub const WHEEL: usize = 8192;

const WORDS: usize = WHEEL / 64;

/// Refers to one pending query: a slot and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    slot: u32,
    gen: u32,
}

/// Where a pending query is: the backend it was last sent to, with which
/// ID, from which source-port slot and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// The backend asked last.
    pub backend: BackendId,
    /// The ID it was asked with (the same for every try).
    pub id: u16,
    /// The driver's source-port slot it was sent from.
    pub port: u16,
    /// When the last try was sent.
    pub sent_at: Timestamp,
}

#[derive(Debug)]
struct Slot<Q> {
    gen: u32,
    used: bool,
    armed: bool,
    bucket: u32,
    flight: Option<InFlight>,
    deadline: Timestamp,
    prev: u32,
    next: u32,
    query: Q,
}

/// A bounded table of pending queries of type `Q`.
#[derive(Debug)]
pub struct Pending<Q> {
    slots: Vec<Slot<Q>>,
    free: Vec<u32>,
    by_id: Vec<u32>,
    heads: Vec<u32>,
    bits: Vec<u64>,
    /// The first tick not yet fully processed.
    cursor: u64,
    armed: usize,
}

fn tick(t: Timestamp) -> u64 {
    t.as_nanos() / TICK_NS
}

impl<Q: Default> Pending<Q> {
    /// A table of `capacity` slots (at most 65 536: one per ID).
    pub fn new(capacity: usize) -> Pending<Q> {
        let capacity = capacity.clamp(1, 1 << 16);
        Pending {
            slots: (0..capacity)
                .map(|_| Slot {
                    gen: 0,
                    used: false,
                    armed: false,
                    bucket: 0,
                    flight: None,
                    deadline: Timestamp::ZERO,
                    prev: NONE,
                    next: NONE,
                    query: Q::default(),
                })
                .collect(),
            free: (0..capacity as u32).rev().collect(),
            by_id: vec![NONE; 1 << 16],
            heads: vec![NONE; WHEEL],
            bits: vec![0; WORDS],
            cursor: 0,
            armed: 0,
        }
    }
}

impl<Q> Pending<Q> {
    /// Slots in use.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Whether no query is pending.
    pub fn is_empty(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// Whether no slot is free.
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Takes a slot for a new query; `fill` writes it in place (no copy of
    /// the large query record). `None` when the table is full.
    pub fn insert(&mut self, fill: impl FnOnce(&mut Q)) -> Option<Handle> {
        let slot = self.free.pop()?;
        let s = &mut self.slots[slot as usize];
        s.used = true;
        s.flight = None;
        fill(&mut s.query);
        Some(Handle { slot, gen: s.gen })
    }

    fn slot(&self, h: Handle) -> Option<&Slot<Q>> {
        self.slots.get(h.slot as usize).filter(|s| s.used && s.gen == h.gen)
    }

    /// The query behind `h`, if it is still pending.
    pub fn get(&self, h: Handle) -> Option<&Q> {
        self.slot(h).map(|s| &s.query)
    }

    /// The query behind `h`, mutable.
    pub fn get_mut(&mut self, h: Handle) -> Option<&mut Q> {
        self.slots.get_mut(h.slot as usize).filter(|s| s.used && s.gen == h.gen).map(|s| &mut s.query)
    }

    /// Where the query behind `h` was last sent.
    pub fn flight(&self, h: Handle) -> Option<InFlight> {
        self.slot(h).and_then(|s| s.flight)
    }

    /// Whether `id` is free to use for a new outgoing query.
    pub fn id_free(&self, id: u16) -> bool {
        self.by_id[id as usize] == NONE
    }

    /// Records that `h` was sent to `backend` with `id` from source-port
    /// slot `port` at `now`, and arms its deadline. A query keeps its ID
    /// across tries: `id` must be free, or already the ID of `h`. Returns
    /// false if `h` is gone or `id` belongs to another query.
    pub fn sent(&mut self, h: Handle, backend: BackendId, id: u16, port: u16, now: Timestamp, deadline: Timestamp) -> bool {
        let Some(s) = self.slot(h) else { return false };
        let own = s.flight.is_some_and(|f| f.id == id);
        if !own && self.by_id[id as usize] != NONE {
            return false;
        }
        self.release_id(h);
        self.by_id[id as usize] = h.slot;
        self.slots[h.slot as usize].flight = Some(InFlight { backend, id, port, sent_at: now });
        self.arm(h.slot, now, deadline);
        true
    }

    /// Moves the deadline of `h` (still waiting on the same try). False if
    /// `h` is gone or was never sent.
    pub fn rearm(&mut self, h: Handle, now: Timestamp, deadline: Timestamp) -> bool {
        if self.slot(h).is_none_or(|s| s.flight.is_none()) {
            return false;
        }
        self.arm(h.slot, now, deadline);
        true
    }

    fn bucket_tick(&self, deadline: Timestamp) -> u64 {
        tick(deadline).clamp(self.cursor, self.cursor + WHEEL as u64 - 1)
    }

    fn arm(&mut self, i: u32, now: Timestamp, deadline: Timestamp) {
        self.disarm(i);
        if self.armed == 0 {
            self.cursor = self.cursor.max(tick(now));
        }
        let b = (self.bucket_tick(deadline) % WHEEL as u64) as usize;
        let head = self.heads[b];
        let s = &mut self.slots[i as usize];
        s.armed = true;
        s.bucket = b as u32;
        s.deadline = deadline;
        s.prev = NONE;
        s.next = head;
        if head != NONE {
            self.slots[head as usize].prev = i;
        }
        self.heads[b] = i;
        self.bits[b / 64] |= 1 << (b % 64);
        self.armed += 1;
    }

    fn disarm(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        if !s.armed {
            return;
        }
        s.armed = false;
        let (prev, next, b) = (s.prev, s.next, s.bucket as usize);
        s.prev = NONE;
        s.next = NONE;
        if next != NONE {
            self.slots[next as usize].prev = prev;
        }
        if prev != NONE {
            self.slots[prev as usize].next = next;
        } else {
            self.heads[b] = next;
            if next == NONE {
                self.bits[b / 64] &= !(1 << (b % 64));
            }
        }
        self.armed -= 1;
    }

    /// Frees the ID of `h` and disarms it.
    fn release_id(&mut self, h: Handle) {
        let i = h.slot as usize;
        self.disarm(h.slot);
        let Some(f) = self.slots[i].flight.take() else { return };
        if self.by_id[f.id as usize] == h.slot {
            self.by_id[f.id as usize] = NONE;
        }
    }

    /// The pending query an answer with `id` belongs to.
    pub fn by_id(&self, id: u16) -> Option<Handle> {
        let slot = self.by_id[id as usize];
        let s = self.slots.get(slot as usize)?;
        (s.used && s.flight.is_some_and(|f| f.id == id)).then_some(Handle { slot, gen: s.gen })
    }

    /// Ends `h` (answered, given up, or dropped): frees its slot and ID.
    pub fn remove(&mut self, h: Handle) -> bool {
        if self.slot(h).is_none() {
            return false;
        }
        self.release_id(h);
        let s = &mut self.slots[h.slot as usize];
        s.used = false;
        s.gen = s.gen.wrapping_add(1);
        self.free.push(h.slot);
        true
    }

    /// The first non-empty bucket at or after the cursor, as a tick.
    fn next_bucket(&self) -> Option<u64> {
        if self.armed == 0 {
            return None;
        }
        let start = (self.cursor % WHEEL as u64) as usize;
        // Words from the cursor's word round to it again (its low bits
        // before the cursor last, as the wheel's far end).
        for k in 0..=WORDS {
            let w = (start / 64 + k) % WORDS;
            let mut word = self.bits[w];
            if k == 0 {
                word &= u64::MAX << (start % 64);
            } else if k == WORDS {
                word &= !(u64::MAX << (start % 64));
            }
            if word != 0 {
                let b = w * 64 + word.trailing_zeros() as usize;
                let offset = (b + WHEEL - start) % WHEEL;
                return Some(self.cursor + offset as u64);
            }
        }
        None
    }

    /// When the next deadline is due (at most one tick late for a deadline
    /// beyond the wheel's horizon, which is then filed again).
    pub fn next_deadline(&self) -> Option<Timestamp> {
        let t = self.next_bucket()?;
        let b = (t % WHEEL as u64) as usize;
        let mut i = self.heads[b];
        let mut earliest = Timestamp::from_nanos((t + 1).saturating_mul(TICK_NS));
        while i != NONE {
            let s = &self.slots[i as usize];
            earliest = earliest.min(s.deadline);
            i = s.next;
        }
        Some(earliest)
    }

    /// The next query whose deadline has passed at `now`. It is disarmed,
    /// keeps its ID (a late answer still finds it) and stays in the table
    /// for the caller to re-send, re-arm or end.
    pub fn pop_expired(&mut self, now: Timestamp) -> Option<(Handle, InFlight)> {
        let now_tick = tick(now);
        while let Some(t) = self.next_bucket() {
            if t > now_tick {
                break;
            }
            self.cursor = t;
            let b = (t % WHEEL as u64) as usize;
            let mut i = self.heads[b];
            while i != NONE {
                let s = &self.slots[i as usize];
                let (next, deadline, gen, flight) = (s.next, s.deadline, s.gen, s.flight);
                if deadline <= now {
                    self.disarm(i);
                    if let Some(f) = flight {
                        return Some((Handle { slot: i, gen }, f));
                    }
                } else if tick(deadline) > t {
                    // Filed here from beyond the horizon: file it again.
                    self.arm(i, now, deadline);
                }
                i = next;
            }
            if t == now_tick {
                // What is left here is due later within this tick.
                return None;
            }
            self.cursor = t + 1;
        }
        self.cursor = self.cursor.max(now_tick);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn answer_by_id_then_remove() {
        let mut p: Pending<u32> = Pending::new(4);
        let h = p.insert(|q| *q = 42).unwrap();
        assert!(p.sent(h, BackendId(1), 777, 3, t(0), t(100)));
        assert_eq!(p.by_id(777), Some(h));
        assert_eq!(p.flight(h).map(|f| f.port), Some(3));
        assert_eq!(p.by_id(778), None);
        assert_eq!(p.get(h), Some(&42));
        assert!(p.remove(h));
        assert_eq!(p.by_id(777), None);
        assert_eq!(p.get(h), None, "a stale handle finds nothing");
        assert_eq!(p.pop_expired(t(1000)), None, "answered queries do not time out");
        assert_eq!(p.next_deadline(), None);
    }

    #[test]
    fn expiry_in_deadline_order_whatever_the_arming_order() {
        let mut p: Pending<()> = Pending::new(8);
        let a = p.insert(|_| {}).unwrap();
        let b = p.insert(|_| {}).unwrap();
        let c = p.insert(|_| {}).unwrap();
        p.sent(a, BackendId(0), 1, 0, t(0), t(800));
        p.sent(b, BackendId(1), 2, 0, t(10), t(60));
        p.sent(c, BackendId(1), 3, 0, t(20), t(300));
        assert_eq!(p.next_deadline(), Some(t(60)));
        assert_eq!(p.pop_expired(t(59)), None);
        assert_eq!(p.pop_expired(t(60)).map(|x| x.0), Some(b));
        assert_eq!(p.by_id(2), Some(b), "an expired try keeps its ID for a late answer");
        assert_eq!(p.pop_expired(t(60)), None);
        assert_eq!(p.next_deadline(), Some(t(300)));
        assert_eq!(p.pop_expired(t(900)).map(|x| x.0), Some(c));
        assert_eq!(p.pop_expired(t(900)).map(|x| x.0), Some(a));
        assert_eq!(p.pop_expired(t(900)), None);
    }

    #[test]
    fn retries_keep_the_id_and_rearm() {
        let mut p: Pending<()> = Pending::new(4);
        let a = p.insert(|_| {}).unwrap();
        p.sent(a, BackendId(0), 9, 0, t(0), t(100));
        let (h, f) = p.pop_expired(t(100)).unwrap();
        assert_eq!((h, f.backend), (a, BackendId(0)));
        assert!(p.sent(a, BackendId(1), 9, 2, t(100), t(150)), "the same ID for the next try");
        assert_eq!(p.flight(a).map(|f| (f.backend, f.port)), Some((BackendId(1), 2)));
        assert!(p.rearm(a, t(100), t(400)));
        assert_eq!(p.pop_expired(t(399)), None);
        assert_eq!(p.next_deadline(), Some(t(400)));
        assert!(p.pop_expired(t(400)).is_some());
    }

    #[test]
    fn deadlines_beyond_the_horizon_fire_on_time() {
        let mut p: Pending<()> = Pending::new(4);
        let a = p.insert(|_| {}).unwrap();
        let b = p.insert(|_| {}).unwrap();
        p.sent(a, BackendId(0), 1, 0, t(0), t(20_000));
        p.sent(b, BackendId(0), 2, 0, t(0), t(5));
        assert_eq!(p.pop_expired(t(5)).map(|x| x.0), Some(b));
        let mut now = 5;
        while now < 19_990 {
            now += 1_000;
            assert_eq!(p.pop_expired(t(now.min(19_999))), None, "not due at {now} ms");
            assert!(p.next_deadline().is_some_and(|d| d <= t(20_000)));
        }
        assert_eq!(p.pop_expired(t(20_000)).map(|x| x.0), Some(a));
    }

    #[test]
    fn a_clock_jump_expires_everything_due() {
        let mut p: Pending<()> = Pending::new(64);
        let hs: Vec<Handle> = (0..50u16)
            .map(|k| {
                let h = p.insert(|_| {}).unwrap();
                p.sent(h, BackendId(0), k, 0, t(0), t(10 + u64::from(k) * 37));
                h
            })
            .collect();
        let mut got = vec![];
        while let Some((h, _)) = p.pop_expired(t(1_000_000)) {
            got.push(h);
        }
        assert_eq!(got.len(), hs.len());
        assert_eq!(got, hs, "in deadline order");
    }

    #[test]
    fn bounded_and_ids_unique() {
        let mut p: Pending<()> = Pending::new(2);
        let a = p.insert(|_| {}).unwrap();
        let b = p.insert(|_| {}).unwrap();
        assert!(p.is_full());
        assert!(p.insert(|_| {}).is_none());
        assert!(p.sent(a, BackendId(0), 9, 0, t(0), t(1)));
        assert!(!p.id_free(9));
        assert!(!p.sent(b, BackendId(0), 9, 0, t(0), t(1)), "ID in use");
        assert!(p.sent(b, BackendId(0), 10, 0, t(0), t(1)));
        assert!(p.sent(b, BackendId(0), 11, 0, t(0), t(2)), "a new ID releases the old one");
        assert!(p.id_free(10));
        p.remove(a);
        assert!(p.id_free(9));
        assert_eq!(p.len(), 1);
    }
}
