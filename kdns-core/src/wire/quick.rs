//! The fast path for the shape of nearly every query: one question with a
//! plain (uncompressed) name, no answer or authority records, and at most
//! one OPT record without surprises. Anything else returns `None` and goes
//! through [`Message::parse`](super::Message::parse), which handles (or
//! rejects) every case; whatever this accepts, that accepts too, with the
//! same values (checked by a property test).

use super::header::HEADER_LEN;
use super::name::MAX_NAME_LEN;
use super::types::{Class, Rtype};

/// What the engine needs from a query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickQuery {
    /// End of the question name (it starts at 12).
    pub qname_end: usize,
    /// QTYPE.
    pub qtype: Rtype,
    /// QCLASS.
    pub qclass: Class,
    /// The OPT record's UDP size, version and DO bit, if there is one.
    pub edns: Option<QuickEdns>,
}

/// The parts of an OPT record the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickEdns {
    /// Requestor's UDP payload size, as sent.
    pub udp_size: u16,
    /// EDNS version.
    pub version: u8,
    /// DO bit.
    pub dnssec_ok: bool,
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// Reads a query of the common shape, or `None` (then use `Message::parse`).
#[inline]
pub fn quick_query(msg: &[u8]) -> Option<QuickQuery> {
    let counts = msg.get(4..12)?;
    // QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1.
    if counts[..7] != [0, 1, 0, 0, 0, 0, 0] || counts[7] > 1 {
        return None;
    }
    let mut pos = HEADER_LEN;
    loop {
        let len = *msg.get(pos)? as usize;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        pos += len + 1;
    }
    let qname_end = pos + 1;
    if qname_end - HEADER_LEN > MAX_NAME_LEN {
        return None;
    }
    let qtype = Rtype(be16(msg, qname_end)?);
    let qclass = Class(be16(msg, qname_end + 2)?);
    let at = qname_end + 4;
    let edns = if counts[7] == 1 {
        // Root owner, TYPE OPT, no options: 11 bytes.
        let opt = msg.get(at..at + 11)?;
        if opt[0] != 0 || opt[1..3] != [0, 41] || opt[9..11] != [0, 0] {
            return None;
        }
        Some(QuickEdns { udp_size: u16::from_be_bytes([opt[3], opt[4]]), version: opt[6], dnssec_ok: opt[7] & 0x80 != 0 })
    } else {
        None
    };
    Some(QuickQuery { qname_end, qtype, qclass, edns })
}

#[cfg(test)]
mod tests {
    use super::super::Message;
    use super::*;

    fn agrees(msg: &[u8]) {
        if let Some(q) = quick_query(msg) {
            let m = Message::parse(msg).expect("quick accepted what Message::parse rejects");
            assert!(!m.question.name.is_compressed());
            assert_eq!(m.question.name.end(), q.qname_end);
            assert_eq!((m.question.qtype, m.question.qclass), (q.qtype, q.qclass));
            let e = m.edns().map(|e| QuickEdns { udp_size: e.udp_size, version: e.version, dnssec_ok: e.dnssec_ok() });
            assert_eq!(e, q.edns);
        }
    }

    #[test]
    fn common_queries_take_the_fast_path() {
        let q = crate::testutil::query(1, "www.example.com", Rtype::AAAA, Some((1232, true)));
        let got = quick_query(&q).unwrap();
        assert_eq!((got.qname_end, got.qtype), (29, Rtype::AAAA));
        assert_eq!(got.edns, Some(QuickEdns { udp_size: 1232, version: 0, dnssec_ok: true }));
        agrees(&q);
        let q = crate::testutil::query(1, "a.b", Rtype::A, None);
        assert_eq!(quick_query(&q).unwrap().edns, None);
        agrees(&q);
        // Every truncation is refused or agrees.
        for cut in 0..q.len() {
            agrees(&q[..cut]);
        }
    }

    #[test]
    fn unusual_shapes_go_the_slow_way() {
        let mut q = crate::testutil::query(1, "a.b", Rtype::A, Some((1232, false)));
        let n = q.len();
        q[n - 1] = 4; // an option follows
        q.extend_from_slice(&[0, 10, 0, 0]);
        assert_eq!(quick_query(&q), None);
        let mut q2 = crate::testutil::query(1, "a.b", Rtype::A, None);
        q2[5] = 2;
        assert_eq!(quick_query(&q2), None);
        assert_eq!(quick_query(&[0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0]), None, "compressed");
    }

    proptest::proptest! {
        #[test]
        fn never_disagrees_with_the_full_parser(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), shape in 0u8..4) {
            // Bias towards query-like headers so the fast path is reached.
            let mut b = bytes;
            if b.len() >= 12 && shape > 0 {
                b[4..11].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0]);
                b[11] = shape & 1;
            }
            agrees(&b);
        }
    }
}
