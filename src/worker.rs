//! The UDP socket worker: one per core, run to completion; the UDP front
//! end of the driver skeleton ([`crate::driver`]).
//!
//! Each worker reads its UDP sockets of each listen address (its own
//! SO_REUSEPORT socket, the kernel spreading clients over the workers, or
//! a socket held by systemd and shared: [`crate::listeners`]); its [`Core`] holds the engine
//! and its own source-port pool for the backends. A single mio poll waits
//! on all of them; a turn receives a batch with `recvmmsg`, runs every
//! query through the engine, and sends the replies with `sendmmsg`. Misses
//! go out on the worker's own backend sockets and their answers come back
//! to the same worker, so nothing crosses cores.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kdns_core::engine::{Client, EngineConfig, Transport, Verdict};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};

use crate::driver::{spawn_pinned, AnswerBatch, Core, CoreSetup, FrontEnd, Ready, Turn};
use crate::handle::{IoStats, WorkerHandle, WorkerKind};
use crate::upstream_sockets::PortsConfig;
use kdns_sys::udp::{RecvBatch, SendBatch, Sent, BATCH};

/// Batches read from one socket before the others get a turn.
const BUDGET: usize = 8;
/// Largest query we read; longer datagrams are counted and dropped.
const MAX_QUERY: usize = 4096;

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
    let udp_size = usize::from(setup.engine.udp_size).max(512);
    let (core, handle) = Core::new(CoreSetup {
        id: setup.id,
        kind: WorkerKind::Udp,
        core: setup.core.map(|c| c.id),
        engine: setup.engine,
        ports: setup.ports,
        answers: AnswerBatch { count: BATCH / 2, size: udp_size },
        stop: setup.stop,
    })?;
    let front = UdpFront::new(setup.listen, core.registry(), udp_size)?;
    let t = spawn_pinned(format!("kdns-udp-{}", setup.id), setup.id, setup.core, move || run(core, front))?;
    Ok((handle, t))
}

/// The UDP worker's loop.
pub fn run(mut core: Core, mut front: UdpFront) {
    let mut events = Vec::with_capacity(64);
    loop {
        let timeout =
            if !front.busy.is_empty() || core.backends.has_ready() { Duration::ZERO } else { core.timeout(Duration::from_secs(1)) };
        if let Err(e) = core.wait(timeout, &mut events) {
            tracing::error!(worker = core.id, error = %e, "poll failed; worker stops");
            break;
        }
        let mut ready = std::mem::take(&mut front.busy);
        for Ready { token, .. } in events.drain(..) {
            if !ready.contains(&token) {
                ready.push(token);
            }
        }
        if !core.stopping() {
            for t in ready {
                front.listen_readable(&mut core, t);
            }
        }
        core.backend_answers(&mut front);
        if core.end_turn(&mut front) == Turn::Stop {
            break;
        }
    }
}

/// The client side of a UDP worker: its listen sockets and their batches.
#[derive(Debug)]
pub struct UdpFront {
    listen: Vec<(SocketAddr, UdpSocket)>,
    rx: RecvBatch,
    tx: Vec<SendBatch>,
    /// Listen sockets that still had data when their budget ran out.
    busy: Vec<Token>,
}

impl UdpFront {
    /// Registers `listen` (token = index) with `registry`; replies are at
    /// most `udp_size` bytes.
    pub fn new(listen: Vec<(SocketAddr, std::net::UdpSocket)>, registry: &Registry, udp_size: usize) -> io::Result<UdpFront> {
        let mut socks = Vec::new();
        for (i, (addr, s)) in listen.into_iter().enumerate() {
            let mut s = UdpSocket::from_std(s);
            registry.register(&mut s, Token(i), Interest::READABLE)?;
            socks.push((addr, s));
        }
        let tx = socks.iter().map(|_| SendBatch::new(BATCH, udp_size)).collect();
        Ok(UdpFront { listen: socks, rx: RecvBatch::new(BATCH, MAX_QUERY), tx, busy: Vec::new() })
    }

    /// Reads listen socket `token` for up to [`BUDGET`] batches and runs
    /// every query through the engine; replies go out in the socket's send
    /// batch, misses to the backends.
    fn listen_readable(&mut self, core: &mut Core, token: Token) {
        let i = token.0;
        let Some((local, sock)) = self.listen.get(i) else { return };
        let (local, fd) = (*local, sock.as_raw_fd());
        for round in 0..BUDGET {
            let n = match self.rx.recv(fd) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) => {
                    tracing::debug!(worker = core.id, error = %e, "receive failed");
                    return;
                }
            };
            IoStats::add(&core.io.rx, n as u64);
            let now = core.now();
            for j in 0..n {
                let Some((query, src, truncated)) = self.rx.get(j) else { continue };
                if truncated {
                    IoStats::add(&core.io.rx_oversized, 1);
                    continue;
                }
                let client = Client { addr: src, local, transport: Transport::Udp, tag: i as u64 };
                if self.tx[i].is_full() {
                    count_sent(&core.io, self.tx[i].flush(fd));
                }
                let slot = self.tx[i].slot().expect("flushed above");
                match core.engine.handle_query(now, &client, query, slot) {
                    Verdict::Reply(len) => self.tx[i].commit(len, src),
                    Verdict::Forward { addr, len, port, .. } => core.backends.send(port, addr, &slot[..len]),
                    // The reply comes out of poll_transmit with the answer.
                    Verdict::Wait | Verdict::Drop(_) => {}
                }
            }
            count_sent(&core.io, self.tx[i].flush(fd));
            if n < BATCH {
                return;
            }
            if round + 1 == BUDGET {
                self.busy.push(token);
            }
        }
    }
}

impl FrontEnd for UdpFront {
    /// Queues `msg` for `client` on the listen socket it asked on.
    fn reply(&mut self, io: &IoStats, client: Client, msg: &[u8]) {
        let i = client.tag as usize;
        let Some((_, sock)) = self.listen.get(i) else { return };
        let fd = sock.as_raw_fd();
        if self.tx[i].is_full() {
            count_sent(io, self.tx[i].flush(fd));
        }
        if let Some(slot) = self.tx[i].slot() {
            if msg.len() <= slot.len() {
                slot[..msg.len()].copy_from_slice(msg);
                self.tx[i].commit(msg.len(), client.addr);
            } else {
                IoStats::add(&io.tx_errors, 1);
            }
        }
    }

    fn flush(&mut self, io: &IoStats) {
        for (i, (_, sock)) in self.listen.iter().enumerate() {
            if !self.tx[i].is_empty() {
                count_sent(io, self.tx[i].flush(sock.as_raw_fd()));
            }
        }
    }

    fn stop_listening(&mut self, registry: &Registry) {
        for (_, s) in &mut self.listen {
            let _ = registry.deregister(s);
        }
        self.busy.clear();
    }
}

fn count_sent(io: &IoStats, r: Sent) {
    IoStats::add(&io.tx, r.sent as u64);
    IoStats::add(&io.tx_errors, r.failed as u64);
}
