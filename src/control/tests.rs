//! The control server against fake workers: counters in `Arc`s, a channel,
//! a waker, and a thread that answers snapshots with known histograms.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kdns_core::engine::DropReason;
use serde_json::Value;

use super::{spawn, ControlServer, DaemonInfo};
use crate::handle::fake::{count_queries, FakeWorker};
use crate::handle::{Control, IoStats, WorkerHandle, WorkerKind, WorkerSnapshot};

const B1: &str = "10.0.0.1:53";
const B2: &str = "10.0.0.2:53";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A fresh directory under the system temp dir, removed when dropped.
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kdns-control-test-").tempdir().expect("a temporary directory")
}

/// A fake worker: its handle and how many flushes it received.
struct Fake {
    handle: WorkerHandle,
    flushes: Arc<AtomicUsize>,
}

/// `rtts[i]` are the RTTs (µs) of backend `i` the worker reports; with
/// `answers` false it never answers snapshots.
fn fake(id: usize, kind: WorkerKind, rtts: Vec<Vec<u64>>, answers: bool) -> Fake {
    let flushes = Arc::new(AtomicUsize::new(0));
    let f = Arc::clone(&flushes);
    // A stuck worker holds on to the reply channels it never answers.
    let mut unanswered = Vec::new();
    let handle = FakeWorker::new(id, kind, &[addr(B1), addr(B2)]).serve(move |c| match c {
        Control::FlushCache => {
            f.fetch_add(1, Ordering::SeqCst);
        }
        Control::Snapshot(reply) if answers => {
            let rtt_us = rtts
                .iter()
                .map(|vals| {
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                    for &v in vals {
                        h.record(v).unwrap();
                    }
                    h
                })
                .collect();
            let _ = reply.send(WorkerSnapshot { worker: id, rtt_us, in_flight: 7 });
        }
        Control::Snapshot(reply) => unanswered.push(reply),
        Control::Records(_) | Control::ExportCache { .. } | Control::ImportCache { .. } => {}
    });
    Fake { handle, flushes }
}

fn info() -> DaemonInfo {
    DaemonInfo {
        xdp: Vec::new(),
        version: "9.9.9-test".into(),
        started: Instant::now() - Duration::from_secs(42),
        listen: vec![addr("127.0.0.1:53")],
        backends: vec![addr(B1), addr(B2)],
        pid: 4242,
        generation: 1,
        handover: None,
        limits: kdns_core::engine::ClientLimits::default(),
        xdp_client_rate: Default::default(),
        tcp_limits: (1024, 64),
        source_ports: 16,
    }
}

/// Three workers: two answer snapshots, the third (TCP) never does.
fn workers() -> Vec<Fake> {
    let w0 = fake(0, WorkerKind::Udp, vec![[vec![1000; 50], vec![3000; 50]].concat(), vec![]], true);
    let w1 = fake(1, WorkerKind::Udp, vec![vec![5000; 100], vec![]], true);
    // Its histograms must be left out of the merge.
    let w2 = fake(2, WorkerKind::Tcp, vec![vec![900_000; 1000], vec![900_000; 1000]], false);

    let e = &w0.handle.engine;
    count_queries(e, 100, 90, 60, 40);
    e.rcodes[3].add(5);
    e.rcodes[7].add(1);
    e.count_drop(DropReason::QueryTooShort);

    let e = &w1.handle.engine;
    count_queries(e, 50, 45, 20, 30);
    e.timeouts.add(2);
    e.count_drop(DropReason::QueryTooShort);
    e.count_drop(DropReason::PendingFull);

    let e = &w2.handle.engine;
    count_queries(e, 10, 10, 0, 0);
    e.queries_tcp.add(10);

    // Every query arrived as a packet; the TCP worker has no cache.
    for (w, rx, entries) in [(&w0, 100, 11), (&w1, 50, 22), (&w2, 10, 0)] {
        IoStats::add(&w.handle.io.rx, rx);
        w.handle.cache.entries.set(entries);
    }

    // B1 up everywhere; B2 down on worker 1 only.
    for (w, sent, up2) in [(&w0, 25, 1), (&w1, 20, 0), (&w2, 5, 1)] {
        let b = &w.handle.backends;
        b[0].sent.add(sent);
        b[0].answers.add(sent - 1);
        b[0].timeouts.add(1);
        b[0].outstanding.set(1);
        b[1].state_up.set(up2);
    }
    w1.handle.backends[1].went_down.add(1);
    // Try timeouts: B1 has RTT samples on workers 0 and 1 (60 and 75 ms);
    // worker 2 never had an answer and is still at the 800 ms maximum.
    for (w, us, samples) in [(&w0, 60_000, 3), (&w1, 75_000, 2), (&w2, 800_000, 0)] {
        w.handle.backends[0].try_timeout_us.set(us);
        w.handle.backends[0].rtt_count.add(samples);
        w.handle.backends[1].try_timeout_us.set(800_000);
    }
    vec![w0, w1, w2]
}

/// A response: status, headers (lowercased names), body.
struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

fn parse_response(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    if headers.get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().split(';').next().unwrap().trim(), 16).unwrap();
            if size == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
            rest = &rest[eol + 2 + size + 2..];
        }
        body = out;
    }
    Resp { status, headers, body }
}

fn exchange(mut s: impl Read + Write, method: &str, path: &str) -> Resp {
    write!(s, "{method} {path} HTTP/1.1\r\nHost: kdns\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    parse_response(&raw)
}

fn request(sock: &Path, method: &str, path: &str) -> Resp {
    let s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    exchange(s, method, path)
}

/// A control server over [`workers`] with its socket at `rel` in a fresh
/// directory (removed when `tmp` is dropped), `/metrics` on `metrics`.
struct Served {
    tmp: tempfile::TempDir,
    sock: PathBuf,
    fakes: Vec<Fake>,
    server: ControlServer,
}

fn serve(rel: &str, metrics: Option<SocketAddr>) -> Served {
    let tmp = temp_dir();
    let sock = tmp.path().join(rel);
    let fakes = workers();
    let server = spawn(&sock, metrics, fakes.iter().map(|f| f.handle.clone()).collect(), info()).unwrap();
    Served { tmp, sock, fakes, server }
}

fn close(got: &Value, want: f64) -> bool {
    got.as_f64().is_some_and(|g| (g - want).abs() <= want * 0.001 + 0.0011)
}

#[test]
fn stats_sum_counters_and_merge_answered_histograms() {
    let Served { tmp: _tmp, sock, fakes, server } = serve("run/kdns/control.sock", None);

    // The directory was created 0755 and the socket is 0660.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(sock.parent().unwrap()), 0o755);
    assert_eq!(mode(&sock), 0o660);

    let t = Instant::now();
    let r = request(&sock, "GET", "/v1/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
    // The silent worker costs the whole wait (it is then reported "timeout").
    assert!(t.elapsed() >= super::SNAPSHOT_WAIT, "the silent worker was waited for");
    let v = r.json();

    assert_eq!(v["version"], "9.9.9-test");
    assert_eq!(v["pid"], 4242);
    assert!(v["uptime_s"].as_u64().unwrap() >= 42);
    assert_eq!(v["listen"], serde_json::json!(["127.0.0.1:53"]));
    assert!(v["qps_1s"].is_number() && v["qps_10s"].is_number());

    let t = &v["totals"];
    assert_eq!(t["workers"], 3);
    assert_eq!(t["queries"], 160);
    assert_eq!(t["queries_tcp"], 10);
    assert_eq!(t["cache_hits"], 80);
    assert_eq!(t["cache_misses"], 70);
    assert_eq!(t["hit_ratio"], 0.5333);
    assert_eq!(t["cache_entries"], 33);
    assert_eq!(t["forwarded"], 70);
    assert_eq!(t["timeouts"], 2);
    assert_eq!(t["replies_by_rcode"]["NOERROR"], 145);
    assert_eq!(t["replies_by_rcode"]["NXDOMAIN"], 5);
    assert_eq!(t["replies_by_rcode"]["SERVFAIL"], 0);
    assert_eq!(t["replies_by_rcode"]["BADVERS"], 0);
    assert_eq!(t["replies_by_rcode"]["RCODE7"], 1);
    assert!(t["replies_by_rcode"].get("RCODE8").is_none());
    assert_eq!(t["drops"]["query_too_short"], 2);
    assert_eq!(t["drops"]["pending_full"], 1);
    assert_eq!(t["drops"]["answer_unknown_id"], 0);
    assert_eq!(t["drops"].as_object().unwrap().len(), DropReason::ALL.len());
    assert_eq!(t["io"]["rx"], 160);
    // 7 from each answered snapshot, the outstanding gauges (1 + 0) of the silent one.
    assert_eq!(t["in_flight"], 15);

    let w = v["workers"].as_array().unwrap();
    assert_eq!(w.len(), 3);
    assert_eq!(w[0]["id"], 0);
    assert_eq!(w[0]["kind"], "udp");
    assert_eq!(w[0]["core"], 0);
    assert_eq!(w[0]["snapshot"], "ok");
    assert_eq!(w[0]["queries"], 100);
    assert_eq!(w[0]["cache_entries"], 11);
    assert_eq!(w[1]["drops"]["pending_full"], 1);
    assert_eq!(w[2]["kind"], "tcp");
    assert_eq!(w[2]["core"], Value::Null);
    assert_eq!(w[2]["snapshot"], "timeout");
    assert_eq!(w[2]["queries_tcp"], 10);
    assert_eq!(w[2]["in_flight"], 1);

    let b = v["backends"].as_array().unwrap();
    assert_eq!(b.len(), 2);
    assert_eq!(b[0]["address"], B1);
    assert_eq!(b[0]["state"], "up");
    assert_eq!(b[0]["up_workers"], 3);
    assert_eq!(b[0]["workers"], 3);
    assert_eq!(b[0]["sent"], 50);
    assert_eq!(b[0]["answers"], 47);
    assert_eq!(b[0]["timeouts"], 3);
    assert_eq!(b[0]["in_flight"], 3);
    // Merged: 50 x 1 ms, 50 x 3 ms (worker 0), 100 x 5 ms (worker 1).
    let rtt = &b[0]["rtt_ms"];
    assert_eq!(rtt["samples"], 200);
    assert!(close(&rtt["p50"], 3.0), "{rtt}");
    assert!(close(&rtt["p90"], 5.0), "{rtt}");
    assert!(close(&rtt["p99"], 5.0), "{rtt}");
    assert!(close(&rtt["max"], 5.0), "{rtt}");
    assert!(close(&rtt["mean"], 3.5), "{rtt}");
    assert_eq!(b[1]["address"], B2);
    assert_eq!(b[1]["state"], "partial");
    assert_eq!(b[1]["up_workers"], 2);
    assert_eq!(b[1]["went_down"], 1);
    assert_eq!(b[0]["try_timeout_ms"], 75.0, "the longest among workers with RTT samples");
    assert_eq!(b[1]["try_timeout_ms"], 800.0, "no samples anywhere: the maximum");
    assert_eq!(b[1]["rtt_ms"], serde_json::json!({"p50": null, "p90": null, "p99": null, "max": null, "mean": null, "samples": 0}));

    // /v1/backends is the same array alone.
    let r = request(&sock, "GET", "/v1/backends");
    assert_eq!(r.status, 200);
    let bj = r.json();
    assert_eq!(bj.as_array().unwrap().len(), 2);
    assert_eq!(bj[1]["state"], "partial");
    assert_eq!(bj[0]["rtt_ms"]["samples"], 200);

    server.shutdown();
    assert!(!sock.exists(), "socket removed at shutdown");
    drop(fakes);
}

#[test]
fn flush_health_and_errors() {
    let Served { tmp: _tmp, sock, fakes, server } = serve("control.sock", None);

    let r = request(&sock, "POST", "/v1/cache/flush");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["flushed_workers"], 3);
    let deadline = Instant::now() + Duration::from_secs(2);
    while fakes.iter().any(|f| f.flushes.load(Ordering::SeqCst) == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    for f in &fakes {
        assert_eq!(f.flushes.load(Ordering::SeqCst), 1, "worker {} flushed once", f.handle.id);
    }

    let r = request(&sock, "GET", "/v1/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
    assert_eq!(request(&sock, "GET", "/v1/health?verbose=1").status, 200);

    let r = request(&sock, "GET", "/v1/nope");
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/v1/nope"));
    assert_eq!(request(&sock, "GET", "/").status, 404);

    let r = request(&sock, "GET", "/v1/cache/flush");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers.get("allow").map(String::as_str), Some("POST"));
    assert!(r.json()["error"].is_string());
    let r = request(&sock, "POST", "/v1/stats");
    assert_eq!(r.status, 405);
    assert_eq!(r.headers.get("allow").map(String::as_str), Some("GET"));
    assert_eq!(fakes[0].flushes.load(Ordering::SeqCst), 1, "no flush from the 405");

    server.shutdown();
    drop(fakes);
}

#[test]
fn stale_live_and_foreign_socket_paths() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir).unwrap();
    let sock = dir.join("control.sock");

    // A socket file nobody listens on is replaced.
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let fakes = workers();
    let handles = || fakes.iter().map(|f| f.handle.clone()).collect::<Vec<_>>();
    let server = spawn(&sock, None, handles(), info()).unwrap();
    assert_eq!(request(&sock, "GET", "/v1/health").status, 200);

    // A live one is not.
    let e = spawn(&sock, None, handles(), info()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    assert!(e.to_string().contains("another kdns"), "{e}");
    assert_eq!(request(&sock, "GET", "/v1/health").status, 200, "the first server still serves");
    server.shutdown();
    assert!(!sock.exists());

    // Nor is something that is not a socket.
    std::fs::write(&sock, b"not a socket").unwrap();
    let e = spawn(&sock, None, handles(), info()).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&sock).unwrap(), b"not a socket");

    drop(fakes);
}

/// A parsed sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Checks `text` line by line against the exposition format 0.0.4; returns
/// the samples as `(name, labels, value)`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    fn is_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    assert!(text.ends_with('\n'), "ends with a newline");
    let mut helped: Vec<String> = Vec::new();
    let mut typed: Vec<String> = Vec::new();
    let mut kinds: Vec<(String, String)> = Vec::new();
    let mut sampled: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(is_name(name) && !help.is_empty(), "{line}");
            assert!(!sampled.contains(&name.to_string()), "HELP before samples: {line}");
            assert!(!helped.contains(&name.to_string()), "one HELP per family: {line}");
            helped.push(name.into());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(is_name(name), "{line}");
            assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
            assert!(!sampled.contains(&name.to_string()), "TYPE before samples: {line}");
            assert!(!typed.contains(&name.to_string()), "one TYPE per family: {line}");
            typed.push(name.into());
            kinds.push((name.into(), kind.into()));
            continue;
        }
        assert!(!line.starts_with('#'), "only HELP and TYPE comments: {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("numeric value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap_or_else(|| panic!("labels end with }}: {line}"));
                let mut labels = Vec::new();
                let mut s = body;
                while !s.is_empty() {
                    let (k, r) = s.split_once("=\"").unwrap_or_else(|| panic!("label=\"value\": {line}"));
                    assert!(is_name(k) && !k.starts_with("__"), "label name {k}: {line}");
                    let mut v = String::new();
                    let mut chars = r.char_indices();
                    let end = loop {
                        match chars.next() {
                            Some((_, '\\')) => match chars.next() {
                                Some((_, 'n')) => v.push('\n'),
                                Some((_, c @ ('\\' | '"'))) => v.push(c),
                                other => panic!("bad escape {other:?}: {line}"),
                            },
                            Some((i, '"')) => break i,
                            Some((_, c)) => v.push(c),
                            None => panic!("unterminated label value: {line}"),
                        }
                    };
                    labels.push((k.to_string(), v));
                    s = &r[end + 1..];
                    s = s.strip_prefix(',').unwrap_or(s);
                }
                (name, labels)
            }
        };
        assert!(is_name(name), "{line}");
        // A histogram's samples are NAME_bucket, NAME_sum, NAME_count; a
        // summary's NAME, NAME_sum, NAME_count.
        let family = kinds
            .iter()
            .find_map(|(f, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "histogram" => &["_bucket", "_sum", "_count"],
                    "summary" => &["", "_sum", "_count"],
                    _ => &[""],
                };
                suffixes.iter().any(|s| name.strip_suffix(s) == Some(f.as_str())).then_some(f.as_str())
            })
            .unwrap_or(name);
        assert!(typed.contains(&family.to_string()) && helped.contains(&family.to_string()), "HELP and TYPE precede {name}");
        if sampled.last().map(String::as_str) != Some(family) {
            assert!(!sampled.contains(&family.to_string()), "samples of {family} are grouped");
            sampled.push(family.into());
        }
        out.push((name.to_string(), labels, value));
    }
    out
}

#[test]
fn metrics_are_valid_exposition_text() {
    let Served { tmp: _tmp, sock: _, fakes, server } = serve("control.sock", Some(addr("127.0.0.1:0")));
    let maddr = server.metrics_addr().unwrap();
    assert_ne!(maddr.port(), 0);

    let tcp = || {
        let s = TcpStream::connect(maddr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    };
    let r = exchange(tcp(), "GET", "/metrics");
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"].starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(r.body).unwrap();
    let samples = parse_exposition(&text);
    let get = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l.len() == labels.len() && labels.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
            .unwrap_or_else(|| panic!("{name}{labels:?} in:\n{text}"))
            .2
    };
    assert_eq!(get("kdns_requests_total", &[("worker", "0"), ("proto", "udp")]), 100.0);
    assert_eq!(get("kdns_requests_total", &[("worker", "2"), ("proto", "tcp")]), 10.0);
    assert_eq!(get("kdns_requests_total", &[("worker", "2"), ("proto", "udp")]), 0.0);
    assert_eq!(get("kdns_responses_total", &[("rcode", "NOERROR")]), 145.0);
    assert_eq!(get("kdns_responses_total", &[("rcode", "RCODE7")]), 1.0);
    assert_eq!(get("kdns_cache_hits_total", &[]), 80.0);
    assert_eq!(get("kdns_cache_misses_total", &[]), 70.0);
    assert_eq!(get("kdns_cache_entries", &[]), 33.0);
    assert_eq!(get("kdns_forward_requests_total", &[("backend", B1)]), 50.0);
    assert_eq!(get("kdns_forward_timeouts_total", &[("backend", B1)]), 3.0);
    assert_eq!(get("kdns_backend_up", &[("backend", B1)]), 1.0);
    assert_eq!(get("kdns_backend_up", &[("backend", B2)]), 0.0);
    assert_eq!(get("kdns_drops_total", &[("reason", "query_too_short")]), 2.0);

    assert_eq!(exchange(tcp(), "GET", "/other").status, 404);
    assert_eq!(exchange(tcp(), "POST", "/metrics").status, 405);

    server.shutdown();
    drop(fakes);
}

#[test]
fn exposition_checker_rejects_bad_text() {
    let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\\\\\\n\",y=\"2\"} 3\n";
    assert_eq!(parse_exposition(ok)[0].1[0].1, "q\"\\\n");
    for bad in [
        "a_total 1\n",                                                       // no HELP/TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=1} 1\n",       // unquoted label
        "# HELP a_total A.\n# TYPE a_total counter\na_total one\n",          // bad value
        "# TYPE a_total counter\n# HELP a_total A.\na_total 1\nb 1\n",       // b untyped
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"\\q\"} 1\n", // bad escape
    ] {
        assert!(std::panic::catch_unwind(|| parse_exposition(bad)).is_err(), "accepted: {bad:?}");
    }
}

#[test]
fn label_values_are_escaped() {
    let mut s = String::new();
    super::metrics::sample(&mut s, "m", &[("l", "a\"b\\c\nd")], 1);
    assert_eq!(s, "m{l=\"a\\\"b\\\\c\\nd\"} 1\n");
}

#[test]
fn a_stopped_worker_is_reported_gone() {
    let tmp = temp_dir();
    let sock = tmp.path().join("control.sock");
    let mut f = fake(0, WorkerKind::Udp, vec![], true);
    let (tx, rx) = crossbeam_channel::unbounded();
    drop(rx);
    f.handle.tx = tx;
    f.handle.engine.queries.add(3);
    let server = spawn(&sock, None, vec![f.handle.clone()], info()).unwrap();
    // A worker that is gone is reported so, not waited for ("timeout");
    // the request's own read timeout is the generous deadline.
    let v = request(&sock, "GET", "/v1/stats").json();
    assert_eq!(v["workers"][0]["snapshot"], "gone");
    assert_eq!(v["totals"]["queries"], 3);
    assert_eq!(request(&sock, "POST", "/v1/cache/flush").json()["flushed_workers"], 0);
    server.shutdown();
}
