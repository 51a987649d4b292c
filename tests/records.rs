//! End-to-end tests of kdns's local service discovery: a records file
//! (`--records-file`, `--domain kdns`, `--state-file` in a temp dir), real
//! Unbound backends, real dig from the client namespace, kdns-ctl over the
//! control socket and over TCP with a bearer token, `/metrics` checked by
//! promtool. Every scenario runs twice: with `--io udp` (sockets) and with
//! `--io xdp` (AF_XDP, as `tests/xdp.rs` starts it).
//!
//! Needs root, the Debian packages of scripts/setup.sh, python3 (TCP
//! listeners for the health checks), curl and promtool (Debian package
//! `prometheus`), and `cargo build --workspace` first; fails (never skips)
//! without them. See tests/README.md.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// The records file
// ---------------------------------------------------------------------------

/// Every name form: a 3-instance `all` service with an SRV port, a
/// random-one and a sticky service, a service whose only instance fails
/// its check (no route to 10.61.0.1), static A/AAAA/TXT/CNAME records and a
/// second domain.
const RECORDS: &str = r#"
domains = ["svc.cluster.local"]

[[service]]
name = "web"
mode = "all"
ports = [{ name = "http", proto = "tcp", port = 8080 }]
instances = [
  { id = "c1", addrs = ["10.60.0.1", "fd60::1"] },
  { id = "c2", addrs = ["10.60.0.2", "fd60::2"] },
  { id = "c3", addrs = ["10.60.0.3"] },
]

[[service]]
name = "rnd"
mode = "random-one"
instances = [{ id = "r1", addrs = ["10.62.0.1"] }, { id = "r2", addrs = ["10.62.0.2"] }, { id = "r3", addrs = ["10.62.0.3"] }]

[[service]]
name = "stk"
mode = "sticky"
instances = [{ id = "s1", addrs = ["10.63.0.1"] }, { id = "s2", addrs = ["10.63.0.2"] }, { id = "s3", addrs = ["10.63.0.3"] }]

[[service]]
name = "down"
check = { kind = "tcp", port = 9, interval_ms = 100, timeout_ms = 100, rise = 2, fall = 1 }
instances = [{ id = "d1", addrs = ["10.61.0.1"] }]

[[record]]
name = "db.kdns"
type = "A"
data = "10.5.0.1"
ttl = 60

[[record]]
name = "db.kdns"
type = "AAAA"
data = "fd05::1"
ttl = 60

[[record]]
name = "info.kdns"
type = "TXT"
data = ["v=1", "owner=ops"]

[[record]]
name = "www.kdns"
type = "CNAME"
data = "web.kdns"

[[record]]
name = "db.svc.cluster.local"
type = "A"
data = "10.5.1.1"
"#;

/// Tests `$udp` and `$xdp`: `$scenario` run with `--io udp`, then with
/// `--io xdp`, each in a lab of its own (root and the tools checked first).
macro_rules! both_io {
    ($scenario:ident => $udp:ident, $xdp:ident) => {
        #[test]
        fn $udp() {
            require_root_and_tools();
            let _slot = shared_slot();
            $scenario(Io::Udp);
        }

        #[test]
        fn $xdp() {
            require_root_and_tools();
            let _slot = shared_slot();
            $scenario(Io::Xdp);
        }
    };
}

const WEB_A: [&str; 3] = ["10.60.0.1", "10.60.0.2", "10.60.0.3"];
const WEB_AAAA: [&str; 2] = ["fd60::1", "fd60::2"];
const RND_A: [&str; 3] = ["10.62.0.1", "10.62.0.2", "10.62.0.3"];
const STK_A: [&str; 3] = ["10.63.0.1", "10.63.0.2", "10.63.0.3"];

/// Sum of `key` over the workers that answer UDP queries in this mode, and
/// over the others (the TCP server; in AF_XDP mode also the socket worker).
fn split_sum(rl: &RecordsLab, key: &str) -> (u64, u64) {
    let st = rl.lab.stats();
    let kind = rl.io.worker_kind();
    let all: u64 = st["workers"].as_array().into_iter().flatten().map(|w| w[key].as_u64().unwrap_or(0)).sum();
    let main = kind_sum(&st, kind, key);
    (main, all - main)
}

/// The lab of [`RECORDS`] for a scenario that ends in [`check_path`], and
/// the local answers counted before the scenario.
fn path_lab(io: Io) -> (RecordsLab, (u64, u64)) {
    let rl = RecordsLab::start(io, RECORDS, &[]);
    let before = split_sum(&rl, "local_answers");
    (rl, before)
}

/// In AF_XDP mode every UDP query of the scenario went through AF_XDP: the
/// `xdp` workers counted `at_least` more local answers and the socket
/// worker none.
fn check_path(rl: &RecordsLab, before: (u64, u64), at_least: u64, tcp_local: u64) {
    let after = split_sum(rl, "local_answers");
    let (main, other) = (after.0 - before.0, after.1 - before.1);
    println!("[{}] local answers by the {} workers: {main}, by the others: {other} (TCP: {tcp_local})", rl.io.name(), rl.io.worker_kind());
    assert!(
        main >= at_least,
        "[{}] the {} workers counted {main} local answers, expected >= {at_least}",
        rl.io.name(),
        rl.io.worker_kind()
    );
    if rl.io == Io::Xdp {
        assert_eq!(other, tcp_local, "[xdp] local answers by other workers than AF_XDP ones (only TCP queries should be)");
    }
}

// ---------------------------------------------------------------------------
// 1. Every name form
// ---------------------------------------------------------------------------

fn names_scenario(io: Io) {
    let (rl, before) = path_lab(io);
    let tag = io.name();
    let c = &rl.lab.client;
    let at = rl.at();

    // The service whose instance fails its check leaves the answers first.
    let nodata = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let a = rl.dig(&["down.kdns", "A"]);
        (a.status == "NOERROR" && a.answers.is_empty()).then_some(a)
    })
    .unwrap_or_else(|| panic!("[{tag}] down.kdns still answered 5 s after start:\n{}", rl.dig(&["down.kdns", "A"]).text));
    assert!(nodata.has_flag("aa") && has_soa(&nodata, "kdns."), "[{tag}] NODATA of down.kdns: aa and SOA expected:\n{}", nodata.text);

    let queries: Vec<(&str, &str)> = vec![
        ("web.kdns", "A"),
        ("web.kdns", "AAAA"),
        ("web-2.kdns", "A"),
        ("web-2.kdns", "AAAA"),
        ("web", "A"),
        ("_http._tcp.web.kdns", "SRV"),
        ("db.kdns", "A"),
        ("db.kdns", "AAAA"),
        ("info.kdns", "TXT"),
        ("www.kdns", "A"),
        ("web.svc.cluster.local", "A"),
        ("db.svc.cluster.local", "A"),
        ("nope.kdns", "A"),
        ("down.kdns", "A"),
        ("WeB-3.KdNs", "A"),
        ("www.static.test", "A"),
    ];
    let fwd_before = total(&rl.lab.stats(), "forwarded");
    let ans = dig_many(c, &[&at], &queries);
    let by = |name: &str, t: &str| -> &Answer {
        let i = queries.iter().position(|q| q.0 == name && q.1 == t).expect("query listed");
        &ans[i]
    };
    let ok = |a: &Answer, what: &str| {
        assert_eq!(a.status, "NOERROR", "[{tag}] {what}: status\n{}", a.text);
        assert!(a.has_flag("aa"), "[{tag}] {what}: a local answer is authoritative (aa)\n{}", a.text);
    };
    // The answer to a name kdns answers itself, checked as such.
    let local = |name: &str, t: &str| -> &Answer {
        let a = by(name, t);
        ok(a, &format!("{name} {t}"));
        a
    };

    let a = local("web.kdns", "A");
    assert_eq!(addr_set(a), set_of(&WEB_A), "[{tag}] web.kdns A: every healthy instance\n{}", a.text);
    assert!(a.answers.iter().all(|l| l.starts_with("web.kdns. 10 IN A ")), "[{tag}] owner and default TTL 10:\n{}", a.text);
    let a = local("web.kdns", "AAAA");
    assert_eq!(addr_set(a), set_of(&WEB_AAAA), "[{tag}] web.kdns AAAA\n{}", a.text);

    let a = local("web-2.kdns", "A");
    assert_eq!(addrs(a), vec!["10.60.0.2"], "[{tag}] web-2.kdns A: instance 2\n{}", a.text);
    let a = by("web-2.kdns", "AAAA");
    assert_eq!(addrs(a), vec!["fd60::2"], "[{tag}] web-2.kdns AAAA\n{}", a.text);
    let a = local("WeB-3.KdNs", "A");
    assert_eq!(addrs(a), vec!["10.60.0.3"], "[{tag}] names are case-insensitive\n{}", a.text);

    let a = local("web", "A");
    assert_eq!(addr_set(a), set_of(&WEB_A), "[{tag}] bare 'web' is web.kdns\n{}", a.text);
    assert!(a.answers.iter().all(|l| l.starts_with("web. ")), "[{tag}] the owner is the name asked ('web.')\n{}", a.text);

    let a = local("_http._tcp.web.kdns", "SRV");
    let srv: BTreeSet<String> = a.rdata("SRV").into_iter().collect();
    let want: BTreeSet<String> = (1..=3).map(|k| format!("0 10 8080 web-{k}.kdns.")).collect();
    assert_eq!(srv, want, "[{tag}] _http._tcp.web.kdns SRV: one per healthy instance, port 8080\n{}", a.text);

    let a = local("db.kdns", "A");
    assert_eq!(a.answers, vec!["db.kdns. 60 IN A 10.5.0.1"], "[{tag}] static A with its TTL\n{}", a.text);
    let a = by("db.kdns", "AAAA");
    assert_eq!(a.answers, vec!["db.kdns. 60 IN AAAA fd05::1"], "[{tag}] static AAAA\n{}", a.text);
    let a = local("info.kdns", "TXT");
    assert_eq!(a.rdata("TXT"), vec!["\"v=1\" \"owner=ops\""], "[{tag}] static TXT\n{}", a.text);

    let a = local("www.kdns", "A");
    assert_eq!(a.rdata("CNAME"), vec!["web.kdns."], "[{tag}] www.kdns CNAME\n{}", a.text);
    assert_eq!(addr_set(a), set_of(&WEB_A), "[{tag}] the CNAME is followed to the service\n{}", a.text);
    assert!(
        a.answers.iter().filter(|l| l.contains(" IN A ")).all(|l| l.starts_with("web.kdns. ")),
        "[{tag}] the addresses are owned by the target\n{}",
        a.text
    );

    let a = local("web.svc.cluster.local", "A");
    assert_eq!(addr_set(a), set_of(&WEB_A), "[{tag}] the service under the second domain\n{}", a.text);
    let a = by("db.svc.cluster.local", "A");
    assert_eq!(addrs(a), vec!["10.5.1.1"], "[{tag}] a static record under the second domain\n{}", a.text);

    let a = by("nope.kdns", "A");
    assert_eq!(a.status, "NXDOMAIN", "[{tag}] unknown name under the domain\n{}", a.text);
    assert!(a.has_flag("aa") && a.answers.is_empty() && has_soa(a, "kdns."), "[{tag}] NXDOMAIN: aa, no answer, SOA\n{}", a.text);

    let a = by("down.kdns", "A");
    assert_eq!(a.status, "NOERROR", "[{tag}] a service without a healthy instance is NODATA\n{}", a.text);
    assert!(a.answers.is_empty() && has_soa(a, "kdns."), "[{tag}] NODATA: no answer (never a dead address), SOA\n{}", a.text);

    let a = by("www.static.test", "A");
    assert_eq!(a.status, "NOERROR", "[{tag}] name outside the domains\n{}", a.text);
    assert_eq!(a.rdata("A"), vec![WWW_A], "[{tag}] forwarded to Unbound, answer from its local zone\n{}", a.text);
    let fwd = total(&rl.lab.stats(), "forwarded") - fwd_before;
    assert!(fwd >= 1, "[{tag}] www.static.test was not forwarded to a backend (forwarded +{fwd})");

    // PTR of instance addresses (dig -x), IPv4 and IPv6.
    let a = rl.dig(&["-x", "10.60.0.2"]);
    ok(&a, "PTR v4");
    assert_eq!(a.rdata("PTR"), vec!["web-2.kdns."], "[{tag}] PTR of 10.60.0.2\n{}", a.text);
    let a = rl.dig(&["-x", "fd60::1"]);
    ok(&a, "PTR v6");
    assert_eq!(a.rdata("PTR"), vec!["web-1.kdns."], "[{tag}] PTR of fd60::1\n{}", a.text);

    // Over TCP too (the TCP server holds the same records).
    let a = rl.dig(&["+tcp", "web-1.kdns", "A"]);
    ok(&a, "web-1.kdns over TCP");
    assert_eq!(addrs(&a), vec!["10.60.0.1"], "[{tag}] web-1.kdns over TCP\n{}", a.text);

    // 15 local names in the batch (all but the forwarded one) and 2 PTRs.
    check_path(&rl, before, 17, 1);
}

both_io!(names_scenario => every_name_form_udp, every_name_form_xdp);

// ---------------------------------------------------------------------------
// 2. Rotation, random-one, sticky
// ---------------------------------------------------------------------------

fn rotation_scenario(io: Io) {
    let (rl, before) = path_lab(io);
    let tag = io.name();
    let c = &rl.lab.client;
    let at = rl.at();

    // all: every answer has the three, the first one varies over all three.
    let ans = dig_many(c, &[&at], &[("web.kdns", "A"); 30]);
    let mut firsts: BTreeMap<String, usize> = BTreeMap::new();
    for a in &ans {
        assert_eq!(addr_set(a), set_of(&WEB_A), "[{tag}] web.kdns (all): every instance in every answer\n{}", a.text);
        *firsts.entry(addrs(a)[0].clone()).or_default() += 1;
    }
    println!("[{tag}] all, 30 queries: first address {firsts:?}");
    assert_eq!(firsts.len(), 3, "[{tag}] the first address of web.kdns should rotate over the 3 instances: {firsts:?}");

    // random-one: one address per answer, all three over 60 queries.
    let ans = dig_many(c, &[&at], &[("rnd.kdns", "A"); 60]);
    let mut picks: BTreeMap<String, usize> = BTreeMap::new();
    for a in &ans {
        let got = addrs(a);
        assert_eq!(got.len(), 1, "[{tag}] rnd.kdns (random-one): one address per answer\n{}", a.text);
        assert!(RND_A.contains(&got[0].as_str()), "[{tag}] rnd.kdns: unknown address {}", got[0]);
        *picks.entry(got[0].clone()).or_default() += 1;
    }
    println!("[{tag}] random-one, 60 queries: {picks:?}");
    assert_eq!(picks.len(), 3, "[{tag}] random-one should pick every instance over 60 queries: {picks:?}");

    // sticky: 8 client addresses, 20 queries each (dig -b).
    let x = rl.lab.link.x;
    let mut per_client: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..8 {
        let addr = format!("10.53.{x}.{}", 10 + i);
        c.exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", &rl.lab.link.client_if]);
        let ans = dig_many(c, &[&at, "-b", &addr], &[("stk.kdns", "A"); 20]);
        let mut seen = BTreeSet::new();
        for a in &ans {
            let got = addrs(a);
            assert_eq!(got.len(), 1, "[{tag}] stk.kdns (sticky) from {addr}: one address per answer\n{}", a.text);
            assert!(STK_A.contains(&got[0].as_str()), "[{tag}] stk.kdns: unknown address {}", got[0]);
            seen.insert(got[0].clone());
        }
        assert_eq!(seen.len(), 1, "[{tag}] client {addr} should always get the same instance of stk.kdns, got {seen:?}");
        per_client.insert(addr, seen.into_iter().next().unwrap_or_default());
    }
    let distinct: BTreeSet<&String> = per_client.values().collect();
    println!("[{tag}] sticky, 8 clients x 20 queries: {per_client:?}");
    assert!(distinct.len() >= 2, "[{tag}] 8 sticky clients all got the same instance: {per_client:?}");

    check_path(&rl, before, 30 + 60 + 160, 0);
}

both_io!(rotation_scenario => rotation_random_one_and_sticky_udp, rotation_random_one_and_sticky_xdp);

// ---------------------------------------------------------------------------
// 3. Health checks
// ---------------------------------------------------------------------------

const HC_PORT: u16 = 8089;
/// How long a health change may take to reach the answers (checks every
/// 200 ms, rise 2 and fall 2: ~0.4 s on an idle machine).
const CHECK_WITHIN: Duration = Duration::from_secs(10);
const HC1: &str = "10.99.1.1";
const HC2: &str = "10.99.1.2";

fn health_records() -> String {
    format!(
        r#"[[service]]
name = "hc"
check = {{ kind = "tcp", port = {HC_PORT}, interval_ms = 200, timeout_ms = 200, rise = 2, fall = 2 }}
instances = [{{ id = "h1", addrs = ["{HC1}"] }}, {{ id = "h2", addrs = ["{HC2}"] }}]
"#
    )
}

/// The addresses of hc.kdns, polled (dig every ~50 ms) until they are
/// `want`; returns how long that took, or panics after `limit`.
fn wait_hc(rl: &RecordsLab, want: &[&str], limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    let want = set_of(want);
    let mut last = Answer::default();
    let ok = poll_until(limit, Duration::from_millis(50), || {
        last = rl.dig(&["hc.kdns", "A"]);
        (last.status == "NOERROR" && addr_set(&last) == want).then(|| t0.elapsed())
    });
    ok.unwrap_or_else(|| {
        panic!(
            "[{}] {what}: hc.kdns is not {want:?} after {limit:?}; last answer:\n{}\nkdns-ctl records list:\n{}",
            rl.io.name(),
            last.text,
            rl.ctl(&["records", "list"]).stdout
        )
    })
}

/// `health` of instance `id` of service hc in `records list --json`.
fn health_of(rl: &RecordsLab, id: &str) -> Value {
    let r = rl.ctl_json(&["records", "list"]);
    r["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "hc"))
        .and_then(|s| s["instances"].as_array())
        .and_then(|i| i.iter().find(|i| i["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("no instance {id} of hc in:\n{r:#}"))
}

fn health_scenario(io: Io) {
    let tag = io.name();
    let rl = RecordsLab::start(io, &health_records(), &[]);
    let s = &rl.lab.server;
    for a in [HC1, HC2] {
        s.exec_ok(&["ip", "addr", "add", &format!("{a}/32"), "dev", "lo"]);
    }
    let (a1, a2): (SocketAddr, SocketAddr) = (format!("{HC1}:{HC_PORT}").parse().unwrap(), format!("{HC2}:{HC_PORT}").parse().unwrap());
    let l1 = tcp_listener(s, a1);
    assert!(!tcp_accepts(s, a2), "nothing should listen on {a2} yet");

    // Only the live instance is answered (h2 fails its checks).
    let t = wait_hc(&rl, &[HC1], CHECK_WITHIN, "only the instance with a listener");
    let h2 = health_of(&rl, "h2");
    assert_eq!(h2["health"], "down", "[{tag}] h2 without a listener:\n{h2:#}");
    assert!(h2["last_error"].as_str().is_some_and(|e| !e.is_empty()), "[{tag}] h2's last_error should say why:\n{h2:#}");
    println!("[{tag}] only h1 answered {t:?} after start; h2: {}", h2["last_error"]);
    // The instance name of an unhealthy instance is NODATA (never a dead
    // address; docs/control-api.md, "web-2.kdns ... while it is healthy").
    let i2 = rl.dig(&["hc-2.kdns", "A"]);
    assert!(
        i2.status == "NOERROR" && i2.has_flag("aa") && i2.answers.is_empty() && has_soa(&i2, "kdns."),
        "[{tag}] hc-2.kdns while h2 is down: NODATA (NOERROR, aa, no answer, the SOA) expected:\n{}",
        i2.text
    );

    // A listener on h2: it appears (after interval x rise, ~0.4 s).
    let l2 = tcp_listener(s, a2);
    let up = wait_hc(&rl, &[HC1, HC2], CHECK_WITHIN, "h2 back after its listener started");
    println!("[{tag}] h2 appeared {:.0} ms after its listener accepted connections (interval 200 ms x rise 2)", up.as_secs_f64() * 1e3);

    // Forced unhealthy: out at once; auto: back to its (passing) checks.
    let r = rl.ctl(&["instance", "health", "hc", "h2", "unhealthy"]);
    assert!(r.ok(), "[{tag}] kdns-ctl instance health:\n{}", r.both());
    let a = rl.dig(&["hc.kdns", "A"]);
    assert_eq!(addr_set(&a), set_of(&[HC1]), "[{tag}] h2 forced unhealthy must leave the answers at once\n{}", a.text);
    assert_eq!(health_of(&rl, "h2")["health"], "forced-down");
    let r = rl.ctl(&["instance", "health", "hc", "h2", "auto"]);
    assert!(r.ok(), "[{tag}] kdns-ctl instance health auto:\n{}", r.both());
    let back = wait_hc(&rl, &[HC1, HC2], CHECK_WITHIN, "h2 back to its checks (auto)");
    println!("[{tag}] forced-down h2 left at once; back {:.0} ms after 'auto'", back.as_secs_f64() * 1e3);

    // h1's listener stops: it leaves (after interval x fall, ~0.4 s).
    drop(l1);
    let down = wait_hc(&rl, &[HC2], CHECK_WITHIN, "h1 gone after its listener stopped");
    println!("[{tag}] h1 left {:.0} ms after its listener was killed (interval 200 ms x fall 2)", down.as_secs_f64() * 1e3);
    let log = rl.lab.kdns.plain_log();
    assert!(
        log.lines().any(|l| l.contains("instance h1") && l.contains("is down")),
        "[{tag}] the log should say that instance h1 is down:\n{log}"
    );
    drop(l2);
}

both_io!(health_scenario => health_checks_rise_fall_and_forced_state_udp, health_checks_rise_fall_and_forced_state_xdp);

// ---------------------------------------------------------------------------
// 4. Runtime changes, restart, bad records file
// ---------------------------------------------------------------------------

/// Runs a kdns-ctl change with `--json`: every worker acknowledged it;
/// returns `propagated_ms`.
fn change(rl: &RecordsLab, args: &[&str]) -> (f64, Value) {
    let v = rl.ctl_json(args);
    assert_eq!(v["workers_acked"], v["workers"], "[{}] kdns-ctl {args:?}: not every worker acknowledged:\n{v:#}", rl.io.name());
    let ms = v["propagated_ms"].as_f64().unwrap_or_else(|| panic!("no propagated_ms in:\n{v:#}"));
    (ms, v)
}

/// How long a change of the records file may take to be read (it is
/// polled every second).
const FILE_WITHIN: Duration = Duration::from_secs(10);

fn runtime_scenario(io: Io) {
    let tag = io.name();
    let mut rl = RecordsLab::start(io, RECORDS, &[]);

    let (ms_svc, _) = change(&rl, &["service", "add", "api", "--mode", "all", "--port", "grpc/tcp/9000"]);
    let (ms_i1, v) = change(&rl, &["instance", "add", "api", "a1", "10.70.0.1", "fd70::1"]);
    assert_eq!(v["number"], 1, "[{tag}] first instance of api:\n{v:#}");
    let (ms_i2, _) = change(&rl, &["instance", "add", "api", "a2", "10.70.0.2"]);
    let (ms_rec, _) = change(&rl, &["records", "add", "rt.kdns", "A", "10.5.0.9", "--ttl", "30"]);
    // An instance added to a service of the records file.
    let (ms_web, v) = change(&rl, &["instance", "add", "web", "c4", "10.60.0.4"]);
    assert_eq!(v["number"], 4, "[{tag}] runtime instance appended to the file's web:\n{v:#}");
    println!(
        "[{tag}] propagated_ms: service add {ms_svc}, instance add {ms_i1} / {ms_i2}, records add {ms_rec}, instance add (file service) {ms_web}"
    );
    // The human form says the same.
    let r = rl.ctl(&["records", "add", "rt2.kdns", "TXT", "hello"]);
    assert!(r.ok() && r.stdout.contains("in every worker after"), "[{tag}] kdns-ctl records add:\n{}", r.both());
    println!("[{tag}] kdns-ctl: {}", r.stdout.trim());

    let check_runtime = |rl: &RecordsLab, when: &str| {
        let c = &rl.lab.client;
        let ans = dig_many(
            c,
            &[&rl.at()],
            &[
                ("api.kdns", "A"),
                ("api-1.kdns", "AAAA"),
                ("rt.kdns", "A"),
                ("rt2.kdns", "TXT"),
                ("web-4.kdns", "A"),
                ("_grpc._tcp.api.kdns", "SRV"),
            ],
        );
        assert_eq!(addr_set(&ans[0]), set_of(&["10.70.0.1", "10.70.0.2"]), "[{tag}] {when}: api.kdns\n{}", ans[0].text);
        assert_eq!(addrs(&ans[1]), vec!["fd70::1"], "[{tag}] {when}: api-1.kdns AAAA\n{}", ans[1].text);
        assert_eq!(ans[2].answers, vec!["rt.kdns. 30 IN A 10.5.0.9"], "[{tag}] {when}: rt.kdns\n{}", ans[2].text);
        assert_eq!(ans[3].rdata("TXT"), vec!["\"hello\""], "[{tag}] {when}: rt2.kdns TXT\n{}", ans[3].text);
        assert_eq!(addrs(&ans[4]), vec!["10.60.0.4"], "[{tag}] {when}: web-4.kdns\n{}", ans[4].text);
        let srv: BTreeSet<String> = ans[5].rdata("SRV").into_iter().collect();
        assert_eq!(srv, set_of(&["0 10 9000 api-1.kdns.", "0 10 9000 api-2.kdns."]), "[{tag}] {when}: SRV of api\n{}", ans[5].text);
    };
    check_runtime(&rl, "right after the changes");

    // Restart with the same state file: still served.
    assert!(rl.state_file.is_file(), "[{tag}] no state file at {} after runtime changes", rl.state_file.display());
    rl.restart_kdns();
    check_runtime(&rl, "after a restart");
    let list = rl.ctl_json(&["records", "list"]);
    let api = list["services"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "api")).cloned().unwrap_or_default();
    assert_eq!(api["source"], "runtime", "[{tag}] api after restart:\n{list:#}");

    // A corrupt records file: logged with file and line, old records kept.
    let bad = RECORDS.replacen("mode = \"all\"", "mode = \"all", 1);
    let bad_line = bad.lines().position(|l| l == "mode = \"all").expect("broken line") + 1;
    rl.write_records(&bad);
    let path = rl.records_file.display().to_string();
    let logged = poll_until(FILE_WITHIN, Duration::from_millis(100), || {
        rl.lab.kdns.plain_log().lines().find(|l| l.contains(&format!("records file {path}")) && l.contains("keeping")).map(str::to_string)
    })
    .unwrap_or_else(|| panic!("[{tag}] no log line about the bad records file within {FILE_WITHIN:?}:\n{}", rl.lab.kdns.plain_log()));
    println!("[{tag}] bad file logged: {}", logged.trim());
    assert!(logged.contains(&format!("line {bad_line}")), "[{tag}] the log line should name line {bad_line}: {logged}");
    let a = rl.dig(&["web.kdns", "A"]);
    assert_eq!(addr_set(&a), set_of(&["10.60.0.1", "10.60.0.2", "10.60.0.3", "10.60.0.4"]), "[{tag}] old records kept\n{}", a.text);
    let a = rl.dig(&["db.kdns", "A"]);
    assert_eq!(addrs(&a), vec!["10.5.0.1"], "[{tag}] old static records kept\n{}", a.text);
    check_runtime(&rl, "with a bad records file");

    // Fixed, with a new record: served (the file is polled every second).
    let fixed = format!("{RECORDS}\n[[record]]\nname = \"fresh.kdns\"\ntype = \"A\"\ndata = \"10.5.0.77\"\n");
    let t0 = Instant::now();
    rl.write_records(&fixed);
    let took = poll_until(FILE_WITHIN, Duration::from_millis(50), || {
        let a = rl.dig(&["fresh.kdns", "A"]);
        (addrs(&a) == vec!["10.5.0.77"]).then(|| t0.elapsed())
    })
    .unwrap_or_else(|| panic!("[{tag}] fresh.kdns not served {FILE_WITHIN:?} after the file was fixed:\n{}", rl.lab.kdns.plain_log()));
    println!("[{tag}] fixed records file served after {:.0} ms (polled every 1 s)", took.as_secs_f64() * 1e3);
    check_runtime(&rl, "after the file was fixed");
}

both_io!(runtime_scenario => runtime_changes_restart_and_bad_records_file_udp, runtime_changes_restart_and_bad_records_file_xdp);

// ---------------------------------------------------------------------------
// 5. /metrics
// ---------------------------------------------------------------------------

const METRICS: &str = "127.0.0.1:9153";

fn metrics_scenario(io: Io) {
    for t in ["curl", "promtool"] {
        assert!(find_tool(t).is_some(), "{t} is needed (Debian packages curl, prometheus)");
    }
    let tag = io.name();
    let rl = RecordsLab::start(io, RECORDS, &["--metrics".into(), METRICS.into()]);
    let c = &rl.lab.client;
    let mut q: Vec<(&str, &str)> = vec![("web.kdns", "A"); 10];
    q.extend([("nope.kdns", "A"), ("m1.test", "A"), ("m1.test", "A"), ("www.kdns", "A")]);
    dig_many(c, &[&rl.at()], &q);
    let url = format!("http://{METRICS}/metrics");
    let r = rl.lab.server.exec(&["curl", "-sS", "--max-time", "5", "-D", "-", &url], Duration::from_secs(10));
    assert!(r.ok(), "[{tag}] curl {url}:\n{}", r.both());
    let (head, body) = r.stdout.split_once("\r\n\r\n").unwrap_or(("", &r.stdout));
    assert!(head.starts_with("HTTP/1.1 200"), "[{tag}] /metrics status:\n{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "[{tag}] /metrics content type:\n{head}");
    let file = rl.dir.path().join("metrics.txt");
    std::fs::write(&file, body).expect("write metrics");
    let check = run_limited(&["sh", "-c", &format!("promtool check metrics < '{}'", file.display())], Duration::from_secs(20));
    println!("[{tag}] promtool check metrics: exit {:?} {}{}", check.status.code(), check.stdout.trim(), check.stderr.trim());
    assert!(check.ok(), "[{tag}] promtool check metrics failed:\n{}\n--- metrics ---\n{body}", check.both());
    let value = |name: &str| -> f64 {
        body.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("[{tag}] no sample {name} in /metrics:\n{body}"))
    };
    let local = value("kdns_local_answers_total");
    println!("[{tag}] kdns_local_answers_total {local}, kdns_cache_hits_total {}", value("kdns_cache_hits_total"));
    assert!(local >= 12.0, "[{tag}] kdns_local_answers_total = {local}, expected >= 12 after 12 local queries");
}

both_io!(metrics_scenario => metrics_pass_promtool_and_count_local_answers_udp, metrics_pass_promtool_and_count_local_answers_xdp);

// ---------------------------------------------------------------------------
// 6. The TCP control API with a bearer token
// ---------------------------------------------------------------------------

const CONTROL_PORT: u16 = 5380;

fn tcp_control_scenario(io: Io) {
    assert!(find_tool("curl").is_some(), "curl is needed (Debian package curl)");
    let tag = io.name();
    let dir = temp_dir("ctltcp");
    let token = format!("tok-{}-{}", std::process::id(), next_id());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).expect("token file");
    let wrong_file = dir.path().join("wrong");
    std::fs::write(&wrong_file, "not-the-token\n").expect("token file");
    let conf = dir.path().join("kdns.toml");
    std::fs::write(
        &conf,
        format!("[records]\ncontrol_tcp = \"0.0.0.0:{CONTROL_PORT}\"\ncontrol_token_file = \"{}\"\n", token_file.display()),
    )
    .expect("config");
    let rl = RecordsLab::start(io, RECORDS, &["--config".into(), conf.display().to_string()]);
    let url = format!("http://{}:{CONTROL_PORT}", rl.lab.link.server_v4());
    let c = &rl.lab.client;
    let ctl = kdns_ctl_bin();
    let ctl = ctl.to_str().expect("utf-8 path");
    let tf = token_file.display().to_string();
    let wf = wrong_file.display().to_string();

    // From the client namespace, over TCP, with the token.
    let r = c.exec(&[ctl, "--url", &url, "--token-file", &tf, "records", "list"], Duration::from_secs(10));
    assert!(r.ok(), "[{tag}] kdns-ctl --url --token-file records list:\n{}", r.both());
    assert!(r.stdout.contains("web") && r.stdout.contains("www.kdns"), "[{tag}] records list over TCP:\n{}", r.stdout);
    let r = c.exec(&[ctl, "--url", &url, "--token-file", &tf, "records", "add", "tcp.kdns", "A", "10.5.0.42"], Duration::from_secs(10));
    assert!(r.ok(), "[{tag}] a change over the TCP API:\n{}", r.both());
    assert_eq!(rl.dig(&["tcp.kdns", "A"]).rdata("A"), vec!["10.5.0.42"], "[{tag}] the change over TCP is served");

    // Without the token, or with a wrong one: 401.
    let r = c.exec(&[ctl, "--url", &url, "records", "list"], Duration::from_secs(10));
    assert_eq!(r.status.code(), Some(1), "[{tag}] kdns-ctl without a token should fail:\n{}", r.both());
    assert!(r.stderr.contains("401"), "[{tag}] kdns-ctl without a token should report 401:\n{}", r.both());
    println!("[{tag}] without token: {}", r.stderr.trim());
    let r = c.exec(&[ctl, "--url", &url, "--token-file", &wf, "records", "list"], Duration::from_secs(10));
    assert!(!r.ok() && r.stderr.contains("401"), "[{tag}] kdns-ctl with a wrong token should report 401:\n{}", r.both());
    let r = c.exec(&["curl", "-sS", "-i", "--max-time", "5", &format!("{url}/v1/records")], Duration::from_secs(10));
    assert!(r.stdout.starts_with("HTTP/1.1 401"), "[{tag}] curl without a token:\n{}", r.both());
    assert!(r.stdout.contains("WWW-Authenticate: Bearer"), "[{tag}] 401 without WWW-Authenticate:\n{}", r.both());
    let auth = format!("Authorization: Bearer {token}");
    let r = c.exec(&["curl", "-sS", "-i", "--max-time", "5", "-H", &auth, &format!("{url}/v1/records")], Duration::from_secs(10));
    assert!(r.stdout.starts_with("HTTP/1.1 200"), "[{tag}] curl with the token:\n{}", r.both());
    drop(rl);
}

both_io!(tcp_control_scenario => tcp_control_api_needs_the_token_udp, tcp_control_api_needs_the_token_xdp);

// ---------------------------------------------------------------------------
// 7. The apex of a local domain and empty non-terminals exist
// ---------------------------------------------------------------------------

/// The apex of a local domain (`kdns.`, the owner of the SOA kdns hands
/// out) and the empty non-terminal `_tcp.web.kdns.` (the parent of the SRV
/// name `_http._tcp.web.kdns.`) are names that exist: they must get
/// NOERROR (the SOA itself for `kdns SOA`, NODATA for other types), never
/// NXDOMAIN (RFC 1034 4.3.2, RFC 8020: NXDOMAIN says that nothing exists
/// at or below the name, so a resolver applying RFC 8020 to kdns's answers
/// would stop resolving every local name after asking the apex; tools
/// that look up the zone's SOA are told the zone does not exist).
fn apex_scenario(io: Io) {
    let tag = io.name();
    let rl = RecordsLab::start(io, RECORDS, &[]);
    let queries = [("kdns", "SOA"), ("kdns", "A"), ("svc.cluster.local", "SOA"), ("_tcp.web.kdns", "SRV")];
    let ans = dig_many(&rl.lab.client, &[&rl.at()], &queries);
    let mut wrong = Vec::new();
    for ((name, t), a) in queries.iter().zip(&ans) {
        let zone = if name.ends_with("cluster.local") { "svc.cluster.local." } else { "kdns." };
        let ok = a.status == "NOERROR"
            && a.has_flag("aa")
            && if *t == "SOA" { a.rdata("SOA").len() == 1 } else { a.answers.is_empty() && has_soa(a, zone) };
        println!("[{tag}] {name} {t}: {} answers {:?} authority {:?}", a.status, a.answers, a.authority);
        if !ok {
            wrong.push(format!(
                "  dig {name} {t}: {} (answer {:?}, authority {:?}); expected NOERROR, aa, {}",
                a.status,
                a.answers,
                a.authority,
                if *t == "SOA" { "the SOA in the answer" } else { "no answer and the SOA in authority (NODATA)" }
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "[{tag}] names that exist (the apex, empty non-terminals) must be NODATA, not NXDOMAIN (RFC 8020):\n{}",
        wrong.join("\n")
    );
}

both_io!(apex_scenario => apex_and_empty_non_terminals_are_nodata_not_nxdomain_udp, apex_and_empty_non_terminals_are_nodata_not_nxdomain_xdp);
