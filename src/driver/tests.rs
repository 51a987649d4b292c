//! The skeleton driven by a fake front end, with loopback sockets for the
//! backend side: no root, no namespaces. Each test asserts an outcome
//! within a generous deadline, never a timing.

use std::net::UdpSocket as StdUdp;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdns_core::engine::{Client, EngineConfig, TcpExchange, Transport, Verdict};
use kdns_core::upstream::{BackendId, BackendSpec};
use kdns_core::wire::{encode_name, flags, write_query, Class, Header, Message, Rcode, Rtype};

use super::*;

/// Records what the core hands back.
#[derive(Default)]
struct Fake {
    replies: Vec<(Client, Vec<u8>)>,
    /// Whether `ask_tcp` takes exchanges.
    carries_tcp: bool,
    tcp: Vec<(TcpExchange, SocketAddr, Vec<u8>)>,
    flushes: usize,
    stopped: bool,
    finished: bool,
}

impl FrontEnd for Fake {
    fn reply(&mut self, _io: &IoStats, client: Client, msg: &[u8]) {
        self.replies.push((client, msg.to_vec()));
    }
    fn ask_tcp(&mut self, _io: &IoStats, exchange: TcpExchange, addr: SocketAddr, query: &[u8]) -> bool {
        self.tcp.push((exchange, addr, query.to_vec()));
        self.carries_tcp
    }
    fn flush(&mut self, _io: &IoStats) {
        self.flushes += 1;
    }
    fn stop_listening(&mut self, _registry: &Registry) {
        self.stopped = true;
    }
    fn finish(&mut self, _io: &IoStats) {
        self.finished = true;
    }
}

const LONG: Duration = Duration::from_secs(10);

struct Rig {
    core: Core,
    handle: WorkerHandle,
    front: Fake,
    backend: StdUdp,
    stop: Arc<AtomicBool>,
}

fn rig(tweak: impl FnOnce(&mut EngineConfig)) -> Rig {
    let backend = StdUdp::bind("127.0.0.1:0").unwrap();
    backend.set_read_timeout(Some(LONG)).unwrap();
    let mut engine =
        EngineConfig { backends: vec![BackendSpec::new(backend.local_addr().unwrap())], source_ports: 2, ..Default::default() };
    tweak(&mut engine);
    let stop = Arc::new(AtomicBool::new(false));
    let setup = CoreSetup {
        id: 3,
        kind: WorkerKind::Udp,
        core: None,
        engine,
        ports: PortsConfig { slots: 16, rotate_after: 100, rotate_every: Duration::from_secs(10), query_deadline: Duration::from_secs(3) },
        answers: AnswerBatch { count: 8, size: 1232 },
        stop: Arc::clone(&stop),
    };
    let (core, handle) = Core::new(setup).unwrap();
    Rig { core, handle, front: Fake::default(), backend, stop }
}

fn client(transport: Transport) -> Client {
    Client { addr: "127.0.0.1:40000".parse().unwrap(), local: "127.0.0.1:53".parse().unwrap(), transport, tag: 5 }
}

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut qname = [0u8; 256];
    let n = encode_name(name, &mut qname).unwrap();
    let mut q = vec![0u8; 512];
    let len = write_query(&mut q, id, flags::RD, &qname[..n], Rtype::A, Class::IN, None).unwrap();
    q.truncate(len);
    q
}

/// The backend's answer to `q`: one A record, `tc` set or not, no OPT.
fn answer(q: &[u8], tc: bool) -> Vec<u8> {
    let m = Message::parse(q).unwrap();
    let mut a = q[..m.question.end()].to_vec();
    let f = flags::QR | flags::RD | flags::RA | if tc { flags::TC } else { 0 };
    a[2..4].copy_from_slice(&f.to_be_bytes());
    a[4..12].copy_from_slice(&[0, 1, 0, u8::from(!tc), 0, 0, 0, 0]);
    if !tc {
        a.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
    }
    a
}

impl Rig {
    /// What a front end does with a client's query.
    fn ask(&mut self, c: Client, q: &[u8]) -> Verdict {
        let now = self.core.now();
        let mut out = vec![0u8; 65_535];
        let v = self.core.engine.handle_query(now, &c, q, &mut out);
        if let Verdict::Forward { addr, len, port, .. } = v {
            self.core.backends.send(port, addr, &out[..len]);
        }
        v
    }

    /// The query the backend received, and where from.
    fn backend_gets(&self) -> (Vec<u8>, SocketAddr) {
        let mut buf = [0u8; 2048];
        let (n, from) = self.backend.recv_from(&mut buf).expect("the backend got the query");
        (buf[..n].to_vec(), from)
    }

    /// Turns until `done` holds or the deadline passes; false if it never did.
    fn turn_until(&mut self, mut done: impl FnMut(&Rig) -> bool) -> bool {
        let deadline = Instant::now() + LONG;
        let mut ready = Vec::new();
        while Instant::now() < deadline {
            self.core.wait(Duration::from_millis(20), &mut ready).unwrap();
            assert!(ready.is_empty(), "no front-end sockets registered");
            self.core.backend_answers(&mut self.front);
            if self.core.end_turn(&mut self.front) == Turn::Stop || done(self) {
                return done(self);
            }
        }
        false
    }
}

#[test]
fn a_miss_goes_out_on_a_source_port_and_its_answer_comes_back_then_is_a_hit() {
    let mut r = rig(|_| {});
    assert_eq!(r.core.backends.open_sockets(), 2);
    let q = query(0x4242, "www.example");
    assert!(matches!(r.ask(client(Transport::Udp), &q), Verdict::Forward { .. }));
    let (sent, from) = r.backend_gets();
    r.backend.send_to(&answer(&sent, false), from).unwrap();
    assert!(r.turn_until(|r| !r.front.replies.is_empty()), "the answer reached the front end");
    let (c, reply) = &r.front.replies[0];
    assert_eq!(*c, client(Transport::Udp));
    let h = Header::new_checked(&reply[..]).unwrap();
    assert_eq!((h.id(), h.rcode(), h.ancount()), (0x4242, Rcode::NOERROR, 1));
    assert!(matches!(r.ask(client(Transport::Udp), &q), Verdict::Reply(_)), "cached");
    let io = &r.handle.io;
    assert_eq!((io.backend_tx.load(Ordering::Relaxed), io.backend_rx.load(Ordering::Relaxed)), (1, 1));
    // The round-trip time landed in the backend's histogram.
    let (tx, rx) = crossbeam_channel::bounded(1);
    assert!(r.handle.send(Control::Snapshot(tx)));
    r.turn_until(|_| !rx.is_empty());
    let snap = rx.try_recv().expect("a snapshot");
    assert_eq!((snap.worker, snap.in_flight, snap.rtt_us[BackendId(0).index()].len()), (3, 0, 1));
}

#[test]
fn a_query_nobody_answers_gets_servfail_from_the_engine_timers() {
    let mut r = rig(|e| {
        e.try_timeout = Duration::from_millis(30);
        e.try_timeout_min = Duration::from_millis(10);
        e.query_deadline = Duration::from_millis(100);
        e.max_tries = 1;
    });
    r.ask(client(Transport::Udp), &query(7, "silent.example"));
    r.backend_gets();
    assert!(r.turn_until(|r| !r.front.replies.is_empty()));
    let h = Header::new_checked(&r.front.replies[0].1[..]).unwrap();
    assert_eq!((h.id(), h.rcode()), (7, Rcode::SERVFAIL));
    assert!(r.front.flushes > 0, "every turn flushes the front end");
}

#[test]
fn control_messages_flush_the_cache_and_install_records() {
    let mut r = rig(|_| {});
    let q = query(1, "www.example");
    r.ask(client(Transport::Udp), &q);
    let (sent, from) = r.backend_gets();
    r.backend.send_to(&answer(&sent, false), from).unwrap();
    assert!(r.turn_until(|r| !r.front.replies.is_empty()));
    assert!(matches!(r.ask(client(Transport::Udp), &q), Verdict::Reply(_)));
    assert!(r.handle.send(Control::FlushCache));
    r.turn_until(|r| r.core.engine.cache().is_empty());
    assert!(matches!(r.ask(client(Transport::Udp), &q), Verdict::Forward { .. }), "asked again after the flush");
    let cfg = kdns_core::records::RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, serial: 9, ..Default::default() };
    let snap = Arc::new(kdns_core::records::Snapshot::build(&cfg).unwrap());
    assert!(r.handle.send(Control::Records(snap)));
    assert!(r.turn_until(|r| r.handle.io.records_serial.get() == 9), "the records serial is acknowledged");
}

#[test]
fn a_stopping_worker_waits_for_queries_in_flight_then_counts_the_lost_ones() {
    let mut r = rig(|_| {});
    r.core.set_drain(Duration::from_millis(200));
    r.ask(client(Transport::Udp), &query(1, "slow.example"));
    r.stop.store(true, Ordering::Relaxed);
    assert!(matches!(r.core.end_turn(&mut r.front), Turn::Continue { .. }), "drains first");
    assert!(r.front.stopped && r.core.stopping() && !r.front.finished);
    assert!(!r.turn_until(|_| false), "stopped before the deadline");
    assert!(r.front.finished);
    assert_eq!(r.handle.io.lost_at_shutdown.load(Ordering::Relaxed), 1);
    // With nothing in flight it stops at once.
    let mut r = rig(|_| {});
    r.stop.store(true, Ordering::Relaxed);
    assert_eq!(r.core.end_turn(&mut r.front), Turn::Stop);
    assert_eq!(r.handle.io.lost_at_shutdown.load(Ordering::Relaxed), 0);
}

/// A TCP client's truncated answer: the core hands the engine's TCP
/// exchange to the front end, and the front end's answer goes back in.
#[test]
fn a_truncated_answer_for_a_tcp_client_becomes_a_tcp_exchange_of_the_front_end() {
    let mut r = rig(|_| {});
    r.front.carries_tcp = true;
    r.ask(client(Transport::Tcp), &query(0x77, "big.example"));
    let (sent, from) = r.backend_gets();
    r.backend.send_to(&answer(&sent, true), from).unwrap();
    assert!(r.turn_until(|r| !r.front.tcp.is_empty()), "asked over TCP");
    assert!(r.front.replies.is_empty(), "the truncated answer is not passed on");
    let (ex, addr, tcp_query) = r.front.tcp[0].clone();
    assert_eq!(addr, r.backend.local_addr().unwrap());
    let now = r.core.now();
    let v = r.core.engine.handle_tcp_answer(now, ex, addr, &answer(&tcp_query, false), &mut r.core.out);
    let kdns_core::engine::AnswerVerdict::Reply { client: c, len } = v else { panic!("not accepted: {v:?}") };
    assert_eq!(c.transport, Transport::Tcp);
    assert_eq!(Header::new_checked(&r.core.out[..len]).unwrap().id(), 0x77);
    // A front end that cannot carry it: the client gets SERVFAIL at once.
    let mut r = rig(|_| {});
    r.ask(client(Transport::Tcp), &query(0x78, "big.example"));
    let (sent, from) = r.backend_gets();
    r.backend.send_to(&answer(&sent, true), from).unwrap();
    assert!(r.turn_until(|r| !r.front.replies.is_empty()));
    assert_eq!(r.front.tcp.len(), 1);
    assert_eq!(Header::new_checked(&r.front.replies[0].1[..]).unwrap().rcode(), Rcode::SERVFAIL);
    assert_eq!(r.core.engine.stats().tcp_retry_failures.get(), 1);
}
