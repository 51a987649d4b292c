//! Every reader of `kdns_core::wire` over arbitrary bytes: the header, a
//! name at every offset, questions and records at every offset, the
//! message, its records and EDNS options, and `write_empty_reply` into a
//! 600-byte buffer. Any panic is a bug: either a reader panicked, or a
//! value that parsed broke one of the invariants asserted here.
#![no_main]

use kdns_core::wire::{
    write_empty_reply, Header, Message, MessageError, Name, Opcode, OptSpec, Question, Rcode, Record, Rtype, Sections, WireError,
    HEADER_LEN, MAX_NAME_LEN,
};
use libfuzzer_sys::fuzz_target;

fn be32(msg: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([msg[at], msg[at + 1], msg[at + 2], msg[at + 3]])
}

fn check_name(msg: &[u8], n: &Name, pos: usize) {
    assert_eq!(n.start(), pos);
    assert!(n.end() > n.start() && n.end() <= msg.len());
    assert!((1..=MAX_NAME_LEN).contains(&n.wire_len()));
    assert_eq!(n.is_root(), n.wire_len() == 1);
    if !n.is_compressed() {
        assert_eq!(n.len_in_place(), n.wire_len());
    }
    let mut total = 1;
    let mut count = 0;
    for label in n.labels(msg) {
        assert!((1..=63).contains(&label.len()));
        total += label.len() + 1;
        count += 1;
    }
    assert_eq!(total, n.wire_len(), "labels disagree with wire_len");

    let mut plain = [0u8; 255];
    let len = n.write_uncompressed(msg, &mut plain).expect("write_uncompressed of a valid name");
    assert_eq!(len, n.wire_len());
    let plain = &plain[..len];
    let mut lower = [0u8; 255];
    let llen = n.write_lowercase(msg, &mut lower).expect("write_lowercase of a valid name");
    assert_eq!(&lower[..llen], &plain.to_ascii_lowercase()[..]);
    if len > 1 {
        let mut small = [0u8; 254];
        assert_eq!(n.write_uncompressed(msg, &mut small[..len - 1]), Err(WireError::NoSpace));
    }
    let p = Name::parse(plain, 0).expect("uncompressed copy reparses");
    assert!(!p.is_compressed());
    assert_eq!((p.end(), p.wire_len()), (len, len));
    assert_eq!(p.labels(plain).count(), count);
    assert!(n.eq_wire_ignore_case(msg, plain));
    assert!(n.eq_ignore_case(msg, &p, plain));
    assert!(p.eq_ignore_case(plain, n, msg));
}

fn check_message(msg: &[u8], m: &Message) {
    let q = &m.question;
    assert_eq!(q.name.start(), HEADER_LEN);
    assert_eq!(q.end(), m.sections.answer);
    // Formatting is slow; do it once per message rather than per offset.
    let mut plain = [0u8; 255];
    let len = q.name.write_uncompressed(msg, &mut plain).unwrap();
    let p = Name::parse(&plain[..len], 0).unwrap();
    assert_eq!(q.name.display(msg).to_string(), p.display(&plain[..len]).to_string());
    let h = Header::new_checked(msg).unwrap();
    let (an, ns, ar) = (h.ancount() as usize, h.nscount() as usize, h.arcount() as usize);

    let mut pos = m.sections.answer;
    let mut opts = 0;
    let mut i = 0;
    for r in m.sections.records(msg) {
        if i == an {
            assert_eq!(pos, m.sections.authority);
        }
        if i == an + ns {
            assert_eq!(pos, m.sections.additional);
        }
        assert_eq!(r.name.start(), pos);
        assert_eq!(be32(msg, r.ttl_offset), r.ttl);
        assert_eq!(r.rdata(msg).len(), r.rdlen as usize);
        assert!(r.end() <= msg.len());
        let _ = r.soa_minimum(msg);
        if r.rtype == Rtype::OPT {
            assert!(i >= an + ns, "OPT outside the additional section");
            opts += 1;
        }
        pos = r.end();
        i += 1;
    }
    assert_eq!(i, an + ns + ar, "records() must yield every counted record");
    assert_eq!(pos, m.sections.end);
    assert_eq!(opts, usize::from(m.edns().is_some()));
    let spec = m.edns().map(|e| {
        let mut seen = 0;
        for o in e.options(msg) {
            seen += 4 + o.expect("options were checked by Message::parse").1.len();
        }
        assert_eq!(seen, e.options_len as usize);
        OptSpec { udp_size: 1232, ext_rcode: 0, dnssec_ok: e.dnssec_ok() }
    });

    for rcode in [Rcode::NXDOMAIN, Rcode::BADVERS] {
        let mut out = [0u8; 600];
        let n = write_empty_reply(msg, Some(q), spec, rcode, &mut out).expect("an empty reply fits in 600 bytes");
        let reply = &out[..n];
        let rm = Message::parse(reply).expect("empty reply parses");
        let rh = Header::new_checked(reply).unwrap();
        assert_eq!(rh.id(), h.id());
        assert!(rh.qr());
        // RA (recursion available) only for a standard query.
        assert_eq!(rh.ra(), h.opcode() == Opcode::QUERY);
        assert_eq!(rh.opcode(), h.opcode());
        assert_eq!(rh.rcode(), Rcode(rcode.0 & 0xf));
        assert_eq!((rh.ancount(), rh.nscount(), rh.arcount()), (0, 0, u16::from(spec.is_some())));
        assert!(rm.question.name.eq_ignore_case(reply, &q.name, msg));
        assert_eq!((rm.question.qtype, rm.question.qclass), (q.qtype, q.qclass));
        if let Some(e) = rm.edns() {
            assert_eq!(e.ext_rcode, rcode.extended_bits());
        }
        let mut small = [0u8; 40];
        let _ = write_empty_reply(msg, Some(q), spec, rcode, &mut small);
    }
}

fuzz_target!(|msg: &[u8]| {
    match Header::new_checked(msg) {
        Ok(h) => {
            let _ = (h.id(), h.flags(), h.qr(), h.opcode(), h.aa(), h.tc(), h.rd(), h.ra());
            let _ = (h.ad(), h.cd(), h.rcode(), h.qdcount(), h.ancount(), h.nscount(), h.arcount());
            let mut out = [0u8; 600];
            assert_eq!(write_empty_reply(msg, None, None, Rcode::FORMERR, &mut out), Ok(HEADER_LEN));
        }
        Err(e) => {
            assert_eq!(e, WireError::Truncated);
            assert_eq!(Message::parse(msg), Err(MessageError::Malformed(WireError::Truncated)));
        }
    }
    for pos in 0..=msg.len() {
        if let Ok(n) = Name::parse(msg, pos) {
            check_name(msg, &n, pos);
        }
        if let Ok(q) = Question::parse(msg, pos) {
            assert!(q.end() <= msg.len());
        }
        if let Ok(r) = Record::parse(msg, pos) {
            assert!(r.end() <= msg.len());
            assert_eq!(r.rdata(msg).len(), r.rdlen as usize);
            assert_eq!(be32(msg, r.ttl_offset), r.ttl);
            let _ = r.soa_minimum(msg);
        }
    }
    if let Ok(q) = Question::parse(msg, HEADER_LEN) {
        if let Ok(s) = Sections::parse(msg, q.end()) {
            assert!(s.answer <= s.authority && s.authority <= s.additional && s.additional <= s.end);
            assert!(s.end <= msg.len());
            for r in s.records(msg) {
                let _ = (r.rdata(msg), r.soa_minimum(msg));
            }
            if let Some(e) = s.edns {
                assert!(e.options(msg).all(|o| o.is_ok()));
            }
        }
    }
    if let Ok(m) = Message::parse(msg) {
        check_message(msg, &m);
    }
});
