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
//!                   probes, early refreshes, SERVFAIL / stale answers,
//!                   TCP exchanges for truncated answers to TCP clients)
//!   TCP exchange  --handle_tcp_answer(now, exchange, from, bytes, out)--> AnswerVerdict
//!                 --tcp_failed(now, exchange)      (see `tcp.rs`)
//! ```
//!
//! The code is split by path: `query.rs` (a client's query to a miss),
//! `answer.rs` (the query sent and the checks on its answer), `timers.rs`
//! (timeouts and the transmit queue), `tcp.rs` (asking again over TCP).
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
mod answer;
mod kernel;
mod limits;
mod query;
mod reply;
mod rng;
mod stats;
mod tcp;
mod timers;

use core::net::SocketAddr;
use core::time::Duration;
use std::collections::VecDeque;
use std::sync::Arc;

pub use acl::{Acl, IpNet, IpNetError};
pub use kernel::KernelPromotion;
pub use limits::{ClientLimits, OverLimit};
pub use rng::Rng;
pub use stats::{DropReason, EngineStats, LATENCY_BOUNDS};
pub use tcp::TcpExchange;

use crate::cache::{Cache, CacheConfig, KernelTierConfig, Key, KeyFlags, Lookup};
use crate::records::{LocalAnswer, LocalQuery, Snapshot};
use crate::time::Timestamp;
use crate::upstream::pending::{Handle, InFlight, Pending};
use crate::upstream::{BackendId, BackendSpec, HealthConfig, Pool, PoolError, Selection, Transition, TriedSet};
use crate::wire::{
    encode_name, flags, quick_query, Class, Header, Message, MessageError, Opcode, OptSpec, QuickEdns, QuickQuery, Rcode, Rtype,
    HEADER_LEN, OPT_LEN,
};
use answer::Via;
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
    /// The local records to start with (`None`: none), so that a worker
    /// answers local names from its first query rather than from the
    /// first [`Engine::set_records`].
    pub records: Option<Arc<Snapshot>>,
    /// A cache dump to load before the first query (a warm start), so
    /// that no query meets the cache cold.
    pub warm: Option<WarmStart>,
    /// The in-kernel answer tier's bookkeeping, for cache entries and
    /// local answers (`None`: off). Its reply bound is lowered to
    /// `udp_size` when that is smaller.
    pub kernel_tier: Option<KernelTierConfig>,
}

/// A cache dump (`cache::dump`) and the wall clock when it is loaded, ns
/// since the Unix epoch: [`Engine::new`] imports it at its clock's zero.
/// What was loaded shows in the cache's `loaded` and `load_expired`.
#[derive(Debug, Clone)]
pub struct WarmStart {
    /// The dump.
    pub dump: Arc<[u8]>,
    /// The wall clock at the load.
    pub wall_now: u64,
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
            records: None,
            warm: None,
            kernel_tier: None,
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
    local_tier: kernel::LocalTier,
}

impl Engine {
    /// An engine with everything preallocated.
    pub fn new(cfg: EngineConfig) -> Result<Engine, ConfigError> {
        let health = HealthConfig { try_timeout_min: cfg.try_timeout_min, try_timeout_max: cfg.try_timeout, ..cfg.health };
        let pool = Pool::new(&cfg.backends, health, cfg.selection).map_err(ConfigError::Backends)?;
        let mut probe_name = [0u8; 255];
        let probe_len = encode_name(&cfg.probe_name, &mut probe_name).map_err(|_| ConfigError::ProbeName(cfg.probe_name.clone()))?;
        let capacity = cfg.pending_capacity.clamp(1, 1 << 15);
        let warm = cfg.warm.clone();
        let mut engine = Engine {
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
            records: cfg.records.unwrap_or_else(|| Arc::new(Snapshot::empty())),
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
            local_tier: kernel::LocalTier::off(),
        };
        if let Some(mut t) = cfg.kernel_tier {
            t.max_reply = t.max_reply.min(usize::from(cfg.udp_size));
            engine.cache.enable_kernel_tier(t);
            engine.local_tier = kernel::LocalTier::new(t);
        }
        if let Some(w) = warm {
            // A damaged or foreign dump is counted by the import and
            // leaves the cache empty: the engine starts cold.
            let _ = engine.cache.import(Timestamp::ZERO, w.wall_now, &w.dump);
        }
        Ok(engine)
    }

    /// Counters, shareable with another thread.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// The cache (for its counters and size).
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// The cache, to load a dump into (a warm restart).
    pub fn cache_mut(&mut self) -> &mut Cache {
        &mut self.cache
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
    /// hold answers from the backends for names that are now local. Local
    /// answers in the in-kernel tier are queued for demotion.
    pub fn set_records(&mut self, snapshot: Arc<Snapshot>) {
        if snapshot.domains != self.records.domains {
            self.cache.clear();
        }
        self.local_tier.records_changed();
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
}

fn u_question(u: &Upstream) -> reply::QuestionParts<'_> {
    reply::QuestionParts { name: u.qname(), qtype: u.qtype, qclass: u.qclass }
}

#[cfg(test)]
mod tests;
