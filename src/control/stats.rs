//! `/v1/stats` and `/v1/backends`: counters read from every worker, RTT
//! histograms asked for with [`Control::Snapshot`].

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;
use kdns_core::engine::{DropReason, EngineStats};
use kdns_core::wire::Rcode;
use serde::{Serialize, Serializer};

use super::{Shared, SNAPSHOT_WAIT};
use crate::handle::{Control, IoStats, WorkerHandle, WorkerSnapshot};

/// Number of rcode counters in [`EngineStats::rcodes`].
pub(super) const RCODES: usize = 17;

/// The whole `/v1/stats` document.
#[derive(Debug, Serialize)]
pub(super) struct Stats {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub listen: Vec<String>,
    pub qps_1s: f64,
    pub qps_10s: f64,
    pub totals: Totals,
    pub workers: Vec<WorkerJson>,
    pub backends: Vec<BackendJson>,
    /// The per-client fair shares in force (per worker).
    pub limits: LimitsJson,
    /// The XDP program's counters per interface (empty without AF_XDP).
    pub xdp: Vec<XdpJson>,
}

/// `[limits]` as configured.
#[derive(Debug, Serialize)]
pub(super) struct LimitsJson {
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub client_max_pending: u32,
    pub client_miss_rate: u32,
    pub client_miss_burst: u32,
    pub over_limit: &'static str,
    pub clients: usize,
    /// The XDP program's per-client query rate (0: off); its drops are the
    /// queues' `dropped`.
    pub xdp_client_qps: u32,
    pub xdp_client_burst: u32,
    /// `tcp.max_connections` and `tcp.max_connections_per_client`.
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_client: usize,
    /// `upstream.source_ports` (per worker).
    pub source_ports: u16,
}

impl LimitsJson {
    pub(super) fn new(info: &super::DaemonInfo) -> LimitsJson {
        let (l, x) = (&info.limits, &info.xdp_client_rate);
        LimitsJson {
            client_prefix_v4: l.prefix_v4,
            client_prefix_v6: l.prefix_v6,
            client_max_pending: l.max_pending,
            client_miss_rate: l.miss_rate,
            client_miss_burst: l.miss_burst,
            over_limit: l.over_limit.name(),
            clients: l.table_size,
            xdp_client_qps: x.qps,
            xdp_client_burst: if x.qps > 0 { x.burst } else { 0 },
            tcp_max_connections: info.tcp_limits.0,
            tcp_max_connections_per_client: info.tcp_limits.1,
            source_ports: info.source_ports,
        }
    }
}

/// One interface's XDP program counters.
#[derive(Debug, Serialize)]
pub(super) struct XdpJson {
    pub interface: String,
    /// Set when the counters could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub queues: Vec<XdpQueueJson>,
}

/// One queue's XDP program counters.
#[derive(Debug, Serialize)]
pub(super) struct XdpQueueJson {
    pub queue: u32,
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    pub dropped: u64,
}

/// Reads every interface's XDP counters.
pub(super) fn xdp(sources: &[std::sync::Arc<dyn crate::handle::XdpCounterSource>]) -> Vec<XdpJson> {
    sources
        .iter()
        .map(|src| match src.read() {
            Ok(q) => XdpJson {
                interface: src.ifname().to_string(),
                error: None,
                queues: q
                    .into_iter()
                    .map(|c| XdpQueueJson {
                        queue: c.queue,
                        redirected: c.redirected,
                        passed: c.passed,
                        malformed: c.malformed,
                        dropped: c.dropped,
                    })
                    .collect(),
            },
            Err(e) => XdpJson { interface: src.ifname().to_string(), error: Some(e), queues: Vec::new() },
        })
        .collect()
}

/// Sums over all workers.
#[derive(Debug, Serialize)]
pub(super) struct Totals {
    pub workers: usize,
    #[serde(flatten)]
    pub counters: Counters,
    /// `cache_hits / (cache_hits + cache_misses)`; null before any lookup.
    pub hit_ratio: Option<f64>,
}

/// One worker.
#[derive(Debug, Serialize)]
pub(super) struct WorkerJson {
    pub id: usize,
    pub kind: &'static str,
    pub core: Option<usize>,
    /// SCHED_FIFO priority the worker runs at (0: normal scheduling).
    pub realtime_priority: u64,
    /// "ok", "timeout" (no answer within the wait) or "gone" (the worker
    /// has stopped).
    pub snapshot: &'static str,
    #[serde(flatten)]
    pub counters: Counters,
}

/// The counters of one worker, or their sums.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Counters {
    pub queries: u64,
    pub queries_tcp: u64,
    #[serde(rename = "replies_by_rcode", serialize_with = "ser_rcodes")]
    pub rcodes: [u64; RCODES],
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_negative_hits: u64,
    pub cache_entries: u64,
    pub cache_bytes: u64,
    pub cache_inserts: u64,
    pub cache_evictions: u64,
    pub cache_expired: u64,
    pub forwarded: u64,
    pub coalesced: u64,
    pub limited_pending: u64,
    pub limited_rate: u64,
    pub slow_tries: u64,
    pub late_answers: u64,
    pub local_answers: u64,
    pub panic_forwards: u64,
    pub retried: u64,
    pub timeouts: u64,
    pub answers: u64,
    pub not_cached: u64,
    pub refreshes: u64,
    pub probes: u64,
    pub stale_answers: u64,
    pub gave_up: u64,
    pub truncated: u64,
    pub refused_acl: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub badvers: u64,
    /// Queries waiting for a backend: from the worker's snapshot, or the sum
    /// of its backends' outstanding gauges when it did not answer.
    pub in_flight: u64,
    #[serde(serialize_with = "ser_drops")]
    pub drops: [u64; DropReason::ALL.len()],
    pub io: IoJson,
}

/// [`IoStats`] as numbers.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct IoJson {
    pub rx: u64,
    pub tx: u64,
    pub tx_errors: u64,
    pub backend_tx: u64,
    pub backend_rx: u64,
    pub tcp_accepted: u64,
    pub tcp_refused: u64,
    pub tcp_refused_per_client: u64,
    pub tcp_evicted_idle: u64,
    pub tcp_evicted_busy: u64,
    pub tcp_idle_closed: u64,
    pub tcp_open: u64,
    pub tcp_upstream: u64,
    pub lost_at_shutdown: u64,
    pub upstream_sockets_open: u64,
    pub upstream_sockets_opened: u64,
    pub upstream_rotations: u64,
    pub upstream_rotations_deferred: u64,
    pub upstream_socket_errors: u64,
    pub rx_oversized: u64,
    pub frame_errors: u64,
}

/// One backend, aggregated over the workers that use it.
#[derive(Debug, Serialize)]
pub(super) struct BackendJson {
    pub address: String,
    /// "up" on every worker, "down" on every worker, "partial", or
    /// "unknown" when no worker uses it.
    pub state: &'static str,
    pub up_workers: usize,
    pub workers: usize,
    pub in_flight: u64,
    pub sent: u64,
    pub answers: u64,
    pub timeouts: u64,
    /// Tries that outlived their timeout while the backend kept answering.
    pub slow: u64,
    pub late_answers: u64,
    /// Times it became suspect (silent; a probe decided).
    pub suspected: u64,
    pub probes: u64,
    pub went_down: u64,
    pub came_up: u64,
    /// The longest try timeout in force on the workers that have RTT samples
    /// of it (else on any: the maximum); it follows the RTT.
    pub try_timeout_ms: f64,
    pub rtt_ms: RttJson,
}

/// RTT summary in milliseconds (3 decimals); nulls without samples.
#[derive(Debug, Default, Serialize, PartialEq)]
pub(super) struct RttJson {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Answers in the merged histogram.
    pub samples: u64,
}

/// The display name of rcode `i` ("NOERROR", ..., "RCODE6").
pub(super) fn rcode_name(i: usize) -> String {
    Rcode(i as u16).to_string()
}

/// Whether rcode `i` is always listed (it has a mnemonic) or only when
/// non-zero.
pub(super) fn rcode_listed(i: usize, n: u64) -> bool {
    n > 0 || Rcode(i as u16).mnemonic().is_some()
}

fn ser_rcodes<S: Serializer>(v: &[u64; RCODES], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().enumerate().filter(|&(i, &n)| rcode_listed(i, n)).map(|(i, n)| (rcode_name(i), n)))
}

fn ser_drops<S: Serializer>(v: &[u64; DropReason::ALL.len()], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(DropReason::ALL.iter().zip(v).map(|(r, n)| (r.name(), n)))
}

impl Counters {
    fn read(w: &WorkerHandle, in_flight: Option<usize>) -> Counters {
        let e: &EngineStats = &w.engine;
        let c = &w.cache;
        let io = &w.io;
        let g = IoStats::get;
        Counters {
            queries: e.queries.get(),
            queries_tcp: e.queries_tcp.get(),
            rcodes: std::array::from_fn(|i| e.rcodes.get(i).map_or(0, |c| c.get())),
            cache_hits: e.cache_hits.get(),
            cache_misses: e.cache_misses.get(),
            cache_negative_hits: e.cache_negative_hits.get(),
            cache_entries: c.entries.get(),
            cache_bytes: c.bytes.get(),
            cache_inserts: c.inserts.get(),
            cache_evictions: c.evictions.get(),
            cache_expired: c.expired.get(),
            forwarded: e.forwarded.get(),
            coalesced: e.coalesced.get(),
            limited_pending: e.limited_pending.get(),
            limited_rate: e.limited_rate.get(),
            slow_tries: e.slow_tries.get(),
            late_answers: e.late_answers.get(),
            local_answers: e.local_answers.get(),
            panic_forwards: e.panic_forwards.get(),
            retried: e.retried.get(),
            timeouts: e.timeouts.get(),
            answers: e.answers.get(),
            not_cached: e.not_cached.get(),
            refreshes: e.refreshes.get(),
            probes: e.probes.get(),
            stale_answers: e.stale_answers.get(),
            gave_up: e.gave_up.get(),
            truncated: e.truncated.get(),
            refused_acl: e.refused_acl.get(),
            formerr: e.formerr.get(),
            notimp: e.notimp.get(),
            badvers: e.badvers.get(),
            in_flight: match in_flight {
                Some(n) => n as u64,
                None => w.backends.iter().map(|b| b.outstanding.get()).sum(),
            },
            drops: std::array::from_fn(|i| e.drops.get(i).map_or(0, |c| c.get())),
            io: IoJson {
                rx: g(&io.rx),
                tx: g(&io.tx),
                tx_errors: g(&io.tx_errors),
                backend_tx: g(&io.backend_tx),
                backend_rx: g(&io.backend_rx),
                tcp_accepted: g(&io.tcp_accepted),
                tcp_refused: g(&io.tcp_refused),
                tcp_refused_per_client: g(&io.tcp_refused_per_client),
                tcp_evicted_idle: g(&io.tcp_evicted_idle),
                tcp_evicted_busy: g(&io.tcp_evicted_busy),
                tcp_idle_closed: g(&io.tcp_idle_closed),
                tcp_open: g(&io.tcp_open),
                tcp_upstream: g(&io.tcp_upstream),
                lost_at_shutdown: g(&io.lost_at_shutdown),
                upstream_sockets_open: g(&io.upstream_sockets_open),
                upstream_sockets_opened: g(&io.upstream_sockets_opened),
                upstream_rotations: g(&io.upstream_rotations),
                upstream_rotations_deferred: g(&io.upstream_rotations_deferred),
                upstream_socket_errors: g(&io.upstream_socket_errors),
                rx_oversized: g(&io.rx_oversized),
                frame_errors: g(&io.frame_errors),
            },
        }
    }

    fn add(&mut self, o: &Counters) {
        fn s(a: &mut u64, b: u64) {
            *a = a.wrapping_add(b);
        }
        s(&mut self.queries, o.queries);
        s(&mut self.queries_tcp, o.queries_tcp);
        for (a, &b) in self.rcodes.iter_mut().zip(&o.rcodes) {
            s(a, b);
        }
        s(&mut self.cache_hits, o.cache_hits);
        s(&mut self.cache_misses, o.cache_misses);
        s(&mut self.cache_negative_hits, o.cache_negative_hits);
        s(&mut self.cache_entries, o.cache_entries);
        s(&mut self.cache_bytes, o.cache_bytes);
        s(&mut self.cache_inserts, o.cache_inserts);
        s(&mut self.cache_evictions, o.cache_evictions);
        s(&mut self.cache_expired, o.cache_expired);
        s(&mut self.forwarded, o.forwarded);
        s(&mut self.coalesced, o.coalesced);
        s(&mut self.limited_pending, o.limited_pending);
        s(&mut self.limited_rate, o.limited_rate);
        s(&mut self.slow_tries, o.slow_tries);
        s(&mut self.late_answers, o.late_answers);
        s(&mut self.local_answers, o.local_answers);
        s(&mut self.panic_forwards, o.panic_forwards);
        s(&mut self.retried, o.retried);
        s(&mut self.timeouts, o.timeouts);
        s(&mut self.answers, o.answers);
        s(&mut self.not_cached, o.not_cached);
        s(&mut self.refreshes, o.refreshes);
        s(&mut self.probes, o.probes);
        s(&mut self.stale_answers, o.stale_answers);
        s(&mut self.gave_up, o.gave_up);
        s(&mut self.truncated, o.truncated);
        s(&mut self.refused_acl, o.refused_acl);
        s(&mut self.formerr, o.formerr);
        s(&mut self.notimp, o.notimp);
        s(&mut self.badvers, o.badvers);
        s(&mut self.in_flight, o.in_flight);
        for (a, &b) in self.drops.iter_mut().zip(&o.drops) {
            s(a, b);
        }
        let (a, b) = (&mut self.io, &o.io);
        s(&mut a.rx, b.rx);
        s(&mut a.tx, b.tx);
        s(&mut a.tx_errors, b.tx_errors);
        s(&mut a.backend_tx, b.backend_tx);
        s(&mut a.backend_rx, b.backend_rx);
        s(&mut a.tcp_accepted, b.tcp_accepted);
        s(&mut a.tcp_refused, b.tcp_refused);
        s(&mut a.tcp_refused_per_client, b.tcp_refused_per_client);
        s(&mut a.tcp_evicted_idle, b.tcp_evicted_idle);
        s(&mut a.tcp_evicted_busy, b.tcp_evicted_busy);
        s(&mut a.tcp_idle_closed, b.tcp_idle_closed);
        s(&mut a.tcp_open, b.tcp_open);
        s(&mut a.tcp_upstream, b.tcp_upstream);
        s(&mut a.lost_at_shutdown, b.lost_at_shutdown);
        s(&mut a.upstream_sockets_open, b.upstream_sockets_open);
        s(&mut a.upstream_sockets_opened, b.upstream_sockets_opened);
        s(&mut a.upstream_rotations, b.upstream_rotations);
        s(&mut a.upstream_rotations_deferred, b.upstream_rotations_deferred);
        s(&mut a.upstream_socket_errors, b.upstream_socket_errors);
        s(&mut a.rx_oversized, b.rx_oversized);
        s(&mut a.frame_errors, b.frame_errors);
    }
}

/// A worker's answer to a snapshot request.
enum Snap {
    Ok(WorkerSnapshot),
    Timeout,
    Gone,
}

impl Snap {
    fn label(&self) -> &'static str {
        match self {
            Snap::Ok(_) => "ok",
            Snap::Timeout => "timeout",
            Snap::Gone => "gone",
        }
    }
}

/// Asks every worker for a snapshot, then collects the answers, waiting at
/// most [`SNAPSHOT_WAIT`] in all.
fn snapshots(workers: &[WorkerHandle]) -> Vec<Snap> {
    let asked: Vec<Option<Receiver<WorkerSnapshot>>> = workers
        .iter()
        .map(|w| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            w.send(Control::Snapshot(tx)).then_some(rx)
        })
        .collect();
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    asked
        .into_iter()
        .zip(workers)
        .map(|(rx, w)| match rx {
            None => Snap::Gone,
            Some(rx) => match rx.recv_deadline(deadline) {
                Ok(s) => {
                    if s.worker != w.id {
                        tracing::debug!("snapshot of worker {} says it is from worker {}", w.id, s.worker);
                    }
                    Snap::Ok(s)
                }
                Err(RecvTimeoutError::Timeout) => Snap::Timeout,
                Err(RecvTimeoutError::Disconnected) => Snap::Gone,
            },
        })
        .collect()
}

/// A backend being aggregated.
struct BackendAcc {
    addr: SocketAddr,
    json: BackendJson,
    rtt: Option<Histogram<u64>>,
    /// Workers that have sent it queries, and how many of those see it up.
    active: usize,
    active_up: usize,
    /// The longest try timeout among workers with RTT samples, and among
    /// the others (still at the maximum).
    rto_sampled_ms: f64,
    rto_idle_ms: f64,
}

/// Milliseconds with 3 decimals from microseconds.
fn ms(us: f64) -> f64 {
    us.round() / 1000.0
}

/// Summary of a merged RTT histogram (microseconds).
pub(super) fn rtt_summary(h: Option<&Histogram<u64>>) -> RttJson {
    match h {
        Some(h) if !h.is_empty() => RttJson {
            p50: Some(ms(h.value_at_quantile(0.50) as f64)),
            p90: Some(ms(h.value_at_quantile(0.90) as f64)),
            p99: Some(ms(h.value_at_quantile(0.99) as f64)),
            max: Some(ms(h.max() as f64)),
            mean: Some(ms(h.mean())),
            samples: h.len(),
        },
        _ => RttJson::default(),
    }
}

/// Adds `h` to the merged histogram `into`.
fn merge(into: &mut Option<Histogram<u64>>, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    let m = into.get_or_insert_with(|| {
        let mut m = Histogram::new_from(h);
        m.auto(true);
        m
    });
    if let Err(e) = m.add(h) {
        tracing::warn!("cannot merge RTT histograms: {e:?}");
    }
}

/// Aggregates backends over workers, in configuration order (then any
/// backend only a worker knows about). `snaps[i]` belongs to `workers[i]`.
fn backends(configured: &[SocketAddr], workers: &[WorkerHandle], snaps: &[Snap]) -> Vec<BackendJson> {
    let mut acc: Vec<BackendAcc> = Vec::new();
    let slot = |acc: &mut Vec<BackendAcc>, addr: SocketAddr| -> usize {
        if let Some(i) = acc.iter().position(|a| a.addr == addr) {
            return i;
        }
        acc.push(BackendAcc {
            addr,
            json: BackendJson {
                address: addr.to_string(),
                state: "unknown",
                up_workers: 0,
                workers: 0,
                in_flight: 0,
                sent: 0,
                answers: 0,
                timeouts: 0,
                slow: 0,
                late_answers: 0,
                suspected: 0,
                probes: 0,
                went_down: 0,
                came_up: 0,
                try_timeout_ms: 0.0,
                rtt_ms: RttJson::default(),
            },
            rtt: None,
            active: 0,
            active_up: 0,
            rto_sampled_ms: 0.0,
            rto_idle_ms: 0.0,
        });
        acc.len() - 1
    };
    for &a in configured {
        slot(&mut acc, a);
    }
    for (w, snap) in workers.iter().zip(snaps) {
        for (bi, b) in w.backends.iter().enumerate() {
            let i = slot(&mut acc, b.addr);
            let a = &mut acc[i];
            let j = &mut a.json;
            j.workers += 1;
            j.up_workers += usize::from(b.state_up.get() != 0);
            // Views of workers that have sent this backend traffic decide its
            // state: a worker with no traffic for it (the TCP server, often)
            // has seen no timeout and would still call it up.
            if b.sent.get() > 0 {
                a.active += 1;
                a.active_up += usize::from(b.state_up.get() != 0);
            }
            j.in_flight += b.outstanding.get();
            j.sent += b.sent.get();
            j.answers += b.answers.get();
            j.timeouts += b.timeouts.get();
            j.slow += b.slow.get();
            j.late_answers += b.late_answers.get();
            j.suspected += b.suspected.get();
            let rto = b.try_timeout_us.get() as f64 / 1000.0;
            if b.rtt_count.get() > 0 {
                a.rto_sampled_ms = a.rto_sampled_ms.max(rto);
            } else {
                a.rto_idle_ms = a.rto_idle_ms.max(rto);
            }
            j.probes += b.probes.get();
            j.went_down += b.went_down.get();
            j.came_up += b.came_up.get();
            if let Snap::Ok(s) = snap {
                if let Some(h) = s.rtt_us.get(bi) {
                    merge(&mut acc[i].rtt, h);
                }
            }
        }
    }
    acc.into_iter()
        .map(|mut a| {
            let j = &mut a.json;
            j.try_timeout_ms = if a.rto_sampled_ms > 0.0 { a.rto_sampled_ms } else { a.rto_idle_ms };
            let (up, n) = if a.active > 0 { (a.active_up, a.active) } else { (j.up_workers, j.workers) };
            j.state = match (up, n) {
                (_, 0) => "unknown",
                (u, n) if u == n => "up",
                (0, _) => "down",
                _ => "partial",
            };
            j.rtt_ms = rtt_summary(a.rtt.as_ref());
            a.json
        })
        .collect()
}

/// Builds the `/v1/stats` document.
pub(super) fn collect(shared: &Shared) -> Stats {
    let workers = &shared.workers;
    let snaps = snapshots(workers);
    let mut totals = Counters::default();
    let mut wjson = Vec::with_capacity(workers.len());
    for (w, snap) in workers.iter().zip(&snaps) {
        let in_flight = match snap {
            Snap::Ok(s) => Some(s.in_flight),
            _ => None,
        };
        let counters = Counters::read(w, in_flight);
        totals.add(&counters);
        let realtime_priority = w.io.sched.get().saturating_sub(1);
        wjson.push(WorkerJson { id: w.id, kind: w.kind.name(), core: w.core, realtime_priority, snapshot: snap.label(), counters });
    }
    let lookups = totals.cache_hits + totals.cache_misses;
    let hit_ratio = (lookups > 0).then(|| (totals.cache_hits as f64 / lookups as f64 * 10000.0).round() / 10000.0);
    let now = Instant::now();
    let total_q = shared.total_queries();
    let (qps_1s, qps_10s) = {
        let r = shared.rate.lock().unwrap_or_else(|e| e.into_inner());
        (r.qps(1, now, total_q), r.qps(10, now, total_q))
    };
    Stats {
        version: shared.info.version.clone(),
        pid: shared.info.pid,
        uptime_s: now.saturating_duration_since(shared.info.started).as_secs(),
        listen: shared.info.listen.iter().map(|a| a.to_string()).collect(),
        qps_1s,
        qps_10s,
        totals: Totals { workers: workers.len(), counters: totals, hit_ratio },
        workers: wjson,
        backends: backends(&shared.info.backends, workers, &snaps),
        limits: LimitsJson::new(&shared.info),
        xdp: xdp(&shared.info.xdp),
    }
}
