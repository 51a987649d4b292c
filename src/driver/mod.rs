//! The one driver skeleton: what the UDP socket worker, the TCP server and
//! the AF_XDP worker share, written once.
//!
//! A driver is a [`Core`] and a front end. The core owns the engine, the
//! backend side ([`Backends`]: source-port sockets, their counters, RTT
//! histograms), the mio poll with the control waker, the clock, the
//! control channel and the stop flag. The front end owns the client side
//! (listen sockets, connections, rings) and only receives queries and
//! sends replies; it implements [`FrontEnd`], the few calls the core makes
//! back into it. Each turn of a driver's loop:
//!
//! ```text
//!   front end: wait (Core::wait, or its own sleep), receive client packets,
//!              run each through core.engine.handle_query, send the reply or
//!              core.backends.send the forward (the hit path: no call into
//!              the core but the engine's, no copy)
//!   Core::backend_answers(front)   answers from the backends -> FrontEnd::reply
//!   Core::end_turn(front)          source-port rotation, engine timers,
//!                                  poll_transmit (-> backends, FrontEnd::reply,
//!                                  FrontEnd::ask_tcp), FrontEnd::flush,
//!                                  control messages, the stop and its drain
//! ```
//!
//! Front ends are generic parameters, never trait objects, so every call
//! is static and inlined like the hand-written loops it replaces (the
//! shape of Knot's UDP handler: several I/O back ends, one handler).

mod backend;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};
use hdrhistogram::Histogram;
use kdns_core::engine::{Client, Engine, EngineConfig, TcpExchange, Transmit};
use kdns_core::Timestamp;
use mio::{Events, Poll, Registry, Token, Waker};

pub use backend::{AnswerBatch, Backends};

use crate::handle::{Control, IoStats, StopExport, WorkerHandle, WorkerKind, WorkerSnapshot};
use crate::upstream_sockets::PortsConfig;

/// The waker's token.
pub const WAKE: Token = Token(usize::MAX);
/// Source-port sockets are registered from this token up; front ends use
/// the tokens below it (and may use ranges above it that they skip here).
pub const BACKEND_BASE: usize = 1 << 20;
/// Tokens from here up are the front end's again (TCP connections).
const BACKEND_END: usize = 1 << 21;
/// How long a stopping worker waits for answers to queries in flight.
pub const DRAIN: Duration = Duration::from_secs(2);

/// The client side of a driver: what the core calls back into.
pub trait FrontEnd {
    /// Sends `msg` to `client` (or queues it for [`FrontEnd::flush`]): the
    /// reply to a backend's answer or one the engine queued.
    fn reply(&mut self, io: &IoStats, client: Client, msg: &[u8]);

    /// Carries `query` to the backend at `addr` over TCP for `exchange`,
    /// and later hands the answer to `Engine::handle_tcp_answer`. False if
    /// it cannot (then the engine is told the exchange failed). Only the
    /// TCP front end has TCP clients, for which alone the engine asks.
    fn ask_tcp(&mut self, io: &IoStats, exchange: TcpExchange, addr: SocketAddr, query: &[u8]) -> bool {
        let _ = (io, exchange, addr, query);
        false
    }

    /// Sends what was queued this turn.
    fn flush(&mut self, io: &IoStats) {
        let _ = io;
    }

    /// Queries held outside the engine (counted in the snapshot and waited
    /// for at shutdown).
    fn in_flight(&self) -> usize {
        0
    }

    /// The worker stops: take no new queries (deregister listeners).
    fn stop_listening(&mut self, registry: &Registry) {
        let _ = registry;
    }

    /// The loop ends now: last writes.
    fn finish(&mut self, io: &IoStats) {
        let _ = io;
    }

    /// After the turn's control messages and before new records are
    /// acknowledged: bring what the front end keeps outside the engine in
    /// line with it (the AF_XDP worker's in-kernel answer tier). Returns
    /// whether anything changed.
    fn sync(&mut self, engine: &mut Engine, now: Timestamp, io: &IoStats) -> bool {
        let _ = (engine, now, io);
        false
    }
}

/// What a worker needs besides its front end.
#[derive(Debug)]
pub struct CoreSetup {
    /// Index among all workers.
    pub id: usize,
    /// UDP, TCP or AF_XDP.
    pub kind: WorkerKind,
    /// The core it is pinned to, reported in the handle.
    pub core: Option<usize>,
    /// Engine settings (with this worker's own seed).
    pub engine: EngineConfig,
    /// The source-port slots for backend queries.
    pub ports: PortsConfig,
    /// How the backends' answers are read.
    pub answers: AnswerBatch,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
}

/// One readiness event for the front end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ready {
    /// Its token.
    pub token: Token,
    /// Readable, closed for reading or in error.
    pub readable: bool,
    /// Writable.
    pub writable: bool,
}

/// What [`Core::end_turn`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Go on; `transmits` packets came out of the engine's queue.
    Continue {
        /// Packets sent or queued from `poll_transmit`.
        transmits: usize,
    },
    /// Stopped and drained: leave the loop.
    Stop,
}

/// The shared part of a driver. Its fields are public so that a front end
/// can borrow the engine, the backends and the output buffer apart on the
/// hit path.
#[derive(Debug)]
pub struct Core {
    /// Index among all workers.
    pub id: usize,
    /// The engine.
    pub engine: Engine,
    /// The backend side.
    pub backends: Backends,
    /// The socket-layer counters.
    pub io: Arc<IoStats>,
    /// Where the engine writes replies from answers and queued transmits.
    pub out: Vec<u8>,
    poll: Poll,
    events: Events,
    origin: Instant,
    ctl: Receiver<Control>,
    stop: Arc<AtomicBool>,
    stopping: Option<Instant>,
    drain: Duration,
    at_stop: Arc<StopExport>,
}

impl Core {
    /// Builds the engine, the poll, the waker and the backend side, and
    /// the handle the control thread keeps.
    pub fn new(setup: CoreSetup) -> io::Result<(Core, WorkerHandle)> {
        let engine = Engine::new(setup.engine.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (tx, ctl) = crossbeam_channel::unbounded();
        let io = Arc::new(IoStats::default());
        let backends = Backends::new(&setup.ports, &setup.engine, poll.registry(), BACKEND_BASE, &io, setup.answers)?;
        let handle = WorkerHandle {
            id: setup.id,
            kind: setup.kind,
            core: setup.core,
            engine: Arc::clone(engine.stats()),
            cache: Arc::clone(engine.cache().stats()),
            backends: engine.pool().shared_stats(),
            io: Arc::clone(&io),
            tx,
            waker,
            at_stop: Arc::default(),
        };
        let core = Core {
            id: setup.id,
            engine,
            backends,
            io,
            out: vec![0; 65_535],
            poll,
            events: Events::with_capacity(256),
            origin: Instant::now(),
            ctl,
            stop: setup.stop,
            stopping: None,
            drain: DRAIN,
            at_stop: Arc::clone(&handle.at_stop),
        };
        Ok((core, handle))
    }

    /// The engine's clock: time since the worker started.
    #[inline]
    pub fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    /// The registry front ends register their sockets with.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The poll's own fd, readable when a backend socket or the waker is
    /// (for a front end that sleeps in its own `ppoll`).
    #[cfg(feature = "xdp")]
    pub fn poll_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.poll)
    }

    /// Whether the worker is stopping (takes no new queries).
    pub fn stopping(&self) -> bool {
        self.stopping.is_some()
    }

    /// How long a front end may sleep: until the engine's next timer, at
    /// most `max`.
    pub fn timeout(&self, max: Duration) -> Duration {
        let now = self.now();
        self.engine.poll_timeout().map_or(max, |t| t.saturating_since(now)).min(max)
    }

    /// Waits up to `timeout` for readiness. The backend sockets' events go
    /// to the backend side; the front end's (neither those nor the
    /// waker's) are appended to `ready`.
    pub fn wait(&mut self, timeout: Duration, ready: &mut Vec<Ready>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for ev in self.events.iter() {
            let t = ev.token();
            if t == WAKE || ((BACKEND_BASE..BACKEND_END).contains(&t.0) && self.backends.readable(t)) {
                continue;
            }
            ready.push(Ready { token: t, readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(), writable: ev.is_writable() });
        }
        Ok(())
    }

    /// Reads the backends' answers that are ready and passes the replies
    /// to `front`. Returns the answers read.
    pub fn backend_answers<F: FrontEnd>(&mut self, front: &mut F) -> usize {
        let Core { engine, backends, io, out, origin, .. } = self;
        let origin = *origin;
        let now = move || Timestamp::from_nanos(origin.elapsed().as_nanos() as u64);
        backends.answers(engine, now, out, |client, msg| front.reply(io, client, msg))
    }

    /// The rest of a turn: source-port rotation, the engine's timers and
    /// queued transmits, the front end's flush, control messages, and the
    /// stop with its drain.
    pub fn end_turn<F: FrontEnd>(&mut self, front: &mut F) -> Turn {
        self.backends.tick();
        let now = self.now();
        if self.engine.poll_timeout().is_some_and(|t| t <= now) {
            self.engine.handle_timeout(now);
        }
        let mut transmits = self.drain_transmits(now, front);
        front.flush(&self.io);
        let serial = self.drain_control(front.in_flight());
        transmits += usize::from(front.sync(&mut self.engine, now, &self.io));
        // Acknowledged once nothing answers from the older records.
        if let Some(serial) = serial {
            self.io.records_serial.set(u64::from(serial));
        }
        if self.stopping.is_none() && self.stop.load(Ordering::Acquire) {
            tracing::debug!(worker = self.id, in_flight = self.engine.in_flight(), "stopping: no new queries");
            self.stopping = Some(Instant::now());
            front.stop_listening(self.poll.registry());
        }
        if let Some(since) = self.stopping {
            let left = self.engine.in_flight() + front.in_flight();
            if left == 0 || since.elapsed() >= self.drain {
                if left > 0 {
                    IoStats::add(&self.io.lost_at_shutdown, left as u64);
                    tracing::warn!(worker = self.id, queries = left, "stopped with queries still waiting for a backend");
                }
                front.finish(&self.io);
                self.export_at_stop();
                return Turn::Stop;
            }
        }
        Turn::Continue { transmits }
    }

    /// Sends everything the engine queued: queries to the backends,
    /// replies to clients, TCP exchanges. Returns how many.
    fn drain_transmits<F: FrontEnd>(&mut self, now: Timestamp, front: &mut F) -> usize {
        let mut n = 0;
        while let Some(t) = self.engine.poll_transmit(now, &mut self.out) {
            n += 1;
            match t {
                Transmit::Backend { addr, len, port, .. } => self.backends.send(port, addr, &self.out[..len]),
                Transmit::Client { client, len } => front.reply(&self.io, client, &self.out[..len]),
                Transmit::BackendTcp { addr, len, exchange, .. } => {
                    if !front.ask_tcp(&self.io, exchange, addr, &self.out[..len]) {
                        self.engine.tcp_failed(now, exchange);
                    }
                }
            }
        }
        n
    }

    fn drain_control(&mut self, extra_in_flight: usize) -> Option<u32> {
        let now = self.now();
        apply_control(self.id, &self.ctl, &mut self.engine, self.backends.rtt(), extra_in_flight, now)
    }

    /// Leaves the cache's export for the dump at a clean stop, if asked.
    fn export_at_stop(&self) {
        if let Some(written) = self.at_stop.wanted() {
            let t = Instant::now();
            let part = crate::warm::export(self.engine.cache(), self.now(), written);
            self.at_stop.put(part, t.elapsed());
        }
    }

    /// Shortens the shutdown drain (tests).
    #[cfg(test)]
    pub fn set_drain(&mut self, d: Duration) {
        self.drain = d;
    }
}

/// Applies every waiting control message to a worker's engine.
/// `extra_in_flight` is what the worker holds outside the engine (reported
/// in the snapshot). Returns the serial of the last records applied, for
/// the caller to acknowledge (`IoStats::records_serial`) once the worker
/// is in line with them.
pub fn apply_control(
    id: usize,
    ctl: &Receiver<Control>,
    engine: &mut Engine,
    rtt: &[Histogram<u64>],
    extra_in_flight: usize,
    now: Timestamp,
) -> Option<u32> {
    let mut serial = None;
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
                serial = Some(snap.serial());
                engine.set_records(snap);
            }
            Ok(Control::ExportCache { written, reply }) => {
                let _ = reply.try_send((id, crate::warm::export(engine.cache(), now, written)));
            }
            Ok(Control::ImportCache { dump, reply }) => {
                let _ = reply.try_send((id, engine.cache_mut().import(now, crate::warm::wall_now(), &dump)));
            }
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return serial,
        }
    }
}

/// Runs `f` on a new thread named `name`, pinned to `core` if given.
pub fn spawn_pinned(
    name: String,
    worker: usize,
    core: Option<core_affinity::CoreId>,
    f: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(move || {
        if let Some(c) = core {
            if !core_affinity::set_for_current(c) {
                tracing::warn!(worker, core = c.id, "could not pin worker to its core");
            }
        }
        f()
    })
}
