//! The socket drivers' system calls, from `kdns-sys` (where every `unsafe`
//! of kdns lives), under the paths the drivers use.

pub use kdns_sys::{rlimit, udp};
