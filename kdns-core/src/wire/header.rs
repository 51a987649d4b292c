//! The 12-byte DNS header (RFC 1035 4.1.1), as a view over bytes.

use super::types::{Opcode, Rcode};
use super::WireError;

/// Length of the DNS header.
pub const HEADER_LEN: usize = 12;

mod field {
    pub const ID: usize = 0;
    pub const FLAGS: usize = 2;
    pub const QDCOUNT: usize = 4;
    pub const ANCOUNT: usize = 6;
    pub const NSCOUNT: usize = 8;
    pub const ARCOUNT: usize = 10;
}

/// Header flag bits in the 16-bit flags word.
pub mod flags {
    /// Response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Authentic data.
    pub const AD: u16 = 0x0020;
    /// Checking disabled.
    pub const CD: u16 = 0x0010;
    /// Opcode mask (shift 11).
    pub const OPCODE_MASK: u16 = 0x7800;
    /// Rcode mask (low 4 bits).
    pub const RCODE_MASK: u16 = 0x000f;
}

/// A view over a DNS header. Once [`Header::new_checked`] succeeds no
/// accessor can panic.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buf: T,
}

#[inline(always)]
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl<T: AsRef<[u8]>> Header<T> {
    /// A view over `buf`, which must hold at least 12 bytes.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Header { buf })
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// Message ID.
    #[inline]
    pub fn id(&self) -> u16 {
        get16(self.buf.as_ref(), field::ID)
    }
    /// The whole flags word.
    #[inline]
    pub fn flags(&self) -> u16 {
        get16(self.buf.as_ref(), field::FLAGS)
    }
    /// QR: this is a response.
    #[inline]
    pub fn qr(&self) -> bool {
        self.flags() & flags::QR != 0
    }
    /// The opcode.
    #[inline]
    pub fn opcode(&self) -> Opcode {
        Opcode(((self.flags() & flags::OPCODE_MASK) >> 11) as u8)
    }
    /// AA bit.
    #[inline]
    pub fn aa(&self) -> bool {
        self.flags() & flags::AA != 0
    }
    /// TC bit.
    #[inline]
    pub fn tc(&self) -> bool {
        self.flags() & flags::TC != 0
    }
    /// RD bit.
    #[inline]
    pub fn rd(&self) -> bool {
        self.flags() & flags::RD != 0
    }
    /// RA bit.
    #[inline]
    pub fn ra(&self) -> bool {
        self.flags() & flags::RA != 0
    }
    /// AD bit.
    #[inline]
    pub fn ad(&self) -> bool {
        self.flags() & flags::AD != 0
    }
    /// CD bit.
    #[inline]
    pub fn cd(&self) -> bool {
        self.flags() & flags::CD != 0
    }
    /// The header's 4-bit rcode (without EDNS extension bits).
    #[inline]
    pub fn rcode(&self) -> Rcode {
        Rcode(self.flags() & flags::RCODE_MASK)
    }
    /// Number of questions.
    #[inline]
    pub fn qdcount(&self) -> u16 {
        get16(self.buf.as_ref(), field::QDCOUNT)
    }
    /// Number of answer records.
    #[inline]
    pub fn ancount(&self) -> u16 {
        get16(self.buf.as_ref(), field::ANCOUNT)
    }
    /// Number of authority records.
    #[inline]
    pub fn nscount(&self) -> u16 {
        get16(self.buf.as_ref(), field::NSCOUNT)
    }
    /// Number of additional records.
    #[inline]
    pub fn arcount(&self) -> u16 {
        get16(self.buf.as_ref(), field::ARCOUNT)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Header<T> {
    #[inline(always)]
    fn set16(&mut self, at: usize, v: u16) {
        self.buf.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    /// Sets the ID.
    #[inline]
    pub fn set_id(&mut self, id: u16) {
        self.set16(field::ID, id)
    }
    /// Sets the whole flags word.
    #[inline]
    pub fn set_flags(&mut self, f: u16) {
        self.set16(field::FLAGS, f)
    }
    /// Sets or clears the bits in `mask`.
    #[inline]
    pub fn set_flag(&mut self, mask: u16, on: bool) {
        let f = self.flags();
        self.set_flags(if on { f | mask } else { f & !mask })
    }
    /// Sets the header's 4-bit rcode.
    #[inline]
    pub fn set_rcode(&mut self, rcode: Rcode) {
        let f = self.flags() & !flags::RCODE_MASK;
        self.set_flags(f | u16::from(rcode.header_bits()))
    }
    /// Sets the opcode.
    #[inline]
    pub fn set_opcode(&mut self, op: Opcode) {
        let f = self.flags() & !flags::OPCODE_MASK;
        self.set_flags(f | ((u16::from(op.0) & 0xf) << 11))
    }
    /// Sets QDCOUNT.
    pub fn set_qdcount(&mut self, n: u16) {
        self.set16(field::QDCOUNT, n)
    }
    /// Sets ANCOUNT.
    pub fn set_ancount(&mut self, n: u16) {
        self.set16(field::ANCOUNT, n)
    }
    /// Sets NSCOUNT.
    pub fn set_nscount(&mut self, n: u16) {
        self.set16(field::NSCOUNT, n)
    }
    /// Sets ARCOUNT.
    pub fn set_arcount(&mut self, n: u16) {
        self.set16(field::ARCOUNT, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // dig +norec example.com A, ID 0xbeef, RD set, AD set, one question, one additional.
    const QUERY: [u8; 12] = [0xbe, 0xef, 0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1];

    #[test]
    fn reads_fields() {
        let h = Header::new_checked(&QUERY[..]).unwrap();
        assert_eq!(h.id(), 0xbeef);
        assert!(!h.qr() && h.rd() && h.ad() && !h.cd() && !h.tc() && !h.aa() && !h.ra());
        assert_eq!(h.opcode(), Opcode::QUERY);
        assert_eq!(h.rcode(), Rcode::NOERROR);
        assert_eq!((h.qdcount(), h.ancount(), h.nscount(), h.arcount()), (1, 0, 0, 1));
    }

    #[test]
    fn rejects_short_buffers_at_every_length() {
        for n in 0..HEADER_LEN {
            assert_eq!(Header::new_checked(&QUERY[..n]).unwrap_err(), WireError::Truncated);
        }
    }

    #[test]
    fn writes_fields() {
        let mut b = QUERY;
        let mut h = Header::new_checked(&mut b[..]).unwrap();
        h.set_id(7);
        h.set_flag(flags::QR | flags::RA, true);
        h.set_flag(flags::AD, false);
        h.set_rcode(Rcode::BADVERS); // only the low bits land in the header
        h.set_opcode(Opcode::NOTIFY);
        h.set_ancount(3);
        assert_eq!(h.id(), 7);
        assert!(h.qr() && h.ra() && !h.ad() && h.rd());
        assert_eq!(h.rcode(), Rcode::NOERROR);
        assert_eq!(h.opcode(), Opcode::NOTIFY);
        h.set_rcode(Rcode::NXDOMAIN);
        assert_eq!(h.rcode(), Rcode::NXDOMAIN);
        assert_eq!(h.ancount(), 3);
    }
}
