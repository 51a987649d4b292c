//! Which interface holds an address, from `getifaddrs(3)`.

use std::ffi::CStr;
use std::net::IpAddr;

use crate::sockaddr;

/// The name of the interface that holds `ip` (in this network namespace),
/// or `None` when none does (or getifaddrs fails).
pub fn interface_of(ip: IpAddr) -> Option<String> {
    let list = IfAddrs::get()?;
    let mut cur = list.head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, which
        // lives until `list` is dropped at the end of this function.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points to a sockaddr, whose first
        // field is the family.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let len = match family {
            libc::AF_INET => std::mem::size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => std::mem::size_of::<libc::sockaddr_in6>(),
            _ => continue,
        };
        let mut ss = sockaddr::empty_storage();
        // SAFETY: the family says ifa_addr is a sockaddr_in or sockaddr_in6
        // of `len` bytes; sockaddr_storage is larger, and the two do not
        // overlap.
        unsafe { std::ptr::copy_nonoverlapping(ifa.ifa_addr.cast::<u8>(), (&mut ss as *mut libc::sockaddr_storage).cast::<u8>(), len) };
        if sockaddr::from_storage(&ss, len as libc::socklen_t).map(|a| a.ip()) == Some(ip) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            return Some(unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned());
        }
    }
    None
}

/// The list getifaddrs returns, freed on drop.
struct IfAddrs {
    head: *mut libc::ifaddrs,
}

impl IfAddrs {
    fn get() -> Option<IfAddrs> {
        let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
        // SAFETY: getifaddrs fills `head` with a list that `Drop` frees.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return None;
        }
        Some(IfAddrs { head })
    }
}

impl Drop for IfAddrs {
    fn drop(&mut self) {
        // SAFETY: `head` came from a successful getifaddrs and is freed once.
        unsafe { libc::freeifaddrs(self.head) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_holds_127_0_0_1() {
        assert_eq!(interface_of("127.0.0.1".parse().unwrap()).as_deref(), Some("lo"));
        assert_eq!(interface_of("192.0.2.199".parse().unwrap()), None, "TEST-NET-1 is on no interface");
    }
}
