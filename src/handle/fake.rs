//! A worker handle without a worker, for the tests of what reads handles
//! (control server, metrics, records plane): the counters are real, the
//! channel's other end is the test's.

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use kdns_core::engine::EngineStats;
use kdns_core::upstream::{BackendSpec, HealthConfig, Pool};

use super::{Control, IoStats, WorkerHandle, WorkerKind};

/// A handle, the receiving end of its channel, and the poll its waker
/// belongs to (kept alive so that waking succeeds).
#[derive(Debug)]
pub(crate) struct FakeWorker {
    /// What the control thread would hold.
    pub handle: WorkerHandle,
    /// The messages sent to the worker.
    pub rx: Receiver<Control>,
    /// The waker's registry.
    pub poll: mio::Poll,
}

impl FakeWorker {
    /// Worker `id` of `kind` with fresh counters for `backends` (in that
    /// order); UDP and AF_XDP workers are pinned to core `id`.
    pub fn new(id: usize, kind: WorkerKind, backends: &[SocketAddr]) -> FakeWorker {
        let specs: Vec<BackendSpec> = backends.iter().map(|&a| BackendSpec::new(a)).collect();
        let pool = Pool::new(&specs, HealthConfig::default(), Default::default()).expect("a pool of the test's backends");
        let poll = mio::Poll::new().expect("a poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("a waker"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = WorkerHandle {
            id,
            kind,
            core: (kind != WorkerKind::Tcp).then_some(id),
            engine: Arc::default(),
            cache: Arc::default(),
            backends: pool.shared_stats(),
            io: Arc::new(IoStats::default()),
            tx,
            waker,
            at_stop: Arc::default(),
        };
        FakeWorker { handle, rx, poll }
    }

    /// Answers the worker's messages on a thread of its own with `on`,
    /// until every sender is gone; returns the handle.
    pub fn serve(self, mut on: impl FnMut(Control) + Send + 'static) -> WorkerHandle {
        let FakeWorker { handle, rx, poll } = self;
        std::thread::spawn(move || {
            let _poll = poll;
            while let Ok(c) = rx.recv() {
                on(c);
            }
        });
        handle
    }
}

/// Counts `queries` queries on `e`: `noerror` of them answered NOERROR,
/// `hits` from the cache, `forwarded` missed and sent to a backend.
pub(crate) fn count_queries(e: &EngineStats, queries: u64, noerror: u64, hits: u64, forwarded: u64) {
    e.queries.add(queries);
    e.rcodes[0].add(noerror);
    e.cache_hits.add(hits);
    e.cache_misses.add(forwarded);
    e.forwarded.add(forwarded);
}
