//! Readable output: the daemon's JSON (see `docs/control-api.md`), read
//! into the types of `kdns_api`, as a summary block and aligned tables.

use std::fmt::Write as _;

use kdns_api::cluster::ClusterView;
use kdns_api::records::{CheckKind, CheckSpec, RecordData};
use kdns_api::stats::{Backend, Counters, Limits, Stats, WorkerStats, XdpInterface};
use kdns_api::view::{RecordView, RecordsView, ServiceView};

/// The XDP program's counters, a row per interface and queue.
pub fn xdp_table(xs: &[XdpInterface]) -> String {
    use Align::*;
    let headers = [
        ("INTERFACE", Left),
        ("QUEUE", Right),
        ("IN KERNEL", Right),
        ("MAP MISSES", Right),
        ("REDIRECTED", Right),
        ("PASSED", Right),
        ("MALFORMED", Right),
        ("DROPPED", Right),
    ];
    let mut rows = Vec::new();
    for x in xs {
        if let Some(e) = &x.error {
            rows.push(vec![x.interface.clone(), "-".into(), format!("error: {e}")]);
        }
        for q in &x.queues {
            rows.push(cells(
                [x.interface.clone(), q.queue.to_string()],
                [q.answered, q.answer_misses, q.redirected, q.passed, q.malformed, q.dropped],
            ));
        }
    }
    table(&headers, rows)
}

/// kdns's XDP program on each interface: its ids, mode, since when
/// (`now`: Unix seconds), where it is pinned and whose program it replaced.
pub fn xdp_programs_table(xs: &[XdpInterface], now: u64) -> String {
    use Align::*;
    let headers = [
        ("INTERFACE", Left),
        ("PROGRAM", Right),
        ("LINK", Right),
        ("MODE", Left),
        ("ATTACHED", Left),
        ("PINNED IN", Left),
        ("ADOPTED FROM", Left),
    ];
    let rows = xs.iter().filter_map(|x| {
        let p = x.program.as_ref()?;
        Some(vec![
            x.interface.clone(),
            p.program_id.to_string(),
            p.link_id.to_string(),
            p.mode.clone(),
            format!("{} ago (unix {})", duration(now.saturating_sub(p.attached_at)), p.attached_at),
            p.pin_dir.clone().unwrap_or_else(|| "- (goes with this kdns)".into()),
            p.adopted_from.map_or_else(|| "- (attached anew)".into(), |id| format!("program {id}")),
        ])
    });
    table(&headers, rows)
}

/// "tcp:80, every 1000 ms, timeout 500 ms, rise 2, fall 3",
/// "dns:NAME, ..." (", port P" if not 53), or "-".
fn check(c: Option<&CheckSpec>) -> String {
    let Some(c) = c else { return "-".into() };
    let mut s = match c.kind {
        CheckKind::Dns => {
            let mut s = c.name.as_ref().map_or_else(|| "dns".to_string(), |n| format!("dns:{n}"));
            if c.port != 53 {
                let _ = write!(s, ", port {}", c.port);
            }
            s
        }
        CheckKind::Tcp => format!("tcp:{}", c.port),
    };
    let _ = write!(s, ", every {} ms, timeout {} ms, rise {}, fall {}", c.interval_ms, c.timeout_ms, c.rise, c.fall);
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

/// The services table.
pub fn services_table(ss: &[ServiceView]) -> String {
    use Align::*;
    let headers =
        [("SERVICE", Left), ("MODE", Left), ("TTL", Right), ("PORTS", Left), ("CHECK", Left), ("HEALTHY", Right), ("SOURCE", Left)];
    let rows = ss.iter().map(|s| {
        vec![
            s.name.clone(),
            s.mode.name().into(),
            s.ttl.to_string(),
            list(s.ports.iter().map(|p| format!("{}/{}/{}", p.name, p.proto, p.port))),
            check(s.check.as_ref()),
            format!("{}/{}", s.instances.iter().filter(|i| i.healthy).count(), s.instances.len()),
            s.source.name().into(),
        ]
    });
    table(&headers, rows)
}

/// The instances table, a row per instance of every service.
pub fn instances_table(ss: &[ServiceView]) -> String {
    use Align::*;
    let headers =
        [("SERVICE", Left), ("#", Right), ("ID", Left), ("ADDRESSES", Left), ("HEALTH", Left), ("CHECKS OK", Right), ("FAILED", Right)];
    let rows = ss.iter().flat_map(|s| {
        s.instances.iter().map(|i| {
            let text = [s.name.clone(), i.number.to_string(), i.id.clone(), list(i.addrs.iter().cloned()), i.health.name().into()];
            cells(text, [i.checks_ok, i.checks_failed])
        })
    });
    table(&headers, rows)
}

/// The static records table.
pub fn static_table(rs: &[RecordView]) -> String {
    use Align::*;
    let headers = [("NAME", Left), ("TYPE", Left), ("TTL", Right), ("DATA", Left), ("SOURCE", Left)];
    let rows = rs.iter().map(|r| {
        let data = match &r.data {
            RecordData::One(s) => s.clone(),
            // TXT strings, as in a zone file.
            RecordData::Many(v) => v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" "),
        };
        vec![r.name.clone(), r.rtype.clone(), r.ttl.to_string(), data, r.source.name().into()]
    });
    table(&headers, rows)
}

/// `kdns-ctl service list`: the services and instances tables.
pub fn services(ss: &[ServiceView]) -> String {
    let mut out = String::new();
    section(&mut out, "Services", ss.is_empty(), "(none)", || services_table(ss));
    if !ss.is_empty() {
        section(&mut out, "\nInstances", ss.iter().all(|s| s.instances.is_empty()), "(none)", || instances_table(ss));
    }
    out
}

/// `title` on a line of its own, then `table()`, or `none` on a line of
/// its own when there is nothing to list.
fn section(out: &mut String, title: &str, empty: bool, none: &str, table: impl FnOnce() -> String) {
    let _ = writeln!(out, "{title}");
    if empty {
        let _ = writeln!(out, "{none}");
    } else {
        out.push_str(&table());
    }
}

/// `kdns-ctl records list`: a summary, the services, their instances, the
/// static records.
pub fn records(r: &RecordsView) -> String {
    let domains = if r.domains.is_empty() { "-".to_string() } else { r.domains.join(", ") };
    let mut out = format!("Serial:      {}\nDomains:     {domains}\nDefault TTL: {} s\n\n", r.serial, r.default_ttl);
    out.push_str(&services(&r.services));
    section(&mut out, "\nStatic records", r.records.is_empty(), "(none)", || static_table(&r.records));
    out
}

/// Column alignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A row: the `text` cells, then the `numbers`.
fn cells<const T: usize, const N: usize>(text: [String; T], numbers: [u64; N]) -> Vec<String> {
    text.into_iter().chain(numbers.map(|n| n.to_string())).collect()
}

/// Formats rows under headers, columns two spaces apart, no trailing
/// spaces. Rows shorter than the header are padded with empty cells.
pub fn table(headers: &[(&str, Align)], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows.into_iter().collect();
    let mut widths: Vec<usize> = headers.iter().map(|(h, _)| h.chars().count()).collect();
    for row in &rows {
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
    for row in &rows {
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

/// "NAME n, NAME n" for the non-zero counts, or "none".
fn nonzero(counts: impl Iterator<Item = (String, u64)>) -> String {
    let parts: Vec<String> = counts.filter(|&(_, n)| n > 0).map(|(k, n)| format!("{k} {n}")).collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// The summary block of `kdns-ctl stats`.
pub fn summary(s: &Stats) -> String {
    let t = &s.totals;
    let c = &t.counters;
    let listen = if s.listen.is_empty() { "-".to_string() } else { s.listen.join(", ") };
    let rows = [
        ("Daemon", format!("kdns {} (pid {}), {} workers, listening on {listen}", s.version, s.pid, t.workers)),
        ("Uptime", duration(s.uptime_s)),
        ("Generation", generation(s)),
        ("QPS", format!("{:.1} (last 1 s), {:.1} (last 10 s)", s.qps_1s, s.qps_10s)),
        ("Queries", format!("{} ({} over TCP)", c.queries, c.queries_tcp)),
        (
            "Cache",
            format!(
                "hit ratio {}, {} hits ({} negative), {} misses, {} entries, {}{}",
                percent(t.hit_ratio),
                c.cache_hits,
                c.cache_negative_hits,
                c.cache_misses,
                c.cache_entries,
                bytes(c.cache_bytes),
                if c.cache_loaded + c.cache_load_expired > 0 {
                    format!("; loaded at start: {} (summed over workers), {} expired", c.cache_loaded, c.cache_load_expired)
                } else {
                    String::new()
                }
            ),
        ),
        ("Answers", nonzero(c.rcodes.listed())),
        ("Local", format!("{} answers from local records", c.local_answers)),
        (
            "Forwarding",
            format!(
                "forwarded {}, waited on an identical question {}, retried {}, timeouts {}, slow {}, late answers {}, stale answers {}, gave up {}, over TCP {} ({} failed), in flight {}",
                c.forwarded,
                c.coalesced,
                c.retried,
                c.timeouts,
                c.slow_tries,
                c.late_answers,
                c.stale_answers,
                c.gave_up,
                c.tcp_retries,
                c.tcp_retry_failures,
                c.in_flight
            ),
        ),
        ("Limits", limits(&s.limits, c)),
        ("Drops", nonzero(c.drops.listed())),
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
        ("Kernel tier", kernel_tier(s)),
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
    // An empty value: a field this daemon does not report.
    rows.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{:<w$} {v}\n", format!("{k}:"))).collect()
}

/// The in-kernel answer tier's line (empty, so not shown, while it never
/// held an entry).
fn kernel_tier(s: &Stats) -> String {
    let io = &s.totals.counters.io;
    if io.tier_entries + io.tier_promoted == 0 {
        return String::new();
    }
    let queues = s.xdp.iter().flat_map(|x| &x.queues);
    let (answered, misses) = queues.fold((0, 0), |(a, m), q| (a + q.answered, m + q.answer_misses));
    format!(
        "{answered} answered in the XDP program, {misses} looked up there and passed on; {} entries, {} copied in, {} taken out with their cache entry, {} taken out cold",
        io.tier_entries, io.tier_promoted, io.tier_demoted, io.tier_cold
    )
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
pub fn workers_table(ws: &[WorkerStats]) -> String {
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
    let rows = ws.iter().map(|w| {
        let c = &w.counters;
        let mut row = cells(
            [w.id.to_string(), w.kind.clone(), w.core.map_or_else(|| "-".into(), |c| c.to_string())],
            [c.queries, c.queries_tcp, c.cache_hits, c.cache_misses],
        );
        row.push(percent(ratio(c.cache_hits, c.cache_misses)));
        row.extend([c.cache_entries, c.forwarded, c.timeouts, c.in_flight, c.drops.total()].map(|n| n.to_string()));
        row.push(w.snapshot.name().into());
        row
    });
    table(&headers, rows)
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
    let rows = bs.iter().map(|b| {
        let mut row = cells(
            [b.address.clone(), b.state.name().into(), format!("{}/{}", b.up_workers, b.workers)],
            [b.in_flight, b.sent, b.answers, b.timeouts, b.slow, b.suspected, b.went_down],
        );
        row.extend([Some(b.try_timeout_ms), b.rtt_ms.p50, b.rtt_ms.p90, b.rtt_ms.p99].map(millis));
        row
    });
    table(&headers, rows)
}

/// `kdns-ctl cluster`: the connection, then one row per host.
pub fn cluster(c: &ClusterView) -> String {
    use Align::*;
    let mut out = format!(
        "host {} under {}: {}, revision {}, lease {}\n",
        c.host,
        c.prefix,
        if c.connected { "connected to etcd" } else { "etcd UNREACHABLE" },
        c.revision,
        c.lease_id.as_deref().unwrap_or("-")
    );
    if let Some(e) = &c.last_error {
        let _ = writeln!(out, "last error: {e}");
    }
    let _ = writeln!(out, "resyncs {}, skipped values {}, keys put {}, deleted {}\n", c.resyncs, c.skipped, c.puts, c.deletes);
    let headers = [
        ("HOST", Left),
        ("LEASE", Left),
        ("AGE s", Right),
        ("TTL s", Right),
        ("INSTANCES", Right),
        ("HEALTHY", Right),
        ("SERVICES", Right),
        ("RECORDS", Right),
    ];
    let rows = c.hosts.iter().map(|h| {
        vec![
            format!("{}{}", h.host, if h.local { " (this)" } else { "" }),
            if h.alive { "alive" } else { "gone" }.into(),
            h.lease_age_s.map_or("-".into(), |a| format!("{a:.1}")),
            h.lease_ttl_s.map_or("-".into(), |t| t.to_string()),
            h.instances.to_string(),
            h.healthy.to_string(),
            h.services.to_string(),
            h.records.to_string(),
        ]
    });
    out.push_str(&table(&headers, rows));
    out
}

/// The whole `kdns-ctl stats` output.
pub fn stats(s: &Stats) -> String {
    let mut out = summary(s);
    out.push_str("\nWorkers\n");
    out.push_str(&workers_table(&s.workers));
    section(&mut out, "\nBackends", s.backends.is_empty(), "(none configured)", || backends_table(&s.backends));
    if s.xdp.iter().any(|x| x.program.is_some()) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        out.push_str("\nXDP programs\n");
        out.push_str(&xdp_programs_table(&s.xdp, now));
    }
    if !s.xdp.is_empty() {
        out.push_str("\nXDP program (per queue)\n");
        out.push_str(&xdp_table(&s.xdp));
    }
    out
}

#[cfg(test)]
mod tests;

/// "1 (started on its own)" or "3 (took over from pid 120 at ... in 41 ms: ...)".
fn generation(s: &Stats) -> String {
    match &s.handover {
        // A daemon from before generations.
        None if s.generation == 0 => String::new(),
        None => format!("{} (started on its own)", s.generation),
        Some(h) => {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            format!(
                "{} (took over from pid {} {} ago in {} ms: {} sockets, {} KiB of cache, {} AF_XDP queues)",
                s.generation,
                h.from_pid,
                duration(now.saturating_sub(h.at)),
                h.took_ms,
                h.sockets,
                h.cache_bytes / 1024,
                h.queues
            )
        }
    }
}
