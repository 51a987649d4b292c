//! End-to-end tests of the kdns daemon: real DNS clients (dig, kdig,
//! dnsperf, the glibc resolver) in a client network namespace, kdns and
//! Unbound backends in a server namespace, `kdns-ctl` reading the counters.
//!
//! Needs root and the Debian packages of scripts/setup.sh; fails (never
//! skips) without them. `cargo build --workspace` must have run first
//! (kdns-ctl is another package). See tests/README.md.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

/// How long kdns may take to stop after SIGTERM (it takes milliseconds).
const STOP_WITHIN: Duration = Duration::from_secs(10);

use common::*;

/// One query and its expectation.
struct Case<'a> {
    label: &'a str,
    tool: &'a str,
    /// The server (`@addr`).
    at: String,
    /// Extra flags (`+tcp`, ...).
    flags: Vec<String>,
    name: String,
    rtype: &'a str,
    want: &'a str,
}

fn ask(lab: &Lab, c: &Case) -> Answer {
    let mut args: Vec<&str> = vec![&c.at];
    args.extend(c.flags.iter().map(String::as_str));
    args.extend([c.name.as_str(), c.rtype]);
    match c.tool {
        "dig" => dig(&lab.client, &args),
        _ => kdig(&lab.client, &args),
    }
}

fn check_answer(c: &Case, a: &Answer, what: &str) {
    assert_eq!(a.status, "NOERROR", "{}: {what} query: status\n{}", c.label, a.text);
    assert!(a.has_flag("qr"), "{}: {what}: no QR flag\n{}", c.label, a.text);
    let data = a.rdata(c.rtype);
    assert_eq!(data, vec![c.want.to_string()], "{}: {what} query: {} {} answer\n{}", c.label, c.name, c.rtype, a.text);
}

/// dig and kdig, UDP and TCP, IPv4 and IPv6: right answers, and the second
/// query for a name is answered from the cache (totals.cache_hits grows).
///
/// Each UDP worker has its own cache and the kernel picks the worker from
/// the client's address and port, so the UDP queries use a fixed source
/// port (`-b addr#port`): both go to the same worker. TCP has one worker.
#[test]
fn answers_over_udp_and_tcp_v4_and_v6_second_is_cache_hit() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts::default());
    let (c4, c6) = (lab.link.client_v4(), lab.link.client_v6());
    let mut cases = Vec::new();
    let mut port = 40000;
    for tool in ["dig", "kdig"] {
        for tcp in [false, true] {
            for v6 in [false, true] {
                port += 1;
                let label = format!("{tool} {} {}", if tcp { "tcp" } else { "udp" }, if v6 { "ipv6" } else { "ipv4" });
                let mut flags = Vec::new();
                if tcp {
                    flags.push("+tcp".to_string());
                } else {
                    flags.push("+notcp".to_string());
                    flags.push("-b".into());
                    flags.push(format!("{}#{port}", if v6 { &c6 } else { &c4 }));
                }
                let slug = label.replace(' ', "-");
                let (name, rtype, want) = if v6 && tool == "dig" && !tcp {
                    ("www.static.test".to_string(), "AAAA", WWW_AAAA)
                } else {
                    (format!("{slug}.test"), "A", TEST_A)
                };
                cases.push((label, tool, v6, flags, name, rtype, want));
            }
        }
    }
    let mut report = Vec::new();
    for (label, tool, v6, flags, name, rtype, want) in &cases {
        let c = Case { label, tool, at: if *v6 { lab.at6() } else { lab.at4() }, flags: flags.clone(), name: name.clone(), rtype, want };
        let s0 = lab.stats();
        let first = ask(&lab, &c);
        check_answer(&c, &first, "first");
        let s1 = lab.stats();
        let second = ask(&lab, &c);
        check_answer(&c, &second, "second");
        let s2 = lab.stats();
        let (m0, m1) = (total(&s0, "cache_misses"), total(&s1, "cache_misses"));
        let (h1, h2) = (total(&s1, "cache_hits"), total(&s2, "cache_hits"));
        assert!(m1 > m0, "{label}: the first query for {name} was not a cache miss (cache_misses {m0} -> {m1})");
        assert!(h2 > h1, "{label}: the second query for {name} was not a cache hit (cache_hits {h1} -> {h2})\n{}", second.text);
        assert_eq!(total(&s2, "cache_misses"), m1, "{label}: the second query was counted as a miss too");
        report.push(format!("{label}: {name} {rtype} -> {want}, hit on 2nd query"));
    }
    // Queries over TCP are counted as such.
    let s = lab.stats();
    assert!(total(&s, "queries_tcp") >= 8, "queries_tcp should count the 8 TCP queries:\n{s:#}");
    eprintln!("{}", report.join("\n"));
}

/// 0x20: the client's mixed-case spelling comes back in the question and
/// the answer, from the backend (miss) and from the cache (hit).
#[test]
fn mixed_case_spelling_is_kept_from_backend_and_cache() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts::default());
    let src = format!("{}#40100", lab.link.client_v4());
    let at = lab.at4();
    for (i, spelling) in ["wWw.StAtIc.TeSt", "WWW.static.TEST", "www.STATIC.test"].iter().enumerate() {
        let s0 = lab.stats();
        let a = dig(&lab.client, &[&at, "-b", &src, spelling, "A"]);
        let s1 = lab.stats();
        assert_eq!(a.status, "NOERROR", "{spelling}:\n{}", a.text);
        let fq = format!("{spelling}.");
        assert!(a.question.iter().any(|q| q.starts_with(&format!("{fq} "))), "question of {spelling} not spelled as asked:\n{}", a.text);
        assert_eq!(a.answers.len(), 1, "{spelling}:\n{}", a.text);
        assert!(
            a.answers[0].starts_with(&format!("{fq} ")),
            "answer owner of {spelling} not spelled as asked: {:?}\n{}",
            a.answers,
            a.text
        );
        assert_eq!(a.rdata("A"), vec![WWW_A.to_string()], "{spelling}:\n{}", a.text);
        let hit = total(&s1, "cache_hits") > total(&s0, "cache_hits");
        assert_eq!(
            hit,
            i > 0,
            "{spelling}: cache hit expected: {} (cache_hits {} -> {})",
            i > 0,
            total(&s0, "cache_hits"),
            total(&s1, "cache_hits")
        );
    }
}

/// The system resolver of the client namespace (glibc, through
/// /etc/netns/<ns>/resolv.conf) resolves through kdns.
#[test]
fn system_resolver_resolves_through_kdns() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts::default());
    lab.client.set_resolv_conf(&format!("nameserver {}\noptions timeout:2 attempts:2\n", lab.link.server_v4()));
    let s0 = lab.stats();
    let r = lab.client.exec(&["getent", "hosts", "www.static.test"], Duration::from_secs(20));
    assert!(r.ok(), "getent hosts www.static.test failed:\n{}", r.both());
    assert!(
        r.stdout.contains(WWW_A) || r.stdout.contains(WWW_AAAA),
        "getent hosts www.static.test: expected {WWW_A} or {WWW_AAAA}:\n{}",
        r.both()
    );
    let r4 = lab.client.exec(&["getent", "ahostsv4", "www.static.test"], Duration::from_secs(20));
    assert!(r4.ok() && r4.stdout.contains(WWW_A), "getent ahostsv4 www.static.test: expected {WWW_A}:\n{}", r4.both());
    let r5 = lab.client.exec(&["getent", "hosts", "some.name.test"], Duration::from_secs(20));
    assert!(r5.ok() && r5.stdout.contains(TEST_A), "getent hosts some.name.test: expected {TEST_A}:\n{}", r5.both());
    let s1 = lab.stats();
    assert!(total(&s1, "queries") > total(&s0, "queries"), "the lookups did not reach kdns");
    // The host's own resolv.conf is untouched.
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    assert!(!host.contains(&lab.link.server_v4()), "/etc/resolv.conf of the host was changed:\n{host}");
}

/// An answer larger than 512 bytes to a UDP query without EDNS gets an empty
/// TC=1 reply; the same query over TCP gets all of it; a normal dig falls
/// back to TCP by itself.
///
/// The answer (8 TXT records of 200 bytes, about 1.7 KB) is also larger
/// than the 1232 bytes kdns offers Unbound, so Unbound's UDP answer to kdns
/// is itself truncated: kdns must pass TC on to UDP clients and, for TCP
/// clients, ask the backend again over TCP.
#[test]
fn large_answer_truncated_over_udp_complete_over_tcp() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts::default());
    let at = lab.at4();
    for round in ["first", "second"] {
        let a = dig(&lab.client, &[&at, "+ignore", "+notcp", "+noedns", "big.static.test", "TXT"]);
        assert_eq!(a.status, "NOERROR", "{round}: UDP without EDNS:\n{}", a.text);
        assert!(a.has_flag("tc"), "{round}: UDP without EDNS: expected TC=1 (flags: qr tc ...):\n{}", a.text);
        assert!(a.answers.is_empty(), "{round}: a TC reply should carry no records:\n{}", a.text);
        let t = dig(&lab.client, &[&at, "+tcp", "big.static.test", "TXT"]);
        assert_eq!(t.status, "NOERROR", "{round}: TCP:\n{}", t.text);
        assert!(!t.has_flag("tc"), "{round}: TCP answer truncated:\n{}", t.text);
        assert_eq!(t.rdata("TXT").len(), BIG_TXT_RECORDS, "{round}: TCP: expected {BIG_TXT_RECORDS} TXT records:\n{}", t.text);
    }
    // Plain dig: UDP with EDNS (1232) is still too small, so it retries
    // over TCP itself and prints the whole answer.
    let d = dig(&lab.client, &[&at, "big.static.test", "TXT"]);
    assert_eq!(d.rdata("TXT").len(), BIG_TXT_RECORDS, "dig with fallback to TCP:\n{}", d.text);
    // The first TCP query missed: the backend's UDP answer was truncated,
    // so kdns asked it again over TCP, and that exchange succeeded.
    let s = lab.stats();
    assert!(total(&s, "tcp_retries") >= 1, "no TCP retry counted:\n{s:#}");
    assert_eq!(total(&s, "tcp_retry_failures"), 0, "a TCP retry failed:\n{s:#}");
}

/// Two Unbounds; dnsperf sends distinct names (all misses) at 2000 qps; one
/// Unbound is killed: no query is lost, the backend is taken out within
/// about a second, comes back after a restart, and gets traffic again.
#[test]
fn failover_loses_no_query_and_backend_comes_back() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    // The scenario is shared with tests/xdp.rs (tests/common/failover.rs).
    failover_scenario("failover", Vec::new());
}

/// A client outside `--allow` gets REFUSED, over IPv4 and IPv6; the
/// allowed address of the same interface is answered.
#[test]
fn client_outside_allow_gets_refused() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = Lab::start(LabOpts { allow: Some(vec!["10.53.{x}.0/25".into(), "fd53:{x}::/120".into()]), ..LabOpts::default() });
    let x = lab.link.x;
    // Second addresses on the client's interface, on the link but outside
    // the allowed prefixes.
    let (out4, out6) = (format!("10.53.{x}.200"), format!("fd53:{x}::1:200"));
    lab.client.exec_ok(&["ip", "addr", "add", &format!("{out4}/24"), "dev", &lab.link.client_if]);
    lab.client.exec_ok(&["ip", "-6", "addr", "add", &format!("{out6}/64"), "dev", &lab.link.client_if, "nodad"]);
    let s0 = lab.stats();
    for (at, inside, outside) in [(lab.at4(), lab.link.client_v4(), out4), (lab.at6(), lab.link.client_v6(), out6)] {
        for tcp in ["+notcp", "+tcp"] {
            let a = dig(&lab.client, &[&at, tcp, "-b", &outside, "www.static.test", "A"]);
            assert_eq!(a.status, "REFUSED", "{tcp} from {outside} (outside --allow):\n{}", a.text);
            assert!(a.answers.is_empty(), "REFUSED reply with answers:\n{}", a.text);
            let a = dig(&lab.client, &[&at, tcp, "-b", &inside, "www.static.test", "A"]);
            assert_eq!(a.status, "NOERROR", "{tcp} from {inside} (allowed):\n{}", a.text);
            assert_eq!(a.rdata("A"), vec![WWW_A.to_string()], "{}", a.text);
        }
    }
    let s1 = lab.stats();
    let refused = total(&s1, "refused_acl") - total(&s0, "refused_acl");
    assert_eq!(refused, 4, "totals.refused_acl grew by {refused}, expected 4");
}

/// Garbage over UDP: datagrams with no readable header are dropped
/// (counted), queries with a readable header but a bad question get FORMERR;
/// the daemon keeps answering.
#[test]
fn malformed_queries_get_formerr_or_are_dropped() {
    require_root_and_tools();
    let _slot = shared_slot();
    let mut lab = Lab::start(LabOpts::default());
    let server: SocketAddr = format!("{}:53", lab.link.server_v4()).parse().expect("addr");
    let sock = lab.client.udp_socket(format!("{}:0", lab.link.client_v4()).parse().expect("addr"));
    sock.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
    let s0 = lab.stats();

    // A question for `a.test` A IN.
    let question: &[u8] = b"\x01a\x04test\x00\x00\x01\x00\x01";
    let header = |id: u16, flags: u16, qd: u16| -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&qd.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        h
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seed = std::process::id() as u64 ^ now.as_nanos() as u64;
    let random5: Vec<u8> =
        (0..5u64).map(|i| (seed.wrapping_mul(6364136223846793005).wrapping_add(i * 1442695040888963407) >> 33) as u8).collect();
    let two_questions = [header(0x1111, 0x0100, 2), question.to_vec(), question.to_vec()].concat();
    let truncated = [header(0x2222, 0x0100, 1), question[..4].to_vec()].concat();
    let no_question = header(0x3333, 0x0100, 0);
    let bad_label = [header(0x4444, 0x0100, 1), b"\x3fab\x00\x00\x01\x00\x01".to_vec()].concat();
    let a_response = [header(0x5555, 0x8180, 1), question.to_vec()].concat();

    // (label, datagram, expected reply: Some(rcode) or None = dropped)
    let cases: Vec<(&str, Vec<u8>, Option<u8>)> = vec![
        ("5 random bytes", random5, None),
        ("QDCOUNT=2", two_questions, Some(1)),
        ("truncated question", truncated, Some(1)),
        ("QDCOUNT=0", no_question, Some(1)),
        ("label longer than the message", bad_label, Some(1)),
        ("a response (QR=1)", a_response, None),
    ];
    let mut buf = [0u8; 1500];
    let mut seen = Vec::new();
    for (label, dgram, want) in &cases {
        sock.send_to(dgram, server).expect("send");
        match (sock.recv_from(&mut buf), want) {
            (Ok((n, from)), Some(rcode)) => {
                assert!(n >= 12, "{label}: reply of {n} bytes");
                assert_eq!(from, server, "{label}: reply from {from}");
                assert_eq!(&buf[..2], &dgram[..2], "{label}: reply ID differs from the query's");
                assert!(buf[2] & 0x80 != 0, "{label}: reply without QR");
                assert_eq!(buf[3] & 0x0f, *rcode, "{label}: rcode {} instead of FORMERR", buf[3] & 0x0f);
                seen.push(format!("{label}: FORMERR"));
            }
            (Ok((n, _)), None) => panic!("{label}: expected no reply, got {n} bytes: {:02x?}", &buf[..n.min(32)]),
            (Err(e), Some(_)) => panic!("{label}: expected FORMERR, got no reply ({e})"),
            (Err(_), None) => seen.push(format!("{label}: dropped")),
        }
    }
    let s1 = lab.stats();
    let formerr = total(&s1, "formerr") - total(&s0, "formerr");
    let drops = total_drops(&s1) - total_drops(&s0);
    eprintln!("malformed: {}\nmalformed: formerr +{formerr}, drops +{drops}: {:#}", seen.join("; "), s1["totals"]["drops"]);
    assert!(formerr >= 4, "totals.formerr grew by {formerr}, expected 4");
    assert!(drops >= 2, "totals.drops grew by {drops}, expected 2 (short datagram, response)");

    // Still serving.
    let a = dig(&lab.client, &[&lab.at4(), "after.garbage.test", "A"]);
    assert_eq!(a.rdata("A"), vec![TEST_A.to_string()], "kdns stopped answering after the garbage:\n{}", a.text);
    assert!(lab.kdns_alive(), "kdns exited");
}

/// SIGTERM: kdns exits 0, logs that it stopped, and removes its control
/// socket (within a generous deadline: how fast is for the benchmarks).
#[test]
fn sigterm_stops_cleanly_and_removes_control_socket() {
    require_root_and_tools();
    let _slot = shared_slot();
    let mut lab = Lab::start(LabOpts::default());
    for i in 0..5 {
        let a = dig(&lab.client, &[&lab.at4(), &format!("q{i}.test"), "A"]);
        assert_eq!(a.status, "NOERROR", "{}", a.text);
    }
    assert!(lab.kdns.socket.exists(), "control socket {} missing while running", lab.kdns.socket.display());
    let st = lab
        .kdns
        .stop_with(libc::SIGTERM, STOP_WITHIN)
        .unwrap_or_else(|| panic!("kdns did not exit within {STOP_WITHIN:?} of SIGTERM:\n{}", lab.kdns.log()));
    let log = lab.kdns.log();
    eprintln!("sigterm: exited with {st}");
    assert_eq!(st.code(), Some(0), "exit status after SIGTERM:\n{log}");
    assert!(log.contains("SIGTERM"), "log does not mention SIGTERM:\n{log}");
    assert!(log.contains("stopped"), "log does not say it stopped:\n{log}");
    assert!(!lab.kdns.socket.exists(), "control socket {} left behind", lab.kdns.socket.display());
}

/// Bad configuration: exit status 2 and a message naming the key.
#[test]
fn config_errors_exit_2_and_name_the_key() {
    let dir = temp_dir("config");
    let sock = dir.path().join("ctl.sock");
    let sock = sock.to_str().expect("utf-8");
    let bin = kdns_bin();
    let bin = bin.to_str().expect("utf-8");
    let cases: [(&str, &str, &[&str]); 4] = [
        ("unknown key", "[server]\nlisten = [\"127.0.0.1:5399\"]\nlisten_on = \"x\"\n", &["listen_on"]),
        ("unknown section", "[sever]\nworkers = 1\n", &["sever"]),
        ("bad value", "[cache]\nservfail_ttl = 99\n", &["servfail_ttl"]),
        ("wrong type", "[server]\nudp_size = \"big\"\n", &["udp_size"]),
    ];
    for (label, text, names) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write config");
        let r = run_limited(&[bin, "--config", path.to_str().expect("utf-8"), "--control-socket", sock], Duration::from_secs(10));
        assert_eq!(r.status.code(), Some(2), "{label}: exit status\n{}", r.both());
        for n in names {
            assert!(r.stderr.contains(n), "{label}: stderr does not name `{n}`:\n{}", r.both());
        }
        eprintln!("config {label}: {}", r.stderr.trim());
    }
    let r = run_limited(&[bin, "--listen", "nope", "--control-socket", sock], Duration::from_secs(10));
    assert_eq!(r.status.code(), Some(2), "--listen nope: exit status\n{}", r.both());
    assert!(r.stderr.contains("listen"), "--listen nope: stderr does not name listen:\n{}", r.both());
    eprintln!("config --listen nope: {}", r.stderr.trim());
    let r = run_limited(&[bin, "--config", dir.path().join("missing.toml").to_str().expect("utf-8")], Duration::from_secs(10));
    assert_eq!(r.status.code(), Some(2), "missing config file: exit status\n{}", r.both());
    assert!(r.stderr.contains("missing.toml"), "missing config file: stderr does not name it:\n{}", r.both());
}

/// kdns-ctl with no daemon behind the socket: exit 1, "is kdns running".
#[test]
fn kdns_ctl_without_daemon_says_is_kdns_running() {
    let dir = temp_dir("ctl");
    let none = dir.path().join("none.sock");
    for cmd in [&["stats"][..], &["backends"][..], &["stats", "--json"][..]] {
        let r = ctl(&none, cmd);
        assert_eq!(r.status.code(), Some(1), "kdns-ctl {cmd:?} with no socket: exit status\n{}", r.both());
        assert!(r.stderr.contains("is kdns running"), "kdns-ctl {cmd:?} with no socket: message\n{}", r.both());
    }
    // A stale socket: the file exists, nothing listens.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    assert!(stale.exists());
    let r = ctl(&stale, &["stats"]);
    assert_eq!(r.status.code(), Some(1), "kdns-ctl with a stale socket: exit status\n{}", r.both());
    assert!(r.stderr.contains("is kdns running"), "kdns-ctl with a stale socket: message\n{}", r.both());
}
