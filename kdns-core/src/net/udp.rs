//! UDP datagrams (RFC 768) and their checksums over IPv4 and IPv6.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::{FrameError, IPPROTO_UDP};

mod field {
    use core::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const LENGTH: Range<usize> = 4..6;
    pub const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the UDP header.
pub const HEADER_LEN: usize = 8;

view! {
    /// A read/write view of a UDP datagram.
    ///
    /// [`Packet::new_checked`] guarantees `8 <= length field <= buffer length`;
    /// the payload is bounded by the length field.
    pub struct Packet;
    short: "8 bytes", checks: "the length field (the buffer is the IP payload)"
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header is present and `8 <= length <= buffer length`.
    pub fn check_len(&self) -> Result<(), FrameError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        let udp_len = usize::from(self.len());
        if udp_len < HEADER_LEN || udp_len > len {
            return Err(FrameError::BadUdpLength);
        }
        Ok(())
    }

    fn read_u16(&self, range: core::ops::Range<usize>) -> u16 {
        let d = self.buffer.as_ref();
        u16::from_be_bytes([d[range.start], d[range.start + 1]])
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        self.read_u16(field::SRC_PORT)
    }

    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        self.read_u16(field::DST_PORT)
    }

    /// The length field (header + payload).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        self.read_u16(field::LENGTH)
    }

    /// The checksum field.
    pub fn checksum(&self) -> u16 {
        self.read_u16(field::CHECKSUM)
    }

    /// The datagram (header + payload) as bounded by the length field.
    pub fn datagram(&self) -> &[u8] {
        let d = self.buffer.as_ref();
        d.get(..usize::from(self.len())).unwrap_or(d)
    }

    /// The payload, bounded by the length field.
    pub fn payload(&self) -> &[u8] {
        let end = usize::from(self.len());
        self.buffer.as_ref().get(HEADER_LEN..end).unwrap_or(&[])
    }

    fn verify(&self, pseudo: u32) -> bool {
        checksum::fold(checksum::sum(self.datagram(), pseudo)) == 0xFFFF
    }

    /// Whether the checksum is correct for an IPv4 datagram from `src` to
    /// `dst`. A zero checksum means "none" over IPv4 and is accepted.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || self.verify(checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, self.len()))
    }

    /// Whether the checksum is correct for an IPv6 datagram from `src` to
    /// `dst`. A zero checksum is invalid over IPv6.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let pseudo = checksum::pseudo_header_v6(src, dst, IPPROTO_UDP, u32::from(self.len()));
        self.checksum() != 0 && self.verify(pseudo)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn write_u16(&mut self, range: core::ops::Range<usize>, v: u16) {
        self.buffer.as_mut()[range].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        self.write_u16(field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        self.write_u16(field::DST_PORT, port);
    }

    /// Swaps the source and destination ports.
    pub fn swap_ports(&mut self) {
        let (src, dst) = self.buffer.as_mut()[field::SRC_PORT.start..field::DST_PORT.end].split_at_mut(2);
        src.swap_with_slice(dst);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        self.write_u16(field::LENGTH, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, checksum: u16) {
        self.write_u16(field::CHECKSUM, checksum);
    }

    /// Computes and stores the checksum over `pseudo` + the datagram: one
    /// pass over the datagram. A computed 0 is sent as 0xFFFF.
    fn fill(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::sum(self.datagram(), pseudo));
        self.set_checksum(if c == 0 { 0xFFFF } else { c });
    }

    /// Computes the checksum for an IPv4 datagram from `src` to `dst`.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.fill(checksum::pseudo_header_v4(src, dst, IPPROTO_UDP, self.len()));
    }

    /// Computes the checksum for an IPv6 datagram from `src` to `dst`.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.fill(checksum::pseudo_header_v6(src, dst, IPPROTO_UDP, u32::from(self.len())));
    }

    /// The mutable payload, bounded by the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        self.buffer.as_mut().get_mut(HEADER_LEN..end).unwrap_or(&mut [])
    }
}

/// Writes a UDP header (checksum zeroed, to be filled) at the start of
/// `buf`; returns [`HEADER_LEN`]. [`FrameError::TooLarge`] if the buffer is
/// too short or the length does not fit 16 bits.
pub fn emit_header(buf: &mut [u8], src_port: u16, dst_port: u16, payload_len: usize) -> Result<usize, FrameError> {
    let len = payload_len.checked_add(HEADER_LEN).and_then(|l| u16::try_from(l).ok()).ok_or(FrameError::TooLarge)?;
    let hdr = buf.get_mut(..HEADER_LEN).ok_or(FrameError::TooLarge)?;
    let mut p = Packet::new_unchecked(hdr);
    p.set_src_port(src_port);
    p.set_dst_port(dst_port);
    p.set_len(len);
    p.set_checksum(0);
    Ok(HEADER_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 53000 -> 53, length 12, 4-byte payload, 3 trailing bytes beyond length.
    const DGRAM: [u8; 15] = [0xcf, 0x08, 0x00, 0x35, 0x00, 0x0c, 0x00, 0x00, 1, 2, 3, 4, 9, 9, 9];

    /// Reference checksum: byte-by-byte over a built pseudo-header + datagram.
    fn ref_checksum(pseudo: &[u8], dgram: &[u8]) -> u16 {
        let mut all = pseudo.to_vec();
        all.extend_from_slice(dgram);
        let mut s = 0u64;
        for (i, b) in all.iter().enumerate() {
            s += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
        }
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        match !(s as u16) {
            0 => 0xFFFF,
            c => c,
        }
    }

    #[test]
    fn valid_datagram() {
        let p = Packet::new_checked(&DGRAM[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len(), p.checksum()), (53000, 53, 12, 0));
        assert_eq!(p.payload(), &[1, 2, 3, 4]);
        assert_eq!(p.datagram().len(), 12);
    }

    #[test]
    fn truncated_everywhere() {
        for n in 0..12 {
            let want = if n < 8 { FrameError::Truncated } else { FrameError::BadUdpLength };
            assert_eq!(Packet::new_checked(&DGRAM[..n]).err(), Some(want), "len {n}");
        }
        assert!(Packet::new_checked(&DGRAM[..12]).is_ok());
    }

    #[test]
    fn bad_lengths() {
        // (length field, expected)
        let cases = [
            (0u16, Some(FrameError::BadUdpLength)),
            (7, Some(FrameError::BadUdpLength)),
            (8, None),
            (15, None),
            (16, Some(FrameError::BadUdpLength)),
            (0xffff, Some(FrameError::BadUdpLength)),
        ];
        for (len, want) in cases {
            let mut b = DGRAM;
            b[4..6].copy_from_slice(&len.to_be_bytes());
            assert_eq!(Packet::new_checked(&b[..]).err(), want, "len {len}");
        }
    }

    #[test]
    fn checksum_v4() {
        let (s, d) = (Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1));
        let mut b = DGRAM;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(p.verify_checksum_v4(s, d), "zero = none over IPv4");
        p.set_checksum(0x1234);
        assert!(!p.verify_checksum_v4(s, d));
        p.fill_checksum_v4(s, d);
        assert!(p.verify_checksum_v4(s, d));
        assert!(!p.verify_checksum_v4(s, Ipv4Addr::new(10, 0, 0, 3)));
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&s.octets());
        pseudo.extend_from_slice(&d.octets());
        pseudo.extend_from_slice(&[0, 17, 0, 12]);
        let mut zeroed = DGRAM[..12].to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(p.checksum(), ref_checksum(&pseudo, &zeroed));
    }

    #[test]
    fn checksum_v6_and_zero_rule() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("2001:db8::2".parse().unwrap(), "2001:db8::1".parse().unwrap());
        let mut b = DGRAM;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        assert!(!p.verify_checksum_v6(&s, &d), "zero is invalid over IPv6");
        p.fill_checksum_v6(&s, &d);
        assert!(p.verify_checksum_v6(&s, &d));
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&s.octets());
        pseudo.extend_from_slice(&d.octets());
        pseudo.extend_from_slice(&[0, 0, 0, 12, 0, 0, 0, 17]);
        let mut zeroed = DGRAM[..12].to_vec();
        zeroed[6..8].copy_from_slice(&[0, 0]);
        assert_eq!(p.checksum(), ref_checksum(&pseudo, &zeroed));

        // Choose the last payload word so that the computed sum is 0xFFFF,
        // i.e. the checksum computes to 0 and must be sent as 0xFFFF.
        let mut p2 = Packet::new_checked([0xcf, 0x08, 0x00, 0x35, 0x00, 0x0c, 0, 0, 0, 0, 0, 0]).unwrap();
        let base = checksum::pseudo_header_v6(&s, &d, 17, 12);
        let partial = checksum::fold(checksum::sum(p2.datagram(), base));
        let word = !partial; // partial + word == 0xFFFF
        p2.payload_mut()[2..4].copy_from_slice(&word.to_be_bytes());
        p2.fill_checksum_v6(&s, &d);
        assert_eq!(p2.checksum(), 0xFFFF);
        assert!(p2.verify_checksum_v6(&s, &d));
    }

    #[test]
    fn setters_and_emit() {
        let mut b = DGRAM;
        let mut p = Packet::new_checked(&mut b[..]).unwrap();
        p.swap_ports();
        assert_eq!((p.src_port(), p.dst_port()), (53, 53000));
        p.set_len(200);
        assert!(p.payload().is_empty() && p.payload_mut().is_empty(), "no panic");
        assert_eq!(p.datagram().len(), 15);
        let mut out = [0xffu8; 10];
        assert_eq!(emit_header(&mut out, 53, 1000, 2), Ok(8));
        assert_eq!(out, [0, 53, 0x03, 0xe8, 0, 10, 0, 0, 0xff, 0xff]);
        assert_eq!(emit_header(&mut out[..7], 53, 1000, 2), Err(FrameError::TooLarge));
        assert_eq!(emit_header(&mut out, 53, 1000, 65528), Err(FrameError::TooLarge));
    }
}
