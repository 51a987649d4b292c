//! The UDP sockets a worker sends its backend queries from: a pool of
//! source-port slots, each a socket bound to a port the kernel picks at
//! random, replaced by a fresh one now and then.
//!
//! Why: with one socket per backend for the life of the process, a
//! forwarded query carries only its 16-bit ID as entropy against an
//! off-path spoofer. The engine picks a slot at random for every query
//! (`Verdict::Forward::port`) and accepts an answer only on the slot the
//! query left from, so a spoofer must also hit the right one of
//! `upstream.source_ports` random ports, which keep changing.
//!
//! Shape:
//! - One *unconnected* socket per slot and address family the backends
//!   use, shared by all backends: N sockets per family instead of N per
//!   backend. The kernel then delivers datagrams from any source, but the
//!   engine accepts an answer only from the backend asked (address and
//!   port, else `answer_wrong_source`), so nothing is lost by not
//!   connecting and every stray datagram is counted instead of silently
//!   filtered.
//! - Rotation: a slot's sockets are replaced after `rotate_after` queries
//!   sent on it or `rotate_every` of age, whichever comes first. The old
//!   socket is not closed: it stays registered and read, under the same
//!   slot number, for `linger` (the engine's query deadline plus a margin),
//!   after which no answer to a query sent from it can be accepted. At most
//!   [`MAX_LINGERING`] old sockets per slot: past that, rotation waits
//!   (counted), so a flood of misses cannot make the pool open sockets
//!   without bound.
//! - Readiness: every socket is registered (edge-triggered) in the
//!   worker's mio poll under `token_base + id`. The driver hands readiness
//!   events to [`SourcePorts::readable`] and reads only the sockets in the
//!   ready list, so a turn costs one `epoll_wait` however many slots there
//!   are, never one `recv` per socket.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use crate::handle::IoStats;

/// Old sockets a slot keeps open at most while answers may still come.
pub const MAX_LINGERING: usize = 4;
/// Kept on top of the query deadline before an old socket is closed.
const LINGER_MARGIN: Duration = Duration::from_millis(500);

/// How many source ports, and when they change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsConfig {
    /// Slots per worker (at least 1).
    pub slots: u16,
    /// Replace a slot's socket after this many queries sent on it (0: not by count).
    pub rotate_after: u32,
    /// Replace a slot's socket this long after it was opened (zero: not by age).
    pub rotate_every: Duration,
    /// How long an old socket stays open and read (the query deadline).
    pub query_deadline: Duration,
}

impl PortsConfig {
    /// The most sockets one worker's pool can hold open at once, for
    /// `families` address families (1 or 2).
    pub fn max_sockets(&self, families: usize) -> usize {
        usize::from(self.slots) * families * (1 + MAX_LINGERING)
    }
}

/// Which address families the backends need: (IPv4, IPv6).
pub fn families(backends: &[SocketAddr]) -> (bool, bool) {
    (backends.iter().any(SocketAddr::is_ipv4), backends.iter().any(SocketAddr::is_ipv6))
}

#[derive(Debug)]
struct Sock {
    sock: UdpSocket,
    slot: u16,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Socket ids of the current sockets: [IPv4, IPv6].
    current: [Option<usize>; 2],
    sent: u32,
    opened: Instant,
    /// Old sockets of this slot still open.
    lingering: usize,
}

/// A readable socket, as [`SourcePorts::next_ready`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// The socket (for [`SourcePorts::recv_from`] and [`SourcePorts::again`]).
    pub id: usize,
    /// The slot it belongs to: the `port` to give the engine with the answer.
    pub slot: u16,
    /// Its fd, for batched receives.
    pub fd: RawFd,
}

/// One worker's source-port slots.
#[derive(Debug)]
pub struct SourcePorts {
    cfg: PortsConfig,
    fams: [bool; 2],
    registry: Registry,
    token_base: usize,
    socks: Vec<Option<Sock>>,
    free_ids: Vec<usize>,
    slots: Vec<Slot>,
    /// Old sockets in the order they close: (close at, id).
    lingering: VecDeque<(Instant, usize)>,
    ready: Vec<usize>,
    io: Arc<IoStats>,
    /// Socket errors are logged once per pool, then only counted.
    logged_error: bool,
}

impl SourcePorts {
    /// Opens `cfg.slots` sockets per address family of `backends` and
    /// registers them with `registry` under tokens from `token_base` up.
    /// Fails (with the reason, e.g. too many open files) if one cannot be
    /// opened.
    pub fn new(cfg: &PortsConfig, backends: &[SocketAddr], registry: &Registry, token_base: usize, io: Arc<IoStats>) -> io::Result<Self> {
        let (v4, v6) = families(backends);
        let now = Instant::now();
        let slots = cfg.slots.max(1);
        let mut p = SourcePorts {
            cfg: PortsConfig { slots, ..cfg.clone() },
            fams: [v4, v6],
            registry: registry.try_clone()?,
            token_base,
            socks: Vec::new(),
            free_ids: Vec::new(),
            slots: vec![Slot { current: [None, None], sent: 0, opened: now, lingering: 0 }; usize::from(slots)],
            lingering: VecDeque::new(),
            ready: Vec::new(),
            io,
            logged_error: false,
        };
        for s in 0..slots {
            for fam in 0..2 {
                if p.fams[fam] {
                    let id = p.open(s, fam == 1).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot open source-port socket {} of {slots} (upstream.source_ports): {e}", s + 1),
                        )
                    })?;
                    p.slots[usize::from(s)].current[fam] = Some(id);
                }
            }
        }
        Ok(p)
    }

    /// Slots in the pool (what the engine's `source_ports` must be).
    #[cfg(test)]
    pub fn slots(&self) -> u16 {
        self.cfg.slots
    }

    /// Sends `buf` to `to` from slot `slot` (taken modulo the slot count)
    /// and rotates the slot when it is due by count.
    pub fn send(&mut self, slot: u16, to: SocketAddr, buf: &[u8], now: Instant) -> io::Result<usize> {
        let s = usize::from(slot % self.cfg.slots);
        let fam = usize::from(to.is_ipv6());
        let id = self.slots[s].current[fam].ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "no socket of this family"))?;
        let sock = self.socks.get(id).and_then(Option::as_ref).ok_or_else(|| io::Error::other("source-port socket gone"))?;
        let r = sock.sock.send_to(buf, to);
        let slot = &mut self.slots[s];
        slot.sent = slot.sent.saturating_add(1);
        if self.cfg.rotate_after > 0 && slot.sent >= self.cfg.rotate_after {
            self.rotate(s, now);
        }
        r
    }

    /// A readiness event for `token`: true if it is one of ours (its socket
    /// goes on the ready list).
    pub fn readable(&mut self, token: Token) -> bool {
        let Some(id) = token.0.checked_sub(self.token_base) else { return false };
        if id >= self.socks.len() {
            return false;
        }
        if self.socks[id].is_some() && !self.ready.contains(&id) {
            self.ready.push(id);
        }
        true
    }

    /// Whether a socket is waiting to be read.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next socket to read until it would block (then forget it, or
    /// hand it back with [`SourcePorts::again`] if the budget ran out first).
    pub fn next_ready(&mut self) -> Option<Ready> {
        while let Some(id) = self.ready.pop() {
            if let Some(Some(s)) = self.socks.get(id) {
                return Some(Ready { id, slot: s.slot, fd: s.sock.as_raw_fd() });
            }
        }
        None
    }

    /// Socket `id` still has data: read it again later.
    pub fn again(&mut self, id: usize) {
        if matches!(self.socks.get(id), Some(Some(_))) && !self.ready.contains(&id) {
            self.ready.insert(0, id);
        }
    }

    /// One datagram from socket `id`: its length and source.
    #[cfg(test)]
    pub fn recv_from(&self, id: usize, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        match self.socks.get(id) {
            Some(Some(s)) => s.sock.recv_from(buf),
            _ => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Closes old sockets whose answers can no longer be accepted and
    /// rotates slots that are due by age. Cheap when nothing is due; call
    /// it once per loop turn or so.
    pub fn tick(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.lingering.front() {
            if at > now {
                break;
            }
            self.lingering.pop_front();
            if let Some(s) = self.close(id) {
                let slot = &mut self.slots[usize::from(s)];
                slot.lingering = slot.lingering.saturating_sub(1);
            }
        }
        if !self.cfg.rotate_every.is_zero() {
            for s in 0..self.slots.len() {
                if now.saturating_duration_since(self.slots[s].opened) >= self.cfg.rotate_every {
                    self.rotate(s, now);
                }
            }
        }
    }

    /// The local ports of the current sockets, slot by slot (IPv4 first).
    #[cfg(test)]
    pub fn ports(&self) -> Vec<u16> {
        let mut v = Vec::new();
        for s in &self.slots {
            for id in s.current.iter().flatten() {
                if let Some(Some(x)) = self.socks.get(*id) {
                    v.push(x.sock.local_addr().map_or(0, |a| a.port()));
                }
            }
        }
        v
    }

    /// Sockets open now (current and lingering).
    pub fn open_sockets(&self) -> usize {
        self.socks.iter().filter(|s| s.is_some()).count()
    }

    /// Replaces slot `s`'s sockets with fresh ones; the old ones linger.
    fn rotate(&mut self, s: usize, now: Instant) {
        let fams = usize::from(self.fams[0]) + usize::from(self.fams[1]);
        if self.slots[s].lingering >= MAX_LINGERING * fams {
            // Too many old sockets still open: keep this one a while longer.
            IoStats::add(&self.io.upstream_rotations_deferred, 1);
            self.slots[s].sent = 0;
            self.slots[s].opened = now;
            return;
        }
        let mut fresh = [None, None];
        for (fam, f) in fresh.iter_mut().enumerate() {
            if !self.fams[fam] {
                continue;
            }
            match self.open(s as u16, fam == 1) {
                Ok(id) => *f = Some(id),
                Err(e) => {
                    // Keep the old sockets; try again at the next due point.
                    IoStats::add(&self.io.upstream_socket_errors, 1);
                    if !self.logged_error {
                        self.logged_error = true;
                        tracing::warn!(error = %e, "cannot open a new source-port socket; the old one stays in use (counted in upstream_socket_errors)");
                    }
                    for id in fresh.into_iter().flatten() {
                        self.close(id);
                    }
                    self.slots[s].sent = 0;
                    self.slots[s].opened = now;
                    return;
                }
            }
        }
        let until = now + self.cfg.query_deadline + LINGER_MARGIN;
        let slot = &mut self.slots[s];
        for (fam, f) in fresh.into_iter().enumerate() {
            if let Some(new) = f {
                if let Some(old) = slot.current[fam].replace(new) {
                    self.lingering.push_back((until, old));
                    slot.lingering += 1;
                }
            }
        }
        slot.sent = 0;
        slot.opened = now;
        IoStats::add(&self.io.upstream_rotations, 1);
    }

    /// Opens and registers a socket for slot `slot`; returns its id.
    fn open(&mut self, slot: u16, v6: bool) -> io::Result<usize> {
        let s = Socket::new(if v6 { Domain::IPV6 } else { Domain::IPV4 }, Type::DGRAM, Some(Protocol::UDP))?;
        if v6 {
            s.set_only_v6(true)?;
        }
        let _ = s.set_recv_buffer_size(1 << 20);
        let any: SocketAddr = if v6 { "[::]:0".parse().expect("literal") } else { "0.0.0.0:0".parse().expect("literal") };
        // Port 0: the kernel picks a free ephemeral port at random.
        s.bind(&any.into())?;
        s.set_nonblocking(true)?;
        let mut sock = UdpSocket::from_std(s.into());
        let id = self.free_ids.pop().unwrap_or_else(|| {
            self.socks.push(None);
            self.socks.len() - 1
        });
        if let Err(e) = self.registry.register(&mut sock, Token(self.token_base + id), Interest::READABLE) {
            self.free_ids.push(id);
            return Err(e);
        }
        self.socks[id] = Some(Sock { sock, slot });
        IoStats::add(&self.io.upstream_sockets_opened, 1);
        self.io.upstream_sockets_open.store(self.open_sockets() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(id)
    }

    /// Deregisters and closes socket `id`; returns its slot.
    fn close(&mut self, id: usize) -> Option<u16> {
        let mut s = self.socks.get_mut(id)?.take()?;
        let _ = self.registry.deregister(&mut s.sock);
        self.ready.retain(|&r| r != id);
        self.free_ids.push(id);
        self.io.upstream_sockets_open.store(self.open_sockets() as u64, std::sync::atomic::Ordering::Relaxed);
        Some(s.slot)
    }
}

#[cfg(test)]
#[path = "upstream_sockets_tests.rs"]
mod tests;
