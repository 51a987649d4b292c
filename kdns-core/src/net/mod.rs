//! Ethernet / IPv4 / IPv6 / UDP views, checksums, and the in-place
//! turnaround of a DNS query frame into its reply frame (for AF_XDP).
//!
//! The views follow smoltcp's `wire` style: `Packet<T: AsRef<[u8]>>` with a
//! `new_checked` constructor after which no accessor can panic, and setters
//! where `T: AsMut<[u8]>`. Nothing here allocates or panics on any input.
//!
//! The AF_XDP driver calls [`parse_udp_frame`] on a received frame, lets the
//! engine write the DNS reply at [`FrameInfo::payload_offset`], then calls
//! [`turn_around`]; for an answer built from scratch it uses
//! [`write_udp_frame`].

use core::fmt;
use core::net::{IpAddr, SocketAddr};

/// A view type and the constructors every view shares, written once: the
/// struct over `buffer: T`, `new_unchecked`, `new_checked` (which runs the
/// view's own `check_len`) and `into_inner`. `$short` completes "accessors
/// panic if the buffer is shorter than ...", `$checks` completes "Wraps a
/// buffer after checking ...".
macro_rules! view {
    ($(#[$doc:meta])* pub struct $view:ident; short: $short:literal, checks: $checks:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $view<T: AsRef<[u8]>> {
            buffer: T,
        }

        impl<T: AsRef<[u8]>> $view<T> {
            #[doc = concat!(
                "Wraps a buffer without checking it. Fixed-field accessors panic if the\n",
                "buffer is shorter than ", $short, ": call [`", stringify!($view), "::check_len`] first."
            )]
            pub const fn new_unchecked(buffer: T) -> $view<T> {
                $view { buffer }
            }

            #[doc = concat!("Wraps a buffer after checking ", $checks, ".")]
            pub fn new_checked(buffer: T) -> Result<$view<T>, FrameError> {
                let view = Self::new_unchecked(buffer);
                view.check_len()?;
                Ok(view)
            }

            /// Returns the underlying buffer.
            pub fn into_inner(self) -> T {
                self.buffer
            }
        }
    };
}

pub mod checksum;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use ethernet::{EtherType, Frame as EthernetFrame, MacAddr};
pub use ipv4::Packet as Ipv4Packet;
pub use ipv6::Packet as Ipv6Packet;
pub use udp::Packet as UdpPacket;

/// IP protocol number of TCP.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// TTL / hop limit of every frame sent by this module.
pub const REPLY_TTL: u8 = 64;

/// Why a frame is not a UDP datagram the fast path can answer, or why a reply
/// cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The buffer ends before a header or before the length a header claims.
    Truncated,
    /// Not IPv4 or IPv6 (ARP, LLDP, stacked VLANs, ...).
    NotIp,
    /// IP, but not UDP (TCP, ICMP, ...).
    NotUdp,
    /// An IPv4 fragment, or an IPv6 packet with a fragment header.
    Fragment,
    /// IPv6 with an extension header before UDP (not on the fast path).
    Ipv6ExtensionHeader,
    /// Wrong IP version, IHL < 5, total length < header length, bad IPv4
    /// header checksum; also mismatched address families or a
    /// [`FrameInfo`] that does not match the frame.
    BadIpHeader,
    /// UDP length < 8 or longer than the IP payload.
    BadUdpLength,
    /// The reply would not fit the buffer or its length fields.
    TooLarge,
}

impl FrameError {
    /// Every variant, e.g. to register one counter per [`FrameError::name`].
    pub const ALL: [FrameError; 8] = [
        FrameError::Truncated,
        FrameError::NotIp,
        FrameError::NotUdp,
        FrameError::Fragment,
        FrameError::Ipv6ExtensionHeader,
        FrameError::BadIpHeader,
        FrameError::BadUdpLength,
        FrameError::TooLarge,
    ];

    /// A short snake_case label for metrics.
    pub fn name(self) -> &'static str {
        match self {
            FrameError::Truncated => "truncated",
            FrameError::NotIp => "not_ip",
            FrameError::NotUdp => "not_udp",
            FrameError::Fragment => "fragment",
            FrameError::Ipv6ExtensionHeader => "ipv6_extension_header",
            FrameError::BadIpHeader => "bad_ip_header",
            FrameError::BadUdpLength => "bad_udp_length",
            FrameError::TooLarge => "too_large",
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FrameError::Truncated => "frame truncated",
            FrameError::NotIp => "not an IP frame",
            FrameError::NotUdp => "not a UDP packet",
            FrameError::Fragment => "IP fragment",
            FrameError::Ipv6ExtensionHeader => "IPv6 extension header",
            FrameError::BadIpHeader => "malformed IP header",
            FrameError::BadUdpLength => "bad UDP length",
            FrameError::TooLarge => "reply too large",
        })
    }
}

impl std::error::Error for FrameError {}

/// The Ethernet addressing of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    /// Destination MAC address.
    pub dst_mac: MacAddr,
    /// Source MAC address.
    pub src_mac: MacAddr,
    /// The 802.1Q tag control information, if the frame is tagged.
    pub vlan: Option<u16>,
}

impl L2Header {
    /// The header of the reply to a frame with this header: MACs swapped,
    /// same VLAN tag.
    pub fn reversed(&self) -> L2Header {
        L2Header { dst_mac: self.src_mac, src_mac: self.dst_mac, vlan: self.vlan }
    }
}

/// Where things are in a received query frame, found by [`parse_udp_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Destination/source MACs and optional VLAN TCI as received.
    pub l2: L2Header,
    /// Start of the IP header.
    pub l3_offset: usize,
    /// Start of the UDP header.
    pub l4_offset: usize,
    /// Start of the UDP payload (the DNS message).
    pub payload_offset: usize,
    /// UDP payload length (from the UDP length field, bounded by the IP
    /// length).
    pub payload_len: usize,
    /// Client address and port.
    pub src: SocketAddr,
    /// The address and port the query was sent to.
    pub dst: SocketAddr,
    /// TTL / hop limit as received.
    pub ip_ttl: u8,
}

impl FrameInfo {
    /// Whether the frame is IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Parses an Ethernet (optionally 802.1Q-tagged) / IPv4-or-IPv6 / UDP frame.
///
/// Checks every length, rejects fragments, IPv6 extension headers and IPv4
/// headers with a bad checksum. The UDP checksum is not verified (veth peers
/// with offload send partial checksums). Trailing Ethernet padding is
/// ignored: lengths come from the IP and UDP length fields.
pub fn parse_udp_frame(frame: &[u8]) -> Result<FrameInfo, FrameError> {
    let eth = EthernetFrame::new_checked(frame)?;
    let l2 = L2Header { dst_mac: eth.dst_addr(), src_mac: eth.src_addr(), vlan: eth.vlan() };
    let l3_offset = eth.header_len();
    let (ip_header_len, src_ip, dst_ip, ip_ttl, udp_buf) = match eth.ethertype() {
        EtherType::IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload())?;
            if ip.protocol() != IPPROTO_UDP {
                return Err(FrameError::NotUdp);
            }
            if ip.is_fragment() {
                return Err(FrameError::Fragment);
            }
            if !ip.verify_checksum() {
                return Err(FrameError::BadIpHeader);
            }
            let (src, dst) = (IpAddr::V4(ip.src_addr()), IpAddr::V4(ip.dst_addr()));
            (ip.header_len(), src, dst, ip.ttl(), ip.into_payload())
        }
        EtherType::IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload())?;
            match ip.next_header() {
                IPPROTO_UDP => {}
                ipv6::NEXT_HEADER_FRAGMENT => return Err(FrameError::Fragment),
                nh if ipv6::is_extension_header(nh) => return Err(FrameError::Ipv6ExtensionHeader),
                _ => return Err(FrameError::NotUdp),
            }
            let (src, dst) = (IpAddr::V6(ip.src_addr()), IpAddr::V6(ip.dst_addr()));
            (ipv6::HEADER_LEN, src, dst, ip.hop_limit(), ip.into_payload())
        }
        _ => return Err(FrameError::NotIp),
    };
    let udp = UdpPacket::new_checked(udp_buf)?;
    let l4_offset = l3_offset + ip_header_len;
    Ok(FrameInfo {
        l2,
        l3_offset,
        l4_offset,
        payload_offset: l4_offset + udp::HEADER_LEN,
        payload_len: udp.payload().len(),
        src: SocketAddr::new(src_ip, udp.src_port()),
        dst: SocketAddr::new(dst_ip, udp.dst_port()),
        ip_ttl,
    })
}

/// Turns the query frame into its reply in place.
///
/// The engine has already written the DNS reply (`reply_len` bytes) at
/// `info.payload_offset`; `frame` is the whole buffer (UMEM frame capacity),
/// usually longer than the received frame. Swaps MACs (the VLAN tag is
/// kept), IP addresses and UDP ports; sets the IP total length / IPv6 payload
/// length and the UDP length; sets TTL / hop limit to 64; for IPv4 makes the
/// packet atomic (DF set, fragment offset 0, ID 0, options kept) and
/// recomputes the header checksum; computes the full UDP checksum over
/// pseudo-header + header + reply (the one pass over the payload). Returns
/// the reply frame length (not padded to the 60-byte Ethernet minimum).
///
/// Errors: [`FrameError::TooLarge`] if `payload_offset + reply_len` exceeds
/// the buffer or a length field; [`FrameError::BadIpHeader`] if `info` does
/// not describe this frame (then the frame is left unchanged).
pub fn turn_around(frame: &mut [u8], info: &FrameInfo, reply_len: usize) -> Result<usize, FrameError> {
    let (l3, l4) = (info.l3_offset, info.l4_offset);
    let ipv6 = info.src.is_ipv6();
    let ip_hl = l4.checked_sub(l3).ok_or(FrameError::BadIpHeader)?;
    let hl_ok = if ipv6 { ip_hl == ipv6::HEADER_LEN } else { (ipv4::HEADER_LEN..=ipv4::MAX_HEADER_LEN).contains(&ip_hl) };
    if !hl_ok || l3 < ethernet::HEADER_LEN || info.dst.is_ipv6() != ipv6 || l4.checked_add(udp::HEADER_LEN) != Some(info.payload_offset) {
        return Err(FrameError::BadIpHeader);
    }

    let udp_len = reply_len.checked_add(udp::HEADER_LEN).and_then(|l| u16::try_from(l).ok()).ok_or(FrameError::TooLarge)?;
    let end = info.payload_offset.checked_add(reply_len).ok_or(FrameError::TooLarge)?;
    let pkt = frame.get_mut(..end).ok_or(FrameError::TooLarge)?;

    // From here on: 14 <= l3 < l4 = l3 + ip_hl, l4 + 8 + reply_len == end == pkt.len().
    let (head, udp_buf) = pkt.split_at_mut(l4);
    let (l2_buf, ip_buf) = head.split_at_mut(l3);
    // `ip_buf` is exactly the IP header (ip_hl >= 20 bytes).
    if ipv6 {
        let mut ip = Ipv6Packet::new_unchecked(ip_buf);
        if ip.version() != 6 {
            return Err(FrameError::BadIpHeader);
        }
        EthernetFrame::new_unchecked(l2_buf).swap_addrs();
        ip.set_payload_len(udp_len);
        ip.set_hop_limit(REPLY_TTL);
        ip.swap_addrs();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut udp = UdpPacket::new_unchecked(udp_buf);
        udp.swap_ports();
        udp.set_len(udp_len);
        udp.fill_checksum_v6(&src, &dst);
    } else {
        let mut ip = Ipv4Packet::new_unchecked(ip_buf);
        if ip.version() != 4 || ip.header_len() != ip_hl {
            return Err(FrameError::BadIpHeader);
        }
        let ip_total = u16::try_from(ip_hl + usize::from(udp_len)).map_err(|_| FrameError::TooLarge)?;
        EthernetFrame::new_unchecked(l2_buf).swap_addrs();
        ip.set_total_len(ip_total);
        ip.set_ident(0);
        ip.set_dont_frag_only();
        ip.set_ttl(REPLY_TTL);
        ip.swap_addrs();
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut udp = UdpPacket::new_unchecked(udp_buf);
        udp.swap_ports();
        udp.set_len(udp_len);
        udp.fill_checksum_v4(src, dst);
    }
    Ok(end)
}

/// Headers length (Ethernet [+ VLAN] + IPv4 20 or IPv6 40 + UDP 8) of a
/// frame built by [`write_udp_frame`]: the offset of its payload.
pub fn udp_headers_len(l2: &L2Header, ipv6: bool) -> usize {
    let eth = if l2.vlan.is_some() { ethernet::VLAN_HEADER_LEN } else { ethernet::HEADER_LEN };
    let ip = if ipv6 { ipv6::HEADER_LEN } else { ipv4::HEADER_LEN };
    eth + ip + udp::HEADER_LEN
}

/// Builds Ethernet / IP / UDP headers in front of a payload the caller has
/// already written at offset [`udp_headers_len`] of `buf`.
///
/// `l2` is in the reply orientation (`dst_mac` = client); `src` / `dst` are
/// our address and the client's. IPv4: no options, DF set, ID 0, TTL 64.
/// Fills all lengths and both checksums; returns the total frame length.
/// Errors: [`FrameError::BadIpHeader`] if `src` and `dst` are not the same
/// family, [`FrameError::TooLarge`] if the frame does not fit `buf` or a
/// length field.
pub fn write_udp_frame(buf: &mut [u8], l2: &L2Header, src: SocketAddr, dst: SocketAddr, payload_len: usize) -> Result<usize, FrameError> {
    let ipv6 = match (src, dst) {
        (SocketAddr::V4(_), SocketAddr::V4(_)) => false,
        (SocketAddr::V6(_), SocketAddr::V6(_)) => true,
        _ => return Err(FrameError::BadIpHeader),
    };
    let hl = udp_headers_len(l2, ipv6);
    let total = hl.checked_add(payload_len).ok_or(FrameError::TooLarge)?;
    let udp_len = payload_len + udp::HEADER_LEN;
    let ip_len_ok = if ipv6 { udp_len <= 0xFFFF } else { udp_len + ipv4::HEADER_LEN <= 0xFFFF };
    if !ip_len_ok {
        return Err(FrameError::TooLarge);
    }
    let pkt = buf.get_mut(..total).ok_or(FrameError::TooLarge)?;
    let ethertype = if ipv6 { EtherType::IPV6 } else { EtherType::IPV4 };
    let l3 = ethernet::emit_header(pkt, l2.dst_mac, l2.src_mac, l2.vlan, ethertype)?;
    let ip_buf = pkt.get_mut(l3..).ok_or(FrameError::TooLarge)?;
    match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            let ip_hl = ipv4::emit_header(ip_buf, *s.ip(), *d.ip(), IPPROTO_UDP, REPLY_TTL, udp_len)?;
            let udp_buf = ip_buf.get_mut(ip_hl..).ok_or(FrameError::TooLarge)?;
            udp::emit_header(udp_buf, s.port(), d.port(), payload_len)?;
            UdpPacket::new_unchecked(udp_buf).fill_checksum_v4(*s.ip(), *d.ip());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            let ip_hl = ipv6::emit_header(ip_buf, s.ip(), d.ip(), IPPROTO_UDP, REPLY_TTL, udp_len)?;
            let udp_buf = ip_buf.get_mut(ip_hl..).ok_or(FrameError::TooLarge)?;
            udp::emit_header(udp_buf, s.port(), d.port(), payload_len)?;
            UdpPacket::new_unchecked(udp_buf).fill_checksum_v6(s.ip(), d.ip());
        }
        _ => return Err(FrameError::BadIpHeader),
    }
    Ok(total)
}
