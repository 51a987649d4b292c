//! Who may hold a TCP connection: the per-client cap and the order in
//! which connections are given up when the table is full.
//!
//! Sans-IO: the TCP server keeps its connections in a slab (`Vec` index =
//! connection index) and tells the table what happens to them; the table
//! answers "admit", "over this client's cap" or "admit after closing that
//! one", and which connections have been idle too long.
//!
//! Ordering: every connection sits in one of two intrusive doubly linked
//! lists threaded through a `Vec` indexed like the slab, `quiet` (no query
//! in progress, nothing left to write) and `busy`. Any activity moves a
//! connection to the tail of its list, so each list is in last-activity
//! order and its head is the longest-idle connection. Choosing a victim,
//! moving, inserting and removing are O(1); the idle sweep pops expired
//! heads, O(1) per connection closed. (A lazy min-heap would also do, but
//! it needs stale-entry skipping and grows with every touch; an LRU list
//! is what this order needs.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const NIL: usize = usize::MAX;
const QUIET: usize = 0;
const BUSY: usize = 1;

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Room for it.
    Yes,
    /// Its client already holds its share: close it at once.
    OverClientCap,
    /// The table is full: close connection `victim` first (`busy`: it had
    /// a query in progress or unsent answers; only chosen when no quiet
    /// connection is left).
    Evict { victim: usize, busy: bool },
}

#[derive(Debug, Clone)]
struct Node {
    prev: usize,
    next: usize,
    /// `QUIET` or `BUSY`; `NIL` when the slot is not in the table.
    list: usize,
    last: Instant,
    client: IpAddr,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: usize,
    tail: usize,
}

/// The connection table's order and per-client counts.
#[derive(Debug)]
pub(super) struct Table {
    nodes: Vec<Node>,
    lists: [List; 2],
    per_client: HashMap<IpAddr, usize>,
    open: usize,
    max: usize,
    max_per_client: usize,
}

impl Table {
    /// A table for at most `max` connections, `max_per_client` from one
    /// address (both at least 1).
    pub(super) fn new(max: usize, max_per_client: usize) -> Table {
        Table {
            nodes: Vec::new(),
            lists: [List { head: NIL, tail: NIL }; 2],
            per_client: HashMap::new(),
            open: 0,
            max: max.max(1),
            max_per_client: max_per_client.max(1),
        }
    }

    /// Connections in the table.
    pub(super) fn open(&self) -> usize {
        self.open
    }

    /// Connections held by `client`.
    #[cfg(test)]
    pub(super) fn held_by(&self, client: IpAddr) -> usize {
        self.per_client.get(&client).copied().unwrap_or(0)
    }

    /// Whether a new connection from `client` may come in, and at what cost.
    pub(super) fn admit(&self, client: IpAddr) -> Admit {
        if self.per_client.get(&client).copied().unwrap_or(0) >= self.max_per_client {
            return Admit::OverClientCap;
        }
        if self.open < self.max {
            return Admit::Yes;
        }
        match (self.lists[QUIET].head, self.lists[BUSY].head) {
            (NIL, NIL) => Admit::Yes, // unreachable with max >= 1; admitting is the safe answer
            (NIL, b) => Admit::Evict { victim: b, busy: true },
            (q, _) => Admit::Evict { victim: q, busy: false },
        }
    }

    /// Connection `idx` from `client` is open as of `now` (quiet).
    pub(super) fn insert(&mut self, idx: usize, client: IpAddr, now: Instant) {
        if self.nodes.len() <= idx {
            self.nodes.resize(idx + 1, Node { prev: NIL, next: NIL, list: NIL, last: now, client });
        }
        if self.nodes[idx].list != NIL {
            self.remove(idx);
        }
        self.nodes[idx].client = client;
        self.nodes[idx].last = now;
        self.push_tail(QUIET, idx);
        *self.per_client.entry(client).or_insert(0) += 1;
        self.open += 1;
    }

    /// Connection `idx` is gone. Nothing happens if it was not in the table.
    pub(super) fn remove(&mut self, idx: usize) {
        if self.nodes.get(idx).is_none_or(|n| n.list == NIL) {
            return;
        }
        self.unlink(idx);
        let client = self.nodes[idx].client;
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
        self.open -= 1;
    }

    /// Something happened on connection `idx` at `now`; `busy`: it has a
    /// query in progress or an answer not yet written out.
    pub(super) fn touch(&mut self, idx: usize, now: Instant, busy: bool) {
        if self.nodes.get(idx).is_none_or(|n| n.list == NIL) {
            return;
        }
        self.unlink(idx);
        self.nodes[idx].last = now;
        self.push_tail(if busy { BUSY } else { QUIET }, idx);
    }

    /// A quiet connection idle for `idle` or longer at `now`, the
    /// longest-idle first (the caller closes it and asks again).
    pub(super) fn expired(&self, now: Instant, idle: Duration) -> Option<usize> {
        let h = self.lists[QUIET].head;
        (h != NIL && now.saturating_duration_since(self.nodes[h].last) >= idle).then_some(h)
    }

    fn push_tail(&mut self, list: usize, idx: usize) {
        let tail = self.lists[list].tail;
        let n = &mut self.nodes[idx];
        n.list = list;
        n.prev = tail;
        n.next = NIL;
        if tail == NIL {
            self.lists[list].head = idx;
        } else {
            self.nodes[tail].next = idx;
        }
        self.lists[list].tail = idx;
    }

    fn unlink(&mut self, idx: usize) {
        let Node { prev, next, list, .. } = self.nodes[idx];
        if prev == NIL {
            self.lists[list].head = next;
        } else {
            self.nodes[prev].next = next;
        }
        if next == NIL {
            self.lists[list].tail = prev;
        } else {
            self.nodes[next].prev = prev;
        }
        let n = &mut self.nodes[idx];
        n.prev = NIL;
        n.next = NIL;
        n.list = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    /// A table of `max` connections, `per_client` per client, holding
    /// connection `i` from `clients[i]`, last active `i` ms after `t0`.
    fn filled(max: usize, per_client: usize, t0: Instant, clients: &[&str]) -> Table {
        let mut t = Table::new(max, per_client);
        for (i, c) in clients.iter().enumerate() {
            t.insert(i, ip(c), at(t0, i as u64));
        }
        t
    }

    #[test]
    fn a_client_over_its_cap_is_refused_others_are_not() {
        let mut t = filled(10, 2, Instant::now(), &["10.0.0.1", "10.0.0.1"]);
        assert_eq!(t.admit(ip("10.0.0.1")), Admit::OverClientCap);
        assert_eq!(t.admit(ip("10.0.0.2")), Admit::Yes);
        t.remove(0);
        assert_eq!(t.admit(ip("10.0.0.1")), Admit::Yes);
        assert_eq!(t.held_by(ip("10.0.0.1")), 1);
    }

    #[test]
    fn a_full_table_gives_up_the_longest_idle_quiet_connection() {
        let t0 = Instant::now();
        let mut t = filled(3, 3, t0, &["10.0.0.1"; 3]);
        // 0 has spoken since: 1 is now the longest idle.
        t.touch(0, at(t0, 3), false);
        assert_eq!(t.admit(ip("10.0.0.9")), Admit::Evict { victim: 1, busy: false });
        // 1 waits for a backend: a quiet one goes first, even if younger.
        t.touch(1, at(t0, 4), true);
        assert_eq!(t.admit(ip("10.0.0.9")), Admit::Evict { victim: 2, busy: false });
        t.touch(2, at(t0, 5), true);
        t.touch(0, at(t0, 6), true);
        // All busy: the longest-idle busy one.
        assert_eq!(t.admit(ip("10.0.0.9")), Admit::Evict { victim: 1, busy: true });
        t.remove(1);
        assert_eq!(t.admit(ip("10.0.0.9")), Admit::Yes);
        assert_eq!(t.open(), 2);
    }

    #[test]
    fn the_per_client_cap_is_checked_before_eviction() {
        let t = filled(2, 1, Instant::now(), &["10.0.0.1", "10.0.0.2"]);
        assert_eq!(t.admit(ip("10.0.0.1")), Admit::OverClientCap);
        assert_eq!(t.admit(ip("10.0.0.3")), Admit::Evict { victim: 0, busy: false });
    }

    #[test]
    fn expiry_walks_quiet_connections_oldest_first_and_skips_busy_ones() {
        let t0 = Instant::now();
        let mut t = Table::new(10, 10);
        for i in 0..4 {
            t.insert(i, ip("10.0.0.1"), at(t0, i as u64 * 100));
        }
        t.touch(0, at(t0, 50), true);
        let idle = Duration::from_millis(250);
        let now = at(t0, 420);
        let mut closed = Vec::new();
        while let Some(i) = t.expired(now, idle) {
            closed.push(i);
            t.remove(i);
        }
        // 0 is busy (never swept), 1 idle 320 ms, 2 idle 220 ms.
        assert_eq!(closed, vec![1]);
        assert_eq!(t.open(), 3);
    }

    #[test]
    fn slots_are_reused_and_unknown_ones_ignored() {
        let t0 = Instant::now();
        let mut t = Table::new(4, 4);
        t.remove(7);
        t.touch(7, t0, true);
        t.insert(2, ip("::1"), t0);
        t.remove(2);
        t.remove(2);
        assert_eq!(t.open(), 0);
        assert_eq!(t.held_by(ip("::1")), 0);
        t.insert(2, ip("10.0.0.1"), t0);
        assert_eq!((t.open(), t.held_by(ip("10.0.0.1"))), (1, 1));
        assert_eq!(t.expired(at(t0, 10), Duration::from_millis(10)), Some(2));
    }
}
