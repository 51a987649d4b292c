//! Framed messages over a unix stream socket, with file descriptors
//! attached (`SCM_RIGHTS`): how a running kdns passes its listening sockets
//! to the one that replaces it.
//!
//! A frame is a 4-byte big-endian length and that many bytes; descriptors
//! ride on the frame's first byte. The kernel never merges stream data
//! across a change of attached rights, so reading a frame from its header
//! on collects exactly the descriptors sent with it. The `sendmsg` and
//! `recvmsg` calls are nix's; what is `unsafe` here is taking ownership of
//! the received descriptors.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The most descriptors one frame carries (the kernel's limit is 253).
pub const MAX_FDS: usize = 128;

/// The longest frame accepted (a cache snapshot is the largest).
pub const MAX_FRAME: usize = 1 << 30;

/// Sends `payload` as one frame with `fds` attached.
pub fn send_frame(s: &UnixStream, payload: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} descriptors in one frame (at most {MAX_FDS})", fds.len())));
    }
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes is too long", payload.len())))?;
    let header = len.to_be_bytes();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [IoSlice::new(&header), IoSlice::new(payload)];
    let sent = loop {
        match sendmsg::<()>(s.as_raw_fd(), &iov, if raw.is_empty() { &[] } else { &cmsg }, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // The rest (the descriptors went with the first byte).
    let mut w = s;
    if sent < header.len() {
        w.write_all(&header[sent..])?;
        w.write_all(payload)
    } else {
        w.write_all(&payload[sent - header.len()..])
    }
}

/// Receives one frame and the descriptors attached to it. `Ok(None)` when
/// the peer closed the connection before a frame began.
pub fn recv_frame(s: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut header = [0u8; 4];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (got, fds, truncated) = loop {
        let mut iov = [IoSliceMut::new(&mut header)];
        match recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                let mut fds = Vec::new();
                for c in msg.cmsgs()? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: SCM_RIGHTS installed `fd` in this
                            // process just now; nothing else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                break (msg.bytes, fds, msg.flags.contains(MsgFlags::MSG_CTRUNC));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if truncated {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("more than {MAX_FDS} descriptors in one frame")));
    }
    if got == 0 {
        return Ok(None);
    }
    let mut r = s;
    r.read_exact(&mut header[got..])?;
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("frame of {len} bytes announced (at most {MAX_FRAME})")));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((payload, fds)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn frames_carry_bytes_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = udp.local_addr().unwrap();
        // A frame larger than the socket's buffer: the sender blocks until
        // the receiver reads, so it sends from another thread.
        let big = vec![7u8; 3 << 20];
        let sender = std::thread::spawn({
            let big = big.clone();
            let udp = udp.try_clone().unwrap();
            move || {
                send_frame(&a, b"hello", &[udp.as_fd()]).unwrap();
                send_frame(&a, &[], &[]).unwrap();
                send_frame(&a, &big, &[]).unwrap();
                a
            }
        });
        let (p, fds) = recv_frame(&b).unwrap().unwrap();
        assert_eq!(p, b"hello");
        assert_eq!(fds.len(), 1);
        // The same socket: same local address.
        let got = std::net::UdpSocket::from(fds.into_iter().next().unwrap());
        assert_eq!(got.local_addr().unwrap(), addr);
        let (p, fds) = recv_frame(&b).unwrap().unwrap();
        assert!(p.is_empty() && fds.is_empty());
        let (p, fds) = recv_frame(&b).unwrap().unwrap();
        assert_eq!(p.len(), big.len());
        assert!(fds.is_empty());
        drop(sender.join().unwrap());
        assert!(recv_frame(&b).unwrap().is_none());
    }

    #[test]
    fn a_lying_header_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&u32::MAX.to_be_bytes()).unwrap();
        let e = recv_frame(&b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0, 0, 0, 9, 1, 2]).unwrap();
        drop(a);
        assert_eq!(recv_frame(&b).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
