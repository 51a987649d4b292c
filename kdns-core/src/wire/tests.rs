//! Message-level tests with byte vectors.

use super::*;

/// `example.com. IN A` query, ID 0x1234, RD, with OPT (size 1232, DO set).
fn query_with_opt() -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    m.extend_from_slice(&[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1]);
    m.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0x80, 0, 0, 0]);
    m
}

/// A response: `example.com. 300 IN A 192.0.2.1` (owner compressed to the
/// question), and `example.com. 3600 IN SOA` in authority with minimum 900.
fn response() -> Vec<u8> {
    let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 1, 0, 0];
    m.extend_from_slice(&[7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1]);
    m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0x2c, 0, 4, 192, 0, 2, 1]);
    // SOA: mname ns.example.com (ns + ptr), rname ptr, 5 x u32
    let rdata: Vec<u8> =
        [&[2, b'n', b's', 0xc0, 12][..], &[0xc0, 12], &[0, 0, 0, 1], &[0, 0, 0, 2], &[0, 0, 0, 3], &[0, 0, 0, 4], &[0, 0, 3, 0x84]]
            .concat();
    m.extend_from_slice(&[0xc0, 12, 0, 6, 0, 1, 0, 0, 0x0e, 0x10, 0, rdata.len() as u8]);
    m.extend_from_slice(&rdata);
    m
}

#[test]
fn parses_a_query_with_edns() {
    let q = query_with_opt();
    let m = Message::parse(&q).unwrap();
    assert_eq!(m.question.qtype, Rtype::A);
    assert_eq!(m.question.qclass, Class::IN);
    assert_eq!(m.question.name.display(&q).to_string(), "example.com.");
    let e = m.edns().unwrap();
    assert_eq!((e.udp_size, e.version, e.dnssec_ok(), e.options_len), (1232, 0, true, 0));
    assert_eq!(m.sections.end, q.len());
}

#[test]
fn walks_records_with_ttl_offsets() {
    let r = response();
    let m = Message::parse(&r).unwrap();
    let recs: Vec<Record> = m.sections.records(&r).collect();
    assert_eq!(recs.len(), 2);
    assert_eq!((recs[0].rtype, recs[0].ttl, recs[0].rdata(&r)), (Rtype::A, 300, &[192, 0, 2, 1][..]));
    assert_eq!(&r[recs[0].ttl_offset..recs[0].ttl_offset + 4], &300u32.to_be_bytes());
    assert_eq!((recs[1].rtype, recs[1].ttl), (Rtype::SOA, 3600));
    assert_eq!(recs[1].soa_minimum(&r), Ok(900));
    assert!(m.edns().is_none());
}

#[test]
fn truncated_at_every_offset_is_rejected() {
    for msg in [query_with_opt(), response()] {
        for cut in 12..msg.len() {
            assert!(Message::parse(&msg[..cut]).is_err(), "cut at {cut}");
        }
    }
}

#[test]
fn rejects_bad_opt_records() {
    // Second OPT.
    let mut q = query_with_opt();
    q[11] = 2;
    q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(Message::parse(&q), Err(MessageError::Malformed(WireError::BadOpt)));
    // OPT owned by a non-root name.
    let mut q = query_with_opt();
    let at = q.len() - 11;
    q.splice(at..at + 1, [1, b'x', 0]);
    assert_eq!(Message::parse(&q), Err(MessageError::Malformed(WireError::BadOpt)));
    // Option longer than the RDATA.
    let mut q = query_with_opt();
    let n = q.len();
    q[n - 1] = 4;
    q.extend_from_slice(&[0, 10, 0, 9]);
    assert_eq!(Message::parse(&q), Err(MessageError::Malformed(WireError::BadOption)));
    // OPT in the answer section.
    let mut q = query_with_opt();
    q[7] = 1;
    q[11] = 0;
    assert_eq!(Message::parse(&q), Err(MessageError::Malformed(WireError::BadOpt)));
}

#[test]
fn edns_options_are_walked() {
    let mut q = query_with_opt();
    let n = q.len();
    q[n - 1] = 12; // RDLENGTH: cookie option (8 bytes data) = 12
    q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let m = Message::parse(&q).unwrap();
    let opts: Vec<_> = m.edns().unwrap().options(&q).collect();
    assert_eq!(opts, vec![Ok((10u16, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]))]);
}

#[test]
fn question_count_must_be_one() {
    let mut q = query_with_opt();
    q[5] = 2;
    assert_eq!(Message::parse(&q), Err(MessageError::QuestionCount));
    q[5] = 0;
    assert_eq!(Message::parse(&q), Err(MessageError::QuestionCount));
}

#[test]
fn bad_rdlength_is_rejected() {
    let mut r = response();
    r[40] = 0xff; // A record's RDLENGTH low byte -> runs past the end
    assert_eq!(Message::parse(&r), Err(MessageError::Malformed(WireError::BadRdLength)));
}

#[test]
fn builder_writes_and_truncates() {
    let mut buf = [0u8; 64];
    let mut b = MessageBuilder::new(&mut buf, 60).unwrap();
    b.header().set_id(9);
    let mut name = [0u8; 32];
    let n = encode_name("example.com", &mut name).unwrap();
    b.question(&name[..n], Rtype::A, Class::IN).unwrap();
    b.reserve(OPT_LEN).unwrap();
    assert!(b.record_at(Section::Answer, 12, Rtype::A, Class::IN, 60, &[10, 0, 0, 1]).unwrap());
    // 29 + 16 = 45 bytes used, 11 reserved: a second A record (16) does not fit in 60.
    assert!(!b.record_at(Section::Answer, 12, Rtype::A, Class::IN, 60, &[10, 0, 0, 2]).unwrap());
    assert!(b.truncated());
    b.opt(OptSpec { udp_size: 1232, ext_rcode: 0, dnssec_ok: false }).unwrap();
    let len = b.finish();
    assert_eq!(len, 56);
    let h = Header::new_checked(&buf[..len]).unwrap();
    assert!(h.tc());
    assert_eq!((h.id(), h.ancount(), h.arcount()), (9, 1, 1));
    let m = Message::parse(&buf[..len]).unwrap();
    assert_eq!(m.edns().unwrap().udp_size, 1232);
    // Sections out of order are refused.
    let mut buf2 = [0u8; 64];
    let mut b = MessageBuilder::new(&mut buf2, 64).unwrap();
    b.record_at(Section::Additional, 12, Rtype::A, Class::IN, 1, &[0; 4]).unwrap();
    assert!(b.record_at(Section::Answer, 12, Rtype::A, Class::IN, 1, &[0; 4]).is_err());
    assert!(MessageBuilder::new(&mut [0u8; 11], 100).is_err());
}

#[test]
fn empty_reply_echoes_question_and_sets_badvers_bits() {
    let mut q = query_with_opt();
    q[13] = b'E'; // client's 0x20 spelling
    let m = Message::parse(&q).unwrap();
    let mut out = [0u8; 512];
    let opt = OptSpec { udp_size: 1232, ext_rcode: 0, dnssec_ok: true };
    let len = write_empty_reply(&q, Some(&m.question), Some(opt), Rcode::BADVERS, &mut out).unwrap();
    let r = &out[..len];
    let h = Header::new_checked(r).unwrap();
    assert!(h.qr() && h.rd() && h.ra());
    assert_eq!((h.id(), h.rcode(), h.qdcount(), h.arcount()), (0x1234, Rcode::NOERROR, 1, 1));
    let rm = Message::parse(r).unwrap();
    assert_eq!(rm.question.name.display(r).to_string(), "Example.com.");
    let e = rm.edns().unwrap();
    assert_eq!((e.ext_rcode, e.dnssec_ok()), (1, true));
    // FORMERR with no readable question: header only.
    let len = write_empty_reply(&q, None, None, Rcode::FORMERR, &mut out).unwrap();
    assert_eq!(len, 12);
    assert_eq!(Header::new_checked(&out[..12]).unwrap().rcode(), Rcode::FORMERR);
}
