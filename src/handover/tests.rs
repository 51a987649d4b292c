//! The exchange between two handover ends in one process, with a stand-in
//! main thread answering the server's events.

use std::net::UdpSocket;
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver};

use super::protocol::{self, Msg, SocketDesc, Transport};
use super::*;

struct Old {
    server: Option<Server>,
    events: Receiver<Event>,
    udp: UdpSocket,
}

fn old(dir: &tempfile::TempDir) -> (Old, PathBuf) {
    let path = dir.path().join("handover.sock");
    let (tx, rx) = unbounded();
    let server = Server::spawn(&path, tx).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    (Old { server: Some(server), events: rx, udp }, path)
}

impl Old {
    /// Answers events like the daemon would until `HandedOver` or `Aborted`.
    fn answer(&self) -> Event {
        loop {
            match self.events.recv_timeout(Duration::from_secs(10)).expect("an event") {
                Event::Listeners(reply) => {
                    let fd = OwnedFd::from(self.udp.try_clone().unwrap());
                    let desc = SocketDesc { transport: Transport::Udp, addr: self.udp.local_addr().unwrap() };
                    reply.send(Ok((7, vec![(desc, fd)]))).unwrap();
                }
                Event::Release(reply) => reply.send(Ok((b"cache bytes".to_vec(), 2))).unwrap(),
                e => return e,
            }
        }
    }
}

#[test]
fn a_takeover_receives_the_same_socket_and_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let (old, path) = old(&dir);
    assert!(running(&path));
    std::thread::scope(|sc| {
        let answered = sc.spawn(|| old.answer());
        let (mut t, socks) = Takeover::start(&path).unwrap().expect("a kdns answers");
        assert_eq!(t.generation, 7);
        assert_eq!(t.from_pid, std::process::id());
        assert_eq!(socks.len(), 1);
        let (desc, fd) = socks.into_iter().next().unwrap();
        let got = UdpSocket::from(fd);
        assert_eq!(got.local_addr().unwrap(), old.udp.local_addr().unwrap());
        assert_eq!(desc.addr, old.udp.local_addr().unwrap());
        // The same kernel socket: a datagram sent to it is read through
        // the received descriptor.
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(b"q", desc.addr).unwrap();
        got.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(got.recv(&mut b).unwrap(), 1);
        assert_eq!(t.release().unwrap(), b"cache bytes");
        let rec = t.done(Duration::from_millis(100)).unwrap();
        assert_eq!((rec.sockets, rec.cache_bytes, rec.queues), (1, 11, 2));
        match answered.join().unwrap() {
            Event::HandedOver { pid } => assert_eq!(pid, std::process::id()),
            e => panic!("expected HandedOver, got {e:?}"),
        }
    });
    let mut old = old;
    old.server.take().unwrap().shutdown(true);
}

#[test]
fn hanging_up_after_the_release_gives_the_queues_back() {
    let dir = tempfile::tempdir().unwrap();
    let (old, path) = old(&dir);
    std::thread::scope(|sc| {
        let answered = sc.spawn(|| old.answer());
        let (mut t, _) = Takeover::start(&path).unwrap().unwrap();
        t.release().unwrap();
        t.abandon("cannot attach");
        match answered.join().unwrap() {
            Event::Aborted { reason, .. } => assert!(reason.contains("cannot attach"), "{reason}"),
            e => panic!("expected Aborted, got {e:?}"),
        }
    });
    let mut old = old;
    old.server.take().unwrap().shutdown(false);
    assert!(!path.exists(), "the socket file is removed at a stop without handover");
}

#[test]
fn a_check_and_a_foreign_protocol_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old, path) = old(&dir);
    // A connection that says nothing (`running`), then another protocol.
    assert!(running(&path));
    let s = UnixStream::connect(&path).unwrap();
    protocol::send(&s, &Msg::Hello { protocol: 99, pid: 1, version: "x".into(), sockets_only: false }, &[]).unwrap();
    match protocol::recv(&s).unwrap().0 {
        Msg::Refused { reason } => assert!(reason.contains("protocol 99"), "{reason}"),
        m => panic!("expected refused, got {m:?}"),
    }
    // Still answering: a real takeover goes through.
    std::thread::scope(|sc| {
        let answered = sc.spawn(|| old.answer());
        let (mut t, _) = Takeover::start(&path).unwrap().unwrap();
        t.release().unwrap();
        t.done(Duration::from_millis(100)).unwrap();
        assert!(matches!(answered.join().unwrap(), Event::HandedOver { .. }));
    });
    assert!(old.events.try_recv().is_err(), "no event for the check nor the refusal");
    let mut old = old;
    old.server.take().unwrap().shutdown(true);
}

#[test]
fn no_kdns_means_no_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nobody.sock");
    assert!(!running(&path));
    assert!(Takeover::start(&path).unwrap().is_none());
    // A stale file nobody listens on.
    drop(UnixListener::bind(&path).unwrap());
    assert!(Takeover::start(&path).unwrap().is_none());
}

#[test]
fn copying_the_sockets_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (old, path) = old(&dir);
    let (pid, socks) = std::thread::scope(|sc| {
        // The old side answers the listeners request and nothing more.
        let answered = sc.spawn(|| match old.events.recv_timeout(Duration::from_secs(10)).expect("an event") {
            Event::Listeners(reply) => {
                let fd = OwnedFd::from(old.udp.try_clone().unwrap());
                let desc = SocketDesc { transport: Transport::Udp, addr: old.udp.local_addr().unwrap() };
                reply.send(Ok((3, vec![(desc, fd)]))).unwrap();
            }
            e => panic!("expected Listeners, got {e:?}"),
        });
        let got = copy_sockets(&path).unwrap().expect("a kdns answers");
        answered.join().unwrap();
        got
    });
    assert_eq!(pid, std::process::id());
    assert_eq!(socks.len(), 1);
    let (desc, fd) = socks.into_iter().next().unwrap();
    let copy = UdpSocket::from(fd);
    assert_eq!(copy.local_addr().unwrap(), old.udp.local_addr().unwrap());
    assert_eq!(desc.addr, old.udp.local_addr().unwrap());
    // No release was asked for, and the old one still answers a takeover.
    std::thread::scope(|sc| {
        let answered = sc.spawn(|| old.answer());
        let (mut t, _) = Takeover::start(&path).unwrap().unwrap();
        assert_eq!(t.generation, 7);
        t.release().unwrap();
        t.done(Duration::from_millis(100)).unwrap();
        assert!(matches!(answered.join().unwrap(), Event::HandedOver { .. }));
    });
    let mut old = old;
    old.server.take().unwrap().shutdown(true);
}

#[test]
fn shutdown_returns_when_the_socket_file_is_gone_or_taken() {
    // Gone with its directory (a test's temp dir, a cleaned /run), or
    // replaced by a newer kdns's socket: nothing can wake the thread by
    // connecting to the path, and the stop must not hang on it.
    for replace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (mut o, path) = old(&dir);
        std::fs::remove_file(&path).unwrap();
        let _newer = replace.then(|| UnixListener::bind(&path).unwrap());
        let server = o.server.take().unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            server.shutdown(false);
            let _ = tx.send(());
        });
        assert!(rx.recv_timeout(Duration::from_secs(20)).is_ok(), "shutdown hung (socket file replaced: {replace})");
    }
}
