//! The TCP server (RFC 7766): length-prefixed messages, several queries per
//! connection, pipelining (answers may come out of order; clients match
//! them by ID), an idle timeout and connection limits.
//!
//! No client can hold the table hostage: one client address holds at most
//! `tcp.max_connections_per_client` connections (more are closed at once),
//! and when the table is full the longest-idle connection (one with no
//! query in progress if there is any) is closed to admit the new one, so a
//! new client is always served. [`table`] keeps that order.
//!
//! One thread with its own engine serves every connection, so TCP never
//! touches the UDP workers' state; it is the TCP front end of the driver
//! skeleton ([`crate::driver`]). Misses go to the backends over UDP like
//! any other; when a backend's UDP answer comes back truncated, the engine
//! asks for the query again over TCP, and [`upstream`] carries it so the
//! TCP client gets the whole answer.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kdns_core::engine::{AnswerVerdict, Client, EngineConfig, TcpExchange, Transport, Verdict};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use crate::config::TcpSection;
use crate::driver::{AnswerBatch, Core, CoreSetup, FrontEnd, Ready, Turn, BACKEND_BASE};
use crate::handle::{IoStats, WorkerHandle, WorkerKind};
use crate::upstream_sockets::PortsConfig;

mod table;
mod upstream;
use table::{Admit, Table};
use upstream::{Progress, Upstreams};

/// Tokens of the TCP connections to backends.
const UPSTREAM_BASE: usize = 2 * BACKEND_BASE;
/// Tokens of client connections.
const CONN_BASE: usize = 4 * BACKEND_BASE;
/// How often idle connections are looked for.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Everything the TCP server starts with.
#[derive(Debug)]
pub struct TcpSetup {
    /// Worker index (after the UDP workers).
    pub id: usize,
    /// Listeners, bound already (so bind errors surface at start).
    pub listen: Vec<(SocketAddr, std::net::TcpListener)>,
    /// Engine settings (own seed).
    pub engine: EngineConfig,
    /// Limits and timeouts.
    pub cfg: TcpSection,
    /// The source-port slots for backend queries.
    pub ports: PortsConfig,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    gen: u32,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    waiting: usize,
    read_closed: bool,
    writable_armed: bool,
}

/// Starts the TCP server thread.
pub fn spawn(setup: TcpSetup) -> io::Result<(WorkerHandle, JoinHandle<()>)> {
    let mut engine = setup.engine.clone();
    // TCP answers may be large; the cache for this thread is modest.
    engine.cache = kdns_core::cache::CacheConfig {
        max_answer_len: 65_535,
        min_ttl: setup.engine.cache.min_ttl,
        max_ttl: setup.engine.cache.max_ttl,
        ..kdns_core::cache::CacheConfig::for_entries((setup.engine.cache.max_entries / 4).max(1024))
    };
    let (core, handle) = Core::new(CoreSetup {
        id: setup.id,
        kind: WorkerKind::Tcp,
        core: None,
        engine,
        ports: setup.ports,
        answers: AnswerBatch { count: 4, size: 65_535 },
        stop: setup.stop,
    })?;
    let front = TcpFront::new(setup.listen, core.registry(), setup.cfg)?;
    let t = std::thread::Builder::new().name("kdns-tcp".into()).spawn(move || run(core, front))?;
    Ok((handle, t))
}

/// Opens a non-blocking TCP listener on `addr`.
pub fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// The TCP server's loop.
fn run(mut core: Core, mut front: TcpFront) {
    let mut events = Vec::with_capacity(256);
    let mut last_sweep = Instant::now();
    loop {
        if let Err(e) = core.wait(core.timeout(Duration::from_millis(500)), &mut events) {
            tracing::error!(error = %e, "tcp poll failed; tcp server stops");
            break;
        }
        for Ready { token, readable, writable } in events.drain(..) {
            front.event(&mut core, token, readable, writable);
        }
        core.backend_answers(&mut front);
        if last_sweep.elapsed() >= SWEEP_EVERY {
            last_sweep = Instant::now();
            front.sweep(&core);
        }
        if core.end_turn(&mut front) == Turn::Stop {
            break;
        }
    }
}

/// The client side of the TCP server: listeners, connections, and the TCP
/// exchanges with backends the engine asked for.
struct TcpFront {
    registry: Registry,
    listeners: Vec<(SocketAddr, TcpListener)>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    next_gen: u32,
    upstreams: Upstreams,
    cfg: TcpSection,
    buf: Vec<u8>,
    /// Per-client counts and the idle order of `conns`.
    table: Table,
}

fn tag(idx: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

fn untag(t: u64) -> (usize, u32) {
    ((t & 0xffff_ffff) as usize, (t >> 32) as u32)
}

impl TcpFront {
    fn new(listen: Vec<(SocketAddr, std::net::TcpListener)>, registry: &Registry, cfg: TcpSection) -> io::Result<TcpFront> {
        let mut listeners = Vec::new();
        for (i, (addr, std_l)) in listen.into_iter().enumerate() {
            let mut l = TcpListener::from_std(std_l);
            registry.register(&mut l, Token(i), Interest::READABLE)?;
            listeners.push((addr, l));
        }
        Ok(TcpFront {
            registry: registry.try_clone()?,
            listeners,
            conns: Vec::new(),
            free: Vec::new(),
            next_gen: 0,
            upstreams: Upstreams::new(UPSTREAM_BASE, CONN_BASE - UPSTREAM_BASE),
            table: Table::new(cfg.max_connections, cfg.max_connections_per_client),
            cfg,
            buf: vec![0; 65_535],
        })
    }

    fn event(&mut self, core: &mut Core, t: Token, readable: bool, writable: bool) {
        if t.0 >= CONN_BASE {
            let idx = t.0 - CONN_BASE;
            if readable {
                self.conn_readable(core, idx);
            }
            if writable {
                self.conn_flush(&core.io, idx);
            }
            self.maybe_close(&core.io, idx);
            self.touch(idx);
        } else if self.upstreams.owns(t) {
            self.upstream_ready(core, t);
        } else if !core.stopping() {
            self.accept(&core.io, t.0);
        }
    }

    fn accept(&mut self, io: &IoStats, li: usize) {
        loop {
            let Some((local, l)) = self.listeners.get(li) else { return };
            let local = *local;
            match l.accept() {
                Ok((mut stream, peer)) => {
                    IoStats::add(&io.tcp_accepted, 1);
                    match self.table.admit(peer.ip()) {
                        Admit::Yes => {}
                        Admit::OverClientCap => {
                            IoStats::add(&io.tcp_refused_per_client, 1);
                            tracing::debug!(%peer, "tcp connection limit per client reached; closing the new one");
                            drop(stream);
                            continue;
                        }
                        Admit::Evict { victim, busy } => {
                            IoStats::add(if busy { &io.tcp_evicted_busy } else { &io.tcp_evicted_idle }, 1);
                            tracing::debug!(%peer, busy, "tcp connection table full; closing the longest-idle connection");
                            self.close(io, victim);
                        }
                    }
                    let _ = stream.set_nodelay(true);
                    let idx = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self.registry.register(&mut stream, Token(CONN_BASE + idx), Interest::READABLE).is_err() {
                        IoStats::add(&io.tcp_refused, 1);
                        self.free.push(idx);
                        continue;
                    }
                    let gen = self.next_gen;
                    self.next_gen = self.next_gen.wrapping_add(1);
                    self.conns[idx] = Some(Conn {
                        stream,
                        peer,
                        local,
                        gen,
                        rbuf: Vec::new(),
                        wbuf: Vec::new(),
                        wpos: 0,
                        waiting: 0,
                        read_closed: false,
                        writable_armed: false,
                    });
                    self.table.insert(idx, peer.ip(), Instant::now());
                    io.tcp_open.store(self.table.open() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn conn_readable(&mut self, core: &mut Core, idx: usize) {
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        loop {
            match c.stream.read(&mut self.buf) {
                Ok(0) => {
                    c.read_closed = true;
                    break;
                }
                Ok(n) => c.rbuf.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.read_closed = true;
                    c.wbuf.clear();
                    c.wpos = 0;
                    break;
                }
            }
        }
        // Every complete message in the buffer, in order.
        let client = Client { addr: c.peer, local: c.local, transport: Transport::Tcp, tag: tag(idx, c.gen) };
        let rbuf = std::mem::take(&mut c.rbuf);
        let mut at = 0;
        let now = core.now();
        while let Some(len) = rbuf.get(at..at + 2).map(|p| usize::from(u16::from_be_bytes([p[0], p[1]]))) {
            let Some(query) = rbuf.get(at + 2..at + 2 + len) else { break };
            at += 2 + len;
            IoStats::add(&core.io.rx, 1);
            let waits = match core.engine.handle_query(now, &client, query, &mut core.out) {
                Verdict::Reply(n) => {
                    self.write_message(&core.io, idx, &core.out[..n]);
                    false
                }
                Verdict::Forward { addr, len, port, .. } => {
                    core.backends.send(port, addr, &core.out[..len]);
                    true
                }
                // Waits on an identical question: the reply comes out of
                // poll_transmit.
                Verdict::Wait => true,
                Verdict::Drop(_) => false,
            };
            if let (true, Some(Some(c))) = (waits, self.conns.get_mut(idx)) {
                c.waiting += 1;
            }
        }
        if let Some(Some(c)) = self.conns.get_mut(idx) {
            c.rbuf = rbuf;
            c.rbuf.drain(..at);
        }
    }

    /// Appends `msg` to connection `idx` as one message.
    fn write_message(&mut self, io: &IoStats, idx: usize, msg: &[u8]) {
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        c.wbuf.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        c.wbuf.extend_from_slice(msg);
        IoStats::add(&io.tx, 1);
        self.conn_flush(io, idx);
    }

    fn conn_flush(&mut self, io: &IoStats, idx: usize) {
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => break,
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    IoStats::add(&io.tx_errors, 1);
                    c.wbuf.clear();
                    c.wpos = 0;
                    c.read_closed = true;
                    return;
                }
            }
        }
        if c.wpos == c.wbuf.len() {
            c.wbuf.clear();
            c.wpos = 0;
            if c.writable_armed {
                c.writable_armed = false;
                let _ = self.registry.reregister(&mut c.stream, Token(CONN_BASE + idx), Interest::READABLE);
            }
        } else if !c.writable_armed {
            c.writable_armed = true;
            let _ = self.registry.reregister(&mut c.stream, Token(CONN_BASE + idx), Interest::READABLE | Interest::WRITABLE);
        }
    }

    fn maybe_close(&mut self, io: &IoStats, idx: usize) {
        let done = matches!(self.conns.get(idx), Some(Some(c)) if c.read_closed && c.waiting == 0 && c.wbuf.is_empty());
        if done {
            self.close(io, idx);
        }
    }

    fn close(&mut self, io: &IoStats, idx: usize) {
        if let Some(slot) = self.conns.get_mut(idx) {
            if let Some(mut c) = slot.take() {
                let _ = self.registry.deregister(&mut c.stream);
                self.free.push(idx);
                self.table.remove(idx);
                io.tcp_open.store(self.table.open() as u64, Ordering::Relaxed);
            }
        }
    }

    /// Something happened on connection `idx`: it moves to the back of the
    /// idle order (quiet or busy).
    fn touch(&mut self, idx: usize) {
        if let Some(Some(c)) = self.conns.get(idx) {
            let busy = c.waiting > 0 || !c.wbuf.is_empty();
            self.table.touch(idx, Instant::now(), busy);
        }
    }

    /// Closes idle connections, and the connections of TCP exchanges the
    /// engine gave up on (their clients got a stale answer or SERVFAIL).
    fn sweep(&mut self, core: &Core) {
        let now = Instant::now();
        let idle = Duration::from_millis(self.cfg.idle_timeout_ms);
        while let Some(idx) = self.table.expired(now, idle) {
            IoStats::add(&core.io.tcp_idle_closed, 1);
            self.close(&core.io, idx);
        }
        self.upstreams.retain(&self.registry, |x| core.engine.tcp_exchange_open(x));
    }

    /// A backend connection is ready: the answer, once whole, goes to the
    /// engine; a connection that failed is reported to it.
    fn upstream_ready(&mut self, core: &mut Core, t: Token) {
        let Some((exchange, peer, p)) = self.upstreams.ready(&self.registry, t, &mut self.buf) else { return };
        let now = core.now();
        match p {
            Progress::Answer(answer) => {
                if let AnswerVerdict::Reply { client, len } = core.engine.handle_tcp_answer(now, exchange, peer, &answer, &mut core.out) {
                    IoStats::add(&core.io.tcp_upstream, 1);
                    self.reply(&core.io, client, &core.out[..len]);
                }
            }
            Progress::Failed | Progress::Pending => core.engine.tcp_failed(now, exchange),
        }
    }
}

impl FrontEnd for TcpFront {
    /// Sends `msg` to the TCP client `client` (if its connection is still
    /// the one that asked).
    fn reply(&mut self, io: &IoStats, client: Client, msg: &[u8]) {
        let (idx, gen) = untag(client.tag);
        match self.conns.get_mut(idx) {
            Some(Some(c)) if c.gen == gen => c.waiting = c.waiting.saturating_sub(1),
            _ => return,
        }
        self.write_message(io, idx, msg);
        self.maybe_close(io, idx);
        self.touch(idx);
    }

    fn ask_tcp(&mut self, _io: &IoStats, exchange: TcpExchange, addr: SocketAddr, query: &[u8]) -> bool {
        self.upstreams.start(&self.registry, exchange, addr, query)
    }

    fn stop_listening(&mut self, registry: &Registry) {
        for (_, l) in &mut self.listeners {
            let _ = registry.deregister(l);
        }
    }

    fn finish(&mut self, io: &IoStats) {
        for i in 0..self.conns.len() {
            self.conn_flush(io, i);
        }
    }
}
