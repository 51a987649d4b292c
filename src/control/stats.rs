//! `/v1/stats` and `/v1/backends`: counters read from every worker, RTT
//! histograms asked for with [`Control::Snapshot`]. The document's types
//! are `kdns_api::stats`; this fills them in.

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use hdrhistogram::Histogram;
use kdns_api::stats::{
    Backend, BackendState, ByDropReason, ByRcode, Counters, IoCounters, Limits, Rtt, SnapshotState, Stats, Sum, Totals, WorkerStats,
    XdpInterface,
};
use kdns_core::engine::EngineStats;

use super::{Shared, SNAPSHOT_WAIT};
use crate::handle::{Control, IoStats, WorkerHandle, WorkerSnapshot};

/// `[limits]` as configured.
pub(super) fn limits(info: &super::DaemonInfo) -> Limits {
    let (l, x) = (&info.limits, &info.xdp_client_rate);
    Limits {
        client_prefix_v4: l.prefix_v4,
        client_prefix_v6: l.prefix_v6,
        client_max_pending: l.max_pending,
        client_miss_rate: l.miss_rate,
        client_miss_burst: l.miss_burst,
        over_limit: l.over_limit.name().into(),
        clients: l.table_size,
        xdp_client_qps: x.qps,
        xdp_client_burst: if x.qps > 0 { x.burst } else { 0 },
        tcp_max_connections: info.tcp_limits.0,
        tcp_max_connections_per_client: info.tcp_limits.1,
        source_ports: info.source_ports,
    }
}

/// Reads every interface's XDP counters.
pub(super) fn xdp(sources: &[std::sync::Arc<dyn crate::handle::XdpCounterSource>]) -> Vec<XdpInterface> {
    sources
        .iter()
        .map(|src| {
            let (queues, error) = match src.read() {
                Ok(q) => (q, None),
                Err(e) => (Vec::new(), Some(e)),
            };
            XdpInterface { interface: src.ifname().to_string(), error, program: src.program(), queues }
        })
        .collect()
}

/// One worker's counters, read without stopping it.
fn read(w: &WorkerHandle, in_flight: Option<usize>) -> Counters {
    let e: &EngineStats = &w.engine;
    let c = &w.cache;
    let io = &w.io;
    let g = IoStats::get;
    Counters {
        queries: e.queries.get(),
        queries_tcp: e.queries_tcp.get(),
        rcodes: ByRcode(std::array::from_fn(|i| e.rcodes.get(i).map_or(0, |c| c.get()))),
        cache_hits: e.cache_hits.get(),
        cache_misses: e.cache_misses.get(),
        cache_negative_hits: e.cache_negative_hits.get(),
        cache_entries: c.entries.get(),
        cache_bytes: c.bytes.get(),
        cache_inserts: c.inserts.get(),
        cache_evictions: c.evictions.get(),
        cache_expired: c.expired.get(),
        cache_loaded: c.loaded.get(),
        cache_load_expired: c.load_expired.get(),
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
        tcp_retries: e.tcp_retries.get(),
        tcp_retry_failures: e.tcp_retry_failures.get(),
        truncated: e.truncated.get(),
        refused_acl: e.refused_acl.get(),
        formerr: e.formerr.get(),
        notimp: e.notimp.get(),
        badvers: e.badvers.get(),
        in_flight: match in_flight {
            Some(n) => n as u64,
            None => w.backends.iter().map(|b| b.outstanding.get()).sum(),
        },
        drops: ByDropReason(std::array::from_fn(|i| e.drops.get(i).map_or(0, |c| c.get()))),
        io: IoCounters {
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
            tier_entries: io.tier_entries.get(),
            tier_promoted: g(&io.tier_promoted),
            tier_demoted: g(&io.tier_demoted),
            tier_cold: g(&io.tier_cold),
            rx_oversized: g(&io.rx_oversized),
            frame_errors: g(&io.frame_errors),
            xsk_rx_dropped: io.xsk_rx_dropped.get(),
            xsk_rx_ring_full: io.xsk_rx_ring_full.get(),
            xsk_fill_ring_empty: io.xsk_fill_ring_empty.get(),
            xsk_tx_ring_empty: io.xsk_tx_ring_empty.get(),
            xsk_invalid: io.xsk_invalid.get(),
        },
    }
}

/// A worker's answer to a snapshot request.
enum Snap {
    Ok(WorkerSnapshot),
    Timeout,
    Gone,
}

impl Snap {
    fn state(&self) -> SnapshotState {
        match self {
            Snap::Ok(_) => SnapshotState::Ok,
            Snap::Timeout => SnapshotState::Timeout,
            Snap::Gone => SnapshotState::Gone,
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
    json: Backend,
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
pub(super) fn rtt_summary(h: Option<&Histogram<u64>>) -> Rtt {
    match h {
        Some(h) if !h.is_empty() => Rtt {
            p50: Some(ms(h.value_at_quantile(0.50) as f64)),
            p90: Some(ms(h.value_at_quantile(0.90) as f64)),
            p99: Some(ms(h.value_at_quantile(0.99) as f64)),
            max: Some(ms(h.max() as f64)),
            mean: Some(ms(h.mean())),
            samples: h.len(),
        },
        _ => Rtt::default(),
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
fn backends(configured: &[SocketAddr], workers: &[WorkerHandle], snaps: &[Snap]) -> Vec<Backend> {
    let mut acc: Vec<BackendAcc> = Vec::new();
    let slot = |acc: &mut Vec<BackendAcc>, addr: SocketAddr| -> usize {
        if let Some(i) = acc.iter().position(|a| a.addr == addr) {
            return i;
        }
        acc.push(BackendAcc {
            addr,
            json: Backend { address: addr.to_string(), ..Backend::default() },
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
                (_, 0) => BackendState::Unknown,
                (u, n) if u == n => BackendState::Up,
                (0, _) => BackendState::Down,
                _ => BackendState::Partial,
            };
            j.rtt_ms = rtt_summary(a.rtt.as_ref());
            a.json
        })
        .collect()
}

/// Builds the `/v1/stats` document.
pub(super) fn collect(shared: &Shared) -> Stats {
    let workers = &shared.workers();
    let snaps = snapshots(workers);
    let mut totals = Counters::default();
    let mut wjson = Vec::with_capacity(workers.len());
    for (w, snap) in workers.iter().zip(&snaps) {
        let in_flight = match snap {
            Snap::Ok(s) => Some(s.in_flight),
            _ => None,
        };
        let counters = read(w, in_flight);
        totals.sum(&counters);
        let realtime_priority = w.io.sched.get().saturating_sub(1);
        let kind = w.kind.name().into();
        wjson.push(WorkerStats { id: w.id, kind, core: w.core, realtime_priority, snapshot: snap.state(), counters });
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
        limits: limits(&shared.info),
        xdp: xdp(&shared.xdp()),
        generation: shared.info.generation,
        handover: shared.info.handover.as_ref().map(|h| kdns_api::stats::Handover {
            from_pid: h.from_pid,
            at: h.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            took_ms: u64::try_from(h.took.as_millis()).unwrap_or(u64::MAX),
            sockets: h.sockets,
            cache_bytes: h.cache_bytes,
            queues: h.queues,
        }),
        cluster: shared.records.as_ref().and_then(|s| s.cluster_view()),
    }
}
