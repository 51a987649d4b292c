//! The in-kernel tier on a real veth pair: kdns `--io xdp` with the tier
//! on, Unbound behind it, queries from a UDP socket in the client
//! namespace. For each kind of query (plain, 0x20 spelling, EDNS sizes,
//! DO, CD, an EDNS cookie, AAAA, NXDOMAIN, IPv6) the last reply the AF_XDP
//! worker sends before the entry is copied into the kernel and the first
//! reply the XDP program sends are the same bytes (TTLs within the second
//! that may pass between them); the program's `answered` counter says which
//! tier answered. Then coherence: an entry past its TTL is never answered
//! by the kernel, a cache flush takes the copies out at once, and with
//! `xdp.answer_tier = false` nothing is answered in the kernel.
//!
//! Needs root, the daemon tests' tools and `cargo build --workspace`.

#![forbid(unsafe_code)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use common::*;
use kdns_core::wire::{encode_name, flags, write_query, Class, Message, OptSpec, Rtype};
use serde_json::Value;

/// A record that expires two seconds after it is cached.
const SHORT: &str = "short.static.test.";

fn tier_lab(tier: bool) -> Lab {
    tier_lab_from(tier_opts(tier))
}

/// The lab of `opts` with kdns's XDP program on the client end.
fn tier_lab_from(opts: LabOpts) -> Lab {
    let lab = Lab::start(opts);
    pass_all_xdp(&lab.client, &lab.link.client_if);
    lab
}

/// [`tier_lab`] without the client end's XDP program.
fn tier_lab_bare(tier: bool) -> Lab {
    Lab::start(tier_opts(tier))
}

/// kdns `--io xdp` with the tier on or off, and Unbound's extra records.
fn tier_opts(tier: bool) -> LabOpts {
    let mut opts = LabOpts::with_args(&["--io", "xdp"]);
    opts.config = Some(format!("[xdp]\nanswer_tier = {tier}\n"));
    // The SOA makes Unbound's NXDOMAIN for static.test cacheable (RFC 2308).
    opts.unbound_extra = format!(
        "    local-data: \"{SHORT} 2 IN A 192.0.2.77\"\n    local-data: \"static.test. 3600 IN SOA ns.static.test. h.static.test. 1 3600 600 86400 60\"\n"
    );
    opts
}

/// A query for `name` with RD set and an OPT when `edns` gives (size, DO).
fn query(id: u16, name: &str, qtype: Rtype, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut wire = [0u8; 256];
    let n = encode_name(name, &mut wire).unwrap();
    let mut out = [0u8; 512];
    let opt = edns.map(|(udp_size, dnssec_ok)| OptSpec { udp_size, ext_rcode: 0, dnssec_ok });
    let len = write_query(&mut out, id, flags::RD, &wire[..n], qtype, Class::IN, opt).unwrap();
    out[..len].to_vec()
}

/// A UDP socket in the client namespace and kdns's IPv4 address.
fn client_v4(lab: &Lab) -> (UdpSocket, SocketAddr) {
    let to = format!("{}:53", lab.link.server_v4()).parse().unwrap();
    (lab.client.udp_socket("0.0.0.0:0".parse().unwrap()), to)
}

/// `totals.io.<key>` of a stats document (summed over workers).
fn io_total(st: &Value, key: &str) -> u64 {
    st["totals"]["io"][key].as_u64().unwrap_or_else(|| panic!("totals.io.{key} missing in {:#}", st["totals"]))
}

/// Sends `q` from `sock` to `to` and returns the reply (5 s at most).
fn exchange(sock: &UdpSocket, to: SocketAddr, q: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(q, to).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        if from == to && n >= 2 && buf[..2] == q[..2] {
            return Ok(buf[..n].to_vec());
        }
    }
}

/// Asks `q` and says whether the kernel answered (its `answered` moved).
fn ask(lab: &Lab, sock: &UdpSocket, to: SocketAddr, q: &[u8]) -> (Vec<u8>, bool) {
    let before = xdp_total(&lab.stats(), "answered");
    let r = exchange(sock, to, q);
    let st = lab.stats();
    let after = xdp_total(&st, "answered");
    match r {
        Ok(r) => (r, after > before),
        Err(e) => panic!(
            "no reply from {to} ({e}); the kernel answered {} of it; xdp: {:#}\nip -s link: {}",
            after - before,
            st["xdp"],
            lab.client.exec(&["ip", "-s", "link"], Duration::from_secs(5)).both()
        ),
    }
}

/// Where the TTL fields of `msg` are.
fn ttl_offsets(msg: &[u8]) -> Vec<usize> {
    let m = Message::parse(msg).unwrap_or_else(|e| panic!("reply does not parse ({e:?}): {msg:02x?}"));
    m.sections.records(msg).filter(|r| r.rtype != Rtype::OPT).map(|r| r.ttl_offset).collect()
}

/// `a` and `b` are the same bytes but for TTLs that differ by at most 1.
fn same_reply(label: &str, a: &[u8], b: &[u8]) {
    assert_eq!(a.len(), b.len(), "{label}: lengths differ\nworker: {a:02x?}\nkernel: {b:02x?}");
    let ttls = ttl_offsets(a);
    assert_eq!(ttls, ttl_offsets(b), "{label}: records differ");
    let mut masked = (a.to_vec(), b.to_vec());
    for &t in &ttls {
        let (x, y) = (u32::from_be_bytes(a[t..t + 4].try_into().unwrap()), u32::from_be_bytes(b[t..t + 4].try_into().unwrap()));
        assert!(x.abs_diff(y) <= 1 && y <= x, "{label}: TTL {x} from the worker, {y} from the kernel");
        masked.0[t..t + 4].fill(0);
        masked.1[t..t + 4].fill(0);
    }
    assert_eq!(masked.0, masked.1, "{label}: replies differ\nworker: {a:02x?}\nkernel: {b:02x?}");
}

fn with_cd(mut q: Vec<u8>) -> Vec<u8> {
    q[3] |= 0x10;
    q
}

/// A query with an EDNS cookie option, as dig sends by default.
fn with_cookie(mut q: Vec<u8>) -> Vec<u8> {
    let n = q.len();
    // The OPT is the last 11 bytes: set RDLENGTH and append the option.
    q[n - 2..].copy_from_slice(&12u16.to_be_bytes());
    q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    q
}

/// Asks `q` until the kernel answers it (the entry is copied after a few
/// hits in the worker) and returns (last worker reply, first kernel reply).
fn until_kernel(lab: &Lab, sock: &UdpSocket, to: SocketAddr, q: &[u8], label: &str) -> (Vec<u8>, Vec<u8>) {
    let mut last_worker = None;
    for _ in 0..50 {
        let (r, kernel) = ask(lab, sock, to, q);
        if kernel {
            let w = last_worker.unwrap_or_else(|| panic!("{label}: the kernel answered the first query"));
            return (w, r);
        }
        last_worker = Some(r);
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{label}: the kernel never answered after 50 queries; stats: {:#}", lab.stats()["xdp"]);
}

#[test]
fn the_kernel_tier_answers_hot_names_with_the_workers_bytes() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = tier_lab(true);
    let (s4, to4) = client_v4(&lab);
    let to6: SocketAddr = format!("[{}]:53", lab.link.server_v6()).parse().unwrap();
    let s6 = lab.client.udp_socket("[::]:0".parse().unwrap());
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("plain", query(0x1001, "plain.t1.test", Rtype::A, None), false),
        ("0x20", query(0x1002, "MiXeD.T1.tEsT", Rtype::A, Some((1232, false))), false),
        ("edns 512", query(0x1003, "small.t1.test", Rtype::A, Some((512, false))), false),
        ("edns 4096 DO", query(0x1004, "dnssec.t1.test", Rtype::A, Some((4096, true))), false),
        ("CD", with_cd(query(0x1005, "cd.t1.test", Rtype::A, Some((1232, false)))), false),
        ("cookie", with_cookie(query(0x1006, "cookie.t1.test", Rtype::A, Some((1232, false)))), false),
        ("AAAA", query(0x1007, "www.static.test", Rtype::AAAA, Some((1232, false))), false),
        ("NXDOMAIN", query(0x1008, "nope.static.test", Rtype::A, Some((1232, false))), false),
        ("IPv6", query(0x1009, "v6.t1.test", Rtype::A, Some((1232, false))), true),
    ];
    // And generated ones: random labels in random case, IDs, EDNS sizes
    // (or none), DO, CD and family, from a seed the output names.
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    println!("generated cases from seed {seed:#x}");
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut cases = cases;
    let generated: Vec<(String, Vec<u8>, bool)> = (0..12)
        .map(|i| {
            let labels = 1 + next() % 3;
            let name: String = (0..labels)
                .map(|_| {
                    let len = 1 + next() % 20;
                    (0..len)
                        .map(|_| {
                            let c = b"abcdefghijklmnopqrstuvwxyz0123456789"[(next() % 36) as usize] as char;
                            if next() % 2 == 0 {
                                c.to_ascii_uppercase()
                            } else {
                                c
                            }
                        })
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(".");
            let edns = match next() % 3 {
                0 => None,
                1 => Some(((next() % 5000) as u16, false)),
                _ => Some(((next() % 5000) as u16, true)),
            };
            let mut q = query(next() as u16, &format!("{name}.g{i}.test"), Rtype::A, edns);
            if next() % 2 == 0 {
                q = with_cd(q);
            }
            (format!("generated {name}.g{i}.test {edns:?}"), q, next() % 2 == 0)
        })
        .collect();
    cases.extend(generated.iter().map(|(l, q, v6)| (l.as_str(), q.clone(), *v6)));
    let mut report = Vec::new();
    for (label, q, v6) in &cases {
        let (sock, to) = if *v6 { (&s6, to6) } else { (&s4, to4) };
        let (worker, kernel) = until_kernel(&lab, sock, to, q, label);
        same_reply(label, &worker, &kernel);
        // The question is the client's own bytes (0x20 kept).
        let qend = Message::parse(q).unwrap().question.name.end() + 4;
        assert_eq!(kernel[12..qend], q[12..qend], "{label}: question not as asked");
        // And it stays in the kernel.
        let (again, in_kernel) = ask(&lab, sock, to, q);
        assert!(in_kernel, "{label}: the second kernel answer came from the worker");
        same_reply(label, &kernel, &again);
        report.push(format!("{label}: {} bytes, worker == kernel", kernel.len()));
    }
    let st = lab.stats();
    let promoted = io_total(&st, "tier_promoted");
    assert!(promoted >= cases.len() as u64, "stats count {promoted} copies made for {} cases: {:#}", cases.len(), st["workers"]);
    // The question name that crossed the limit of the kernel's key (over
    // 128 bytes) is answered by the worker, every time.
    let long = format!("{}.t1.test", ["abcdefghijklmnopqrstuvwxyz0123456789"; 4].join("."));
    for _ in 0..8 {
        let (r, kernel) = ask(&lab, &s4, to4, &query(0x2000, &long, Rtype::A, None));
        assert!(!kernel, "a {}-byte name was answered in the kernel", long.len() + 2);
        assert_eq!(r[3] & 0x0f, 0, "the long name was not answered NOERROR");
    }
    println!("in-kernel tier:\n  {}\nxdp counters: {:#}", report.join("\n  "), st["xdp"]);
}

#[test]
fn the_kernel_never_answers_past_the_ttl_or_after_a_flush() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = tier_lab(true);
    let (sock, to) = client_v4(&lab);
    // A 2-second record, asked every 50 ms for 3 s once it is copied: the
    // kernel answers while the entry lives (TTL 1 or more), never past its
    // expiry (it would write TTL 0), and the worker answers again after it.
    let q = query(0x3001, SHORT, Rtype::A, None);
    let (_, kernel) = until_kernel(&lab, &sock, to, &q, "short TTL");
    let ttl_of = |r: &[u8]| ttl_offsets(r).iter().map(|&t| u32::from_be_bytes(r[t..t + 4].try_into().unwrap())).min().unwrap_or(0);
    assert!((1..=2).contains(&ttl_of(&kernel)), "first kernel answer has TTL {}", ttl_of(&kernel));
    let (mut by_kernel, mut by_worker) = (0, 0);
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let (r, in_kernel) = ask(&lab, &sock, to, &q);
        assert_eq!(r[3] & 0x0f, 0);
        if in_kernel {
            assert!(ttl_of(&r) >= 1, "the kernel answered past the entry's expiry (TTL {})", ttl_of(&r));
            by_kernel += 1;
        } else {
            by_worker += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(by_kernel > 0 && by_worker > 0, "kernel {by_kernel}, worker {by_worker}: the worker never answered past the TTL");
    // A flush takes every copy out before the next query is read.
    let q = query(0x3002, "flush.t1.test", Rtype::A, None);
    until_kernel(&lab, &sock, to, &q, "before the flush");
    let run = ctl(&lab.kdns.socket, &["cache", "flush"]);
    assert!(run.ok(), "kdns-ctl cache flush: {}", run.both());
    let (_, in_kernel) = ask(&lab, &sock, to, &q);
    assert!(!in_kernel, "the kernel answered from a copy after the cache was flushed");
    let st = lab.stats();
    let demoted = io_total(&st, "tier_demoted");
    assert!(demoted >= 1, "no copy counted as taken out: {:#}", st["workers"]);
}

#[test]
fn with_the_tier_off_nothing_is_answered_in_the_kernel() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = tier_lab(false);
    let (sock, to) = client_v4(&lab);
    let q = query(0x4001, "off.t1.test", Rtype::A, None);
    for _ in 0..20 {
        let (r, in_kernel) = ask(&lab, &sock, to, &q);
        assert!(!in_kernel, "the kernel answered with the tier off");
        assert_eq!(r[3] & 0x0f, 0);
    }
    let st = lab.stats();
    assert_eq!(xdp_total(&st, "answer_misses"), 0, "the tier looked queries up while off: {:#}", st["xdp"]);
}

#[test]
fn a_veth_peer_without_napi_turns_the_tier_off() {
    require_root_and_tools();
    let _slot = shared_slot();
    // The client end runs no XDP program: the kernel's answers are dropped
    // by veth (and counted as XDP_TX errors by the server end's driver).
    let lab = tier_lab_bare(true);
    let (sock, to) = client_v4(&lab);
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let q = query(0x5001, "nonapi.t1.test", Rtype::A, None);
    let mut buf = [0u8; 1024];
    let (mut answered, mut lost) = (0, 0);
    let start = std::time::Instant::now();
    // Asked every 100 ms for 6 s: a few go into the void once the entry is
    // copied, then the worker answers again for good.
    let mut last_lost = None;
    while start.elapsed() < Duration::from_secs(6) {
        sock.send_to(&q, to).unwrap();
        match sock.recv_from(&mut buf) {
            Ok(_) => answered += 1,
            Err(_) => {
                lost += 1;
                last_lost = Some(start.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = lab.kdns.plain_log();
    assert!(log.contains("the tier is off on this queue"), "no warning in the log:\n{log}");
    let last = last_lost.expect("no answer was lost: the kernel never answered (the test checks nothing)");
    assert!(last < Duration::from_secs(4), "answers were still lost {last:?} after the start ({lost} lost, {answered} answered)");
    // From now on the worker answers.
    let st = lab.stats();
    let before = xdp_total(&st, "answered");
    for _ in 0..10 {
        let r = exchange(&sock, to, &q).expect("the worker answers once the tier is off");
        assert_eq!(r[3] & 0x0f, 0);
    }
    assert_eq!(xdp_total(&lab.stats(), "answered"), before, "the kernel still answers");
    println!("no NAPI on the peer: {lost} lost, {answered} answered; last loss at {last:?}");
}

/// The addresses in the answer section of `r`, in order.
fn answer_addrs(r: &[u8]) -> Vec<String> {
    let m = Message::parse(r).unwrap_or_else(|e| panic!("reply does not parse ({e:?}): {r:02x?}"));
    m.sections
        .records(r)
        .filter(|x| x.ttl_offset < m.sections.authority && x.rtype == Rtype::A)
        .map(|x| {
            let d = x.rdata(r);
            format!("{}.{}.{}.{}", d[0], d[1], d[2], d[3])
        })
        .collect()
}

#[test]
fn local_answers_in_the_kernel_follow_every_records_change() {
    require_root_and_tools();
    let _slot = shared_slot();
    let mut opts = tier_opts(true);
    opts.extra.extend(["--domain".to_string(), "kdns".to_string()]);
    let lab = tier_lab_from(opts);
    let (sock, to) = client_v4(&lab);
    let run = |args: &[&str]| {
        let r = ctl(&lab.kdns.socket, args);
        assert!(r.ok(), "kdns-ctl {args:?}: {}", r.both());
    };
    run(&["service", "add", "web"]);
    run(&["instance", "add", "web", "c1", "10.7.0.1"]);
    run(&["records", "add", "db.kdns", "A", "10.5.0.1"]);

    // One instance: the same answer for everyone, so the kernel holds it
    // (the worker's bytes, AA set, the records' TTL).
    let q = query(0x6001, "WeB.kdns", Rtype::A, Some((1232, false)));
    let (worker, kernel) = until_kernel(&lab, &sock, to, &q, "web, one instance");
    same_reply("web, one instance", &worker, &kernel);
    assert_eq!(answer_addrs(&kernel), ["10.7.0.1"]);
    assert!(kernel[2] & 0x04 != 0, "no AA in the kernel's local answer");
    let db = query(0x6002, "db.kdns", Rtype::A, None);
    let (w, k) = until_kernel(&lab, &sock, to, &db, "static record");
    same_reply("static record", &w, &k);
    let nx = query(0x6003, "nothing.kdns", Rtype::A, Some((1232, true)));
    let (w, k) = until_kernel(&lab, &sock, to, &nx, "NXDOMAIN");
    same_reply("NXDOMAIN", &w, &k);
    assert_eq!(k[3] & 0x0f, 3);

    // A second instance: the answer rotates, which only the worker does,
    // from the first query after kdns-ctl returned.
    run(&["instance", "add", "web", "c2", "10.7.0.2"]);
    for i in 0..12 {
        let (r, in_kernel) = ask(&lab, &sock, to, &q);
        assert!(!in_kernel, "query {i} after the instance was added was answered in the kernel");
        let mut got = answer_addrs(&r);
        got.sort();
        assert_eq!(got, ["10.7.0.1", "10.7.0.2"], "query {i}");
    }
    // c1 unhealthy: c2 alone, at once, and then from the kernel again.
    run(&["instance", "health", "web", "c1", "unhealthy"]);
    let (r, in_kernel) = ask(&lab, &sock, to, &q);
    assert!(!in_kernel && answer_addrs(&r) == ["10.7.0.2"], "first answer after c1 went down: {:?}", answer_addrs(&r));
    let (_, k) = until_kernel(&lab, &sock, to, &q, "web, c1 down");
    assert_eq!(answer_addrs(&k), ["10.7.0.2"]);
    // The static record removed: NXDOMAIN from the first query on.
    run(&["records", "rm", "db.kdns", "A"]);
    let (r, in_kernel) = ask(&lab, &sock, to, &db);
    assert!(!in_kernel, "a removed record was answered in the kernel");
    assert_eq!(r[3] & 0x0f, 3, "db.kdns after its removal: rcode {}", r[3] & 0x0f);
    let st = lab.stats();
    assert!(io_total(&st, "tier_demoted") >= 3, "the copies were not counted as taken out: {:#}", st["workers"]);
}

#[test]
fn each_queue_answers_from_its_own_workers_copies() {
    require_root_and_tools();
    let _slot = shared_slot();
    let mut opts = tier_opts(true);
    opts.queues = Some(2);
    let lab = tier_lab_from(opts);
    let to: SocketAddr = format!("{}:53", lab.link.server_v4()).parse().unwrap();
    // Flows from many source ports spread over both queues (veth picks the
    // receive queue from the sender's flow hash); each queue's worker has
    // its own cache and copies, keyed by the queue.
    let socks: Vec<UdpSocket> = (0..24).map(|_| lab.client.udp_socket("0.0.0.0:0".parse().unwrap())).collect();
    let q = query(0x7001, "both.t1.test", Rtype::A, Some((1232, false)));
    let mut replies = Vec::new();
    for round in 0..20 {
        for s in &socks {
            let r = exchange(s, to, &q).unwrap_or_else(|e| panic!("round {round}: no reply: {e}"));
            assert_eq!(r[3] & 0x0f, 0);
            replies.push(r);
        }
        let st = lab.stats();
        if xdp_queue(&st, 0, "answered") > 0 && xdp_queue(&st, 1, "answered") > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = lab.stats();
    let answered = [xdp_queue(&st, 0, "answered"), xdp_queue(&st, 1, "answered")];
    let redirected = [xdp_queue(&st, 0, "redirected"), xdp_queue(&st, 1, "redirected")];
    assert!(
        answered.iter().all(|&n| n > 0),
        "kernel answers per queue {answered:?} (queries passed to the workers {redirected:?}): a queue's copies are missing: {:#}",
        st["xdp"]
    );
    // Both workers and both queues' copies answer the same bytes (TTLs
    // counting down from the earlier reply to the last).
    let last = replies.last().expect("replies").clone();
    for r in &replies {
        same_reply("two queues", r, &last);
    }
    let promoted = io_total(&st, "tier_promoted");
    assert!(promoted >= 2, "one copy per queue expected, stats count {promoted}: {:#}", st["workers"]);
    println!("two queues: kernel answers {answered:?}, passed to the workers {redirected:?}");
}
