//! The figures of bench/RESULTS.md "Several hosts", measured on the rig of
//! tests/cluster.rs (real etcd, real kdns, namespaces). Ignored by default:
//! `bench/cluster/run.sh` runs them (release build) and keeps their output
//! under bench/results/cluster/<run>/. Each prints one JSON line
//! `FIGURE {...}` and writes it to `$KDNS_BENCH_OUT/<name>.json` when that
//! is set.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::{until_all, Etcd, Host, HostOpts};
use common::*;
use serde_json::{json, Value};

fn figure(name: &str, v: Value) {
    println!("FIGURE {name} {v}");
    if let Ok(dir) = std::env::var("KDNS_BENCH_OUT") {
        let p = Path::new(&dir).join(format!("{name}.json"));
        std::fs::write(&p, format!("{v:#}\n")).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// One HTTP/1.1 request over the control socket; the status.
fn http(sock: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap_or_else(|e| panic!("{}: {e}", sock.display()));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: kdns\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out)
}

/// A DNS query for `name` A, id `id`.
fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.trim_end_matches('.').split('.') {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// ANCOUNT of the answer to `q` (none: no answer within 200 ms).
fn ancount(sock: &UdpSocket, q: &[u8]) -> Option<u16> {
    sock.send(q).ok()?;
    let mut buf = [0u8; 1500];
    loop {
        let n = sock.recv(&mut buf).ok()?;
        if n >= 12 && buf[..2] == q[..2] {
            return Some(u16::from_be_bytes([buf[6], buf[7]]));
        }
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

const RECORDS: &str = "[[service]]\nname = \"web\"\ninstances = [{ id = \"a1\", addrs = [\"10.61.0.1\"] }]\n";

fn hosts(etcd: &Etcd, n: usize) -> Vec<Host> {
    let names = ["a", "b", "c"];
    (0..n)
        .map(|i| {
            Host::start(
                etcd,
                names[i],
                &HostOpts { records: if i == 0 { RECORDS.into() } else { String::new() }, lease_ttl_s: 5, password: None },
            )
        })
        .collect()
}

/// Time from a change on host a (an instance added or removed through
/// the control API) to host b's answer showing it, over 1,000 changes.
#[test]
#[ignore]
fn propagation_latency() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let etcd = Etcd::start();
    let hs = hosts(&etcd, 2);
    let (a, b) = (&hs[0], &hs[1]);
    until_all(&[b], Duration::from_secs(15), "a1 on b", |h| h.addrs("web.kdns").contains("10.61.0.1"));
    let server = b.link.server_v4();
    let sock = b.client.within(|| {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.connect((server.as_str(), 53)).expect("connect");
        s.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        s
    });
    let n: usize = std::env::var("KDNS_BENCH_CHANGES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let mut ms = Vec::with_capacity(n);
    let mut lost = 0;
    for i in 0..n {
        let add = i.is_multiple_of(2);
        let want = if add { 2 } else { 1 };
        let t = Instant::now();
        let (st, out) = if add {
            http(&a.kdns.socket, "POST", "/v1/services/web/instances", r#"{"id":"p","addrs":["10.61.0.2"]}"#)
        } else {
            http(&a.kdns.socket, "DELETE", "/v1/services/web/instances/p", "")
        };
        assert_eq!(st, 200, "change {i}: {out}");
        let q = query("web.kdns", i as u16);
        let mut seen = false;
        while t.elapsed() < Duration::from_secs(10) {
            if ancount(&sock, &q) == Some(want) {
                seen = true;
                break;
            }
        }
        if seen {
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        } else {
            lost += 1;
        }
    }
    ms.sort_by(f64::total_cmp);
    let v = json!({
        "changes": n, "not_seen_within_10s": lost,
        "p50_ms": pct(&ms, 0.5), "p90_ms": pct(&ms, 0.9), "p99_ms": pct(&ms, 0.99), "max_ms": ms.last(),
        "note": "from the control API request on host a to the first answer of host b showing the change (polled back to back over UDP)"
    });
    figure("propagation", v);
    assert_eq!(lost, 0);
}

/// `v` as one double-quoted argument of `etcdctl txn` (Go's quoting).
fn quoted(v: &Value) -> String {
    serde_json::to_string(&v.to_string()).expect("a string")
}

/// Loads `services` services of `per` instances each into etcd (10 other
/// hosts' instances, without a lease), with `etcdctl txn`, 110 keys a
/// transaction.
fn load(etcd: &Etcd, services: usize, per: usize) -> Duration {
    let t = Instant::now();
    let mut batch = String::new();
    let mut ops = 0;
    let flush = |batch: &mut String| {
        if batch.is_empty() {
            return;
        }
        let f = etcd.dir.path().join("txn");
        std::fs::write(&f, format!("\n{batch}\n\n")).expect("write txn");
        let r = etcd.ns.exec(
            &["sh", "-c", &format!("ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791 txn < {}", f.display())],
            Duration::from_secs(60),
        );
        assert!(r.ok() && r.stdout.contains("SUCCESS"), "etcdctl txn: {}", r.both());
        batch.clear();
    };
    for s in 0..services {
        let name = format!("svc{s:05}");
        let sv = json!({"owner": "h0", "service": {"name": name}});
        batch.push_str(&format!("put /kdns/v1/services/{name} {}\n", quoted(&sv)));
        ops += 1;
        for k in 0..per {
            let host = format!("h{k}");
            let id = format!("{name}-{k}");
            let addr = format!("10.{}.{}.{}", 100 + k, s / 250, s % 250 + 1);
            let iv = json!({"host": host, "service": name, "instance": {"id": id, "addrs": [addr]}, "healthy": true});
            batch.push_str(&format!("put /kdns/v1/instances/{host}/{name}/{id} {}\n", quoted(&iv)));
            ops += 1;
        }
        if ops >= 110 {
            flush(&mut batch);
            ops = 0;
        }
    }
    flush(&mut batch);
    t.elapsed()
}

/// Start-up time and memory of a kdns joining a cluster whose etcd holds
/// 10,000 services of 10 instances.
#[test]
#[ignore]
fn startup_with_10k_services() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let services: usize = std::env::var("KDNS_BENCH_SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let etcd = Etcd::start();
    let took_load = load(&etcd, services, 10);
    let rev = etcd.revision();
    let t = Instant::now();
    let b = Host::start(&etcd, "b", &HostOpts { records: String::new(), lease_ttl_s: 5, password: None });
    let ready = t.elapsed();
    let last = format!("svc{:05}.kdns", services - 1);
    let served = until_all(&[&b], Duration::from_secs(300), "every service served", |h| h.addrs(&last).len() == 10);
    let joined = t.elapsed();
    let rss = rss_kib(b.kdns.pid());
    std::thread::sleep(Duration::from_secs(2));
    let rss_settled = rss_kib(b.kdns.pid());
    let v = b.cluster();
    let log = b.kdns.plain_log();
    let join_line = log.lines().find(|l| l.contains("cluster: joined as host")).unwrap_or("").to_string();
    figure(
        "startup",
        json!({
            "services": services, "instances": services * 10, "etcd_revision": rev, "load_s": took_load.as_secs_f64(),
            "started_s": ready.as_secs_f64(), "all_served_s": joined.as_secs_f64(), "after_started_s": served.as_secs_f64(),
            "rss_kib_when_served": rss, "rss_kib_2s_later": rss_settled,
            "hosts_seen": v["hosts"].as_array().map(|a| a.len()), "join_log": join_line,
            "note": "from spawning kdns (no snapshot file): started_s = it answers and has joined etcd (Host::start), all_served_s = the last service answered with its 10 addresses; RSS of the kdns process"
        }),
    );
}

/// etcd writes per second while hosts a, b and c together add and remove
/// 100 instances a second through their control APIs (a container
/// started or stopped each time).
#[test]
#[ignore]
fn writes_at_100_changes_per_second() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let etcd = Etcd::start();
    let hs = hosts(&etcd, 3);
    for h in &hs[1..] {
        let (st, out) = http(&h.kdns.socket, "POST", "/v1/services", &format!(r#"{{"name":"svc-{}"}}"#, h.name));
        assert_eq!(st, 200, "{out}");
    }
    let (st, out) = http(&hs[0].kdns.socket, "POST", "/v1/services", r#"{"name":"svc-a"}"#);
    assert_eq!(st, 200, "{out}");
    let secs: u64 = std::env::var("KDNS_BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let rate = 100u64;
    let rev0 = etcd.revision();
    let puts0: u64 = hs.iter().map(|h| h.cluster()["puts"].as_u64().unwrap_or(0) + h.cluster()["deletes"].as_u64().unwrap_or(0)).sum();
    let t0 = Instant::now();
    let mut changes = 0u64;
    let mut refused = 0u64;
    let mut live: Vec<Vec<u64>> = vec![Vec::new(); 3];
    while changes < rate * secs {
        let due = t0 + Duration::from_micros(changes * 1_000_000 / rate);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let k = (changes % 3) as usize;
        let h = &hs[k];
        // Add until 20 run on the host, then stop the oldest each other time.
        let (st, _) = if live[k].len() >= 20 && changes.is_multiple_of(2) {
            let id = live[k].remove(0);
            http(&h.kdns.socket, "DELETE", &format!("/v1/services/svc-{}/instances/c{id}", h.name), "")
        } else {
            live[k].push(changes);
            let body = format!(r#"{{"id":"c{changes}","addrs":["10.70.{}.{}"]}}"#, (changes / 250) % 250, changes % 250 + 1);
            http(&h.kdns.socket, "POST", &format!("/v1/services/svc-{}/instances", h.name), &body)
        };
        refused += u64::from(st != 200);
        changes += 1;
    }
    let took = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(2));
    let rev1 = etcd.revision();
    let puts1: u64 = hs.iter().map(|h| h.cluster()["puts"].as_u64().unwrap_or(0) + h.cluster()["deletes"].as_u64().unwrap_or(0)).sum();
    figure(
        "writes",
        json!({
            "changes": changes, "seconds": took, "changes_per_s": changes as f64 / took, "refused": refused,
            "etcd_revisions": rev1 - rev0, "etcd_writes_per_s": (rev1 - rev0) as f64 / took,
            "keys_written": puts1 - puts0, "keys_written_per_s": (puts1 - puts0) as f64 / took,
            "note": "etcd_writes = revisions (one per transaction or put), keys_written = puts + deletes by the three kdns"
        }),
    );
}
