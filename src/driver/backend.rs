//! The backend side of every driver: the source-port sockets the queries
//! leave from, their counters, and one round-trip histogram per backend.
//! Every send to a backend and every answer read from one goes through
//! here, whatever the front end (UDP sockets, TCP, AF_XDP).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use kdns_core::engine::{AnswerVerdict, Client, Engine, EngineConfig};
use kdns_core::Timestamp;
use mio::{Registry, Token};

use crate::handle::IoStats;
use crate::upstream_sockets::{PortsConfig, SourcePorts};
use kdns_sys::udp::RecvBatch;

/// Batches read from one source-port socket before the others get a turn.
const BUDGET: usize = 8;

/// How a front end wants the backends' answers read.
#[derive(Debug, Clone, Copy)]
pub struct AnswerBatch {
    /// Datagrams per `recvmmsg`.
    pub count: usize,
    /// Longest answer read whole (longer ones reach the engine cut short,
    /// and it drops them as malformed).
    pub size: usize,
}

/// A histogram of round-trip times in microseconds (1 us .. 60 s, 2 digits).
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 2).expect("static bounds")
}

/// Records the round-trip time of the answer `engine` just accepted, if
/// any, in the histogram of its backend (index = backend id).
fn record_rtt(engine: &mut Engine, rtt: &mut [Histogram<u64>]) {
    if let Some((id, d)) = engine.take_rtt_sample() {
        if let Some(h) = rtt.get_mut(id.index()) {
            let _ = h.record((d.as_micros() as u64).clamp(1, 60_000_000));
        }
    }
}

/// The source-port pool, its counters and the RTT histograms of one worker.
#[derive(Debug)]
pub struct Backends {
    ports: SourcePorts,
    rtt: Vec<Histogram<u64>>,
    io: Arc<IoStats>,
    rx: RecvBatch,
    /// Datagrams per receive: fewer back means the socket is drained.
    rx_count: usize,
}

impl Backends {
    /// Opens the pool for the backends of `engine` (exactly
    /// `engine.source_ports` slots, the ones the engine picks from),
    /// registered with `registry` from `token_base` up.
    pub fn new(
        cfg: &PortsConfig,
        engine: &EngineConfig,
        registry: &Registry,
        token_base: usize,
        io: &Arc<IoStats>,
        batch: AnswerBatch,
    ) -> io::Result<Backends> {
        let addrs: Vec<SocketAddr> = engine.backends.iter().map(|b| b.addr).collect();
        let cfg = PortsConfig { slots: engine.source_ports.max(1), ..cfg.clone() };
        Ok(Backends {
            ports: SourcePorts::new(&cfg, &addrs, registry, token_base, Arc::clone(io))?,
            rtt: addrs.iter().map(|_| new_histogram()).collect(),
            io: Arc::clone(io),
            rx: RecvBatch::new(batch.count, batch.size),
            rx_count: batch.count.clamp(1, kdns_sys::udp::BATCH),
        })
    }

    /// Sends `query` to `to` from source-port slot `port`, counted.
    #[inline]
    pub fn send(&mut self, port: u16, to: SocketAddr, query: &[u8]) {
        match self.ports.send(port, to, query, Instant::now()) {
            Ok(_) => IoStats::add(&self.io.backend_tx, 1),
            Err(_) => IoStats::add(&self.io.tx_errors, 1),
        }
    }

    /// A readiness event: true if `token` is one of the pool's sockets.
    pub fn readable(&mut self, token: Token) -> bool {
        self.ports.readable(token)
    }

    /// Whether a socket is waiting to be read.
    pub fn has_ready(&self) -> bool {
        self.ports.has_ready()
    }

    /// Closes old sockets and rotates slots that are due.
    pub fn tick(&mut self) {
        self.ports.tick(Instant::now());
    }

    /// The round-trip histograms, by backend index.
    pub fn rtt(&self) -> &[Histogram<u64>] {
        &self.rtt
    }

    /// Reads the sockets that are ready, each until it would block or its
    /// budget runs out (then it is read again next turn), hands every
    /// answer to `engine` at `now()`, records its round-trip time, and
    /// passes each reply for a client to `reply`. Returns the answers read.
    pub fn answers(
        &mut self,
        engine: &mut Engine,
        now: impl Fn() -> Timestamp,
        out: &mut [u8],
        mut reply: impl FnMut(Client, &[u8]),
    ) -> usize {
        let mut read = 0;
        while let Some(r) = self.ports.next_ready() {
            for round in 0..BUDGET {
                let n = match self.rx.recv(r.fd) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::trace!(error = %e, "backend receive error");
                        break;
                    }
                };
                read += n;
                IoStats::add(&self.io.backend_rx, n as u64);
                let now = now();
                for j in 0..n {
                    let Some((answer, from, _)) = self.rx.get(j) else { continue };
                    let v = engine.handle_backend_answer(now, from, r.slot, answer, out);
                    record_rtt(engine, &mut self.rtt);
                    if let AnswerVerdict::Reply { client, len } = v {
                        reply(client, &out[..len]);
                    }
                }
                if n < self.rx_count {
                    break;
                }
                if round + 1 == BUDGET {
                    self.ports.again(r.id);
                }
            }
        }
        read
    }

    /// Sockets open now (current and lingering).
    #[cfg(test)]
    pub fn open_sockets(&self) -> usize {
        self.ports.open_sockets()
    }
}
