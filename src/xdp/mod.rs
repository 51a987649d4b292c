//! The AF_XDP fast path: the XDP program's loader and the per-queue workers.

pub mod loader;
pub mod setup;
pub mod worker;
