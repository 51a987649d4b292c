//! A network driver's own statistics, as `ethtool -S` shows them
//! (`SIOCETHTOOL` with `ETHTOOL_GSSET_INFO`, `ETHTOOL_GSTRINGS` and
//! `ETHTOOL_GSTATS`).
//!
//! Written here because no maintained crate reads them: the ethtool
//! netlink crates cover the standard statistics groups, not the
//! driver-specific counters (veth's `rx_queue_0_xdp_tx_errors`, for one),
//! which only this ioctl returns.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GSSET_INFO: u32 = 0x37;
const ETHTOOL_GSTRINGS: u32 = 0x1b;
const ETHTOOL_GSTATS: u32 = 0x1d;
const ETH_SS_STATS: u32 = 1;
const ETH_GSTRING_LEN: usize = 32;
/// Bound on the statistics of one interface (drivers have tens to a few
/// thousand; the bound keeps a broken answer from sizing a huge buffer).
const MAX_STATS: usize = 65_536;

/// `struct ifreq` with the `ifr_data` member.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Sends ethtool command `buf` (starting with its u32 command) for `ifname`.
fn ethtool(sock: &OwnedFd, ifname: &str, buf: &mut [u64]) -> io::Result<()> {
    let mut req = IfReq { name: [0; libc::IFNAMSIZ], data: buf.as_mut_ptr().cast(), _pad: [0; 16] };
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {ifname:?}")));
    }
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: `req` is a valid ifreq whose data pointer points at `buf`,
    // which the caller sized for the command's answer (the kernel writes
    // at most what the command's own length fields, set by the caller,
    // allow); both outlive the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut IfReq) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The driver statistics of `ifname`: (name, value) in the driver's order.
/// An interface whose driver has none gives an empty list.
pub fn driver_stats(ifname: &str) -> io::Result<Vec<(String, u64)>> {
    // Any socket carries the ioctl; this one is never bound.
    let sock = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    // ethtool_sset_info: cmd u32, reserved u32, sset_mask u64, data u32[1].
    let mut info = [0u64; 3];
    info[0] = u64::from(ETHTOOL_GSSET_INFO);
    info[1] = 1 << ETH_SS_STATS;
    match ethtool(&sock, ifname, &mut info) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    }
    if info[1] & (1 << ETH_SS_STATS) == 0 {
        return Ok(Vec::new());
    }
    let n = (info[2] & 0xffff_ffff) as usize;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > MAX_STATS {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{ifname}: the driver reports {n} statistics")));
    }
    // ethtool_gstrings: cmd, string_set, len (u32 each), then len * 32 bytes.
    let mut strings = vec![0u64; (12 + n * ETH_GSTRING_LEN).div_ceil(8)];
    strings[0] = u64::from(ETHTOOL_GSTRINGS) | u64::from(ETH_SS_STATS) << 32;
    strings[1] = n as u64;
    ethtool(&sock, ifname, &mut strings)?;
    // ethtool_stats: cmd, n_stats (u32 each), then n u64.
    let mut stats = vec![0u64; 1 + n];
    stats[0] = u64::from(ETHTOOL_GSTATS) | (n as u64) << 32;
    ethtool(&sock, ifname, &mut stats)?;
    let got = ((stats[0] >> 32) as usize).min(n);
    let bytes: Vec<u8> = strings.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok((0..got)
        .map(|i| {
            let s = &bytes[12 + i * ETH_GSTRING_LEN..12 + (i + 1) * ETH_GSTRING_LEN];
            let end = s.iter().position(|&b| b == 0).unwrap_or(ETH_GSTRING_LEN);
            (String::from_utf8_lossy(&s[..end]).into_owned(), stats[1 + i])
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_a_missing_interface() {
        // Loopback has no driver statistics; the call says so with an
        // empty list (or the kernel's "not supported").
        assert!(driver_stats("lo").map(|v| v.is_empty()).unwrap_or(true));
        let e = driver_stats("kdns-nonesuch").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
        assert_eq!(driver_stats("").unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn a_veth_counts_its_xdp_tx_errors() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (a veth pair in a namespace)");
        }
        let ns = crate::netns::Netns::new(format!("kdnseth{}", std::process::id())).unwrap();
        ns.ip(&["link", "add", "kdeth0", "type", "veth", "peer", "name", "kdeth1"]).unwrap();
        let stats = ns.within(|| driver_stats("kdeth0")).unwrap().unwrap();
        let names: Vec<&str> = stats.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"rx_queue_0_xdp_tx_errors"), "{names:?}");
        // The peer's index is one of veth's counters: a real value came back.
        assert!(stats.iter().any(|(n, v)| n == "peer_ifindex" && *v > 0), "{stats:?}");
    }
}
