//! Where the listening sockets come from: bound by kdns, passed by systemd
//! (socket activation, `deploy/kdns.socket`), or received from another
//! kdns (a planned handover sends them over a unix socket).
//!
//! [`Listeners`] holds one descriptor of each socket for the life of the
//! process; the workers get duplicates. Sockets held outside the process
//! (systemd's) outlive it: when kdns dies, queries wait in their buffers
//! (`server.udp_receive_buffer`) and TCP connections in the accept queue
//! until the next kdns, started on the same sockets, reads them. So with
//! socket activation every listener must come from systemd: the passed
//! sockets and `server.listen` must name the same addresses, a UDP socket
//! for each and a TCP one too while `tcp.enabled`; anything missing or
//! extra is an error naming the address.
//!
//! kdns's own UDP sockets are one SO_REUSEPORT socket per worker and
//! address (the kernel spreads clients over the workers). A passed UDP
//! socket is read by every UDP worker (each holds a duplicate) rather than
//! split with SO_REUSEPORT sockets of kdns's own: those would die with the
//! process and take their queued queries with them. The workers then share
//! one receive queue; with AF_XDP the fast path is the XDP sockets anyway
//! and one socket worker reads the kernel's share.
//!
//! Sockets received in a handover may hold several UDP sockets per address
//! (the old process's SO_REUSEPORT group): [`Listeners::udp`] gives every
//! one of them to some worker, so none is left unread.

use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};

use kdns_sys::listen_fds::{self, ListenFd, Transport};

/// The send buffer of every listening UDP socket, bytes.
const SEND_BUFFER: usize = 4 << 20;

/// Where the sockets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// kdns bound them.
    Bound,
    /// Passed at start (`LISTEN_FDS`): systemd, or `kdns --supervise`.
    Passed,
    /// Another kdns handed them over.
    Handover,
}

/// One listening socket.
#[derive(Debug)]
struct Held {
    transport: Transport,
    local: SocketAddr,
    fd: OwnedFd,
    /// For messages: `udp 10.0.0.1:53 (descriptor 3, "kdns.socket")`.
    what: String,
}

/// The listening sockets of this process.
#[derive(Debug)]
pub struct Listeners {
    held: Vec<Held>,
    origin: Origin,
}

impl Listeners {
    /// The sockets passed at start, by systemd or `kdns --supervise` (none: `Ok(None)`, kdns binds its own
    /// with [`Listeners::bind`]), checked against `listen` (and `tcp`:
    /// whether TCP is served).
    pub fn activated(passed: Vec<ListenFd>, listen: &[SocketAddr], tcp: bool) -> Result<Option<Listeners>, String> {
        if passed.is_empty() {
            return Ok(None);
        }
        let held: Vec<Held> =
            passed.into_iter().map(|p| Held { what: p.describe(), transport: p.transport, local: p.local, fd: p.fd }).collect();
        // Several UDP sockets on one address: the SO_REUSEPORT group that
        // `kdns --supervise` holds for io = "udp".
        check(&held, listen, tcp, true).map_err(|e| format!("socket activation: {e}"))?;
        Ok(Some(Listeners { held, origin: Origin::Passed }))
    }

    /// Sockets received from another kdns, each with the transport and
    /// address the sender said; checked against what the socket itself
    /// says, and against `listen` and `tcp` (several UDP sockets on one
    /// address are a SO_REUSEPORT group).
    pub fn from_fds(fds: Vec<(Transport, SocketAddr, OwnedFd)>, listen: &[SocketAddr], tcp: bool) -> Result<Listeners, String> {
        let mut held = Vec::with_capacity(fds.len());
        for (i, (transport, local, fd)) in fds.into_iter().enumerate() {
            let what = format!("{transport} {local} (handed over, #{i})");
            let (t, l) = listen_fds::identify(fd.as_fd()).map_err(|e| format!("handover: {what}: {e}"))?;
            if t != transport || !same(l, local) {
                return Err(format!("handover: {what} is a {t} socket on {l}"));
            }
            held.push(Held { transport, local, fd, what });
        }
        if held.is_empty() {
            return Err("handover: no socket received".into());
        }
        check(&held, listen, tcp, true).map_err(|e| format!("handover: {e}"))?;
        Ok(Listeners { held, origin: Origin::Handover })
    }

    /// Binds kdns's own sockets: `udp_per_addr` SO_REUSEPORT UDP sockets on
    /// each of `listen` (one per UDP worker), and a TCP listener on each
    /// while `tcp`. The error names the address.
    pub fn bind(listen: &[SocketAddr], tcp: bool, udp_per_addr: usize) -> Result<Listeners, String> {
        let mut held = Vec::new();
        for &addr in listen {
            for _ in 0..udp_per_addr.max(1) {
                let s = reuseport_udp(addr).map_err(|e| format!("cannot listen on udp {addr}: {e}{}", hint(&e)))?;
                held.push(Held { transport: Transport::Udp, local: addr, fd: s.into(), what: format!("udp {addr}") });
            }
            if tcp {
                let l = crate::tcp::tcp_listener(addr).map_err(|e| format!("cannot listen on tcp {addr}: {e}{}", hint(&e)))?;
                held.push(Held { transport: Transport::Tcp, local: addr, fd: l.into(), what: format!("tcp {addr}") });
            }
        }
        Ok(Listeners { held, origin: Origin::Bound })
    }

    /// Where the sockets came from.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Every socket's descriptor, in order (to pass them on).
    pub fn borrowed(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.held.iter().map(|h| h.fd.as_fd()).collect()
    }

    /// Every socket, for messages.
    pub fn describe(&self) -> String {
        self.held.iter().map(|h| h.what.as_str()).collect::<Vec<_>>().join(", ")
    }

    /// Sets the receive buffer of every UDP socket to `bytes` (systemd's
    /// `ReceiveBuffer=` may have set it already; logs a socket that got
    /// less, and why), and its send buffer to [`SEND_BUFFER`].
    pub fn set_udp_receive_buffer(&self, bytes: usize) {
        for h in self.held.iter().filter(|h| h.transport == Transport::Udp) {
            match listen_fds::set_receive_buffer(h.fd.as_fd(), bytes) {
                Ok(got) if got < bytes => tracing::warn!(
                    "{}: receive buffer {got} bytes, not the {bytes} of server.udp_receive_buffer (without root it is capped by net.core.rmem_max: raise that sysctl or run with CAP_NET_ADMIN)",
                    h.what
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("{}: cannot set its receive buffer to {bytes} bytes: {e}", h.what),
            }
            // As kdns's own sockets have: passed ones keep the system's
            // default, which a restart's backlog, answered in bursts, fills.
            if let Err(e) = listen_fds::set_send_buffer(h.fd.as_fd(), SEND_BUFFER) {
                tracing::warn!("{}: cannot set its send buffer to {SEND_BUFFER} bytes: {e}", h.what);
            }
        }
    }

    /// The UDP sockets worker `worker` of `workers` reads on `addr`,
    /// non-blocking duplicates: with as many sockets as workers or more,
    /// every `workers`-th one from its index (so each socket has a
    /// reader); with fewer, one shared with other workers.
    pub fn udp(&self, addr: SocketAddr, worker: usize, workers: usize) -> io::Result<Vec<UdpSocket>> {
        let mine: Vec<&Held> = self.held.iter().filter(|h| h.transport == Transport::Udp && same(h.local, addr)).collect();
        if mine.is_empty() {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("no udp socket on {addr}")));
        }
        let workers = workers.max(1);
        let picked: Vec<&Held> = if mine.len() >= workers {
            mine.iter().copied().skip(worker % workers).step_by(workers).collect()
        } else {
            vec![mine[worker % mine.len()]]
        };
        picked
            .into_iter()
            .map(|h| {
                let s = UdpSocket::from(h.fd.try_clone()?);
                s.set_nonblocking(true)?;
                Ok(s)
            })
            .collect()
    }

    /// The TCP listener on `addr`, a non-blocking duplicate.
    pub fn tcp(&self, addr: SocketAddr) -> io::Result<TcpListener> {
        let h = self
            .held
            .iter()
            .find(|h| h.transport == Transport::Tcp && same(h.local, addr))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no tcp socket on {addr}")))?;
        let l = TcpListener::from(h.fd.try_clone()?);
        l.set_nonblocking(true)?;
        Ok(l)
    }

    /// Duplicates of every socket with its transport and address, to hand
    /// over to another kdns (which builds its own with
    /// [`Listeners::from_fds`]).
    pub fn duplicates(&self) -> io::Result<Vec<(Transport, SocketAddr, OwnedFd)>> {
        self.held.iter().map(|h| Ok((h.transport, h.local, h.fd.try_clone()?))).collect()
    }
}

/// Opens a UDP socket on `addr` with SO_REUSEPORT, so every worker can
/// bind the same address and the kernel spreads clients across them.
fn reuseport_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // The receive buffer is set afterwards (set_udp_receive_buffer).
    let _ = s.set_send_buffer_size(SEND_BUFFER);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Why a bind failed, when the error alone does not say.
pub fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => " (another DNS server on that address?)",
        io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        io::ErrorKind::AddrNotAvailable => " (no interface has that address)",
        _ => "",
    }
}

/// The same address and port (an IPv6 socket's scope and flow label are
/// what the kernel filled in).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip() == b.ip() && a.port() == b.port()
}

fn check(held: &[Held], listen: &[SocketAddr], tcp: bool, groups: bool) -> Result<(), String> {
    check_addrs(&held.iter().map(|h| (h.transport, h.local, h.what.clone())).collect::<Vec<_>>(), listen, tcp, groups)
}

/// The sockets are exactly the listeners `listen` (and `tcp`) ask for; the
/// error names the first address that is not. `groups`: several UDP
/// sockets on one address are allowed.
fn check_addrs(held: &[(Transport, SocketAddr, String)], listen: &[SocketAddr], tcp: bool, groups: bool) -> Result<(), String> {
    let list = listen.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    for (i, (t, local, what)) in held.iter().enumerate() {
        if !listen.iter().any(|a| same(*a, *local)) {
            return Err(format!(
                "got {what}, which server.listen ({list}) does not have; the socket unit and server.listen must name the same addresses"
            ));
        }
        if *t == Transport::Tcp && !tcp {
            return Err(format!("got {what}, but tcp.enabled is false; remove its ListenStream= or enable tcp"));
        }
        let grouped = groups && *t == Transport::Udp;
        if let Some((_, _, other)) = held[..i].iter().find(|(t2, l2, _)| t2 == t && same(*l2, *local)).filter(|_| !grouped) {
            return Err(format!("got two {t} sockets on {local}: {other} and {what}"));
        }
    }
    for a in listen {
        let has = |t: Transport| held.iter().any(|(t2, l, _)| *t2 == t && same(*l, *a));
        if !has(Transport::Udp) {
            return Err(format!("server.listen has {a}, but no udp socket for it came (add ListenDatagram={a} to the socket unit)"));
        }
        if tcp && !has(Transport::Tcp) {
            return Err(format!(
                "server.listen has {a}, but no tcp socket for it came (add ListenStream={a} to the socket unit, or set tcp.enabled = false)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t: Transport, a: &str) -> (Transport, SocketAddr, String) {
        let a: SocketAddr = a.parse().unwrap();
        (t, a, format!("{t} {a}"))
    }

    fn addrs(a: &[&str]) -> Vec<SocketAddr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn exact_match_passes() {
        let passed = [
            p(Transport::Udp, "127.0.0.1:53"),
            p(Transport::Tcp, "127.0.0.1:53"),
            p(Transport::Udp, "[::1]:53"),
            p(Transport::Tcp, "[::1]:53"),
        ];
        assert_eq!(check_addrs(&passed, &addrs(&["[::1]:53", "127.0.0.1:53"]), true, false), Ok(()));
        assert_eq!(check_addrs(&passed[..1], &addrs(&["127.0.0.1:53"]), false, false), Ok(()), "udp alone when tcp is off");
    }

    #[test]
    fn missing_and_unexpected_sockets_name_the_address() {
        let l = addrs(&["127.0.0.1:53", "10.0.0.1:53"]);
        let e = check_addrs(&[p(Transport::Udp, "127.0.0.1:53")], &l, false, false).unwrap_err();
        assert!(e.contains("10.0.0.1:53") && e.contains("ListenDatagram=10.0.0.1:53"), "{e}");
        let e = check_addrs(&[p(Transport::Udp, "127.0.0.1:53"), p(Transport::Udp, "10.0.0.1:53")], &l, true, false).unwrap_err();
        assert!(e.contains("no tcp socket") && e.contains("ListenStream=127.0.0.1:53"), "{e}");
        let e = check_addrs(&[p(Transport::Udp, "127.0.0.1:5353")], &l, false, false).unwrap_err();
        assert!(e.contains("udp 127.0.0.1:5353") && e.contains("does not have"), "{e}");
        let e = check_addrs(&[p(Transport::Udp, "127.0.0.1:53"), p(Transport::Tcp, "127.0.0.1:53")], &l[..1], false, false).unwrap_err();
        assert!(e.contains("tcp 127.0.0.1:53") && e.contains("tcp.enabled is false"), "{e}");
        let two = [p(Transport::Udp, "127.0.0.1:53"), p(Transport::Udp, "127.0.0.1:53")];
        let e = check_addrs(&two, &l[..1], false, false).unwrap_err();
        assert!(e.contains("two udp sockets on 127.0.0.1:53"), "{e}");
        assert_eq!(check_addrs(&two, &l[..1], false, true), Ok(()), "a handed-over SO_REUSEPORT group");
    }

    #[test]
    fn bound_sockets_are_spread_so_each_has_a_reader_and_handed_over_intact() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Port 0: each bind gets its own port, so bind one to learn a
        // free port first.
        let port = std::net::UdpSocket::bind(any).unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::new(any.ip(), port);
        let l = match Listeners::bind(&[addr], true, 3) {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(l.origin(), Origin::Bound);
        let local = |s: &UdpSocket| s.local_addr().unwrap();
        // Three sockets, two workers: worker 0 reads #0 and #2, worker 1 #1.
        let w0 = l.udp(addr, 0, 2).unwrap();
        let w1 = l.udp(addr, 1, 2).unwrap();
        assert_eq!((w0.len(), w1.len()), (2, 1));
        assert!(w0.iter().chain(&w1).all(|s| local(s) == addr));
        // Five workers: one each, shared.
        assert!((0..5).all(|w| l.udp(addr, w, 5).unwrap().len() == 1));
        assert_eq!(l.tcp(addr).unwrap().local_addr().unwrap(), addr);
        let dup = l.duplicates().unwrap();
        assert_eq!(dup.len(), 4);
        let again = Listeners::from_fds(dup, &[addr], true).unwrap();
        assert_eq!(again.origin(), Origin::Handover);
        assert_eq!(again.udp(addr, 0, 1).unwrap().len(), 3, "one worker reads the whole group");
        let e = Listeners::from_fds(l.duplicates().unwrap(), &[addr], false).unwrap_err();
        assert!(e.contains("tcp.enabled is false"), "{e}");
        let mut lie = l.duplicates().unwrap();
        lie[0].0 = Transport::Tcp;
        let e = Listeners::from_fds(lie, &[addr], true).unwrap_err();
        assert!(e.contains("is a udp socket"), "{e}");
        assert!(l.udp("127.0.0.1:1".parse().unwrap(), 0, 1).is_err());
    }
}
