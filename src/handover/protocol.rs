//! The handover's messages: JSON in [`kdns_sys::fdpass`] frames.
//!
//! ```text
//! new                                   old
//!  | hello {pid, version}                 |
//!  |------------------------------------->|
//!  |   listeners {pid, generation, sockets} + the sockets (SCM_RIGHTS)
//!  |<-------------------------------------|   both now read the same sockets
//!  | release                              |
//!  |------------------------------------->|   old: snapshot its cache, stop its
//!  |   released {cache_bytes, queues}     |   AF_XDP workers, close their queues
//!  |<-------------------------------------|   (the pinned program passes
//!  |   <cache frame>                      |   queries to the shared sockets)
//!  |<-------------------------------------|
//!  | new: load the cache, take the queues |
//!  | done                                 |
//!  |------------------------------------->|   old: drain in flight, exit
//! ```
//!
//! Either side answers something it cannot do with `refused {reason}`.
//! A new kdns that hangs up before `done` leaves the old one serving: it
//! takes its queues back.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// The version of this exchange; both sides must speak the same one.
pub const PROTOCOL: u32 = 1;

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// A UDP socket.
    Udp,
    /// A listening TCP socket.
    Tcp,
}

impl From<kdns_sys::listen_fds::Transport> for Transport {
    fn from(t: kdns_sys::listen_fds::Transport) -> Transport {
        match t {
            kdns_sys::listen_fds::Transport::Udp => Transport::Udp,
            kdns_sys::listen_fds::Transport::Tcp => Transport::Tcp,
        }
    }
}

impl From<Transport> for kdns_sys::listen_fds::Transport {
    fn from(t: Transport) -> kdns_sys::listen_fds::Transport {
        match t {
            Transport::Udp => kdns_sys::listen_fds::Transport::Udp,
            Transport::Tcp => kdns_sys::listen_fds::Transport::Tcp,
        }
    }
}

/// One passed socket: what it is (the descriptor travels beside it, in order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketDesc {
    /// UDP or TCP.
    pub transport: Transport,
    /// Its local address.
    pub addr: SocketAddr,
}

/// A message of the exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Msg {
    /// New to old: who is asking.
    Hello {
        /// The exchange's version.
        protocol: u32,
        /// The new process.
        pid: u32,
        /// Its kdns version.
        version: String,
        /// Only copies of the listening sockets are wanted (`kdns
        /// --supervise --takeover` holds them for the server it starts):
        /// the exchange ends after `listeners`, and nothing changes.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sockets_only: bool,
    },
    /// Old to new: the listening sockets (attached) and the old generation.
    Listeners {
        /// The old process.
        pid: u32,
        /// The old process's generation; the new one is the next.
        generation: u64,
        /// The attached sockets, in order.
        sockets: Vec<SocketDesc>,
    },
    /// New to old: hand over the cache and the AF_XDP queues.
    Release,
    /// Old to new: done; the cache follows in the next frame.
    Released {
        /// Length of the cache snapshot frame.
        cache_bytes: u64,
        /// AF_XDP queues released.
        queues: u32,
    },
    /// New to old: serving everything; finish and exit.
    Done,
    /// Either way: cannot go on, and why.
    Refused {
        /// For the log of the other side.
        reason: String,
    },
}

/// Sends `m` with `fds` attached.
pub fn send(s: &UnixStream, m: &Msg, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let body = serde_json::to_vec(m).map_err(io::Error::other)?;
    kdns_sys::fdpass::send_frame(s, &body, fds)
}

/// Receives a message and what came attached; the peer hanging up is
/// `UnexpectedEof`, anything unreadable `InvalidData`.
pub fn recv(s: &UnixStream) -> io::Result<(Msg, Vec<OwnedFd>)> {
    let (body, fds) =
        kdns_sys::fdpass::recv_frame(s)?.ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the other kdns hung up"))?;
    let m =
        serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not a handover message: {e}")))?;
    Ok((m, fds))
}

/// Receives a raw frame (the cache snapshot).
pub fn recv_raw(s: &UnixStream) -> io::Result<Vec<u8>> {
    kdns_sys::fdpass::recv_frame(s)?.map(|(b, _)| b).ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the other kdns hung up"))
}

/// Sends a raw frame.
pub fn send_raw(s: &UnixStream, bytes: &[u8]) -> io::Result<()> {
    kdns_sys::fdpass::send_frame(s, bytes, &[])
}
