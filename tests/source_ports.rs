//! Forwarded queries leave from random source ports that keep changing,
//! and an answer on the wrong one is dropped and counted.
//!
//! `forwarded_queries_leave_from_many_ports_and_a_wrong_port_answer_is_dropped`
//! puts a small responder of its own in front as kdns's only backend (a
//! UDP socket in the server namespace, answering NODATA): it sees the
//! source port of every forwarded query, and for one name it first sends
//! the answer to another of kdns's ports, as a spoofer who got the ID right
//! but the port wrong would. `answers_survive_frequent_rotation` runs
//! dnsperf against real Unbound while every slot changes its port every 5
//! queries. Needs root; see tests/README.md.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// The responder's address in the server namespace.
const FAKE: &str = "127.0.0.1:5399";
/// The name whose answer is first sent to a wrong port.
const SPOOFED: &[u8] = b"\x08spoof-me\x04test\x00";

/// What the responder saw: the source port of each query, in order.
static SEEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
static STOP: AtomicBool = AtomicBool::new(false);
/// Answers the responder sent to a wrong port.
static SPOOFS: AtomicUsize = AtomicUsize::new(0);

/// `totals.io.<key>` / `totals.drops.<reason>`.
fn io(stats: &Value, key: &str) -> u64 {
    stats["totals"]["io"][key].as_u64().unwrap_or_else(|| panic!("totals.io.{key} missing in:\n{stats:#}"))
}
fn drops(stats: &Value, reason: &str) -> u64 {
    stats["totals"]["drops"][reason].as_u64().unwrap_or_else(|| panic!("totals.drops.{reason} missing in:\n{stats:#}"))
}

/// Started before kdns (it is kdns's only backend and must answer its
/// readiness query): answers every query with NODATA (the question copied
/// as sent, so 0x20 holds), from the address kdns asked.
fn start_responder(server: &Netns, _link: &Link) {
    let sock: UdpSocket = server.udp_socket(FAKE.parse().expect("addr"));
    sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !STOP.load(Ordering::Relaxed) {
            let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
            if n < 12 {
                continue;
            }
            // kdns randomises the case of forwarded names (0x20).
            let spoof = buf[12..n].get(..SPOOFED.len()).is_some_and(|q| q.eq_ignore_ascii_case(SPOOFED));
            let other = {
                let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
                let other = seen.iter().rev().copied().find(|&p| p != from.port());
                seen.push(from.port());
                other
            };
            let mut ans = buf[..n].to_vec();
            ans[2] |= 0x80; // QR
            ans[3] = 0x80; // RA, NOERROR
            if spoof {
                if let Some(p) = other {
                    if sock.send_to(&ans, SocketAddr::new(from.ip(), p)).is_ok() {
                        SPOOFS.fetch_add(1, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            let _ = sock.send_to(&ans, from);
        }
    });
}

/// One UDP worker (so every UDP query's forward comes from the same pool
/// of 16 ports), rotation off: 300 distinct names leave from all 16 ports,
/// consecutive queries mostly from different ones; the spoofed answer on a
/// wrong port is dropped (`drops.answer_wrong_port`) and the client still
/// gets the real one.
#[test]
fn forwarded_queries_leave_from_many_ports_and_a_wrong_port_answer_is_dropped() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts {
        backends: 0,
        before_kdns: Some(start_responder),
        config: Some("[upstream]\nsource_ports = 16\nsource_port_rotate_after = 0\nsource_port_rotate_ms = 0\n".into()),
        ..LabOpts::with_args(&["--workers", "1", "--backend", FAKE])
    });
    let s0 = lab.stats();
    let queries = lab.file("q.txt");
    write_queries(&queries, 0, 300, "test");
    let start = SEEN.lock().unwrap_or_else(|e| e.into_inner()).len();
    let r =
        Dnsperf::spawn(&lab.client, &lab.link.server_v4(), &queries, &["-n", "1", "-Q", "500", "-t", "5"]).wait(Duration::from_secs(30));
    assert_eq!(r.lost, 0, "dnsperf lost queries:\n{}", r.text);
    let seen: Vec<u16> = SEEN.lock().unwrap_or_else(|e| e.into_inner())[start..].to_vec();
    assert!(seen.len() >= 300, "the responder saw {} queries, expected 300", seen.len());
    let distinct: HashSet<u16> = seen.iter().copied().collect();
    let repeats = seen.windows(2).filter(|w| w[0] == w[1]).count();
    eprintln!("{} forwarded queries from {} source ports; {repeats} consecutive repeats", seen.len(), distinct.len());
    assert_eq!(distinct.len(), 16, "expected the worker's 16 source ports: {distinct:?}");
    // One in 16 by chance; a fixed port would repeat every time.
    assert!(repeats * 4 < seen.len(), "{repeats} of {} consecutive queries left from the same port", seen.len());
    let s1 = lab.stats();
    assert_eq!(io(&s1, "upstream_rotations"), 0, "{s1:#}");
    assert_eq!(drops(&s1, "answer_wrong_port"), drops(&s0, "answer_wrong_port"));

    // The spoofed answer: right ID, right source, wrong port.
    let a = dig(&lab.client, &[&lab.at4(), "spoof-me.test", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    // One per spoofed answer (a retry of the query, if the real answer came
    // after the try's timeout, is spoofed again).
    let spoofs = SPOOFS.load(Ordering::SeqCst) as u64;
    assert!(spoofs >= 1);
    let s2 = poll_until(Duration::from_secs(5), Duration::from_millis(100), || {
        let s = lab.stats();
        (drops(&s, "answer_wrong_port") - drops(&s1, "answer_wrong_port") == spoofs).then_some(s)
    })
    .unwrap_or_else(|| panic!("{spoofs} answers sent to a wrong port, drops.answer_wrong_port:\n{:#}", lab.stats()["totals"]["drops"]));
    eprintln!(
        "{spoofs} answer(s) on a wrong port, {} dropped as answer_wrong_port",
        drops(&s2, "answer_wrong_port") - drops(&s1, "answer_wrong_port")
    );
    STOP.store(true, Ordering::Relaxed);
}

/// Every slot gets a new port every 5 queries (and every 200 ms) while
/// dnsperf sends 5,000 distinct names to Unbound, once through two UDP
/// socket workers (`--io udp`) and once through the AF_XDP worker: nothing
/// is lost, rotations happen by the hundred, no answer is taken for a
/// wrong port, and the sockets open stay bounded.
#[test]
fn answers_survive_frequent_rotation() {
    require_root_and_tools();
    let _slot = shared_slot();
    for io_mode in ["udp", "auto"] {
        let lab = Lab::start(LabOpts {
            config: Some("[upstream]\nsource_ports = 8\nsource_port_rotate_after = 5\nsource_port_rotate_ms = 200\n".into()),
            ..LabOpts::with_args(&["--workers", "2", "--io", io_mode])
        });
        let s0 = lab.stats();
        let queries = lab.file("q.txt");
        write_queries(&queries, 0, 5_000, "test");
        let r = Dnsperf::spawn(&lab.client, &lab.link.server_v4(), &queries, &["-n", "1", "-Q", "1000", "-c", "4", "-t", "5"])
            .wait(Duration::from_secs(60));
        eprintln!("--io {io_mode}: dnsperf: {}", r.lost_line);
        assert_eq!(r.lost, 0, "--io {io_mode}: dnsperf lost queries across rotations:\n{}", r.text);
        assert_eq!(r.completed, r.sent, "{}", r.text);
        let s = lab.stats();
        let rotations = io(&s, "upstream_rotations") - io(&s0, "upstream_rotations");
        eprintln!(
            "--io {io_mode}: rotations {rotations}, deferred {}, sockets opened {}, open now {}",
            io(&s, "upstream_rotations_deferred"),
            io(&s, "upstream_sockets_opened"),
            io(&s, "upstream_sockets_open")
        );
        assert!(rotations >= 100, "--io {io_mode}: only {rotations} rotations:\n{s:#}");
        assert_eq!(drops(&s, "answer_wrong_port"), 0, "--io {io_mode}: {s:#}");
        assert_eq!(s["totals"]["replies_by_rcode"]["SERVFAIL"].as_u64().unwrap_or(0), 0, "--io {io_mode}: {s:#}");
        // Workers x 8 slots x (1 + 4 old) at most.
        let workers = s["workers"].as_array().map_or(0, Vec::len) as u64;
        assert!(io(&s, "upstream_sockets_open") <= workers * 8 * 5, "--io {io_mode}: {s:#}");
        assert_eq!(io(&s, "upstream_socket_errors"), 0, "--io {io_mode}: {s:#}");
    }
}
