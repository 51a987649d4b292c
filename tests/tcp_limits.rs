//! TCP cannot be held hostage: a client that opens many idle TCP
//! connections keeps at most its per-client share, and when the table is
//! full the longest-idle connection makes room, so another client's
//! `dig +tcp` is always answered.
//!
//! Same namespace lab as tests/daemon.rs; kdns runs with a small table
//! (`tcp.max_connections = 32`, `tcp.max_connections_per_client = 8`, a
//! long idle timeout so nothing is freed by it during the test). The
//! "attackers" are extra addresses on the client's interface, their
//! connections plain `std::net::TcpStream`s opened inside the client
//! namespace. Needs root; see tests/README.md.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use serde_json::Value;

const MAX: usize = 32;
const PER_CLIENT: usize = 8;

/// A lab whose kdns has the small TCP table.
fn small_table_lab() -> Lab {
    Lab::start(LabOpts::with_config(&format!(
        "[tcp]\nmax_connections = {MAX}\nmax_connections_per_client = {PER_CLIENT}\nidle_timeout_ms = 600000\n"
    )))
}

/// `totals.io.<key>`.
fn io(stats: &Value, key: &str) -> u64 {
    stats["totals"]["io"][key].as_u64().unwrap_or_else(|| panic!("totals.io.{key} missing in:\n{stats:#}"))
}

/// Adds `10.53.X.<host>/24` to the client's interface (inside the allowed
/// /25) and returns it.
fn add_client_addr(lab: &Lab, host: u8) -> IpAddr {
    let a = format!("10.53.{}.{host}", lab.link.x);
    lab.client.exec_ok(&["ip", "addr", "add", &format!("{a}/24"), "dev", &lab.link.client_if]);
    a.parse().expect("addr")
}

/// Opens `n` TCP connections from `from` to kdns, inside the client
/// namespace. Every connect succeeds (the kernel completes the handshake
/// before kdns decides); what kdns then does shows on the connection.
fn connect_many(lab: &Lab, from: IpAddr, n: usize) -> Vec<TcpStream> {
    let to: SocketAddr = format!("{}:53", lab.link.server_v4()).parse().expect("addr");
    lab.client.within(|| {
        (0..n)
            .map(|i| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
                s.bind(&SocketAddr::new(from, 0).into()).unwrap_or_else(|e| panic!("bind {from}: {e}"));
                s.connect_timeout(&to.into(), Duration::from_secs(5)).unwrap_or_else(|e| panic!("connection {i} from {from}: {e}"));
                let t: TcpStream = s.into();
                t.set_read_timeout(Some(Duration::from_millis(20))).expect("timeout");
                t
            })
            .collect()
    })
}

/// Whether kdns closed this connection (EOF or reset); false while it is
/// open and silent.
fn closed_by_kdns(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted),
    }
}

/// Which of `conns` kdns has closed, once `want` of them are (polled for
/// up to 10 s); panics with the count otherwise.
fn wait_closed(conns: &mut [TcpStream], want: usize, what: &str) -> Vec<bool> {
    let mut closed = vec![false; conns.len()];
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(50), || {
        for (c, s) in closed.iter_mut().zip(conns.iter_mut()) {
            if !*c {
                *c = closed_by_kdns(s);
            }
        }
        (closed.iter().filter(|&&c| c).count() >= want).then_some(())
    });
    let n = closed.iter().filter(|&&c| c).count();
    assert!(ok.is_some(), "{what}: kdns closed {n} connections, expected {want}");
    closed
}

/// A query for www.static.test A over an open connection, answered.
fn query_over(s: &mut TcpStream) -> bool {
    let q: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x06static\x04test\x00\x00\x01\x00\x01";
    let mut msg = (q.len() as u16).to_be_bytes().to_vec();
    msg.extend_from_slice(q);
    if s.write_all(&msg).is_err() {
        return false;
    }
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut len = [0u8; 2];
    let mut ans = [0u8; 512];
    s.read_exact(&mut len).is_ok() && {
        let n = u16::from_be_bytes(len) as usize;
        n <= ans.len() && s.read_exact(&mut ans[..n]).is_ok() && ans[..2] == [0x12, 0x34]
    }
}

fn dig_tcp_ok(lab: &Lab, from: &str) -> Answer {
    let a = dig(&lab.client, &[&lab.at4(), "+tcp", "-b", from, "www.static.test", "A"]);
    assert_eq!(a.status, "NOERROR", "dig +tcp from {from}:\n{}", a.text);
    assert_eq!(a.rdata("A"), vec![WWW_A.to_string()], "{}", a.text);
    a
}

/// One address opens more connections than its cap and more than the
/// whole table holds: it keeps its 8, the rest are closed at once
/// (`tcp_refused_per_client`), and another client is answered over TCP.
#[test]
fn one_client_keeps_its_share_and_others_are_served() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = small_table_lab();
    let attacker = add_client_addr(&lab, 100);
    let s0 = lab.stats();
    let n = MAX + 8;
    let mut conns = connect_many(&lab, attacker, n);
    let closed = wait_closed(&mut conns, n - PER_CLIENT, "over the per-client cap");
    // The first 8 are the ones it keeps; they still work.
    assert!(closed[..PER_CLIENT].iter().all(|c| !c), "a connection within the cap was closed: {closed:?}");
    assert!(query_over(&mut conns[0]), "a connection within the cap does not answer");
    let s1 = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let s = lab.stats();
        (io(&s, "tcp_refused_per_client") - io(&s0, "tcp_refused_per_client") == (n - PER_CLIENT) as u64).then_some(s)
    })
    .unwrap_or_else(|| panic!("tcp_refused_per_client did not reach {}:\n{:#}", n - PER_CLIENT, lab.stats()));
    assert_eq!(io(&s1, "tcp_open"), PER_CLIENT as u64, "{s1:#}");
    assert_eq!(io(&s1, "tcp_evicted_idle") + io(&s1, "tcp_evicted_busy"), 0, "nothing should have been evicted:\n{s1:#}");
    // Another client, over TCP, while the attacker holds its connections.
    let client = lab.link.client_v4();
    for _ in 0..3 {
        dig_tcp_ok(&lab, &client);
    }
    // The attacker's extra tries are still turned away, and it is still held to 8.
    let mut more = connect_many(&lab, attacker, 4);
    wait_closed(&mut more, 4, "more connections over the cap");
    let s2 = lab.stats();
    assert_eq!(io(&s2, "tcp_refused_per_client") - io(&s0, "tcp_refused_per_client"), (n - PER_CLIENT + 4) as u64, "{s2:#}");
    eprintln!(
        "accepted {}, refused per client {}, open {}",
        io(&s2, "tcp_accepted") - io(&s0, "tcp_accepted"),
        io(&s2, "tcp_refused_per_client") - io(&s0, "tcp_refused_per_client"),
        io(&s2, "tcp_open")
    );
    drop(conns);
}

/// Five addresses, 8 connections each (40 > 32): the table fills, the
/// newcomers close the longest-idle connections (the first address's),
/// and a new client's `dig +tcp` is answered by closing one more.
#[test]
fn a_full_table_gives_way_to_a_new_client() {
    require_root_and_tools();
    let _slot = shared_slot();
    let lab = small_table_lab();
    let s0 = lab.stats();
    let attackers: Vec<IpAddr> = (101..106).map(|h| add_client_addr(&lab, h)).collect();
    let mut groups: Vec<Vec<TcpStream>> = Vec::new();
    // Fill the table: 4 x 8 = 32, all admitted.
    for a in &attackers[..4] {
        groups.push(connect_many(&lab, *a, PER_CLIENT));
    }
    poll_until(Duration::from_secs(10), Duration::from_millis(50), || (io(&lab.stats(), "tcp_open") == MAX as u64).then_some(()))
        .unwrap_or_else(|| panic!("the table did not fill to {MAX}:\n{:#}", lab.stats()));
    // 8 more from a fifth address: each evicts the longest-idle one.
    groups.push(connect_many(&lab, attackers[4], PER_CLIENT));
    let first = wait_closed(&mut groups[0], PER_CLIENT, "the oldest address's connections, evicted");
    assert!(first.iter().all(|&c| c), "{first:?}");
    let s1 = poll_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let s = lab.stats();
        (io(&s, "tcp_evicted_idle") - io(&s0, "tcp_evicted_idle") == PER_CLIENT as u64).then_some(s)
    })
    .unwrap_or_else(|| panic!("tcp_evicted_idle did not reach {PER_CLIENT}:\n{:#}", lab.stats()));
    assert_eq!(io(&s1, "tcp_open"), MAX as u64, "{s1:#}");
    assert_eq!(io(&s1, "tcp_refused_per_client"), io(&s0, "tcp_refused_per_client"), "{s1:#}");
    // The newest connections are all still open.
    for s in groups[4].iter_mut() {
        assert!(!closed_by_kdns(s), "a connection of the newest address was closed");
    }
    // A new client over TCP: served, at the cost of one more idle connection.
    dig_tcp_ok(&lab, &lab.link.client_v4());
    let second = wait_closed(&mut groups[1], 1, "one connection of the second-oldest address, evicted for dig");
    assert!(second[0], "the longest-idle connection should have gone first: {second:?}");
    let s2 = lab.stats();
    assert_eq!(io(&s2, "tcp_evicted_idle") - io(&s0, "tcp_evicted_idle"), PER_CLIENT as u64 + 1, "{s2:#}");
    assert_eq!(io(&s2, "tcp_evicted_busy"), 0, "{s2:#}");
    assert!(io(&s2, "tcp_open") <= MAX as u64, "{s2:#}");
    eprintln!("evicted idle {}, open {}", io(&s2, "tcp_evicted_idle") - io(&s0, "tcp_evicted_idle"), io(&s2, "tcp_open"));
    drop(groups);
}
