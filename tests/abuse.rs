//! One misbehaving client must not take DNS down: the namespace lab with a
//! zone whose authoritative server never answers (a UDP socket that reads
//! and discards), two Unbound backends delegating to it, and two client
//! addresses: one floods names of the dead zone, the other asks ordinary
//! names. kdns runs with `--io xdp`. See tests/README.md.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;

/// Where the dead zone's "authoritative server" listens (server namespace).
const BLACKHOLE: &str = "127.0.0.9:53";

/// Unbound delegates `blackhole.test.` to the black hole (the lab's
/// `test.` redirect would otherwise answer it).
fn blackhole_conf() -> String {
    "    do-not-query-localhost: no\n    local-zone: \"blackhole.test.\" transparent\nstub-zone:\n    name: \"blackhole.test.\"\n    stub-addr: 127.0.0.9@53\n"
        .to_string()
}

/// A UDP socket in the server namespace that reads every query and
/// answers none, until dropped.
struct BlackHole {
    stop: Arc<AtomicBool>,
    seen: Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BlackHole {
    fn start(ns: &Netns) -> BlackHole {
        let sock = ns.udp_socket(BLACKHOLE.parse().expect("addr"));
        sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (st, se) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                if sock.recv_from(&mut buf).is_ok() {
                    se.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        BlackHole { stop, seen, thread: Some(thread) }
    }

    fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lab() -> (Lab, BlackHole, String) {
    let lab = Lab::start(LabOpts { backends: 2, unbound_extra: blackhole_conf(), ..LabOpts::with_args(&["--io", "xdp"]) });
    let hole = BlackHole::start(&lab.server);
    let flooder = add_flooder(&lab);
    (lab, hole, flooder)
}

/// The flooder: a second address on the client's interface, inside
/// --allow (10.53.X.0/25) but another client.
fn add_flooder(lab: &Lab) -> String {
    let flooder = format!("10.53.{}.3", lab.link.x);
    lab.client.exec_ok(&["ip", "addr", "add", &format!("{flooder}/24"), "dev", &lab.link.client_if]);
    flooder
}

/// dnsperf in the client namespace from the address `from` to kdns, with
/// the queries in `queries` and `load` (duration, rate, outstanding,
/// threads).
fn dnsperf(lab: &Lab, from: &str, queries: &Path, load: &[&str]) -> Dnsperf {
    let mut args = vec!["-a", from];
    args.extend_from_slice(load);
    Dnsperf::spawn(&lab.client, &lab.link.server_v4(), queries, &args)
}

/// The scenario: one client floods never-answered names (random
/// names of the dead zone, 1,500 qps) while another asks ordinary names
/// that are cache misses Unbound answers at once (500 qps). The neighbour
/// is answered in full, no backend is taken down, and the flooder gets
/// fast SERVFAILs once it holds its share of the pending table.
#[test]
fn a_flood_of_never_answered_names_does_not_starve_a_neighbour() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let (lab, hole, flooder) = lab();
    let flood_q = lab.file("flood.txt");
    write_queries(&flood_q, 0, 30_000, "blackhole.test");
    let ordinary_q = lab.file("ordinary.txt");
    write_queries(&ordinary_q, 0, 10_000, "ok.test");
    let s0 = lab.stats();
    let mut flood = dnsperf(&lab, &flooder, &flood_q, &["-l", "10", "-Q", "1500", "-q", "5000", "-t", "4"]);
    // Let the flood fill the flooder's share first.
    std::thread::sleep(Duration::from_secs(2));
    let mut ordinary = dnsperf(&lab, &lab.link.client_v4(), &ordinary_q, &["-l", "6", "-Q", "500", "-q", "200", "-t", "3"]);
    let o = ordinary.wait(Duration::from_secs(30));
    let f = flood.wait(Duration::from_secs(40));
    let s1 = lab.stats();
    let backends = lab.backends();
    let d = |k: &str| total(&s1, k) - total(&s0, k);
    eprintln!("ordinary: {}\nflood: {}", o.text, f.text);
    eprintln!(
        "kdns: limited_pending {} limited_rate {} slow_tries {} retried {} coalesced {} gave_up {}; black hole saw {}",
        d("limited_pending"),
        d("limited_rate"),
        d("slow_tries"),
        d("retried"),
        d("coalesced"),
        d("gave_up"),
        hole.seen()
    );
    if std::thread::panicking() {
        lab.dump_logs();
    }
    // The neighbour: everything answered, NOERROR.
    assert!(o.sent >= 2_000, "the ordinary client sent only {} queries:\n{}", o.sent, o.text);
    assert_eq!(o.lost, 0, "the ordinary client lost queries: {}\n{}", o.lost_line, o.text);
    assert_eq!(o.rcode_count("NOERROR"), o.completed, "the ordinary client got errors: {:?}", o.rcodes());
    // The flood really reached the dead zone, and hit its share.
    assert!(hole.seen() > 100, "the black hole saw {} queries: the scenario did not happen", hole.seen());
    assert!(d("limited_pending") > 1_000, "the flooder was not limited: {}", d("limited_pending"));
    assert!(f.rcode_count("SERVFAIL") > 1_000, "the flooder's fast SERVFAILs: {:?}", f.rcodes());
    // Slow names, not dead backends: no backend went down.
    for b in backends.as_array().expect("backends") {
        assert_eq!(b["went_down"], 0, "a backend was taken down by a slow zone: {b}");
        assert_eq!(b["state"], "up", "{b}");
    }
    assert!(d("slow_tries") > 0, "no try was classed slow");
    assert_eq!(total_drops(&s1) - total_drops(&s0), 0, "drops: {}", s1["totals"]["drops"]);
}

/// The flooder repeats one never-answered name (100 qps for 2 s, within
/// its pending share: copies waiting hold slots too): the copies wait on
/// the query in flight instead of going upstream, and all are answered
/// when it ends.
#[test]
fn identical_questions_go_upstream_once() {
    require_root_and_tools();
    let _slot = shared_slot();
    let (lab, hole, flooder) = lab();
    let q = lab.file("same.txt");
    std::fs::write(&q, "same.blackhole.test A\n").expect("query file");
    let s0 = lab.stats();
    let mut perf = dnsperf(&lab, &flooder, &q, &["-l", "2", "-Q", "100", "-q", "1000", "-t", "5"]);
    let r = perf.wait(Duration::from_secs(30));
    let s1 = lab.stats();
    let d = |k: &str| total(&s1, k) - total(&s0, k);
    eprintln!("{}\ncoalesced {} forwarded {} black hole saw {}", r.text, d("coalesced"), d("forwarded"), hole.seen());
    assert!(r.sent >= 150, "{}", r.text);
    assert!(d("coalesced") >= r.sent * 9 / 10, "coalesced {} of {} sent", d("coalesced"), r.sent);
    assert!(d("forwarded") <= 5, "forwarded {}", d("forwarded"));
    // Every copy got the SERVFAIL of the one that was asked (Unbound's or
    // kdns's at the deadline), none was lost.
    assert_eq!(r.lost, 0, "{}", r.text);
    assert_eq!(r.rcode_count("SERVFAIL"), r.completed, "{:?}", r.rcodes());
}

/// A backend that dies is still taken out, even while a slow zone keeps
/// some tries waiting: silence is not slowness.
#[test]
fn a_dead_backend_is_still_taken_down_under_a_slow_zone() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let (mut lab, _hole, flooder) = lab();
    let flood_q = lab.file("flood.txt");
    write_queries(&flood_q, 0, 5_000, "blackhole.test");
    let ordinary_q = lab.file("ordinary.txt");
    write_queries(&ordinary_q, 0, 10_000, "ok.test");
    let mut flood = dnsperf(&lab, &flooder, &flood_q, &["-l", "6", "-Q", "300", "-q", "5000", "-t", "4"]);
    let mut ordinary = dnsperf(&lab, &lab.link.client_v4(), &ordinary_q, &["-l", "6", "-Q", "500", "-q", "200", "-t", "3"]);
    std::thread::sleep(Duration::from_secs(2));
    let dead: SocketAddr = lab.unbounds[0].addr;
    lab.unbounds[0].kill();
    let down = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let b = lab.backends();
        (backend(&b, &dead)["went_down"].as_u64().unwrap_or(0) > 0).then_some(())
    });
    let o = ordinary.wait(Duration::from_secs(30));
    let _ = flood.wait(Duration::from_secs(30));
    assert!(down.is_some(), "the killed backend was not taken down within 5 s: {}", lab.backends());
    let live = backend(&lab.backends(), &lab.unbounds[1].addr).clone();
    assert_eq!(live["went_down"], 0, "the live backend went down: {live}");
    assert_eq!(o.lost, 0, "{}", o.text);
}

/// `limits.xdp_client_qps`: the XDP program drops a client's queries over
/// its rate before any copy, cache hits included; another client is not
/// touched.
#[test]
fn the_xdp_program_drops_a_client_over_its_query_rate() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts {
        config: Some("[limits]\nxdp_client_qps = 100\nxdp_client_burst = 100\n".into()),
        ..LabOpts::with_args(&["--io", "xdp"])
    });
    let flooder = add_flooder(&lab);
    let at = lab.at4();
    // Cached first, so the flood is of hits.
    assert_eq!(dig(&lab.client, &[&at, "www.static.test", "A"]).status, "NOERROR");
    let q = lab.file("hit.txt");
    std::fs::write(&q, "www.static.test A\n").expect("query file");
    let dropped = |s: &serde_json::Value| -> u64 {
        s["xdp"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|i| i["queues"].as_array().into_iter().flatten())
            .map(|q| q["dropped"].as_u64().unwrap_or(0))
            .sum()
    };
    let s0 = lab.stats();
    assert_eq!(s0["limits"]["xdp_client_qps"], 100, "{}", s0["limits"]);
    let mut perf = dnsperf(&lab, &flooder, &q, &["-l", "3", "-Q", "2000", "-q", "3000", "-t", "1"]);
    // The neighbour, during the flood.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..5 {
        let a = dig(&lab.client, &[&at, "-b", &lab.link.client_v4(), "www.static.test", "A"]);
        assert_eq!(a.status, "NOERROR", "the neighbour is answered during the flood:\n{}", a.text);
    }
    let r = perf.wait(Duration::from_secs(30));
    let s1 = lab.stats();
    let drops = dropped(&s1) - dropped(&s0);
    let queries = kind_sum(&s1, "xdp", "queries") - kind_sum(&s0, "xdp", "queries");
    eprintln!("{}\nXDP dropped {drops}, the AF_XDP worker saw {queries} queries", r.text);
    assert!(r.sent >= 1_500, "{}", r.text);
    // About 100 a second (+ the burst of 100) reach kdns; the rest is dropped
    // in the program (generous bounds: the flood is 2,000 a second).
    assert!(r.completed <= 1_000, "the flooder got {} answers over its rate:\n{}", r.completed, r.text);
    assert!(drops >= r.sent - r.completed - 50, "XDP dropped {drops} of {} unanswered", r.sent - r.completed);
    assert!(queries < 1_000, "the AF_XDP worker saw {queries} queries: the drops happened after the copy");
}
