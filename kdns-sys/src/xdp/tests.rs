//! Tests of the XDP program and its loader. They need root: BPF, network
//! namespaces and veth pairs. Each test makes its own pair of namespaces
//! (server + client, a veth pair between them) and removes them when done,
//! also on failure.
//!
//! Two kinds:
//! - `classify_*`: the program's decisions, frame by frame, through
//!   BPF_PROG_TEST_RUN (no traffic; covers VLAN tags, fragments, bad lengths
//!   that the rig's stack won't send);
//! - the rest: the program attached to a veth in a namespace, with real
//!   traffic from the peer namespace (UDP, fragments, ping, ND, TCP).

use super::*;
use crate::netns::{veth, Netns, VethEnd};

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

pub(super) const S_IF: &str = "kx-s";
pub(super) const C_IF: &str = "kx-c";
pub(super) const S_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const S_V4_OTHER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
pub(super) const C_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 100);
pub(super) const S_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6b64, 0, 0, 0, 0, 0, 1);
pub(super) const C_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x6b64, 0, 0, 0, 0, 0, 0x100);
pub(super) const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

pub(super) fn require_root() {
    if !crate::process::is_root() {
        panic!("the XDP loader tests need root (BPF, network namespaces, veth): run them as root, e.g. `sudo -E cargo test --features xdp xdp::loader`");
    }
}

// ---------------------------------------------------------------- helpers

fn ip(args: &[&str]) -> String {
    crate::netns::ip(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Server and client namespaces joined by a veth pair `kx-s` <-> `kx-c`.
/// Server: 10.200.0.1/24, 10.200.0.2/24 (not a listen address), fd00:6b64::1/64.
/// Client: 10.200.0.100/24, fd00:6b64::100/64.
pub(super) struct Rig {
    pub(super) server: Netns,
    pub(super) client: Netns,
}

impl Rig {
    /// `(rx, tx)` queue counts of the server and client ends.
    pub(super) fn new(server_q: (u32, u32), client_q: (u32, u32)) -> Rig {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("kdnsx-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let ns = |role: &str| Netns::new(format!("{tag}-{role}")).unwrap_or_else(|e| panic!("{e}"));
        let rig = Rig { server: ns("s"), client: ns("c") };
        let server = VethEnd {
            ns: &rig.server,
            ifname: S_IF,
            queues: Some(server_q),
            addrs: &["10.200.0.1/24", "10.200.0.2/24", "fd00:6b64::1/64"],
        };
        let client = VethEnd { ns: &rig.client, ifname: C_IF, queues: Some(client_q), addrs: &["10.200.0.100/24", "fd00:6b64::100/64"] };
        veth(&server, &client).unwrap_or_else(|e| panic!("{e}"));
        rig
    }

    /// Runs `f` on a thread inside the server namespace (its /sys too, so
    /// the loader sees the veth's queues).
    pub(super) fn in_server<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.server.within(f).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(super) fn in_client<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.client.within(f).unwrap_or_else(|e| panic!("{e}"))
    }

    fn server_link(&self) -> String {
        ip(&["-n", self.server.name(), "-d", "link", "show", "dev", S_IF])
    }

    /// The id of the XDP program on the server end and whether it is in generic mode.
    pub(super) fn attached(&self) -> Option<(u32, bool)> {
        let text = self.server_link();
        let id = text.split("prog/xdp id ").nth(1)?.split_whitespace().next()?.parse().ok()?;
        Some((id, text.contains(" xdpgeneric ")))
    }

    pub(super) fn wait_detached(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.attached().is_some() {
            assert!(Instant::now() < deadline, "an XDP program is still attached:\n{}", self.server_link());
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!self.server_link().contains("xdp"), "xdp still shown:\n{}", self.server_link());
    }

    /// A UDP socket in the client namespace.
    pub(super) fn client_udp(&self, v6: bool) -> UdpSocket {
        self.in_client(|| UdpSocket::bind(if v6 { "[::]:0" } else { "0.0.0.0:0" }).unwrap())
    }

    /// A UDP socket in the server namespace, bound to `addr`.
    pub(super) fn server_udp(&self, addr: SocketAddr) -> UdpSocket {
        let s = self.in_server(|| UdpSocket::bind(addr).unwrap());
        s.set_read_timeout(Some(Duration::from_millis(400))).unwrap();
        s
    }

    pub(super) fn ping(&self, dst: IpAddr) -> bool {
        let sock = self.in_client(|| match dst {
            IpAddr::V4(_) => Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap(),
            IpAddr::V6(_) => Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6)).unwrap(),
        });
        ping_with(&sock, dst)
    }
}

fn ping_with(sock: &Socket, dst: IpAddr) -> bool {
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let (req_type, reply_type) = if dst.is_ipv4() { (8u8, 0u8) } else { (128u8, 129u8) };
    let mut msg = vec![req_type, 0, 0, 0];
    msg.extend_from_slice(&id.to_be_bytes());
    msg.extend_from_slice(&1u16.to_be_bytes());
    msg.extend_from_slice(b"kdns-xdp-test");
    if dst.is_ipv4() {
        let c = inet_checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    } // ICMPv6: the kernel fills in the checksum on raw sockets.
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        sock.send_to(&msg, &SockAddr::from(SocketAddr::new(dst, 0))).unwrap();
        let mut buf = [0u8; 1500];
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let Ok(n) = (&*sock).read(&mut buf) else { break };
            let icmp = if dst.is_ipv4() { &buf[((buf[0] & 0xf) as usize * 4).min(n)..n] } else { &buf[..n] };
            if icmp.len() >= 8 && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes() {
                return true;
            }
        }
    }
    false
}

pub(super) fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from(chunk[0]) << 8 };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sum over all queues.
pub(super) fn totals(r: &CounterReader) -> QueueCounters {
    r.read().unwrap().iter().fold(QueueCounters { queue: u32::MAX, ..Default::default() }, |mut t, q| {
        t.redirected += q.redirected;
        t.passed += q.passed;
        t.malformed += q.malformed;
        t.dropped += q.dropped;
        t.answered += q.answered;
        t.answer_misses += q.answer_misses;
        t
    })
}

pub(super) fn delta(after: QueueCounters, before: QueueCounters) -> QueueCounters {
    QueueCounters {
        queue: u32::MAX,
        redirected: after.redirected - before.redirected,
        passed: after.passed - before.passed,
        malformed: after.malformed - before.malformed,
        dropped: after.dropped - before.dropped,
        answered: after.answered - before.answered,
        answer_misses: after.answer_misses - before.answer_misses,
    }
}

/// A DNS-sized query payload (header + a question), `len` bytes.
pub(super) fn query(len: usize) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.resize(len.max(12), b'a');
    q.truncate(len);
    q
}

pub(super) fn received(s: &UdpSocket) -> Option<usize> {
    let mut buf = [0u8; 9000];
    s.recv_from(&mut buf).ok().map(|(n, _)| n)
}

/// An AF_XDP socket that is not bound: the kernel accepts it in an XSKMAP,
/// and a frame redirected to it is dropped (it has no rings), so "the
/// kernel never saw it" shows the redirect happened.
pub(super) fn unbound_xsk() -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked before being owned.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket(AF_XDP): {}", io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Captures this thread's tracing output.
#[derive(Clone, Default)]
pub(super) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

impl Logs {
    pub(super) fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let sub = tracing_subscriber::fmt().with_writer(logs.clone()).with_ansi(false).with_max_level(tracing::Level::DEBUG).finish();
        (logs.clone(), tracing::subscriber::set_default(sub))
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// ------------------------------------------------ classification (test run)

/// Runs the program once on `frame` (rx queue 0) with BPF_PROG_TEST_RUN.
fn test_run(prog: &XdpProgram, frame: &[u8]) -> u32 {
    run_timed(prog, frame).0
}

/// Runs the program once on `frame` (rx queue 0) with BPF_PROG_TEST_RUN:
/// its action, the frame after it, and the kernel's time for the run in ns.
pub(super) fn run_timed(prog: &XdpProgram, frame: &[u8]) -> (u32, Vec<u8>, u32) {
    #[repr(C)]
    #[derive(Default)]
    struct TestAttr {
        prog_fd: u32,
        retval: u32,
        data_size_in: u32,
        data_size_out: u32,
        data_in: u64,
        data_out: u64,
        repeat: u32,
        duration: u32,
        ctx_size_in: u32,
        ctx_size_out: u32,
        ctx_in: u64,
        ctx_out: u64,
        flags: u32,
        cpu: u32,
        batch_size: u32,
        _pad: u32,
    }
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    let mut out = vec![0u8; 4096];
    let mut attr = TestAttr {
        prog_fd: prog.prog_fd.as_fd().as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_size_out: out.len() as u32,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: bpf(2) reads the attr and the frame and writes at most
    // data_size_out bytes into `out`; all outlive the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_TEST_RUN, &raw mut attr, std::mem::size_of::<TestAttr>()) };
    assert_eq!(ret, 0, "BPF_PROG_TEST_RUN: {}", io::Error::last_os_error());
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out, attr.duration)
}

pub(super) fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for vid in vlans {
        f.extend_from_slice(&0x8100u16.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

pub(super) fn udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&40000u16.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&0u16.to_be_bytes());
    u.extend_from_slice(payload);
    u
}

pub(super) fn ipv4(dst: Ipv4Addr, proto: u8, options: &[u8], l4: &[u8]) -> Vec<u8> {
    let hlen = 20 + options.len();
    let mut h = vec![0x40 | (hlen / 4) as u8, 0];
    h.extend_from_slice(&((hlen + l4.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]); // id 1, DF, ttl 64
    h.extend_from_slice(&C_V4.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    let c = inet_checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

pub(super) fn ipv6(dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&C_V6.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    h
}

fn v4_frame(vlans: &[u16], dst: Ipv4Addr, dport: u16, payload_len: usize) -> Vec<u8> {
    [eth(0x0800, vlans), ipv4(dst, 17, &[], &udp(dport, &query(payload_len)))].concat()
}

fn v6_frame(vlans: &[u16], dst: Ipv6Addr, dport: u16, payload_len: usize) -> Vec<u8> {
    [eth(0x86dd, vlans), ipv6(dst, 17, &udp(dport, &query(payload_len)))].concat()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Redirect,
    Pass,
    Malformed,
}

#[test]
fn classify_frames() {
    require_root();
    let mut prog = XdpProgram::load("lo", &[IpAddr::V4(S_V4), IpAddr::V6(S_V6)], 53, None).unwrap();
    let xsk = unbound_xsk();
    prog.register_socket(0, xsk.as_raw_fd()).unwrap();

    // IPv4 offsets without VLAN: IP at 14, UDP at 34.
    let base4 = v4_frame(&[], S_V4, 53, 30);
    let with = |mut f: Vec<u8>, edit: &dyn Fn(&mut Vec<u8>)| {
        edit(&mut f);
        f
    };
    let arp = [eth(0x0806, &[]), vec![0, 1, 8, 0, 6, 4, 0, 1], vec![0; 20]].concat();
    let mut hop_by_hop = udp(53, &query(30));
    hop_by_hop.splice(0..0, [17u8, 0, 1, 4, 0, 0, 0, 0]); // HBH header, next = UDP
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        ("v4 query", base4.clone(), Expect::Redirect),
        ("v4 minimal query (12-byte payload)", v4_frame(&[], S_V4, 53, 12), Expect::Redirect),
        ("v4 query with Ethernet padding", [base4.clone(), vec![0; 16]].concat(), Expect::Redirect),
        ("v4 query, one VLAN tag", v4_frame(&[10], S_V4, 53, 30), Expect::Redirect),
        ("v4 query, two VLAN tags", v4_frame(&[10, 20], S_V4, 53, 30), Expect::Pass),
        ("v4 query with IP options", [eth(0x0800, &[]), ipv4(S_V4, 17, &[1, 1, 1, 0], &udp(53, &query(30)))].concat(), Expect::Redirect),
        ("v4 other address", v4_frame(&[], S_V4_OTHER, 53, 30), Expect::Pass),
        ("v4 other port", v4_frame(&[], S_V4, 5353, 30), Expect::Pass),
        ("v4 TCP to port 53", [eth(0x0800, &[]), ipv4(S_V4, 6, &[], &udp(53, &query(30)))].concat(), Expect::Pass),
        ("v4 ICMP", [eth(0x0800, &[]), ipv4(S_V4, 1, &[], &[8, 0, 0, 0, 0, 1, 0, 1])].concat(), Expect::Pass),
        ("v4 first fragment (MF)", with(base4.clone(), &|f| f[20] = 0x20), Expect::Pass),
        ("v4 later fragment (offset)", with(base4.clone(), &|f| f[21] = 0x10), Expect::Pass),
        ("v4 IHL 4", with(base4.clone(), &|f| f[14] = 0x44), Expect::Malformed),
        ("v4 total length beyond the frame", with(base4.clone(), &|f| f[16..18].copy_from_slice(&200u16.to_be_bytes())), Expect::Malformed),
        (
            "v4 total length shorter than the headers",
            with(base4.clone(), &|f| f[16..18].copy_from_slice(&24u16.to_be_bytes())),
            Expect::Malformed,
        ),
        ("v4 UDP length 19 (no DNS header)", v4_frame(&[], S_V4, 53, 11), Expect::Malformed),
        (
            "v4 UDP length beyond the IP payload",
            with(base4.clone(), &|f| f[38..40].copy_from_slice(&100u16.to_be_bytes())),
            Expect::Malformed,
        ),
        ("v4 truncated in the UDP header", base4[..38].to_vec(), Expect::Malformed),
        ("v4 truncated in the IP header", base4[..24].to_vec(), Expect::Malformed),
        ("ARP", arp, Expect::Pass),
        ("v6 query", v6_frame(&[], S_V6, 53, 30), Expect::Redirect),
        ("v6 query, one VLAN tag", v6_frame(&[7], S_V6, 53, 30), Expect::Redirect),
        ("v6 other address", v6_frame(&[], C_V6, 53, 30), Expect::Pass),
        ("v6 other port", v6_frame(&[], S_V6, 853, 30), Expect::Pass),
        ("v6 extension header", [eth(0x86dd, &[]), ipv6(S_V6, 0, &hop_by_hop)].concat(), Expect::Pass),
        ("v6 ICMPv6 (ND)", [eth(0x86dd, &[]), ipv6(S_V6, 58, &[135, 0, 0, 0, 0, 0, 0, 0])].concat(), Expect::Pass),
        (
            "v6 payload length beyond the frame",
            with(v6_frame(&[], S_V6, 53, 30), &|f| f[18..20].copy_from_slice(&300u16.to_be_bytes())),
            Expect::Malformed,
        ),
        ("v6 UDP length 8", with(v6_frame(&[], S_V6, 53, 30), &|f| f[58..60].copy_from_slice(&8u16.to_be_bytes())), Expect::Malformed),
        ("v6 truncated header", v6_frame(&[], S_V6, 53, 30)[..40].to_vec(), Expect::Malformed),
    ];

    let reader = prog.counters();
    let mut want = QueueCounters { queue: u32::MAX, ..Default::default() };
    let mut failures = Vec::new();
    for (name, frame, expect) in &cases {
        let before = totals(&reader);
        let ret = test_run(&prog, frame);
        let d = delta(totals(&reader), before);
        let got = match (ret, d.redirected, d.passed, d.malformed) {
            (XDP_REDIRECT, 1, 0, 0) => Some(Expect::Redirect),
            (XDP_PASS, 0, 1, 0) => Some(Expect::Pass),
            (XDP_PASS, 0, 0, 1) => Some(Expect::Malformed),
            _ => None,
        };
        if got != Some(*expect) {
            failures.push(format!("{name}: want {expect:?}, got action {ret} counters {d:?}"));
        }
        match expect {
            Expect::Redirect => want.redirected += 1,
            Expect::Pass => want.passed += 1,
            Expect::Malformed => want.malformed += 1,
        }
    }
    assert!(failures.is_empty(), "misclassified:\n{}", failures.join("\n"));
    let t = totals(&reader);
    assert_eq!((t.redirected, t.passed, t.malformed, t.dropped), (want.redirected, want.passed, want.malformed, 0));

    // Without a socket on the queue, a query falls back to the kernel and counts as passed.
    prog.unregister_socket(0).unwrap();
    prog.unregister_socket(0).unwrap(); // idempotent
    let before = totals(&reader);
    assert_eq!(test_run(&prog, &base4), XDP_PASS);
    let d = delta(totals(&reader), before);
    assert_eq!((d.redirected, d.passed, d.malformed), (0, 1, 0));
}

#[test]
fn classify_port_and_wildcards() {
    require_root();
    // The port is configured (network byte order inside), wildcards match any address.
    let mut prog = XdpProgram::load("lo", &[IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)], 5353, None).unwrap();
    let xsk = unbound_xsk();
    prog.register_socket(0, xsk.as_raw_fd()).unwrap();
    assert_eq!(test_run(&prog, &v4_frame(&[], S_V4_OTHER, 5353, 30)), XDP_REDIRECT);
    assert_eq!(test_run(&prog, &v6_frame(&[], C_V6, 5353, 30)), XDP_REDIRECT);
    assert_eq!(test_run(&prog, &v4_frame(&[], S_V4, 53, 30)), XDP_PASS);
    assert_eq!(test_run(&prog, &v4_frame(&[], S_V4, 0xe914, 30)), XDP_PASS, "port byte order");

    // A v4-mapped IPv6 listen address also matches IPv4.
    let mut prog = XdpProgram::load("lo", &["::ffff:10.200.0.1".parse().unwrap()], 53, None).unwrap();
    prog.register_socket(0, xsk.as_raw_fd()).unwrap();
    assert_eq!(test_run(&prog, &v4_frame(&[], S_V4, 53, 30)), XDP_REDIRECT);
    assert_eq!(test_run(&prog, &v4_frame(&[], S_V4_OTHER, 53, 30)), XDP_PASS);
}

#[test]
fn api_errors() {
    require_root();
    let err = XdpProgram::load("kdns-nosuchif", &[], 53, None).unwrap_err();
    assert!(matches!(err, XdpError::InterfaceNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("not found"), "{err}");

    let mut prog = XdpProgram::load("lo", &[IpAddr::V4(S_V4)], 53, None).unwrap();
    assert_eq!(prog.ifname(), "lo");
    assert_eq!(prog.ifindex(), 1);
    let xsk = unbound_xsk();
    let err = prog.register_socket(MAX_QUEUES, xsk.as_raw_fd()).unwrap_err();
    assert!(matches!(err, XdpError::QueueOutOfRange { .. }), "{err:?}");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let err = prog.register_socket(0, udp.as_raw_fd()).unwrap_err();
    assert!(matches!(err, XdpError::NotAnXdpSocket { .. }), "{err:?}");

    let many: Vec<IpAddr> = (0..=MAX_LISTEN as u32).map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))).collect();
    let err = XdpProgram::load("lo", &many, 53, None).unwrap_err();
    assert!(matches!(err, XdpError::TooManyAddresses { .. }), "{err:?}");

    // Counters: every queue of the interface is listed, even at zero.
    let reader = prog.counters();
    let list = std::thread::spawn(move || reader.read().unwrap()).join().unwrap();
    assert_eq!(list.len() as u32, rx_queues("lo").unwrap().max(1));
    assert!(list.iter().all(|q| q.redirected + q.passed + q.malformed + q.dropped == 0));

    assert_eq!(parse_mac("02:fc:00:00:0a:Ff"), Some([2, 0xfc, 0, 0, 0x0a, 0xff]));
    assert_eq!(parse_mac("02:fc:00:00:0a"), None);
    assert_eq!(parse_mac("02:fc:00:00:0a:ff:01"), None);
    assert!(rx_queues("../x").is_err());
    assert!(mac_address("kdns-nosuchif").is_err());

    fn send_sync<T: Send + Sync>() {}
    send_sync::<CounterReader>();
    fn send<T: Send>() {}
    send::<XdpProgram>();
}

// ---------------------------------------------------- attached, with traffic

#[test]
fn attached_program_passes_kernel_traffic_and_counts_it() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let listen = [IpAddr::V4(S_V4), IpAddr::V6(S_V6)];
    let (mut prog, mode, queues, mac) = rig.in_server(|| {
        let mut prog = XdpProgram::load(S_IF, &listen, 53, None).unwrap();
        let mode = prog.attach().unwrap();
        (prog, mode, rx_queues(S_IF).unwrap(), mac_address(S_IF).unwrap())
    });
    assert_eq!(mode, AttachMode::Driver);
    assert_eq!(prog.attach().unwrap(), AttachMode::Driver, "attach is idempotent");
    assert_eq!(queues, 2);
    let link = rig.server_link();
    let shown_mac = link.split("link/ether ").nth(1).unwrap().split_whitespace().next().unwrap();
    assert_eq!(parse_mac(shown_mac), Some(mac));
    assert_eq!(rig.attached(), Some((prog.program_id(), false)), "{link}");
    assert!(link.contains(" xdp ") && link.contains("name kdns_xdp"), "{link}");

    let reader = prog.counters();
    assert_eq!(reader.read().unwrap().len(), 2);
    let before = totals(&reader);

    // UDP queries with no socket registered: the redirect falls back to the kernel.
    let srv4 = rig.server_udp("0.0.0.0:53".parse().unwrap());
    let srv6 = rig.server_udp(SocketAddr::new(IpAddr::V6(S_V6), 53));
    let cli4 = rig.client_udp(false);
    let cli6 = rig.client_udp(true);
    for _ in 0..3 {
        cli4.send_to(&query(30), (S_V4, 53)).unwrap();
        assert_eq!(received(&srv4), Some(30));
    }
    for _ in 0..2 {
        cli6.send_to(&query(40), (S_V6, 53)).unwrap();
        assert_eq!(received(&srv6), Some(40));
    }
    // Too short for a DNS header: counted malformed, still given to the kernel.
    cli4.send_to(&query(4), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv4), Some(4));

    // ARP (before the first packet), ICMP, ND + ICMPv6, TCP keep working.
    assert!(rig.ping(IpAddr::V4(S_V4)), "no ping reply over IPv4");
    assert!(rig.ping(IpAddr::V6(S_V6)), "no ping reply over IPv6");
    let listener = rig.in_server(|| TcpListener::bind("0.0.0.0:53").unwrap());
    let mut conn = rig.in_client(|| TcpStream::connect_timeout(&SocketAddr::new(IpAddr::V4(S_V4), 53), Duration::from_secs(3)).unwrap());
    conn.write_all(b"hello over tcp").unwrap();
    let (mut accepted, _) = listener.accept().unwrap();
    accepted.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 14];
    accepted.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello over tcp");

    let d = delta(totals(&reader), before);
    eprintln!("counters after kernel traffic: {:?}", reader.read().unwrap());
    assert_eq!(d.redirected, 0, "{d:?}");
    assert_eq!(d.malformed, 1, "{d:?}");
    assert_eq!(d.dropped, 0, "{d:?}");
    // 5 queries + 2 echo requests + 1 ARP + >= 3 TCP segments, at least.
    assert!(d.passed >= 11, "{d:?}");

    drop(prog);
    rig.wait_detached();
    assert!(rig.ping(IpAddr::V4(S_V4)));
    cli4.send_to(&query(30), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv4), Some(30));
    // The reader outlives the program.
    assert!(reader.read().is_ok());
}

#[test]
fn registered_sockets_get_the_queries_and_only_them() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let listen = [IpAddr::V4(S_V4), IpAddr::V6(S_V6)];
    let mut prog = rig.in_server(|| {
        let mut prog = XdpProgram::load(S_IF, &listen, 53, None).unwrap();
        assert_eq!(prog.attach().unwrap(), AttachMode::Driver);
        prog
    });
    let xsks = [unbound_xsk(), unbound_xsk()];
    for (q, s) in xsks.iter().enumerate() {
        prog.register_socket(q as u32, s.as_raw_fd()).unwrap();
    }
    let reader = prog.counters();
    let srv4 = rig.server_udp("0.0.0.0:53".parse().unwrap());
    let srv4_other_port = rig.server_udp("0.0.0.0:5353".parse().unwrap());
    let srv6 = rig.server_udp(SocketAddr::new(IpAddr::V6(S_V6), 53));
    let cli4 = rig.client_udp(false);
    let cli6 = rig.client_udp(true);
    // Resolve neighbours first so the queries are single frames.
    assert!(rig.ping(IpAddr::V4(S_V4)) && rig.ping(IpAddr::V6(S_V6)));

    let before = totals(&reader);
    for _ in 0..3 {
        cli4.send_to(&query(30), (S_V4, 53)).unwrap();
    }
    cli6.send_to(&query(30), (S_V6, 53)).unwrap();
    assert_eq!(received(&srv4), None, "a query reached the kernel despite the socket");
    assert_eq!(received(&srv6), None, "a query reached the kernel despite the socket");
    let d = delta(totals(&reader), before);
    assert_eq!((d.redirected, d.malformed, d.dropped), (4, 0, 0), "{d:?}");

    // Not for us: other address, other port, fragments, short queries.
    let before = totals(&reader);
    cli4.send_to(&query(30), (S_V4_OTHER, 53)).unwrap();
    assert_eq!(received(&srv4), Some(30), "query to a non-listen address");
    cli4.send_to(&query(30), (S_V4, 5353)).unwrap();
    assert_eq!(received(&srv4_other_port), Some(30), "query to another port");
    cli4.send_to(&query(3000), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv4), Some(3000), "IPv4 fragments");
    cli6.send_to(&query(3000), (S_V6, 53)).unwrap();
    assert_eq!(received(&srv6), Some(3000), "IPv6 fragments");
    cli4.send_to(&query(5), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv4), Some(5), "short query");
    let d = delta(totals(&reader), before);
    assert_eq!((d.redirected, d.malformed), (0, 1), "{d:?}");
    assert!(d.passed >= 2 + 3 + 3, "{d:?}");

    // Unregistered: back to the kernel.
    prog.unregister_socket(0).unwrap();
    prog.unregister_socket(1).unwrap();
    let before = totals(&reader);
    cli4.send_to(&query(30), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv4), Some(30));
    let d = delta(totals(&reader), before);
    assert_eq!(d.redirected, 0, "{d:?}");
}

#[test]
fn stale_netlink_programs_are_replaced() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let obj = std::env::temp_dir().join(format!("kdns-xdp-test-{}-{}.o", std::process::id(), rig.server.name()));
    std::fs::write(&obj, OBJECT).unwrap();
    struct Rm(std::path::PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _rm = Rm(obj.clone());
    let obj = obj.to_str().unwrap();

    for stale_mode in ["xdpgeneric", "xdpdrv"] {
        ip(&["-n", rig.server.name(), "link", "set", "dev", S_IF, stale_mode, "obj", obj, "sec", "xdp"]);
        let (stale_id, generic) = rig.attached().expect("the stale program is attached");
        assert_eq!(generic, stale_mode == "xdpgeneric");

        let (prog, logs) = rig.in_server(|| {
            let (logs, _guard) = Logs::capture();
            let mut prog = XdpProgram::load(S_IF, &[IpAddr::V4(S_V4)], 53, None).unwrap();
            assert_eq!(prog.attach().unwrap(), AttachMode::Driver);
            (prog, logs.text())
        });
        eprintln!("{stale_mode}: {logs}");
        let want = format!("removed stale XDP program {stale_id} (kdns_xdp) from {S_IF}");
        assert!(logs.contains(&want), "no {want:?} in the log: {logs}");
        assert_eq!(rig.attached(), Some((prog.program_id(), false)), "{}", rig.server_link());
        drop(prog);
        rig.wait_detached();
    }
}

#[test]
fn a_live_link_is_reported_not_removed() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let (first, second) = rig.in_server(|| {
        let mut first = XdpProgram::load(S_IF, &[IpAddr::V4(S_V4)], 53, None).unwrap();
        first.attach().unwrap();
        let mut second = XdpProgram::load(S_IF, &[IpAddr::V4(S_V4)], 53, None).unwrap();
        let err = second.attach().unwrap_err();
        let text = err.to_string();
        eprintln!("{text}");
        assert!(matches!(err, XdpError::HeldByLink { .. }), "{err:?}");
        assert!(text.contains(&format!("XDP program {} (kdns_xdp)", first.program_id())), "{text}");
        assert!(text.contains(&format!("held by process {}", std::process::id())), "{text}");
        (first, second)
    });
    assert_eq!(rig.attached(), Some((first.program_id(), false)), "the first program stays");
    drop(first);
    rig.wait_detached();
    let mut second = second;
    rig.in_server(|| assert_eq!(second.attach().unwrap(), AttachMode::Driver));
    assert_eq!(rig.attached(), Some((second.program_id(), false)));
}

#[test]
fn too_few_rx_queues_fall_back_to_generic_mode() {
    require_root();
    // Server end: 1 rx queue, the peer sends on 2 tx queues: native XDP says ENOSPC.
    let rig = Rig::new((1, 1), (2, 2));
    let (prog, mode, logs) = rig.in_server(|| {
        let (logs, _guard) = Logs::capture();
        let mut prog = XdpProgram::load(S_IF, &[IpAddr::V4(S_V4)], 53, None).unwrap();
        let mode = prog.attach().unwrap();
        (prog, mode, logs.text())
    });
    eprintln!("{logs}");
    assert_eq!(mode, AttachMode::Generic);
    assert!(logs.contains("veth needs as many rx queues as its peer has tx queues"), "{logs}");
    assert_eq!(rig.attached(), Some((prog.program_id(), true)), "{}", rig.server_link());

    let reader = prog.counters();
    let srv4 = rig.server_udp("0.0.0.0:53".parse().unwrap());
    let cli4 = rig.client_udp(false);
    let before = totals(&reader);
    cli4.send_to(&query(30), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv4), Some(30));
    let d = delta(totals(&reader), before);
    assert!(d.passed >= 1 && d.redirected == 0, "{d:?}");
    drop(prog);
    rig.wait_detached();
}

/// Child half of `sigkill_leaves_nothing_attached` and of the pinning
/// tests: attaches in the namespace it was started in (pinned under
/// `KDNS_XDP_TEST_PIN_DIR` if set), registers an unbound AF_XDP socket on
/// every queue, reports, and waits to be killed.
#[test]
#[ignore = "run by sigkill_leaves_nothing_attached in a child process"]
fn child_attach_and_wait() {
    if std::env::var_os("KDNS_XDP_TEST_CHILD").is_none() {
        return;
    }
    let pin_dir = std::env::var_os("KDNS_XDP_TEST_PIN_DIR").map(std::path::PathBuf::from);
    let mut prog = XdpProgram::load_pinned(S_IF, &[IpAddr::V4(S_V4)], 53, None, pin_dir.as_deref(), None).unwrap();
    prog.attach().unwrap();
    let xsks: Vec<OwnedFd> = (0..rx_queues(S_IF).unwrap()).map(|_| unbound_xsk()).collect();
    for (q, x) in xsks.iter().enumerate() {
        prog.register_socket(q as u32, x.as_raw_fd()).unwrap();
    }
    println!("ATTACHED {} {}", prog.program_id(), prog.link_info().unwrap().id);
    io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// A child process running `child_attach_and_wait` in the server
/// namespace; killed and reaped on drop.
pub(super) struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Child {
    /// Starts it and waits for its report: (program id, link id).
    pub(super) fn attach(rig: &Rig, pin_dir: Option<&std::path::Path>) -> (Child, u32, u32) {
        use std::io::BufRead;
        use std::process::Stdio;
        // Test names lack the crate name that module_path! starts with.
        let module = module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", rig.server.name()])
            .arg(std::env::current_exe().unwrap())
            .args(["--exact", &format!("{module}::child_attach_and_wait"), "--ignored", "--nocapture", "--test-threads=1"])
            .env("KDNS_XDP_TEST_CHILD", "1")
            .stdout(Stdio::piped());
        if let Some(d) = pin_dir {
            cmd.env("KDNS_XDP_TEST_PIN_DIR", d);
        }
        let mut child = Child(cmd.spawn().unwrap());
        let stdout = child.0.stdout.take().unwrap();
        let (id, link) = std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                let rest = l.split("ATTACHED ").nth(1)?.to_owned();
                let mut it = rest.split_whitespace().map(|n| n.parse::<u32>().unwrap());
                Some((it.next()?, it.next()?))
            })
            .expect("the child did not attach");
        (child, id, link)
    }

    /// SIGKILL (`ip netns exec` execs the test binary: this is the attacher itself).
    pub(super) fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

#[test]
fn sigkill_leaves_nothing_attached() {
    require_root();
    // Unpinned (xdp.pin_dir = ""): the program goes with its process.
    let rig = Rig::new((2, 2), (2, 2));
    let (child, id, _) = Child::attach(&rig, None);
    assert_eq!(rig.attached(), Some((id, false)));
    child.kill();
    rig.wait_detached();
}
