//! Batched UDP I/O: `recvmmsg` and `sendmmsg` over preallocated buffers.
//!
//! Written by hand because no maintained crate offers plain batched
//! datagram receive/send for many small packets: quinn-udp batches for QUIC
//! (GSO/GRO of one flow), and mio/socket2 stop at single `recv_from`. One
//! syscall moves up to [`BATCH`] datagrams each way, which is most of the
//! socket driver's speed.
//!
//! All pointers handed to the kernel point into `Vec`s allocated in `new`
//! and never resized, so they stay valid for the life of the batch. The
//! syscalls take a plain `RawFd`: the kernel checks it (a wrong one is an
//! error, never a memory access), so passing any integer is safe.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::sockaddr;

/// Datagrams moved per syscall.
pub const BATCH: usize = 64;

/// `n` buffers of `size` bytes, each with a source/destination address
/// and an iovec, and the `mmsghdr`s that point at them: the memory of a
/// [`RecvBatch`] or a [`SendBatch`].
struct Msgs {
    size: usize,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iov: Vec<libc::iovec>,
    hdr: Vec<libc::mmsghdr>,
    /// Datagrams received by the last `recv`, or queued to send.
    count: usize,
}

// SAFETY: the raw pointers in `iov` and `hdr` point only into heap buffers
// owned by the same struct (`bufs`, `names`, `iov`); moving the struct to
// another thread moves those buffers with it, and nothing else aliases them.
unsafe impl Send for Msgs {}

impl Msgs {
    /// `n` (1 to [`BATCH`]) buffers of `size` bytes, each iovec
    /// `iov_len` long.
    fn new(n: usize, size: usize, iov_len: usize) -> Msgs {
        let n = n.clamp(1, BATCH);
        let mut m = Msgs {
            size,
            bufs: vec![0; n * size],
            names: vec![sockaddr::empty_storage(); n],
            iov: Vec::with_capacity(n),
            hdr: Vec::with_capacity(n),
            count: 0,
        };
        for i in 0..n {
            m.iov.push(libc::iovec { iov_base: m.bufs[i * size..].as_mut_ptr().cast(), iov_len });
        }
        for i in 0..n {
            // SAFETY: mmsghdr is plain old data; all zeroes is valid.
            let mut h: libc::mmsghdr = unsafe { mem::zeroed() };
            h.msg_hdr.msg_name = (&mut m.names[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut m.iov[i];
            h.msg_hdr.msg_iovlen = 1;
            m.hdr.push(h);
        }
        m
    }
}

impl std::fmt::Debug for Msgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Msgs").field("size", &self.size).field("len", &self.hdr.len()).field("count", &self.count).finish()
    }
}

/// Received datagrams, up to [`BATCH`] at a time.
#[derive(Debug)]
pub struct RecvBatch(Msgs);

impl RecvBatch {
    /// A batch of `n` (at most [`BATCH`]) buffers of `size` bytes.
    pub fn new(n: usize, size: usize) -> RecvBatch {
        RecvBatch(Msgs::new(n, size, size))
    }

    /// Receives what is waiting on `fd` without blocking. `Ok(0)` when
    /// nothing is (EAGAIN).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for h in &mut self.0.hdr {
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `hdr` holds `hdr.len()` initialised mmsghdrs whose name and
        // iov pointers point into `names`, `iov` and `bufs`, which live as
        // long as `self` and are never reallocated.
        let n = unsafe { libc::recvmmsg(fd, self.0.hdr.as_mut_ptr(), self.0.hdr.len() as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            self.0.count = 0;
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        self.0.count = n as usize;
        Ok(self.0.count)
    }

    /// Datagram `i` of the last `recv`: its bytes, its source, and whether
    /// it was longer than the buffer (truncated by the kernel).
    pub fn get(&self, i: usize) -> Option<(&[u8], SocketAddr, bool)> {
        if i >= self.0.count {
            return None;
        }
        let h = &self.0.hdr[i];
        let len = (h.msg_len as usize).min(self.0.size);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        let from = sockaddr::from_storage(&self.0.names[i], h.msg_hdr.msg_namelen)?;
        Some((&self.0.bufs[i * self.0.size..i * self.0.size + len], from, truncated))
    }
}

/// Datagrams to send, up to [`BATCH`] at a time.
#[derive(Debug)]
pub struct SendBatch(Msgs);

/// What a flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Datagrams dropped (send buffer full or an error).
    pub failed: usize,
}

impl SendBatch {
    /// A batch of `n` (at most [`BATCH`]) buffers of `size` bytes.
    pub fn new(n: usize, size: usize) -> SendBatch {
        SendBatch(Msgs::new(n, size, 0))
    }

    /// Whether every buffer is taken.
    pub fn is_full(&self) -> bool {
        self.0.count == self.0.hdr.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.0.count == 0
    }

    /// The next free buffer, to write a datagram into (then [`SendBatch::commit`]).
    /// `None` when full: flush first.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        let at = self.0.count * self.0.size;
        Some(&mut self.0.bufs[at..at + self.0.size])
    }

    /// Queues the first `len` bytes of the current slot for `dest`.
    pub fn commit(&mut self, len: usize, dest: SocketAddr) {
        if self.is_full() {
            return;
        }
        let i = self.0.count;
        self.0.hdr[i].msg_hdr.msg_namelen = sockaddr::to_storage(dest, &mut self.0.names[i]);
        self.0.iov[i].iov_len = len.min(self.0.size);
        self.0.count += 1;
    }

    /// Sends everything queued on `fd`. Datagrams the kernel will not take
    /// now (EAGAIN) are dropped and counted: UDP clients retry, and a
    /// worker must never block.
    pub fn flush(&mut self, fd: RawFd) -> Sent {
        let mut done = Sent::default();
        let mut at = 0;
        while at < self.0.count {
            // SAFETY: entries `at..count` are initialised mmsghdrs pointing
            // into `names`, `iov` and `bufs`, owned by `self` and never moved.
            let n = unsafe { libc::sendmmsg(fd, self.0.hdr[at..].as_mut_ptr(), (self.0.count - at) as u32, libc::MSG_DONTWAIT) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // Skip the datagram the kernel refused; keep the rest going.
                done.failed += 1;
                at += 1;
                continue;
            }
            done.sent += n as usize;
            at += n as usize;
        }
        self.0.count = 0;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_goes_out_and_comes_back() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut tx = SendBatch::new(8, 512);
        for i in 0..5u8 {
            let s = tx.slot().unwrap();
            s[..3].copy_from_slice(&[i, i, i]);
            tx.commit(3, b.local_addr().unwrap());
        }
        assert_eq!(tx.flush(a.as_raw_fd()), Sent { sent: 5, failed: 0 });
        let mut rx = RecvBatch::new(8, 512);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = rx.recv(b.as_raw_fd()).unwrap();
            for i in 0..n {
                let (bytes, from, trunc) = rx.get(i).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                assert!(!trunc);
                got.push(bytes.to_vec());
            }
            if got.len() == 5 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(got, (0..5u8).map(|i| vec![i, i, i]).collect::<Vec<_>>());
        assert_eq!(rx.recv(b.as_raw_fd()).unwrap(), 0, "nothing left: EAGAIN is 0");
    }

    /// Over IPv6, so the source read back is a `sockaddr_in6`: the test
    /// needs `::1` (it fails, never skips, without it).
    #[test]
    fn oversized_datagrams_are_flagged() {
        let bind6 = || UdpSocket::bind("[::1]:0").expect("binding [::1]:0: this test needs IPv6 on loopback (::1)");
        let (a6, b) = (bind6(), bind6());
        a6.send_to(&[7u8; 100], b.local_addr().unwrap()).unwrap();
        let mut rx = RecvBatch::new(4, 64);
        let mut n = 0;
        for _ in 0..100 {
            n = rx.recv(b.as_raw_fd()).unwrap();
            if n > 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(n, 1);
        let (bytes, from, trunc) = rx.get(0).unwrap();
        assert_eq!((bytes.len(), trunc, from), (64, true, a6.local_addr().unwrap()));
    }
}
