//! `SocketAddr` to and from the kernel's `sockaddr_storage`.
//!
//! std converts these internally but does not expose it, and the batched
//! syscalls in [`crate::udp`] need the raw form.

use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// An all-zero `sockaddr_storage` (family `AF_UNSPEC`), to be filled by
/// the kernel or by [`to_storage`].
pub fn empty_storage() -> libc::sockaddr_storage {
    // SAFETY: sockaddr_storage is plain old data; all zeroes is valid.
    unsafe { mem::zeroed() }
}

/// Reads an IPv4 or IPv6 address the kernel wrote (`len` bytes).
pub fn from_storage(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says it is a sockaddr_in, which is smaller
            // than sockaddr_storage and has weaker alignment.
            let sin = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(sin.sin_port))))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: the family says it is a sockaddr_in6, which fits in
            // sockaddr_storage and has weaker alignment.
            let sin6 = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), sin6.sin6_flowinfo, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// Writes `a` into `ss`; returns the length to pass to the kernel.
pub fn to_storage(a: SocketAddr, ss: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_in fits in sockaddr_storage with weaker alignment;
            // all-zero is a valid sockaddr_in before we fill it.
            let sin = unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            *sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
                sin_zero: [0; 8],
            };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(v6) => {
            // SAFETY: sockaddr_in6 fits in sockaddr_storage with weaker alignment.
            let sin6 = unsafe { &mut *(ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            *sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr { s6_addr: v6.ip().octets() },
                sin6_scope_id: v6.scope_id(),
            };
            mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for a in ["192.0.2.1:53", "[2001:db8::1]:5353", "[fe80::1%2]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let mut ss = empty_storage();
            let len = to_storage(a, &mut ss);
            assert_eq!(from_storage(&ss, len), Some(a));
        }
        assert_eq!(from_storage(&empty_storage(), 128), None, "AF_UNSPEC");
    }
}
