//! IPv6 packets (RFC 8200): the fixed 40-byte header only. Extension headers
//! are not walked; the fast path only takes `next_header == UDP`.

use core::net::Ipv6Addr;

use super::FrameError;

mod field {
    use core::ops::Range;
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const NXT_HDR: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
}

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;

/// Next-header values that are IPv6 extension headers (RFC 7045 / the IANA
/// "IPv6 Extension Header Types" registry), as opposed to upper layers.
pub fn is_extension_header(next_header: u8) -> bool {
    matches!(next_header, 0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254)
}

/// Next-header value of the fragment extension header.
pub const NEXT_HEADER_FRAGMENT: u8 = 44;

view! {
    /// A read/write view of an IPv6 packet.
    ///
    /// [`Packet::new_checked`] guarantees: version 6 and `40 + payload_len <=
    /// buffer length`. The buffer may be longer (Ethernet padding): the payload is
    /// bounded by the payload length field.
    pub struct Packet;
    short: "40 bytes", checks: "the version and the payload length"
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version, and that header and payload fit the buffer.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        if self.version() != 6 {
            return Err(FrameError::BadIpHeader);
        }
        if HEADER_LEN + usize::from(self.payload_len()) > len {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    fn first_word(&self) -> u32 {
        let d = self.buffer.as_ref();
        u32::from_be_bytes([d[0], d[1], d[2], d[3]])
    }

    fn read_addr(&self, range: core::ops::Range<usize>) -> Ipv6Addr {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&self.buffer.as_ref()[range]);
        Ipv6Addr::from(octets)
    }

    /// The version field (6 for a checked packet).
    pub fn version(&self) -> u8 {
        (self.first_word() >> 28) as u8
    }

    /// The traffic class.
    pub fn traffic_class(&self) -> u8 {
        (self.first_word() >> 20) as u8
    }

    /// The 20-bit flow label.
    pub fn flow_label(&self) -> u32 {
        self.first_word() & 0x000F_FFFF
    }

    /// The payload length field (everything after the fixed header).
    pub fn payload_len(&self) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[field::LENGTH.start], d[field::LENGTH.start + 1]])
    }

    /// The next-header field (17 for UDP).
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NXT_HDR]
    }

    /// The hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        self.read_addr(field::SRC)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        self.read_addr(field::DST)
    }

    /// The payload, bounded by the payload length field (Ethernet padding
    /// excluded).
    pub fn payload(&self) -> &[u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<'a> Packet<&'a [u8]> {
    /// Like [`Packet::payload`], with the lifetime of the buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.buffer.get(HEADER_LEN..end).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets version 6, the traffic class and the flow label.
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let w = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0x000F_FFFF);
        self.buffer.as_mut()[field::VER_TC_FLOW].copy_from_slice(&w.to_be_bytes());
    }

    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&len.to_be_bytes());
    }

    /// Sets the next-header field.
    pub fn set_next_header(&mut self, next_header: u8) {
        self.buffer.as_mut()[field::NXT_HDR] = next_header;
    }

    /// Sets the hop limit.
    pub fn set_hop_limit(&mut self, hop_limit: u8) {
        self.buffer.as_mut()[field::HOP_LIMIT] = hop_limit;
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: &Ipv6Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: &Ipv6Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Swaps the source and destination addresses.
    pub fn swap_addrs(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC.start..field::DST.end].split_at_mut(16);
        src.swap_with_slice(dst);
    }

    /// The mutable payload, bounded by the payload length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + usize::from(self.payload_len());
        self.buffer.as_mut().get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// Writes a 40-byte IPv6 header (traffic class 0, flow label 0) at the start
/// of `buf`; returns [`HEADER_LEN`]. [`FrameError::TooLarge`] if the buffer is
/// too short or the payload length would not fit 16 bits (no jumbograms).
pub fn emit_header(
    buf: &mut [u8],
    src: &Ipv6Addr,
    dst: &Ipv6Addr,
    next_header: u8,
    hop_limit: u8,
    payload_len: usize,
) -> Result<usize, FrameError> {
    let len = u16::try_from(payload_len).map_err(|_| FrameError::TooLarge)?;
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(FrameError::TooLarge)?;
    let mut p = Packet::new_unchecked(hdr);
    p.set_version_tc_flow(0, 0);
    p.set_payload_len(len);
    p.set_next_header(next_header);
    p.set_hop_limit(hop_limit);
    p.set_src_addr(src);
    p.set_dst_addr(dst);
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2001:db8::2 -> 2001:db8::1, UDP, 4-byte payload, 2 padding bytes.
    const PACKET: [u8; 46] = [
        0x60, 0x12, 0x34, 0x56, 0x00, 0x04, 0x11, 0x40, // ver/tc/flow, len, nh, hop
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // src
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // dst
        0xde, 0xad, 0xbe, 0xef, // payload
        0, 0, // padding
    ];

    #[test]
    fn valid_packet() {
        let p = Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.version(), 6);
        assert_eq!(p.traffic_class(), 0x01);
        assert_eq!(p.flow_label(), 0x23456);
        assert_eq!(p.payload_len(), 4);
        assert_eq!(p.next_header(), 17);
        assert_eq!(p.hop_limit(), 64);
        assert_eq!(p.src_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload(), &[0xde, 0xad, 0xbe, 0xef]);
    }

    #[test]
    fn truncated_everywhere() {
        for n in 0..44 {
            assert_eq!(Packet::new_checked(&PACKET[..n]).err(), Some(FrameError::Truncated), "len {n}");
        }
        assert!(Packet::new_checked(&PACKET[..44]).is_ok());
    }

    #[test]
    fn bad_headers() {
        // (first byte, payload length, expected)
        let cases = [
            (0x40, 4, Some(FrameError::BadIpHeader)),
            (0x00, 4, Some(FrameError::BadIpHeader)),
            (0x70, 4, Some(FrameError::BadIpHeader)),
            (0x60, 7, Some(FrameError::Truncated)),
            (0x60, 0xffff, Some(FrameError::Truncated)),
            (0x60, 6, None),
            (0x60, 0, None),
        ];
        for (b0, len, want) in cases {
            let mut b = PACKET;
            b[0] = b0;
            b[4..6].copy_from_slice(&u16::to_be_bytes(len));
            assert_eq!(Packet::new_checked(&b[..]).err(), want, "{b0:#x} {len}");
        }
    }

    #[test]
    fn extension_headers() {
        for nh in [0u8, 43, 44, 60] {
            assert!(is_extension_header(nh));
        }
        for nh in [6u8, 17, 58, 59] {
            assert!(!is_extension_header(nh));
        }
    }

    #[test]
    fn setters_and_emit() {
        let mut b = PACKET;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.swap_addrs();
        p.set_hop_limit(1);
        p.set_payload_len(6);
        assert_eq!(p.src_addr(), "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "2001:db8::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.payload_mut().len(), 6);
        p.set_payload_len(100);
        assert!(p.payload().is_empty(), "inconsistent length: empty, no panic");

        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let mut out = [0xffu8; 48];
        assert_eq!(emit_header(&mut out, &s, &d, 17, 64, 8), Ok(40));
        let p = Packet::new_checked(&out[..]).unwrap();
        assert_eq!((p.version(), p.traffic_class(), p.flow_label()), (6, 0, 0));
        assert_eq!((p.src_addr(), p.dst_addr(), p.next_header(), p.hop_limit()), (s, d, 17, 64));
        assert_eq!(p.payload_len(), 8);
        assert_eq!(emit_header(&mut out[..39], &s, &d, 17, 64, 8), Err(FrameError::TooLarge));
        assert_eq!(emit_header(&mut out, &s, &d, 17, 64, 65536), Err(FrameError::TooLarge));
    }
}
