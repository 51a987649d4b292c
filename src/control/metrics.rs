//! `GET /metrics`: Prometheus text exposition format 0.0.4, with
//! CoreDNS-style names. Only counters read through the `Arc`s; no message to
//! the workers, so a scrape never waits.

use std::fmt::Write as _;
use std::net::SocketAddr;

use kdns_core::engine::DropReason;

use super::stats::{rcode_listed, rcode_name, RCODES};
use crate::handle::WorkerHandle;

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

/// Writes one sample; `labels` are `(name, value)` pairs.
pub(super) fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], v: u64) {
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
    let _ = writeln!(out, " {v}");
}

/// Per-backend sums over workers, in configuration order then discovery
/// order: `(addr, sent, timeouts, up on every worker)`.
fn backend_rows(configured: &[SocketAddr], workers: &[WorkerHandle]) -> Vec<(SocketAddr, u64, u64, bool)> {
    // (address, sent, timeouts, up views, views, active up views, active views)
    let mut rows: Vec<(SocketAddr, u64, u64, usize, usize, usize, usize)> = configured.iter().map(|&a| (a, 0, 0, 0, 0, 0, 0)).collect();
    for w in workers {
        for b in w.backends.iter() {
            let i = match rows.iter().position(|r| r.0 == b.addr) {
                Some(i) => i,
                None => {
                    rows.push((b.addr, 0, 0, 0, 0, 0, 0));
                    rows.len() - 1
                }
            };
            let r = &mut rows[i];
            r.1 += b.sent.get();
            r.2 += b.timeouts.get();
            let up = usize::from(b.state_up.get() != 0);
            r.3 += up;
            r.4 += 1;
            if b.sent.get() > 0 {
                r.5 += up;
                r.6 += 1;
            }
        }
    }
    // As in /v1/stats: the views of workers that use the backend decide.
    rows.into_iter().map(|(a, s, t, up, n, aup, an)| (a, s, t, if an > 0 { aup == an } else { n > 0 && up == n })).collect()
}

/// The whole exposition.
pub(super) fn render(
    workers: &[WorkerHandle],
    configured: &[SocketAddr],
    xdp: &[std::sync::Arc<dyn crate::handle::XdpCounterSource>],
) -> String {
    let mut out = String::with_capacity(4096);

    family(&mut out, "kdns_requests_total", "counter", "DNS queries received, by worker and transport.");
    for w in workers {
        let id = w.id.to_string();
        let (all, tcp) = (w.engine.queries.get(), w.engine.queries_tcp.get());
        sample(&mut out, "kdns_requests_total", &[("worker", &id), ("proto", "udp")], all.saturating_sub(tcp));
        sample(&mut out, "kdns_requests_total", &[("worker", &id), ("proto", "tcp")], tcp);
    }

    family(&mut out, "kdns_responses_total", "counter", "DNS replies sent, by rcode.");
    for i in 0..RCODES {
        let n: u64 = workers.iter().map(|w| w.engine.rcodes.get(i).map_or(0, |c| c.get())).sum();
        if rcode_listed(i, n) {
            sample(&mut out, "kdns_responses_total", &[("rcode", &rcode_name(i))], n);
        }
    }

    family(&mut out, "kdns_cache_hits_total", "counter", "Queries answered from the cache.");
    sample(&mut out, "kdns_cache_hits_total", &[], workers.iter().map(|w| w.engine.cache_hits.get()).sum());
    family(&mut out, "kdns_cache_misses_total", "counter", "Queries not answered from the cache.");
    sample(&mut out, "kdns_cache_misses_total", &[], workers.iter().map(|w| w.engine.cache_misses.get()).sum());
    family(&mut out, "kdns_cache_entries", "gauge", "Entries in the caches of all workers.");
    sample(&mut out, "kdns_cache_entries", &[], workers.iter().map(|w| w.cache.entries.get()).sum());

    let rows = backend_rows(configured, workers);
    family(&mut out, "kdns_forward_requests_total", "counter", "Queries sent to a backend (probes included).");
    for (a, sent, _, _) in &rows {
        sample(&mut out, "kdns_forward_requests_total", &[("backend", &a.to_string())], *sent);
    }
    family(&mut out, "kdns_forward_timeouts_total", "counter", "Queries to a backend that timed out.");
    for (a, _, timeouts, _) in &rows {
        sample(&mut out, "kdns_forward_timeouts_total", &[("backend", &a.to_string())], *timeouts);
    }
    family(&mut out, "kdns_backend_up", "gauge", "1 if the backend is up on every worker, else 0.");
    for (a, _, _, up) in &rows {
        sample(&mut out, "kdns_backend_up", &[("backend", &a.to_string())], u64::from(*up));
    }

    family(&mut out, "kdns_drops_total", "counter", "Packets dropped without a reply, by reason.");
    for (i, r) in DropReason::ALL.iter().enumerate() {
        let n: u64 = workers.iter().map(|w| w.engine.drops.get(i).map_or(0, |c| c.get())).sum();
        sample(&mut out, "kdns_drops_total", &[("reason", r.name())], n);
    }

    if !xdp.is_empty() {
        family(&mut out, "kdns_xdp_packets_total", "counter", "Packets seen by the XDP program, by interface, queue and action.");
        for src in xdp {
            for c in src.read().unwrap_or_default() {
                let q = c.queue.to_string();
                for (action, n) in [("redirected", c.redirected), ("passed", c.passed), ("malformed", c.malformed), ("dropped", c.dropped)]
                {
                    sample(&mut out, "kdns_xdp_packets_total", &[("interface", src.ifname()), ("queue", &q), ("action", action)], n);
                }
            }
        }
    }
    out
}
