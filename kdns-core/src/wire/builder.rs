//! Writing responses into a caller's buffer.

use super::header::{flags, Header, HEADER_LEN};
use super::message::Question;
use super::types::{Class, Opcode, Rcode, Rtype};
use super::WireError;

/// Length of an OPT record without options.
pub const OPT_LEN: usize = 11;

/// The sections records can be added to, in the order they must be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    /// Answer section.
    Answer,
    /// Authority section.
    Authority,
    /// Additional section.
    Additional,
}

/// The OPT record to append to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptSpec {
    /// Our UDP payload size.
    pub udp_size: u16,
    /// Upper 8 bits of the extended rcode.
    pub ext_rcode: u8,
    /// DO bit echoed from the query.
    pub dnssec_ok: bool,
}

/// Writes a message into a caller's buffer, never past `limit` bytes.
///
/// Records that would not fit are not written; the builder remembers that
/// it truncated so the caller can set TC. Space for an OPT record can be
/// reserved up front so that it always fits.
#[derive(Debug)]
pub struct MessageBuilder<'a> {
    buf: &'a mut [u8],
    len: usize,
    limit: usize,
    reserved: usize,
    section: Section,
    counts: [u16; 3],
    truncated: bool,
}

impl<'a> MessageBuilder<'a> {
    /// Starts a message with a zeroed header. `limit` is the most bytes the
    /// message may take (e.g. the client's UDP size); it is capped by the
    /// buffer's length.
    pub fn new(buf: &'a mut [u8], limit: usize) -> Result<Self, WireError> {
        let limit = limit.min(buf.len());
        if limit < HEADER_LEN {
            return Err(WireError::NoSpace);
        }
        buf[..HEADER_LEN].fill(0);
        Ok(MessageBuilder { buf, len: HEADER_LEN, limit, reserved: 0, section: Section::Answer, counts: [0; 3], truncated: false })
    }

    /// The header, to set ID, flags and rcode.
    pub fn header(&mut self) -> Header<&mut [u8]> {
        // The buffer holds at least HEADER_LEN bytes (checked in `new`).
        Header::new_checked(&mut self.buf[..HEADER_LEN]).expect("header space checked in new")
    }

    /// Keeps `n` bytes free at the end (for an OPT record).
    pub fn reserve(&mut self, n: usize) -> Result<(), WireError> {
        if self.len.saturating_add(self.reserved).saturating_add(n) > self.limit {
            return Err(WireError::NoSpace);
        }
        self.reserved += n;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing but the header was written.
    pub fn is_empty(&self) -> bool {
        self.len == HEADER_LEN
    }

    /// Whether a record was left out for lack of space.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    fn room(&self) -> usize {
        self.limit - self.len - self.reserved
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// Writes the question: `name` in uncompressed wire form.
    pub fn question(&mut self, name: &[u8], qtype: Rtype, qclass: Class) -> Result<(), WireError> {
        if self.len != HEADER_LEN || name.len() + 4 > self.room() {
            return Err(WireError::NoSpace);
        }
        self.put(name);
        self.put(&qtype.0.to_be_bytes());
        self.put(&qclass.0.to_be_bytes());
        self.header().set_qdcount(1);
        Ok(())
    }

    /// Copies the question `q` of message `msg` as it was written (the
    /// client's spelling of the name kept).
    pub fn copy_question(&mut self, msg: &[u8], q: &Question) -> Result<(), WireError> {
        let mut name = [0u8; 255];
        let n = q.name.write_uncompressed(msg, &mut name)?;
        self.question(&name[..n], q.qtype, q.qclass)
    }

    /// Adds a record whose owner is a compression pointer to `owner_offset`
    /// (12 for the question name). Returns `Ok(false)` and marks the message
    /// truncated if it does not fit.
    pub fn record_at(
        &mut self,
        section: Section,
        owner_offset: u16,
        rtype: Rtype,
        class: Class,
        ttl: u32,
        rdata: &[u8],
    ) -> Result<bool, WireError> {
        let ptr = (0xc000 | (owner_offset & 0x3fff)).to_be_bytes();
        self.record(section, &ptr, rtype, class, ttl, rdata)
    }

    /// Adds a record with the owner given in wire form (may end in a
    /// compression pointer). Returns `Ok(false)` and marks the message
    /// truncated if it does not fit. Sections must be filled in order.
    pub fn record(
        &mut self,
        section: Section,
        owner: &[u8],
        rtype: Rtype,
        class: Class,
        ttl: u32,
        rdata: &[u8],
    ) -> Result<bool, WireError> {
        if section < self.section || rdata.len() > u16::MAX as usize {
            return Err(WireError::NoSpace);
        }
        self.section = section;
        if self.truncated || owner.len() + 10 + rdata.len() > self.room() {
            self.truncated = true;
            return Ok(false);
        }
        self.put(owner);
        self.put(&rtype.0.to_be_bytes());
        self.put(&class.0.to_be_bytes());
        self.put(&ttl.to_be_bytes());
        self.put(&(rdata.len() as u16).to_be_bytes());
        self.put(rdata);
        let i = section as usize;
        self.counts[i] = self.counts[i].saturating_add(1);
        Ok(true)
    }

    /// Appends an OPT record, using space reserved earlier if any.
    pub fn opt(&mut self, spec: OptSpec) -> Result<(), WireError> {
        self.reserved = self.reserved.saturating_sub(OPT_LEN);
        if OPT_LEN > self.room() {
            return Err(WireError::NoSpace);
        }
        self.section = Section::Additional;
        let ttl = (u32::from(spec.ext_rcode) << 24) | if spec.dnssec_ok { 0x8000 } else { 0 };
        self.put(&[0]);
        self.put(&Rtype::OPT.0.to_be_bytes());
        self.put(&spec.udp_size.to_be_bytes());
        self.put(&ttl.to_be_bytes());
        self.put(&[0, 0]);
        let ar = &mut self.counts[Section::Additional as usize];
        *ar = ar.saturating_add(1);
        Ok(())
    }

    /// Writes the section counts (and TC if truncated) and returns the length.
    pub fn finish(mut self) -> usize {
        let [an, ns, ar] = self.counts;
        let truncated = self.truncated;
        let mut h = self.header();
        h.set_ancount(an);
        h.set_nscount(ns);
        h.set_arcount(ar);
        if truncated {
            h.set_flag(flags::TC, true);
        }
        self.len
    }
}

/// Writes a reply with no records to the query `query`: its ID, opcode,
/// RD and CD, QR set, RA set for a standard query only (recursion is what
/// kdns offers for QUERY; a NOTIMP to UPDATE or NOTIFY claims nothing),
/// the given rcode, the question copied as the client wrote it (when it
/// could be read), and an OPT record when the query had one (`opt`; the
/// extended rcode bits are filled from `rcode`).
pub fn write_empty_reply(
    query: &[u8],
    question: Option<&Question>,
    opt: Option<OptSpec>,
    rcode: Rcode,
    out: &mut [u8],
) -> Result<usize, WireError> {
    let qh = Header::new_checked(query)?;
    let mut b = MessageBuilder::new(out, usize::MAX)?;
    let keep = qh.flags() & (flags::OPCODE_MASK | flags::RD | flags::CD);
    {
        let mut h = b.header();
        h.set_id(qh.id());
        let ra = if qh.opcode() == Opcode::QUERY { flags::RA } else { 0 };
        h.set_flags(keep | flags::QR | ra);
        h.set_rcode(rcode);
    }
    if let Some(q) = question {
        b.copy_question(query, q)?;
    }
    if let Some(mut spec) = opt {
        spec.ext_rcode = rcode.extended_bits();
        b.opt(spec)?;
    }
    Ok(b.finish())
}

/// Writes a standard query: `id`, `header_flags` (RD, CD as wanted), one
/// question (`qname` in wire form, uncompressed) and, with `opt`, an OPT
/// record. Direct byte writes (the engine sends one per miss). `None` when
/// `out` is too short.
pub fn write_query(
    out: &mut [u8],
    id: u16,
    header_flags: u16,
    qname: &[u8],
    qtype: Rtype,
    qclass: Class,
    opt: Option<OptSpec>,
) -> Option<usize> {
    let opt_len = if opt.is_some() { OPT_LEN } else { 0 };
    let len = HEADER_LEN + qname.len() + 4 + opt_len;
    let out = out.get_mut(..len)?;
    out[0..2].copy_from_slice(&id.to_be_bytes());
    out[2..4].copy_from_slice(&header_flags.to_be_bytes());
    out[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, u8::from(opt.is_some())]);
    let mut at = HEADER_LEN;
    out[at..at + qname.len()].copy_from_slice(qname);
    at += qname.len();
    out[at..at + 2].copy_from_slice(&qtype.0.to_be_bytes());
    out[at + 2..at + 4].copy_from_slice(&qclass.0.to_be_bytes());
    at += 4;
    if let Some(o) = opt {
        let ttl: u32 = (u32::from(o.ext_rcode) << 24) | if o.dnssec_ok { 0x8000 } else { 0 };
        out[at] = 0;
        out[at + 1..at + 3].copy_from_slice(&Rtype::OPT.0.to_be_bytes());
        out[at + 3..at + 5].copy_from_slice(&o.udp_size.to_be_bytes());
        out[at + 5..at + 9].copy_from_slice(&ttl.to_be_bytes());
        out[at + 9..at + 11].fill(0);
    }
    Some(len)
}
