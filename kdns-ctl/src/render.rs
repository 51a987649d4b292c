//! Readable output: the daemon's JSON (see `docs/control-api.md`) as a
//! summary block and aligned tables. Every field defaults, so an older or
//! newer daemon with other fields still renders.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Map, Value};

/// `GET /v1/stats`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Stats {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    pub listen: Vec<String>,
    pub qps_1s: f64,
    pub qps_10s: f64,
    pub totals: Totals,
    pub workers: Vec<Worker>,
    pub backends: Vec<Backend>,
    pub limits: Limits,
    pub xdp: Vec<XdpInterface>,
}

/// The per-client fair shares in force.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub client_prefix_v4: u8,
    pub client_prefix_v6: u8,
    pub client_max_pending: u32,
    pub client_miss_rate: u32,
    pub client_miss_burst: u32,
    pub over_limit: String,
    pub xdp_client_qps: u32,
    pub xdp_client_burst: u32,
}

/// One interface's XDP program counters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct XdpInterface {
    pub interface: String,
    pub error: Option<String>,
    pub queues: Vec<XdpQueue>,
}

/// One queue's XDP program counters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct XdpQueue {
    pub queue: u32,
    pub redirected: u64,
    pub passed: u64,
    pub malformed: u64,
    pub dropped: u64,
}

/// The XDP program's counters, a row per interface and queue.
pub fn xdp_table(xs: &[XdpInterface]) -> String {
    use Align::*;
    let headers =
        [("INTERFACE", Left), ("QUEUE", Right), ("REDIRECTED", Right), ("PASSED", Right), ("MALFORMED", Right), ("DROPPED", Right)];
    let mut rows = Vec::new();
    for x in xs {
        if let Some(e) = &x.error {
            rows.push(vec![x.interface.clone(), "-".into(), format!("error: {e}"), String::new(), String::new(), String::new()]);
        }
        for q in &x.queues {
            rows.push(vec![
                x.interface.clone(),
                q.queue.to_string(),
                q.redirected.to_string(),
                q.passed.to_string(),
                q.malformed.to_string(),
                q.dropped.to_string(),
            ]);
        }
    }
    table(&headers, &rows)
}

/// `GET /v1/records`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Records {
    pub serial: u64,
    pub domains: Vec<String>,
    pub default_ttl: u32,
    pub services: Vec<Service>,
    pub records: Vec<StaticRecord>,
}

/// One service.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Service {
    pub name: String,
    pub mode: String,
    pub ttl: Option<u32>,
    pub ports: Vec<SrvPort>,
    pub check: Option<HealthCheck>,
    pub source: String,
    pub instances: Vec<Instance>,
}

/// An SRV port of a service.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SrvPort {
    pub name: String,
    pub proto: String,
    pub port: u16,
}

/// A service's health check.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct HealthCheck {
    pub kind: String,
    pub port: Option<u16>,
    pub name: Option<String>,
    pub interval_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

/// One instance of a service.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Instance {
    pub number: u32,
    pub id: String,
    pub addrs: Vec<String>,
    pub healthy: bool,
    pub health: String,
    pub checks_ok: u64,
    pub checks_failed: u64,
}

/// A static record.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StaticRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub rtype: String,
    pub ttl: Option<u32>,
    pub data: Value,
    pub source: String,
}

/// "tcp:80, every 1000 ms, timeout 500 ms, rise 2, fall 3",
/// "dns:NAME, ..." (", port P" if not 53), or "-".
fn check(c: Option<&HealthCheck>) -> String {
    let Some(c) = c else { return "-".into() };
    let mut s = if c.kind == "dns" {
        let mut s = c.name.as_ref().map_or_else(|| "dns".to_string(), |n| format!("dns:{n}"));
        if let Some(p) = c.port.filter(|&p| p != 53) {
            let _ = write!(s, ", port {p}");
        }
        s
    } else {
        match c.port {
            Some(p) => format!("{}:{p}", c.kind),
            None => c.kind.clone(),
        }
    };
    if let Some(ms) = c.interval_ms {
        let _ = write!(s, ", every {ms} ms");
    }
    if let Some(ms) = c.timeout_ms {
        let _ = write!(s, ", timeout {ms} ms");
    }
    if let Some(n) = c.rise {
        let _ = write!(s, ", rise {n}");
    }
    if let Some(n) = c.fall {
        let _ = write!(s, ", fall {n}");
    }
    s
}

/// `items` joined with ", ", or "-".
fn list(items: impl Iterator<Item = String>) -> String {
    let v: Vec<String> = items.collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

/// "up", "down", "forced-up", "forced-down"; from `healthy` if the daemon
/// did not say.
fn health(i: &Instance) -> String {
    if !i.health.is_empty() {
        i.health.clone()
    } else if i.healthy {
        "up".into()
    } else {
        "down".into()
    }
}

/// The services table (`TTL` is "default" for the records' default TTL).
pub fn services_table(ss: &[Service]) -> String {
    use Align::*;
    let headers =
        [("SERVICE", Left), ("MODE", Left), ("TTL", Right), ("PORTS", Left), ("CHECK", Left), ("HEALTHY", Right), ("SOURCE", Left)];
    let rows: Vec<Vec<String>> = ss
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                if s.mode.is_empty() { "-".into() } else { s.mode.clone() },
                s.ttl.map_or_else(|| "default".into(), |t| t.to_string()),
                list(s.ports.iter().map(|p| format!("{}/{}/{}", p.name, p.proto, p.port))),
                check(s.check.as_ref()),
                format!("{}/{}", s.instances.iter().filter(|i| i.healthy).count(), s.instances.len()),
                s.source.clone(),
            ]
        })
        .collect();
    table(&headers, &rows)
}

/// The instances table, a row per instance of every service.
pub fn instances_table(ss: &[Service]) -> String {
    use Align::*;
    let headers =
        [("SERVICE", Left), ("#", Right), ("ID", Left), ("ADDRESSES", Left), ("HEALTH", Left), ("CHECKS OK", Right), ("FAILED", Right)];
    let rows: Vec<Vec<String>> = ss
        .iter()
        .flat_map(|s| {
            s.instances.iter().map(|i| {
                vec![
                    s.name.clone(),
                    i.number.to_string(),
                    i.id.clone(),
                    list(i.addrs.iter().cloned()),
                    health(i),
                    i.checks_ok.to_string(),
                    i.checks_failed.to_string(),
                ]
            })
        })
        .collect();
    table(&headers, &rows)
}

/// The static records table.
pub fn static_table(rs: &[StaticRecord]) -> String {
    use Align::*;
    let headers = [("NAME", Left), ("TYPE", Left), ("TTL", Right), ("DATA", Left), ("SOURCE", Left)];
    let rows: Vec<Vec<String>> = rs
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.rtype.clone(),
                r.ttl.map_or_else(|| "default".into(), |t| t.to_string()),
                match &r.data {
                    Value::String(s) => s.clone(),
                    // TXT strings, as in a zone file.
                    Value::Array(a) => {
                        a.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), |s| format!("{s:?}"))).collect::<Vec<_>>().join(" ")
                    }
                    Value::Null => "-".into(),
                    v => v.to_string(),
                },
                r.source.clone(),
            ]
        })
        .collect();
    table(&headers, &rows)
}

/// `kdns-ctl service list`: the services and instances tables.
pub fn services(ss: &[Service]) -> String {
    let mut out = String::from("Services\n");
    if ss.is_empty() {
        out.push_str("(none)\n");
        return out;
    }
    out.push_str(&services_table(ss));
    out.push_str("\nInstances\n");
    if ss.iter().all(|s| s.instances.is_empty()) {
        out.push_str("(none)\n");
    } else {
        out.push_str(&instances_table(ss));
    }
    out
}

/// `kdns-ctl records list`: a summary, the services, their instances, the
/// static records.
pub fn records(r: &Records) -> String {
    let domains = if r.domains.is_empty() { "-".to_string() } else { r.domains.join(", ") };
    let mut out = format!("Serial:      {}\nDomains:     {domains}\nDefault TTL: {} s\n\n", r.serial, r.default_ttl);
    out.push_str(&services(&r.services));
    out.push_str("\nStatic records\n");
    if r.records.is_empty() {
        out.push_str("(none)\n");
    } else {
        out.push_str(&static_table(&r.records));
    }
    out
}

/// Sums over workers.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Totals {
    pub workers: usize,
    #[serde(flatten)]
    pub c: Counters,
    pub hit_ratio: Option<f64>,
}

/// One worker.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Worker {
    pub id: usize,
    pub kind: String,
    pub core: Option<usize>,
    pub snapshot: String,
    #[serde(flatten)]
    pub c: Counters,
}

/// Counters of a worker or their sums (the fields the tables use).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub queries: u64,
    pub queries_tcp: u64,
    pub replies_by_rcode: Map<String, Value>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_negative_hits: u64,
    pub cache_entries: u64,
    pub cache_bytes: u64,
    pub forwarded: u64,
    pub coalesced: u64,
    pub limited_pending: u64,
    pub limited_rate: u64,
    pub slow_tries: u64,
    pub late_answers: u64,
    pub local_answers: u64,
    pub retried: u64,
    pub timeouts: u64,
    pub stale_answers: u64,
    pub gave_up: u64,
    pub in_flight: u64,
    pub drops: Map<String, Value>,
    pub io: Io,
}

/// The socket layer's counters the summary shows.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Io {
    pub tcp_open: u64,
    pub tcp_accepted: u64,
    pub tcp_refused_per_client: u64,
    pub tcp_evicted_idle: u64,
    pub tcp_evicted_busy: u64,
    pub tcp_idle_closed: u64,
    pub upstream_sockets_open: u64,
    pub upstream_sockets_opened: u64,
    pub upstream_rotations: u64,
    pub upstream_rotations_deferred: u64,
    pub upstream_socket_errors: u64,
}

/// One backend.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Backend {
    pub address: String,
    pub state: String,
    pub up_workers: usize,
    pub workers: usize,
    pub in_flight: u64,
    pub sent: u64,
    pub answers: u64,
    pub timeouts: u64,
    pub slow: u64,
    pub suspected: u64,
    pub probes: u64,
    pub went_down: u64,
    pub came_up: u64,
    pub try_timeout_ms: f64,
    pub rtt_ms: Rtt,
}

/// RTT summary in milliseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Rtt {
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    pub samples: u64,
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// Formats rows under headers, columns two spaces apart, no trailing
/// spaces. Rows shorter than the header are padded with empty cells.
pub fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, ((_, align), w)) in headers.iter().zip(&widths).enumerate() {
            let cell = cells.next().unwrap_or("");
            if i > 0 {
                l.push_str("  ");
            }
            match align {
                Align::Left => {
                    let _ = write!(l, "{cell:<w$}");
                }
                Align::Right => {
                    let _ = write!(l, "{cell:>w$}");
                }
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().map(|(h, _)| *h));
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// "3d 4h 5m 6s", leading zero units left out.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m {s}s"),
        _ => format!("{d}d {h}h {m}m {s}s"),
    }
}

/// "512 B", "1.5 KiB", "3.2 MiB", "1.0 GiB".
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// A percentage with one decimal, or "-".
fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{:.1}%", r * 100.0))
}

/// Milliseconds with 3 decimals, or "-".
fn millis(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

/// `hits / (hits + misses)`, if there was a lookup.
fn ratio(hits: u64, misses: u64) -> Option<f64> {
    let n = hits + misses;
    (n > 0).then(|| hits as f64 / n as f64)
}

/// "NAME n, NAME n" for the non-zero entries of a JSON map, or "none".
fn nonzero(m: &Map<String, Value>) -> String {
    let parts: Vec<String> = m.iter().filter_map(|(k, v)| v.as_u64().filter(|&n| n > 0).map(|n| format!("{k} {n}"))).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Sum of a JSON map of counters.
fn total(m: &Map<String, Value>) -> u64 {
    m.values().filter_map(Value::as_u64).sum()
}

/// The summary block of `kdns-ctl stats`.
pub fn summary(s: &Stats) -> String {
    let t = &s.totals;
    let c = &t.c;
    let listen = if s.listen.is_empty() { "-".to_string() } else { s.listen.join(", ") };
    let rows = [
        ("Daemon", format!("kdns {} (pid {}), {} workers, listening on {listen}", s.version, s.pid, t.workers)),
        ("Uptime", duration(s.uptime_s)),
        ("QPS", format!("{:.1} (last 1 s), {:.1} (last 10 s)", s.qps_1s, s.qps_10s)),
        ("Queries", format!("{} ({} over TCP)", c.queries, c.queries_tcp)),
        (
            "Cache",
            format!(
                "hit ratio {}, {} hits ({} negative), {} misses, {} entries, {}",
                percent(t.hit_ratio),
                c.cache_hits,
                c.cache_negative_hits,
                c.cache_misses,
                c.cache_entries,
                bytes(c.cache_bytes)
            ),
        ),
        ("Answers", nonzero(&c.replies_by_rcode)),
        ("Local", format!("{} answers from local records", c.local_answers)),
        (
            "Forwarding",
            format!(
                "forwarded {}, waited on an identical question {}, retried {}, timeouts {}, slow {}, late answers {}, stale answers {}, gave up {}, in flight {}",
                c.forwarded,
                c.coalesced,
                c.retried,
                c.timeouts,
                c.slow_tries,
                c.late_answers,
                c.stale_answers,
                c.gave_up,
                c.in_flight
            ),
        ),
        ("Limits", limits(&s.limits, c)),
        ("Drops", nonzero(&c.drops)),
        (
            "Source ports",
            format!(
                "{} sockets open, {} opened, {} rotations ({} deferred, {} failed)",
                c.io.upstream_sockets_open,
                c.io.upstream_sockets_opened,
                c.io.upstream_rotations,
                c.io.upstream_rotations_deferred,
                c.io.upstream_socket_errors
            ),
        ),
        (
            "TCP",
            format!(
                "{} open, {} accepted; closed: {} over the per-client cap, {} evicted idle, {} evicted busy, {} idle timeout",
                c.io.tcp_open,
                c.io.tcp_accepted,
                c.io.tcp_refused_per_client,
                c.io.tcp_evicted_idle,
                c.io.tcp_evicted_busy,
                c.io.tcp_idle_closed
            ),
        ),
    ];
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    rows.iter().map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:"))).collect()
}

fn limits(l: &Limits, c: &Counters) -> String {
    let share = if l.client_max_pending == 0 { "no pending share".to_string() } else { format!("{} pending", l.client_max_pending) };
    let rate = if l.client_miss_rate == 0 {
        "no miss rate".to_string()
    } else {
        format!("{} misses/s (burst {})", l.client_miss_rate, l.client_miss_burst)
    };
    let xdp = if l.xdp_client_qps == 0 {
        String::new()
    } else {
        format!("; in the XDP program {} queries/s (burst {}), over it dropped", l.xdp_client_qps, l.xdp_client_burst)
    };
    format!(
        "per client (/{} IPv4, /{} IPv6) per worker: {share}, {rate}; over them ({}): {} by pending, {} by rate{xdp}",
        l.client_prefix_v4, l.client_prefix_v6, l.over_limit, c.limited_pending, c.limited_rate
    )
}

/// The per-worker table.
pub fn workers_table(ws: &[Worker]) -> String {
    use Align::*;
    let headers = [
        ("WORKER", Right),
        ("KIND", Left),
        ("CORE", Right),
        ("QUERIES", Right),
        ("TCP", Right),
        ("HITS", Right),
        ("MISSES", Right),
        ("HIT%", Right),
        ("ENTRIES", Right),
        ("FORWARDED", Right),
        ("TIMEOUTS", Right),
        ("IN-FLIGHT", Right),
        ("DROPS", Right),
        ("SNAPSHOT", Left),
    ];
    let rows: Vec<Vec<String>> = ws
        .iter()
        .map(|w| {
            let c = &w.c;
            vec![
                w.id.to_string(),
                w.kind.clone(),
                w.core.map_or_else(|| "-".into(), |c| c.to_string()),
                c.queries.to_string(),
                c.queries_tcp.to_string(),
                c.cache_hits.to_string(),
                c.cache_misses.to_string(),
                percent(ratio(c.cache_hits, c.cache_misses)),
                c.cache_entries.to_string(),
                c.forwarded.to_string(),
                c.timeouts.to_string(),
                c.in_flight.to_string(),
                total(&c.drops).to_string(),
                w.snapshot.clone(),
            ]
        })
        .collect();
    table(&headers, &rows)
}

/// The per-backend table.
pub fn backends_table(bs: &[Backend]) -> String {
    use Align::*;
    let headers = [
        ("BACKEND", Left),
        ("STATE", Left),
        ("UP ON", Right),
        ("IN-FLIGHT", Right),
        ("SENT", Right),
        ("ANSWERS", Right),
        ("TIMEOUTS", Right),
        ("SLOW", Right),
        ("SUSPECT", Right),
        ("DOWN", Right),
        ("TRY ms", Right),
        ("P50 ms", Right),
        ("P90 ms", Right),
        ("P99 ms", Right),
    ];
    let rows: Vec<Vec<String>> = bs
        .iter()
        .map(|b| {
            vec![
                b.address.clone(),
                b.state.clone(),
                format!("{}/{}", b.up_workers, b.workers),
                b.in_flight.to_string(),
                b.sent.to_string(),
                b.answers.to_string(),
                b.timeouts.to_string(),
                b.slow.to_string(),
                b.suspected.to_string(),
                b.went_down.to_string(),
                millis(Some(b.try_timeout_ms)),
                millis(b.rtt_ms.p50),
                millis(b.rtt_ms.p90),
                millis(b.rtt_ms.p99),
            ]
        })
        .collect();
    table(&headers, &rows)
}

/// The whole `kdns-ctl stats` output.
pub fn stats(s: &Stats) -> String {
    let mut out = summary(s);
    out.push_str("\nWorkers\n");
    out.push_str(&workers_table(&s.workers));
    out.push_str("\nBackends\n");
    if s.backends.is_empty() {
        out.push_str("(none configured)\n");
    } else {
        out.push_str(&backends_table(&s.backends));
    }
    if !s.xdp.is_empty() {
        out.push_str("\nXDP program (per queue)\n");
        out.push_str(&xdp_table(&s.xdp));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{
      "version": "0.1.0", "pid": 4242, "uptime_s": 93784, "listen": ["127.0.0.1:53", "[::1]:53"],
      "qps_1s": 1520.0, "qps_10s": 1498.3,
      "totals": {"workers": 2, "queries": 160, "queries_tcp": 10,
        "replies_by_rcode": {"NOERROR": 145, "FORMERR": 0, "NXDOMAIN": 5},
        "cache_hits": 80, "cache_misses": 70, "cache_negative_hits": 3, "cache_entries": 33, "cache_bytes": 1572864,
        "forwarded": 70, "retried": 1, "timeouts": 2, "stale_answers": 0, "gave_up": 0, "in_flight": 4,
        "drops": {"query_too_short": 2, "pending_full": 0}, "hit_ratio": 0.5333, "some_future_field": 1,
        "io": {"upstream_sockets_open": 48, "upstream_sockets_opened": 60, "upstream_rotations": 12, "tcp_open": 3, "tcp_accepted": 40, "tcp_refused_per_client": 7, "tcp_evicted_idle": 2, "tcp_idle_closed": 28}},
      "workers": [
        {"id": 0, "kind": "udp", "core": 2, "snapshot": "ok", "queries": 150, "cache_hits": 80, "cache_misses": 70,
         "drops": {"query_too_short": 2}, "in_flight": 4},
        {"id": 1, "kind": "tcp", "core": null, "snapshot": "timeout", "queries": 10, "queries_tcp": 10}
      ],
      "backends": [
        {"address": "10.0.0.1:53", "state": "up", "up_workers": 2, "workers": 2, "in_flight": 3, "sent": 50,
         "answers": 47, "timeouts": 3, "slow": 5, "suspected": 1, "try_timeout_ms": 50.0,
         "rtt_ms": {"p50": 3.001, "p90": 5.003, "p99": 12.5, "max": 20.0, "mean": 3.5, "samples": 47}},
        {"address": "10.0.0.2:53", "state": "partial", "up_workers": 1, "workers": 2, "went_down": 1, "try_timeout_ms": 800.0,
         "rtt_ms": {"p50": null, "p90": null, "p99": null, "max": null, "mean": null, "samples": 0}}
      ],
      "limits": {"client_prefix_v4": 32, "client_prefix_v6": 64, "client_max_pending": 256, "client_miss_rate": 5000,
                 "client_miss_burst": 10000, "over_limit": "servfail", "clients": 4096}
    }"#;

    fn example() -> Stats {
        serde_json::from_str(EXAMPLE).unwrap()
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &[("NAME", Align::Left), ("N", Align::Right), ("NOTE", Align::Left)],
            &[vec!["a".into(), "1".into(), "x".into()], vec!["longer".into(), "12345".into(), String::new()], vec!["b".into()]],
        );
        assert_eq!(t, "NAME        N  NOTE\na           1  x\nlonger  12345\nb\n");
    }

    #[test]
    fn backends_table_shows_state_and_rtt() {
        let t = backends_table(&example().backends);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "BACKEND      STATE    UP ON  IN-FLIGHT  SENT  ANSWERS  TIMEOUTS  SLOW  SUSPECT  DOWN   TRY ms  P50 ms  P90 ms  P99 ms"
        );
        assert_eq!(
            lines[1],
            "10.0.0.1:53  up         2/2          3    50       47         3     5        1     0   50.000   3.001   5.003  12.500"
        );
        assert_eq!(
            lines[2],
            "10.0.0.2:53  partial    1/2          0     0        0         0     0        0     1  800.000       -       -       -"
        );
        // Columns line up: every line is as long as the header.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }

    #[test]
    fn workers_table_rows() {
        let t = workers_table(&example().workers);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "WORKER  KIND  CORE  QUERIES  TCP  HITS  MISSES   HIT%  ENTRIES  FORWARDED  TIMEOUTS  IN-FLIGHT  DROPS  SNAPSHOT"
        );
        assert_eq!(lines[1], "     0  udp      2      150    0    80      70  53.3%        0          0         0          4      2  ok");
        assert_eq!(
            lines[2],
            "     1  tcp      -       10   10     0       0      -        0          0         0          0      0  timeout"
        );
    }

    #[test]
    fn summary_block() {
        let s = summary(&example());
        let want = "\
Daemon:       kdns 0.1.0 (pid 4242), 2 workers, listening on 127.0.0.1:53, [::1]:53
Uptime:       1d 2h 3m 4s
QPS:          1520.0 (last 1 s), 1498.3 (last 10 s)
Queries:      160 (10 over TCP)
Cache:        hit ratio 53.3%, 80 hits (3 negative), 70 misses, 33 entries, 1.5 MiB
Answers:      NOERROR 145, NXDOMAIN 5
Local:        0 answers from local records
Forwarding:   forwarded 70, waited on an identical question 0, retried 1, timeouts 2, slow 0, late answers 0, stale answers 0, gave up 0, in flight 4
Limits:       per client (/32 IPv4, /64 IPv6) per worker: 256 pending, 5000 misses/s (burst 10000); over them (servfail): 0 by pending, 0 by rate
Drops:        query_too_short 2
Source ports: 48 sockets open, 60 opened, 12 rotations (0 deferred, 0 failed)
TCP:          3 open, 40 accepted; closed: 7 over the per-client cap, 2 evicted idle, 0 evicted busy, 28 idle timeout
";
        assert_eq!(s, want);
    }

    #[test]
    fn empty_stats_render() {
        let s = stats(&Stats::default());
        assert!(s.contains("Drops:        none\n"), "{s}");
        assert!(s.contains("hit ratio -,"), "{s}");
        assert!(s.ends_with("Backends\n(none configured)\n"), "{s}");
    }

    #[test]
    fn xdp_table_lists_queues() {
        let s: Stats = serde_json::from_str(
            r#"{"xdp":[{"interface":"eth0","queues":[{"queue":0,"redirected":7,"passed":2,"malformed":0,"dropped":0}]}]}"#,
        )
        .unwrap();
        let out = stats(&s);
        assert!(out.contains("XDP program"), "{out}");
        let line = out.lines().find(|l| l.starts_with("eth0")).unwrap();
        assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["eth0", "0", "7", "2", "0", "0"]);
    }

    #[test]
    fn check_column() {
        let c = |j: &str| check(Some(&serde_json::from_str::<HealthCheck>(j).unwrap()));
        assert_eq!(check(None), "-");
        assert_eq!(c(r#"{"kind": "tcp", "port": 80, "interval_ms": 1000, "rise": 2}"#), "tcp:80, every 1000 ms, rise 2");
        assert_eq!(c(r#"{"kind": "tcp"}"#), "tcp");
        assert_eq!(c(r#"{"kind": "dns", "name": "web.kdns", "port": 53, "fall": 3}"#), "dns:web.kdns, fall 3");
        assert_eq!(c(r#"{"kind": "dns", "port": 5353}"#), "dns, port 5353");
    }

    #[test]
    fn units() {
        assert_eq!(duration(0), "0s");
        assert_eq!(duration(61), "1m 1s");
        assert_eq!(duration(3600), "1h 0m 0s");
        assert_eq!(duration(86400 * 3 + 5), "3d 0h 0m 5s");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
