//! `GET /v1/stats` and `GET /v1/backends`: the counters of every worker,
//! their sums, the backends as the workers see them, the limits in force
//! and the XDP program's counters. The daemon fills them in
//! (`src/control/stats.rs`); kdns-ctl renders them. Every field defaults
//! when absent, so a kdns-ctl renders a daemon that says less.

use core::fmt;

use kdns_core::engine::DropReason;
use kdns_core::wire::Rcode;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of rcodes counted (0 to 16: every rcode a header can carry, and BADVERS).
pub const RCODES: usize = 17;

/// Number of drop reasons counted.
pub const DROPS: usize = DropReason::ALL.len();

/// The display name of rcode `i` ("NOERROR", ..., "RCODE6").
pub fn rcode_name(i: usize) -> String {
    Rcode(i as u16).to_string()
}

/// Whether rcode `i` is listed: always when it has a mnemonic, else only
/// when non-zero.
pub fn rcode_listed(i: usize, n: u64) -> bool {
    n > 0 || Rcode(i as u16).mnemonic().is_some()
}

/// Adds the counters of another worker.
pub trait Sum {
    /// `self += other`, wrapping.
    fn sum(&mut self, other: &Self);
}

impl Sum for u64 {
    fn sum(&mut self, other: &u64) {
        *self = self.wrapping_add(*other);
    }
}

/// Replies by rcode: on the wire a map from the rcode's name to the count,
/// in rcode order, listing those of [`rcode_listed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByRcode(pub [u64; RCODES]);

/// Drops by reason: on the wire a map from [`DropReason::name`] to the
/// count, every reason in counter order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByDropReason(pub [u64; DROPS]);

/// Reads a map of counters by name into `out`; names `index` does not
/// know (from another version of kdns) are skipped.
struct Named<'a> {
    out: &'a mut [u64],
    index: fn(&str) -> Option<usize>,
}

impl<'de> Visitor<'de> for Named<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of counters by name")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Named { out, index } = self;
        while let Some(k) = map.next_key::<String>()? {
            match index(&k) {
                Some(i) => out[i] = map.next_value()?,
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

macro_rules! by_name {
    ($t:ident, $n:expr, $name:expr, $listed:expr) => {
        impl Default for $t {
            fn default() -> $t {
                $t([0; $n])
            }
        }

        impl Sum for $t {
            fn sum(&mut self, other: &$t) {
                for (a, b) in self.0.iter_mut().zip(&other.0) {
                    a.sum(b);
                }
            }
        }

        impl $t {
            /// `(name, count)` in order, as listed on the wire.
            pub fn listed(&self) -> impl Iterator<Item = (String, u64)> + '_ {
                self.0.iter().enumerate().filter(|&(i, &n)| $listed(i, n)).map(|(i, &n)| ($name(i).to_string(), n))
            }

            /// The sum of every count.
            pub fn total(&self) -> u64 {
                self.0.iter().sum()
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.listed())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let mut v = $t::default();
                d.deserialize_map(Named { out: &mut v.0, index: |k| (0..$n).find(|&i| $name(i) == k) })?;
                Ok(v)
            }
        }
    };
}

by_name!(ByRcode, RCODES, rcode_name, rcode_listed);
by_name!(ByDropReason, DROPS, |i: usize| DropReason::ALL[i].name(), |_, _| true);

/// A struct of counters that [`Sum`] adds field by field.
macro_rules! summed {
    ($(#[$m:meta])* pub struct $t:ident { $($(#[$fm:meta])* pub $f:ident: $ft:ty,)* }) => {
        $(#[$m])*
        pub struct $t { $($(#[$fm])* pub $f: $ft,)* }

        impl Sum for $t {
            fn sum(&mut self, other: &$t) {
                $(self.$f.sum(&other.$f);)*
            }
        }
    };
}

summed! {
    /// The counters of one worker, or their sums.
    #[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct Counters {
        /// Packets handed to the engine.
        pub queries: u64,
        /// Of which over TCP.
        pub queries_tcp: u64,
        /// Replies by rcode.
        #[serde(rename = "replies_by_rcode")]
        pub rcodes: ByRcode,
        /// Answered from the cache.
        pub cache_hits: u64,
        /// Not in the cache (or only stale).
        pub cache_misses: u64,
        /// Cache hits on a negative answer.
        pub cache_negative_hits: u64,
        /// Entries in the cache.
        pub cache_entries: u64,
        /// Bytes the cache holds.
        pub cache_bytes: u64,
        /// Entries added.
        pub cache_inserts: u64,
        /// Entries evicted to make room.
        pub cache_evictions: u64,
        /// Entries found expired.
        pub cache_expired: u64,
        /// Entries loaded from the cache dump at start (a warm restart;
        /// each worker loads the whole dump, so the sum counts a name once
        /// per worker).
        pub cache_loaded: u64,
        /// Records of the cache dump skipped at start: expired meanwhile.
        pub cache_load_expired: u64,
        /// Queries sent to backends (first tries).
        pub forwarded: u64,
        /// Misses that waited on an identical question in flight.
        pub coalesced: u64,
        /// Misses refused: the client held its whole pending share.
        pub limited_pending: u64,
        /// Misses refused: the client spent its miss rate.
        pub limited_rate: u64,
        /// Tries that outlived their timeout while the backend kept answering.
        pub slow_tries: u64,
        /// Answers taken from a backend asked by an earlier try.
        pub late_answers: u64,
        /// Answered from the local records.
        pub local_answers: u64,
        /// Queries sent while every backend was marked down (panic mode).
        pub panic_forwards: u64,
        /// Queries sent again to another backend after a timeout.
        pub retried: u64,
        /// Tries that timed out.
        pub timeouts: u64,
        /// Backend answers accepted.
        pub answers: u64,
        /// Backend answers not cached.
        pub not_cached: u64,
        /// Early refreshes of popular entries sent.
        pub refreshes: u64,
        /// Probes sent to down backends.
        pub probes: u64,
        /// Stale answers served because no backend answered (RFC 8767).
        pub stale_answers: u64,
        /// SERVFAILs sent because no backend answered in time.
        pub gave_up: u64,
        /// Queries asked again over TCP to a backend (a truncated UDP
        /// answer to a TCP client).
        pub tcp_retries: u64,
        /// Of those, exchanges that failed (stale answer or SERVFAIL).
        pub tcp_retry_failures: u64,
        /// Replies with TC set because the answer did not fit.
        pub truncated: u64,
        /// REFUSED sent to clients outside the allowed networks.
        pub refused_acl: u64,
        /// FORMERR replies.
        pub formerr: u64,
        /// NOTIMP replies.
        pub notimp: u64,
        /// BADVERS replies.
        pub badvers: u64,
        /// Queries waiting for a backend: from the worker's snapshot, or the
        /// sum of its backends' outstanding gauges when it did not answer.
        pub in_flight: u64,
        /// Drops by reason.
        pub drops: ByDropReason,
        /// The socket layer's counters.
        pub io: IoCounters,
    }
}

summed! {
    /// The socket layer's counters of one worker, or their sums.
    #[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(default)]
    pub struct IoCounters {
        /// Datagrams or TCP messages received from clients.
        pub rx: u64,
        /// Datagrams or TCP messages sent to clients.
        pub tx: u64,
        /// Sends that failed.
        pub tx_errors: u64,
        /// Queries sent to backends.
        pub backend_tx: u64,
        /// Answers received from backends.
        pub backend_rx: u64,
        /// TCP connections accepted.
        pub tcp_accepted: u64,
        /// TCP connections that could not be set up.
        pub tcp_refused: u64,
        /// TCP connections over the per-client cap.
        pub tcp_refused_per_client: u64,
        /// TCP connections evicted idle from a full table.
        pub tcp_evicted_idle: u64,
        /// TCP connections evicted with a query in progress.
        pub tcp_evicted_busy: u64,
        /// TCP connections closed for idleness.
        pub tcp_idle_closed: u64,
        /// TCP connections open now.
        pub tcp_open: u64,
        /// TCP queries answered over TCP to a backend after a truncated answer.
        pub tcp_upstream: u64,
        /// Queries in flight when the worker stopped.
        pub lost_at_shutdown: u64,
        /// Source-port sockets open now.
        pub upstream_sockets_open: u64,
        /// Source-port sockets opened.
        pub upstream_sockets_opened: u64,
        /// Source-port slots given a fresh socket.
        pub upstream_rotations: u64,
        /// Rotations put off.
        pub upstream_rotations_deferred: u64,
        /// Source-port sockets that could not be opened.
        pub upstream_socket_errors: u64,
        /// Cache entries copied into the in-kernel tier now.
        pub tier_entries: u64,
        /// Copies made into the in-kernel tier.
        pub tier_promoted: u64,
        /// Copies taken out because their cache entry went.
        pub tier_demoted: u64,
        /// Copies taken out because the kernel no longer answered from them.
        pub tier_cold: u64,
        /// Datagrams longer than any query accepted.
        pub rx_oversized: u64,
        /// Frames that did not parse or could not be turned around (AF_XDP).
        pub frame_errors: u64,
        /// AF_XDP socket (kernel statistics): frames dropped for other
        /// reasons than a full RX ring or an empty fill ring.
        pub xsk_rx_dropped: u64,
        /// AF_XDP socket: frames dropped because the RX ring was full.
        pub xsk_rx_ring_full: u64,
        /// AF_XDP socket: frames that found the fill ring empty.
        pub xsk_fill_ring_empty: u64,
        /// AF_XDP socket: times the kernel found the TX ring empty.
        pub xsk_tx_ring_empty: u64,
        /// AF_XDP socket: invalid RX and TX descriptors.
        pub xsk_invalid: u64,
    }
}

/// The whole `/v1/stats` document.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// The daemon's version.
    pub version: String,
    /// Its process id.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_s: u64,
    /// The addresses it serves.
    pub listen: Vec<String>,
    /// Queries per second over the last second.
    pub qps_1s: f64,
    /// The same over the last 10 seconds.
    pub qps_10s: f64,
    /// Sums over every worker.
    pub totals: Totals,
    /// Every worker.
    pub workers: Vec<WorkerStats>,
    /// Every backend (also `/v1/backends`).
    pub backends: Vec<Backend>,
    /// The per-client fair shares in force (per worker).
    pub limits: Limits,
    /// The XDP program's counters per interface (empty without AF_XDP).
    pub xdp: Vec<XdpInterface>,
    /// 1 for a kdns started on its own; one more than the kdns it took
    /// over from (`kdns --takeover`).
    pub generation: u64,
    /// The handover that started this process, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handover: Option<Handover>,
    /// The hosts sharing records through etcd (also `/v1/cluster`), when
    /// `[cluster]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterView>,
}

/// A completed handover into this process.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Handover {
    /// The process handed over from.
    pub from_pid: u32,
    /// When it completed, seconds since the Unix epoch.
    pub at: u64,
    /// Milliseconds from connecting to the old process to `done`.
    pub took_ms: u64,
    /// Listening sockets received.
    pub sockets: usize,
    /// Bytes of cache snapshot received.
    pub cache_bytes: usize,
    /// AF_XDP queues the old process released.
    pub queues: u32,
}

/// Sums over all workers.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Workers summed.
    pub workers: usize,
    /// The sums.
    #[serde(flatten)]
    pub counters: Counters,
    /// `cache_hits / (cache_hits + cache_misses)`; null before any lookup.
    pub hit_ratio: Option<f64>,
}

/// Whether a worker answered the request for its snapshot (RTT histograms,
/// queries in flight).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotState {
    /// It answered (also what an absent field reads as).
    #[default]
    Ok,
    /// No answer within the wait.
    Timeout,
    /// The worker has stopped.
    Gone,
}

impl SnapshotState {
    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotState::Ok => "ok",
            SnapshotState::Timeout => "timeout",
            SnapshotState::Gone => "gone",
        }
    }
}

/// One worker.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerStats {
    /// Its index.
    pub id: usize,
    /// `udp`, `tcp` or `xdp`.
    pub kind: String,
    /// The core it is pinned to.
    pub core: Option<usize>,
    /// SCHED_FIFO priority the worker runs at (0: normal scheduling).
    pub realtime_priority: u64,
    /// Whether it answered the snapshot request.
    pub snapshot: SnapshotState,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// A backend's state over the workers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Up on every worker.
    Up,
    /// Down on every worker.
    Down,
    /// Up on some.
    Partial,
    /// No worker uses it.
    #[default]
    Unknown,
}

impl BackendState {
    /// Its name in the API.
    pub fn name(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Down => "down",
            BackendState::Partial => "partial",
            BackendState::Unknown => "unknown",
        }
    }
}

/// One backend, aggregated over the workers that use it.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Backend {
    /// `ip:port`.
    pub address: String,
    /// Up on every worker, down on every worker, partial, or unknown when
    /// no worker uses it (decided by the workers that sent it traffic).
    pub state: BackendState,
    /// Workers that see it up.
    pub up_workers: usize,
    /// Workers that use it.
    pub workers: usize,
    /// Queries waiting for it.
    pub in_flight: u64,
    /// Tries sent.
    pub sent: u64,
    /// Answers received.
    pub answers: u64,
    /// Tries that timed out.
    pub timeouts: u64,
    /// Tries that outlived their timeout while the backend kept answering.
    pub slow: u64,
    /// Answers after the query was answered or given up.
    pub late_answers: u64,
    /// Times it became suspect (silent; a probe decided).
    pub suspected: u64,
    /// Probes sent.
    pub probes: u64,
    /// Times it went down.
    pub went_down: u64,
    /// Times it came back.
    pub came_up: u64,
    /// The longest try timeout in force on the workers that have RTT samples
    /// of it (else on any: the maximum); it follows the RTT.
    pub try_timeout_ms: f64,
    /// RTT summary.
    pub rtt_ms: Rtt,
}

/// RTT summary in milliseconds (3 decimals); nulls without samples.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rtt {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Longest.
    pub max: Option<f64>,
    /// Mean.
    pub mean: Option<f64>,
    /// Answers in the merged histogram.
    pub samples: u64,
}

/// `[limits]` as configured.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// The IPv4 prefix that makes one client.
    pub client_prefix_v4: u8,
    /// The IPv6 prefix that makes one client.
    pub client_prefix_v6: u8,
    /// Queries a client may have waiting for a backend (0: no share).
    pub client_max_pending: u32,
    /// Cache misses per second a client may cause (0: no rate).
    pub client_miss_rate: u32,
    /// Their burst.
    pub client_miss_burst: u32,
    /// What a query over them gets (`servfail`, `refused`, `drop`).
    pub over_limit: String,
    /// Clients tracked per worker.
    pub clients: usize,
    /// The XDP program's per-client query rate (0: off); its drops are the
    /// queues' `dropped`.
    pub xdp_client_qps: u32,
    /// Its burst (0 when off).
    pub xdp_client_burst: u32,
    /// `tcp.max_connections`.
    pub tcp_max_connections: usize,
    /// `tcp.max_connections_per_client`.
    pub tcp_max_connections_per_client: usize,
    /// `upstream.source_ports` (per worker).
    pub source_ports: u16,
}

/// One interface's XDP program counters.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct XdpInterface {
    /// The interface.
    pub interface: String,
    /// Set when the counters could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The program on the interface (absent from daemons that predate it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub program: Option<XdpProgram>,
    /// Per queue.
    pub queues: Vec<XdpQueue>,
}

/// kdns's XDP program on one interface and the bpf_link holding it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct XdpProgram {
    /// The kernel's id of the program (as `ip link` and bpftool show it).
    pub program_id: u32,
    /// The bpf_link's id (kept across restarts while it is pinned).
    pub link_id: u32,
    /// `driver` or `generic`.
    pub mode: String,
    /// The interface's pin directory; absent when not pinned (the program
    /// goes away with this kdns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin_dir: Option<String>,
    /// When this kdns's program went onto the interface, Unix seconds.
    pub attached_at: u64,
    /// The program of a previous kdns this one replaced on its pinned
    /// link (absent when this kdns attached anew).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted_from: Option<u32>,
}

/// The XDP program's counters for one queue, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct XdpQueue {
    /// RX queue.
    pub queue: u32,
    /// Queries redirected to the queue's AF_XDP socket.
    pub redirected: u64,
    /// Packets left to the kernel (not DNS for us, or no socket on the queue).
    pub passed: u64,
    /// DNS-looking packets with bad lengths (left to the kernel).
    pub malformed: u64,
    /// Packets the program dropped.
    pub dropped: u64,
    /// Queries the program answered itself from the in-kernel tier (XDP_TX;
    /// not counted in `redirected`).
    pub answered: u64,
    /// Queries the in-kernel tier looked up and did not answer (no entry, or
    /// one at the end of its life): redirected or passed as counted there.
    pub answer_misses: u64,
}

#[cfg(test)]
mod tests;
