//! IPv4 packets (RFC 791). Options are kept but not interpreted.

use core::net::Ipv4Addr;

use super::checksum;
use super::FrameError;

mod field {
    use core::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Length of an IPv4 header without options.
pub const HEADER_LEN: usize = 20;
/// Longest IPv4 header (IHL 15).
pub const MAX_HEADER_LEN: usize = 60;

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1FFF;

view! {
    /// A read/write view of an IPv4 packet.
    ///
    /// [`Packet::new_checked`] guarantees: version 4, IHL >= 5, the whole header
    /// is in the buffer, and `header_len <= total_len <= buffer length`. The
    /// buffer may be longer than the packet (Ethernet padding): the payload is
    /// bounded by the total length.
    pub struct Packet;
    short: "20 bytes", checks: "version, header and total lengths"
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version, IHL, and that header and total length fit the buffer.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        if self.version() != 4 || self.header_len() < HEADER_LEN {
            return Err(FrameError::BadIpHeader);
        }
        if len < self.header_len() {
            return Err(FrameError::Truncated);
        }
        let total = usize::from(self.total_len());
        if total < self.header_len() {
            return Err(FrameError::BadIpHeader);
        }
        if total > len {
            return Err(FrameError::Truncated);
        }
        Ok(())
    }

    fn read_u16(&self, range: core::ops::Range<usize>) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[range.start], d[range.start + 1]])
    }

    fn read_addr(&self, range: core::ops::Range<usize>) -> Ipv4Addr {
        let d = self.buffer.as_ref();
        let s = range.start;
        Ipv4Addr::new(d[s], d[s + 1], d[s + 2], d[s + 3])
    }

    /// The version field (4 for a checked packet).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// The header length in bytes (IHL * 4), options included.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0F) * 4
    }

    /// The type-of-service byte (DSCP and ECN).
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// The total length field (header + payload).
    pub fn total_len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// The identification field.
    pub fn ident(&self) -> u16 {
        self.read_u16(field::IDENT)
    }

    /// The don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        self.read_u16(field::FLG_OFF) & FLAG_DF != 0
    }

    /// The more-fragments flag.
    pub fn more_frags(&self) -> bool {
        self.read_u16(field::FLG_OFF) & FLAG_MF != 0
    }

    /// The fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.read_u16(field::FLG_OFF) & FRAG_OFFSET_MASK) << 3
    }

    /// Whether this packet is a fragment (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.read_u16(field::FLG_OFF) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
    }

    /// The time-to-live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// The protocol of the payload (17 for UDP).
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// The header checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.read_addr(field::SRC)
    }

    /// The destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.read_addr(field::DST)
    }

    /// The whole header, options included (empty if inconsistent).
    pub fn header(&self) -> &[u8] {
        self.buffer.as_ref().get(..self.header_len()).unwrap_or(&[])
    }

    /// The options (between the fixed header and the payload).
    pub fn options(&self) -> &[u8] {
        self.buffer.as_ref().get(HEADER_LEN..self.header_len()).unwrap_or(&[])
    }

    /// Whether the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        let h = self.header();
        !h.is_empty() && checksum::fold(checksum::sum(h, 0)) == 0xFFFF
    }

    /// The payload, from the end of the header to the total length (so
    /// trailing Ethernet padding is excluded).
    pub fn payload(&self) -> &[u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.as_ref().get(range).unwrap_or(&[])
    }
}

impl<'a> Packet<&'a [u8]> {
    /// Like [`Packet::payload`], with the lifetime of the buffer.
    pub fn into_payload(self) -> &'a [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.get(range).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the version to 4 and the header length (in bytes, a multiple of
    /// 4 between 20 and 60).
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        let ihl = (header_len / 4).clamp(5, 15) as u8;
        self.buffer.as_mut()[field::VER_IHL] = 0x40 | ihl;
    }

    /// Sets the type-of-service byte.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, ident: u16) {
        self.write_u16(field::IDENT, ident);
    }

    /// Sets the flags and fragment offset to "don't fragment", offset 0
    /// (an atomic datagram).
    pub fn set_dont_frag_only(&mut self) {
        self.write_u16(field::FLG_OFF, FLAG_DF);
    }

    /// Sets the raw flags + fragment offset word.
    pub fn set_flags_and_frag_offset(&mut self, word: u16) {
        self.write_u16(field::FLG_OFF, word);
    }

    /// Sets the time-to-live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM, checksum);
    }

    /// Sets the source address.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&addr.octets());
    }

    /// Swaps source and destination addresses (the header checksum does
    /// not change).
    pub fn swap_addrs(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC.start..field::DST.end].split_at_mut(4);
        src.swap_with_slice(dst);
    }

    /// Recomputes the header checksum over the whole header, options included.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.header());
        self.set_checksum(c);
    }

    /// The mutable payload, bounded by the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let range = self.header_len()..usize::from(self.total_len());
        self.buffer.as_mut().get_mut(range).unwrap_or(&mut [])
    }
}

/// Writes a 20-byte IPv4 header (no options, DF set, ID 0, TOS 0) with a
/// correct checksum at the start of `buf`; returns [`HEADER_LEN`].
/// [`FrameError::TooLarge`] if the buffer is too short or the total length
/// would not fit 16 bits.
pub fn emit_header(buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, ttl: u8, payload_len: usize) -> Result<usize, FrameError> {
    let total = payload_len.checked_add(HEADER_LEN).and_then(|t| u16::try_from(t).ok()).ok_or(FrameError::TooLarge)?;
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(FrameError::TooLarge)?;
    let mut p = Packet::new_unchecked(hdr);
    p.set_version_and_header_len(HEADER_LEN);
    p.set_tos(0);
    p.set_total_len(total);
    p.set_ident(0);
    p.set_dont_frag_only();
    p.set_ttl(ttl);
    p.set_protocol(protocol);
    p.set_src_addr(src);
    p.set_dst_addr(dst);
    p.fill_checksum();
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10.0.0.2 -> 10.0.0.1, UDP, 28 bytes total, 8 bytes payload, DF.
    const PLAIN: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x14, 0x9b, 10, 0, 0, 2, 10, 0, 0, 1, // header
        1, 2, 3, 4, 5, 6, 7, 8, // payload
    ];
    /// IHL 6 with a 4-byte option (router alert), 2 payload bytes, 2 padding bytes.
    const WITH_OPTS: [u8; 30] = [
        0x46, 0x00, 0x00, 0x1a, 0x00, 0x00, 0x00, 0x00, 0x01, 0x11, 0x00, 0x00, 192, 0, 2, 1, 192, 0, 2, 2, // fixed header
        0x94, 0x04, 0x00, 0x00, // option
        0xaa, 0xbb, // payload
        0x00, 0x00, 0x00, 0x00, // Ethernet padding
    ];

    fn with_checksum<const N: usize>(mut b: [u8; N]) -> [u8; N] {
        let hl = usize::from(b[0] & 0x0f) * 4;
        b[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&b[..hl]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
        b
    }

    #[test]
    fn valid_packets() {
        let p = Packet::new_checked(&PLAIN[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.dont_frag() && !p.more_frags() && !p.is_fragment());
        assert_eq!(p.ttl(), 64);
        assert_eq!(p.protocol(), 17);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(p.options().is_empty());
        assert!(p.verify_checksum(), "checksum {:#06x}", p.checksum());

        let opts = with_checksum(WITH_OPTS);
        let p = Packet::new_checked(&opts[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options(), &[0x94, 0x04, 0, 0]);
        assert_eq!(p.payload(), &[0xaa, 0xbb], "padding excluded");
        assert!(p.verify_checksum());
    }

    #[test]
    fn truncated_everywhere() {
        for (name, bytes, packet_len) in [("plain", &PLAIN[..], 28), ("opts", &WITH_OPTS[..], 26)] {
            for n in 0..packet_len {
                let r = Packet::new_checked(&bytes[..n]);
                assert_eq!(r.err(), Some(FrameError::Truncated), "{name} len {n}");
            }
            assert!(Packet::new_checked(&bytes[..packet_len]).is_ok());
        }
    }

    #[test]
    fn bad_headers() {
        // (mutation, expected error)
        type Mutate = fn(&mut [u8; 28]);
        let cases: [(&str, Mutate, FrameError); 6] = [
            ("version 6", |b| b[0] = 0x65, FrameError::BadIpHeader),
            ("version 0", |b| b[0] = 0x05, FrameError::BadIpHeader),
            ("ihl 4", |b| b[0] = 0x44, FrameError::BadIpHeader),
            ("ihl 0", |b| b[0] = 0x40, FrameError::BadIpHeader),
            ("total < header", |b| b[2..4].copy_from_slice(&19u16.to_be_bytes()), FrameError::BadIpHeader),
            ("total > buffer", |b| b[2..4].copy_from_slice(&29u16.to_be_bytes()), FrameError::Truncated),
        ];
        for (name, mutate, want) in cases {
            let mut b = PLAIN;
            mutate(&mut b);
            assert_eq!(Packet::new_checked(&b[..]).err(), Some(want), "{name}");
        }
        // IHL 15 (60 bytes) does not fit a 28-byte buffer.
        let mut b = PLAIN;
        b[0] = 0x4f;
        assert_eq!(Packet::new_checked(&b[..]).err(), Some(FrameError::Truncated));
        // Total length == header length: valid, empty payload.
        let mut b = PLAIN;
        b[2..4].copy_from_slice(&20u16.to_be_bytes());
        assert_eq!(Packet::new_checked(&b[..]).unwrap().payload(), &[] as &[u8]);
    }

    #[test]
    fn fragments() {
        // (flags+offset word, is_fragment, frag_offset bytes)
        let cases =
            [(0x0000, false, 0), (0x4000, false, 0), (0x2000, true, 0), (0x0001, true, 8), (0x1fff, true, 0xfff8), (0x6000, true, 0)];
        for (word, frag, off) in cases {
            let mut b = PLAIN;
            b[6..8].copy_from_slice(&u16::to_be_bytes(word));
            let p = Packet::new_checked(&b[..]).unwrap();
            assert_eq!(p.is_fragment(), frag, "{word:#06x}");
            assert_eq!(p.frag_offset(), off);
        }
    }

    #[test]
    fn setters() {
        let mut b = with_checksum(WITH_OPTS);
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.swap_addrs();
        assert!(p.verify_checksum(), "swap keeps the checksum");
        p.set_ttl(64);
        p.set_total_len(28);
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.payload_mut().len(), 4);
        assert_eq!(p.options(), &[0x94, 0x04, 0, 0], "options kept");
        // Inconsistent total length after a setter: payload is empty, no panic.
        p.set_total_len(1000);
        assert!(p.payload().is_empty() && p.payload_mut().is_empty());
    }

    #[test]
    fn emit() {
        let mut b = [0u8; 28];
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(emit_header(&mut b, s, d, 17, 64, 8), Ok(20));
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.src_addr(), p.dst_addr(), p.protocol(), p.ttl()), (s, d, 17, 64));
        assert_eq!((p.total_len(), p.ident(), p.dont_frag()), (28, 0, true));
        assert!(p.verify_checksum());
        assert_eq!(emit_header(&mut b[..19], s, d, 17, 64, 8), Err(FrameError::TooLarge));
        assert_eq!(emit_header(&mut b, s, d, 17, 64, 65516), Err(FrameError::TooLarge));
        assert_eq!(emit_header(&mut b, s, d, 17, 64, 65515), Ok(20));
    }
}
