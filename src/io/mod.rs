//! The I/O drivers' building blocks. The only place with `unsafe`.

pub mod rlimit;
pub mod sockaddr;
pub mod udp;
