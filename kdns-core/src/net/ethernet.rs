//! Ethernet II frames with at most one 802.1Q VLAN tag.

use core::fmt;

use super::FrameError;

/// A MAC address.
pub type MacAddr = [u8; 6];

/// An EtherType (the 16-bit type field of an Ethernet II frame).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// Internet Protocol version 4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// Address Resolution Protocol.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IEEE 802.1Q VLAN tag (the tag protocol identifier).
    pub const VLAN: EtherType = EtherType(0x8100);
    /// Internet Protocol version 6.
    pub const IPV6: EtherType = EtherType(0x86DD);
}

impl fmt::Debug for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("IPv4"),
            EtherType::ARP => f.write_str("ARP"),
            EtherType::VLAN => f.write_str("VLAN"),
            EtherType::IPV6 => f.write_str("IPv6"),
            EtherType(t) => write!(f, "EtherType({t:#06x})"),
        }
    }
}

mod field {
    use core::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    /// The EtherType, or the TPID of a VLAN tag.
    pub const TYPE: Range<usize> = 12..14;
    /// The VLAN tag control information (only if tagged).
    pub const TCI: Range<usize> = 14..16;
    /// The inner EtherType (only if tagged).
    pub const INNER_TYPE: Range<usize> = 16..18;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Length of an Ethernet II header with one 802.1Q tag.
pub const VLAN_HEADER_LEN: usize = 18;

view! {
    /// A read/write view of an Ethernet II frame (optionally 802.1Q-tagged).
    ///
    /// Build it with [`Frame::new_checked`]; after that no accessor can panic.
    pub struct Frame;
    short: "the header", checks: "that the whole header (including the VLAN tag, if there is one) is present"
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the buffer holds the whole header.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let data = self.buffer.as_ref();
        let Some(t) = data.get(field::TYPE) else {
            return Err(FrameError::Truncated);
        };
        if u16::from_be_bytes([t[0], t[1]]) == EtherType::VLAN.0 && data.len() < VLAN_HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    fn read_u16(&self, at: usize) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[at], d[at + 1]])
    }

    fn read_mac(&self, at: usize) -> MacAddr {
        let d = self.buffer.as_ref();
        [d[at], d[at + 1], d[at + 2], d[at + 3], d[at + 4], d[at + 5]]
    }

    /// The destination MAC address.
    pub fn dst_addr(&self) -> MacAddr {
        self.read_mac(field::DST.start)
    }

    /// The source MAC address.
    pub fn src_addr(&self) -> MacAddr {
        self.read_mac(field::SRC.start)
    }

    /// The type field at offset 12: the EtherType, or [`EtherType::VLAN`]
    /// for a tagged frame.
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType(self.read_u16(field::TYPE.start))
    }

    /// Whether the frame carries an 802.1Q tag.
    pub fn is_tagged(&self) -> bool {
        self.outer_ethertype() == EtherType::VLAN
    }

    /// The 802.1Q tag control information (PCP, DEI and VLAN ID), if tagged.
    pub fn vlan(&self) -> Option<u16> {
        self.is_tagged().then(|| self.read_u16(field::TCI.start))
    }

    /// The EtherType of the payload (the inner one if tagged).
    pub fn ethertype(&self) -> EtherType {
        if self.is_tagged() {
            EtherType(self.read_u16(field::INNER_TYPE.start))
        } else {
            self.outer_ethertype()
        }
    }

    /// The header length: 14, or 18 if tagged.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            VLAN_HEADER_LEN
        } else {
            HEADER_LEN
        }
    }

    /// The payload (everything after the header, Ethernet padding included).
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(self.header_len()..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    fn write_u16(&mut self, at: usize, v: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the destination MAC address.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr);
    }

    /// Sets the source MAC address.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr);
    }

    /// Swaps the source and destination MAC addresses.
    pub fn swap_addrs(&mut self) {
        let (dst, rest) = self.buffer.as_mut().split_at_mut(field::SRC.start);
        dst.swap_with_slice(&mut rest[..6]);
    }

    /// Sets the EtherType of the payload (the inner one if tagged).
    pub fn set_ethertype(&mut self, ethertype: EtherType) {
        let at = self.header_len() - 2;
        self.write_u16(at, ethertype.0);
    }

    /// Sets the tag control information of a tagged frame; does nothing on
    /// an untagged one.
    pub fn set_vlan_tci(&mut self, tci: u16) {
        if self.is_tagged() {
            self.write_u16(field::TCI.start, tci);
        }
    }

    /// The mutable payload.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        self.buffer.as_mut().get_mut(hl..).unwrap_or(&mut [])
    }
}

/// Writes an Ethernet header (tagged if `vlan` is some TCI) at the start of
/// `buf` and returns its length. [`FrameError::TooLarge`] if it does not fit.
pub fn emit_header(buf: &mut [u8], dst: MacAddr, src: MacAddr, vlan: Option<u16>, ethertype: EtherType) -> Result<usize, FrameError> {
    let len = if vlan.is_some() { VLAN_HEADER_LEN } else { HEADER_LEN };
    let hdr = buf.get_mut(..len).ok_or(FrameError::TooLarge)?;
    hdr[field::DST].copy_from_slice(&dst);
    hdr[field::SRC].copy_from_slice(&src);
    match vlan {
        Some(tci) => {
            hdr[field::TYPE].copy_from_slice(&EtherType::VLAN.0.to_be_bytes());
            hdr[field::TCI].copy_from_slice(&tci.to_be_bytes());
            hdr[field::INNER_TYPE].copy_from_slice(&ethertype.0.to_be_bytes());
        }
        None => hdr[field::TYPE].copy_from_slice(&ethertype.0.to_be_bytes()),
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 18] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x08, 0x00, // IPv4
        0xaa, 0xbb, 0xcc, 0xdd, // payload
    ];
    const TAGGED: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // src
        0x81, 0x00, 0x20, 0x64, // 802.1Q, PCP 1, VID 100
        0x86, 0xdd, // IPv6
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn valid_frames() {
        // (bytes, vlan, ethertype, header_len, payload)
        type Case = (&'static [u8], Option<u16>, EtherType, usize, &'static [u8]);
        let cases: [Case; 3] = [
            (&UNTAGGED, None, EtherType::IPV4, 14, &[0xaa, 0xbb, 0xcc, 0xdd]),
            (&TAGGED, Some(0x2064), EtherType::IPV6, 18, &[0xaa, 0xbb]),
            (&TAGGED[..18], Some(0x2064), EtherType::IPV6, 18, &[]),
        ];
        for (bytes, vlan, et, hl, payload) in cases {
            let f = Frame::new_checked(bytes).unwrap();
            assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 1]);
            assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 2]);
            assert_eq!(f.vlan(), vlan);
            assert_eq!(f.ethertype(), et);
            assert_eq!(f.header_len(), hl);
            assert_eq!(f.payload(), payload);
        }
        assert_eq!(Frame::new_checked(&TAGGED[..]).unwrap().outer_ethertype(), EtherType::VLAN);
    }

    #[test]
    fn truncated_everywhere() {
        for n in 0..14 {
            assert_eq!(Frame::new_checked(&UNTAGGED[..n]), Err(FrameError::Truncated), "len {n}");
        }
        for n in 0..18 {
            assert_eq!(Frame::new_checked(&TAGGED[..n]), Err(FrameError::Truncated), "len {n}");
        }
    }

    #[test]
    fn setters_and_emit() {
        let mut buf = TAGGED;
        let mut f = Frame::new_checked(&mut buf[..]).unwrap();
        f.swap_addrs();
        f.set_ethertype(EtherType::IPV4);
        f.set_vlan_tci(0x0005);
        assert_eq!(f.dst_addr(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(f.src_addr(), [2, 0, 0, 0, 0, 1]);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.vlan(), Some(5));
        f.set_dst_addr([9; 6]);
        f.set_src_addr([8; 6]);
        f.payload_mut()[0] = 0x11;
        assert_eq!(buf[..14], [9, 9, 9, 9, 9, 9, 8, 8, 8, 8, 8, 8, 0x81, 0x00]);
        assert_eq!(buf[18], 0x11);

        let mut out = [0u8; 18];
        assert_eq!(emit_header(&mut out, [1; 6], [2; 6], Some(0x2064), EtherType::IPV6), Ok(18));
        let mut want = [0u8; 18];
        want[..6].copy_from_slice(&[1; 6]);
        want[6..12].copy_from_slice(&[2; 6]);
        want[12..].copy_from_slice(&TAGGED[12..18]);
        assert_eq!(out, want);
        assert_eq!(emit_header(&mut out, [1; 6], [2; 6], None, EtherType::ARP), Ok(14));
        assert_eq!(Frame::new_checked(&out[..]).unwrap().ethertype(), EtherType::ARP);
        assert_eq!(emit_header(&mut out[..17], [1; 6], [2; 6], Some(1), EtherType::IPV4), Err(FrameError::TooLarge));
        assert_eq!(emit_header(&mut out[..13], [1; 6], [2; 6], None, EtherType::IPV4), Err(FrameError::TooLarge));
    }

    #[test]
    fn ethertype_debug() {
        assert_eq!(format!("{:?}", EtherType::IPV6), "IPv6");
        assert_eq!(format!("{:?}", EtherType(0x88a8)), "EtherType(0x88a8)");
    }
}
