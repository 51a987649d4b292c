//! Questions, resource records and the EDNS(0) OPT record, read in place.

use super::header::{Header, HEADER_LEN};
use super::name::Name;
use super::types::{Class, Rtype};
use super::WireError;

#[inline(always)]
fn get16(msg: &[u8], at: usize) -> Result<u16, WireError> {
    match msg.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(WireError::Truncated),
    }
}

#[inline(always)]
fn get32(msg: &[u8], at: usize) -> Result<u32, WireError> {
    match msg.get(at..at + 4) {
        Some(b) => Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(WireError::Truncated),
    }
}

/// A question (RFC 1035 4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Question {
    /// The name asked about.
    pub name: Name,
    /// QTYPE.
    pub qtype: Rtype,
    /// QCLASS.
    pub qclass: Class,
}

impl Question {
    /// Reads the question at `pos`.
    #[inline]
    pub fn parse(msg: &[u8], pos: usize) -> Result<Question, WireError> {
        let name = Name::parse_above(msg, pos, HEADER_LEN)?;
        let at = name.end();
        Ok(Question { name, qtype: Rtype(get16(msg, at)?), qclass: Class(get16(msg, at + 2)?) })
    }

    /// The position just after the question.
    #[inline]
    pub fn end(&self) -> usize {
        self.name.end() + 4
    }
}

/// A resource record, fields read, RDATA left in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Owner name.
    pub name: Name,
    /// TYPE.
    pub rtype: Rtype,
    /// CLASS (for OPT: the requestor's UDP payload size).
    pub class: Class,
    /// TTL (for OPT: extended rcode, version and flags).
    pub ttl: u32,
    /// Where the TTL field sits in the message (so it can be patched).
    pub ttl_offset: usize,
    /// Where RDATA starts.
    pub rdata_offset: usize,
    /// RDLENGTH.
    pub rdlen: u16,
}

impl Record {
    /// Reads the record at `pos`; RDATA must fit in the message.
    #[inline]
    pub fn parse(msg: &[u8], pos: usize) -> Result<Record, WireError> {
        let name = Name::parse_above(msg, pos, HEADER_LEN)?;
        let at = name.end();
        let fixed = msg.get(at..at + 10).ok_or(WireError::Truncated)?;
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]);
        let rdata_offset = at + 10;
        if rdata_offset + rdlen as usize > msg.len() {
            return Err(WireError::BadRdLength);
        }
        // Names in the data of the common types may be compressed too: they
        // must be valid, end within the data (the bytes after a record may
        // be an OPT that a reply leaves out) and not point into the header.
        let rdata_end = rdata_offset + rdlen as usize;
        let name_in = |at: usize| -> Result<usize, WireError> {
            if at >= rdata_end {
                return Err(WireError::BadRdLength);
            }
            let n = Name::parse_above(&msg[..rdata_end], at, HEADER_LEN)?;
            Ok(n.end())
        };
        match u16::from_be_bytes([fixed[0], fixed[1]]) {
            2 | 5 | 12 | 39 => {
                name_in(rdata_offset)?;
            }
            15 => {
                name_in(rdata_offset + 2)?;
            }
            33 => {
                name_in(rdata_offset + 6)?;
            }
            6 => {
                let m = name_in(rdata_offset)?;
                if name_in(m)? + 20 > rdata_end {
                    return Err(WireError::BadRdLength);
                }
            }
            _ => {}
        }
        Ok(Record {
            name,
            rtype: Rtype(u16::from_be_bytes([fixed[0], fixed[1]])),
            class: Class(u16::from_be_bytes([fixed[2], fixed[3]])),
            ttl: u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]),
            ttl_offset: at + 4,
            rdata_offset,
            rdlen,
        })
    }

    /// The position just after the record.
    #[inline]
    pub fn end(&self) -> usize {
        self.rdata_offset + self.rdlen as usize
    }

    /// The RDATA bytes.
    pub fn rdata<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        msg.get(self.rdata_offset..self.end()).unwrap_or(&[])
    }

    /// For an SOA record: the MINIMUM field (the negative-caching TTL,
    /// RFC 2308), read after the two names in RDATA.
    pub fn soa_minimum(&self, msg: &[u8]) -> Result<u32, WireError> {
        let mname = Name::parse_above(msg, self.rdata_offset, HEADER_LEN)?;
        let rname = Name::parse_above(msg, mname.end(), HEADER_LEN)?;
        let at = rname.end() + 16;
        if at + 4 > self.end() {
            return Err(WireError::BadRdLength);
        }
        get32(msg, at)
    }
}

/// The DO bit in the OPT flags (RFC 3225).
pub const EDNS_DO: u16 = 0x8000;

/// An EDNS(0) OPT record (RFC 6891).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    /// Requestor's UDP payload size (values below 512 mean 512).
    pub udp_size: u16,
    /// Upper 8 bits of the extended rcode.
    pub ext_rcode: u8,
    /// EDNS version.
    pub version: u8,
    /// Flags (DO is the top bit).
    pub flags: u16,
    /// Where the OPT record starts.
    pub offset: usize,
    /// Where the options (RDATA) start.
    pub options_offset: usize,
    /// Length of the options.
    pub options_len: u16,
}

impl Edns {
    fn from_record(r: &Record, offset: usize, msg: &[u8]) -> Result<Edns, WireError> {
        if !r.name.is_root() {
            return Err(WireError::BadOpt);
        }
        let e = Edns {
            udp_size: r.class.0,
            ext_rcode: (r.ttl >> 24) as u8,
            version: (r.ttl >> 16) as u8,
            flags: r.ttl as u16,
            offset,
            options_offset: r.rdata_offset,
            options_len: r.rdlen,
        };
        // Walk the options once so that later readers can trust them.
        for opt in e.options(msg) {
            opt?;
        }
        Ok(e)
    }

    /// The DO (DNSSEC OK) bit.
    #[inline]
    pub fn dnssec_ok(&self) -> bool {
        self.flags & EDNS_DO != 0
    }

    /// The payload size to honour: at least 512.
    #[inline]
    pub fn effective_udp_size(&self) -> u16 {
        self.udp_size.max(512)
    }

    /// The options as `(code, data)`.
    pub fn options<'a>(&self, msg: &'a [u8]) -> EdnsOptions<'a> {
        let end = self.options_offset + self.options_len as usize;
        EdnsOptions { msg: msg.get(..end).unwrap_or(&[]), pos: self.options_offset }
    }
}

/// Iterator over EDNS options; yields an error once if one overruns.
#[derive(Debug, Clone)]
pub struct EdnsOptions<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for EdnsOptions<'a> {
    type Item = Result<(u16, &'a [u8]), WireError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.msg.len() {
            return None;
        }
        let item = (|| {
            let code = get16(self.msg, self.pos).map_err(|_| WireError::BadOption)?;
            let len = get16(self.msg, self.pos + 2).map_err(|_| WireError::BadOption)? as usize;
            let data = self.msg.get(self.pos + 4..self.pos + 4 + len).ok_or(WireError::BadOption)?;
            Ok((code, data))
        })();
        match item {
            Ok((code, data)) => {
                self.pos += 4 + data.len();
                Some(Ok((code, data)))
            }
            Err(e) => {
                self.pos = self.msg.len();
                Some(Err(e))
            }
        }
    }
}

/// Where the sections of a message start and end, every record checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sections {
    /// End of the question section = start of the answer section.
    pub answer: usize,
    /// Start of the authority section.
    pub authority: usize,
    /// Start of the additional section.
    pub additional: usize,
    /// End of the last record.
    pub end: usize,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
}

/// Walks `count` records from `pos`, checking each; returns the end.
fn walk(msg: &[u8], mut pos: usize, count: u16, mut each: impl FnMut(&Record, usize) -> Result<(), WireError>) -> Result<usize, WireError> {
    for _ in 0..count {
        let r = Record::parse(msg, pos)?;
        each(&r, pos)?;
        pos = r.end();
    }
    Ok(pos)
}

impl Sections {
    /// Checks every section of `msg` after a question section that ends at
    /// `answer`. OPT is found in the additional section; an OPT elsewhere,
    /// a second OPT, or an OPT not owned by the root is [`WireError::BadOpt`].
    pub fn parse(msg: &[u8], answer: usize) -> Result<Sections, WireError> {
        let h = Header::new_checked(msg)?;
        let no_opt = |r: &Record, _| if r.rtype == Rtype::OPT { Err(WireError::BadOpt) } else { Ok(()) };
        let authority = walk(msg, answer, h.ancount(), no_opt)?;
        let additional = walk(msg, authority, h.nscount(), no_opt)?;
        let mut edns = None;
        let end = walk(msg, additional, h.arcount(), |r, at| {
            if r.rtype == Rtype::OPT {
                if edns.is_some() {
                    return Err(WireError::BadOpt);
                }
                edns = Some(Edns::from_record(r, at, msg)?);
            }
            Ok(())
        })?;
        Ok(Sections { answer, authority, additional, end, edns })
    }

    /// The records of the answer, authority and additional sections, in order.
    pub fn records<'a>(&self, msg: &'a [u8]) -> Records<'a> {
        let h = Header::new_checked(msg).ok();
        let n = h.map_or(0, |h| h.ancount() as u32 + h.nscount() as u32 + h.arcount() as u32);
        Records { msg, pos: self.answer, left: n }
    }
}

/// Iterator over records (already checked by [`Sections::parse`]).
#[derive(Debug, Clone)]
pub struct Records<'a> {
    msg: &'a [u8],
    pos: usize,
    left: u32,
}

impl Iterator for Records<'_> {
    type Item = Record;
    fn next(&mut self) -> Option<Record> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let r = Record::parse(self.msg, self.pos).ok()?;
        self.pos = r.end();
        Some(r)
    }
}

/// A message with exactly one question, every record checked: what the
/// engine reads from clients and backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The question.
    pub question: Question,
    /// Section boundaries and OPT.
    pub sections: Sections,
}

/// Why a message that has a readable header was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// QDCOUNT is not 1.
    QuestionCount,
    /// The question or a record is malformed.
    Malformed(WireError),
}

impl Message {
    /// Parses a message with exactly one question. The header must already
    /// be known to be readable (12 bytes).
    pub fn parse(msg: &[u8]) -> Result<Message, MessageError> {
        let h = Header::new_checked(msg).map_err(MessageError::Malformed)?;
        if h.qdcount() != 1 {
            return Err(MessageError::QuestionCount);
        }
        let question = Question::parse(msg, HEADER_LEN).map_err(MessageError::Malformed)?;
        let answer = question.end();
        // Fast path for the shape of nearly every query: no answer or
        // authority records, at most an OPT in the additional section.
        if h.ancount() == 0 && h.nscount() == 0 && h.arcount() <= 1 {
            let (end, edns) = match h.arcount() {
                0 => (answer, None),
                _ => {
                    let r = Record::parse(msg, answer).map_err(MessageError::Malformed)?;
                    let edns = match r.rtype {
                        Rtype::OPT => Some(Edns::from_record(&r, answer, msg).map_err(MessageError::Malformed)?),
                        _ => None,
                    };
                    (r.end(), edns)
                }
            };
            let sections = Sections { answer, authority: answer, additional: answer, end, edns };
            return Ok(Message { question, sections });
        }
        let sections = Sections::parse(msg, answer).map_err(MessageError::Malformed)?;
        Ok(Message { question, sections })
    }

    /// The OPT record, if any.
    #[inline]
    pub fn edns(&self) -> Option<&Edns> {
        self.sections.edns.as_ref()
    }
}
