//! The source-port pool on loopback: a plain UDP socket stands for the
//! backend, answers (and spoofed ones) are sent back to the ports it saw.

use std::collections::HashSet;
use std::net::UdpSocket as StdUdp;

use mio::{Events, Poll};

use super::*;

const BASE: usize = 1 << 20;

struct Rig {
    poll: Poll,
    events: Events,
    backend: StdUdp,
    ports: SourcePorts,
    io: Arc<IoStats>,
}

fn rig(cfg: PortsConfig) -> Rig {
    let backend = StdUdp::bind("127.0.0.1:0").unwrap();
    backend.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let poll = Poll::new().unwrap();
    let io = Arc::new(IoStats::default());
    let ports = SourcePorts::new(&cfg, &[backend.local_addr().unwrap()], poll.registry(), BASE, Arc::clone(&io)).unwrap();
    Rig { poll, events: Events::with_capacity(64), backend, ports, io }
}

impl Rig {
    fn to(&self) -> SocketAddr {
        self.backend.local_addr().unwrap()
    }

    /// Sends `msg` from `slot`; returns the source port the backend saw.
    fn send(&mut self, slot: u16, msg: &[u8], now: Instant) -> SocketAddr {
        let to = self.to();
        self.ports.send(slot, to, msg, now).unwrap();
        let mut b = [0u8; 64];
        let (n, from) = self.backend.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], msg);
        from
    }

    /// Waits for readiness and reads every ready socket: (slot, bytes, source).
    fn receive(&mut self) -> Vec<(u16, Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let end = Instant::now() + Duration::from_secs(2);
        while got.is_empty() && Instant::now() < end {
            self.poll.poll(&mut self.events, Some(Duration::from_millis(100))).unwrap();
            for e in self.events.iter() {
                assert!(self.ports.readable(e.token()), "token {:?} is not the pool's", e.token());
            }
            while let Some(r) = self.ports.next_ready() {
                let mut b = [0u8; 64];
                while let Ok((n, from)) = self.ports.recv_from(r.id, &mut b) {
                    got.push((r.slot, b[..n].to_vec(), from));
                }
            }
        }
        got
    }
}

fn cfg(slots: u16, rotate_after: u32) -> PortsConfig {
    PortsConfig { slots, rotate_after, rotate_every: Duration::ZERO, query_deadline: Duration::from_millis(300) }
}

#[test]
fn every_slot_has_its_own_random_port() {
    let mut r = rig(cfg(16, 0));
    assert_eq!(r.ports.slots(), 16);
    assert_eq!(r.ports.open_sockets(), 16);
    let now = Instant::now();
    let seen: HashSet<u16> = (0..16).map(|s| r.send(s, b"q", now).port()).collect();
    assert_eq!(seen.len(), 16, "{seen:?}");
    assert_eq!(seen, r.ports.ports().into_iter().collect());
    assert_eq!(IoStats::get(&r.io.upstream_sockets_opened), 16);
    assert_eq!(IoStats::get(&r.io.upstream_sockets_open), 16);
    // A slot number past the end wraps around instead of failing.
    assert_eq!(r.send(16 + 3, b"q", now).port(), r.send(3, b"q", now).port());
}

#[test]
fn answers_come_back_with_the_slot_they_arrived_on() {
    let mut r = rig(cfg(4, 0));
    let now = Instant::now();
    let from2 = r.send(2, b"query", now);
    r.backend.send_to(b"answer", from2).unwrap();
    let got = r.receive();
    assert_eq!(got, vec![(2, b"answer".to_vec(), r.to())]);
}

/// The spoofer's case: an answer to a query sent from slot 1, aimed at
/// slot 3's port, is reported on slot 3, so the engine (which remembers
/// slot 1) drops it as `answer_wrong_port`.
#[test]
fn an_answer_sent_to_another_slots_port_reports_that_slot() {
    let mut r = rig(cfg(4, 0));
    let now = Instant::now();
    let _asked_from = r.send(1, b"query", now);
    let other = r.send(3, b"other", now);
    let spoofer = StdUdp::bind("127.0.0.1:0").unwrap();
    spoofer.send_to(b"spoof", other).unwrap();
    let got = r.receive();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 3);
    assert_eq!(got[0].2, spoofer.local_addr().unwrap(), "the source is reported as it was, for the engine's check");
}

#[test]
fn rotation_gives_a_fresh_port_and_the_old_one_is_still_read_until_the_deadline() {
    let mut r = rig(cfg(2, 3));
    let t0 = Instant::now();
    let first = r.send(0, b"q1", t0);
    assert_eq!(r.send(0, b"q2", t0), first);
    // The third query leaves from the old port and then the slot rotates.
    assert_eq!(r.send(0, b"q3", t0), first);
    let second = r.send(0, b"q4", t0);
    assert_ne!(second.port(), first.port());
    assert_eq!(IoStats::get(&r.io.upstream_rotations), 1);
    assert_eq!(r.ports.open_sockets(), 3, "two current sockets and one lingering");
    // A late answer to q3 on the old port: still read, as slot 0.
    r.backend.send_to(b"late", first).unwrap();
    assert_eq!(r.receive(), vec![(0, b"late".to_vec(), r.to())]);
    // Past the deadline (300 ms + margin) the old socket is closed.
    r.ports.tick(t0 + Duration::from_millis(200));
    assert_eq!(r.ports.open_sockets(), 3);
    r.ports.tick(t0 + Duration::from_millis(900));
    assert_eq!(r.ports.open_sockets(), 2);
    assert_eq!(IoStats::get(&r.io.upstream_sockets_open), 2);
}

#[test]
fn rotation_by_age() {
    let mut r = rig(PortsConfig { rotate_every: Duration::from_secs(5), ..cfg(3, 0) });
    let before = r.ports.ports();
    let t0 = Instant::now();
    r.ports.tick(t0 + Duration::from_secs(1));
    assert_eq!(r.ports.ports(), before);
    r.ports.tick(t0 + Duration::from_secs(6));
    let after = r.ports.ports();
    assert!(before.iter().zip(&after).all(|(a, b)| a != b), "{before:?} -> {after:?}");
    assert_eq!(IoStats::get(&r.io.upstream_rotations), 3);
}

#[test]
fn a_slot_keeps_at_most_max_lingering_old_sockets() {
    let mut r = rig(cfg(1, 1));
    let t0 = Instant::now();
    let mut ports = HashSet::new();
    for _ in 0..(MAX_LINGERING + 3) {
        ports.insert(r.send(0, b"q", t0).port());
    }
    assert_eq!(r.ports.open_sockets(), 1 + MAX_LINGERING);
    assert_eq!(ports.len(), 1 + MAX_LINGERING);
    assert_eq!(IoStats::get(&r.io.upstream_rotations), MAX_LINGERING as u64);
    assert_eq!(IoStats::get(&r.io.upstream_rotations_deferred), 3);
    // Once the old ones are closed, rotation goes on.
    r.ports.tick(t0 + Duration::from_secs(1));
    assert_eq!(r.ports.open_sockets(), 1);
    let p = r.send(0, b"q", t0 + Duration::from_secs(1));
    assert_ne!(r.send(0, b"q", t0 + Duration::from_secs(1)), p);
}

#[test]
fn ipv4_and_ipv6_backends_get_a_socket_each_per_slot() {
    let poll = Poll::new().unwrap();
    let io = Arc::new(IoStats::default());
    let b: Vec<SocketAddr> = vec!["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()];
    let Ok(p) = SourcePorts::new(&cfg(4, 0), &b, poll.registry(), BASE, io) else {
        return; // no IPv6 here
    };
    assert_eq!(p.open_sockets(), 8);
    assert_eq!(PortsConfig { slots: 4, ..cfg(4, 0) }.max_sockets(2), 4 * 2 * (1 + MAX_LINGERING));
}

#[test]
fn tokens_outside_the_pool_are_not_claimed() {
    let mut r = rig(cfg(2, 0));
    assert!(!r.ports.readable(Token(0)));
    assert!(!r.ports.readable(Token(BASE + 1000)));
    assert!(r.ports.readable(Token(BASE)));
    assert!(r.ports.has_ready());
    let ready = r.ports.next_ready().unwrap();
    assert_eq!(ready.slot, 0);
    let mut b = [0u8; 8];
    assert_eq!(r.ports.recv_from(ready.id, &mut b).unwrap_err().kind(), io::ErrorKind::WouldBlock);
}
