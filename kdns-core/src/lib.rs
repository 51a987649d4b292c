//! kdns-core: the sans-IO heart of kdns.
//!
//! Everything here is deterministic: no syscalls, no clock reads, no threads
//! and no `unsafe`. The caller (an I/O driver in the `kdns` daemon, a test, a
//! benchmark) passes the time in as a [`Timestamp`] and owns every buffer.
//!
//! * [`wire`]: checked, non-allocating views over DNS messages and a response
//!   builder that writes into a caller's buffer.
//! * [`net`]: Ethernet / IPv4 / IPv6 / UDP views, checksums, and the in-place
//!   turnaround of a query frame into its reply frame (used by AF_XDP).
//! * [`cache`]: the per-core answer cache (owned by one worker, no locks).
//! * [`upstream`]: the backend pool with in-band health tracking.
//! * [`engine`]: ties it together behind `handle_query` /
//!   `handle_backend_answer` / `poll_timeout` / `handle_timeout`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cache;
pub mod engine;
pub mod net;
pub mod records;
pub mod stats;
pub mod time;
pub mod upstream;
pub mod wire;

pub use time::Timestamp;

#[cfg(test)]
pub(crate) mod testutil;
