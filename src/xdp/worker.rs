//! The AF_XDP worker: one per (interface, queue), pinned, run to completion.
//!
//! Each worker owns a UMEM and one AF_XDP socket bound to its queue, an
//! [`Engine`], and its source-port pool for the backends (UDP sockets on
//! random ports, see [`SourcePorts`]). A turn:
//!
//! 1. completion ring -> free frames;
//! 2. RX ring: each frame is parsed in place (`net::parse_udp_frame`), the
//!    DNS query copied to a small buffer, answered by the engine straight
//!    into the same frame, turned around (`net::turn_around`) and put on
//!    the TX ring; frames that carried misses or drops go back to the fill
//!    ring at once;
//! 3. backend answers (kernel UDP sockets) are written into free frames
//!    with fresh Ethernet/IP/UDP headers. While queries are in flight, one
//!    zero-timeout `epoll_wait` per turn says which of the pool's sockets
//!    are readable and only those are read: the cost of a turn does not
//!    grow with `upstream.source_ports`, and with nothing in flight the
//!    sockets cost nothing at all;
//! 4. timers, queued retries/probes, control messages;
//! 5. TX kicks while the TX ring holds frames (copy mode sends at most 32
//!    frames per kick) and the fill-ring wakeup when the kernel asks for
//!    them (need_wakeup), then sleep in poll() only when nothing moved and
//!    nothing waits on the TX ring.
//!
//! The client's MAC and VLAN travel with a query in the engine's client
//! tag (48 + 16 bits), so the answer to a miss needs no neighbour lookup.

use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use hdrhistogram::Histogram;
use kdns_core::engine::{AnswerVerdict, Client, Engine, EngineConfig, Transmit, Transport, Verdict};
use kdns_core::net::{self, L2Header};
use kdns_core::Timestamp;
use mio::{Events, Poll, Token, Waker};
use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

use crate::handle::{Control, IoStats, WorkerHandle, WorkerKind};
use crate::upstream_sockets::{PortsConfig, SourcePorts};
use crate::worker::new_histogram;

const WAKE: Token = Token(usize::MAX);
const BACKEND_BASE: usize = 1 << 20;
const BATCH: usize = 64;
/// Most `sendto` kicks per loop turn while the TX ring holds frames (copy
/// mode sends at most 32 frames per kick): enough for four full RX batches.
const MAX_KICKS: u32 = 8;
const MAX_QUERY: usize = 1500;
const DRAIN: Duration = Duration::from_secs(2);

/// Ring and frame sizes, and how the worker waits.
#[derive(Debug, Clone)]
pub struct XdpSettings {
    /// UMEM frame size (2048 or 4096).
    pub frame_size: u32,
    /// Frames in the UMEM (half go to the fill ring, the rest answer misses).
    pub frames: u32,
    /// Size of each ring (RX, TX, fill, completion); a power of two.
    pub ring_size: u32,
    /// Spin instead of sleeping in poll() (lowest latency, burns the core).
    pub busy_poll: bool,
    /// SCHED_FIFO priority for the worker thread; 0: normal scheduling.
    pub realtime_priority: u32,
    /// Ask for zero-copy first (falls back to copy mode).
    pub zero_copy: bool,
}

impl Default for XdpSettings {
    fn default() -> Self {
        XdpSettings { frame_size: 2048, frames: 4096, ring_size: 2048, busy_poll: false, realtime_priority: 0, zero_copy: true }
    }
}

/// What a worker needs to start.
#[derive(Debug)]
pub struct XdpWorkerSetup {
    /// Index among all workers.
    pub id: usize,
    /// Core to pin to.
    pub core: Option<core_affinity::CoreId>,
    /// Interface name.
    pub ifname: String,
    /// Queue id on the interface.
    pub queue: u32,
    /// The interface's MAC (source of answers sent from fresh frames).
    pub mac: [u8; 6],
    /// Engine settings (own seed).
    pub engine: EngineConfig,
    /// Rings and frames.
    pub settings: XdpSettings,
    /// The source-port slots for backend queries.
    pub ports: PortsConfig,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
}

/// A worker whose socket exists (so its fd can go into the XSKMAP) but
/// whose thread has not started.
pub struct PreparedXdpWorker {
    setup: XdpWorkerSetup,
    umem: Umem,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    descs: Vec<FrameDesc>,
    zero_copy: bool,
}

impl std::fmt::Debug for PreparedXdpWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedXdpWorker").field("ifname", &self.setup.ifname).field("queue", &self.setup.queue).finish()
    }
}

/// The rings of a new AF_XDP socket: TX, RX, and fill + completion.
type SocketRings = (TxQueue, RxQueue, Option<(FillQueue, CompQueue)>);

fn make_socket(s: &XdpSettings, umem: &Umem, ifname: &str, queue: u32, zero_copy: bool) -> Result<SocketRings, String> {
    let ring = QueueSize::new(s.ring_size).map_err(|e| format!("ring size {}: {e}", s.ring_size))?;
    let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
    bind |= if zero_copy { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY };
    let cfg = SocketConfig::builder()
        .rx_queue_size(ring)
        .tx_queue_size(ring)
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        .bind_flags(bind)
        .build();
    let iface: Interface = ifname.parse().map_err(|_| format!("bad interface name {ifname:?}"))?;
    // SAFETY: the UMEM is not shared with any other socket, so the
    // double-free hazard xsk-rs documents for shared UMEMs cannot arise.
    unsafe { Socket::new(cfg, umem, &iface, queue) }.map_err(|e| format!("{e}"))
}

/// Creates the UMEM and the socket of a worker (zero-copy first, then copy
/// mode). Errors are for the log: they say which interface and queue.
pub fn prepare(setup: XdpWorkerSetup) -> Result<PreparedXdpWorker, String> {
    let s = &setup.settings;
    let at = format!("{} queue {}", setup.ifname, setup.queue);
    let frames = NonZeroU32::new(s.frames.max(2 * s.ring_size)).ok_or("frames must be > 0")?;
    let ring = QueueSize::new(s.ring_size).map_err(|e| format!("{at}: ring size {}: {e}", s.ring_size))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(s.frame_size).map_err(|e| format!("{at}: frame size {}: {e}", s.frame_size))?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .frame_headroom(0)
        .build()
        .map_err(|e| format!("{at}: {e}"))?;
    let try_mode = |zc: bool| -> Result<_, String> {
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| format!("{at}: UMEM: {e}"))?;
        let (tx, rx, rings) = make_socket(s, &umem, &setup.ifname, setup.queue, zc)?;
        let (fq, cq) = rings.ok_or_else(|| format!("{at}: no fill/completion rings"))?;
        Ok((umem, descs, tx, rx, fq, cq))
    };
    let (zero_copy, parts) = if s.zero_copy {
        match try_mode(true) {
            Ok(p) => (true, p),
            Err(e) => {
                tracing::debug!("{at}: zero-copy not available ({e}); using copy mode");
                (false, try_mode(false).map_err(|e| format!("{at}: AF_XDP socket: {e}"))?)
            }
        }
    } else {
        (false, try_mode(false).map_err(|e| format!("{at}: AF_XDP socket: {e}"))?)
    };
    let (umem, descs, tx, rx, fq, cq) = parts;
    Ok(PreparedXdpWorker { setup, umem, fq, cq, rx, tx, descs, zero_copy })
}

impl PreparedXdpWorker {
    /// The socket's fd, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Whether the socket is in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Starts the worker thread.
    pub fn start(self) -> io::Result<(WorkerHandle, JoinHandle<()>)> {
        let PreparedXdpWorker { setup, umem, mut fq, cq, rx, tx, mut descs, zero_copy: _ } = self;
        let engine = Engine::new(setup.engine.clone()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        // The AF_XDP socket is deliberately not registered with epoll: a
        // registered socket has a waiter on its queue for good, and then
        // every NAPI flush runs the epoll callback (locks and all) on the
        // receive core even while the worker is busy. The worker polls it
        // with ppoll() only when it goes to sleep (see `sleep`).
        let io_stats = Arc::new(IoStats::default());
        let ports = crate::worker::new_ports(&setup.ports, &setup.engine, poll.registry(), BACKEND_BASE, &io_stats)?;
        // Half the frames wait in the fill ring for queries; the rest answer misses.
        let fill_n = (setup.settings.ring_size as usize).min(descs.len() / 2);
        let free: Vec<FrameDesc> = descs.split_off(fill_n);
        // SAFETY: these frames belong to this UMEM and are in no other ring.
        let given = unsafe { fq.produce(&descs) };
        if given != descs.len() {
            return Err(io::Error::other("fill ring refused the initial frames"));
        }
        let template = free.first().copied().or_else(|| descs.first().copied()).ok_or_else(|| io::Error::other("no frames"))?;
        let (tx_ch, rx_ch) = crossbeam_channel::unbounded();
        let handle = WorkerHandle {
            id: setup.id,
            kind: WorkerKind::Xdp,
            core: setup.core.map(|c| c.id),
            engine: Arc::clone(engine.stats()),
            cache: Arc::clone(engine.cache().stats()),
            backends: engine.pool().shared_stats(),
            io: Arc::clone(&io_stats),
            tx: tx_ch,
            waker,
        };
        let n = setup.engine.backends.len();
        let frame_size = setup.settings.frame_size as usize;
        let w = XdpWorker {
            id: setup.id,
            ifname: setup.ifname.clone(),
            queue: setup.queue,
            mac: setup.mac,
            busy_poll: setup.settings.busy_poll,
            frame_size,
            engine,
            poll,
            umem,
            fq,
            cq,
            rx,
            tx,
            tx_ring: setup.settings.ring_size,
            free,
            rx_buf: vec![template; BATCH],
            comp_buf: vec![template; setup.settings.ring_size as usize],
            tx_batch: Vec::with_capacity(BATCH * 2),
            refill: Vec::with_capacity(BATCH * 2),
            ports,
            events: Events::with_capacity(64),
            qbuf: vec![0; MAX_QUERY],
            out: vec![0; 65_535],
            abuf: vec![0; 65_535],
            ctl: rx_ch,
            stop: setup.stop,
            io: io_stats,
            rtt: (0..n).map(|_| new_histogram()).collect(),
            origin: Instant::now(),
        };
        let core = setup.core;
        let rt = setup.settings.realtime_priority;
        let t = std::thread::Builder::new().name(format!("kdns-xdp-{}-{}", setup.ifname, setup.queue)).spawn(move || {
            if let Some(c) = core {
                if !core_affinity::set_for_current(c) {
                    tracing::warn!(worker = w.id, core = c.id, "could not pin worker to its core");
                }
            }
            let got = set_realtime(w.id, rt);
            w.io.sched.set(1 + u64::from(got));
            w.run()
        })?;
        Ok((handle, t))
    }
}

/// Puts the calling worker thread in SCHED_FIFO at `priority` (0: leaves it
/// alone), logged either way; on failure the worker keeps normal
/// scheduling.
///
/// Why: an AF_XDP worker shares its core with the kernel's receive path
/// for its queue (NAPI: XDP program, copy into the UMEM). At normal
/// priority the scheduler splits the core between the two, and past
/// saturation the kernel spends its share copying in frames the worker
/// then has no time for (dropped at the RX ring, the copy already paid).
/// A real-time worker runs whenever it has work and sleeps when it has
/// none, so the receive path runs only then and never takes in more than
/// the worker answers; the excess waits in the device queue or is dropped
/// there, before any work is spent on it (bench/RESULTS.md: 99% of
/// capacity kept at twice the load, against 69%). The UDP socket workers
/// do not use it: measured the same way, it did not help them (their
/// receive path is the whole UDP stack, woken per datagram). The kernel's
/// real-time throttling (sched_rt_runtime_us) keeps a worker that never
/// sleeps from monopolising the core, and busy polling turns this off.
///
/// Returns the priority in effect (0: normal scheduling), which the
/// start-up line reports.
fn set_realtime(worker: usize, priority: u32) -> u32 {
    if priority == 0 {
        return 0;
    }
    let p = libc::sched_param { sched_priority: priority as libc::c_int };
    // SAFETY: a valid sched_param for the calling thread (pid 0).
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) };
    if r == 0 {
        tracing::debug!(worker, priority, "worker runs in SCHED_FIFO");
        priority
    } else {
        let e = io::Error::last_os_error();
        tracing::warn!(
            worker,
            priority,
            error = %e,
            "could not switch the worker to SCHED_FIFO; it runs at normal priority (needs CAP_SYS_NICE, and in a container a real-time CPU budget: see the README)"
        );
        0
    }
}

/// Packs the client's MAC and VLAN (VID and priority) into the engine's tag.
fn l2_tag(l2: &L2Header) -> u64 {
    let mut mac = [0u8; 8];
    mac[2..].copy_from_slice(&l2.src_mac);
    let m = u64::from_be_bytes(mac);
    match l2.vlan {
        // VID (12 bits) and priority (3 bits); the DEI bit is not kept.
        Some(tci) => m | 1 << 48 | (u64::from(tci & 0x0fff) | u64::from(tci >> 13) << 12) << 49,
        None => m,
    }
}

/// The L2 header of an answer to the client whose tag is `tag`.
fn l2_from_tag(tag: u64, our_mac: [u8; 6]) -> L2Header {
    let b = tag.to_be_bytes();
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&b[2..]);
    let t = tag >> 49;
    let vlan = (tag >> 48 & 1 == 1).then_some((t & 0x0fff) as u16 | (((t >> 12) & 7) as u16) << 13);
    L2Header { dst_mac: dst, src_mac: our_mac, vlan }
}

struct XdpWorker {
    id: usize,
    ifname: String,
    queue: u32,
    mac: [u8; 6],
    busy_poll: bool,
    frame_size: usize,
    engine: Engine,
    poll: Poll,
    umem: Umem,
    fq: FillQueue,
    cq: CompQueue,
    rx: RxQueue,
    tx: TxQueue,
    tx_ring: u32,
    free: Vec<FrameDesc>,
    rx_buf: Vec<FrameDesc>,
    comp_buf: Vec<FrameDesc>,
    tx_batch: Vec<FrameDesc>,
    refill: Vec<FrameDesc>,
    ports: SourcePorts,
    /// Readiness of the pool's sockets (and the control waker).
    events: Events,
    qbuf: Vec<u8>,
    out: Vec<u8>,
    abuf: Vec<u8>,
    ctl: Receiver<Control>,
    stop: Arc<AtomicBool>,
    io: Arc<IoStats>,
    rtt: Vec<Histogram<u64>>,
    origin: Instant,
}

impl XdpWorker {
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(self.origin.elapsed().as_nanos() as u64)
    }

    fn run(mut self) {
        tracing::debug!(worker = self.id, ifname = %self.ifname, queue = self.queue, "AF_XDP worker running");
        let mut stopping: Option<Instant> = None;
        let mut idle_turns = 0u32;
        loop {
            let mut moved = self.reap_completions();
            if stopping.is_none() {
                moved += self.receive();
            }
            let now = self.now();
            // Only look at the backend sockets while something is pending
            // (or a socket was left with data): at cache-hit load that saves
            // a syscall per turn.
            if self.engine.in_flight() > 0 || self.ports.has_ready() {
                moved += self.backend_answers(now);
            }
            self.ports.tick(Instant::now());
            if self.engine.poll_timeout().is_some_and(|t| t <= now) {
                self.engine.handle_timeout(now);
            }
            moved += self.drain_transmits(now);
            let tx_pending = self.flush_tx();
            self.refill_ring();
            self.drain_control();

            if stopping.is_none() && self.stop.load(Ordering::Relaxed) {
                stopping = Some(Instant::now());
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
            if moved > 0 || tx_pending || self.busy_poll {
                idle_turns = 0;
                continue;
            }
            // A few empty turns before sleeping keep latency low under load.
            idle_turns += 1;
            if idle_turns < 16 {
                continue;
            }
            let now = self.now();
            let timeout =
                self.engine.poll_timeout().map_or(Duration::from_millis(500), |t| t.saturating_since(now)).min(Duration::from_millis(500));
            if let Err(e) = self.sleep(timeout) {
                tracing::error!(worker = self.id, error = %e, "poll failed; worker stops");
                break;
            }
        }
    }

    /// Sleeps until the AF_XDP socket has frames, a backend socket or the
    /// control waker is ready (the epoll set, itself pollable), or `timeout`.
    fn sleep(&mut self, timeout: Duration) -> io::Result<()> {
        let mut fds = [
            libc::pollfd { fd: self.rx.fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: self.poll.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        let ts = libc::timespec { tv_sec: timeout.as_secs() as libc::time_t, tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32) };
        // SAFETY: two valid pollfds and a valid timespec; no signal mask.
        let r = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, &ts, std::ptr::null()) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if fds[1].revents != 0 {
            // Consume the epoll set's ready list, or it stays readable, and
            // keep which backend sockets it names (edge-triggered: this is
            // the only notice they get); the loop reads them and the
            // control channel.
            self.poll_ports()?;
        }
        Ok(())
    }

    /// One zero-timeout `epoll_wait`: the pool's sockets that became
    /// readable go on its ready list.
    fn poll_ports(&mut self) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(Duration::ZERO)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => return Err(e),
            _ => {}
        }
        for ev in self.events.iter() {
            if ev.token() != WAKE {
                self.ports.readable(ev.token());
            }
        }
        Ok(())
    }

    /// Frames the kernel has sent go back to the free list.
    fn reap_completions(&mut self) -> usize {
        // SAFETY: comp_buf is ours; consumed frames are no longer owned by the kernel.
        let n = unsafe { self.cq.consume(&mut self.comp_buf) };
        self.free.extend_from_slice(&self.comp_buf[..n]);
        n
    }

    /// Answers a batch of queries from the RX ring.
    fn receive(&mut self) -> usize {
        // SAFETY: rx_buf is ours; consumed frames now belong to us until
        // we hand them to the fill or TX ring.
        let n = unsafe { self.rx.consume(&mut self.rx_buf) };
        if n == 0 {
            return 0;
        }
        IoStats::add(&self.io.rx, n as u64);
        let now = self.now();
        for i in 0..n {
            let mut desc = self.rx_buf[i];
            match self.answer_frame(now, &mut desc) {
                Some(()) => self.tx_batch.push(desc),
                None => self.refill.push(desc),
            }
        }
        n
    }

    /// Runs one query frame through the engine; `Some` when the frame now
    /// holds the reply.
    fn answer_frame(&mut self, now: Timestamp, desc: &mut FrameDesc) -> Option<()> {
        let cap = self.frame_size;
        // SAFETY: `desc` came from this UMEM's RX ring and is owned by us
        // (in no ring) while we use it.
        let mut data = unsafe { self.umem.data_mut(desc) };
        let rx_len = data.contents().len();
        let info = match net::parse_udp_frame(data.contents()) {
            Ok(i) => i,
            Err(_) => {
                IoStats::add(&self.io.frame_errors, 1);
                return None;
            }
        };
        let qlen = info.payload_len;
        if qlen > MAX_QUERY {
            IoStats::add(&self.io.rx_oversized, 1);
            return None;
        }
        self.qbuf[..qlen].copy_from_slice(&data.contents()[info.payload_offset..info.payload_offset + qlen]);
        // Make the whole frame writable: the reply may be longer than the query.
        data.cursor().set_pos(cap);
        let frame = data.contents_mut();
        debug_assert!(rx_len <= frame.len());
        let client = Client { addr: info.src, local: info.dst, transport: Transport::Udp, tag: l2_tag(&info.l2) };
        let out = &mut frame[info.payload_offset..];
        let verdict = self.engine.handle_query(now, &client, &self.qbuf[..qlen], out);
        match verdict {
            Verdict::Reply(len) => match net::turn_around(frame, &info, len) {
                Ok(total) => {
                    data.cursor().set_pos(total);
                    Some(())
                }
                Err(_) => {
                    IoStats::add(&self.io.frame_errors, 1);
                    None
                }
            },
            Verdict::Forward { addr, len, port, .. } => {
                match self.ports.send(port, addr, &out[..len], Instant::now()) {
                    Ok(_) => IoStats::add(&self.io.backend_tx, 1),
                    Err(_) => IoStats::add(&self.io.tx_errors, 1),
                }
                None
            }
            // The reply comes out of poll_transmit with the answer.
            Verdict::Wait | Verdict::Drop(_) => None,
        }
    }

    /// Reads backend answers from the pool's ready sockets and sends the
    /// replies from free frames.
    fn backend_answers(&mut self, now: Timestamp) -> usize {
        if !self.ports.has_ready() {
            if let Err(e) = self.poll_ports() {
                tracing::debug!(worker = self.id, error = %e, "epoll_wait failed");
            }
        }
        let mut moved = 0;
        while let Some(r) = self.ports.next_ready() {
            let mut drained = false;
            for _ in 0..BATCH {
                let (n, from) = match self.ports.recv_from(r.id, &mut self.abuf) {
                    Ok(x) => x,
                    Err(_) => {
                        drained = true;
                        break;
                    }
                };
                moved += 1;
                IoStats::add(&self.io.backend_rx, 1);
                let v = self.engine.handle_backend_answer(now, from, r.slot, &self.abuf[..n], &mut self.out);
                crate::worker::record_rtt(&mut self.engine, &mut self.rtt);
                if let AnswerVerdict::Reply { client, len } = v {
                    self.send_from_fresh_frame(client, len);
                }
            }
            if !drained {
                self.ports.again(r.id);
                break;
            }
        }
        moved
    }

    /// Sends `self.out[..len]` to `client` in a free frame with new headers.
    fn send_from_fresh_frame(&mut self, client: Client, len: usize) {
        let Some(mut desc) = self.free.pop() else {
            IoStats::add(&self.io.tx_errors, 1);
            return;
        };
        let l2 = l2_from_tag(client.tag, self.mac);
        let hl = net::udp_headers_len(&l2, client.addr.is_ipv6());
        let cap = self.frame_size;
        // SAFETY: `desc` is a free frame of this UMEM, in no ring.
        let mut data = unsafe { self.umem.data_mut(&mut desc) };
        data.cursor().set_pos(cap);
        let buf = data.contents_mut();
        if hl + len > buf.len() {
            IoStats::add(&self.io.tx_errors, 1);
            self.free.push(desc);
            return;
        }
        buf[hl..hl + len].copy_from_slice(&self.out[..len]);
        match net::write_udp_frame(buf, &l2, client.local, client.addr, len) {
            Ok(total) => {
                data.cursor().set_pos(total);
                self.tx_batch.push(desc);
            }
            Err(_) => {
                IoStats::add(&self.io.frame_errors, 1);
                self.free.push(desc);
            }
        }
    }

    fn drain_transmits(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some(t) = self.engine.poll_transmit(now, &mut self.out) {
            n += 1;
            match t {
                Transmit::Backend { addr, len, port, .. } => match self.ports.send(port, addr, &self.out[..len], Instant::now()) {
                    Ok(_) => IoStats::add(&self.io.backend_tx, 1),
                    Err(_) => IoStats::add(&self.io.tx_errors, 1),
                },
                Transmit::Client { client, len } => self.send_from_fresh_frame(client, len),
                // Asked for TCP clients only, which AF_XDP has none of.
                Transmit::BackendTcp { exchange, .. } => self.engine.tcp_failed(now, exchange),
            }
        }
        n
    }

    /// Puts the batch on the TX ring and kicks the kernel while the ring
    /// holds frames. Returns true when frames are still waiting to be sent,
    /// so the loop must not go to sleep.
    ///
    /// In copy mode one `sendto` kick makes the kernel send at most 32
    /// frames (its TX batch), so a single kick per turn falls behind any
    /// turn that answered more than that and the ring fills up. Kicking
    /// until the ring is empty (bounded per turn) keeps up with a full RX
    /// batch. In zero-copy mode the driver clears need_wakeup while it
    /// drains the ring itself, and the loop stops at once.
    fn flush_tx(&mut self) -> bool {
        let mut put = 0;
        let mut kicks = 0;
        let queued = loop {
            if put < self.tx_batch.len() {
                let want = self.tx_batch.len() - put;
                let room = (self.tx.nb_free(want as u32) as usize).min(want);
                if room > 0 {
                    // SAFETY: every frame in tx_batch is ours and in no other ring.
                    put += unsafe { self.tx.produce(&self.tx_batch[put..put + room]) };
                }
            }
            let queued = self.tx.nb_free_exact() < self.tx_ring;
            if !queued || kicks >= MAX_KICKS || !self.tx.needs_wakeup() {
                break queued;
            }
            let _ = self.tx.wakeup();
            kicks += 1;
        };
        if !self.tx_batch.is_empty() {
            IoStats::add(&self.io.tx, put as u64);
            if put < self.tx_batch.len() {
                // No room left even after kicking: drop the rest rather than
                // block (clients retry) and recycle their frames.
                IoStats::add(&self.io.tx_errors, (self.tx_batch.len() - put) as u64);
                self.refill.extend_from_slice(&self.tx_batch[put..]);
            }
            self.tx_batch.clear();
        }
        queued
    }

    /// Returns used frames to the fill ring and tops it up from the free list
    /// (keeping some free frames for answers to misses).
    fn refill_ring(&mut self) {
        let keep = BATCH * 2;
        while self.free.len() > keep && self.refill.len() < BATCH * 2 {
            let d = self.free.pop().expect("len checked");
            self.refill.push(d);
        }
        if self.refill.is_empty() {
            return;
        }
        let want = self.refill.len();
        let room = (self.fq.nb_free(want as u32) as usize).min(want);
        // SAFETY: the frames in `refill` are ours and in no other ring.
        let n = if room > 0 { unsafe { self.fq.produce(&self.refill[..room]) } } else { 0 };
        // What does not fit stays a free frame.
        self.free.extend_from_slice(&self.refill[n..]);
        self.refill.clear();
        if self.fq.needs_wakeup() {
            // A zero-timeout poll() is the wakeup the kernel asks for.
            let fd = self.rx.fd().as_raw_fd();
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) };
        }
    }

    fn drain_control(&mut self) {
        let extra = 0;
        crate::worker::drain_control(self.id, &self.ctl, &mut self.engine, &self.io, &self.rtt, extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn l2_tags_round_trip() {
        for vlan in [None, Some(0x0123), Some(0xe00a), Some(0x0fff)] {
            let l2 = L2Header { dst_mac: [9; 6], src_mac: [0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0xee], vlan };
            let back = l2_from_tag(l2_tag(&l2), [1, 2, 3, 4, 5, 6]);
            assert_eq!(back.dst_mac, l2.src_mac);
            assert_eq!(back.src_mac, [1, 2, 3, 4, 5, 6]);
            assert_eq!(back.vlan, vlan.map(|v| v & 0xefff), "{vlan:?}");
        }
    }
}
