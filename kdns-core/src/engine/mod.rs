//! The sans-IO engine: one per worker, driven the same way by the AF_XDP
//! driver, the socket driver, tests and benchmarks.
//!
//! ```text
//!   client query  --handle_query(now, client, bytes, out)-->  Verdict
//!                       Reply(len)        answer is in out[..len]: send it back
//!                       Forward{..}       query for a backend is in out[..len]
//!                       Drop(reason)      counted; send nothing
//!   backend answer --handle_backend_answer(now, from, bytes, out)--> AnswerVerdict
//!   timers        --poll_timeout() / handle_timeout(now)
//!   queued sends  --poll_transmit(now, out)--> Option<Transmit>   (retries,
//!                   probes, early refreshes, SERVFAIL / stale answers)
//! ```
//!
//! After every `handle_*` call the driver drains `poll_transmit` until it
//! returns `None`, and calls `handle_timeout` once `poll_timeout` has passed.
//! Nothing here reads a clock, allocates after construction on the query
//! path, or blocks.

mod acl;
mod reply;
mod stats;

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;

pub use acl::{Acl, IpNet, IpNetError};
pub use stats::{DropReason, EngineStats, LATENCY_BOUNDS};

use crate::cache::{Cache, CacheConfig, KeyFlags, Lookup};
use crate::records::{LocalAnswer, LocalQuery, Snapshot};
use crate::time::Timestamp;
use crate::upstream::pending::{Handle, Pending};
use crate::upstream::{BackendId, BackendSpec, HealthConfig, Pool, PoolError, Selection, Transition, TriedSet};
use crate::wire::{
    encode_name, flags, quick_query, Class, Header, Message, MessageError, Opcode, OptSpec, QuickEdns, QuickQuery, Rcode, Rtype, OPT_LEN,
};

/// How the engine behaves; every field has a sane default.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The cache.
    pub cache: CacheConfig,
    /// The backends misses go to.
    pub backends: Vec<BackendSpec>,
    /// When a backend is marked down and taken back.
    pub health: HealthConfig,
    /// How a backend is chosen.
    pub selection: Selection,
    /// Who may query (others get REFUSED).
    pub acl: Acl,
    /// The UDP payload size we advertise and honour at most (RFC 9715
    /// suggests 1232 to avoid fragmentation).
    pub udp_size: u16,
    /// How long one try waits for a backend before asking the next.
    pub try_timeout: Duration,
    /// Most backends asked for one query.
    pub max_tries: u8,
    /// After this long a client gets a stale answer or SERVFAIL.
    pub query_deadline: Duration,
    /// Most queries in flight to backends at once.
    pub pending_capacity: usize,
    /// The name probed on a down backend (with `CH TXT`; any answer counts).
    pub probe_name: String,
    /// Seeds the query IDs and the cache hash. Give each worker its own
    /// random value.
    pub seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache: CacheConfig::default(),
            backends: Vec::new(),
            health: HealthConfig::default(),
            selection: Selection::RoundRobin,
            acl: Acl::loopback(),
            udp_size: 1232,
            try_timeout: Duration::from_millis(800),
            max_tries: 3,
            query_deadline: Duration::from_millis(3000),
            pending_capacity: 4096,
            probe_name: "id.server.".into(),
            seed: 0x6b64_6e73_2d73_6565,
        }
    }
}

/// Why an engine could not be built.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The backend list is unusable.
    Backends(PoolError),
    /// The probe name is not a valid domain name.
    ProbeName(String),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::Backends(e) => write!(f, "backends: {e}"),
            ConfigError::ProbeName(n) => write!(f, "probe name '{n}' is not a valid domain name"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// How a query reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP: replies are limited to the client's EDNS size (512 without).
    Udp,
    /// TCP: replies up to 65 535 bytes.
    Tcp,
}

/// Who asked: everything the driver needs to send an answer back later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Client {
    /// The client's address and port.
    pub addr: SocketAddr,
    /// The address and port the query was sent to.
    pub local: SocketAddr,
    /// UDP or TCP.
    pub transport: Transport,
    /// The driver's own value (a connection or frame-source handle); the
    /// engine hands it back untouched.
    pub tag: u64,
}

/// What to do with a client's query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send `out[..len]` back to the client.
    Reply(usize),
    /// Send `out[..len]` to backend `backend` at `addr`.
    Forward {
        /// The backend.
        backend: BackendId,
        /// Its address.
        addr: SocketAddr,
        /// Length of the query in `out`.
        len: usize,
    },
    /// Send nothing (counted).
    Drop(DropReason),
}

/// What to do with a backend's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerVerdict {
    /// Send `out[..len]` to `client`.
    Reply {
        /// Who asked.
        client: Client,
        /// Length of the answer in `out`.
        len: usize,
    },
    /// The answer was for a refresh or a probe: nothing to send.
    Consumed,
    /// Ignored (counted).
    Drop(DropReason),
}

/// A packet the engine wants sent, from [`Engine::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transmit {
    /// A query (retry, probe or refresh) to a backend.
    Backend {
        /// The backend.
        backend: BackendId,
        /// Its address.
        addr: SocketAddr,
        /// Length in `out`.
        len: usize,
    },
    /// An answer (stale or SERVFAIL) to a client whose query no backend
    /// answered.
    Client {
        /// Who asked.
        client: Client,
        /// Length in `out`.
        len: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Client(Client),
    Refresh,
    Probe,
}

/// A query in flight to a backend: the client's side of it, so that the
/// answer can be turned into the client's reply.
#[derive(Debug, Clone, Copy)]
struct Upstream {
    purpose: Purpose,
    client_id: u16,
    client_flags: u16,
    client_edns: Option<u16>,
    key_flags: KeyFlags,
    qname: [u8; 255],
    qlen: u8,
    qtype: Rtype,
    qclass: Class,
    tries: u8,
    tried: TriedSet,
    next: BackendId,
    first_sent: Timestamp,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            purpose: Purpose::Probe,
            client_id: 0,
            client_flags: 0,
            client_edns: None,
            key_flags: KeyFlags::default(),
            qname: [0; 255],
            qlen: 0,
            qtype: Rtype::A,
            qclass: Class::IN,
            tries: 0,
            tried: TriedSet::EMPTY,
            next: BackendId(0),
            first_sent: Timestamp::ZERO,
        }
    }
}

impl Upstream {
    fn qname(&self) -> &[u8] {
        &self.qname[..self.qlen as usize]
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Send(Handle),
    GiveUp(Handle),
}

/// One worker's engine. See the module docs.
#[derive(Debug)]
pub struct Engine {
    cache: Cache,
    pool: Pool,
    pending: Pending<Upstream>,
    actions: VecDeque<Action>,
    acl: Acl,
    udp_size: u16,
    try_timeout: Duration,
    max_tries: u8,
    query_deadline: Duration,
    probe_name: [u8; 255],
    probe_len: usize,
    rng: u64,
    last_rtt: Option<(BackendId, Duration)>,
    records: Arc<Snapshot>,
    rotate: u32,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// An engine with everything preallocated.
    pub fn new(cfg: EngineConfig) -> Result<Engine, ConfigError> {
        let pool = Pool::new(&cfg.backends, cfg.health, cfg.selection).map_err(ConfigError::Backends)?;
        let mut probe_name = [0u8; 255];
        let probe_len = encode_name(&cfg.probe_name, &mut probe_name).map_err(|_| ConfigError::ProbeName(cfg.probe_name.clone()))?;
        let capacity = cfg.pending_capacity.clamp(1, 1 << 15);
        Ok(Engine {
            cache: Cache::new(cfg.cache, cfg.seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15),
            pool,
            pending: Pending::new(capacity),
            actions: VecDeque::with_capacity(2 * capacity + 64),
            acl: cfg.acl,
            udp_size: cfg.udp_size.max(512),
            try_timeout: cfg.try_timeout,
            max_tries: cfg.max_tries.max(1),
            query_deadline: cfg.query_deadline,
            probe_name,
            probe_len,
            rng: cfg.seed | 1,
            last_rtt: None,
            records: Arc::new(Snapshot::empty()),
            rotate: 0,
            stats: Arc::new(EngineStats::default()),
        })
    }

    /// Counters, shareable with another thread.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The cache (for its counters and size).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Empties the cache.
    pub fn flush_cache(&mut self) {
        self.cache.clear();
    }

    /// Drops cached answers for `name` (wire form), e.g. after local records changed.
    pub fn invalidate_name(&mut self, name: &[u8]) -> usize {
        self.cache.remove_name(name)
    }

    /// The backend pool (for states and counters).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Swaps in a new snapshot of the local records (between two packets:
    /// the next query sees it). Local answers never enter the cache; when
    /// the set of local domains changes the cache is emptied, since it may
    /// hold answers from the backends for names that are now local.
    pub fn set_records(&mut self, snapshot: Arc<Snapshot>) {
        if snapshot.domains != self.records.domains {
            self.cache.clear();
        }
        self.records = snapshot;
    }

    /// The local records in use.
    pub fn records(&self) -> &Arc<Snapshot> {
        &self.records
    }

    /// The round-trip time of the last answer accepted from a backend, once:
    /// a driver that keeps its own latency histograms calls this after each
    /// `handle_backend_answer`.
    pub fn take_rtt_sample(&mut self) -> Option<(BackendId, Duration)> {
        self.last_rtt.take()
    }

    /// Queries waiting for a backend.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn next_id(&mut self) -> Option<u16> {
        for _ in 0..16 {
            // xorshift64*: fast, and the seed comes from the caller.
            self.rng ^= self.rng >> 12;
            self.rng ^= self.rng << 25;
            self.rng ^= self.rng >> 27;
            let id = (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16;
            if self.pending.id_free(id) {
                return Some(id);
            }
        }
        None
    }

    #[inline]
    fn count_reply(&self, out: &[u8]) {
        let rcode = out.get(3).map_or(0, |b| b & 0x0f) as usize;
        self.stats.rcodes[rcode].inc();
    }

    /// Handles one client query received at `now`. The reply or the query
    /// for a backend is written to `out`, which should hold at least
    /// 65 535 bytes for TCP and the largest UDP size for UDP (shorter
    /// buffers cap the answer size and may cause TC replies).
    pub fn handle_query(&mut self, now: Timestamp, client: &Client, query: &[u8], out: &mut [u8]) -> Verdict {
        let st = &*self.stats;
        st.queries.inc();
        if client.transport == Transport::Tcp {
            st.queries_tcp.inc();
        }
        let Ok(h) = Header::new_checked(query) else {
            st.count_drop(DropReason::QueryTooShort);
            return Verdict::Drop(DropReason::QueryTooShort);
        };
        if h.qr() {
            st.count_drop(DropReason::QueryIsResponse);
            return Verdict::Drop(DropReason::QueryIsResponse);
        }
        let allowed = self.acl.allows(client.addr.ip());
        let fast = match quick_query(query) {
            Some(q) if allowed && h.opcode() == Opcode::QUERY && q.edns.is_none_or(|e| e.version == 0) => Some(q),
            _ => None,
        };
        let asked = match fast {
            Some(q) => q,
            None => match self.check_slow(query, &h, allowed) {
                Ok(q) => q,
                Err((msg, rcode)) => return self.empty_reply(query, msg.as_ref(), rcode, false, out),
            },
        };
        let edns = asked.edns.map(|e| (e.udp_size.max(512), e.dnssec_ok));
        let limit = match client.transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(edns.map_or(512, |(size, _)| size.min(self.udp_size))),
        }
        .min(out.len());
        let opt_len = if edns.is_some() { OPT_LEN } else { 0 };
        let qname = &query[crate::wire::HEADER_LEN..asked.qname_end];
        let q = &asked;
        let key_flags = KeyFlags::new(edns.is_some_and(|e| e.1), h.cd());
        if !self.records.is_empty() {
            let lq = LocalQuery {
                qname,
                qtype: q.qtype,
                qclass: q.qclass,
                id: h.id(),
                flags: h.flags(),
                opt: edns.map(|(_, d)| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: d }),
                client: client.addr.ip(),
                limit,
                rotate: self.rotate,
                random: self.rng,
            };
            if let LocalAnswer::Reply(len, _) = self.records.answer(&lq, out) {
                self.rotate = self.rotate.wrapping_add(1);
                self.rng = self.rng.rotate_left(23).wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
                st.local_answers.inc();
                st.latency[0].inc();
                self.count_reply(out);
                return Verdict::Reply(len);
            }
        }
        let Some(key) = self.cache.key(qname, q.qtype, q.qclass, key_flags) else {
            st.formerr.inc();
            return self.empty_reply(query, Message::parse(query).ok().as_ref(), Rcode::FORMERR, false, out);
        };
        let Some(room) = limit.checked_sub(opt_len) else {
            st.count_drop(DropReason::NoBufferSpace);
            return Verdict::Drop(DropReason::NoBufferSpace);
        };
        match self.cache.lookup(now, &key, &mut out[..room]) {
            Lookup::Hit { len, refresh, kind } => {
                st.cache_hits.inc();
                if kind != crate::cache::EntryKind::Positive {
                    st.cache_negative_hits.inc();
                }
                let opt = edns.map(|(_, d)| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: d });
                let len = reply::finish(out, len, h.id(), h.flags(), Some(qname), opt);
                self.count_reply(out);
                st.latency[0].inc();
                if refresh {
                    self.start_refresh(now, qname, q.qtype, q.qclass, key_flags);
                }
                Verdict::Reply(len)
            }
            Lookup::TooLong { .. } => {
                st.cache_hits.inc();
                st.truncated.inc();
                self.empty_reply(query, Message::parse(query).ok().as_ref(), Rcode::NOERROR, true, out)
            }
            Lookup::Stale | Lookup::Miss => {
                st.cache_misses.inc();
                let fill = |u: &mut Upstream| {
                    *u = Upstream {
                        purpose: Purpose::Client(*client),
                        client_id: h.id(),
                        client_flags: h.flags(),
                        client_edns: edns.map(|e| e.0),
                        key_flags,
                        qlen: qname.len() as u8,
                        qtype: q.qtype,
                        qclass: q.qclass,
                        first_sent: now,
                        ..Upstream::default()
                    };
                    u.qname[..qname.len()].copy_from_slice(qname);
                };
                let Some(handle) = self.pending.insert(fill) else {
                    st.count_drop(DropReason::PendingFull);
                    return Verdict::Drop(DropReason::PendingFull);
                };
                match self.pool.select(now, TriedSet::EMPTY) {
                    Some(b) => match self.send(now, handle, b, out) {
                        Some(t) => {
                            self.stats.forwarded.inc();
                            match t {
                                Transmit::Backend { backend, addr, len } => Verdict::Forward { backend, addr, len },
                                Transmit::Client { len, .. } => Verdict::Reply(len),
                            }
                        }
                        None => {
                            self.pending.remove(handle);
                            self.stats.count_drop(DropReason::PendingFull);
                            Verdict::Drop(DropReason::PendingFull)
                        }
                    },
                    // No backend is up: a stale answer at once if we have
                    // one; else ask one anyway (panic mode), since the pool
                    // may have marked a live backend down under overload.
                    None if self.cache.has_stale(now, &key) => match self.give_up(handle, now, out) {
                        Some(Transmit::Client { len, .. }) => Verdict::Reply(len),
                        _ => Verdict::Drop(DropReason::NoBufferSpace),
                    },
                    None => match self.pool.select_any(TriedSet::EMPTY).and_then(|b| self.send(now, handle, b, out)) {
                        Some(Transmit::Backend { backend, addr, len }) => {
                            self.stats.forwarded.inc();
                            self.stats.panic_forwards.inc();
                            Verdict::Forward { backend, addr, len }
                        }
                        _ => match self.give_up(handle, now, out) {
                            Some(Transmit::Client { len, .. }) => Verdict::Reply(len),
                            _ => Verdict::Drop(DropReason::NoBufferSpace),
                        },
                    },
                }
            }
        }
    }

    /// The full parse, for queries off the fast path: either what the
    /// engine needs from the query, or the error rcode to reply with (and
    /// the message, when readable, to echo its question and OPT).
    #[cold]
    fn check_slow(&self, query: &[u8], h: &Header<&[u8]>, allowed: bool) -> Result<QuickQuery, (Option<Message>, Rcode)> {
        let st = &*self.stats;
        let parsed = Message::parse(query);
        let rcode = match &parsed {
            _ if !allowed => Rcode::REFUSED,
            _ if h.opcode() != Opcode::QUERY => Rcode::NOTIMP,
            Err(MessageError::QuestionCount | MessageError::Malformed(_)) => Rcode::FORMERR,
            Ok(m) if m.edns().is_some_and(|e| e.version != 0) => Rcode::BADVERS,
            Ok(m) if m.question.name.is_compressed() => Rcode::FORMERR,
            Ok(_) => Rcode::NOERROR,
        };
        match parsed {
            Ok(m) if rcode == Rcode::NOERROR => Ok(QuickQuery {
                qname_end: m.question.name.end(),
                qtype: m.question.qtype,
                qclass: m.question.qclass,
                edns: m.edns().map(|e| QuickEdns { udp_size: e.udp_size, version: e.version, dnssec_ok: e.dnssec_ok() }),
            }),
            other => {
                match rcode {
                    Rcode::REFUSED => st.refused_acl.inc(),
                    Rcode::NOTIMP => st.notimp.inc(),
                    Rcode::BADVERS => st.badvers.inc(),
                    _ => st.formerr.inc(),
                }
                Err((other.ok(), rcode))
            }
        }
    }

    fn empty_reply(&self, query: &[u8], msg: Option<&Message>, rcode: Rcode, tc: bool, out: &mut [u8]) -> Verdict {
        let opt = msg.and_then(|m| m.edns()).map(|e| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: e.dnssec_ok() });
        match crate::wire::write_empty_reply(query, msg.map(|m| &m.question), opt, rcode, out) {
            Ok(len) => {
                if tc {
                    out[2] |= (flags::TC >> 8) as u8;
                }
                self.stats.rcodes[rcode.0.min(16) as usize].inc();
                Verdict::Reply(len)
            }
            Err(_) => {
                self.stats.count_drop(DropReason::NoBufferSpace);
                Verdict::Drop(DropReason::NoBufferSpace)
            }
        }
    }

    fn start_refresh(&mut self, now: Timestamp, qname: &[u8], qtype: Rtype, qclass: Class, key_flags: KeyFlags) {
        let fill = |u: &mut Upstream| {
            *u = Upstream {
                purpose: Purpose::Refresh,
                client_flags: flags::RD,
                key_flags,
                qlen: qname.len() as u8,
                qtype,
                qclass,
                first_sent: now,
                ..Upstream::default()
            };
            u.qname[..qname.len()].copy_from_slice(qname);
        };
        let handle = self.pending.insert(fill);
        let backend = self.pool.select(now, TriedSet::EMPTY);
        match (handle, backend) {
            (Some(h), Some(b)) if self.actions.len() < self.actions.capacity() => {
                if let Some(u) = self.pending.get_mut(h) {
                    u.next = b;
                }
                self.actions.push_back(Action::Send(h));
            }
            (h, _) => {
                if let Some(h) = h {
                    self.pending.remove(h);
                }
                if let Some(key) = self.cache.key(qname, qtype, qclass, key_flags) {
                    self.cache.refresh_failed(&key);
                }
            }
        }
    }

    /// Writes the query of `h` for `backend` into `out` with a fresh ID and
    /// arms its deadline.
    fn send(&mut self, now: Timestamp, h: Handle, backend: BackendId, out: &mut [u8]) -> Option<Transmit> {
        let id = self.next_id()?;
        let u = self.pending.get_mut(h)?;
        let len = reply::upstream_query(out, id, u.client_flags, &u_question(u), self.udp_size, u.key_flags)?;
        u.tries += 1;
        u.tried.insert(backend);
        let deadline = now + self.try_timeout;
        if !self.pending.sent(h, backend, id, now, deadline) {
            return None;
        }
        self.pool.on_sent(backend, now);
        Some(Transmit::Backend { backend, addr: self.pool.addr(backend), len })
    }

    /// Handles an answer that arrived at `now` from `from` on a backend
    /// socket. It is accepted only from the backend asked, with the ID and
    /// question asked; then it is cached and turned into the client's reply.
    pub fn handle_backend_answer(&mut self, now: Timestamp, from: SocketAddr, answer: &[u8], out: &mut [u8]) -> AnswerVerdict {
        let v = self.backend_answer(now, from, answer, out);
        if let AnswerVerdict::Drop(r) = v {
            self.stats.count_drop(r);
        }
        v
    }

    fn backend_answer(&mut self, now: Timestamp, from: SocketAddr, answer: &[u8], out: &mut [u8]) -> AnswerVerdict {
        let drop = |r: DropReason| AnswerVerdict::Drop(r);
        let Ok(h) = Header::new_checked(answer) else { return drop(DropReason::AnswerMalformed) };
        let Some(handle) = self.pending.by_id(h.id()) else { return drop(DropReason::AnswerUnknownId) };
        let Some(flight) = self.pending.flight(handle) else { return drop(DropReason::AnswerUnknownId) };
        if !same_endpoint(self.pool.addr(flight.backend), from) {
            return drop(DropReason::AnswerWrongSource);
        }
        if !h.qr() {
            return drop(DropReason::AnswerNotResponse);
        }
        let Ok(msg) = Message::parse(answer) else { return drop(DropReason::AnswerMalformed) };
        let Some(&u) = self.pending.get(handle) else { return drop(DropReason::AnswerUnknownId) };
        let q = &msg.question;
        if q.qtype != u.qtype || q.qclass != u.qclass || !q.name.eq_wire_ignore_case(answer, u.qname()) {
            return drop(DropReason::AnswerWrongQuestion);
        }
        // Accepted.
        self.pending.remove(handle);
        self.stats.answers.inc();
        let rtt = now.saturating_since(flight.sent_at);
        self.last_rtt = Some((flight.backend, rtt));
        let t = self.pool.on_answer(flight.backend, now, rtt);
        self.note(t);
        let st = &*self.stats;
        if u.purpose != Purpose::Probe {
            if let Some(key) = self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags) {
                if self.cache.insert(now, &key, answer, &msg).is_err() {
                    st.not_cached.inc();
                    if u.purpose == Purpose::Refresh {
                        self.cache.refresh_failed(&key);
                    }
                }
            }
        }
        let Purpose::Client(client) = u.purpose else { return AnswerVerdict::Consumed };
        let limit = match client.transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(u.client_edns.map_or(512, |s| s.min(self.udp_size))),
        }
        .min(out.len());
        let opt = u.client_edns.map(|_| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: u.key_flags.0 & KeyFlags::DO != 0 });
        let room = limit.saturating_sub(if opt.is_some() { OPT_LEN } else { 0 });
        let len = match reply::copy_without_opt(answer, &msg, &mut out[..room]) {
            Some(len) => reply::finish(out, len, u.client_id, u.client_flags, None, opt),
            None => {
                st.truncated.inc();
                match reply::truncated(out, &u_question(&u), u.client_id, u.client_flags, answer, opt) {
                    Some(len) => len,
                    None => return drop(DropReason::NoBufferSpace),
                }
            }
        };
        self.count_reply(out);
        st.latency(now.saturating_since(u.first_sent));
        AnswerVerdict::Reply { client, len }
    }

    fn note(&self, t: Option<Transition>) {
        match t {
            Some(Transition::WentDown) => self.stats.backend_down.inc(),
            Some(Transition::CameUp) => self.stats.backend_up.inc(),
            None => {}
        }
    }

    /// When [`Engine::handle_timeout`] should next be called: the earliest
    /// try deadline or probe. `None`: no timer is running.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.pending.next_deadline(), self.pool.next_probe_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`: tries that timed out are re-sent to the
    /// next healthy backend or given up (stale answer or SERVFAIL), and due
    /// probes are queued. Then drain [`Engine::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((h, f)) = self.pending.pop_expired(now) {
            self.stats.timeouts.inc();
            let t = self.pool.on_timeout(f.backend, now);
            self.note(t);
            let Some(u) = self.pending.get(h).copied() else { continue };
            match u.purpose {
                Purpose::Probe => {
                    self.pending.remove(h);
                    continue;
                }
                Purpose::Refresh => {
                    self.pending.remove(h);
                    if let Some(key) = self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags) {
                        self.cache.refresh_failed(&key);
                    }
                    continue;
                }
                Purpose::Client(_) => {}
            }
            let in_time = now < u.first_sent + self.query_deadline.saturating_sub(self.try_timeout / 4);
            let next = if u.tries < self.max_tries && in_time {
                // Prefer a backend not asked yet; else any that is up.
                self.pool.select(now, u.tried).or_else(|| self.pool.select(now, TriedSet::EMPTY)).or_else(|| self.pool.select_any(u.tried))
            } else {
                None
            };
            let action = match next {
                Some(b) => {
                    if let Some(u) = self.pending.get_mut(h) {
                        u.next = b;
                    }
                    Action::Send(h)
                }
                None => Action::GiveUp(h),
            };
            self.actions.push_back(action);
        }
        while self.actions.len() < self.actions.capacity() {
            let Some(b) = self.pool.probe_due(now) else { break };
            let fill = |u: &mut Upstream| {
                *u = Upstream {
                    purpose: Purpose::Probe,
                    client_flags: 0,
                    qlen: self.probe_len as u8,
                    qtype: Rtype::TXT,
                    qclass: Class::CH,
                    next: b,
                    first_sent: now,
                    ..Upstream::default()
                };
                u.qname[..self.probe_len].copy_from_slice(&self.probe_name[..self.probe_len]);
            };
            match self.pending.insert(fill) {
                Some(h) => self.actions.push_back(Action::Send(h)),
                None => {
                    self.pool.on_cancel(b);
                    break;
                }
            }
        }
    }

    /// The next packet the engine wants sent (retries, probes, refreshes,
    /// answers to clients no backend answered), written into `out`. Call
    /// until it returns `None` after every `handle_*` call.
    pub fn poll_transmit(&mut self, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        while let Some(a) = self.actions.pop_front() {
            match a {
                Action::Send(h) => {
                    let Some(u) = self.pending.get(h).copied() else { continue };
                    match self.send(now, h, u.next, out) {
                        Some(t) => {
                            match u.purpose {
                                Purpose::Client(_) => self.stats.retried.inc(),
                                Purpose::Refresh => self.stats.refreshes.inc(),
                                Purpose::Probe => self.stats.probes.inc(),
                            }
                            return Some(t);
                        }
                        None if u.purpose == Purpose::Probe => {
                            self.pool.on_cancel(u.next);
                            self.pending.remove(h);
                        }
                        None => {
                            if let Some(t) = self.give_up(h, now, out) {
                                return Some(t);
                            }
                        }
                    }
                }
                Action::GiveUp(h) => {
                    if let Some(t) = self.give_up(h, now, out) {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// Ends a client's query no backend answered: a stale answer if the
    /// cache still has one, else SERVFAIL.
    fn give_up(&mut self, h: Handle, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        let u = *self.pending.get(h)?;
        self.pending.remove(h);
        let Purpose::Client(client) = u.purpose else { return None };
        let limit = match client.transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(u.client_edns.map_or(512, |s| s.min(self.udp_size))),
        }
        .min(out.len());
        let opt = u.client_edns.map(|_| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: u.key_flags.0 & KeyFlags::DO != 0 });
        let room = limit.saturating_sub(if opt.is_some() { OPT_LEN } else { 0 });
        let stale =
            self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags).and_then(|k| self.cache.lookup_stale(now, &k, &mut out[..room]));
        let len = match stale {
            Some(len) => {
                self.stats.stale_answers.inc();
                reply::finish(out, len, u.client_id, u.client_flags, Some(u.qname()), opt)
            }
            None => {
                self.stats.gave_up.inc();
                reply::servfail(out, &u_question(&u), u.client_id, u.client_flags, opt)?
            }
        };
        self.count_reply(out);
        self.stats.latency(now.saturating_since(u.first_sent));
        Some(Transmit::Client { client, len })
    }
}

fn u_question(u: &Upstream) -> reply::QuestionParts<'_> {
    reply::QuestionParts { name: u.qname(), qtype: u.qtype, qclass: u.qclass }
}

/// Whether an answer's source is the backend's address (IPv4-mapped IPv6
/// and IPv4 compare equal).
fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(test)]
mod tests;
