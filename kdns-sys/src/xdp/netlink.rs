//! Just enough rtnetlink to see and remove XDP programs attached by netlink
//! (`ip link set dev X xdp ...`, libxdp, Knot), which outlive their process.
//!
//! Written with `libc` instead of `netlink-packet-route` + `netlink-sys`: we
//! need two requests (RTM_GETLINK for one ifindex, RTM_SETLINK with a nested
//! IFLA_XDP) and one nested attribute to parse, about 200 lines; those crates
//! bring a dozen dependencies and change their API every few releases. aya has
//! the same code internally but does not export it.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

// include/uapi/linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLM_F_REQUEST: u16 = 0x01;
const NLM_F_ACK: u16 = 0x04;
const NLM_F_CAPPED: u16 = 0x100;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
// include/uapi/linux/rtnetlink.h
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
// include/uapi/linux/if_link.h
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_DRV_PROG_ID: u16 = 5;
const IFLA_XDP_SKB_PROG_ID: u16 = 6;
const IFLA_XDP_HW_PROG_ID: u16 = 7;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
pub(crate) const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub(crate) const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
pub(crate) const XDP_FLAGS_HW_MODE: u32 = 1 << 3;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// An XDP attachment slot of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Driver,
    Generic,
    Hardware,
}

impl Slot {
    pub(crate) fn flags(self) -> u32 {
        match self {
            Slot::Driver => XDP_FLAGS_DRV_MODE,
            Slot::Generic => XDP_FLAGS_SKB_MODE,
            Slot::Hardware => XDP_FLAGS_HW_MODE,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Slot::Driver => "driver",
            Slot::Generic => "generic",
            Slot::Hardware => "offload",
        }
    }
}

/// A netlink request failed: the errno and the kernel's extended ack message.
#[derive(Debug)]
pub(crate) struct NlError {
    pub(crate) io: io::Error,
    pub(crate) message: Option<String>,
}

impl From<io::Error> for NlError {
    fn from(io: io::Error) -> Self {
        NlError { io, message: None }
    }
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{} ({m})", self.io),
            None => write!(f, "{}", self.io),
        }
    }
}

struct Socket {
    fd: OwnedFd,
}

static SEQ: AtomicU32 = AtomicU32::new(1);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: the option value points at a live c_int of the given size.
            // Failure is fine (old kernels): we only lose the error text.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    SOL_NETLINK,
                    opt,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        // Receive timeout so a kernel that never answers can't hang us.
        let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
        // SAFETY: the option value points at a live timeval of the given size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        Ok(Socket { fd })
    }

    /// Sends `msg` (its header's seq is set here) and collects the replies up
    /// to the matching ack/error (or the first RTM_NEWLINK when no ack was
    /// requested). Returns the payloads of the RTM_NEWLINK replies.
    fn request(&self, msg: &mut [u8]) -> Result<Vec<Vec<u8>>, NlError> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        let wants_ack = u16::from_ne_bytes([msg[6], msg[7]]) & NLM_F_ACK != 0;

        let mut addr: libc::sockaddr_nl = {
            // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
            unsafe { std::mem::zeroed() }
        };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buffer and address point at live memory of the given sizes.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error().into());
        }

        let mut buf = vec![0u8; 64 * 1024];
        let mut replies = Vec::new();
        loop {
            // SAFETY: `buf` is a live, writable buffer of `buf.len()` bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= NLMSG_HDRLEN {
                let mlen = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
                if mlen < NLMSG_HDRLEN || mlen > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "truncated netlink message").into());
                }
                let mtype = u16::from_ne_bytes([rest[4], rest[5]]);
                let mflags = u16::from_ne_bytes([rest[6], rest[7]]);
                let mseq = u32::from_ne_bytes(rest[8..12].try_into().unwrap());
                let body = &rest[NLMSG_HDRLEN..mlen];
                rest = &rest[align4(mlen).min(rest.len())..];
                if mseq != seq {
                    continue;
                }
                match mtype {
                    NLMSG_ERROR => {
                        if body.len() < 4 {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink error").into());
                        }
                        let errno = -i32::from_ne_bytes(body[0..4].try_into().unwrap());
                        if errno == 0 {
                            return Ok(replies);
                        }
                        return Err(NlError { io: io::Error::from_raw_os_error(errno), message: ext_ack_message(mflags, body) });
                    }
                    NLMSG_DONE => return Ok(replies),
                    RTM_NEWLINK => {
                        replies.push(body.to_vec());
                        if !wants_ack {
                            return Ok(replies);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The extack message (NLMSGERR_ATTR_MSG) of an NLMSG_ERROR body.
fn ext_ack_message(flags: u16, body: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // struct nlmsgerr { int error; struct nlmsghdr msg; } + the echoed payload
    // unless the kernel capped it (we ask it to, NETLINK_CAP_ACK).
    let mut off = 4 + NLMSG_HDRLEN;
    if flags & NLM_F_CAPPED == 0 {
        let echoed = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?) as usize;
        off = 4 + align4(echoed);
    }
    let tlvs = body.get(off..)?;
    attrs(tlvs).find(|(t, _)| *t == NLMSGERR_ATTR_MSG).map(|(_, v)| {
        let v = v.split(|b| *b == 0).next().unwrap_or(v);
        String::from_utf8_lossy(v).into_owned()
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Iterates over (type, payload) of netlink attributes.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        buf = &buf[align4(len).min(buf.len())..];
        Some((ty, payload))
    })
}

fn header(msg_type: u16, flags: u16, ifindex: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(64);
    m.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_len, set in request()
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq, set in request()
    m.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
                                              // struct ifinfomsg
    m.push(libc::AF_UNSPEC as u8);
    m.push(0);
    m.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    m.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // ifi_flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // ifi_change
    m
}

fn push_attr(m: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    m.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(align4(m.len()), 0);
}

/// Program ids attached to the interface per slot (netlink- or link-attached alike).
pub(crate) fn attached_programs(ifindex: u32) -> Result<Vec<(Slot, u32)>, NlError> {
    let sock = Socket::open()?;
    let mut msg = header(RTM_GETLINK, NLM_F_REQUEST, ifindex);
    let replies = sock.request(&mut msg)?;
    let mut found = Vec::new();
    for body in replies {
        const IFINFOMSG_LEN: usize = 16;
        let Some(rest) = body.get(IFINFOMSG_LEN..) else { continue };
        for (ty, payload) in attrs(rest) {
            if ty != IFLA_XDP {
                continue;
            }
            for (xty, xpayload) in attrs(payload) {
                let slot = match xty {
                    IFLA_XDP_DRV_PROG_ID => Slot::Driver,
                    IFLA_XDP_SKB_PROG_ID => Slot::Generic,
                    IFLA_XDP_HW_PROG_ID => Slot::Hardware,
                    _ => continue,
                };
                if let Some(id) = xpayload.get(0..4).map(|b| u32::from_ne_bytes(b.try_into().unwrap())) {
                    if id != 0 {
                        found.push((slot, id));
                    }
                }
            }
        }
    }
    Ok(found)
}

/// Detaches the program `expected` from `slot` of the interface by netlink
/// (IFLA_XDP_FD = -1 with XDP_FLAGS_REPLACE + IFLA_XDP_EXPECTED_FD, so we
/// never remove a program other than the one we looked at). Fails with
/// EBUSY if the program is held by a bpf_link, EEXIST if it was replaced
/// meanwhile.
pub(crate) fn detach(ifindex: u32, slot: Slot, expected: BorrowedFd<'_>) -> Result<(), NlError> {
    let sock = Socket::open()?;
    let mut msg = header(RTM_SETLINK, NLM_F_REQUEST | NLM_F_ACK, ifindex);
    let mut nested = Vec::new();
    push_attr(&mut nested, IFLA_XDP_FD, &(-1i32).to_ne_bytes());
    push_attr(&mut nested, IFLA_XDP_FLAGS, &(slot.flags() | XDP_FLAGS_REPLACE).to_ne_bytes());
    let expected_fd: RawFd = expected.as_raw_fd();
    push_attr(&mut nested, IFLA_XDP_EXPECTED_FD, &expected_fd.to_ne_bytes());
    push_attr(&mut msg, IFLA_XDP | NLA_F_NESTED, &nested);
    sock.request(&mut msg).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_iteration_handles_padding_and_truncation() {
        let mut m = Vec::new();
        push_attr(&mut m, 5, &[1, 2, 3]);
        push_attr(&mut m, 6, &7u32.to_ne_bytes());
        let got: Vec<_> = attrs(&m).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(got, vec![(5, vec![1, 2, 3]), (6, 7u32.to_ne_bytes().to_vec())]);
        // A truncated attribute ends the iteration instead of panicking.
        assert_eq!(attrs(&m[..6]).count(), 0);
    }
}
