//! `GET /metrics`: Prometheus text exposition format 0.0.4, with
//! CoreDNS-style names. Only counters read through the `Arc`s; no message to
//! the workers, so a scrape never waits.
//!
//! Families, in order (labels in braces):
//!
//! | Family | Type | From |
//! |---|---|---|
//! | `kdns_requests_total{worker,proto}` | counter | `EngineStats::queries`, `queries_tcp` |
//! | `kdns_responses_total{rcode}` | counter | `EngineStats::rcodes` |
//! | `kdns_local_answers_total` | counter | `EngineStats::local_answers` |
//! | `kdns_cache_hits_total`, `kdns_cache_misses_total` | counter | `EngineStats` |
//! | `kdns_cache_entries` | gauge | `CacheStats::entries` |
//! | `kdns_cache_evictions_total` | counter | `CacheStats::evictions` |
//! | `kdns_forward_requests_total{backend}` | counter | `BackendStats::sent` |
//! | `kdns_forward_timeouts_total{backend}` | counter | `BackendStats::timeouts` |
//! | `kdns_forward_slow_total{backend}` | counter | `BackendStats::slow` |
//! | `kdns_forward_late_answers_total` | counter | `EngineStats::late_answers` |
//! | `kdns_forward_tcp_retries_total` | counter | `EngineStats::tcp_retries` |
//! | `kdns_forward_tcp_retry_failures_total` | counter | `EngineStats::tcp_retry_failures` |
//! | `kdns_coalesced_total` | counter | `EngineStats::coalesced` |
//! | `kdns_limited_total{reason}` | counter | `EngineStats::limited_pending`, `limited_rate` |
//! | `kdns_limit{name}`, `kdns_limit_over_limit_info{action}` | gauge | the `[limits]` in force, `tcp.max_connections(_per_client)`, `upstream.source_ports` |
//! | `kdns_forward_retries_total` | counter | `EngineStats::retried` |
//! | `kdns_stale_answers_total` | counter | `EngineStats::stale_answers` |
//! | `kdns_backend_up{backend}` | gauge | `BackendStats::state_up` |
//! | `kdns_backend_suspected_total{backend}` | counter | `BackendStats::suspected` |
//! | `kdns_backend_try_timeout_seconds{backend}` | gauge | `BackendStats::try_timeout_us` (the longest over the workers with RTT samples, else over all) |
//! | `kdns_backend_rtt_seconds{backend}` | summary (`_sum`, `_count`) | `BackendStats::rtt_sum_us`, `rtt_count` |
//! | `kdns_request_duration_seconds` | histogram | `EngineStats::latency`, `latency_sum_us` |
//! | `kdns_drops_total{reason}` | counter | `EngineStats::drops` |
//! | `kdns_tcp_connections_open` | gauge | `IoStats::tcp_open` |
//! | `kdns_upstream_sockets_open` | gauge | `IoStats::upstream_sockets_open` |
//! | `kdns_upstream_sockets_opened_total` | counter | `IoStats::upstream_sockets_opened` |
//! | `kdns_upstream_socket_rotations_total{outcome}` | counter | `IoStats::upstream_rotations`, `upstream_rotations_deferred`, `upstream_socket_errors` |
//! | `kdns_tcp_connections_total{event}` | counter | `IoStats::tcp_accepted`, `tcp_refused_per_client`, `tcp_evicted_idle`, `tcp_evicted_busy`, `tcp_idle_closed`, `tcp_refused` |
//! | `kdns_xdp_program_info{interface,program_id,link_id,mode,pin_dir,adopted_from}` | gauge (1) | the program on each interface |
//! | `kdns_xdp_program_attached_timestamp_seconds{interface}` | gauge | when it went onto the interface |
//! | `kdns_xdp_packets_total{interface,queue,action}` | counter | the XDP program's maps |
//!
//! Everything but `kdns_requests_total` is summed over workers.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use kdns_core::engine::{ClientLimits, DropReason, LATENCY_BOUNDS};

use crate::handle::{IoStats, WorkerHandle, XdpCounterSource};
use kdns_api::stats::{rcode_listed, rcode_name, RCODES};

/// The `Content-Type` of the exposition format.
pub(super) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes a sample's name and labels (`name{k="v",...}`).
fn series(out: &mut String, name: &str, labels: &[(&str, &str)]) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", esc(val));
        }
        out.push('}');
    }
}

/// Writes one sample; `labels` are `(name, value)` pairs.
pub(super) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
    series(out, name, labels);
    let _ = writeln!(out, " {v}");
}

/// Writes one sample with a floating-point value (seconds).
fn sample_f64(out: &mut String, name: &str, labels: &[(&str, &str)], v: f64) {
    series(out, name, labels);
    let _ = writeln!(out, " {}", float(v));
}

/// A float as the exposition format spells it: Rust's shortest
/// round-trip decimal, `+Inf`, `-Inf`, `NaN`.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Microseconds as seconds.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Sums `f` over the workers.
fn sum(workers: &[WorkerHandle], f: impl Fn(&WorkerHandle) -> u64) -> u64 {
    workers.iter().map(f).fold(0u64, u64::wrapping_add)
}

/// A single unlabelled counter or gauge family.
fn single(out: &mut String, name: &str, kind: &str, help: &str, v: u64) {
    family(out, name, kind, help);
    sample(out, name, &[], v);
}

/// A family with a sample per backend (label `backend`, the address in
/// `addrs` at the row's index): `v` of its row.
fn per_backend(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: &[BackendRow],
    addrs: &[String],
    v: impl Fn(&BackendRow) -> u64,
) {
    family(out, name, kind, help);
    for (r, a) in rows.iter().zip(addrs) {
        sample(out, name, &[("backend", a)], v(r));
    }
}

/// A counter or gauge summed over the workers: name, type, help, and
/// what to sum.
type Summed = (&'static str, &'static str, &'static str, fn(&WorkerHandle) -> u64);

/// Writes each of `families` as a single sample, in order.
fn summed(out: &mut String, workers: &[WorkerHandle], families: &[Summed]) {
    for &(name, kind, help, get) in families {
        single(out, name, kind, help, sum(workers, get));
    }
}

/// Writes a histogram family: `buckets` are `(upper bound, count)` with
/// counts *not* cumulative, `overflow` the count above the last bound.
/// Writes the cumulative `_bucket` series (`+Inf` last), `_sum` and
/// `_count` (= the `+Inf` bucket).
fn histogram(out: &mut String, name: &str, help: &str, buckets: &[(f64, u64)], overflow: u64, sum_seconds: f64) {
    family(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for &(le, n) in buckets {
        cumulative = cumulative.wrapping_add(n);
        sample(out, &bucket, &[("le", &float(le))], cumulative);
    }
    cumulative = cumulative.wrapping_add(overflow);
    sample(out, &bucket, &[("le", "+Inf")], cumulative);
    sample_f64(out, &format!("{name}_sum"), &[], sum_seconds);
    sample(out, &format!("{name}_count"), &[], cumulative);
}

/// One backend summed over the workers that know it.
#[derive(Debug, Clone, PartialEq)]
struct BackendRow {
    addr: SocketAddr,
    sent: u64,
    timeouts: u64,
    slow: u64,
    suspected: u64,
    try_timeout_us: u64,
    try_timeout_idle_us: u64,
    rtt_sum_us: u64,
    rtt_count: u64,
    /// Workers that see it up, and that know it.
    up_views: usize,
    views: usize,
    /// The same, among the workers that sent it something.
    active_up_views: usize,
    active_views: usize,
}

impl BackendRow {
    fn new(addr: SocketAddr) -> Self {
        BackendRow {
            addr,
            sent: 0,
            timeouts: 0,
            slow: 0,
            suspected: 0,
            try_timeout_us: 0,
            try_timeout_idle_us: 0,
            rtt_sum_us: 0,
            rtt_count: 0,
            up_views: 0,
            views: 0,
            active_up_views: 0,
            active_views: 0,
        }
    }

    /// Up on every worker that uses it (as in /v1/stats: the views of the
    /// workers that sent it something decide; without any, all views).
    fn up(&self) -> bool {
        if self.active_views > 0 {
            self.active_up_views == self.active_views
        } else {
            self.views > 0 && self.up_views == self.views
        }
    }
}

/// Per-backend sums over workers, in configuration order then discovery
/// order.
fn backend_rows(configured: &[SocketAddr], workers: &[WorkerHandle]) -> Vec<BackendRow> {
    let mut rows: Vec<BackendRow> = configured.iter().map(|&a| BackendRow::new(a)).collect();
    for w in workers {
        for b in w.backends.iter() {
            let i = match rows.iter().position(|r| r.addr == b.addr) {
                Some(i) => i,
                None => {
                    rows.push(BackendRow::new(b.addr));
                    rows.len() - 1
                }
            };
            let r = &mut rows[i];
            let sent = b.sent.get();
            r.sent = r.sent.wrapping_add(sent);
            r.timeouts = r.timeouts.wrapping_add(b.timeouts.get());
            r.slow = r.slow.wrapping_add(b.slow.get());
            r.suspected = r.suspected.wrapping_add(b.suspected.get());
            if b.rtt_count.get() > 0 {
                r.try_timeout_us = r.try_timeout_us.max(b.try_timeout_us.get());
            } else {
                r.try_timeout_idle_us = r.try_timeout_idle_us.max(b.try_timeout_us.get());
            }
            r.rtt_sum_us = r.rtt_sum_us.wrapping_add(b.rtt_sum_us.get());
            r.rtt_count = r.rtt_count.wrapping_add(b.rtt_count.get());
            let up = usize::from(b.state_up.get() != 0);
            r.up_views += up;
            r.views += 1;
            if sent > 0 {
                r.active_up_views += up;
                r.active_views += 1;
            }
        }
    }
    rows
}

/// The whole exposition.
pub(super) fn render(
    workers: &[WorkerHandle],
    configured: &[SocketAddr],
    xdp: &[Arc<dyn XdpCounterSource>],
    limits: &ClientLimits,
    xdp_rate: &crate::config::XdpClientRate,
    tcp_limits: (usize, usize),
    source_ports: u16,
) -> String {
    let mut out = String::with_capacity(8192);

    family(&mut out, "kdns_requests_total", "counter", "DNS queries received, by worker and transport.");
    for w in workers {
        let id = w.id.to_string();
        let (all, tcp) = (w.engine.queries.get(), w.engine.queries_tcp.get());
        sample(&mut out, "kdns_requests_total", &[("worker", &id), ("proto", "udp")], all.saturating_sub(tcp));
        sample(&mut out, "kdns_requests_total", &[("worker", &id), ("proto", "tcp")], tcp);
    }

    family(&mut out, "kdns_responses_total", "counter", "DNS replies sent, by rcode.");
    for i in 0..RCODES {
        let n = sum(workers, |w| w.engine.rcodes.get(i).map_or(0, |c| c.get()));
        if rcode_listed(i, n) {
            sample(&mut out, "kdns_responses_total", &[("rcode", &rcode_name(i))], n);
        }
    }

    summed(
        &mut out,
        workers,
        &[
            ("kdns_local_answers_total", "counter", "Queries answered from the local records (services, static records).", |w| {
                w.engine.local_answers.get()
            }),
            ("kdns_cache_hits_total", "counter", "Queries answered from the cache.", |w| w.engine.cache_hits.get()),
            ("kdns_cache_misses_total", "counter", "Queries not answered from the cache.", |w| w.engine.cache_misses.get()),
            ("kdns_cache_entries", "gauge", "Entries in the caches of all workers.", |w| w.cache.entries.get()),
            ("kdns_cache_evictions_total", "counter", "Cache entries evicted to make room.", |w| w.cache.evictions.get()),
        ],
    );

    let rows = backend_rows(configured, workers);
    let addrs: Vec<String> = rows.iter().map(|r| r.addr.to_string()).collect();
    per_backend(&mut out, "kdns_forward_requests_total", "counter", "Queries sent to a backend (probes included).", &rows, &addrs, |r| {
        r.sent
    });
    per_backend(
        &mut out,
        "kdns_forward_timeouts_total",
        "counter",
        "Tries to a backend that timed out with no answer from it since they were sent (silent).",
        &rows,
        &addrs,
        |r| r.timeouts,
    );
    per_backend(
        &mut out,
        "kdns_forward_slow_total",
        "counter",
        "Tries that outlived their timeout while the backend kept answering others (slow names; they kept waiting).",
        &rows,
        &addrs,
        |r| r.slow,
    );
    summed(
        &mut out,
        workers,
        &[
            (
                "kdns_forward_tcp_retries_total",
                "counter",
                "Queries asked again over TCP to a backend because its UDP answer to a TCP client was truncated.",
                |w| w.engine.tcp_retries.get(),
            ),
            (
                "kdns_forward_tcp_retry_failures_total",
                "counter",
                "TCP exchanges with a backend that failed (the client got a stale answer or SERVFAIL).",
                |w| w.engine.tcp_retry_failures.get(),
            ),
            ("kdns_forward_late_answers_total", "counter", "Answers taken from a backend asked by an earlier try of the query.", |w| {
                w.engine.late_answers.get()
            }),
            (
                "kdns_coalesced_total",
                "counter",
                "Misses answered from an identical question already in flight instead of going upstream.",
                |w| w.engine.coalesced.get(),
            ),
        ],
    );
    family(&mut out, "kdns_limited_total", "counter", "Misses refused because the client was over its fair share, by limit.");
    sample(&mut out, "kdns_limited_total", &[("reason", "pending")], sum(workers, |w| w.engine.limited_pending.get()));
    sample(&mut out, "kdns_limited_total", &[("reason", "rate")], sum(workers, |w| w.engine.limited_rate.get()));
    family(&mut out, "kdns_limit", "gauge", "The per-client fair shares in force, per worker ([limits]; 0: off).");
    for (name, v) in [
        ("client_prefix_v4", u64::from(limits.prefix_v4)),
        ("client_prefix_v6", u64::from(limits.prefix_v6)),
        ("client_max_pending", u64::from(limits.max_pending)),
        ("client_miss_rate", u64::from(limits.miss_rate)),
        ("client_miss_burst", u64::from(limits.miss_burst)),
        ("clients", limits.table_size as u64),
        ("xdp_client_qps", u64::from(xdp_rate.qps)),
        ("xdp_client_burst", if xdp_rate.qps > 0 { u64::from(xdp_rate.burst) } else { 0 }),
        ("tcp_max_connections", tcp_limits.0 as u64),
        ("tcp_max_connections_per_client", tcp_limits.1 as u64),
        ("source_ports", u64::from(source_ports)),
    ] {
        sample(&mut out, "kdns_limit", &[("name", name)], v);
    }
    let over = limits.over_limit.name();
    family(&mut out, "kdns_limit_over_limit_info", "gauge", "What a client over its share gets (the label; always 1).");
    sample(&mut out, "kdns_limit_over_limit_info", &[("action", over)], 1);
    summed(
        &mut out,
        workers,
        &[
            ("kdns_forward_retries_total", "counter", "Queries sent again to another backend after a timeout.", |w| w.engine.retried.get()),
            ("kdns_stale_answers_total", "counter", "Stale answers served because no backend answered (RFC 8767).", |w| {
                w.engine.stale_answers.get()
            }),
        ],
    );
    per_backend(&mut out, "kdns_backend_up", "gauge", "1 if the backend is up on every worker that uses it, else 0.", &rows, &addrs, |r| {
        u64::from(r.up())
    });
    per_backend(
        &mut out,
        "kdns_backend_suspected_total",
        "counter",
        "Times a backend became suspect (silent; a probe decided).",
        &rows,
        &addrs,
        |r| r.suspected,
    );
    family(
        &mut out,
        "kdns_backend_try_timeout_seconds",
        "gauge",
        "The try timeout in force for a backend (it follows the round-trip time; the longest over workers).",
    );
    for (r, a) in rows.iter().zip(&addrs) {
        let us = if r.try_timeout_us > 0 { r.try_timeout_us } else { r.try_timeout_idle_us };
        sample_f64(&mut out, "kdns_backend_try_timeout_seconds", &[("backend", a)], secs(us));
    }
    family(&mut out, "kdns_backend_rtt_seconds", "summary", "Round-trip time of the answers from a backend.");
    for (r, a) in rows.iter().zip(&addrs) {
        sample_f64(&mut out, "kdns_backend_rtt_seconds_sum", &[("backend", a)], secs(r.rtt_sum_us));
        sample(&mut out, "kdns_backend_rtt_seconds_count", &[("backend", a)], r.rtt_count);
    }

    // One read of each slot: `_count` is the sum of the buckets read.
    let mut slots = [0u64; LATENCY_BOUNDS.len() + 1];
    for w in workers {
        for (s, c) in slots.iter_mut().zip(w.engine.latency.iter()) {
            *s = s.wrapping_add(c.get());
        }
    }
    let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS.iter().copied().zip(slots.iter().copied()).collect();
    histogram(
        &mut out,
        "kdns_request_duration_seconds",
        "Time from a query's arrival to its reply.",
        &buckets,
        slots[LATENCY_BOUNDS.len()],
        secs(sum(workers, |w| w.engine.latency_sum_us.get())),
    );

    family(&mut out, "kdns_drops_total", "counter", "Packets dropped without a reply, by reason.");
    for (i, r) in DropReason::ALL.iter().enumerate() {
        let n = sum(workers, |w| w.engine.drops.get(i).map_or(0, |c| c.get()));
        sample(&mut out, "kdns_drops_total", &[("reason", r.name())], n);
    }

    single(
        &mut out,
        "kdns_tcp_connections_open",
        "gauge",
        "TCP client connections open now.",
        sum(workers, |w| IoStats::get(&w.io.tcp_open)),
    );
    family(
        &mut out,
        "kdns_tcp_connections_total",
        "counter",
        "TCP client connections by event: accepted; closed at once over the per-client cap (refused_per_client) or when they could not be set up (refused); closed for a new one in a full table (evicted_idle, evicted_busy); closed for idleness (idle_closed).",
    );
    let events = [
        ("accepted", sum(workers, |w| IoStats::get(&w.io.tcp_accepted))),
        ("refused_per_client", sum(workers, |w| IoStats::get(&w.io.tcp_refused_per_client))),
        ("evicted_idle", sum(workers, |w| IoStats::get(&w.io.tcp_evicted_idle))),
        ("evicted_busy", sum(workers, |w| IoStats::get(&w.io.tcp_evicted_busy))),
        ("idle_closed", sum(workers, |w| IoStats::get(&w.io.tcp_idle_closed))),
        ("refused", sum(workers, |w| IoStats::get(&w.io.tcp_refused))),
    ];
    for (event, n) in events {
        sample(&mut out, "kdns_tcp_connections_total", &[("event", event)], n);
    }

    summed(
        &mut out,
        workers,
        &[
            (
                "kdns_upstream_sockets_open",
                "gauge",
                "Source-port sockets to the backends open now (current ones and old ones still read for late answers).",
                |w| IoStats::get(&w.io.upstream_sockets_open),
            ),
            (
                "kdns_upstream_sockets_opened_total",
                "counter",
                "Source-port sockets opened (each on a new random port), at start and by rotation.",
                |w| IoStats::get(&w.io.upstream_sockets_opened),
            ),
        ],
    );
    family(
        &mut out,
        "kdns_upstream_socket_rotations_total",
        "counter",
        "Source-port slots due for a new socket: rotated; deferred (the slot's old sockets still wait for late answers); failed (no socket could be opened).",
    );
    for (outcome, n) in [
        ("rotated", sum(workers, |w| IoStats::get(&w.io.upstream_rotations))),
        ("deferred", sum(workers, |w| IoStats::get(&w.io.upstream_rotations_deferred))),
        ("failed", sum(workers, |w| IoStats::get(&w.io.upstream_socket_errors))),
    ] {
        sample(&mut out, "kdns_upstream_socket_rotations_total", &[("outcome", outcome)], n);
    }

    let programs: Vec<(&str, kdns_api::stats::XdpProgram)> = xdp.iter().filter_map(|s| Some((s.ifname(), s.program()?))).collect();
    if !programs.is_empty() {
        family(
            &mut out,
            "kdns_xdp_program_info",
            "gauge",
            "kdns's XDP program on an interface: ids, mode, pin directory, the program it replaced.",
        );
        for (ifname, p) in &programs {
            let (id, link, from) =
                (p.program_id.to_string(), p.link_id.to_string(), p.adopted_from.map_or(String::new(), |a| a.to_string()));
            let pin = p.pin_dir.as_deref().unwrap_or("");
            let labels = [
                ("interface", *ifname),
                ("program_id", &id),
                ("link_id", &link),
                ("mode", &p.mode),
                ("pin_dir", pin),
                ("adopted_from", &from),
            ];
            sample(&mut out, "kdns_xdp_program_info", &labels, 1);
        }
        family(
            &mut out,
            "kdns_xdp_program_attached_timestamp_seconds",
            "gauge",
            "When kdns's program went onto the interface (Unix time).",
        );
        for (ifname, p) in &programs {
            sample(&mut out, "kdns_xdp_program_attached_timestamp_seconds", &[("interface", ifname)], p.attached_at);
        }
    }
    if !xdp.is_empty() {
        family(&mut out, "kdns_xdp_packets_total", "counter", "Packets seen by the XDP program, by interface, queue and action.");
        for src in xdp {
            for c in src.read().unwrap_or_default() {
                let q = c.queue.to_string();
                for (action, n) in [
                    ("redirected", c.redirected),
                    ("passed", c.passed),
                    ("malformed", c.malformed),
                    ("dropped", c.dropped),
                    ("answered", c.answered),
                ] {
                    sample(&mut out, "kdns_xdp_packets_total", &[("interface", src.ifname()), ("queue", &q), ("action", action)], n);
                }
            }
        }
        family(
            &mut out,
            "kdns_xdp_answer_misses_total",
            "counter",
            "Queries the in-kernel tier looked up and left to the workers (no entry, or one at the end of its life), by interface and queue.",
        );
        for src in xdp {
            for c in src.read().unwrap_or_default() {
                let q = c.queue.to_string();
                sample(&mut out, "kdns_xdp_answer_misses_total", &[("interface", src.ifname()), ("queue", &q)], c.answer_misses);
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
