//! What the control thread holds of each worker: its counters (read
//! without stopping it) and a channel to send it messages.
//!
//! Workers own their engines outright. The control thread never touches an
//! engine; it reads the single-writer counters behind `Arc`s and asks for
//! anything else (flush, histograms) with a [`Control`] message, which the
//! worker drains once per loop turn after the waker has interrupted its poll.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::Sender;
use kdns_core::cache::dump::{DumpError, Export};
use kdns_core::cache::{CacheStats, ImportReport};
use kdns_core::engine::EngineStats;
use kdns_core::stats::Gauge;
use kdns_core::upstream::BackendStats;

#[cfg(test)]
pub(crate) mod fake;

/// A message to a worker.
#[derive(Debug)]
pub enum Control {
    /// Empty the cache.
    FlushCache,
    /// Send back a [`WorkerSnapshot`].
    Snapshot(Sender<WorkerSnapshot>),
    /// Answer local names from this snapshot from now on (then set
    /// [`IoStats::records_serial`] to its serial: the acknowledgement the
    /// records plane waits for).
    Records(Arc<kdns_core::records::Snapshot>),
    /// Send back the live entries of the cache ([`crate::warm`]), their
    /// lifetimes relative to `written` (wall clock, ns since the epoch,
    /// read before the message was sent).
    ExportCache {
        /// The dump's time stamp.
        written: u64,
        /// Where the worker's index and records go.
        reply: Sender<(usize, Export)>,
    },
    /// Load a dump (header included) into the cache and send back what
    /// was done with it.
    ImportCache {
        /// The whole dump, shared by every worker.
        dump: Arc<[u8]>,
        /// Where the worker's index and report go.
        reply: Sender<(usize, Result<ImportReport, DumpError>)>,
    },
}

/// A worker's last export, taken when it stops (after it took its last
/// query): asked for before the stop, collected after the worker exited.
#[derive(Debug, Default)]
pub struct StopExport(Mutex<StopExportState>);

#[derive(Debug, Default)]
struct StopExportState {
    written: Option<u64>,
    part: Option<(Export, Duration)>,
}

impl StopExport {
    /// Asks for an export at the stop, relative to `written` (wall clock,
    /// ns since the epoch).
    pub fn want(&self, written: u64) {
        self.lock().written = Some(written);
    }

    /// The stamp to export against, if an export is wanted.
    pub fn wanted(&self) -> Option<u64> {
        self.lock().written
    }

    /// Leaves the export and how long it took.
    pub fn put(&self, part: Export, took: Duration) {
        self.lock().part = Some((part, took));
    }

    /// Takes what the worker left.
    pub fn take(&self) -> Option<(Export, Duration)> {
        self.lock().part.take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StopExportState> {
        // Nothing under the lock can panic halfway: a poisoned lock still
        // holds a whole value.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a worker sends back for [`Control::Snapshot`].
#[derive(Debug, Clone)]
pub struct WorkerSnapshot {
    /// The worker's index.
    pub worker: usize,
    /// Round-trip times per backend (index = backend id), in microseconds.
    pub rtt_us: Vec<hdrhistogram::Histogram<u64>>,
    /// Queries waiting for a backend.
    pub in_flight: usize,
}

/// UDP worker or TCP worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerKind {
    /// Serves UDP on SO_REUSEPORT sockets.
    Udp,
    /// Serves TCP connections.
    Tcp,
    /// Serves one AF_XDP queue.
    Xdp,
}

impl WorkerKind {
    /// "udp" or "tcp".
    pub fn name(self) -> &'static str {
        match self {
            WorkerKind::Udp => "udp",
            WorkerKind::Tcp => "tcp",
            WorkerKind::Xdp => "xdp",
        }
    }
}

/// Counters of the socket layer of one worker (the engine counts DNS).
#[derive(Debug, Default)]
pub struct IoStats {
    /// Datagrams or TCP messages received from clients.
    pub rx: AtomicU64,
    /// Datagrams longer than any query we accept (dropped).
    pub rx_oversized: AtomicU64,
    /// Frames that did not parse as Ethernet/IP/UDP (AF_XDP), or could not be turned around.
    pub frame_errors: AtomicU64,
    /// Datagrams or TCP messages sent to clients.
    pub tx: AtomicU64,
    /// Sends that failed (counted, not retried).
    pub tx_errors: AtomicU64,
    /// Queries sent to backends.
    pub backend_tx: AtomicU64,
    /// Answers received from backends.
    pub backend_rx: AtomicU64,
    /// TCP connections accepted.
    pub tcp_accepted: AtomicU64,
    /// TCP connections closed at once because they could not be set up
    /// (registration with the poller failed).
    pub tcp_refused: AtomicU64,
    /// TCP connections closed at once: their client address already held
    /// `tcp.max_connections_per_client`.
    pub tcp_refused_per_client: AtomicU64,
    /// TCP connections closed to make room in a full table: the
    /// longest-idle one with no query in progress.
    pub tcp_evicted_idle: AtomicU64,
    /// The same, when every connection had a query in progress.
    pub tcp_evicted_busy: AtomicU64,
    /// TCP connections closed for idleness.
    pub tcp_idle_closed: AtomicU64,
    /// TCP connections open now.
    pub tcp_open: AtomicU64,
    /// TCP queries answered over a TCP exchange with a backend after a truncated UDP answer.
    pub tcp_upstream: AtomicU64,
    /// Queries still in flight when the worker stopped (never answered).
    pub lost_at_shutdown: AtomicU64,
    /// Source-port sockets to the backends open now (current and old ones
    /// still read for late answers).
    pub upstream_sockets_open: AtomicU64,
    /// Source-port sockets opened (at start and by rotation).
    pub upstream_sockets_opened: AtomicU64,
    /// Source-port slots given a fresh socket (a new random port).
    pub upstream_rotations: AtomicU64,
    /// Rotations put off because the slot already had its share of old
    /// sockets waiting for late answers.
    pub upstream_rotations_deferred: AtomicU64,
    /// New source-port sockets that could not be opened (the old one stays).
    pub upstream_socket_errors: AtomicU64,
    /// Cache entries and local answers of this worker copied into the
    /// in-kernel tier now.
    pub tier_entries: Gauge,
    /// Copies made into the in-kernel tier.
    pub tier_promoted: AtomicU64,
    /// Copies taken out because their source went (a cache entry evicted,
    /// expired, replaced or flushed; a records change).
    pub tier_demoted: AtomicU64,
    /// Copies taken out because the kernel no longer answered from them.
    pub tier_cold: AtomicU64,
    /// Serial of the local records snapshot the worker answers from (0:
    /// none yet); set at the end of the loop turn that called
    /// `Engine::set_records`, once the front end is in line with it
    /// (`FrontEnd::sync`).
    pub records_serial: Gauge,
    /// Scheduling the worker got: 0 not known yet, 1 normal (not asked, or
    /// refused), 1 + p SCHED_FIFO at priority p.
    pub sched: Gauge,
    /// AF_XDP only: the kernel's statistics of the worker's socket
    /// (getsockopt XDP_STATISTICS), copied by the worker about once a
    /// second and when it goes to sleep. Frames the kernel dropped for
    /// reasons other than a full RX ring or an empty fill ring.
    pub xsk_rx_dropped: Gauge,
    /// Frames dropped because the socket's RX ring was full.
    pub xsk_rx_ring_full: Gauge,
    /// Times a frame arrived and the fill ring had no frame for it.
    pub xsk_fill_ring_empty: Gauge,
    /// Times the kernel found the TX ring empty when asked to send.
    pub xsk_tx_ring_empty: Gauge,
    /// Invalid descriptors (RX and TX).
    pub xsk_invalid: Gauge,
}

impl IoStats {
    /// Adds `n` to a counter owned by this worker (single writer).
    #[inline]
    pub fn add(c: &AtomicU64, n: u64) {
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The control thread's view of one worker.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    /// Index among all workers.
    pub id: usize,
    /// UDP or TCP.
    pub kind: WorkerKind,
    /// The core it is pinned to, if pinned.
    pub core: Option<usize>,
    /// DNS counters.
    pub engine: Arc<EngineStats>,
    /// Cache counters.
    pub cache: Arc<CacheStats>,
    /// Per-backend counters and state, as this worker sees them.
    pub backends: Arc<[BackendStats]>,
    /// Socket counters.
    pub io: Arc<IoStats>,
    /// Messages to the worker.
    pub tx: Sender<Control>,
    /// Interrupts the worker's poll so it reads `tx` at once.
    pub waker: Arc<mio::Waker>,
    /// The cache export the worker leaves when it stops.
    pub at_stop: Arc<StopExport>,
}

impl WorkerHandle {
    /// Sends `c` and wakes the worker. False if the worker is gone.
    pub fn send(&self, c: Control) -> bool {
        self.tx.send(c).is_ok() && self.waker.wake().is_ok()
    }
}

/// The XDP program's counters for one queue (defined with the stats it
/// is reported in).
pub use kdns_api::stats::XdpQueue as XdpQueueCounters;

/// Where the control thread reads one interface's XDP counters.
pub trait XdpCounterSource: Send + Sync + std::fmt::Debug {
    /// The interface.
    fn ifname(&self) -> &str;
    /// Per-queue counters, summed over CPUs.
    fn read(&self) -> Result<Vec<XdpQueueCounters>, String>;
    /// The program on the interface: ids, mode, pin, adoption.
    fn program(&self) -> Option<kdns_api::stats::XdpProgram> {
        None
    }
}
