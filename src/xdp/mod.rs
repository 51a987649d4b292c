//! The AF_XDP fast path: starting it (interfaces, the XDP program, one
//! socket per queue), the per-queue workers, and `--uninstall-xdp`. The XDP program's loader
//! and the AF_XDP rings are in `kdns-sys` (`kdns_sys::xdp`, `kdns_sys::xsk`).

pub mod setup;
pub mod tier;
pub mod uninstall;
pub mod worker;
