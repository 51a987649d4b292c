//! Turning stored or received answers into the client's reply, and writing
//! the queries sent to backends. Direct byte writes: this is the hit path.

use crate::cache::KeyFlags;
use crate::wire::{flags, write_query, Class, Header, Message, MessageBuilder, OptSpec, Rcode, Rtype, HEADER_LEN, OPT_LEN};

/// A question given by parts (the pending table keeps no message).
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuestionParts<'a> {
    pub name: &'a [u8],
    pub qtype: Rtype,
    pub qclass: Class,
}

/// Makes the answer in `out[..len]` the client's: its ID, its RD and CD,
/// QR set, TC kept as it is (a backend's truncated answer stays truncated
/// so the client retries over TCP; cached answers never have it), the client's spelling of the name (`qname`, same
/// length as the stored one), and our OPT when the client sent one. The
/// caller left `OPT_LEN` bytes of room after `len` when `opt` is set.
#[inline]
pub(crate) fn finish(out: &mut [u8], len: usize, client_id: u16, client_flags: u16, qname: Option<&[u8]>, opt: Option<OptSpec>) -> usize {
    out[0..2].copy_from_slice(&client_id.to_be_bytes());
    let stored = u16::from_be_bytes([out[2], out[3]]);
    let keep = stored & !(flags::RD | flags::CD);
    let f = keep | flags::QR | (client_flags & (flags::RD | flags::CD));
    out[2..4].copy_from_slice(&f.to_be_bytes());
    if let Some(n) = qname {
        out[HEADER_LEN..HEADER_LEN + n.len()].copy_from_slice(n);
    }
    match opt {
        Some(o) => {
            let ttl: u32 = if o.dnssec_ok { 0x8000 } else { 0 };
            let rec = &mut out[len..len + OPT_LEN];
            rec[0] = 0;
            rec[1..3].copy_from_slice(&Rtype::OPT.0.to_be_bytes());
            rec[3..5].copy_from_slice(&o.udp_size.to_be_bytes());
            rec[5..9].copy_from_slice(&ttl.to_be_bytes());
            rec[9..11].fill(0);
            let ar = u16::from_be_bytes([out[10], out[11]]).wrapping_add(1);
            out[10..12].copy_from_slice(&ar.to_be_bytes());
            len + OPT_LEN
        }
        None => len,
    }
}

/// Writes the query sent to a backend: our ID, RD set, CD as the client
/// asked, the question with the client's spelling, and an OPT with our UDP
/// size and the client's DO bit.
pub(crate) fn upstream_query(
    out: &mut [u8],
    id: u16,
    client_flags: u16,
    q: &QuestionParts<'_>,
    udp_size: u16,
    key_flags: KeyFlags,
) -> Option<usize> {
    let opt = OptSpec { udp_size, ext_rcode: 0, dnssec_ok: key_flags.0 & KeyFlags::DO != 0 };
    write_query(out, id, flags::RD | (client_flags & flags::CD), q.name, q.qtype, q.qclass, Some(opt))
}

/// Copies a backend answer into `out` without its OPT record (ARCOUNT
/// adjusted). `None` if it does not fit.
pub(crate) fn copy_without_opt(answer: &[u8], msg: &Message, out: &mut [u8]) -> Option<usize> {
    let end = msg.sections.end;
    let Some(e) = msg.edns() else {
        out.get_mut(..end)?.copy_from_slice(&answer[..end]);
        return Some(end);
    };
    let opt_end = e.options_offset + e.options_len as usize;
    let len = end - (opt_end - e.offset);
    let out = out.get_mut(..len)?;
    out[..e.offset].copy_from_slice(&answer[..e.offset]);
    out[e.offset..].copy_from_slice(&answer[opt_end..end]);
    let ar = u16::from_be_bytes([out[10], out[11]]).saturating_sub(1);
    out[10..12].copy_from_slice(&ar.to_be_bytes());
    Some(len)
}

fn header_only(out: &mut [u8], q: &QuestionParts<'_>, id: u16, f: u16, rcode: Rcode, opt: Option<OptSpec>) -> Option<usize> {
    let mut b = MessageBuilder::new(out, usize::MAX).ok()?;
    {
        let mut h = b.header();
        h.set_id(id);
        h.set_flags(f);
        h.set_rcode(rcode);
    }
    b.question(q.name, q.qtype, q.qclass).ok()?;
    if let Some(o) = opt {
        b.opt(o).ok()?;
    }
    Some(b.finish())
}

/// A reply with TC set and no records, carrying the answer's rcode and
/// flags, for an answer too large for the client's UDP size.
pub(crate) fn truncated(
    out: &mut [u8],
    q: &QuestionParts<'_>,
    id: u16,
    client_flags: u16,
    answer: &[u8],
    opt: Option<OptSpec>,
) -> Option<usize> {
    let ah = Header::new_checked(answer).ok()?;
    let f = (ah.flags() & (flags::AA | flags::RA | flags::AD)) | flags::QR | flags::TC | (client_flags & (flags::RD | flags::CD));
    header_only(out, q, id, f, ah.rcode(), opt)
}

/// SERVFAIL to the client.
pub(crate) fn servfail(out: &mut [u8], q: &QuestionParts<'_>, id: u16, client_flags: u16, opt: Option<OptSpec>) -> Option<usize> {
    error(out, q, id, client_flags, Rcode::SERVFAIL, opt)
}

/// An empty reply with `rcode` (SERVFAIL, REFUSED) to a standard query.
pub(crate) fn error(
    out: &mut [u8],
    q: &QuestionParts<'_>,
    id: u16,
    client_flags: u16,
    rcode: Rcode,
    opt: Option<OptSpec>,
) -> Option<usize> {
    let f = flags::QR | flags::RA | (client_flags & (flags::RD | flags::CD));
    header_only(out, q, id, f, rcode, opt)
}
