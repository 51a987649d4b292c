//! Parse -> build -> reparse. A message that `Message::parse` accepts is
//! copied with `MessageBuilder`: the question via `copy_question`, every
//! record with its owner written uncompressed and its RDATA as raw bytes,
//! the OPT record re-added with `opt()`. The copy must parse and carry the
//! same header, question, records (types, classes, TTLs, RDATA) and EDNS
//! UDP size / DO bit; rebuilding the copy must give the same bytes.
//! Messages with compressed names in RDATA are left out: raw RDATA copied
//! to another place would point at other bytes (the parser checks those
//! names, so the copy would rightly be refused).
#![no_main]

use kdns_core::wire::{Header, Message, MessageBuilder, Name, OptSpec, Record, Rtype, Section, HEADER_LEN, OPT_LEN};

/// Whether a name in `r`'s RDATA (NS, CNAME, PTR, DNAME, MX, SRV, SOA) is
/// compressed.
fn rdata_compressed(msg: &[u8], r: &Record) -> bool {
    let at = match r.rtype.0 {
        2 | 5 | 12 | 39 | 6 => r.rdata_offset,
        15 => r.rdata_offset + 2,
        33 => r.rdata_offset + 6,
        _ => return false,
    };
    match Name::parse(msg, at) {
        Ok(n) if r.rtype.0 == 6 => n.is_compressed() || Name::parse(msg, n.end()).map_or(true, |m| m.is_compressed()),
        Ok(n) => n.is_compressed(),
        Err(_) => true,
    }
}
use libfuzzer_sys::fuzz_target;

/// The copy of `msg`, in a buffer of exactly the size it needs.
fn rebuild(msg: &[u8], m: &Message) -> Vec<u8> {
    let h = Header::new_checked(msg).unwrap();
    let (an, ns) = (h.ancount() as usize, h.nscount() as usize);
    let mut need = HEADER_LEN + m.question.name.wire_len() + 4;
    for r in m.sections.records(msg).filter(|r| r.rtype != Rtype::OPT) {
        need += r.name.wire_len() + 10 + r.rdlen as usize;
    }
    if m.edns().is_some() {
        need += OPT_LEN;
    }
    let mut buf = vec![0u8; need];
    let mut b = MessageBuilder::new(&mut buf, need).expect("builder");
    b.header().set_id(h.id());
    b.header().set_flags(h.flags());
    b.copy_question(msg, &m.question).expect("copy_question");
    for (i, r) in m.sections.records(msg).enumerate() {
        if r.rtype == Rtype::OPT {
            continue;
        }
        let section = if i < an {
            Section::Answer
        } else if i < an + ns {
            Section::Authority
        } else {
            Section::Additional
        };
        let mut owner = [0u8; 255];
        let n = r.name.write_uncompressed(msg, &mut owner).expect("owner");
        let fit = b.record(section, &owner[..n], r.rtype, r.class, r.ttl, r.rdata(msg)).expect("record");
        assert!(fit, "record {i} does not fit a buffer sized for it");
    }
    if let Some(e) = m.edns() {
        b.opt(OptSpec { udp_size: e.udp_size, ext_rcode: e.ext_rcode, dnssec_ok: e.dnssec_ok() }).expect("opt");
    }
    assert!(!b.truncated());
    let n = b.finish();
    assert_eq!(n, need, "builder wrote a different length than computed");
    buf
}

fuzz_target!(|msg: &[u8]| {
    let Ok(m) = Message::parse(msg) else { return };
    if m.sections.records(msg).any(|r| rdata_compressed(msg, &r)) {
        return;
    }
    let built = rebuild(msg, &m);
    let m2 = match Message::parse(&built) {
        Ok(m2) => m2,
        Err(e) => panic!("rebuilt message rejected: {e:?}"),
    };

    let (h1, h2) = (Header::new_checked(msg).unwrap(), Header::new_checked(&built[..]).unwrap());
    assert_eq!((h1.id(), h1.flags()), (h2.id(), h2.flags()), "header");
    assert_eq!((h1.qdcount(), h1.ancount(), h1.nscount(), h1.arcount()), (h2.qdcount(), h2.ancount(), h2.nscount(), h2.arcount()));

    let (q1, q2) = (&m.question, &m2.question);
    let (mut a, mut b) = ([0u8; 255], [0u8; 255]);
    let na = q1.name.write_uncompressed(msg, &mut a).unwrap();
    let nb = q2.name.write_uncompressed(&built, &mut b).unwrap();
    assert_eq!(&a[..na], &b[..nb], "question name");
    assert!(q2.name.eq_ignore_case(&built, &q1.name, msg));
    assert_eq!((q1.qtype, q1.qclass), (q2.qtype, q2.qclass), "question type/class");

    let mut r2 = m2.sections.records(&built).filter(|r| r.rtype != Rtype::OPT);
    for r in m.sections.records(msg).filter(|r| r.rtype != Rtype::OPT) {
        let s = r2.next().expect("record missing from the copy");
        let na = r.name.write_uncompressed(msg, &mut a).unwrap();
        let nb = s.name.write_uncompressed(&built, &mut b).unwrap();
        assert_eq!(&a[..na], &b[..nb], "owner");
        assert_eq!((r.rtype, r.class, r.ttl, r.rdlen), (s.rtype, s.class, s.ttl, s.rdlen), "record fields");
        assert_eq!(r.rdata(msg), s.rdata(&built), "rdata");
        assert_eq!(&built[s.ttl_offset..s.ttl_offset + 4], &r.ttl.to_be_bytes(), "ttl_offset");
    }
    assert!(r2.next().is_none(), "extra record in the copy");

    match (m.edns(), m2.edns()) {
        (None, None) => {}
        (Some(e1), Some(e2)) => {
            assert_eq!((e1.udp_size, e1.dnssec_ok(), e1.ext_rcode), (e2.udp_size, e2.dnssec_ok(), e2.ext_rcode), "edns");
            assert_eq!((e2.version, e2.options_len), (0, 0));
        }
        (x, y) => panic!("OPT presence differs: {x:?} vs {y:?}"),
    }

    // The copy is already in canonical (uncompressed, OPT last) form.
    assert_eq!(rebuild(&built, &m2), built, "rebuilding the copy changed it");
});
