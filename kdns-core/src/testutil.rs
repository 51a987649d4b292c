//! Message builders for tests: readable queries and backend answers.

use crate::wire::{encode_name, flags, Class, Header, MessageBuilder, OptSpec, Rcode, Rtype, Section};

/// A query for `name`/`qtype` with ID `id`, RD set, and an OPT record when
/// `edns` gives `(udp_size, dnssec_ok)`.
pub fn query(id: u16, name: &str, qtype: Rtype, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut buf = [0u8; 600];
    let mut b = MessageBuilder::new(&mut buf, 600).unwrap();
    b.header().set_id(id);
    b.header().set_flags(flags::RD);
    let mut n = [0u8; 256];
    let len = encode_name(name, &mut n).unwrap();
    b.question(&n[..len], qtype, Class::IN).unwrap();
    if let Some((udp_size, dnssec_ok)) = edns {
        b.opt(OptSpec { udp_size, ext_rcode: 0, dnssec_ok }).unwrap();
    }
    let len = b.finish();
    buf[..len].to_vec()
}

/// The wire form of the name `text`.
pub fn name_wire(text: &str) -> Vec<u8> {
    let mut b = [0u8; 256];
    let n = encode_name(text, &mut b).unwrap();
    b[..n].to_vec()
}

/// One record of a test answer; the owner is the question name.
#[derive(Debug, Clone)]
pub struct Rr {
    /// Section.
    pub section: Section,
    /// Type.
    pub rtype: Rtype,
    /// TTL.
    pub ttl: u32,
    /// RDATA.
    pub rdata: Vec<u8>,
}

/// An A record for the question name.
pub fn a(ttl: u32, addr: [u8; 4]) -> Rr {
    Rr { section: Section::Answer, rtype: Rtype::A, ttl, rdata: addr.to_vec() }
}

/// An SOA record in the authority section with the given MINIMUM.
pub fn soa(ttl: u32, minimum: u32) -> Rr {
    let mut rdata = vec![2, b'n', b's', 0xc0, 12, 0xc0, 12];
    for v in [1u32, 7200, 900, 1_209_600, minimum] {
        rdata.extend_from_slice(&v.to_be_bytes());
    }
    Rr { section: Section::Authority, rtype: Rtype::SOA, ttl, rdata }
}

/// The answer a backend would send to `query`: same ID and question, QR
/// RA set, `rcode`, the records, and an OPT (size 1232) when `edns`.
pub fn answer(query: &[u8], rcode: Rcode, rrs: &[Rr], edns: bool) -> Vec<u8> {
    let q = crate::wire::Message::parse(query).unwrap();
    let qh = Header::new_checked(query).unwrap();
    let mut buf = vec![0u8; 8192];
    let mut b = MessageBuilder::new(&mut buf, 8192).unwrap();
    b.header().set_id(qh.id());
    b.header().set_flags(flags::QR | flags::RA | (qh.flags() & (flags::RD | flags::CD)));
    b.header().set_rcode(rcode);
    b.copy_question(query, &q.question).unwrap();
    for rr in rrs {
        b.record_at(rr.section, 12, rr.rtype, Class::IN, rr.ttl, &rr.rdata).unwrap();
    }
    if edns {
        b.opt(OptSpec { udp_size: 1232, ext_rcode: 0, dnssec_ok: false }).unwrap();
    }
    let len = b.finish();
    buf.truncate(len);
    buf
}

/// The TTLs of every non-OPT record of `msg`, in order.
pub fn ttls(msg: &[u8]) -> Vec<u32> {
    let m = crate::wire::Message::parse(msg).unwrap();
    m.sections.records(msg).filter(|r| r.rtype != Rtype::OPT).map(|r| r.ttl).collect()
}
