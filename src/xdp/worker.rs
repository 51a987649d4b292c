//! The AF_XDP worker: one per (interface, queue), pinned, run to completion.
//!
//! The AF_XDP front end of the driver skeleton ([`crate::driver`]): each
//! worker owns a UMEM and one AF_XDP socket bound to its queue; its
//! [`Core`] holds the engine and the source-port pool for the backends.
//! A turn:
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
use std::os::fd::RawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use kdns_core::engine::{Client, EngineConfig, Transport, Verdict};
use kdns_core::net::{self, L2Header};
use kdns_core::Timestamp;
use kdns_sys::xsk::{Frame, XskConfig, XskRings};

use kdns_sys::xdp::AnswerMap;

use crate::driver::{spawn_pinned, AnswerBatch, Core, CoreSetup, FrontEnd, Turn};
use crate::handle::{IoStats, WorkerHandle, WorkerKind};
use crate::upstream_sockets::PortsConfig;
use crate::xdp::tier::Tier;

const BATCH: usize = 64;
/// Most `sendto` kicks per loop turn while the TX ring holds frames (copy
/// mode sends at most 32 frames per kick): enough for four full RX batches.
const MAX_KICKS: u32 = 8;
const MAX_QUERY: usize = 1500;
/// Empty turns before sleeping in poll(), at normal priority: they catch
/// frames that arrive meanwhile without a wake-up.
const IDLE_TURNS: u32 = 16;
/// The same for a real-time (SCHED_FIFO) worker: none. Its queue's receive
/// path (NAPI: the XDP program and, in copy mode, the copy into the UMEM)
/// runs on the same core at normal priority, so while the worker spins
/// nothing new can arrive: every empty turn only keeps the receive path
/// off the core while frames wait in the device ring (with bursty
/// arrivals, until that ring overflows). A real-time worker's wake-up is
/// immediate, so sleeping at once costs it no latency.
const IDLE_TURNS_REALTIME: u32 = 0;
/// How often the socket's kernel statistics are copied into the worker's
/// stats (checked every 1024 turns and before sleeping).
const XSK_STATS_EVERY: Duration = Duration::from_millis(100);

/// Ring and frame sizes, and how the worker waits: built from `[xdp]` by
/// `Settings::xdp_worker` (the defaults live in the settings table).
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
    /// Hits in the worker before a cache entry goes to the in-kernel tier.
    pub answer_promote_hits: u8,
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
    /// The in-kernel tier's answer map and this queue's share of it
    /// (`None`: the tier is off).
    pub answers: Option<(AnswerMap, usize)>,
}

/// A worker whose socket exists (so its fd can go into the XSKMAP) but
/// whose thread has not started.
pub struct PreparedXdpWorker {
    setup: XdpWorkerSetup,
    rings: XskRings,
}

impl std::fmt::Debug for PreparedXdpWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedXdpWorker").field("ifname", &self.setup.ifname).field("queue", &self.setup.queue).finish()
    }
}

/// Creates the UMEM and the socket of a worker (zero-copy first, then copy
/// mode), its fill ring stocked. Errors are for the log: they say which
/// interface and queue.
pub fn prepare(setup: XdpWorkerSetup) -> Result<PreparedXdpWorker, String> {
    let s = &setup.settings;
    let rings = XskRings::open(&XskConfig {
        ifname: &setup.ifname,
        queue: setup.queue,
        frame_size: s.frame_size,
        frames: s.frames,
        ring_size: s.ring_size,
        batch: BATCH,
        zero_copy: s.zero_copy,
    })?;
    if let Some(e) = rings.zero_copy_refused() {
        tracing::debug!("{} queue {}: zero-copy not available ({e}); using copy mode", setup.ifname, setup.queue);
    }
    Ok(PreparedXdpWorker { setup, rings })
}

impl PreparedXdpWorker {
    /// The socket's fd, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rings.fd()
    }

    /// Whether the socket is in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.rings.zero_copy()
    }

    /// Starts the worker thread.
    pub fn start(self) -> io::Result<(WorkerHandle, JoinHandle<()>)> {
        let PreparedXdpWorker { setup, rings } = self;
        // The AF_XDP socket is deliberately not registered with epoll: a
        // registered socket has a waiter on its queue for good, and then
        // every NAPI flush runs the epoll callback (locks and all) on the
        // receive core even while the worker is busy. The worker polls it
        // with ppoll() only when it goes to sleep (see `sleep`).
        let (core, handle) = Core::new(CoreSetup {
            id: setup.id,
            kind: WorkerKind::Xdp,
            core: setup.core.map(|c| c.id),
            answers: AnswerBatch { count: BATCH / 2, size: usize::from(setup.engine.udp_size).max(512) },
            engine: setup.engine,
            ports: setup.ports,
            stop: setup.stop,
        })?;
        let tier = setup.answers.map(|(map, quota)| Tier::new(map, &setup.ifname, setup.queue, quota, core.now()));
        let front = XdpFront {
            ifname: setup.ifname.clone(),
            queue: setup.queue,
            mac: setup.mac,
            busy_poll: setup.settings.busy_poll,
            rings,
            qbuf: vec![0; MAX_QUERY],
            tx_pending: false,
            tier,
            turns: 0,
            stats_at: std::time::Instant::now(),
        };
        let rt = setup.settings.realtime_priority;
        let name = format!("kdns-xdp-{}-{}", setup.ifname, setup.queue);
        let t = spawn_pinned(name, setup.id, setup.core, move || {
            let got = set_realtime(core.id, rt);
            core.io.sched.set(1 + u64::from(got));
            run(core, front)
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
    match kdns_sys::sched::set_fifo(priority) {
        Ok(()) => {
            tracing::debug!(worker, priority, "worker runs in SCHED_FIFO");
            priority
        }
        Err(e) => {
            tracing::warn!(
                worker,
                priority,
                error = %e,
                "could not switch the worker to SCHED_FIFO; it runs at normal priority (needs CAP_SYS_NICE, and in a container a real-time CPU budget: see the README)"
            );
            0
        }
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

/// The client side of an AF_XDP worker: its socket and rings.
struct XdpFront {
    ifname: String,
    queue: u32,
    mac: [u8; 6],
    busy_poll: bool,
    /// The AF_XDP socket, its UMEM and rings.
    rings: XskRings,
    qbuf: Vec<u8>,
    /// Frames still wait on the TX ring: the loop must not sleep.
    tx_pending: bool,
    /// The in-kernel tier (when on).
    tier: Option<Tier>,
    /// Turns so far (wraps), and when the socket's statistics were last read.
    turns: u32,
    stats_at: std::time::Instant,
}

/// The AF_XDP worker's loop: it spins while anything moves and sleeps in
/// `ppoll` only after a few empty turns.
fn run(mut core: Core, mut front: XdpFront) {
    tracing::debug!(worker = core.id, ifname = %front.ifname, queue = front.queue, "AF_XDP worker running");
    let mut idle_turns = 0u32;
    // `sched` is 1 + the SCHED_FIFO priority once set (1: normal).
    let idle_max = if core.io.sched.get() > 1 { IDLE_TURNS_REALTIME } else { IDLE_TURNS };
    loop {
        let mut moved = front.rings.reap_completions();
        if !core.stopping() {
            moved += front.receive(&mut core);
        }
        // Only look at the backend sockets while something is pending (or
        // a socket was left with data): at cache-hit load that saves a
        // syscall per turn.
        if core.engine.in_flight() > 0 || core.backends.has_ready() {
            if !core.backends.has_ready() {
                if let Err(e) = poll_backends(&mut core) {
                    tracing::debug!(worker = core.id, error = %e, "epoll_wait failed");
                }
            }
            moved += core.backend_answers(&mut front);
        }
        // The in-kernel tier's turn is in it (`FrontEnd::sync`).
        match core.end_turn(&mut front) {
            Turn::Stop => break,
            Turn::Continue { transmits } => moved += transmits,
        }
        if moved > 0 || front.tx_pending || front.busy_poll {
            idle_turns = 0;
            continue;
        }
        // A few empty turns before sleeping keep latency low under load
        // (none for a real-time worker: see IDLE_TURNS_REALTIME).
        idle_turns += 1;
        if idle_turns < idle_max {
            continue;
        }
        let timeout = core.timeout(Duration::from_millis(500));
        if let Err(e) = front.sleep(&mut core, timeout) {
            tracing::error!(worker = core.id, error = %e, "poll failed; worker stops");
            break;
        }
    }
}

/// One zero-timeout `epoll_wait`: the pool's sockets that became readable
/// go on its ready list (the AF_XDP worker registers nothing else).
fn poll_backends(core: &mut Core) -> io::Result<()> {
    let mut none = Vec::new();
    core.wait(Duration::ZERO, &mut none)
}

impl XdpFront {
    /// Sleeps until the AF_XDP socket has frames, a backend socket or the
    /// control waker is ready (the epoll set, itself pollable), or `timeout`.
    fn sleep(&mut self, core: &mut Core, timeout: Duration) -> io::Result<()> {
        self.copy_statistics(&core.io);
        let [_, ports_ready] = kdns_sys::poll::wait_readable([self.rings.fd(), core.poll_fd()], timeout)?;
        if ports_ready {
            // Consume the epoll set's ready list, or it stays readable, and
            // keep which backend sockets it names (edge-triggered: this is
            // the only notice they get); the loop reads them and the
            // control channel.
            poll_backends(core)?;
        }
        Ok(())
    }

    /// Copies the socket's kernel statistics (XDP_STATISTICS) into the
    /// worker's stats when the last copy is older than `XSK_STATS_EVERY`.
    fn copy_statistics(&mut self, io: &IoStats) {
        if self.stats_at.elapsed() < XSK_STATS_EVERY {
            return;
        }
        self.stats_at = std::time::Instant::now();
        if let Ok(s) = self.rings.statistics() {
            io.xsk_rx_dropped.set(s.rx_dropped);
            io.xsk_rx_ring_full.set(s.rx_ring_full);
            io.xsk_fill_ring_empty.set(s.fill_ring_empty);
            io.xsk_tx_ring_empty.set(s.tx_ring_empty);
            io.xsk_invalid.set(s.rx_invalid + s.tx_invalid);
        }
    }

    /// Answers a batch of queries from the RX ring.
    fn receive(&mut self, core: &mut Core) -> usize {
        let n = self.rings.receive();
        if n == 0 {
            return 0;
        }
        IoStats::add(&core.io.rx, n as u64);
        let now = core.now();
        while let Some(mut frame) = self.rings.next_received() {
            match self.answer_frame(core, now, &mut frame) {
                Some(()) => self.rings.transmit(frame),
                None => self.rings.recycle(frame),
            }
        }
        n
    }

    /// Runs one query frame through the engine; `Some` when the frame now
    /// holds the reply.
    fn answer_frame(&mut self, core: &mut Core, now: Timestamp, frame: &mut Frame) -> Option<()> {
        let mut data = self.rings.buf(frame);
        let rx_len = data.bytes().len();
        let info = match net::parse_udp_frame(data.bytes()) {
            Ok(i) => i,
            Err(_) => {
                IoStats::add(&core.io.frame_errors, 1);
                return None;
            }
        };
        let qlen = info.payload_len;
        if qlen > MAX_QUERY {
            IoStats::add(&core.io.rx_oversized, 1);
            return None;
        }
        self.qbuf[..qlen].copy_from_slice(&data.bytes()[info.payload_offset..info.payload_offset + qlen]);
        // Make the whole frame writable: the reply may be longer than the query.
        let frame = data.whole_mut();
        debug_assert!(rx_len <= frame.len());
        let client = Client { addr: info.src, local: info.dst, transport: Transport::Udp, tag: l2_tag(&info.l2) };
        let out = &mut frame[info.payload_offset..];
        match core.engine.handle_query(now, &client, &self.qbuf[..qlen], out) {
            Verdict::Reply(len) => match net::turn_around(frame, &info, len) {
                Ok(total) => {
                    data.set_len(total);
                    Some(())
                }
                Err(_) => {
                    IoStats::add(&core.io.frame_errors, 1);
                    None
                }
            },
            Verdict::Forward { addr, len, port, .. } => {
                core.backends.send(port, addr, &out[..len]);
                None
            }
            // The reply comes out of poll_transmit with the answer.
            Verdict::Wait | Verdict::Drop(_) => None,
        }
    }
}

impl FrontEnd for XdpFront {
    /// Sends `msg` to `client` in a free frame with new headers.
    fn reply(&mut self, io: &IoStats, client: Client, msg: &[u8]) {
        let Some(mut frame) = self.rings.alloc() else {
            IoStats::add(&io.tx_errors, 1);
            return;
        };
        let l2 = l2_from_tag(client.tag, self.mac);
        let hl = net::udp_headers_len(&l2, client.addr.is_ipv6());
        let mut data = self.rings.buf(&mut frame);
        let buf = data.whole_mut();
        if hl + msg.len() > buf.len() {
            IoStats::add(&io.tx_errors, 1);
            self.rings.release(frame);
            return;
        }
        buf[hl..hl + msg.len()].copy_from_slice(msg);
        match net::write_udp_frame(buf, &l2, client.local, client.addr, msg.len()) {
            Ok(total) => {
                data.set_len(total);
                self.rings.transmit(frame);
            }
            Err(_) => {
                IoStats::add(&io.frame_errors, 1);
                self.rings.release(frame);
            }
        }
    }

    /// Puts the replies on the TX ring and kicks the kernel while the ring
    /// holds frames (see [`XskRings::flush_tx`]); then returns used frames
    /// to the fill ring and tops it up from the free list, keeping some
    /// free frames for answers to misses.
    fn flush(&mut self, io: &IoStats) {
        let f = self.rings.flush_tx(MAX_KICKS);
        if f.sent + f.dropped > 0 {
            IoStats::add(&io.tx, f.sent as u64);
            if f.dropped > 0 {
                // No room left even after kicking: dropped rather than
                // blocked on (clients retry), their frames recycled.
                IoStats::add(&io.tx_errors, f.dropped as u64);
            }
        }
        self.tx_pending = f.pending;
        self.rings.refill(BATCH * 2);
        self.turns = self.turns.wrapping_add(1);
        if self.turns.is_multiple_of(1024) {
            self.copy_statistics(io);
        }
    }

    /// After the turn's queries and control messages (a flush, new
    /// records): the kernel's copies follow the engine before new records
    /// are acknowledged and before the next batch is read.
    fn sync(&mut self, engine: &mut kdns_core::engine::Engine, now: Timestamp, io: &IoStats) -> bool {
        self.tier.as_mut().is_some_and(|t| t.turn(engine, now, io))
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
