//! The interface facts the loader needs: index, rx queues, MAC address.

use std::ffi::CString;
use std::io;

use super::XdpError;

/// Number of rx queues of an interface (entries `rx-*` of
/// `/sys/class/net/<if>/queues`).
pub fn rx_queues(ifname: &str) -> io::Result<u32> {
    check_ifname(ifname)?;
    let mut n = 0u32;
    for entry in std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))? {
        if entry?.file_name().to_string_lossy().starts_with("rx-") {
            n += 1;
        }
    }
    Ok(n)
}

/// MAC address of an interface (`/sys/class/net/<if>/address`).
pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    check_ifname(ifname)?;
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    parse_mac(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{ifname} has no Ethernet address ({:?})", text.trim())))
}

pub(super) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn check_ifname(ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {ifname:?}")));
    }
    Ok(())
}

pub(super) fn ifindex_of(ifname: &str) -> Result<u32, XdpError> {
    let not_found = || XdpError::InterfaceNotFound { ifname: ifname.to_owned() };
    let c = CString::new(ifname).map_err(|_| not_found())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(not_found());
    }
    Ok(index)
}
