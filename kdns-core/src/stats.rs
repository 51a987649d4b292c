//! Counters that one worker writes and any thread may read.
//!
//! A worker owns its counters; the control thread reads them through an
//! `Arc` without stopping the worker. Each [`Counter`] has exactly one
//! writer, so an increment is a relaxed load and a relaxed store: on x86 and
//! ARM that compiles to a plain load/add/store with no locked instruction and
//! no fence, which is as cheap as a `u64` field. Readers see every counter
//! monotonic and at most a few nanoseconds stale.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// A monotonic counter with a single writer (see the module docs).
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one. Must only be called by the owning worker.
    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`. Must only be called by the owning worker.
    #[inline(always)]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }
}

/// A gauge (a value that goes up and down) with a single writer.
#[derive(Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value. Must only be called by the owning worker.
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// What a counter and a gauge share: the constructor at zero, the read
/// from any thread, and `Debug` printing the bare value.
macro_rules! single_writer_value {
    ($ty:ident, $new_doc:literal) => {
        impl $ty {
            #[doc = $new_doc]
            pub const fn new() -> Self {
                $ty(AtomicU64::new(0))
            }

            /// The current value, from any thread.
            #[inline]
            pub fn get(&self) -> u64 {
                self.0.load(Ordering::Relaxed)
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.get())
            }
        }
    };
}

single_writer_value!(Counter, "A counter at zero.");
single_writer_value!(Gauge, "A gauge at zero.");

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn another_thread_sees_increments() {
        let c = Arc::new(Counter::new());
        for _ in 0..1000 {
            c.inc();
        }
        c.add(5);
        let r = Arc::clone(&c);
        assert_eq!(std::thread::spawn(move || r.get()).join().unwrap(), 1005);
    }
}
