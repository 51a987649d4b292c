//! The UDP socket worker: one per core, run to completion.
//!
//! Each worker owns an [`Engine`] (cache, pending table, backend view), one
//! SO_REUSEPORT UDP socket per listen address (the kernel spreads clients
//! over the workers), and its own source-port pool for the backends
//! ([`SourcePorts`]: sockets on random ports, one picked per query). A
//! single mio poll waits on all of them; a turn receives a batch with
//! `recvmmsg`, runs every query through the engine, and sends the replies
//! with `sendmmsg`. Misses go out on the worker's own backend sockets and
//! their answers come back to the same worker, so nothing crosses cores.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use hdrhistogram::Histogram;
use kdns_core::engine::{AnswerVerdict, Client, Engine, EngineConfig, Transmit, Transport, Verdict};
use kdns_core::Timestamp;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};

use crate::handle::{Control, IoStats, WorkerHandle, WorkerKind, WorkerSnapshot};
use crate::io::udp::{RecvBatch, SendBatch, BATCH};
use crate::upstream_sockets::{PortsConfig, SourcePorts};

const WAKE: Token = Token(usize::MAX);
const BACKEND_BASE: usize = 1 << 20;
/// Batches read from one socket before the others get a turn.
const BUDGET: usize = 8;
/// Largest query we read; longer datagrams are counted and dropped.
const MAX_QUERY: usize = 4096;
/// How long a stopping worker waits for answers to queries in flight.
const DRAIN: Duration = Duration::from_secs(2);

/// Opens a UDP socket on `addr` with SO_REUSEPORT, so every worker can
/// bind the same address and the kernel spreads clients across them.
pub fn reuseport_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Bursts are absorbed by the socket buffer; the limit may cap this.
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Everything a worker starts with.
#[derive(Debug)]
pub struct WorkerSetup {
    /// Index among all workers.
    pub id: usize,
    /// Core to pin to.
    pub core: Option<core_affinity::CoreId>,
    /// Engine settings (with this worker's own seed).
    pub engine: EngineConfig,
    /// Listen sockets, bound already (so bind errors surface at start).
    pub listen: Vec<(SocketAddr, std::net::UdpSocket)>,
    /// The source-port slots for backend queries.
    pub ports: PortsConfig,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
}

/// Starts a worker thread. Returns the control thread's handle to it.
pub fn spawn(setup: WorkerSetup) -> io::Result<(WorkerHandle, JoinHandle<()>)> {
    let engine = Engine::new(setup.engine.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let io_stats = Arc::new(IoStats::default());
    let mut listen = Vec::new();
    for (i, (addr, s)) in setup.listen.into_iter().enumerate() {
        let mut s = UdpSocket::from_std(s);
        poll.registry().register(&mut s, Token(i), Interest::READABLE)?;
        listen.push((addr, s));
    }
    let ports = new_ports(&setup.ports, &setup.engine, poll.registry(), BACKEND_BASE, &io_stats)?;
    let handle = WorkerHandle {
        id: setup.id,
        kind: WorkerKind::Udp,
        core: setup.core.map(|c| c.id),
        engine: Arc::clone(engine.stats()),
        cache: Arc::clone(engine.cache().stats()),
        backends: engine.pool().shared_stats(),
        io: Arc::clone(&io_stats),
        tx,
        waker,
    };
    let udp_size = usize::from(setup.engine.udp_size).max(512);
    let n_backends = setup.engine.backends.len();
    let tx_batches = listen.iter().map(|_| SendBatch::new(BATCH, udp_size)).collect();
    let w = UdpWorker {
        id: setup.id,
        engine,
        poll,
        listen,
        ports,
        rx: RecvBatch::new(BATCH, MAX_QUERY),
        brx: RecvBatch::new(BATCH / 2, udp_size),
        tx: tx_batches,
        out: vec![0; 65_535],
        ctl: rx,
        stop: setup.stop,
        io: io_stats,
        rtt: (0..n_backends).map(|_| new_histogram()).collect(),
        origin: Instant::now(),
        busy: Vec::new(),
    };
    let core = setup.core;
    let t = std::thread::Builder::new().name(format!("kdns-udp-{}", setup.id)).spawn(move || {
        if let Some(c) = core {
            if !core_affinity::set_for_current(c) {
                tracing::warn!(worker = w.id, core = c.id, "could not pin worker to its core");
            }
        }
        w.run()
    })?;
    Ok((handle, t))
}

/// The source-port pool of a worker whose engine is `engine`, registered
/// with `registry` from `token_base` up.
pub fn new_ports(
    cfg: &PortsConfig,
    engine: &EngineConfig,
    registry: &mio::Registry,
    token_base: usize,
    io: &Arc<IoStats>,
) -> io::Result<SourcePorts> {
    let addrs: Vec<SocketAddr> = engine.backends.iter().map(|b| b.addr).collect();
    // The engine picks slots in 0..source_ports: the pool has exactly that many.
    let cfg = PortsConfig { slots: engine.source_ports.max(1), ..cfg.clone() };
    SourcePorts::new(&cfg, &addrs, registry, token_base, Arc::clone(io))
}

/// A histogram of round-trip times in microseconds (1 us .. 60 s, 2 digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds")
}

/// Records the round-trip time of the answer the engine just accepted,
/// if any, in the worker's histogram of that backend. Every worker kind
/// calls this after `handle_backend_answer`.
pub fn record_rtt(engine: &mut Engine, rtt: &mut [Histogram<u64>]) {
    if let Some((id, d)) = engine.take_rtt_sample() {
        if let Some(h) = rtt.get_mut(id.index()) {
            let _ = h.record((d.as_micros() as u64).clamp(1, 60_000_000));
        }
    }
}

/// Applies every waiting control message to a worker's engine; every
/// worker kind calls this once per loop turn. `in_flight` is what the
/// worker reports as waiting for a backend (the TCP server adds its TCP
/// exchanges).
pub fn drain_control(
    id: usize,
    ctl: &Receiver<Control>,
    engine: &mut Engine,
    io: &IoStats,
    rtt: &[Histogram<u64>],
    extra_in_flight: usize,
) {
    loop {
        match ctl.try_recv() {
            Ok(Control::FlushCache) => {
                engine.flush_cache();
                tracing::debug!(worker = id, "cache flushed");
            }
            Ok(Control::Snapshot(reply)) => {
                let _ =
                    reply.try_send(WorkerSnapshot { worker: id, rtt_us: rtt.to_vec(), in_flight: engine.in_flight() + extra_in_flight });
            }
            Ok(Control::Records(snap)) => {
                let serial = snap.serial();
                engine.set_records(snap);
                io.records_serial.set(u64::from(serial));
            }
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return,
        }
    }
}

struct UdpWorker {
    id: usize,
    engine: Engine,
    poll: Poll,
    listen: Vec<(SocketAddr, UdpSocket)>,
    ports: SourcePorts,
    rx: RecvBatch,
    brx: RecvBatch,
    tx: Vec<SendBatch>,
    out: Vec<u8>,
    ctl: Receiver<Control>,
    stop: Arc<AtomicBool>,
    io: Arc<IoStats>,
    rtt: Vec<Histogram<u64>>,
    origin: Instant,
    /// Listen sockets that still had data when their budget ran out.
    busy: Vec<Token>,
}

impl UdpWorker {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut stopping: Option<Instant> = None;
        loop {
            let now = self.now();
            let timeout = if !self.busy.is_empty() || self.ports.has_ready() {
                Duration::ZERO
            } else {
                let t = self.engine.poll_timeout().map_or(Duration::from_secs(1), |t| t.saturating_since(now));
                t.min(Duration::from_secs(1))
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(worker = self.id, error = %e, "poll failed; worker stops");
                    break;
                }
            }
            let mut ready: Vec<Token> = std::mem::take(&mut self.busy);
            for ev in events.iter() {
                if ev.token() != WAKE && !self.ports.readable(ev.token()) && !ready.contains(&ev.token()) {
                    ready.push(ev.token());
                }
            }
            for t in ready {
                if stopping.is_none() {
                    self.listen_readable(t.0, t);
                }
            }
            self.backend_answers();
            self.ports.tick(Instant::now());
            let now = self.now();
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            self.drain_transmits(now);
            self.flush_all();
            self.drain_control();
            if stopping.is_none() && self.stop.load(Ordering::Relaxed) {
                tracing::debug!(worker = self.id, in_flight = self.engine.in_flight(), "stopping: no new queries");
                stopping = Some(Instant::now());
                for (_, s) in &mut self.listen {
                    let _ = self.poll.registry().deregister(s);
                }
                self.busy.clear();
            }
            if let Some(since) = stopping {
                let left = self.engine.in_flight();
                if left == 0 || since.elapsed() >= DRAIN {
                    if left > 0 {
                        IoStats::add(&self.io.lost_at_shutdown, left as u64);
                        tracing::warn!(worker = self.id, queries = left, "stopped with queries still waiting for a backend");
                    }
                    break;
                }
            }
        }
    }

    fn listen_readable(&mut self, i: usize, token: Token) {
        let Some((local, sock)) = self.listen.get(i) else { return };
        let (local, fd) = (*local, sock.as_raw_fd());
        for round in 0..BUDGET {
            let n = match self.rx.recv(fd) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(worker = self.id, error = %e, "receive failed");
                    return;
                }
            };
            IoStats::add(&self.io.rx, n as u64);
            let now = self.now();
            for j in 0..n {
                let Some((query, src, truncated)) = self.rx.get(j) else { continue };
                if truncated {
                    IoStats::add(&self.io.rx_oversized, 1);
                    continue;
                }
                let client = Client { addr: src, local, transport: Transport::Udp, tag: i as u64 };
                if self.tx[i].is_full() {
                    let r = self.tx[i].flush(fd);
                    count_sent(&self.io, r);
                }
                let slot = self.tx[i].slot().expect("flushed above");
                match self.engine.handle_query(now, &client, query, slot) {
                    Verdict::Reply(len) => self.tx[i].commit(len, src),
                    Verdict::Forward { addr, len, port, .. } => match self.ports.send(port, addr, &slot[..len], Instant::now()) {
                        Ok(_) => IoStats::add(&self.io.backend_tx, 1),
                        Err(_) => IoStats::add(&self.io.tx_errors, 1),
                    },
                    // The reply comes out of poll_transmit with the answer.
                    Verdict::Wait | Verdict::Drop(_) => {}
                }
            }
            let r = self.tx[i].flush(fd);
            count_sent(&self.io, r);
            if n < BATCH {
                return;
            }
            if round + 1 == BUDGET {
                self.busy.push(token);
            }
        }
    }

    /// Reads the source-port sockets that are ready, each until it would
    /// block or its budget runs out (then it is read again next turn).
    fn backend_answers(&mut self) {
        while let Some(r) = self.ports.next_ready() {
            for round in 0..BUDGET {
                let n = match self.brx.recv(r.fd) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::trace!(worker = self.id, error = %e, "backend receive error");
                        break;
                    }
                };
                IoStats::add(&self.io.backend_rx, n as u64);
                let now = self.now();
                for j in 0..n {
                    let Some((answer, from, _)) = self.brx.get(j) else { continue };
                    let v = self.engine.handle_backend_answer(now, from, r.slot, answer, &mut self.out);
                    crate::worker::record_rtt(&mut self.engine, &mut self.rtt);
                    if let AnswerVerdict::Reply { client, len } = v {
                        self.reply_to(client, len);
                    }
                }
                if n < BATCH / 2 {
                    break;
                }
                if round + 1 == BUDGET {
                    self.ports.again(r.id);
                }
            }
        }
    }

    /// Queues `self.out[..len]` for `client` on its listen socket.
    fn reply_to(&mut self, client: Client, len: usize) {
        let i = client.tag as usize;
        let Some((_, sock)) = self.listen.get(i) else { return };
        let fd = sock.as_raw_fd();
        if self.tx[i].is_full() {
            let r = self.tx[i].flush(fd);
            count_sent(&self.io, r);
        }
        if let Some(slot) = self.tx[i].slot() {
            if len <= slot.len() {
                slot[..len].copy_from_slice(&self.out[..len]);
                self.tx[i].commit(len, client.addr);
            } else {
                IoStats::add(&self.io.tx_errors, 1);
            }
        }
    }

    fn drain_transmits(&mut self, now: Timestamp) {
        while let Some(t) = self.engine.poll_transmit(now, &mut self.out) {
            match t {
                Transmit::Backend { addr, len, port, .. } => match self.ports.send(port, addr, &self.out[..len], Instant::now()) {
                    Ok(_) => IoStats::add(&self.io.backend_tx, 1),
                    Err(_) => IoStats::add(&self.io.tx_errors, 1),
                },
                Transmit::Client { client, len } => self.reply_to(client, len),
            }
        }
    }

    fn flush_all(&mut self) {
        for (i, (_, sock)) in self.listen.iter().enumerate() {
            if !self.tx[i].is_empty() {
                let r = self.tx[i].flush(sock.as_raw_fd());
                count_sent(&self.io, r);
            }
        }
    }

    fn drain_control(&mut self) {
        let extra = 0;
        crate::worker::drain_control(self.id, &self.ctl, &mut self.engine, &self.io, &self.rtt, extra);
    }
}

fn count_sent(io: &IoStats, r: crate::io::udp::Sent) {
    IoStats::add(&io.tx, r.sent as u64);
    IoStats::add(&io.tx_errors, r.failed as u64);
}
