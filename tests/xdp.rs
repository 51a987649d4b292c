//! End-to-end tests of kdns's AF_XDP path: kdns with `--io xdp` in a
//! server network namespace attaches its XDP program to its end of a veth
//! pair and answers from AF_XDP sockets; real clients (dig, kdig, dnsperf,
//! ping) run in the client namespace; `kdns-ctl stats --json` tells which
//! worker answered (`workers[].kind` = "xdp" | "udp" | "tcp") and what the
//! XDP program did (`xdp[].queues[]`: redirected, passed, malformed,
//! dropped).
//!
//! Needs root, the Debian packages of scripts/setup.sh (ethtool and ping on
//! top of the daemon tests' tools) and `cargo build --workspace` first;
//! fails (never skips) without them. See tests/README.md.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// What these tests run on top of the daemon tests' tools.
const XDP_TOOLS: &[(&str, &str)] = &[("ethtool", "ethtool"), ("ping", "iputils-ping")];

fn require_xdp_tools() {
    require_root_and_tools();
    let missing: Vec<String> =
        XDP_TOOLS.iter().filter(|(t, _)| find_tool(t).is_none()).map(|(t, p)| format!("{t} (package {p})")).collect();
    assert!(missing.is_empty(), "the AF_XDP tests need {}; run scripts/setup.sh as root", missing.join(", "));
}

/// kdns arguments for the AF_XDP path only (no fallback to sockets).
fn io_xdp() -> Vec<String> {
    vec!["--io".into(), "xdp".into()]
}

/// A lab whose kdns runs with `--io xdp`, checked to have attached its
/// program to the server's end of the veth pair in driver mode.
fn xdp_lab(opts: LabOpts) -> Lab {
    let mut opts = opts;
    opts.extra.extend(io_xdp());
    let lab = Lab::start(opts);
    check_attached(&lab);
    lab
}

/// The log says AF_XDP runs on the server's interface in driver mode, the
/// stats show AF_XDP workers and the program's counters for that interface,
/// and `ip -d link` shows kdns's program.
fn check_attached(lab: &Lab) {
    let log = lab.kdns.plain_log();
    let ifname = &lab.link.server_if;
    let line = log.lines().find(|l| l.contains(&format!("AF_XDP on {ifname}:"))).unwrap_or_else(|| {
        panic!("kdns --io xdp: no 'AF_XDP on {ifname}:' line in the log:\n{log}");
    });
    // veth pairs with equal queue counts on both ends support native XDP.
    assert!(line.contains("driver mode"), "the program was not attached in driver mode on a veth pair with equal queues: {line}");
    let st = lab.stats();
    assert!(!workers_of_kind(&st, "xdp").is_empty(), "kdns --io xdp runs no AF_XDP worker:\n{:#}", st["workers"]);
    let ifaces: Vec<&str> = st["xdp"].as_array().map_or_else(Vec::new, |a| a.iter().filter_map(|i| i["interface"].as_str()).collect());
    assert_eq!(ifaces, vec![ifname.as_str()], "stats.xdp should list the program on {ifname}:\n{:#}", st["xdp"]);
    let (prog, mode) = attached_program(&lab.server, ifname).unwrap_or_else(|| panic!("no XDP program on {ifname} while kdns runs"));
    assert!(prog.contains("name kdns_xdp"), "the XDP program on {ifname} is not kdns's: {prog}");
    assert_eq!(mode, "xdp", "kdns's program on {ifname} is attached in mode {mode}, not native: {prog}");
}

/// Polls the stats (every 20 ms, 2 s at most) until `pred` holds; panics
/// with `what` and the last stats otherwise. A worker counts a query while
/// it answers it, so the counters may trail the client's answer by a hair.
fn stats_until(lab: &Lab, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = poll_until(Duration::from_secs(2), Duration::from_millis(20), || {
        last = lab.stats();
        pred(&last).then_some(())
    });
    if ok.is_none() {
        panic!("{what}; stats:\nworkers: {:#}\nxdp: {:#}", brief_workers(&last), last["xdp"]);
    }
    last
}

/// The workers' id, kind and query/cache counters, for messages.
fn brief_workers(st: &Value) -> Value {
    let list = st["workers"].as_array().cloned().unwrap_or_default();
    Value::Array(
        list.iter()
            .map(|w| {
                serde_json::json!({
                    "id": w["id"], "kind": w["kind"], "queries": w["queries"],
                    "cache_hits": w["cache_hits"], "cache_misses": w["cache_misses"],
                })
            })
            .collect(),
    )
}

/// `name` with letters alternately upper and lower case (0x20).
fn mixed_case(name: &str) -> String {
    let mut up = true;
    name.chars()
        .map(|c| {
            if c.is_ascii_alphabetic() {
                up = !up;
                if up {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            } else {
                c
            }
        })
        .collect()
}

/// Runs dig or kdig.
fn ask(tool: &str, ns: &Netns, args: &[&str]) -> Answer {
    match tool {
        "dig" => dig(ns, args),
        _ => kdig(ns, args),
    }
}

/// The answer is NOERROR with exactly `want` for `rtype`, and both the
/// question and the answer's owner are spelled as `name` was asked.
fn check_answer(label: &str, a: &Answer, name: &str, rtype: &str, want: &str) {
    assert_eq!(a.status, "NOERROR", "{label}: status:\n{}", a.text);
    assert!(a.has_flag("qr"), "{label}: no QR flag:\n{}", a.text);
    assert_eq!(a.rdata(rtype), vec![want.to_string()], "{label}: {name} {rtype}:\n{}", a.text);
    let fq = format!("{name}.");
    assert!(
        a.question.iter().any(|q| q.split(' ').next() == Some(fq.as_str())),
        "{label}: question not spelled as asked ({fq}): {:?}\n{}",
        a.question,
        a.text
    );
    assert!(
        a.answers.iter().all(|r| r.split(' ').next() == Some(fq.as_str())),
        "{label}: answer owner not spelled as asked ({fq}): {:?}\n{}",
        a.answers,
        a.text
    );
}

/// What a test saw, a line an item, and the XDP program's counters in `st`.
fn print_report(title: &str, report: &[String], st: &Value) {
    eprintln!("{title}:\n  {}\nxdp program counters: {}", report.join("\n  "), st["xdp"]);
}

/// `ip netns exec <ns> cat <path>`.
fn cat_in(ns: &Netns, path: &str) -> String {
    ns.exec_ok(&["cat", path]).stdout
}

/// UDP checksum errors the namespace's kernel counted (IPv4, IPv6):
/// `Udp: InCsumErrors` of /proc/net/snmp and `Udp6InCsumErrors` of
/// /proc/net/snmp6.
fn udp_csum_errors(ns: &Netns) -> (u64, u64) {
    let snmp = cat_in(ns, "/proc/net/snmp");
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp: ")).collect();
    assert_eq!(udp.len(), 2, "unexpected /proc/net/snmp:\n{snmp}");
    let (names, values): (Vec<&str>, Vec<&str>) = (udp[0].split_whitespace().collect(), udp[1].split_whitespace().collect());
    let i = names.iter().position(|n| *n == "InCsumErrors").unwrap_or_else(|| panic!("no Udp InCsumErrors in:\n{snmp}"));
    let v4 = values[i].parse().unwrap_or(0);
    let snmp6 = cat_in(ns, "/proc/net/snmp6");
    let v6 = snmp6
        .lines()
        .find_map(|l| l.strip_prefix("Udp6InCsumErrors"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Udp6InCsumErrors in:\n{snmp6}"));
    (v4, v6)
}

/// Ones' complement sum of `data` (as 16-bit big-endian words) added to
/// `acc`, not yet folded.
fn csum_add(mut acc: u32, data: &[u8]) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn csum_fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An Ethernet frame from `src` to `dst` (MACs) carrying a UDP datagram
/// from port 53 to `dport` whose UDP checksum is WRONG (the IPv4 header
/// checksum is right).
fn bad_checksum_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: std::net::IpAddr, dst: std::net::IpAddr, dport: u16) -> Vec<u8> {
    use std::net::IpAddr;
    let payload = [0x12u8, 0x34, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1];
    let ulen = (8 + payload.len()) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&53u16.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&ulen.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&payload);
    let mut frame = Vec::new();
    frame.extend_from_slice(&dst_mac);
    frame.extend_from_slice(&src_mac);
    let pseudo = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&(20 + ulen).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = csum_fold(csum_add(0, &ip));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            frame.extend_from_slice(&ip);
            let mut p = Vec::new();
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, 17]);
            p.extend_from_slice(&ulen.to_be_bytes());
            p
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            frame.extend_from_slice(&[0x60, 0, 0, 0]);
            frame.extend_from_slice(&ulen.to_be_bytes());
            frame.extend_from_slice(&[17, 64]);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
            let mut p = Vec::new();
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::from(ulen).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 17]);
            p
        }
        _ => panic!("mixed address families"),
    };
    let good = csum_fold(csum_add(csum_add(0, &pseudo), &udp));
    let good = if good == 0 { 0xffff } else { good };
    let bad: u16 = if good == 0x1234 { 0x4321 } else { 0x1234 };
    udp[6..8].copy_from_slice(&bad.to_be_bytes());
    frame.extend_from_slice(&udp);
    frame
}

/// Sends `frame` out of `ifname` in `ns` through an AF_PACKET socket.
fn send_raw_frame(ns: &Netns, ifname: &str, frame: &[u8]) {
    ns.within(|| kdns_sys::packet::send_frame(ifname, frame)).unwrap_or_else(|e| panic!("raw frame out of {ifname} in {}: {e}", ns.name));
}

/// The MAC address of `ifname` in `ns`.
fn mac_of(ns: &Netns, ifname: &str) -> [u8; 6] {
    let text = cat_in(ns, &format!("/sys/class/net/{ifname}/address"));
    let v: Vec<u8> = text.trim().split(':').map(|b| u8::from_str_radix(b, 16).expect("MAC")).collect();
    v.try_into().unwrap_or_else(|_| panic!("bad MAC {text:?}"))
}

/// The control of the checksum test: a datagram with a wrong UDP checksum
/// sent from the server's end (as a frame, like AF_XDP's copy-mode TX)
/// must be counted in the client's `InCsumErrors` (and so would a bad
/// reply of kdns be dropped before dig sees it).
fn check_bad_checksum_is_caught(lab: &Lab, label: &str) {
    let (cmac, smac) = (mac_of(&lab.client, &lab.link.client_if), mac_of(&lab.server, &lab.link.server_if));
    for v6 in [false, true] {
        let (src, dst) = if v6 {
            (lab.link.server_v6().parse().expect("v6"), lab.link.client_v6().parse().expect("v6"))
        } else {
            (lab.link.server_v4().parse().expect("v4"), lab.link.client_v4().parse().expect("v4"))
        };
        let before = udp_csum_errors(&lab.client);
        send_raw_frame(&lab.server, &lab.link.server_if, &bad_checksum_frame(smac, cmac, src, dst, 40999));
        let after = poll_until(Duration::from_secs(2), Duration::from_millis(20), || {
            let now = udp_csum_errors(&lab.client);
            (if v6 { now.1 > before.1 } else { now.0 > before.0 }).then_some(now)
        });
        assert!(
            after.is_some(),
            "{label}: control failed: a UDP datagram with a wrong checksum to {dst} was not counted as a checksum error by the client (v4/v6 {before:?}), so the checksum test proves nothing here"
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Queries over AF_XDP, cache, 0x20
// ---------------------------------------------------------------------------

/// dig and kdig over IPv4 and IPv6 are answered by the AF_XDP worker (its
/// `queries` grow, the socket workers' do not; the program's `redirected`
/// grows). The first query is a miss answered through Unbound; the same
/// query again and then in mixed case (0x20) are cache hits on the AF_XDP
/// worker, with the right data, spelled as the client asked (dig sends
/// the mixed case; kdig lowercases names before sending them).
#[test]
fn xdp_answers_dig_and_kdig_v4_v6_and_serves_hits_in_client_spelling() {
    require_xdp_tools();
    let _slot = shared_slot();
    let lab = xdp_lab(LabOpts::default());
    let cases = [
        ("dig", false, "dig-v4.t1.test", "A", TEST_A),
        ("dig", true, "www.static.test", "AAAA", WWW_AAAA),
        ("kdig", false, "kdig-v4.t1.test", "A", TEST_A),
        ("kdig", true, "kdig-v6.t1.test", "A", TEST_A),
    ];
    let mut report = Vec::new();
    for (tool, v6, name, rtype, want) in cases {
        let at = if v6 { lab.at6() } else { lab.at4() };
        let fam = if v6 { "ipv6" } else { "ipv4" };
        let mixed = mixed_case(name);
        for (round, spelling) in [("miss", name.to_string()), ("repeat", name.to_string()), ("0x20", mixed)] {
            let label = format!("{tool} {fam} {round} {spelling} {rtype}");
            let unbound = lab.unbounds[0].addr;
            let sent0 = backend(&lab.backends(), &unbound)["sent"].as_u64().unwrap_or(0);
            let s0 = lab.stats();
            let a = ask(tool, &lab.client, &[&at, &spelling, rtype]);
            // kdig lowercases the name it sends (seen against Unbound
            // directly too), so what comes back is lower case.
            let sent = if tool == "kdig" { spelling.to_ascii_lowercase() } else { spelling.clone() };
            check_answer(&label, &a, &sent, rtype, want);
            let (q0, h0, m0) = (kind_sum(&s0, "xdp", "queries"), kind_sum(&s0, "xdp", "cache_hits"), kind_sum(&s0, "xdp", "cache_misses"));
            let r0 = xdp_total(&s0, "redirected");
            let s1 = stats_until(&lab, &format!("{label}: the AF_XDP worker did not count the query"), |s| {
                kind_sum(s, "xdp", "queries") > q0 && xdp_total(s, "redirected") > r0
            });
            for kind in ["udp", "tcp"] {
                assert_eq!(
                    kind_sum(&s1, kind, "queries"),
                    kind_sum(&s0, kind, "queries"),
                    "{label}: a {kind} worker answered a UDP query that AF_XDP should have taken:\n{:#}",
                    brief_workers(&s1)
                );
            }
            let (h1, m1) = (kind_sum(&s1, "xdp", "cache_hits"), kind_sum(&s1, "xdp", "cache_misses"));
            let sent1 = backend(&lab.backends(), &unbound)["sent"].as_u64().unwrap_or(0);
            if round == "miss" {
                assert!(m1 > m0, "{label}: not a cache miss on the AF_XDP worker (cache_misses {m0} -> {m1})");
                assert_eq!(h1, h0, "{label}: first query counted as a cache hit");
                assert!(sent1 > sent0, "{label}: the miss was not sent to Unbound {unbound} (sent {sent0} -> {sent1})");
            } else {
                assert!(h1 > h0, "{label}: not a cache hit on the AF_XDP worker (cache_hits {h0} -> {h1}):\n{}", a.text);
                assert_eq!(m1, m0, "{label}: counted as a cache miss too");
                assert_eq!(sent1, sent0, "{label}: a cache hit was sent to Unbound {unbound}");
            }
            report.push(format!("{label} -> {want} ({})", if round == "miss" { "miss" } else { "hit" }));
        }
    }
    // The AF_XDP socket's kernel statistics are in the worker's io
    // counters; a dozen queries lose nothing in its rings.
    let st = lab.stats();
    for w in st["workers"].as_array().expect("workers").iter().filter(|w| w["kind"] == "xdp") {
        for key in ["xsk_rx_dropped", "xsk_rx_ring_full", "xsk_fill_ring_empty", "xsk_tx_ring_empty", "xsk_invalid"] {
            assert!(w["io"][key].is_u64(), "worker io has no {key}:\n{:#}", w["io"]);
        }
        for key in ["xsk_rx_ring_full", "xsk_fill_ring_empty", "xsk_rx_dropped"] {
            assert_eq!(w["io"][key].as_u64(), Some(0), "{key}:\n{:#}", w["io"]);
        }
    }
    print_report("xdp answers", &report, &st);
}

// ---------------------------------------------------------------------------
// 2. What is not a UDP query stays with the kernel
// ---------------------------------------------------------------------------

/// With the program attached: a fresh ARP / ND resolution works (neighbour
/// tables flushed on both sides, then dig), ping works over IPv4 and IPv6,
/// and a TCP query is answered by the kernel path (the TCP worker); the
/// program's `passed` counter grows.
#[test]
fn xdp_passes_arp_nd_icmp_and_tcp_to_the_kernel() {
    require_xdp_tools();
    let _slot = shared_slot();
    let lab = xdp_lab(LabOpts::default());
    let (cif, sif) = (&lab.link.client_if, &lab.link.server_if);
    let server_mac = cat_in(&lab.server, &format!("/sys/class/net/{sif}/address")).trim().to_ascii_lowercase();
    let s0 = lab.stats();
    let mut report = Vec::new();

    for (fam, flag, addr, at) in [("ipv4", "-4", lab.link.server_v4(), lab.at4()), ("ipv6", "-6", lab.link.server_v6(), lab.at6())] {
        // Fresh neighbours on both sides.
        lab.client.exec_ok(&["ip", flag, "neigh", "flush", "all"]);
        lab.server.exec_ok(&["ip", flag, "neigh", "flush", "all"]);
        let before = lab.client.exec_ok(&["ip", flag, "neigh", "show", &addr, "dev", cif]).stdout;
        assert!(!before.contains("lladdr"), "{fam}: neighbour entry for {addr} survived the flush:\n{before}");
        let passed0 = xdp_total(&lab.stats(), "passed");

        let name = format!("neigh-{fam}.t2.test");
        let a = dig(&lab.client, &[&at, &name, "A"]);
        check_answer(&format!("{fam} dig after neighbour flush"), &a, &name, "A", TEST_A);
        let after = lab.client.exec_ok(&["ip", flag, "neigh", "show", &addr, "dev", cif]).stdout;
        assert!(
            after.to_ascii_lowercase().contains(&format!("lladdr {server_mac}")),
            "{fam}: the client did not resolve {addr} to the server's MAC {server_mac} (ARP/ND through the XDP program):\n{after}"
        );
        let passed1 = xdp_total(&lab.stats(), "passed");
        assert!(passed1 > passed0, "{fam}: the program passed nothing during neighbour resolution (passed {passed0} -> {passed1})");
        report.push(format!("{fam}: neighbour resolved ({}), passed {passed0} -> {passed1}", after.trim()));

        // ICMP echo.
        let p = lab.client.exec(&["ping", flag, "-c", "2", "-i", "0.2", "-W", "2", &addr], Duration::from_secs(15));
        assert!(p.ok() && p.stdout.contains("2 received"), "{fam}: ping {addr} with the program attached:\n{}", p.both());
        report.push(format!("{fam}: {}", p.stdout.lines().find(|l| l.contains("received")).unwrap_or("").trim()));

        // TCP: the kernel's TCP server answers, not AF_XDP.
        let s1 = lab.stats();
        let name = format!("tcp-{fam}.t2.test");
        let a = dig(&lab.client, &[&at, "+tcp", &name, "A"]);
        check_answer(&format!("{fam} dig +tcp"), &a, &name, "A", TEST_A);
        let t1 = kind_sum(&s1, "tcp", "queries");
        let s2 = stats_until(&lab, &format!("{fam}: the TCP worker did not count the TCP query"), |s| kind_sum(s, "tcp", "queries") > t1);
        assert_eq!(
            kind_sum(&s2, "xdp", "queries"),
            kind_sum(&s1, "xdp", "queries"),
            "{fam}: the AF_XDP worker counted a TCP query:\n{:#}",
            brief_workers(&s2)
        );
        assert_eq!(kind_sum(&s2, "udp", "queries"), kind_sum(&s1, "udp", "queries"), "{fam}: a UDP socket worker counted a TCP query");
        assert!(xdp_total(&s2, "passed") > xdp_total(&s1, "passed"), "{fam}: the TCP segments were not counted as passed");
        report.push(format!("{fam}: TCP query answered by the tcp worker"));
    }
    let s = lab.stats();
    assert!(xdp_total(&s, "passed") > xdp_total(&s0, "passed"));
    assert_eq!(kind_sum(&s, "udp", "queries"), kind_sum(&s0, "udp", "queries"), "a UDP socket worker answered something");
    assert_eq!(xdp_total(&s, "malformed"), 0, "the program counted malformed frames:\n{:#}", s["xdp"]);
    print_report("xdp pass-through", &report, &s);
}

// ---------------------------------------------------------------------------
// 3. Checksums
// ---------------------------------------------------------------------------

/// Replies carry valid UDP checksums whether the queries come with partial
/// checksums (offload on, the default) or full ones (offload off on the
/// client's end, then on both ends). dig is answered only if the client's
/// kernel accepted the reply's checksum; its UDP checksum error counters
/// must not move either (control: a frame with a wrong UDP checksum sent
/// from the server's end is counted there). 20 queries per family and
/// phase (10 misses, answered in a fresh frame, and 10 hits, answered in
/// the query's frame).
#[test]
fn xdp_replies_have_valid_checksums_with_and_without_offload() {
    require_xdp_tools();
    let _slot = shared_slot();
    let lab = xdp_lab(LabOpts::default());
    let (cif, sif) = (lab.link.client_if.clone(), lab.link.server_if.clone());
    let phases: [(&str, Option<(&Netns, &str)>); 3] = [
        ("offload on", None),
        ("offload off on the client end", Some((&lab.client, &cif))),
        ("offload off on both ends", Some((&lab.server, &sif))),
    ];
    let mut report = Vec::new();
    for (p, (phase, off)) in phases.into_iter().enumerate() {
        if let Some((ns, ifname)) = off {
            ns.exec_ok(&["ethtool", "-K", ifname, "tx", "off", "rx", "off"]);
            let k = ns.exec_ok(&["ethtool", "-k", ifname]).stdout;
            for feature in ["rx-checksumming: off", "tx-checksumming: off"] {
                assert!(k.contains(feature), "{phase}: {ifname} does not show '{feature}':\n{k}");
            }
        }
        check_bad_checksum_is_caught(&lab, phase);
        for (fam, at) in [("ipv4", lab.at4()), ("ipv6", lab.at6())] {
            let s0 = lab.stats();
            let csum0 = udp_csum_errors(&lab.client);
            let mut answered = 0;
            let mut failures = Vec::new();
            for i in 0..20 {
                // Even: a new name (miss); odd: the same again (hit).
                let name = format!("c{}-{}.{fam}.t3.test", p, i / 2);
                let a = dig(&lab.client, &[&at, &name, "A"]);
                if a.status == "NOERROR" && a.rdata("A") == vec![TEST_A.to_string()] {
                    answered += 1;
                } else {
                    failures.push(a.text);
                }
            }
            let csum1 = udp_csum_errors(&lab.client);
            let q0 = kind_sum(&s0, "xdp", "queries");
            let s1 = stats_until(&lab, &format!("{phase} {fam}: the AF_XDP worker did not count 20 queries"), |s| {
                kind_sum(s, "xdp", "queries") >= q0 + 20
            });
            assert_eq!(
                answered,
                20,
                "{phase} {fam}: {answered}/20 queries answered (client UDP checksum errors v4/v6 {csum0:?} -> {csum1:?}); first failure:\n{}",
                failures.first().map_or("", String::as_str)
            );
            assert_eq!(csum1, csum0, "{phase} {fam}: the client's kernel counted UDP checksum errors (v4, v6): {csum0:?} -> {csum1:?}");
            assert_eq!(kind_sum(&s1, "udp", "queries"), kind_sum(&s0, "udp", "queries"), "{phase} {fam}: UDP socket workers answered");
            let hits = kind_sum(&s1, "xdp", "cache_hits") - kind_sum(&s0, "xdp", "cache_hits");
            assert_eq!(hits, 10, "{phase} {fam}: expected 10 cache hits (every second query)");
            report.push(format!("{phase}, {fam}: 20/20 answered by AF_XDP (10 misses, 10 hits), checksum errors {csum0:?} -> {csum1:?}"));
        }
    }
    print_report("xdp checksums", &report, &lab.stats());
}

// ---------------------------------------------------------------------------
// 4. Two queues
// ---------------------------------------------------------------------------

/// A veth pair with 2 RX and 2 TX queues on both ends: kdns runs two AF_XDP
/// workers, and dnsperf's 16 sockets (distinct source ports, so their flows
/// hash onto both TX queues of the client's end, which are the RX queues
/// the server's end receives them on) reach both: both workers' `queries`
/// and both queues' `redirected` counters grow. No query is lost.
#[test]
fn two_queues_two_xdp_workers_both_serve() {
    require_xdp_tools();
    let _slot = shared_slot();
    let lab = xdp_lab(LabOpts { queues: Some(2), ..LabOpts::default() });
    for (ns, ifname) in [(&lab.client, &lab.link.client_if), (&lab.server, &lab.link.server_if)] {
        let l = ns.exec_ok(&["ethtool", "-l", ifname]).stdout;
        let current = l.split("Current hardware settings:").nth(1).unwrap_or("");
        for q in ["RX:", "TX:"] {
            let n = current.lines().find(|x| x.trim_start().starts_with(q)).and_then(|x| x.split_whitespace().nth(1)).unwrap_or("?");
            assert_eq!(n, "2", "{ifname}: {q} {n} queues, expected 2:\n{l}");
        }
    }
    let st = lab.stats();
    let xw = workers_of_kind(&st, "xdp");
    assert_eq!(xw.len(), 2, "expected 2 AF_XDP workers (one per queue):\n{:#}", brief_workers(&st));
    let queues: Vec<u64> = xdp_queues(&st).iter().map(|(q, _)| *q).collect();
    assert_eq!(queues, vec![0, 1], "stats.xdp should list queues 0 and 1:\n{:#}", st["xdp"]);
    // XPS would pin each sender CPU to one TX queue; none is set on veth.
    let xps: Vec<String> = (0..2)
        .map(|q| cat_in(&lab.client, &format!("/sys/class/net/{}/queues/tx-{q}/xps_cpus", lab.link.client_if)).trim().to_string())
        .collect();

    let qf = lab.file("q.txt");
    write_queries(&qf, 0, 200, "t4.test");
    let ids: Vec<u64> = xw.iter().map(|w| w["id"].as_u64().unwrap_or(u64::MAX)).collect();
    let per_worker = |s: &Value| -> Vec<u64> {
        ids.iter()
            .map(|id| {
                workers_of_kind(s, "xdp").iter().find(|w| w["id"].as_u64() == Some(*id)).and_then(|w| w["queries"].as_u64()).unwrap_or(0)
            })
            .collect()
    };
    let s0 = lab.stats();
    let (w0, r0) = (per_worker(&s0), [xdp_queue(&s0, 0, "redirected"), xdp_queue(&s0, 1, "redirected")]);
    let mut perf = Dnsperf::spawn(&lab.client, &lab.link.server_v4(), &qf, &["-l", "2", "-Q", "400", "-c", "16", "-t", "3"]);
    let rep = perf.wait(Duration::from_secs(20));
    let s1 = lab.stats();
    let (w1, r1) = (per_worker(&s1), [xdp_queue(&s1, 0, "redirected"), xdp_queue(&s1, 1, "redirected")]);
    eprintln!(
        "two queues: dnsperf -c 16: {} sent, {}; AF_XDP workers {ids:?} queries {w0:?} -> {w1:?}; redirected per queue {r0:?} -> {r1:?}; client xps_cpus {xps:?}",
        rep.sent, rep.lost_line
    );
    assert!(rep.sent >= 400, "dnsperf sent only {} queries:\n{}", rep.sent, rep.text);
    assert_eq!(rep.lost, 0, "dnsperf lost queries over two queues:\n{}", rep.text);
    for q in 0..2 {
        assert!(
            r1[q] > r0[q],
            "queue {q}: redirected {} -> {}: no query arrived on it (client xps_cpus {xps:?}):\n{:#}",
            r0[q],
            r1[q],
            s1["xdp"]
        );
        assert!(w1[q] > w0[q], "AF_XDP worker {} served nothing (queries {} -> {}):\n{:#}", ids[q], w0[q], w1[q], brief_workers(&s1));
    }
    assert_eq!(kind_sum(&s1, "udp", "queries"), kind_sum(&s0, "udp", "queries"), "UDP socket workers answered");
}

// ---------------------------------------------------------------------------
// 5. kill -9
// ---------------------------------------------------------------------------

/// `kill -9` kdns: its program goes away with it (bpf_link), the kernel has
/// the interface back (ping works), and a new kdns with the same arguments
/// attaches and answers over AF_XDP.
#[test]
fn kill_9_detaches_the_program_and_a_new_kdns_attaches() {
    require_xdp_tools();
    let _slot = shared_slot();
    let mut lab = xdp_lab(LabOpts::default());
    let sif = lab.link.server_if.clone();
    let (first, _) = attached_program(&lab.server, &sif).expect("attached");
    let st = lab.kdns.stop_with(libc::SIGKILL, Duration::from_secs(5)).expect("kdns did not die of SIGKILL within 5 s");
    assert!(st.code().is_none(), "kdns exited with {st} instead of dying of SIGKILL");
    let gone =
        poll_until(Duration::from_secs(3), Duration::from_millis(50), || attached_program(&lab.server, &sif).is_none().then_some(()));
    let left = lab.server.exec_ok(&["ip", "-d", "link", "show", "dev", &sif]).stdout;
    assert!(gone.is_some(), "an XDP program is still attached to {sif} 3 s after kill -9 of kdns (was: {first}):\n{left}");
    let p = lab.client.exec(&["ping", "-c", "1", "-W", "2", &lab.link.server_v4()], Duration::from_secs(10));
    assert!(p.ok(), "ping after kill -9: the kernel does not have the interface back:\n{}", p.both());

    lab.respawn_kdns();
    check_attached(&lab);
    let (second, _) = attached_program(&lab.server, &sif).expect("attached");
    assert_ne!(prog_id(&first), prog_id(&second), "the new kdns shows the old program id ({first} / {second})");
    let s0 = lab.stats();
    let a = dig(&lab.client, &[&lab.at4(), "after-kill.t5.test", "A"]);
    check_answer("dig after the restart", &a, "after-kill.t5.test", "A", TEST_A);
    let q0 = kind_sum(&s0, "xdp", "queries");
    stats_until(&lab, "the new kdns did not answer over AF_XDP", |s| kind_sum(s, "xdp", "queries") > q0);
    eprintln!("kill -9: program before: {first}\nkill -9: detached; program of the new kdns: {second}");
}

/// `[xdp] realtime_priority`: the AF_XDP worker, and only it, runs in
/// SCHED_FIFO at that priority (the kernel path's UDP worker does not),
/// and it still answers.
#[test]
fn realtime_priority_puts_the_xdp_worker_in_sched_fifo() {
    require_xdp_tools();
    let _slot = shared_slot();
    let lab = xdp_lab(LabOpts::with_config("[xdp]\nrealtime_priority = 7\n"));
    // (comm, policy, rt_priority) of every thread, from /proc/PID/task/TID/stat
    // (fields 40 and 41, counted after the parenthesised comm).
    let pid = lab.kdns.pid();
    let mut threads = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("kdns tasks").flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        let rest: Vec<&str> = stat.rsplit_once(") ").map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
        let (prio, policy) = (rest.get(37).copied().unwrap_or("?"), rest.get(38).copied().unwrap_or("?"));
        threads.push((comm, policy.to_string(), prio.to_string()));
    }
    let xdp: Vec<_> = threads.iter().filter(|(c, _, _)| c.starts_with("kdns-xdp-")).collect();
    assert_eq!(xdp.len(), 1, "expected one AF_XDP worker thread: {threads:?}");
    assert_eq!((xdp[0].1.as_str(), xdp[0].2.as_str()), ("1", "7"), "AF_XDP worker not in SCHED_FIFO (policy 1) at 7: {threads:?}");
    assert!(threads.iter().any(|(c, _, _)| c.starts_with("kdns-udp-")), "no UDP worker thread: {threads:?}");
    let others: Vec<_> = threads.iter().filter(|(c, p, _)| !c.starts_with("kdns-xdp-") && p != "0").collect();
    assert!(others.is_empty(), "threads other than the AF_XDP worker changed policy: {others:?}");
    assert!(lab.kdns.plain_log().contains("AF_XDP workers in SCHED_FIFO 7"), "no log line:\n{}", lab.kdns.plain_log());
    let s0 = lab.stats();
    let a = dig(&lab.client, &[&lab.at4(), "rt.t5.test", "A"]);
    check_answer("dig, real-time worker", &a, "rt.t5.test", "A", TEST_A);
    let q0 = kind_sum(&s0, "xdp", "queries");
    stats_until(&lab, "the real-time AF_XDP worker did not answer", |s| kind_sum(s, "xdp", "queries") > q0);
}

// ---------------------------------------------------------------------------
// 6. A stale program
// ---------------------------------------------------------------------------

/// Attaches kdns's own XDP object by netlink in generic mode, as a crashed
/// tool would leave it (such attachments outlive their process).
fn attach_stale_program(server: &Netns, link: &Link) {
    let obj = kdns_xdp_object();
    let obj = obj.to_str().expect("utf-8 path");
    server.exec_ok(&["ip", "link", "set", "dev", &link.server_if, "xdpgeneric", "obj", obj, "sec", "xdp"]);
    let (prog, mode) =
        attached_program(server, &link.server_if).unwrap_or_else(|| panic!("ip link set xdpgeneric obj {obj}: nothing attached"));
    assert_eq!(mode, "xdpgeneric", "stale program not in generic mode: {prog}");
    eprintln!("stale: attached {prog} ({mode}) from {obj}");
}

/// kdns finds a program attached by netlink (stale), removes it with a log
/// line, attaches its own, and serves over AF_XDP.
#[test]
fn stale_netlink_program_is_removed_at_start() {
    require_xdp_tools();
    let _slot = shared_slot();
    let lab = xdp_lab(LabOpts { before_kdns: Some(attach_stale_program), ..LabOpts::default() });
    let log = lab.kdns.plain_log();
    let sif = &lab.link.server_if;
    let line = log
        .lines()
        .find(|l| l.contains("removed stale XDP program"))
        .unwrap_or_else(|| panic!("kdns did not log 'removed stale XDP program':\n{log}"));
    assert!(line.contains(sif.as_str()), "the stale-program line does not name {sif}: {line}");
    let stale_id: Option<u32> =
        line.split("removed stale XDP program ").nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.parse().ok());
    let (prog, _) = attached_program(&lab.server, sif).expect("attached");
    assert!(stale_id.is_some() && prog_id(&prog) != stale_id, "the program attached now ({prog}) is the stale one ({line})");
    let s0 = lab.stats();
    let a = dig(&lab.client, &[&lab.at6(), "after-stale.t6.test", "A"]);
    check_answer("dig after the stale program was removed", &a, "after-stale.t6.test", "A", TEST_A);
    let q0 = kind_sum(&s0, "xdp", "queries");
    stats_until(&lab, "kdns did not answer over AF_XDP after removing the stale program", |s| kind_sum(s, "xdp", "queries") > q0);
    eprintln!("stale: kdns logged: {}\nstale: now attached: {prog}", line.trim());
}

// ---------------------------------------------------------------------------
// 7. Failover
// ---------------------------------------------------------------------------

/// The failover scenario of tests/daemon.rs with `--io xdp`: the AF_XDP
/// worker carries the load; no query lost, the dead backend is down within a
/// second and back after its restart.
#[test]
fn failover_in_xdp_mode_loses_no_query_and_backend_comes_back() {
    require_xdp_tools();
    let _slot = exclusive_slot();
    let lab = failover_scenario("failover xdp", io_xdp());
    check_attached(&lab);
    let st = lab.stats();
    let (xq, uq) = (kind_sum(&st, "xdp", "queries"), kind_sum(&st, "udp", "queries"));
    eprintln!("failover xdp: AF_XDP workers answered {xq} queries, UDP socket workers {uq}");
    assert!(xq > 20_000, "the AF_XDP workers answered only {xq} queries: the load did not go through AF_XDP");
    assert_eq!(uq, 0, "UDP socket workers answered {uq} queries while AF_XDP was attached");
}

// ---------------------------------------------------------------------------
// 8. Loopback
// ---------------------------------------------------------------------------

/// On a loopback address there is no AF_XDP: `--io auto` serves with
/// sockets and logs why; `--io xdp` exits with status 1 and says why.
#[test]
fn loopback_io_auto_uses_sockets_and_io_xdp_exits_1() {
    require_xdp_tools();
    let _slot = shared_slot();
    let ns = Netns::new(next_id(), "l");
    let _unbound = Unbound::start(&ns, ([127, 0, 0, 1], UNBOUND_PORT).into());
    let backend = format!("127.0.0.1:{UNBOUND_PORT}");
    let listen = "127.0.0.1:5353";
    let args: Vec<String> = ["--io", "auto", "--listen", listen, "--backend", &backend].iter().map(|s| s.to_string()).collect();
    let mut kdns = Kdns::spawn(&ns, &args);
    let ok = poll_until(Duration::from_secs(15), Duration::from_millis(100), || {
        if let Some(st) = kdns.try_exit() {
            panic!("kdns --io auto on loopback exited ({st}):\n{}", kdns.log());
        }
        let a = dig(&ns, &["@127.0.0.1", "-p", "5353", "+time=1", "lo.t8.test", "A"]);
        (a.status == "NOERROR" && kdns.socket.exists()).then_some(a)
    });
    let a = ok.unwrap_or_else(|| panic!("kdns --io auto on {listen} did not answer within 15 s:\n{}", kdns.log()));
    assert_eq!(a.rdata("A"), vec![TEST_A.to_string()], "{}", a.text);
    let log = kdns.plain_log();
    let why = log
        .lines()
        .find(|l| l.contains("AF_XDP not used:"))
        .unwrap_or_else(|| panic!("--io auto on loopback: no 'AF_XDP not used:' in the log:\n{log}"));
    assert!(why.contains("loopback"), "--io auto: the reason does not mention loopback: {why}");
    let st = stats(&kdns.socket);
    assert!(workers_of_kind(&st, "xdp").is_empty(), "--io auto on loopback runs AF_XDP workers:\n{:#}", brief_workers(&st));
    assert!(kind_sum(&st, "udp", "queries") > 0, "--io auto on loopback: no UDP socket worker answered:\n{:#}", brief_workers(&st));
    drop(kdns);

    let dir = temp_dir("xdp-lo");
    let sock = dir.path().join("control.sock");
    let handover = dir.path().join("handover.sock");
    let bin = kdns_bin();
    let r = ns.exec(
        &[
            bin.to_str().expect("utf-8 path"),
            "--io",
            "xdp",
            "--listen",
            listen,
            "--backend",
            &backend,
            "--control-socket",
            sock.to_str().expect("utf-8 path"),
            "--handover-socket",
            handover.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(15),
    );
    let stderr = strip_ansi(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "--io xdp on loopback: exit status (want 1):\n{}", r.both());
    let msg = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(
        stderr.contains("AF_XDP") && stderr.contains("loopback"),
        "--io xdp on loopback: the message should say AF_XDP and loopback:\n{stderr}"
    );
    assert!(!sock.exists(), "--io xdp on loopback left a control socket");
    eprintln!("loopback --io auto: {}\nloopback --io xdp: exit 1: {}", why.trim(), msg.trim());
}
