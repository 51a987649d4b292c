//! Property tests of the DNS wire parser (`kdns_core::wire`):
//!
//! * nothing panics on arbitrary bytes or on mutated well-formed messages,
//!   and every accessor of a value that parsed keeps its invariants;
//! * on well-formed messages written by hickory-proto (which compresses
//!   names), our parse agrees with hickory's field by field;
//! * parse -> `MessageBuilder` -> reparse keeps every field, and hickory
//!   reads the rebuilt message the same way as the original;
//! * hand-made hostile messages (long pointer chains, pointers into labels
//!   or into the header, 255/256-byte names through compression, OPT
//!   version 1).

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::op::{Edns as HEdns, Message as HMessage, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, PTR, SOA, TXT};
use hickory_proto::rr::{Name as HName, RData, Record as HRecord, RecordType};
use hickory_proto::serialize::binary::BinEncodable;
use kdns_core::wire::{Class, Header, Message, MessageError, Name, Record, Rtype, WireError, HEADER_LEN, MAX_NAME_LEN, MAX_POINTER_HOPS};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;

#[path = "common/wire.rs"]
mod wire;
use wire::{be32, check_roundtrip, counts, exercise, rebuild};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A name as hickory holds it, in uncompressed wire form.
fn hwire(n: &HName) -> Vec<u8> {
    let mut out = Vec::new();
    for label in n.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

// ---------------------------------------------------------------------------
// Agreement with hickory-proto
// ---------------------------------------------------------------------------

fn names_agree(msg: &[u8], ours: &Name, theirs: &HName) -> Result<(), TestCaseError> {
    let want = hwire(theirs);
    let text = theirs.to_ascii();
    // hickory escapes unusual bytes in octal, we in decimal (RFC 1035):
    // compare presentation forms only where neither escapes.
    if !text.contains('\\') {
        let disp = ours.display(msg).to_string();
        prop_assert!(disp.eq_ignore_ascii_case(&text), "name {} vs hickory {}", disp, text);
    }
    let mut buf = [0u8; 255];
    let n = ours.write_uncompressed(msg, &mut buf).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(hex(&buf[..n]), hex(&want), "write_uncompressed vs hickory");
    let n = ours.write_lowercase(msg, &mut buf).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(hex(&buf[..n]), hex(&want.to_ascii_lowercase()), "write_lowercase vs hickory");
    prop_assert_eq!(ours.wire_len(), want.len());
    prop_assert_eq!(ours.labels(msg).count(), theirs.num_labels() as usize);
    prop_assert!(ours.eq_wire_ignore_case(msg, &want.to_ascii_uppercase()));
    Ok(())
}

/// Names inside RDATA, read with our parser, against hickory's RDATA.
fn rdata_agrees(msg: &[u8], r: &Record, data: &RData) -> Result<(), TestCaseError> {
    let fail = |e: WireError| TestCaseError::fail(format!("rdata name: {e}"));
    match data {
        RData::A(a) => prop_assert_eq!(r.rdata(msg), &a.0.octets()[..]),
        RData::AAAA(a) => prop_assert_eq!(r.rdata(msg), &a.0.octets()[..]),
        RData::TXT(_) => prop_assert_eq!(hex(r.rdata(msg)), hex(&data.to_bytes().unwrap())),
        RData::CNAME(CNAME(n)) | RData::NS(NS(n)) | RData::PTR(PTR(n)) => {
            let x = Name::parse(msg, r.rdata_offset).map_err(fail)?;
            prop_assert_eq!(x.end(), r.end(), "name fills the rdata");
            names_agree(msg, &x, n)?;
        }
        RData::MX(mx) => {
            prop_assert_eq!(&r.rdata(msg)[..2], &mx.preference().to_be_bytes()[..]);
            let x = Name::parse(msg, r.rdata_offset + 2).map_err(fail)?;
            prop_assert_eq!(x.end(), r.end(), "name fills the rdata");
            names_agree(msg, &x, mx.exchange())?;
        }
        RData::SOA(soa) => {
            let m = Name::parse(msg, r.rdata_offset).map_err(fail)?;
            let rn = Name::parse(msg, m.end()).map_err(fail)?;
            prop_assert_eq!(rn.end() + 20, r.end());
            names_agree(msg, &m, soa.mname())?;
            names_agree(msg, &rn, soa.rname())?;
            // Ours refuses names in RDATA that point into the header.
            let floor_ok = Name::parse_above(msg, r.rdata_offset, 12).and_then(|m| Name::parse_above(msg, m.end(), 12)).is_ok();
            let want = if floor_ok { Ok(soa.minimum()) } else { Err(WireError::BadPointer) };
            prop_assert_eq!(r.soa_minimum(msg), want);
        }
        _ => {} // other types: framing only (checked by the caller)
    }
    Ok(())
}

/// Parses `msg` with both parsers (both must accept it) and compares.
fn check_agreement(msg: &[u8]) -> Result<(), TestCaseError> {
    let ours = Message::parse(msg).map_err(|e| TestCaseError::fail(format!("ours rejected {e:?}: {}", hex(msg))))?;
    let theirs = HMessage::from_vec(msg).map_err(|e| TestCaseError::fail(format!("hickory rejected {e}: {}", hex(msg))))?;
    agree(msg, &ours, &theirs)
}

fn agree(msg: &[u8], ours: &Message, theirs: &HMessage) -> Result<(), TestCaseError> {
    let h = Header::new_checked(msg).unwrap();
    prop_assert_eq!(h.id(), theirs.id());
    prop_assert_eq!(h.qr(), theirs.message_type() == MessageType::Response);
    prop_assert_eq!(h.opcode().0, u8::from(theirs.op_code()));
    prop_assert_eq!(h.aa(), theirs.authoritative());
    prop_assert_eq!(h.tc(), theirs.truncated());
    prop_assert_eq!(h.rd(), theirs.recursion_desired());
    prop_assert_eq!(h.ra(), theirs.recursion_available());
    prop_assert_eq!(h.ad(), theirs.authentic_data());
    prop_assert_eq!(h.cd(), theirs.checking_disabled());
    prop_assert_eq!(h.rcode().0, u16::from(theirs.response_code()) & 0xf);
    let th = theirs.header();
    prop_assert_eq!(h.qdcount(), th.query_count());
    prop_assert_eq!(h.ancount(), th.answer_count());
    prop_assert_eq!(h.nscount(), th.name_server_count());
    prop_assert_eq!(h.arcount(), th.additional_count());
    let (an, ns, ar) = counts(msg);
    prop_assert_eq!(an, theirs.answers().len());
    prop_assert_eq!(ns, theirs.name_servers().len());
    prop_assert_eq!(ar, theirs.additionals().len() + usize::from(theirs.extensions().is_some()));

    let tq = &theirs.queries()[0];
    names_agree(msg, &ours.question.name, tq.name())?;
    prop_assert_eq!(ours.question.qtype.0, u16::from(tq.query_type()));
    prop_assert_eq!(ours.question.qclass.0, u16::from(tq.query_class()));

    let mut theirs_recs = theirs.answers().iter().chain(theirs.name_servers()).chain(theirs.additionals());
    for r in ours.sections.records(msg) {
        // The cache patches TTLs in place: the offset must be right.
        prop_assert_eq!(be32(msg, r.ttl_offset), r.ttl);
        prop_assert_eq!(r.rdata(msg).len(), r.rdlen as usize);
        if r.rtype == Rtype::OPT {
            let e = ours.edns().expect("OPT seen");
            let te = theirs.extensions().as_ref().expect("hickory saw no OPT");
            // hickory reads the class of OPT through DNSClass::for_opt, which
            // raises values below 512 to 512 (RFC 6891 6.2.3).
            prop_assert_eq!(e.effective_udp_size(), te.max_payload());
            prop_assert_eq!(e.dnssec_ok(), te.flags().dnssec_ok);
            prop_assert_eq!(e.flags, u16::from(*te.flags()));
            prop_assert_eq!(e.version, te.version());
            prop_assert_eq!(e.ext_rcode, te.rcode_high());
            let ours_opts: Vec<(u16, Vec<u8>)> = e.options(msg).map(|o| o.map(|(c, d)| (c, d.to_vec()))).collect::<Result<_, _>>().unwrap();
            let theirs_opts: Vec<(u16, Vec<u8>)> =
                te.options().as_ref().iter().map(|(c, o)| (u16::from(*c), Vec::<u8>::try_from(o).unwrap())).collect();
            prop_assert_eq!(ours_opts, theirs_opts);
            continue;
        }
        let t = match theirs_recs.next() {
            Some(t) => t,
            None => return Err(TestCaseError::fail("hickory has fewer records")),
        };
        names_agree(msg, &r.name, t.name())?;
        prop_assert_eq!(r.rtype.0, u16::from(t.record_type()));
        prop_assert_eq!(r.class.0, u16::from(t.dns_class()));
        prop_assert_eq!(r.ttl, t.ttl());
        rdata_agrees(msg, &r, t.data())?;
    }
    prop_assert!(theirs_recs.next().is_none(), "hickory has more records");
    prop_assert_eq!(ours.edns().is_some(), theirs.extensions().is_some());
    Ok(())
}

// ---------------------------------------------------------------------------
// Generated messages
// ---------------------------------------------------------------------------

type Labels = Vec<String>;

fn wire_len(labels: &[String]) -> usize {
    1 + labels.iter().map(|l| l.len() + 1).sum::<usize>()
}

fn fit(mut labels: Labels) -> Labels {
    while wire_len(&labels) > MAX_NAME_LEN {
        labels.pop();
    }
    labels
}

#[derive(Debug, Clone)]
enum NameSpec {
    /// The question name (compressed to a pointer to 12).
    Qname,
    /// Labels in front of the question name.
    Sub(Labels),
    /// Another name.
    Other(Labels),
}

impl NameSpec {
    fn resolve(&self, qname: &Labels) -> Labels {
        match self {
            NameSpec::Qname => qname.clone(),
            NameSpec::Sub(p) => {
                let mut v = p.clone();
                v.extend(qname.iter().cloned());
                if wire_len(&v) > MAX_NAME_LEN {
                    qname.clone()
                } else {
                    v
                }
            }
            NameSpec::Other(l) => l.clone(),
        }
    }
}

#[derive(Debug, Clone)]
enum RdSpec {
    A([u8; 4]),
    Aaaa([u8; 16]),
    Txt(Vec<String>),
    Cname(NameSpec),
    Ns(NameSpec),
    Mx(u16, NameSpec),
    Soa(NameSpec, NameSpec, [u32; 5]),
}

#[derive(Debug, Clone)]
struct RrSpec {
    owner: NameSpec,
    ttl: u32,
    rd: RdSpec,
}

#[derive(Debug, Clone)]
struct EdnsSpec {
    udp: u16,
    dnssec_ok: bool,
    options: Vec<(u16, Vec<u8>)>,
}

#[derive(Debug, Clone)]
struct MsgSpec {
    id: u16,
    /// qr aa tc rd ra ad cd
    flags: [bool; 7],
    opcode: u8,
    rcode: u8,
    qname: Labels,
    qtype: u16,
    sections: [Vec<RrSpec>; 3],
    edns: Option<EdnsSpec>,
}

fn label() -> impl Strategy<Value = String> {
    // hickory's presentation form escapes a leading '-', so labels start
    // with a letter or digit; otherwise [a-zA-Z0-9-], sometimes 63 long.
    prop_oneof![
        12 => "[a-zA-Z0-9][a-zA-Z0-9-]{0,19}",
        1 => "[a-zA-Z0-9][a-zA-Z0-9-]{62}",
    ]
}

fn name() -> impl Strategy<Value = Labels> {
    vec(label(), 1..=5).prop_map(fit)
}

fn name_spec() -> impl Strategy<Value = NameSpec> {
    prop_oneof![Just(NameSpec::Qname), vec(label(), 1..=2).prop_map(NameSpec::Sub), name().prop_map(NameSpec::Other),]
}

fn rdata(rich: bool) -> BoxedStrategy<RdSpec> {
    let txt = vec("[ -~]{0,40}", 1..4).prop_map(RdSpec::Txt);
    if rich {
        prop_oneof![
            any::<[u8; 4]>().prop_map(RdSpec::A),
            any::<[u8; 16]>().prop_map(RdSpec::Aaaa),
            txt,
            name_spec().prop_map(RdSpec::Cname),
            name_spec().prop_map(RdSpec::Ns),
            (any::<u16>(), name_spec()).prop_map(|(p, n)| RdSpec::Mx(p, n)),
            (name_spec(), name_spec(), any::<[u32; 5]>()).prop_map(|(m, r, v)| RdSpec::Soa(m, r, v)),
        ]
        .boxed()
    } else {
        prop_oneof![any::<[u8; 4]>().prop_map(RdSpec::A), any::<[u8; 16]>().prop_map(RdSpec::Aaaa), txt].boxed()
    }
}

fn rr(rich: bool) -> impl Strategy<Value = RrSpec> {
    (name_spec(), any::<u32>(), rdata(rich)).prop_map(|(owner, ttl, rd)| RrSpec { owner, ttl, rd })
}

fn edns() -> impl Strategy<Value = EdnsSpec> {
    // Local/experimental option codes: hickory decodes known codes
    // (e.g. 8, client subnet) into structures and may refuse random bytes.
    (any::<u16>(), any::<bool>(), vec((65001u16..=65534, vec(any::<u8>(), 0..16)), 0..=2)).prop_map(|(udp, dnssec_ok, options)| EdnsSpec {
        udp,
        dnssec_ok,
        options,
    })
}

fn msg_spec(rich: bool) -> impl Strategy<Value = MsgSpec> {
    let qtype = prop::sample::select(vec![1u16, 28, 16, 15, 5, 6, 33, 2, 12]);
    (
        any::<u16>(),
        any::<[bool; 7]>(),
        0u8..16,
        0u8..16,
        name(),
        qtype,
        vec(rr(rich), 0..=6),
        vec(rr(rich), 0..=6),
        vec(rr(rich), 0..=6),
        prop::option::of(edns()),
    )
        .prop_map(|(id, flags, opcode, rcode, qname, qtype, an, ns, ar, edns)| MsgSpec {
            id,
            flags,
            opcode,
            rcode,
            qname,
            qtype,
            sections: [an, ns, ar],
            edns,
        })
}

fn hname(labels: &[String]) -> HName {
    HName::from_labels(labels.iter().map(|l| l.as_bytes())).unwrap()
}

fn hrecord(rr: &RrSpec, qname: &Labels) -> HRecord {
    let n = |s: &NameSpec| hname(&s.resolve(qname));
    let data = match &rr.rd {
        RdSpec::A(a) => RData::A(A(Ipv4Addr::from(*a))),
        RdSpec::Aaaa(a) => RData::AAAA(AAAA(Ipv6Addr::from(*a))),
        RdSpec::Txt(t) => RData::TXT(TXT::new(t.clone())),
        RdSpec::Cname(c) => RData::CNAME(CNAME(n(c))),
        RdSpec::Ns(c) => RData::NS(NS(n(c))),
        RdSpec::Mx(p, c) => RData::MX(MX::new(*p, n(c))),
        RdSpec::Soa(m, r, v) => RData::SOA(SOA::new(n(m), n(r), v[0], v[1] as i32, v[2] as i32, v[3] as i32, v[4])),
    };
    HRecord::from_rdata(n(&rr.owner), rr.ttl, data)
}

/// The message of `s` as hickory writes it (names compressed).
fn build_hickory(s: &MsgSpec) -> Vec<u8> {
    let mut m = HMessage::new();
    let [qr, aa, tc, rd, ra, ad, cd] = s.flags;
    m.set_id(s.id)
        .set_message_type(if qr { MessageType::Response } else { MessageType::Query })
        .set_op_code(OpCode::from_u8(s.opcode))
        .set_authoritative(aa)
        .set_truncated(tc)
        .set_recursion_desired(rd)
        .set_recursion_available(ra)
        .set_authentic_data(ad)
        .set_checking_disabled(cd)
        .set_response_code(ResponseCode::from_low(s.rcode));
    m.add_query(HQuery::query(hname(&s.qname), RecordType::from(s.qtype)));
    for (i, sec) in s.sections.iter().enumerate() {
        for rr in sec {
            let r = hrecord(rr, &s.qname);
            match i {
                0 => m.add_answer(r),
                1 => m.add_name_server(r),
                _ => m.add_additional(r),
            };
        }
    }
    if let Some(e) = &s.edns {
        let mut ed = HEdns::new();
        ed.set_max_payload(e.udp).set_dnssec_ok(e.dnssec_ok).set_version(0);
        for (code, data) in &e.options {
            ed.options_mut().insert(EdnsOption::Unknown(*code, data.clone()));
        }
        m.set_edns(ed);
    }
    m.to_vec().expect("hickory encodes the generated message")
}

/// Our parse against the generator's model (not just against hickory).
fn check_model(msg: &[u8], s: &MsgSpec) -> Result<(), TestCaseError> {
    let m = Message::parse(msg).unwrap();
    let h = Header::new_checked(msg).unwrap();
    let [qr, aa, tc, rd, ra, ad, cd] = s.flags;
    prop_assert_eq!((h.id(), h.opcode().0, h.rcode().0), (s.id, s.opcode, u16::from(s.rcode)));
    prop_assert_eq!([h.qr(), h.aa(), h.tc(), h.rd(), h.ra(), h.ad(), h.cd()], [qr, aa, tc, rd, ra, ad, cd]);
    let mut want = Vec::new();
    for l in &s.qname {
        want.push(l.len() as u8);
        want.extend_from_slice(l.as_bytes());
    }
    want.push(0);
    let mut buf = [0u8; 255];
    let n = m.question.name.write_uncompressed(msg, &mut buf).unwrap();
    prop_assert_eq!(&buf[..n], &want[..], "question name keeps its case");
    prop_assert_eq!((m.question.qtype, m.question.qclass), (Rtype(s.qtype), Class::IN));
    let got: Vec<(u16, u32)> = m.sections.records(msg).filter(|r| r.rtype != Rtype::OPT).map(|r| (r.rtype.0, r.ttl)).collect();
    let exp: Vec<(u16, u32)> = s
        .sections
        .iter()
        .flatten()
        .map(|rr| {
            let t = match rr.rd {
                RdSpec::A(_) => 1,
                RdSpec::Aaaa(_) => 28,
                RdSpec::Txt(_) => 16,
                RdSpec::Cname(_) => 5,
                RdSpec::Ns(_) => 2,
                RdSpec::Mx(..) => 15,
                RdSpec::Soa(..) => 6,
            };
            (t, rr.ttl)
        })
        .collect();
    prop_assert_eq!(got, exp);
    match (m.edns(), &s.edns) {
        (None, None) => {}
        (Some(e), Some(se)) => {
            prop_assert_eq!((e.udp_size, e.dnssec_ok(), e.version, e.ext_rcode), (se.udp.max(512), se.dnssec_ok, 0, 0));
            let opts: Vec<(u16, Vec<u8>)> = e.options(msg).map(|o| o.map(|(c, d)| (c, d.to_vec())).unwrap()).collect();
            prop_assert_eq!(&opts, &se.options);
        }
        other => return Err(TestCaseError::fail(format!("edns presence: {other:?}"))),
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(Index, u8),
    FlipBit(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Set(i, v)),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, v)| Mutation::FlipBit(i, v)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        2 => any::<Index>().prop_map(Mutation::Delete),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let len = b.len();
        match m {
            Mutation::Set(i, v) if len > 0 => b[i.index(len)] = *v,
            Mutation::FlipBit(i, v) if len > 0 => b[i.index(len)] ^= 1 << v,
            Mutation::Insert(i, v) => b.insert(i.index(len + 1), *v),
            Mutation::Delete(i) if len > 0 => {
                b.remove(i.index(len));
            }
            Mutation::Truncate(i) => b.truncate(i.index(len + 1)),
            _ => {}
        }
    }
    b
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(msg in vec(any::<u8>(), 0..600)) {
        exercise(&msg);
    }

    /// Random bytes behind a plausible header (QDCOUNT 1, small counts),
    /// so that the question and record readers see more than the header.
    #[test]
    fn arbitrary_bodies_never_panic(
        id in any::<u16>(), flags in any::<u16>(), counts in any::<[u8; 3]>(), body in vec(any::<u8>(), 0..600)
    ) {
        let mut msg = Vec::with_capacity(HEADER_LEN + body.len());
        msg.extend_from_slice(&id.to_be_bytes());
        msg.extend_from_slice(&flags.to_be_bytes());
        msg.extend_from_slice(&[0, 1, 0, counts[0] % 4, 0, counts[1] % 4, 0, counts[2] % 4]);
        msg.extend_from_slice(&body);
        exercise(&msg);
    }

    #[test]
    fn mutated_messages_never_panic(s in msg_spec(true), muts in vec(mutation(), 1..5)) {
        let msg = mutate(build_hickory(&s), &muts);
        exercise(&msg);
        // Where both parsers accept the mutant they must read it alike.
        if let (Ok(ours), Ok(theirs)) = (Message::parse(&msg), HMessage::from_vec(&msg)) {
            agree(&msg, &ours, &theirs)?;
        }
    }

    #[test]
    fn agrees_with_hickory(s in msg_spec(true)) {
        let msg = build_hickory(&s);
        check_agreement(&msg)?;
        check_model(&msg, &s)?;
        exercise(&msg);
    }

    #[test]
    fn parse_build_reparse(s in msg_spec(false)) {
        let orig = build_hickory(&s);
        let m = Message::parse(&orig).unwrap();
        let built = check_roundtrip(&orig, &m);

        // hickory reads the rebuilt message, and reads it as it read the original
        // (EDNS options aside: `opt()` writes none).
        check_agreement(&built)?;
        let t1 = HMessage::from_vec(&orig).unwrap();
        let t2 = HMessage::from_vec(&built).unwrap();
        prop_assert_eq!(t1.header(), t2.header());
        prop_assert_eq!(t1.queries(), t2.queries());
        prop_assert_eq!(t1.answers(), t2.answers());
        prop_assert_eq!(t1.name_servers(), t2.name_servers());
        prop_assert_eq!(t1.additionals(), t2.additionals());
        prop_assert_eq!(
            t1.extensions().as_ref().map(|e| (e.max_payload(), e.flags().dnssec_ok, e.version())),
            t2.extensions().as_ref().map(|e| (e.max_payload(), e.flags().dnssec_ok, e.version()))
        );
        exercise(&built);
    }
}

// ---------------------------------------------------------------------------
// Hand-made hostile messages
// ---------------------------------------------------------------------------

fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [id, flags, qd, an, ns, ar] {
        h.extend_from_slice(&v.to_be_bytes());
    }
    h
}

/// Appends a record's fixed part and rdata after an owner already written.
fn rr_tail(msg: &mut Vec<u8>, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) {
    msg.extend_from_slice(&rtype.to_be_bytes());
    msg.extend_from_slice(&class.to_be_bytes());
    msg.extend_from_slice(&ttl.to_be_bytes());
    msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    msg.extend_from_slice(rdata);
}

fn ptr(to: usize) -> [u8; 2] {
    (0xc000 | to as u16).to_be_bytes()
}

/// Question "a." A IN at 12, then an answer (type NULL) whose rdata is a
/// chain of `chain` pointers, each to the one before it (the first to the
/// question name); then an answer whose owner points at chain element `at`.
fn pointer_chain(chain: usize, at: usize) -> (Vec<u8>, usize) {
    let mut m = header(1, 0x8000, 1, 2, 0, 0);
    m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
    m.extend_from_slice(&ptr(12));
    let rdata_start = m.len() + 10;
    let mut rdata = Vec::new();
    for k in 0..chain {
        let target = if k == 0 { 12 } else { rdata_start + 2 * (k - 1) };
        rdata.extend_from_slice(&ptr(target));
    }
    rr_tail(&mut m, 10, 1, 60, &rdata);
    let owner = m.len();
    m.extend_from_slice(&ptr(rdata_start + 2 * at));
    rr_tail(&mut m, 1, 1, 60, &[192, 0, 2, 1]);
    (m, owner)
}

#[test]
fn pointer_chain_of_200_is_refused() {
    let (m, owner) = pointer_chain(200, 199);
    // 1 (owner) + 200 (chain) pointers > MAX_POINTER_HOPS.
    assert_eq!(Name::parse(&m, owner), Err(WireError::PointerLoop));
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::PointerLoop)));
    exercise(&m);
    // hickory has no hop limit (each hop must land earlier, so it ends):
    // a legitimate difference; no compressor emits pointers to pointers.
    assert!(HMessage::from_vec(&m).is_ok());
}

#[test]
fn pointer_chain_at_the_hop_limit() {
    // Owner pointer + `at + 1` chain pointers.
    let (m, owner) = pointer_chain(200, MAX_POINTER_HOPS - 2);
    let n = Name::parse(&m, owner).unwrap();
    assert_eq!((n.wire_len(), n.display(&m).to_string()), (3, "a.".to_string()));
    assert_eq!(n.labels(&m).collect::<Vec<_>>(), vec![&b"a"[..]]);
    let mut out = [0u8; 255];
    assert_eq!(n.write_lowercase(&m, &mut out), Ok(3));
    let (m, owner) = pointer_chain(200, MAX_POINTER_HOPS - 1);
    assert_eq!(Name::parse(&m, owner), Err(WireError::PointerLoop));
}

#[test]
fn pointer_into_the_middle_of_a_label() {
    // Question name: one 5-byte label whose data happens to look like
    // labels: 05 | 02 'a' 'b' 01 'c' | 00.
    let mut base = header(7, 0x8000, 1, 1, 0, 0);
    base.extend_from_slice(&[5, 2, b'a', b'b', 1, b'c', 0, 0, 1, 0, 1]);
    // Owner -> 13 (the 02 inside the label): reads "ab.c.". Legal per RFC
    // 1035 (a pointer may name any earlier offset); hickory agrees.
    let mut m = base.clone();
    m.extend_from_slice(&ptr(13));
    rr_tail(&mut m, 1, 1, 300, &[10, 0, 0, 1]);
    let msg = Message::parse(&m).unwrap();
    let r = msg.sections.records(&m).next().unwrap();
    assert_eq!(r.name.display(&m).to_string(), "ab.c.");
    assert_eq!(msg.question.name.display(&m).to_string(), "\\002ab\\001c.");
    check_agreement(&m).unwrap();
    exercise(&m);
    // Owner -> 14 ('a' = 0x61: label type 01): refused by both.
    let mut m = base.clone();
    m.extend_from_slice(&ptr(14));
    rr_tail(&mut m, 1, 1, 300, &[10, 0, 0, 1]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadLabelType)));
    assert!(HMessage::from_vec(&m).is_err());
    exercise(&m);
}

/// Question: three 63-byte labels (193 bytes in wire form); answer owner:
/// one label of `first` bytes + a pointer to the question name.
fn long_name_through_compression(first: usize) -> Vec<u8> {
    let mut m = header(9, 0x8180, 1, 1, 0, 0);
    for c in [b'x', b'y', b'z'] {
        m.push(63);
        m.extend_from_slice(&[c; 63]);
    }
    m.push(0);
    m.extend_from_slice(&[0, 1, 0, 1]);
    m.push(first as u8);
    m.extend(std::iter::repeat_n(b'W', first));
    m.extend_from_slice(&ptr(12));
    rr_tail(&mut m, 1, 1, 60, &[10, 0, 0, 2]);
    m
}

#[test]
fn name_of_255_bytes_through_compression() {
    let m = long_name_through_compression(61); // 62 + 193 = 255
    let msg = Message::parse(&m).unwrap();
    let r = msg.sections.records(&m).next().unwrap();
    assert!(r.name.is_compressed());
    assert_eq!((r.name.wire_len(), r.name.len_in_place()), (255, 64));
    let mut out = [0u8; 255];
    assert_eq!(r.name.write_uncompressed(&m, &mut out), Ok(255));
    assert_eq!(Name::parse(&out, 0).unwrap().wire_len(), 255);
    check_agreement(&m).unwrap();
    exercise(&m);
    // And the builder copies it back (the copy is exactly 255 bytes).
    let built = rebuild(&m, &msg);
    check_agreement(&built).unwrap();
}

#[test]
fn name_of_256_bytes_through_compression() {
    let m = long_name_through_compression(62); // 63 + 193 = 256
    let owner = HEADER_LEN + 193 + 4;
    assert_eq!(Name::parse(&m, owner), Err(WireError::NameTooLong));
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::NameTooLong)));
    assert!(HMessage::from_vec(&m).is_err());
    exercise(&m);
}

#[test]
fn opt_version_1_is_parsed_and_reported() {
    let mut m = header(0x1234, 0x0100, 1, 0, 0, 1);
    m.extend_from_slice(&[3, b'w', b'w', b'w', 0, 0, 28, 0, 1]);
    m.push(0);
    // udp 1232, ext rcode 0, version 1, DO set; one option (65001, "hi").
    rr_tail(&mut m, 41, 1232, 0x0001_8000, &[0xfd, 0xe9, 0, 2, b'h', b'i']);
    let msg = Message::parse(&m).unwrap();
    let e = msg.edns().unwrap();
    assert_eq!((e.version, e.udp_size, e.dnssec_ok(), e.ext_rcode), (1, 1232, true, 0));
    assert_eq!(e.options(&m).map(Result::unwrap).collect::<Vec<_>>(), vec![(65001, &b"hi"[..])]);
    let theirs = HMessage::from_vec(&m).unwrap();
    assert_eq!(theirs.extensions().as_ref().unwrap().version(), 1);
    check_agreement(&m).unwrap();
    exercise(&m);
}

/// Pointers into the header are refused (hickory accepts them): a reply
/// rewrites the header (the client's ID, flags, counts), so the name would
/// read other bytes there. The fuzzer found a backend answer with an owner
/// name pointing at the ID, cached and served as another name.
#[test]
fn question_name_pointing_into_the_header() {
    // ID = 01 'a', flags high byte 00: a pointer to offset 0 would read "a.".
    let mut m = header(0x0161, 0x0000, 1, 0, 0, 0);
    m.extend_from_slice(&ptr(0));
    m.extend_from_slice(&[0, 1, 0, 1]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadPointer)));
    assert!(HMessage::from_vec(&m).is_ok(), "hickory reads it as a.");
    assert_eq!(Name::parse(&m, 12).map(|n| n.wire_len()), Ok(3), "outside a message the name parser has no floor");
    exercise(&m);

    // A pointer to QDCOUNT's high byte (00) would be the root name.
    let mut m = header(0x0161, 0x0000, 1, 0, 0, 0);
    m.extend_from_slice(&ptr(4));
    m.extend_from_slice(&[0, 1, 0, 1]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadPointer)));

    // In the data of a CNAME (and NS, PTR, DNAME, MX, SRV, SOA): refused.
    let mut m = header(1, 0x8180, 1, 1, 0, 0);
    m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
    m.extend_from_slice(&ptr(12));
    m.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 60, 0, 2]);
    m.extend_from_slice(&ptr(0));
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadPointer)));
    let last = m.len() - 1;
    m[last] = 12; // to the question's name: fine
    assert!(Message::parse(&m).is_ok());

    // A pointer to a flags byte 0x81 (QR|RD): refused too.
    let mut m = header(0x0161, 0x8100, 1, 0, 0, 0);
    m.extend_from_slice(&ptr(2));
    m.extend_from_slice(&[0, 1, 0, 1]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadPointer)));
    assert!(HMessage::from_vec(&m).is_err());

    // A pointer to itself at 12 / forward past the end: refused.
    for to in [12, 40] {
        let mut m = header(1, 0, 1, 0, 0, 0);
        m.extend_from_slice(&ptr(to));
        m.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadPointer)));
        exercise(&m);
    }
}

/// A pointer whose target label runs over the pointer itself: the name at
/// 19 is `c0 12`, and byte 18 (QCLASS low byte, 2) starts a 2-byte label
/// made of that very pointer, followed by the record's TYPE high byte (00).
/// Both parsers refuse it: the parts of a name may not overlap (hickory:
/// "label overlaps with other").
#[test]
fn label_overlapping_its_own_pointer() {
    let mut m = header(1, 0x8000, 1, 1, 0, 0);
    m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 2]); // qclass CS = 2
    m.extend_from_slice(&ptr(18));
    rr_tail(&mut m, 1, 2, 60, &[10, 0, 0, 3]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::PointerLoop)));
    assert!(HMessage::from_vec(&m).is_err());
    exercise(&m);
}

#[test]
fn opt_outside_additional_or_twice_or_not_root() {
    let q = |an: u16, ar: u16| {
        let mut m = header(1, 0, 1, an, 0, ar);
        m.extend_from_slice(&[1, b'a', 0, 0, 1, 0, 1]);
        m
    };
    let mut m = q(1, 0);
    m.push(0);
    rr_tail(&mut m, 41, 512, 0, &[]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadOpt)));
    let mut m = q(0, 2);
    for _ in 0..2 {
        m.push(0);
        rr_tail(&mut m, 41, 512, 0, &[]);
    }
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadOpt)));
    assert!(HMessage::from_vec(&m).is_err()); // "more than one edns record"
    let mut m = q(0, 1);
    m.extend_from_slice(&ptr(12));
    rr_tail(&mut m, 41, 512, 0, &[]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadOpt)));
    // An option running past the OPT rdata.
    let mut m = q(0, 1);
    m.push(0);
    rr_tail(&mut m, 41, 512, 0, &[0, 10, 0, 5, 1, 2]);
    assert_eq!(Message::parse(&m), Err(MessageError::Malformed(WireError::BadOption)));
    // hickory keeps the OPT but drops its options ("incomplete or poorly
    // formatted EDNS options"): we refuse the message instead.
    let theirs = HMessage::from_vec(&m).unwrap();
    assert!(theirs.extensions().as_ref().unwrap().options().as_ref().is_empty());
    exercise(&m);
}
