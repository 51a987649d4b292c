//! The Prometheus exposition of a realistic fake daemon: its values, its
//! structure, and `promtool check metrics` (Debian package `prometheus`),
//! which must accept it without a single lint complaint.

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kdns_core::engine::{DropReason, LATENCY_BOUNDS};

use super::render;
use crate::handle::fake::{count_queries, FakeWorker};
use crate::handle::{IoStats, WorkerHandle, WorkerKind, XdpCounterSource, XdpQueueCounters};

const B1: &str = "10.0.0.1:53";
const B2: &str = "[fd00::53]:53";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// XDP counters of one interface.
#[derive(Debug)]
struct FakeXdp(&'static str, Result<Vec<XdpQueueCounters>, String>, Option<kdns_api::stats::XdpProgram>);

impl XdpCounterSource for FakeXdp {
    fn ifname(&self) -> &str {
        self.0
    }
    fn read(&self) -> Result<Vec<XdpQueueCounters>, String> {
        self.1.clone()
    }
    fn program(&self) -> Option<kdns_api::stats::XdpProgram> {
        self.2.clone()
    }
}

/// Two UDP workers, an AF_XDP worker and the TCP worker, after some
/// traffic: cache hits and misses, local answers, forwarding with a
/// timeout, a retry and a stale answer, drops, latencies in several
/// buckets (one above the last bound), backend RTTs, evictions.
fn daemon() -> (Vec<FakeWorker>, Vec<SocketAddr>, Vec<Arc<dyn XdpCounterSource>>) {
    let fake = |id, kind| FakeWorker::new(id, kind, &[addr(B1), addr(B2)]);
    let ws = vec![fake(0, WorkerKind::Udp), fake(1, WorkerKind::Udp), fake(2, WorkerKind::Xdp), fake(3, WorkerKind::Tcp)];

    let e = &ws[0].handle.engine;
    count_queries(e, 1000, 980, 800, 100);
    e.rcodes[3].add(15);
    e.rcodes[2].add(1);
    e.local_answers.add(100);
    e.cache_negative_hits.add(12);
    e.retried.add(2);
    e.timeouts.add(2);
    e.stale_answers.add(1);
    e.count_drop(DropReason::QueryTooShort);
    for _ in 0..900 {
        e.latency(Duration::from_micros(20)); // hits and local answers: first bucket
    }
    for _ in 0..90 {
        e.latency(Duration::from_micros(2_000)); // le 0.0025
    }
    e.latency(Duration::from_millis(900)); // le 1
    e.latency(Duration::from_secs(7)); // above the last bound
    ws[0].handle.cache.entries.set(100);
    ws[0].handle.cache.evictions.add(7);

    let e = &ws[1].handle.engine;
    count_queries(e, 500, 500, 400, 80);
    e.local_answers.add(20);
    e.retried.add(1);
    e.count_drop(DropReason::PendingFull);
    e.count_drop(DropReason::QueryTooShort);
    for _ in 0..400 {
        e.latency(Duration::from_micros(50));
    }
    for _ in 0..100 {
        e.latency(Duration::from_micros(30_000)); // le 0.05
    }
    ws[1].handle.cache.entries.set(80);
    ws[1].handle.cache.evictions.add(3);

    let e = &ws[2].handle.engine;
    count_queries(e, 40, 40, 40, 0);
    for _ in 0..40 {
        e.latency(Duration::from_micros(100)); // exactly the first bound
    }

    let e = &ws[3].handle.engine;
    e.queries.add(10);
    e.queries_tcp.add(10);
    e.rcodes[0].add(10);
    e.cache_misses.add(10);
    for _ in 0..10 {
        e.latency(Duration::from_millis(3));
    }
    let io = &ws[3].handle.io;
    IoStats::add(&io.tcp_accepted, 50);
    IoStats::add(&io.tcp_refused_per_client, 9);
    IoStats::add(&io.tcp_evicted_idle, 4);
    IoStats::add(&io.tcp_idle_closed, 6);
    io.tcp_open.store(31, std::sync::atomic::Ordering::Relaxed);
    for w in &ws {
        w.handle.io.upstream_sockets_open.store(16, std::sync::atomic::Ordering::Relaxed);
        IoStats::add(&w.handle.io.upstream_sockets_opened, 20);
        IoStats::add(&w.handle.io.upstream_rotations, 4);
    }
    IoStats::add(&ws[0].handle.io.upstream_rotations_deferred, 2);

    // B1 up everywhere with RTTs; B2 down on worker 1, which used it.
    for (w, sent, rtt_us) in [(&ws[0], 100u64, 1500u64), (&ws[1], 80, 2500), (&ws[3], 10, 1000)] {
        let b = &w.handle.backends[0];
        b.sent.add(sent);
        b.answers.add(sent - 1);
        b.timeouts.add(1);
        b.rtt_sum_us.add((sent - 1) * rtt_us);
        b.rtt_count.add(sent - 1);
    }
    ws[1].handle.backends[1].sent.add(3);
    ws[1].handle.backends[1].timeouts.add(3);
    ws[1].handle.backends[1].state_up.set(0);

    let xdp: Vec<Arc<dyn XdpCounterSource>> = vec![
        Arc::new(FakeXdp(
            "eth0",
            Ok(vec![
                XdpQueueCounters { queue: 0, redirected: 40, passed: 1200, malformed: 1, dropped: 0, answered: 900, answer_misses: 12 },
                XdpQueueCounters { queue: 1, redirected: 0, passed: 800, malformed: 0, dropped: 0, ..Default::default() },
            ]),
            Some(kdns_api::stats::XdpProgram {
                program_id: 42,
                link_id: 7,
                mode: "driver".into(),
                pin_dir: Some("/sys/fs/bpf/kdns/eth0".into()),
                attached_at: 1_700_000_000,
                adopted_from: Some(41),
            }),
        )),
        Arc::new(FakeXdp("eth1", Err("map gone".into()), None)),
    ];
    (ws, vec![addr(B1), addr(B2)], xdp)
}

fn rendered() -> String {
    let (ws, configured, xdp) = daemon();
    let handles: Vec<WorkerHandle> = ws.iter().map(|w| w.handle.clone()).collect();
    render(&handles, &configured, &xdp, &kdns_core::engine::ClientLimits::default(), &Default::default(), (1024, 64), 16)
}

/// The value of the sample `series` (name and labels exactly as written).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// `promtool`: `$PROMTOOL`, else the one on `PATH`.
fn promtool() -> String {
    let bin = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into());
    match Command::new(&bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => bin,
        Ok(s) => panic!("`{bin} --version` failed ({s}); this test needs a working promtool"),
        Err(e) => panic!(
            "promtool not found ({bin}: {e}). This test checks the /metrics text with `promtool check metrics`; \
             install it with `apt-get install -y prometheus` (Debian/Ubuntu; scripts/setup.sh should do it) \
             or point $PROMTOOL at a promtool binary"
        ),
    }
}

#[test]
fn promtool_check_metrics_accepts_the_exposition() {
    let bin = promtool();
    let text = rendered();
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {bin}: {e}"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("promtool check metrics: {} ({} lines checked)\n{report}", out.status, text.lines().count());
    assert!(out.status.success() && report.trim().is_empty(), "promtool check metrics complained ({}):\n{report}\non:\n{text}", out.status);
}

#[test]
fn request_duration_is_a_cumulative_histogram() {
    let text = rendered();
    let b = |le: &str| value(&text, &format!("kdns_request_duration_seconds_bucket{{le=\"{le}\"}}"));
    // 900 + 400 + 40 (exactly 100 µs) within the first bound.
    assert_eq!(b("0.0001"), 1340.0);
    assert_eq!(b("0.00025"), 1340.0);
    assert_eq!(b("0.0025"), 1430.0);
    assert_eq!(b("0.005"), 1440.0);
    assert_eq!(b("0.05"), 1540.0);
    assert_eq!(b("1"), 1541.0);
    assert_eq!(b("5"), 1541.0);
    assert_eq!(b("+Inf"), 1542.0);
    assert_eq!(value(&text, "kdns_request_duration_seconds_count"), 1542.0);
    let want_us = 900 * 20 + 90 * 2_000 + 900_000 + 7_000_000 + 400 * 50 + 100 * 30_000 + 40 * 100 + 10 * 3_000;
    let sum = value(&text, "kdns_request_duration_seconds_sum");
    assert!((sum - want_us as f64 / 1e6).abs() < 1e-9, "{sum}");

    // One bucket per bound, in order, then +Inf; never decreasing.
    let les: Vec<(String, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("kdns_request_duration_seconds_bucket{le=\""))
        .map(|r| {
            let (le, v) = r.split_once("\"} ").unwrap();
            (le.to_string(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(les.len(), LATENCY_BOUNDS.len() + 1);
    assert_eq!(les.last().unwrap().0, "+Inf");
    for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
        assert_eq!(les[i].0.parse::<f64>().unwrap(), *bound);
    }
    assert!(les.windows(2).all(|w| w[0].1 <= w[1].1), "{les:?}");
}

#[test]
fn counters_and_gauges_are_summed_over_workers() {
    let text = rendered();
    assert_eq!(value(&text, "kdns_requests_total{worker=\"3\",proto=\"tcp\"}"), 10.0);
    assert_eq!(value(&text, "kdns_requests_total{worker=\"0\",proto=\"udp\"}"), 1000.0);
    assert_eq!(value(&text, "kdns_responses_total{rcode=\"NOERROR\"}"), 1530.0);
    assert_eq!(value(&text, "kdns_responses_total{rcode=\"SERVFAIL\"}"), 1.0);
    assert_eq!(value(&text, "kdns_local_answers_total"), 120.0);
    assert_eq!(value(&text, "kdns_cache_hits_total"), 1240.0);
    assert_eq!(value(&text, "kdns_cache_misses_total"), 190.0);
    assert_eq!(value(&text, "kdns_cache_entries"), 180.0);
    assert_eq!(value(&text, "kdns_cache_evictions_total"), 10.0);
    assert_eq!(value(&text, "kdns_forward_requests_total{backend=\"10.0.0.1:53\"}"), 190.0);
    assert_eq!(value(&text, "kdns_forward_requests_total{backend=\"[fd00::53]:53\"}"), 3.0);
    assert_eq!(value(&text, "kdns_forward_timeouts_total{backend=\"10.0.0.1:53\"}"), 3.0);
    assert_eq!(value(&text, "kdns_forward_retries_total"), 3.0);
    assert_eq!(value(&text, "kdns_stale_answers_total"), 1.0);
    assert_eq!(value(&text, "kdns_backend_up{backend=\"10.0.0.1:53\"}"), 1.0);
    assert_eq!(value(&text, "kdns_backend_up{backend=\"[fd00::53]:53\"}"), 0.0);
    assert_eq!(value(&text, "kdns_backend_rtt_seconds_count{backend=\"10.0.0.1:53\"}"), 187.0);
    let rtt = value(&text, "kdns_backend_rtt_seconds_sum{backend=\"10.0.0.1:53\"}");
    assert!((rtt - (99.0 * 0.0015 + 79.0 * 0.0025 + 9.0 * 0.001)).abs() < 1e-9, "{rtt}");
    assert_eq!(value(&text, "kdns_backend_rtt_seconds_count{backend=\"[fd00::53]:53\"}"), 0.0);
    assert_eq!(value(&text, "kdns_backend_rtt_seconds_sum{backend=\"[fd00::53]:53\"}"), 0.0);
    assert_eq!(value(&text, "kdns_drops_total{reason=\"query_too_short\"}"), 2.0);
    assert_eq!(value(&text, "kdns_drops_total{reason=\"pending_full\"}"), 1.0);
    assert_eq!(value(&text, "kdns_xdp_packets_total{interface=\"eth0\",queue=\"0\",action=\"redirected\"}"), 40.0);
    assert_eq!(value(&text, "kdns_xdp_packets_total{interface=\"eth0\",queue=\"1\",action=\"passed\"}"), 800.0);
    assert_eq!(value(&text, "kdns_xdp_packets_total{interface=\"eth0\",queue=\"0\",action=\"answered\"}"), 900.0);
    assert_eq!(value(&text, "kdns_xdp_answer_misses_total{interface=\"eth0\",queue=\"0\"}"), 12.0);
    assert_eq!(value(&text, "kdns_tcp_connections_open"), 31.0);
    assert_eq!(value(&text, "kdns_tcp_connections_total{event=\"accepted\"}"), 50.0);
    assert_eq!(value(&text, "kdns_tcp_connections_total{event=\"refused_per_client\"}"), 9.0);
    assert_eq!(value(&text, "kdns_tcp_connections_total{event=\"evicted_idle\"}"), 4.0);
    assert_eq!(value(&text, "kdns_tcp_connections_total{event=\"evicted_busy\"}"), 0.0);
    assert_eq!(value(&text, "kdns_tcp_connections_total{event=\"idle_closed\"}"), 6.0);
    assert_eq!(value(&text, "kdns_upstream_sockets_open"), 64.0);
    assert_eq!(value(&text, "kdns_upstream_sockets_opened_total"), 80.0);
    assert_eq!(value(&text, "kdns_upstream_socket_rotations_total{outcome=\"rotated\"}"), 16.0);
    assert_eq!(value(&text, "kdns_upstream_socket_rotations_total{outcome=\"deferred\"}"), 2.0);
    assert_eq!(value(&text, "kdns_upstream_socket_rotations_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(
        value(
            &text,
            "kdns_xdp_program_info{interface=\"eth0\",program_id=\"42\",link_id=\"7\",mode=\"driver\",pin_dir=\"/sys/fs/bpf/kdns/eth0\",adopted_from=\"41\"}"
        ),
        1.0
    );
    assert_eq!(value(&text, "kdns_xdp_program_attached_timestamp_seconds{interface=\"eth0\"}"), 1_700_000_000.0);
    assert!(!text.contains("eth1"), "an interface whose counters cannot be read has no samples");
}

#[test]
fn every_family_has_help_and_type_once_before_its_samples() {
    let text = rendered();
    let mut families: Vec<(String, String)> = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(help.ends_with('.') && !help.is_empty(), "{line}");
            assert!(families.iter().all(|(n, _)| n != name), "one HELP per family: {line}");
            current = None;
            families.push((name.to_string(), String::new()));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            let last = families.last_mut().unwrap();
            assert_eq!(last.0, name, "TYPE follows its HELP: {line}");
            last.1 = kind.to_string();
            current = Some(last.clone());
        } else {
            let (name, kind) = current.as_ref().unwrap_or_else(|| panic!("sample before any TYPE: {line}"));
            let series = line.split(['{', ' ']).next().unwrap();
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"].iter().any(|s| series == format!("{name}{s}")),
                "summary" => series == name || ["_sum", "_count"].iter().any(|s| series == format!("{name}{s}")),
                _ => series == name,
            };
            assert!(ok, "sample {series} in family {name} ({kind})");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            }
        }
    }
    let names: Vec<&str> = families.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "kdns_requests_total",
            "kdns_responses_total",
            "kdns_local_answers_total",
            "kdns_cache_hits_total",
            "kdns_cache_misses_total",
            "kdns_cache_entries",
            "kdns_cache_evictions_total",
            "kdns_forward_requests_total",
            "kdns_forward_timeouts_total",
            "kdns_forward_slow_total",
            "kdns_forward_tcp_retries_total",
            "kdns_forward_tcp_retry_failures_total",
            "kdns_forward_late_answers_total",
            "kdns_coalesced_total",
            "kdns_limited_total",
            "kdns_limit",
            "kdns_limit_over_limit_info",
            "kdns_forward_retries_total",
            "kdns_stale_answers_total",
            "kdns_backend_up",
            "kdns_backend_suspected_total",
            "kdns_backend_try_timeout_seconds",
            "kdns_backend_rtt_seconds",
            "kdns_request_duration_seconds",
            "kdns_drops_total",
            "kdns_tcp_connections_open",
            "kdns_tcp_connections_total",
            "kdns_upstream_sockets_open",
            "kdns_upstream_sockets_opened_total",
            "kdns_upstream_socket_rotations_total",
            "kdns_xdp_program_info",
            "kdns_xdp_program_attached_timestamp_seconds",
            "kdns_xdp_packets_total",
            "kdns_xdp_answer_misses_total",
        ]
    );
}

#[test]
fn floats_are_spelled_as_prometheus_reads_them() {
    use super::float;
    assert_eq!(float(0.0001), "0.0001");
    assert_eq!(float(1.0), "1");
    assert_eq!(float(2.5), "2.5");
    assert_eq!(float(f64::INFINITY), "+Inf");
    assert_eq!(float(f64::NEG_INFINITY), "-Inf");
    assert_eq!(float(f64::NAN), "NaN");
}

#[test]
fn no_workers_no_backends_still_render_every_family() {
    let text = render(&[], &[], &[], &kdns_core::engine::ClientLimits::default(), &Default::default(), (1024, 64), 16);
    assert!(text.contains("kdns_request_duration_seconds_bucket{le=\"+Inf\"} 0\n"), "{text}");
    assert!(text.contains("kdns_request_duration_seconds_count 0\n"), "{text}");
    assert!(text.contains("# TYPE kdns_backend_rtt_seconds summary\n"), "{text}");
    assert!(!text.contains("kdns_xdp"), "{text}");
}
