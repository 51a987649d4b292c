//! The sans-IO engine: one per worker, driven the same way by the AF_XDP
//! driver, the socket driver, tests and benchmarks.
//!
//! ```text
//!   client query  --handle_query(now, client, bytes, out)-->  Verdict
//!                       Reply(len)        answer is in out[..len]: send it back
//!                       Forward{..}       query for a backend is in out[..len],
//!                                         to send from source-port slot `port`
//!                       Wait              an identical question is in flight;
//!                                         the reply comes from poll_transmit
//!                       Drop(reason)      counted; send nothing
//!   backend answer --handle_backend_answer(now, from, port, bytes, out)--> AnswerVerdict
//!   timers        --poll_timeout() / handle_timeout(now)
//!   queued sends  --poll_transmit(now, out)--> Option<Transmit>   (retries,
//!                   probes, early refreshes, SERVFAIL / stale answers)
//! ```
//!
//! After every `handle_*` call the driver drains `poll_transmit` until it
//! returns `None`, and calls `handle_timeout` once `poll_timeout` has passed.
//! Nothing here reads a clock, allocates after construction on the query
//! path, or blocks.
//!
//! Misses, in order: a client over its fair share ([`ClientLimits`]: pending
//! queries, miss rate) gets a fast SERVFAIL or REFUSED; a question already
//! in flight gets the same answer when it comes (coalescing, [`Verdict::Wait`]);
//! anything else goes to a backend with a random ID, a random source-port
//! slot and 0x20 case randomisation, all three checked on the answer. A try
//! waits for its backend's own timeout ([`Pool::try_timeout`]); when it runs
//! out, a backend that answered anything meanwhile is alive and the query
//! keeps waiting on it (a slow name), while a silent one is retried on
//! another backend. A late answer from any backend asked is taken.

mod acl;
mod limits;
mod reply;
mod rng;
mod stats;
mod tcp;

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;

pub use acl::{Acl, IpNet, IpNetError};
pub use limits::{ClientLimits, OverLimit};
pub use rng::Rng;
pub use stats::{DropReason, EngineStats, LATENCY_BOUNDS};
pub use tcp::TcpExchange;

use crate::cache::{Cache, CacheConfig, Key, KeyFlags, Lookup};
use crate::records::{LocalAnswer, LocalQuery, Snapshot};
use crate::time::Timestamp;
use crate::upstream::pending::{Handle, InFlight, Pending};
use crate::upstream::{BackendId, BackendSpec, HealthConfig, Pool, PoolError, Selection, Transition, TriedSet};
use crate::wire::{
    encode_name, flags, quick_query, Class, Header, Message, MessageError, Opcode, OptSpec, QuickEdns, QuickQuery, Rcode, Rtype,
    HEADER_LEN, OPT_LEN,
};
use hashbrown::HashTable;
use limits::{Clients, Refusal, NO_CLIENT};

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
    /// The longest a try waits for a backend before the next is asked, and
    /// the wait before a backend's first answer; with answers, each
    /// backend's try timeout follows its round-trip times (see
    /// [`Pool::try_timeout`]).
    pub try_timeout: Duration,
    /// The shortest try timeout.
    pub try_timeout_min: Duration,
    /// Most backends asked for one query.
    pub max_tries: u8,
    /// After this long a client gets a stale answer or SERVFAIL.
    pub query_deadline: Duration,
    /// Most queries in flight to backends at once.
    pub pending_capacity: usize,
    /// The name probed on a down or suspect backend (with `CH TXT`; any
    /// answer counts).
    pub probe_name: String,
    /// Per-client fair shares of the pending table and of the miss rate.
    pub limits: ClientLimits,
    /// Answer a question already in flight from that query's answer
    /// instead of asking again.
    pub coalesce: bool,
    /// Source-port slots the driver has for backend queries (at least 1);
    /// each query goes out from a random one and its answer must come back
    /// on it.
    pub source_ports: u16,
    /// Randomise the case of the letters of each forwarded question (0x20)
    /// and drop answers that do not repeat it exactly.
    pub randomize_case: bool,
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
            try_timeout_min: Duration::from_millis(50),
            max_tries: 3,
            query_deadline: Duration::from_millis(3000),
            pending_capacity: 4096,
            probe_name: "id.server.".into(),
            limits: ClientLimits::default(),
            coalesce: true,
            source_ports: 1,
            randomize_case: true,
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
        /// The source-port slot to send it from (`0..source_ports`).
        port: u16,
    },
    /// Send nothing now: the same question is already in flight, and the
    /// reply will come out of [`Engine::poll_transmit`] with its answer.
    Wait,
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
        /// The source-port slot to send it from.
        port: u16,
    },
    /// A query to ask a backend over TCP (its UDP answer to a TCP client
    /// was truncated). The driver connects to `addr`, sends `out[..len]`
    /// with the two-byte length prefix, and hands the one message that
    /// comes back to [`Engine::handle_tcp_answer`], or reports
    /// [`Engine::tcp_failed`]. The deadline is the engine's: once it has
    /// passed, the exchange is over ([`Engine::tcp_exchange_open`]).
    BackendTcp {
        /// The backend.
        backend: BackendId,
        /// Its address.
        addr: SocketAddr,
        /// Length in `out` (without a length prefix).
        len: usize,
        /// What to give back with the answer.
        exchange: TcpExchange,
    },
    /// An answer to a client: one that waited on an identical question, or
    /// whose query no backend answered (stale or SERVFAIL).
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

/// A query waiting for a backend: the client's side of it, so that the
/// answer can be turned into the client's reply. Also used for a query
/// waiting on an identical one (a *follower*: never sent, no ID).
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
    /// The entry in the client table holding this query's share.
    client_slot: u32,
    /// The cache key's hash (the coalescing index's key).
    key_hash: u64,
    /// In the coalescing index (a leader).
    indexed: bool,
    /// Leader: the first query waiting on it. Follower: the next one.
    waiters: Option<Handle>,
    /// Seeds the 0x20 spelling (the same for every try).
    case_seed: u64,
    /// The last try's outcome was already reported to the pool (a silent
    /// timeout): a later answer is a late one.
    settled: bool,
    /// The last try outlived its timeout on a live backend: its answer is
    /// not an RTT sample.
    slow: bool,
    /// Times the last try was given more time.
    waits: u8,
    /// Asked over TCP (after a truncated UDP answer): one try, no pool
    /// accounting, answered only through [`Engine::handle_tcp_answer`].
    over_tcp: bool,
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
            client_slot: NO_CLIENT,
            key_hash: 0,
            indexed: false,
            waiters: None,
            case_seed: 0,
            settled: false,
            slow: false,
            waits: 0,
            over_tcp: false,
        }
    }
}

impl Upstream {
    fn qname(&self) -> &[u8] {
        &self.qname[..self.qlen as usize]
    }

    fn same_question(&self, qname: &[u8], qtype: Rtype, qclass: Class, key_flags: KeyFlags) -> bool {
        self.qtype == qtype && self.qclass == qclass && self.key_flags == key_flags && self.qname().eq_ignore_ascii_case(qname)
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Send(Handle),
    GiveUp(Handle),
    /// Answer a follower from the answer its leader got (`fanout` buffer
    /// of generation `gen`, else the cache).
    Fanout(Handle, u32),
}

/// The last accepted answer that followers still wait for.
#[derive(Debug)]
struct Fanout {
    buf: Vec<u8>,
    len: usize,
    msg: Option<Message>,
    gen: u32,
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
    max_tries: u8,
    query_deadline: Duration,
    probe_name: [u8; 255],
    probe_len: usize,
    rng: Rng,
    last_rtt: Option<(BackendId, Duration)>,
    records: Arc<Snapshot>,
    rotate: u32,
    clients: Clients,
    over_limit: OverLimit,
    coalesce: bool,
    in_flight: HashTable<Handle>,
    fanout: Fanout,
    source_ports: u16,
    randomize_case: bool,
    stats: Arc<EngineStats>,
}

impl Engine {
    /// An engine with everything preallocated.
    pub fn new(cfg: EngineConfig) -> Result<Engine, ConfigError> {
        let health = HealthConfig { try_timeout_min: cfg.try_timeout_min, try_timeout_max: cfg.try_timeout, ..cfg.health };
        let pool = Pool::new(&cfg.backends, health, cfg.selection).map_err(ConfigError::Backends)?;
        let mut probe_name = [0u8; 255];
        let probe_len = encode_name(&cfg.probe_name, &mut probe_name).map_err(|_| ConfigError::ProbeName(cfg.probe_name.clone()))?;
        let capacity = cfg.pending_capacity.clamp(1, 1 << 15);
        Ok(Engine {
            cache: Cache::new(cfg.cache, cfg.seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15),
            pool,
            pending: Pending::new(capacity),
            // Each slot queues at most one action at a time, plus probes.
            actions: VecDeque::with_capacity(2 * capacity + 64),
            acl: cfg.acl,
            udp_size: cfg.udp_size.max(512),
            max_tries: cfg.max_tries.max(1),
            query_deadline: cfg.query_deadline,
            probe_name,
            probe_len,
            rng: Rng::new(cfg.seed),
            last_rtt: None,
            records: Arc::new(Snapshot::empty()),
            rotate: 0,
            clients: Clients::new(cfg.limits, cfg.seed.rotate_left(41) ^ 0x2545_f491_4f6c_dd1d),
            over_limit: cfg.limits.over_limit,
            coalesce: cfg.coalesce,
            // Twice the entries ever indexed: removals leave tombstones, and
            // hashbrown then rehashes in place (no allocation) only while at
            // most half full.
            in_flight: HashTable::with_capacity(2 * capacity),
            fanout: Fanout { buf: vec![0; usize::from(u16::MAX)], len: 0, msg: None, gen: 0 },
            source_ports: cfg.source_ports.max(1),
            randomize_case: cfg.randomize_case,
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

    /// Queries waiting for a backend (followers included).
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn next_id(&mut self) -> Option<u16> {
        for _ in 0..16 {
            let id = (self.random() >> 48) as u16;
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
        let qname = &query[HEADER_LEN..asked.qname_end];
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
                random: self.rng.peek(),
            };
            if let LocalAnswer::Reply(len, _) = self.records.answer(&lq, out) {
                self.rotate = self.rotate.wrapping_add(1);
                self.rng.stir();
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
                let asked =
                    Asked { id: h.id(), flags: h.flags(), edns: edns.map(|e| e.0), key_flags, qname, qtype: q.qtype, qclass: q.qclass };
                self.miss(now, client, &asked, &key, out)
            }
        }
    }

    /// A cache miss: fair share, coalescing, then a backend.
    fn miss(&mut self, now: Timestamp, client: &Client, a: &Asked<'_>, key: &Key<'_>, out: &mut [u8]) -> Verdict {
        let leader = if self.coalesce { self.find_in_flight(key.hash(), a.qname, a.qtype, a.qclass, a.key_flags) } else { None };
        let client_slot = if self.clients.enabled() {
            match self.clients.admit(client.addr.ip(), now, leader.is_none()) {
                Ok(i) => i,
                Err(r) => return self.over_limit(r, a, out),
            }
        } else {
            NO_CLIENT
        };
        let fill = |u: &mut Upstream| {
            *u = Upstream {
                purpose: Purpose::Client(*client),
                client_id: a.id,
                client_flags: a.flags,
                client_edns: a.edns,
                key_flags: a.key_flags,
                qlen: a.qname.len() as u8,
                qtype: a.qtype,
                qclass: a.qclass,
                first_sent: now,
                client_slot,
                key_hash: key.hash(),
                ..Upstream::default()
            };
            u.qname[..a.qname.len()].copy_from_slice(a.qname);
        };
        let Some(handle) = self.pending.insert(fill) else {
            self.clients.release(client_slot);
            self.stats.count_drop(DropReason::PendingFull);
            return Verdict::Drop(DropReason::PendingFull);
        };
        if let Some(l) = leader {
            // Wait on the identical question in flight: push onto its list.
            let first = self.pending.get(l).and_then(|u| u.waiters);
            if let Some(u) = self.pending.get_mut(handle) {
                u.waiters = first;
            }
            if let Some(u) = self.pending.get_mut(l) {
                u.waiters = Some(handle);
            }
            self.stats.coalesced.inc();
            return Verdict::Wait;
        }
        let verdict = match self.pool.select(now, TriedSet::EMPTY) {
            Some(b) => match self.send(now, handle, b, out) {
                Some(t) => {
                    self.stats.forwarded.inc();
                    Some(t)
                }
                None => None,
            },
            // No backend is up: a stale answer at once if we have one; else
            // ask one anyway (panic mode), since the pool may have marked a
            // live backend down under overload.
            None if self.cache.has_stale(now, key) => return self.give_up_now(handle, now, out),
            None => match self.pool.select_any(TriedSet::EMPTY).and_then(|b| self.send(now, handle, b, out)) {
                Some(t) => {
                    self.stats.forwarded.inc();
                    self.stats.panic_forwards.inc();
                    Some(t)
                }
                None => return self.give_up_now(handle, now, out),
            },
        };
        match verdict {
            Some(Transmit::Backend { backend, addr, len, port }) => {
                self.index_in_flight(handle);
                Verdict::Forward { backend, addr, len, port }
            }
            Some(Transmit::Client { len, .. }) => Verdict::Reply(len),
            // A first try is never over TCP.
            Some(Transmit::BackendTcp { .. }) | None => {
                self.release(handle);
                self.stats.count_drop(DropReason::PendingFull);
                Verdict::Drop(DropReason::PendingFull)
            }
        }
    }

    fn give_up_now(&mut self, handle: Handle, now: Timestamp, out: &mut [u8]) -> Verdict {
        match self.give_up(handle, now, out) {
            Some(Transmit::Client { len, .. }) => Verdict::Reply(len),
            _ => Verdict::Drop(DropReason::NoBufferSpace),
        }
    }

    /// A client over its share: a fast SERVFAIL or REFUSED, or a counted
    /// drop, as configured.
    #[cold]
    fn over_limit(&mut self, why: Refusal, a: &Asked<'_>, out: &mut [u8]) -> Verdict {
        match why {
            Refusal::Pending => self.stats.limited_pending.inc(),
            Refusal::Rate => self.stats.limited_rate.inc(),
        }
        let rcode = match self.over_limit {
            OverLimit::Servfail => Rcode::SERVFAIL,
            OverLimit::Refused => Rcode::REFUSED,
            OverLimit::Drop => {
                self.stats.count_drop(DropReason::OverLimit);
                return Verdict::Drop(DropReason::OverLimit);
            }
        };
        let opt = a.edns.map(|_| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: a.key_flags.0 & KeyFlags::DO != 0 });
        let q = reply::QuestionParts { name: a.qname, qtype: a.qtype, qclass: a.qclass };
        match reply::error(out, &q, a.id, a.flags, rcode, opt) {
            Some(len) => {
                self.count_reply(out);
                Verdict::Reply(len)
            }
            None => {
                self.stats.count_drop(DropReason::NoBufferSpace);
                Verdict::Drop(DropReason::NoBufferSpace)
            }
        }
    }

    fn find_in_flight(&self, hash: u64, qname: &[u8], qtype: Rtype, qclass: Class, key_flags: KeyFlags) -> Option<Handle> {
        let pending = &self.pending;
        self.in_flight.find(hash, |&h| pending.get(h).is_some_and(|u| u.same_question(qname, qtype, qclass, key_flags))).copied()
    }

    /// Makes `h` the leader identical questions wait on (unless one is
    /// already indexed, which only a hash collision allows).
    fn index_in_flight(&mut self, h: Handle) {
        if !self.coalesce {
            return;
        }
        let Some(u) = self.pending.get(h).copied() else { return };
        if self.find_in_flight(u.key_hash, u.qname(), u.qtype, u.qclass, u.key_flags).is_some()
            || self.in_flight.len() >= self.pending.capacity()
        {
            return;
        }
        let pending = &self.pending;
        self.in_flight.insert_unique(u.key_hash, h, |x| pending.get(*x).map_or(0, |u| u.key_hash));
        if let Some(u) = self.pending.get_mut(h) {
            u.indexed = true;
        }
    }

    /// Ends `h`: out of the index, its client's share given back, its slot
    /// freed. Its followers are the caller's business.
    fn release(&mut self, h: Handle) {
        let Some(u) = self.pending.get(h).copied() else { return };
        if u.indexed {
            if let Ok(e) = self.in_flight.find_entry(u.key_hash, |&x| x == h) {
                e.remove();
            }
        }
        self.clients.release(u.client_slot);
        self.pending.remove(h);
    }

    /// Queues one action per follower of `u`.
    fn queue_followers(&mut self, u: &Upstream, make: impl Fn(Handle) -> Action) {
        let mut next = u.waiters;
        while let Some(f) = next {
            next = self.pending.get(f).and_then(|w| w.waiters);
            self.actions.push_back(make(f));
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
        let Some(key_hash) = self.cache.key(qname, qtype, qclass, key_flags).map(|k| k.hash()) else { return };
        if self.coalesce && self.find_in_flight(key_hash, qname, qtype, qclass, key_flags).is_some() {
            return; // already being asked
        }
        let fill = |u: &mut Upstream| {
            *u = Upstream {
                purpose: Purpose::Refresh,
                client_flags: flags::RD,
                key_flags,
                qlen: qname.len() as u8,
                qtype,
                qclass,
                first_sent: now,
                key_hash,
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
                self.index_in_flight(h);
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

    /// Writes the query of `h` for `backend` into `out` (its ID, drawn at
    /// the first try, its source-port slot and its 0x20 spelling) and arms
    /// the try's deadline: the backend's try timeout, or its probe timeout.
    fn send(&mut self, now: Timestamp, h: Handle, backend: BackendId, out: &mut [u8]) -> Option<Transmit> {
        let (id, port) = match self.pending.flight(h) {
            Some(f) => (f.id, f.port),
            None => {
                let id = self.next_id()?;
                let port = if self.source_ports > 1 { ((self.random() >> 32) % u64::from(self.source_ports)) as u16 } else { 0 };
                if let Some(seed) = self.randomize_case.then(|| self.random()) {
                    self.pending.get_mut(h)?.case_seed = seed;
                }
                (id, port)
            }
        };
        let u = self.pending.get_mut(h)?;
        let len = reply::upstream_query(out, id, u.client_flags, &u_question(u), self.udp_size, u.key_flags)?;
        if u.case_seed != 0 {
            spell_0x20(&mut out[HEADER_LEN..HEADER_LEN + u.qlen as usize], u.case_seed);
        }
        u.tries += 1;
        u.tried.insert(backend);
        u.settled = false;
        u.slow = false;
        u.waits = 0;
        if u.over_tcp {
            return self.send_tcp(now, h, backend, id, len);
        }
        let wait = if u.purpose == Purpose::Probe { self.pool.probe_timeout(backend) } else { self.pool.try_timeout(backend) };
        let deadline = if u.purpose == Purpose::Probe { now + wait } else { (now + wait).min(u.first_sent + self.query_deadline) };
        if !self.pending.sent(h, backend, id, port, now, deadline) {
            return None;
        }
        self.pool.on_sent(backend, now);
        Some(Transmit::Backend { backend, addr: self.pool.addr(backend), len, port })
    }

    /// Handles an answer that arrived at `now` from `from` on source-port
    /// slot `port` of a backend socket. It is accepted only from a backend
    /// asked, on the slot asked from, with the ID and the exact (0x20)
    /// question asked; then it is cached and turned into the client's
    /// reply, and queries waiting on the same question are queued for
    /// [`Engine::poll_transmit`].
    pub fn handle_backend_answer(&mut self, now: Timestamp, from: SocketAddr, port: u16, answer: &[u8], out: &mut [u8]) -> AnswerVerdict {
        let v = self.backend_answer(now, from, Via::Udp(port), answer, out);
        if let AnswerVerdict::Drop(r) = v {
            self.stats.count_drop(r);
        }
        v
    }

    fn backend_answer(&mut self, now: Timestamp, from: SocketAddr, via: Via, answer: &[u8], out: &mut [u8]) -> AnswerVerdict {
        let drop = |r: DropReason| AnswerVerdict::Drop(r);
        let Ok(h) = Header::new_checked(answer) else { return drop(DropReason::AnswerMalformed) };
        let Some(handle) = self.pending.by_id(h.id()) else { return drop(DropReason::AnswerUnknownId) };
        let Some(flight) = self.pending.flight(handle) else { return drop(DropReason::AnswerUnknownId) };
        let Some(&u) = self.pending.get(handle) else { return drop(DropReason::AnswerUnknownId) };
        let Some(from_b) = self.pool.find(from).filter(|&b| b == flight.backend || u.tried.contains(b)) else {
            return drop(DropReason::AnswerWrongSource);
        };
        match via {
            Via::Udp(port) if u.over_tcp || port != flight.port => return drop(DropReason::AnswerWrongPort),
            Via::Tcp(asked) if asked != handle || !u.over_tcp => return drop(DropReason::AnswerUnknownId),
            _ => {}
        }
        if !h.qr() {
            return drop(DropReason::AnswerNotResponse);
        }
        let Ok(msg) = Message::parse(answer) else { return drop(DropReason::AnswerMalformed) };
        // The reply leaves the backend's OPT out: records after it would
        // move, and their compression pointers with them.
        if msg.edns().is_some_and(|e| e.options_offset + e.options_len as usize != msg.sections.end) {
            return drop(DropReason::AnswerMalformed);
        }
        let q = &msg.question;
        if q.qtype != u.qtype || q.qclass != u.qclass || !q.name.eq_wire_ignore_case(answer, u.qname()) {
            return drop(DropReason::AnswerWrongQuestion);
        }
        if u.case_seed != 0 && !spelled_0x20(&answer[HEADER_LEN..], u.qname(), u.case_seed) {
            return drop(DropReason::AnswerCaseMismatch);
        }
        // Accepted.
        self.stats.answers.inc();
        self.note_answer(now, from_b, &flight, &u);
        self.release(handle);
        if u.purpose != Purpose::Probe {
            if let Some(key) = self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags) {
                if self.cache.insert(now, &key, answer, &msg).is_err() {
                    self.stats.not_cached.inc();
                    if u.purpose == Purpose::Refresh {
                        self.cache.refresh_failed(&key);
                    }
                }
            }
        }
        if u.waiters.is_some() {
            // Keep the answer for the followers (the cache may not hold it).
            self.fanout.gen = self.fanout.gen.wrapping_add(1);
            match self.fanout.buf.get_mut(..answer.len()) {
                Some(buf) => {
                    buf.copy_from_slice(answer);
                    self.fanout.len = answer.len();
                    self.fanout.msg = Some(msg);
                    let gen = self.fanout.gen;
                    self.queue_followers(&u, |f| Action::Fanout(f, gen));
                }
                None => self.queue_followers(&u, Action::GiveUp),
            }
        }
        let Purpose::Client(client) = u.purpose else { return AnswerVerdict::Consumed };
        if h.tc() && client.transport == Transport::Tcp && matches!(via, Via::Udp(_)) && self.ask_over_tcp(&u, from_b) {
            return AnswerVerdict::Consumed;
        }
        match self.client_reply(now, &u, answer, &msg, out) {
            Some(len) => AnswerVerdict::Reply { client, len },
            None => drop(DropReason::NoBufferSpace),
        }
    }

    /// Tells the pool what an accepted answer from `from_b` means for the
    /// try in flight.
    fn note_answer(&mut self, now: Timestamp, from_b: BackendId, flight: &InFlight, u: &Upstream) {
        if u.over_tcp {
            // One exchange on its own connection: neither a round-trip
            // sample nor a try the pool counted.
            return;
        }
        let probe = u.purpose == Purpose::Probe;
        if from_b == flight.backend && !u.settled {
            let rtt = now.saturating_since(flight.sent_at);
            let sample = (!u.slow).then_some(rtt);
            if let Some(r) = sample {
                self.last_rtt = Some((from_b, r));
            }
            let t = self.pool.on_answer(from_b, now, sample, probe);
            self.note(t);
        } else {
            // An earlier try's answer: that backend lives; the current try
            // is abandoned.
            self.stats.late_answers.inc();
            self.pool.on_late_answer(from_b, now);
            if !u.settled {
                self.pool.on_cancel(flight.backend);
            }
        }
    }

    /// Our OPT for a reply (when the client sent one) and the room for the
    /// reply before it: the client's UDP size (512 without EDNS), at most
    /// ours, or 65 535 over TCP, and at most `out_len`.
    fn reply_room(&self, client_edns: Option<u16>, key_flags: KeyFlags, transport: Transport, out_len: usize) -> (Option<OptSpec>, usize) {
        let limit = match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(client_edns.map_or(512, |s| s.min(self.udp_size))),
        }
        .min(out_len);
        let opt = client_edns.map(|_| OptSpec { udp_size: self.udp_size, ext_rcode: 0, dnssec_ok: key_flags.0 & KeyFlags::DO != 0 });
        (opt, limit.saturating_sub(if opt.is_some() { OPT_LEN } else { 0 }))
    }

    /// Writes the reply to `u`'s client from a backend's answer: the
    /// client's ID, flags, spelling and OPT, truncated if it does not fit.
    fn client_reply(&self, now: Timestamp, u: &Upstream, answer: &[u8], msg: &Message, out: &mut [u8]) -> Option<usize> {
        let Purpose::Client(client) = u.purpose else { return None };
        let (opt, room) = self.reply_room(u.client_edns, u.key_flags, client.transport, out.len());
        let len = match reply::copy_without_opt(answer, msg, &mut out[..room]) {
            Some(len) => reply::finish(out, len, u.client_id, u.client_flags, Some(u.qname()), opt),
            None => {
                self.stats.truncated.inc();
                reply::truncated(out, &u_question(u), u.client_id, u.client_flags, answer, opt)?
            }
        };
        self.count_reply(out);
        self.stats.latency(now.saturating_since(u.first_sent));
        Some(len)
    }

    fn note(&self, t: Option<Transition>) {
        match t {
            Some(Transition::WentDown) => self.stats.backend_down.inc(),
            Some(Transition::CameUp) => self.stats.backend_up.inc(),
            None => {}
        }
    }

    /// A try to `b` timed out with no answer from `b` since it left:
    /// counted, and reported to the pool.
    fn silent_timeout(&mut self, b: BackendId, now: Timestamp, probe: bool) {
        self.stats.timeouts.inc();
        let t = self.pool.on_timeout(b, now, probe);
        self.note(t);
    }

    /// When [`Engine::handle_timeout`] should next be called: the earliest
    /// try deadline or probe. `None`: no timer is running.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match (self.pending.next_deadline(), self.pool.next_probe_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`. A try that timed out on a backend
    /// that answered anything since it was sent keeps waiting there (a
    /// slow name); one that met silence is reported to the pool and
    /// re-sent to another backend, or waits for a late answer once every
    /// try is spent. At the query deadline the client gets a stale answer
    /// or SERVFAIL. Due probes are queued. Then drain
    /// [`Engine::poll_transmit`].
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some((h, f)) = self.pending.pop_expired(now) {
            let Some(u) = self.pending.get(h).copied() else { continue };
            if u.purpose == Purpose::Probe {
                self.silent_timeout(f.backend, now, true);
                self.release(h);
                continue;
            }
            if u.over_tcp {
                if !u.settled {
                    self.stats.tcp_retry_failures.inc();
                    self.actions.push_back(Action::GiveUp(h));
                }
                continue;
            }
            let give_up_at = u.first_sent + self.query_deadline;
            let alive = self.pool.answered_since(f.backend, f.sent_at);
            if now >= give_up_at {
                if !u.settled {
                    if alive {
                        self.stats.timeouts.inc();
                        self.pool.on_cancel(f.backend);
                    } else {
                        self.silent_timeout(f.backend, now, false);
                    }
                }
                self.actions.push_back(Action::GiveUp(h));
                continue;
            }
            if !u.settled && alive {
                // A slow name: the backend lives. Wait longer, doubling.
                if !u.slow {
                    self.stats.slow_tries.inc();
                    self.pool.on_slow(f.backend);
                }
                let wait = self.pool.try_timeout(f.backend).saturating_mul(2u32 << u.waits.min(8));
                if let Some(u) = self.pending.get_mut(h) {
                    u.slow = true;
                    u.waits = u.waits.saturating_add(1);
                }
                self.pending.rearm(h, now, (now + wait).min(give_up_at));
                continue;
            }
            if !u.settled {
                self.silent_timeout(f.backend, now, false);
                if let Some(u) = self.pending.get_mut(h) {
                    u.settled = true;
                }
            }
            let next = if u.tries < self.max_tries {
                // Prefer a backend not asked yet; else any that is up.
                self.pool.select(now, u.tried).or_else(|| self.pool.select(now, TriedSet::EMPTY)).or_else(|| self.pool.select_any(u.tried))
            } else {
                None
            };
            match next {
                Some(b) => {
                    if let Some(u) = self.pending.get_mut(h) {
                        u.next = b;
                    }
                    self.actions.push_back(Action::Send(h));
                }
                // Every try spent: a late answer may still come.
                None => {
                    self.pending.rearm(h, now, give_up_at);
                }
            }
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
    /// answers to queries that waited on an identical one, answers to
    /// clients no backend answered), written into `out`. Call until it
    /// returns `None` after every `handle_*` call.
    pub fn poll_transmit(&mut self, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        while let Some(a) = self.actions.pop_front() {
            match a {
                Action::Send(h) => {
                    let Some(u) = self.pending.get(h).copied() else { continue };
                    match self.send(now, h, u.next, out) {
                        Some(t) => {
                            match u.purpose {
                                Purpose::Client(_) if u.over_tcp => self.stats.tcp_retries.inc(),
                                Purpose::Client(_) if u.tries > 0 => self.stats.retried.inc(),
                                Purpose::Client(_) => {}
                                Purpose::Refresh => {
                                    if u.tries == 0 {
                                        self.stats.refreshes.inc();
                                    }
                                }
                                Purpose::Probe => self.stats.probes.inc(),
                            }
                            return Some(t);
                        }
                        None if u.purpose == Purpose::Probe => {
                            self.pool.on_cancel(u.next);
                            self.release(h);
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
                Action::Fanout(h, gen) => {
                    if let Some(t) = self.answer_follower(h, gen, now, out) {
                        return Some(t);
                    }
                }
            }
        }
        None
    }

    /// Answers a query that waited on an identical one, from that one's
    /// answer (or, if the driver let a newer answer overwrite it, as if no
    /// backend had answered: a stale answer or SERVFAIL).
    fn answer_follower(&mut self, h: Handle, gen: u32, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        let u = *self.pending.get(h)?;
        let Purpose::Client(client) = u.purpose else {
            self.release(h);
            return None;
        };
        if gen == self.fanout.gen {
            if let Some(msg) = self.fanout.msg {
                self.release(h);
                let len = self.client_reply(now, &u, &self.fanout.buf[..self.fanout.len], &msg, out)?;
                return Some(Transmit::Client { client, len });
            }
        }
        self.give_up(h, now, out)
    }

    /// Ends a client's query no backend answered: a stale answer if the
    /// cache still has one, else SERVFAIL (and likewise for the queries
    /// waiting on it). A refresh that ends so leaves the entry as it was.
    fn give_up(&mut self, h: Handle, now: Timestamp, out: &mut [u8]) -> Option<Transmit> {
        let u = *self.pending.get(h)?;
        self.release(h);
        self.queue_followers(&u, Action::GiveUp);
        let Purpose::Client(client) = u.purpose else {
            if u.purpose == Purpose::Refresh {
                if let Some(key) = self.cache.key(u.qname(), u.qtype, u.qclass, u.key_flags) {
                    self.cache.refresh_failed(&key);
                }
            }
            return None;
        };
        let (opt, room) = self.reply_room(u.client_edns, u.key_flags, client.transport, out.len());
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

/// How a backend's answer came: on a source-port slot over UDP, or on the
/// TCP connection of one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Udp(u16),
    Tcp(Handle),
}

/// What the engine keeps of a client's query on a miss.
struct Asked<'a> {
    id: u16,
    flags: u16,
    edns: Option<u16>,
    key_flags: KeyFlags,
    qname: &'a [u8],
    qtype: Rtype,
    qclass: Class,
}

/// The 0x20 spelling of `seed`: bit `i` of a stream drawn from it flips
/// the case of the `i`-th letter.
struct CaseBits(u64, u64);

impl CaseBits {
    fn next(&mut self) -> bool {
        if self.1 <= 1 {
            // Refill from a splitmix64 step of the seed.
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            self.1 = (z ^ (z >> 31)) | (1 << 63);
        }
        let bit = self.1 & 1 == 1;
        self.1 >>= 1;
        bit
    }
}

/// Randomises the case of the letters of the wire name in `name` (length
/// octets are skipped).
fn spell_0x20(name: &mut [u8], seed: u64) {
    let mut bits = CaseBits(seed, 0);
    let mut at = 0;
    while at < name.len() {
        let len = name[at] as usize;
        if len == 0 || len & 0xc0 != 0 {
            break;
        }
        for b in name.iter_mut().skip(at + 1).take(len) {
            if b.is_ascii_alphabetic() {
                let upper = bits.next();
                *b = if upper { b.to_ascii_uppercase() } else { b.to_ascii_lowercase() };
            }
        }
        at += len + 1;
    }
}

/// Whether `wire` starts with the 0x20 spelling of `qname` for `seed`.
fn spelled_0x20(wire: &[u8], qname: &[u8], seed: u64) -> bool {
    let Some(got) = wire.get(..qname.len()) else { return false };
    let mut want = [0u8; 255];
    let want = &mut want[..qname.len()];
    want.copy_from_slice(qname);
    spell_0x20(want, seed);
    got == want
}

fn u_question(u: &Upstream) -> reply::QuestionParts<'_> {
    reply::QuestionParts { name: u.qname(), qtype: u.qtype, qclass: u.qclass }
}

#[cfg(test)]
mod tests;
