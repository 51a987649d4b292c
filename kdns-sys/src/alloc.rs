//! A counting global allocator for tests and benchmarks.
//!
//! [`Counting`] forwards every call to [`System`] unchanged and keeps:
//!
//! * process-wide, with relaxed atomics: the live bytes and live
//!   allocations ([`Counting::live_bytes`], [`Counting::live_allocations`]),
//!   what a memory benchmark reads around building a structure;
//! * per thread: the allocations this thread made
//!   ([`Counting::thread_allocations`], [`count_thread_allocations`]), what
//!   a zero-allocation test reads (libtest runs tests on several threads,
//!   so process-wide counts would mix them up); optionally with a backtrace
//!   of each ([`Counting::trace_thread`]).
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: kdns_sys::alloc::Counting = kdns_sys::alloc::Counting;
//! ```
//!
//! Only a program that installs it as its `#[global_allocator]` counts
//! anything; elsewhere the counters stay at zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The counting allocator (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
static LIVE_ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations (alloc, alloc_zeroed, realloc) made by this thread.
    static THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
    /// Whether to print a backtrace of each allocation of this thread.
    static TRACE: Cell<bool> = const { Cell::new(false) };
    /// Set while a backtrace is captured (which allocates itself).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

impl Counting {
    /// Bytes allocated and not yet freed, process-wide.
    pub fn live_bytes() -> usize {
        LIVE_BYTES.load(Ordering::Relaxed)
    }

    /// Allocations not yet freed, process-wide (a `realloc` keeps one).
    pub fn live_allocations() -> usize {
        LIVE_ALLOCS.load(Ordering::Relaxed)
    }

    /// Allocations (`alloc`, `alloc_zeroed`, `realloc`) the calling thread
    /// has made so far.
    pub fn thread_allocations() -> u64 {
        THREAD_ALLOCS.try_with(Cell::get).unwrap_or(0)
    }

    /// Prints (to stderr) a backtrace of each later allocation of the
    /// calling thread while `on`.
    pub fn trace_thread(on: bool) {
        TRACE.with(|t| t.set(on));
    }
}

/// Runs `f` and returns its result with the number of allocations the
/// calling thread made meanwhile.
pub fn count_thread_allocations<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = Counting::thread_allocations();
    let r = f();
    (r, Counting::thread_allocations() - before)
}

fn note_alloc(size: usize) {
    LIVE_BYTES.fetch_add(size, Ordering::Relaxed);
    LIVE_ALLOCS.fetch_add(1, Ordering::Relaxed);
    note_thread_alloc(size);
}

fn note_thread_alloc(size: usize) {
    if IN_TRACE.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    let _ = THREAD_ALLOCS.try_with(|c| c.set(c.get() + 1));
    if TRACE.try_with(Cell::get).unwrap_or(false) {
        IN_TRACE.with(|t| t.set(true));
        eprintln!("allocation of {size} bytes at:\n{}", std::backtrace::Backtrace::force_capture());
        IN_TRACE.with(|t| t.set(false));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the bookkeeping touches only atomics and thread-local cells
// (which have no destructors, and are reached with `try_with`, so an
// allocation during thread teardown is forwarded uncounted).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `alloc_zeroed`'s contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note_alloc(layout.size());
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
            note_thread_alloc(new_size);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; the caller upholds `dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_ALLOCS.fetch_sub(1, Ordering::Relaxed);
    }
}
