//! Waiting for a few descriptors with `ppoll(2)`.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// Waits until one of `fds` is readable (or has an error or hang-up), or
/// `timeout` passes. Returns which descriptors have an event; all false on
/// a timeout or a signal (EINTR).
///
/// The descriptors are plain `RawFd`s: poll(2) only looks them up (a
/// closed one reports `POLLNVAL`), so no descriptor is ever used for I/O.
pub fn wait_readable<const N: usize>(fds: [RawFd; N], timeout: Duration) -> io::Result<[bool; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    let ts = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `pfds` holds N valid pollfds and outlives the call; `ts` is a
    // valid timespec; no signal mask.
    let r = unsafe { libc::ppoll(pfds.as_mut_ptr(), N as libc::nfds_t, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted { Ok([false; N]) } else { Err(e) };
    }
    Ok(pfds.map(|p| p.revents != 0))
}

/// Polls `fd` once without waiting: the wakeup an AF_XDP socket asks for
/// when its fill ring has new frames (need_wakeup). Errors are ignored,
/// as there is nothing to do about them.
pub fn poke(fd: RawFd) {
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, zero timeout.
    unsafe { libc::poll(&mut p, 1, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn reports_the_readable_one() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(wait_readable([a.as_raw_fd(), b.as_raw_fd()], Duration::from_millis(1)).unwrap(), [false, false]);
        a.send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert_eq!(wait_readable([a.as_raw_fd(), b.as_raw_fd()], Duration::from_secs(10)).unwrap(), [false, true]);
    }
}
