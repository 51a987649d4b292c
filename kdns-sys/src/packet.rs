//! Raw Ethernet frames sent out of an interface (`AF_PACKET`), for tests
//! that need a frame the kernel's stack would never build (a wrong
//! checksum, say).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Sends `frame` (from its Ethernet header on, destination MAC first) out
/// of interface `ifname` of the calling thread's network namespace.
///
/// # Errors
/// A name with a NUL byte or a frame shorter than an Ethernet header
/// (InvalidInput), an unknown interface, or what `socket(2)` and
/// `sendto(2)` report (EPERM without CAP_NET_RAW); a short send is
/// WriteZero.
pub fn send_frame(ifname: &str, frame: &[u8]) -> io::Result<()> {
    const ETH_HLEN: usize = 14;
    if frame.len() < ETH_HLEN {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("a frame of {} bytes has no Ethernet header", frame.len())));
    }
    let name = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("interface name {ifname:?} holds a NUL byte")))?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("interface {ifname}: {e}")));
    }
    // SAFETY: socket(2) takes plain integers; the result is checked below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns; it is closed
    // when `sock` drops.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data for which all zeroes is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = index as i32;
    sll.sll_halen = 6;
    sll.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: the frame and the address are valid for the lengths passed
    // and outlive the call; `sock` is an open socket.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const sll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    match usize::try_from(n) {
        Err(_) => Err(io::Error::last_os_error()),
        Ok(sent) if sent == frame.len() => Ok(()),
        Ok(sent) => Err(io::Error::new(io::ErrorKind::WriteZero, format!("sent {sent} of {} bytes on {ifname}", frame.len()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_arguments_are_refused_before_any_syscall() {
        assert_eq!(send_frame("lo", &[0; 13]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
        assert_eq!(send_frame("l\0o", &[0; 60]).unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn unknown_interface_is_named() {
        let e = send_frame("kdns-no-such0", &[0; 60]).unwrap_err();
        assert!(e.to_string().contains("kdns-no-such0"), "{e}");
    }
}
