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
//! One thread with its own [`Engine`] serves every connection, so TCP never
//! touches the UDP workers' state. Misses go to the backends over UDP like
//! any other; when a backend's UDP answer comes back truncated, the query
//! is asked again over TCP to that backend so the TCP client gets the whole
//! answer.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use kdns_core::engine::{AnswerVerdict, Client, Engine, EngineConfig, Transmit, Transport, Verdict};
use kdns_core::upstream::BackendState;
use kdns_core::wire::{flags, Header, Message, HEADER_LEN};
use kdns_core::Timestamp;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::TcpSection;
use crate::handle::{Control, IoStats, WorkerHandle, WorkerKind};
use crate::upstream_sockets::{PortsConfig, SourcePorts};
use crate::worker::new_histogram;

mod table;
use table::{Admit, Table};

const WAKE: Token = Token(usize::MAX);
const BACKEND_BASE: usize = 1 << 20;
const UPSTREAM_BASE: usize = 1 << 21;
const CONN_BASE: usize = 1 << 22;
/// A TCP exchange with a backend after a truncated UDP answer gets this long.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything the TCP server starts with.
#[derive(Debug)]
pub struct TcpSetup {
    /// Worker index (after the UDP workers).
    pub id: usize,
    /// Addresses to listen on.
    pub listen: Vec<SocketAddr>,
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

/// A query asked again over TCP to a backend.
struct Upstream {
    stream: TcpStream,
    conn: usize,
    gen: u32,
    client_id: u16,
    out: Vec<u8>,
    opos: usize,
    inbuf: Vec<u8>,
    started: Instant,
    question: Vec<u8>,
}

/// Starts the TCP server thread.
pub fn spawn(setup: TcpSetup) -> io::Result<(WorkerHandle, JoinHandle<()>)> {
    let mut engine_cfg = setup.engine.clone();
    // TCP answers may be large; the cache for this thread is modest.
    engine_cfg.cache = kdns_core::cache::CacheConfig {
        max_answer_len: 65_535,
        ..kdns_core::cache::CacheConfig::for_entries((engine_cfg.cache.max_entries / 4).max(1024))
    };
    engine_cfg.cache.min_ttl = setup.engine.cache.min_ttl;
    engine_cfg.cache.max_ttl = setup.engine.cache.max_ttl;
    let engine = Engine::new(engine_cfg).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut listeners = Vec::new();
    for (i, addr) in setup.listen.iter().enumerate() {
        let std_l = tcp_listener(*addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on tcp {addr}: {e}")))?;
        let mut l = TcpListener::from_std(std_l);
        poll.registry().register(&mut l, Token(i), Interest::READABLE)?;
        listeners.push((*addr, l));
    }
    let io_stats = Arc::new(IoStats::default());
    let ports = crate::worker::new_ports(&setup.ports, &setup.engine, poll.registry(), BACKEND_BASE, &io_stats)?;
    let backends: Vec<SocketAddr> = setup.engine.backends.iter().map(|b| b.addr).collect();
    let handle = WorkerHandle {
        id: setup.id,
        kind: WorkerKind::Tcp,
        core: None,
        engine: Arc::clone(engine.stats()),
        cache: Arc::clone(engine.cache().stats()),
        backends: engine.pool().shared_stats(),
        io: Arc::clone(&io_stats),
        tx,
        waker,
    };
    let n = backends.len();
    let table = Table::new(setup.cfg.max_connections, setup.cfg.max_connections_per_client);
    let server = TcpServer {
        id: setup.id,
        engine,
        poll,
        listeners,
        backends,
        ports,
        conns: Vec::new(),
        free: Vec::new(),
        upstreams: HashMap::new(),
        next_upstream: 0,
        cfg: setup.cfg,
        ctl: rx,
        stop: setup.stop,
        io: io_stats,
        out: vec![0; 65_535],
        buf: vec![0; 65_535],
        rtt: (0..n).map(|_| new_histogram()).collect(),
        origin: Instant::now(),
        table,
        rng: setup.engine.seed | 1,
    };
    let t = std::thread::Builder::new().name("kdns-tcp".into()).spawn(move || server.run())?;
    Ok((handle, t))
}

fn tcp_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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

struct TcpServer {
    id: usize,
    engine: Engine,
    poll: Poll,
    listeners: Vec<(SocketAddr, TcpListener)>,
    /// The backends' addresses, in the engine's order.
    backends: Vec<SocketAddr>,
    ports: SourcePorts,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    upstreams: HashMap<usize, Upstream>,
    next_upstream: usize,
    cfg: TcpSection,
    ctl: Receiver<Control>,
    stop: Arc<AtomicBool>,
    io: Arc<IoStats>,
    out: Vec<u8>,
    buf: Vec<u8>,
    rtt: Vec<Histogram<u64>>,
    origin: Instant,
    /// Per-client counts and the idle order of `conns`.
    table: Table,
    rng: u64,
}

fn tag(idx: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | idx as u64
}

fn untag(t: u64) -> (usize, u32) {
    ((t & 0xffff_ffff) as usize, (t >> 32) as u32)
}

impl TcpServer {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let idle = Duration::from_millis(self.cfg.idle_timeout_ms);
        let mut last_sweep = Instant::now();
        let mut stopping: Option<Instant> = None;
        loop {
            let now = self.now();
            let timeout =
                self.engine.poll_timeout().map_or(Duration::from_millis(500), |t| t.saturating_since(now)).min(Duration::from_millis(500));
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "tcp poll failed; tcp server stops");
                    break;
                }
            }
            let tokens: Vec<(Token, bool, bool)> =
                events.iter().map(|e| (e.token(), e.is_readable() || e.is_read_closed() || e.is_error(), e.is_writable())).collect();
            for (t, readable, writable) in tokens {
                match t.0 {
                    x if x == WAKE.0 => {}
                    x if x >= CONN_BASE => {
                        let idx = x - CONN_BASE;
                        if readable {
                            self.conn_readable(idx);
                        }
                        if writable {
                            self.conn_flush(idx);
                        }
                        self.maybe_close(idx);
                        self.touch(idx);
                    }
                    x if x >= UPSTREAM_BASE => self.upstream_ready(x),
                    x if x >= BACKEND_BASE => {
                        self.ports.readable(t);
                    }
                    x if stopping.is_none() => self.accept(x),
                    _ => {}
                }
            }
            self.backend_answers();
            self.ports.tick(Instant::now());
            let now = self.now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            while let Some(t) = self.engine.poll_transmit(now, &mut self.out) {
                match t {
                    Transmit::Backend { addr, len, port, .. } => self.send_backend(addr, port, len),
                    Transmit::Client { client, len } => self.deliver(client, len),
                }
            }
            self.drain_control();
            if last_sweep.elapsed() >= Duration::from_millis(250) {
                last_sweep = Instant::now();
                self.sweep(idle);
            }
            if stopping.is_none() && self.stop.load(Ordering::Relaxed) {
                stopping = Some(Instant::now());
                for (_, l) in &mut self.listeners {
                    let _ = self.poll.registry().deregister(l);
                }
            }
            if let Some(since) = stopping {
                let left = self.engine.in_flight() + self.upstreams.len();
                if left == 0 || since.elapsed() >= Duration::from_secs(2) {
                    if left > 0 {
                        IoStats::add(&self.io.lost_at_shutdown, left as u64);
                        tracing::warn!(queries = left, "tcp server stopped with queries still waiting for a backend");
                    }
                    for i in 0..self.conns.len() {
                        self.conn_flush(i);
                    }
                    break;
                }
            }
        }
    }

    fn accept(&mut self, li: usize) {
        loop {
            let Some((local, l)) = self.listeners.get(li) else { return };
            let local = *local;
            match l.accept() {
                Ok((mut stream, peer)) => {
                    IoStats::add(&self.io.tcp_accepted, 1);
                    match self.table.admit(peer.ip()) {
                        Admit::Yes => {}
                        Admit::OverClientCap => {
                            IoStats::add(&self.io.tcp_refused_per_client, 1);
                            tracing::debug!(%peer, "tcp connection limit per client reached; closing the new one");
                            drop(stream);
                            continue;
                        }
                        Admit::Evict { victim, busy } => {
                            IoStats::add(if busy { &self.io.tcp_evicted_busy } else { &self.io.tcp_evicted_idle }, 1);
                            tracing::debug!(%peer, busy, "tcp connection table full; closing the longest-idle connection");
                            self.close(victim);
                        }
                    }
                    let _ = stream.set_nodelay(true);
                    let idx = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self.poll.registry().register(&mut stream, Token(CONN_BASE + idx), Interest::READABLE).is_err() {
                        IoStats::add(&self.io.tcp_refused, 1);
                        self.free.push(idx);
                        continue;
                    }
                    let gen = self.next_upstream as u32;
                    self.next_upstream += 1;
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
                    self.io.tcp_open.store(self.table.open() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn conn_readable(&mut self, idx: usize) {
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
        let mut at = 0;
        let now = self.now();
        loop {
            let Some(Some(c)) = self.conns.get(idx) else { return };
            let rb = &c.rbuf[at..];
            if rb.len() < 2 {
                break;
            }
            let len = u16::from_be_bytes([rb[0], rb[1]]) as usize;
            if rb.len() < 2 + len {
                break;
            }
            let client = Client { addr: c.peer, local: c.local, transport: Transport::Tcp, tag: tag(idx, c.gen) };
            let query = c.rbuf[at + 2..at + 2 + len].to_vec();
            at += 2 + len;
            IoStats::add(&self.io.rx, 1);
            match self.engine.handle_query(now, &client, &query, &mut self.out) {
                Verdict::Reply(n) => self.write_message(idx, n),
                Verdict::Forward { addr, len, port, .. } => {
                    self.send_backend(addr, port, len);
                    if let Some(Some(c)) = self.conns.get_mut(idx) {
                        c.waiting += 1;
                    }
                }
                // Waits on an identical question: the reply comes out of
                // poll_transmit.
                Verdict::Wait => {
                    if let Some(Some(c)) = self.conns.get_mut(idx) {
                        c.waiting += 1;
                    }
                }
                Verdict::Drop(_) => {}
            }
        }
        if let Some(Some(c)) = self.conns.get_mut(idx) {
            c.rbuf.drain(..at);
        }
    }

    /// Appends `self.out[..len]` to connection `idx` as one message.
    fn write_message(&mut self, idx: usize, len: usize) {
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        c.wbuf.extend_from_slice(&(len as u16).to_be_bytes());
        c.wbuf.extend_from_slice(&self.out[..len]);
        IoStats::add(&self.io.tx, 1);
        self.conn_flush(idx);
    }

    fn conn_flush(&mut self, idx: usize) {
        let Some(Some(c)) = self.conns.get_mut(idx) else { return };
        while c.wpos < c.wbuf.len() {
            match c.stream.write(&c.wbuf[c.wpos..]) {
                Ok(0) => break,
                Ok(n) => c.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    IoStats::add(&self.io.tx_errors, 1);
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
                let _ = self.poll.registry().reregister(&mut c.stream, Token(CONN_BASE + idx), Interest::READABLE);
            }
        } else if !c.writable_armed {
            c.writable_armed = true;
            let _ = self.poll.registry().reregister(&mut c.stream, Token(CONN_BASE + idx), Interest::READABLE | Interest::WRITABLE);
        }
    }

    fn maybe_close(&mut self, idx: usize) {
        let done = matches!(self.conns.get(idx), Some(Some(c)) if c.read_closed && c.waiting == 0 && c.wbuf.is_empty());
        if done {
            self.close(idx);
        }
    }

    fn close(&mut self, idx: usize) {
        if let Some(slot) = self.conns.get_mut(idx) {
            if let Some(mut c) = slot.take() {
                let _ = self.poll.registry().deregister(&mut c.stream);
                self.free.push(idx);
                self.table.remove(idx);
                self.io.tcp_open.store(self.table.open() as u64, Ordering::Relaxed);
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

    fn sweep(&mut self, idle: Duration) {
        let now = Instant::now();
        while let Some(idx) = self.table.expired(now, idle) {
            IoStats::add(&self.io.tcp_idle_closed, 1);
            self.close(idx);
        }
        let expired: Vec<usize> = self.upstreams.iter().filter(|(_, u)| u.started.elapsed() >= UPSTREAM_TIMEOUT).map(|(k, _)| *k).collect();
        for k in expired {
            if let Some(u) = self.upstreams.remove(&k) {
                tracing::debug!("tcp exchange with a backend timed out");
                self.servfail_for(u);
            }
        }
    }

    fn send_backend(&mut self, to: SocketAddr, port: u16, len: usize) {
        match self.ports.send(port, to, &self.out[..len], Instant::now()) {
            Ok(_) => IoStats::add(&self.io.backend_tx, 1),
            Err(_) => IoStats::add(&self.io.tx_errors, 1),
        }
    }

    /// Reads every source-port socket that is ready until it would block.
    fn backend_answers(&mut self) {
        while let Some(r) = self.ports.next_ready() {
            loop {
                let (n, from) = match self.ports.recv_from(r.id, &mut self.buf) {
                    Ok(x) => x,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                IoStats::add(&self.io.backend_rx, 1);
                let now = self.now();
                let answer = self.buf[..n].to_vec();
                let v = self.engine.handle_backend_answer(now, from, r.slot, &answer, &mut self.out);
                crate::worker::record_rtt(&mut self.engine, &mut self.rtt);
                if let AnswerVerdict::Reply { client, len } = v {
                    let truncated = self.out.get(2).is_some_and(|f| u16::from(*f) << 8 & flags::TC != 0);
                    let b = self.backends.iter().position(|a| *a == from);
                    if truncated && self.ask_over_tcp(b, client, len) {
                        continue;
                    }
                    self.deliver(client, len);
                }
            }
        }
    }

    /// Sends `self.out[..len]` to the TCP client `client` (if its
    /// connection is still the one that asked).
    fn deliver(&mut self, client: Client, len: usize) {
        let (idx, gen) = untag(client.tag);
        match self.conns.get_mut(idx) {
            Some(Some(c)) if c.gen == gen => c.waiting = c.waiting.saturating_sub(1),
            _ => return,
        }
        self.write_message(idx, len);
        self.maybe_close(idx);
        self.touch(idx);
    }

    /// The backend's UDP answer was truncated: ask the same question over
    /// TCP (to that backend if it is up, else any up backend). The TC reply
    /// in `self.out` holds the client's ID and question.
    fn ask_over_tcp(&mut self, b: Option<usize>, client: Client, len: usize) -> bool {
        let reply = &self.out[..len];
        let Ok(h) = Header::new_checked(reply) else { return false };
        let Ok(m) = Message::parse(reply) else { return false };
        let pool = self.engine.pool();
        let asked = b.and_then(|b| pool.ids().nth(b)).filter(|&id| pool.state(id) == BackendState::Up);
        let target = if let Some(id) = asked {
            Some(pool.addr(id))
        } else {
            pool.ids().find(|&id| pool.state(id) == BackendState::Up).map(|id| pool.addr(id))
        };
        let Some(addr) = target else { return false };
        let question = reply[HEADER_LEN..m.question.end()].to_vec();
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let id = (self.rng >> 24) as u16;
        let mut q = Vec::with_capacity(2 + HEADER_LEN + question.len() + 11);
        q.extend_from_slice(&[0, 0]);
        q.extend_from_slice(&id.to_be_bytes());
        q.extend_from_slice(&(flags::RD | (h.flags() & flags::CD)).to_be_bytes());
        q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 1]);
        q.extend_from_slice(&question);
        q.extend_from_slice(&[0, 0, 41, 0xff, 0xff, 0, 0, 0, 0, 0, 0]);
        let mlen = (q.len() - 2) as u16;
        q[..2].copy_from_slice(&mlen.to_be_bytes());
        let Ok(mut stream) = TcpStream::connect(addr) else { return false };
        let key = UPSTREAM_BASE + (self.next_upstream % (CONN_BASE - UPSTREAM_BASE));
        self.next_upstream += 1;
        if self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE).is_err() {
            return false;
        }
        let (conn, gen) = untag(client.tag);
        self.upstreams.insert(
            key,
            Upstream { stream, conn, gen, client_id: h.id(), out: q, opos: 0, inbuf: Vec::new(), started: Instant::now(), question },
        );
        true
    }

    fn upstream_ready(&mut self, key: usize) {
        let Some(u) = self.upstreams.get_mut(&key) else { return };
        while u.opos < u.out.len() {
            match u.stream.write(&u.out[u.opos..]) {
                Ok(n) => u.opos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => {
                    let u = self.upstreams.remove(&key).expect("present");
                    self.servfail_for(u);
                    return;
                }
            }
        }
        loop {
            match u.stream.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => u.inbuf.extend_from_slice(&self.buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
            if u.inbuf.len() >= 2 && u.inbuf.len() >= 2 + u16::from_be_bytes([u.inbuf[0], u.inbuf[1]]) as usize {
                break;
            }
        }
        let mut u = self.upstreams.remove(&key).expect("present");
        let _ = self.poll.registry().deregister(&mut u.stream);
        let sent_id = [u.out[2], u.out[3]];
        let ok = u.inbuf.len() >= 2 + HEADER_LEN && {
            let len = u16::from_be_bytes([u.inbuf[0], u.inbuf[1]]) as usize;
            let ans = &u.inbuf[2..(2 + len).min(u.inbuf.len())];
            ans.len() == len
                && ans[..2] == sent_id
                && ans.get(HEADER_LEN..HEADER_LEN + u.question.len()).is_some_and(|q| q.eq_ignore_ascii_case(&u.question))
        };
        if !ok {
            self.servfail_for(u);
            return;
        }
        let len = u16::from_be_bytes([u.inbuf[0], u.inbuf[1]]) as usize;
        self.out[..len].copy_from_slice(&u.inbuf[2..2 + len]);
        self.out[..2].copy_from_slice(&u.client_id.to_be_bytes());
        IoStats::add(&self.io.tcp_upstream, 1);
        let client = self.client_of(u.conn, u.gen);
        if let Some(c) = client {
            self.deliver(c, len);
        }
    }

    fn client_of(&self, idx: usize, gen: u32) -> Option<Client> {
        match self.conns.get(idx) {
            Some(Some(c)) if c.gen == gen => Some(Client { addr: c.peer, local: c.local, transport: Transport::Tcp, tag: tag(idx, gen) }),
            _ => None,
        }
    }

    /// The TCP exchange failed: the client gets SERVFAIL for its question.
    fn servfail_for(&mut self, u: Upstream) {
        let Some(client) = self.client_of(u.conn, u.gen) else { return };
        let mut m = Vec::with_capacity(HEADER_LEN + u.question.len());
        m.extend_from_slice(&u.client_id.to_be_bytes());
        m.extend_from_slice(&(flags::QR | flags::RD | flags::RA | 2).to_be_bytes());
        m.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend_from_slice(&u.question);
        self.out[..m.len()].copy_from_slice(&m);
        self.deliver(client, m.len());
    }

    fn drain_control(&mut self) {
        let extra = self.upstreams.len();
        crate::worker::drain_control(self.id, &self.ctl, &mut self.engine, &self.io, &self.rtt, extra);
    }
}
