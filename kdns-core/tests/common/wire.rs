//! Invariant checks of the DNS wire parser (`kdns_core::wire`), shared by
//! the property tests (`kdns-core/tests/wire_props.rs`) and the fuzz
//! targets `parse` and `roundtrip` (`kdns-core/fuzz`), which include this
//! file with `#[path]`. They assert (panic) rather than return errors: any
//! panic is a finding.

#![allow(dead_code)] // each includer uses a different part

use kdns_core::wire::{
    write_empty_reply, Header, Message, MessageBuilder, MessageError, Name, Opcode, OptSpec, Question, Rcode, Record, Rtype, Section,
    Sections, WireError, HEADER_LEN, MAX_NAME_LEN, OPT_LEN,
};

/// The big-endian u32 at `at`.
pub fn be32(msg: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(msg[at..at + 4].try_into().unwrap())
}

/// Section counts of a message whose header is readable.
pub fn counts(msg: &[u8]) -> (usize, usize, usize) {
    let h = Header::new_checked(msg).unwrap();
    (h.ancount() as usize, h.nscount() as usize, h.arcount() as usize)
}

/// Everything a validated name promises.
pub fn check_name(msg: &[u8], n: &Name, pos: usize) {
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
        let mut small = vec![0u8; len - 1];
        assert_eq!(n.write_uncompressed(msg, &mut small), Err(WireError::NoSpace));
    }

    let p = Name::parse(plain, 0).expect("uncompressed copy reparses");
    assert!(!p.is_compressed());
    assert_eq!((p.end(), p.wire_len()), (len, len));
    assert_eq!(p.labels(plain).count(), count);
    assert!(n.eq_wire_ignore_case(msg, plain));
    assert!(n.eq_wire_ignore_case(msg, &plain.to_ascii_uppercase()));
    assert!(n.eq_ignore_case(msg, &p, plain));
    assert!(p.eq_ignore_case(plain, n, msg));
}

/// [`check_name`] plus its text form (slow: once per message in the fuzz
/// target, not at every offset).
pub fn check_name_display(msg: &[u8], n: &Name, pos: usize) {
    check_name(msg, n, pos);
    let mut plain = [0u8; 255];
    let len = n.write_uncompressed(msg, &mut plain).expect("write_uncompressed of a valid name");
    let p = Name::parse(&plain[..len], 0).expect("uncompressed copy reparses");
    assert_eq!(n.display(msg).to_string(), p.display(&plain[..len]).to_string());
}

/// Everything a parsed message promises, plus `write_empty_reply`.
pub fn check_message(msg: &[u8], m: &Message) {
    let q = &m.question;
    assert_eq!(q.name.start(), HEADER_LEN);
    assert_eq!(q.end(), m.sections.answer);
    check_name_display(msg, &q.name, HEADER_LEN);

    let (an, ns, ar) = counts(msg);
    let recs: Vec<Record> = m.sections.records(msg).collect();
    assert_eq!(recs.len(), an + ns + ar, "records() must yield every counted record");
    let bound = |k: usize| if k == 0 { m.sections.answer } else { recs[k - 1].end() };
    assert_eq!(bound(an), m.sections.authority);
    assert_eq!(bound(an + ns), m.sections.additional);
    assert_eq!(bound(an + ns + ar), m.sections.end);
    assert!(m.sections.end <= msg.len());
    let mut opts = 0;
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(r.name.start(), bound(i));
        assert_eq!(r.ttl_offset, r.name.end() + 4);
        assert_eq!(r.rdata_offset, r.name.end() + 10);
        assert_eq!(be32(msg, r.ttl_offset), r.ttl);
        assert_eq!(r.rdata(msg).len(), r.rdlen as usize);
        assert!(r.end() <= msg.len());
        let _ = r.soa_minimum(msg);
        if r.rtype == Rtype::OPT {
            assert!(i >= an + ns, "OPT outside the additional section");
            opts += 1;
            let e = m.edns().expect("OPT record but no edns");
            assert_eq!(e.offset, r.name.start());
            assert_eq!(e.options_offset, r.rdata_offset);
            assert_eq!(e.options_len, r.rdlen);
        }
    }
    assert_eq!(opts, usize::from(m.edns().is_some()));
    if let Some(e) = m.edns() {
        let mut seen = 0;
        for o in e.options(msg) {
            let (_, data) = o.expect("options were checked by Message::parse");
            seen += 4 + data.len();
        }
        assert_eq!(seen, e.options_len as usize);
        assert!(e.effective_udp_size() >= 512);
    }

    // An empty reply always fits in 600 bytes and reads back.
    for rcode in [Rcode::NXDOMAIN, Rcode::BADVERS] {
        let spec = m.edns().map(|e| OptSpec { udp_size: 1232, ext_rcode: 0, dnssec_ok: e.dnssec_ok() });
        let mut out = [0u8; 600];
        let n = write_empty_reply(msg, Some(q), spec, rcode, &mut out).expect("empty reply fits");
        let reply = &out[..n];
        let rm = Message::parse(reply).expect("empty reply parses");
        let (rh, qh) = (Header::new_checked(reply).unwrap(), Header::new_checked(msg).unwrap());
        assert_eq!(rh.id(), qh.id());
        assert!(rh.qr());
        assert_eq!(rh.ra(), qh.opcode() == Opcode::QUERY, "RA only for a standard query");
        assert_eq!(rh.rcode(), Rcode(rcode.0 & 0xf));
        assert_eq!(rh.opcode(), qh.opcode());
        assert_eq!((rh.rd(), rh.cd()), (qh.rd(), qh.cd()));
        assert_eq!((rh.ancount(), rh.nscount(), rh.arcount()), (0, 0, u16::from(spec.is_some())));
        assert!(rm.question.name.eq_ignore_case(reply, &q.name, msg));
        assert_eq!((rm.question.qtype, rm.question.qclass), (q.qtype, q.qclass));
        let mut a = [0u8; 255];
        let mut b = [0u8; 255];
        let la = rm.question.name.write_uncompressed(reply, &mut a).unwrap();
        let lb = q.name.write_uncompressed(msg, &mut b).unwrap();
        assert_eq!(a[..la], b[..lb], "the client's spelling is kept");
        match (rm.edns(), spec) {
            (None, None) => {}
            (Some(e), Some(s)) => {
                assert_eq!((e.udp_size, e.dnssec_ok(), e.version), (s.udp_size, s.dnssec_ok, 0));
                assert_eq!(e.ext_rcode, rcode.extended_bits());
            }
            other => panic!("OPT presence changed: {other:?}"),
        }
        // Too small a buffer is an error, never a panic.
        for size in [0, 11, 12, 12 + q.name.wire_len() + 3] {
            let mut small = vec![0u8; size];
            assert!(write_empty_reply(msg, Some(q), spec, rcode, &mut small).is_err() || size >= n);
        }
    }
}

/// Runs every reader over `msg`. Panics (only) on a broken invariant.
pub fn exercise(msg: &[u8]) {
    match Header::new_checked(msg) {
        Ok(h) => {
            let _ = (h.id(), h.flags(), h.qr(), h.opcode(), h.aa(), h.tc(), h.rd(), h.ra());
            let _ = (h.ad(), h.cd(), h.rcode(), h.qdcount(), h.ancount(), h.nscount(), h.arcount());
            let mut out = [0u8; 600];
            let n = write_empty_reply(msg, None, None, Rcode::FORMERR, &mut out).expect("header-only reply");
            assert_eq!(n, HEADER_LEN);
        }
        Err(e) => {
            assert_eq!(e, WireError::Truncated);
            assert!(msg.len() < HEADER_LEN);
            assert_eq!(Message::parse(msg), Err(MessageError::Malformed(WireError::Truncated)));
        }
    }
    for pos in 0..=msg.len() + 1 {
        if let Ok(n) = Name::parse(msg, pos) {
            check_name(msg, &n, pos);
        }
        if let Ok(q) = Question::parse(msg, pos) {
            assert_eq!(q.end(), q.name.end() + 4);
            assert!(q.end() <= msg.len());
        }
        if let Ok(r) = Record::parse(msg, pos) {
            assert!(r.end() <= msg.len());
            assert_eq!(r.rdata(msg).len(), r.rdlen as usize);
            assert_eq!(be32(msg, r.ttl_offset), r.ttl);
            let _ = r.soa_minimum(msg);
        }
    }
    // Sections after whatever question sits at 12, whatever QDCOUNT says.
    if let Ok(q) = Question::parse(msg, HEADER_LEN) {
        if let Ok(s) = Sections::parse(msg, q.end()) {
            assert!(s.answer <= s.authority && s.authority <= s.additional && s.additional <= s.end);
            assert!(s.end <= msg.len());
            for r in s.records(msg) {
                let _ = (r.rdata(msg).len(), r.soa_minimum(msg));
            }
            if let Some(e) = s.edns {
                assert!(e.options(msg).all(|o| o.is_ok()));
            }
        }
    }
    if let Ok(m) = Message::parse(msg) {
        check_message(msg, &m);
    }
}

/// Whether a name in `r`'s RDATA (NS, CNAME, PTR, DNAME, MX, SRV, SOA) is
/// compressed.
pub fn rdata_compressed(msg: &[u8], r: &Record) -> bool {
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
/// The copy of `msg`, in a buffer of exactly the size it needs.
pub fn rebuild(msg: &[u8], m: &Message) -> Vec<u8> {
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

/// Copies `msg` with [`rebuild`] and checks the copy: it parses, with the
/// same header, question, records (owners, types, classes, TTLs, RDATA) and
/// EDNS; rebuilding it gives the same bytes. Returns the copy. `msg` must
/// have no compressed name in its RDATA ([`rdata_compressed`]).
pub fn check_roundtrip(msg: &[u8], m: &Message) -> Vec<u8> {
    let built = rebuild(msg, m);
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
    assert!(!q2.name.is_compressed());
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
    built
}
