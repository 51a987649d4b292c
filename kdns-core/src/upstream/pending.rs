//! The pending table: every query forwarded to a backend and not yet
//! answered, with its deadline.
//!
//! Preallocated and bounded: `capacity` slots and an index from the 16-bit
//! outgoing ID to the slot (64 Ki entries, 256 KiB). Every try uses the
//! same timeout, so deadlines are armed in time order: the slots waiting
//! for an answer form an intrusive doubly linked list in deadline order,
//! and arming, answering and expiring are all O(1) with nothing left behind.

use crate::time::Timestamp;
use crate::upstream::BackendId;

const NONE: u32 = u32::MAX;

/// Refers to one pending query: a slot and its generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle {
    slot: u32,
    gen: u32,
}

/// Where a pending query is: the backend it was last sent to, with which
/// ID and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InFlight {
    /// The backend asked.
    pub backend: BackendId,
    /// The ID it was asked with.
    pub id: u16,
    /// When it was sent.
    pub sent_at: Timestamp,
}

#[derive(Debug)]
struct Slot<Q> {
    gen: u32,
    used: bool,
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
    head: u32,
    tail: u32,
}

impl<Q: Default> Pending<Q> {
    /// A table of `capacity` slots (at most 65 536: one per ID).
    pub fn new(capacity: usize) -> Pending<Q> {
        let capacity = capacity.clamp(1, 1 << 16);
        Pending {
            slots: (0..capacity)
                .map(|_| Slot { gen: 0, used: false, flight: None, deadline: Timestamp::ZERO, prev: NONE, next: NONE, query: Q::default() })
                .collect(),
            free: (0..capacity as u32).rev().collect(),
            by_id: vec![NONE; 1 << 16],
            head: NONE,
            tail: NONE,
        }
    }
}

impl<Q> Pending<Q> {
    /// Slots in use.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
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

    /// Records that `h` was sent to `backend` with `id` at `now` and arms
    /// its deadline, which must not be earlier than any armed before (all
    /// tries use one timeout). The previous ID of `h`, if any, is released
    /// (a late answer to it is then unknown). Returns false if `h` is gone
    /// or `id` is taken.
    pub fn sent(&mut self, h: Handle, backend: BackendId, id: u16, now: Timestamp, deadline: Timestamp) -> bool {
        if self.slot(h).is_none() || self.by_id[id as usize] != NONE {
            return false;
        }
        self.release_id(h);
        self.by_id[id as usize] = h.slot;
        let i = h.slot;
        let tail = self.tail;
        let s = &mut self.slots[i as usize];
        s.flight = Some(InFlight { backend, id, sent_at: now });
        s.deadline = deadline;
        s.prev = tail;
        s.next = NONE;
        match tail {
            NONE => self.head = i,
            t => self.slots[t as usize].next = i,
        }
        self.tail = i;
        true
    }

    /// Frees the ID of `h` and takes it off the deadline list.
    fn release_id(&mut self, h: Handle) {
        let i = h.slot as usize;
        let Some(f) = self.slots[i].flight.take() else { return };
        if self.by_id[f.id as usize] == h.slot {
            self.by_id[f.id as usize] = NONE;
        }
        let (prev, next) = (self.slots[i].prev, self.slots[i].next);
        match prev {
            NONE => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NONE => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
        self.slots[i].prev = NONE;
        self.slots[i].next = NONE;
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

    /// The earliest deadline of a query waiting for an answer.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.slots.get(self.head as usize).map(|s| s.deadline)
    }

    /// The next query whose deadline has passed at `now`; its ID is
    /// released (a late answer is then unknown) and it stays in the table
    /// for the caller to retry or end.
    pub fn pop_expired(&mut self, now: Timestamp) -> Option<(Handle, InFlight)> {
        let s = self.slots.get(self.head as usize)?;
        if s.deadline > now {
            return None;
        }
        let h = Handle { slot: self.head, gen: s.gen };
        let f = s.flight?;
        self.release_id(h);
        Some((h, f))
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
        assert!(p.sent(h, BackendId(1), 777, t(0), t(100)));
        assert_eq!(p.by_id(777), Some(h));
        assert_eq!(p.by_id(778), None);
        assert_eq!(p.get(h), Some(&42));
        assert!(p.remove(h));
        assert_eq!(p.by_id(777), None);
        assert_eq!(p.get(h), None, "a stale handle finds nothing");
        assert_eq!(p.pop_expired(t(1000)), None, "answered queries do not time out");
    }

    #[test]
    fn expiry_in_order_and_retry_rearms() {
        let mut p: Pending<()> = Pending::new(4);
        let a = p.insert(|_| {}).unwrap();
        let b = p.insert(|_| {}).unwrap();
        p.sent(a, BackendId(0), 1, t(0), t(100));
        p.sent(b, BackendId(0), 2, t(10), t(110));
        assert_eq!(p.next_deadline(), Some(t(100)));
        assert_eq!(p.pop_expired(t(99)), None);
        let (h, f) = p.pop_expired(t(100)).unwrap();
        assert_eq!((h, f.id, f.backend), (a, 1, BackendId(0)));
        assert_eq!(p.by_id(1), None, "the timed-out ID is released");
        // Retry a on another backend with a new ID.
        assert!(p.sent(a, BackendId(1), 3, t(100), t(200)));
        assert_eq!(p.pop_expired(t(150)).map(|x| x.0), Some(b));
        assert_eq!(p.pop_expired(t(150)), None);
        assert_eq!(p.pop_expired(t(200)).map(|x| (x.0, x.1.backend)), Some((a, BackendId(1))));
    }

    #[test]
    fn bounded_and_ids_unique() {
        let mut p: Pending<()> = Pending::new(2);
        let a = p.insert(|_| {}).unwrap();
        let b = p.insert(|_| {}).unwrap();
        assert!(p.is_full());
        assert!(p.insert(|_| {}).is_none());
        assert!(p.sent(a, BackendId(0), 9, t(0), t(1)));
        assert!(!p.id_free(9));
        assert!(!p.sent(b, BackendId(0), 9, t(0), t(1)), "ID in use");
        assert!(p.sent(b, BackendId(0), 10, t(0), t(1)));
        assert!(p.sent(b, BackendId(0), 11, t(0), t(2)), "re-sent: ID 10 released");
        assert!(p.id_free(10));
        p.remove(a);
        assert!(p.id_free(9));
        assert_eq!(p.len(), 1);
    }
}
