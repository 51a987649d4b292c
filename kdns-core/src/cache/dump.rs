//! The cache dump format: what one process writes at a clean stop and the
//! next loads at start (a warm restart).
//!
//! ```text
//! header (28 bytes, big endian)
//!   0  magic            "KDNSCDMP"
//!   8  version          u16 (VERSION)
//!  10  reserved         u16 (0)
//!  12  records          u32
//!  16  written          u64  wall clock, ns since the Unix epoch
//!  24  crc32c           u32  of bytes 0..24
//! records, each
//!   0  len              u32  of the body (RECORD_FIXED..=MAX_BODY)
//!   4  body
//!        0  expires_in  i64  ns from `written` to the end of the TTL
//!                            (negative: expired that long ago)
//!        8  age         u64  ns from the insert to `written`
//!       16  orig_ttl    u32  the TTL when stored, seconds
//!       20  flags       u8   the key's DO and CD bits (KeyFlags)
//!       21  hints       u8   bit 0: used since the last eviction scan
//!       22  answer           wire form as stored: ID 0, no OPT, the
//!                            TTLs as clamped when stored
//!   4+len crc32c        u32  of len and body
//! ```
//!
//! Lifetimes are relative to `written`, never a point on a monotonic
//! clock: the next process has another one. The reader checks everything:
//! a short, foreign, newer or damaged header is an error; a damaged or
//! truncated record ends the walk and the records not read are counted.

use core::fmt;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"KDNSCDMP";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 28;
/// Fixed part of a record body (before the answer).
pub const RECORD_FIXED: usize = 22;
/// Longest record body: the fixed part and a 64 KiB answer.
pub const MAX_BODY: usize = RECORD_FIXED + u16::MAX as usize;

/// Why a dump cannot be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpError {
    /// Shorter than the header.
    Truncated,
    /// Not a kdns cache dump.
    BadMagic,
    /// Written by a version of kdns with another format.
    Version(u16),
    /// The header's checksum does not match.
    HeaderChecksum,
    /// Written after `now` by this many nanoseconds: the wall clock went
    /// back, so the entries' age cannot be known.
    FromTheFuture(u64),
}

impl fmt::Display for DumpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DumpError::Truncated => write!(f, "truncated header"),
            DumpError::BadMagic => write!(f, "not a kdns cache dump"),
            DumpError::Version(v) => write!(f, "format version {v} (this kdns reads {VERSION})"),
            DumpError::HeaderChecksum => write!(f, "header checksum mismatch"),
            DumpError::FromTheFuture(ns) => {
                write!(f, "written {:.1} s in the future (the wall clock went back)", *ns as f64 / 1e9)
            }
        }
    }
}

impl std::error::Error for DumpError {}

/// A dump's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Records the writer put in.
    pub records: u32,
    /// When it was written: ns since the Unix epoch.
    pub written: u64,
}

impl Header {
    /// Reads and checks the header of `file`.
    pub fn parse(file: &[u8]) -> Result<Header, DumpError> {
        let h = file.get(..HEADER_LEN).ok_or(DumpError::Truncated)?;
        if h[..8] != MAGIC {
            return Err(DumpError::BadMagic);
        }
        let version = u16::from_be_bytes([h[8], h[9]]);
        if version != VERSION {
            return Err(DumpError::Version(version));
        }
        if crc32c(&h[..24]) != be32(&h[24..28]) {
            return Err(DumpError::HeaderChecksum);
        }
        Ok(Header { records: be32(&h[12..16]), written: be64(&h[16..24]) })
    }

    /// How long before `now_unix_ns` it was written.
    pub fn age(&self, now_unix_ns: u64) -> Result<u64, DumpError> {
        now_unix_ns.checked_sub(self.written).ok_or_else(|| DumpError::FromTheFuture(self.written - now_unix_ns))
    }
}

/// One record, as written: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// ns from `written` to the end of the TTL; negative when expired.
    pub expires_in: i64,
    /// ns from the insert to `written`.
    pub age: u64,
    /// The TTL when stored, seconds.
    pub orig_ttl: u32,
    /// The key's DO and CD bits.
    pub flags: u8,
    /// Bit 0: recently used.
    pub hints: u8,
    /// The answer as stored.
    pub answer: &'a [u8],
}

/// `Record::hints`: the entry was used since the last eviction scan.
pub const HINT_USED: u8 = 1;

impl Record<'_> {
    /// Appends the record to `out`. False (nothing written) if the answer
    /// is longer than a record can hold.
    pub fn write(&self, out: &mut Vec<u8>) -> bool {
        let body = RECORD_FIXED + self.answer.len();
        if body > MAX_BODY {
            return false;
        }
        let start = out.len();
        out.extend_from_slice(&(body as u32).to_be_bytes());
        out.extend_from_slice(&self.expires_in.to_be_bytes());
        out.extend_from_slice(&self.age.to_be_bytes());
        out.extend_from_slice(&self.orig_ttl.to_be_bytes());
        out.extend_from_slice(&[self.flags, self.hints]);
        out.extend_from_slice(self.answer);
        let crc = crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
        true
    }
}

/// Records exported from one cache, without a header: what a worker
/// hands to the thread that writes the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Export {
    /// The encoded records.
    pub bytes: Vec<u8>,
    /// How many.
    pub records: u32,
}

/// A whole dump: the header stamped `written` (ns since the Unix epoch,
/// the instant the parts' lifetimes are relative to) and every part's
/// records.
pub fn encode(written: u64, parts: &[Export]) -> Vec<u8> {
    let records = parts.iter().fold(0u32, |n, p| n.saturating_add(p.records));
    let mut out = Vec::with_capacity(HEADER_LEN + parts.iter().map(|p| p.bytes.len()).sum::<usize>());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&records.to_be_bytes());
    out.extend_from_slice(&written.to_be_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    for p in parts {
        out.extend_from_slice(&p.bytes);
    }
    out
}

/// Walks the records of a dump whose header was checked. Yields records
/// while they check out; on the first that does not (cut short, a bad
/// length, a checksum mismatch) or at the end, [`Records::unread`] says
/// how many of the header's count were not yielded.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
    yielded: u32,
    declared: u32,
    damaged: bool,
}

impl<'a> Records<'a> {
    /// The records of `file` (header included).
    pub fn new(file: &'a [u8]) -> Result<(Header, Records<'a>), DumpError> {
        let h = Header::parse(file)?;
        Ok((h, Records { rest: &file[HEADER_LEN..], yielded: 0, declared: h.records, damaged: false }))
    }

    /// Records the header counts that were not yielded (damaged or cut
    /// short), plus one for bytes left after the last record or for more
    /// records than the header counts.
    pub fn unread(&self) -> u64 {
        let missing = u64::from(self.declared.saturating_sub(self.yielded));
        let extra = missing == 0 && (self.yielded > self.declared || self.damaged || !self.rest.is_empty());
        missing + u64::from(extra)
    }

    /// Whether the walk stopped at a damaged record.
    pub fn damaged(&self) -> bool {
        self.damaged
    }

    fn take(&mut self) -> Option<Record<'a>> {
        let len = be32(self.rest.get(..4)?) as usize;
        if !(RECORD_FIXED..=MAX_BODY).contains(&len) {
            return None;
        }
        let framed = self.rest.get(..4 + len + 4)?;
        if crc32c(&framed[..4 + len]) != be32(&framed[4 + len..]) {
            return None;
        }
        let b = &framed[4..4 + len];
        self.rest = &self.rest[framed.len()..];
        Some(Record {
            expires_in: be64(&b[0..8]) as i64,
            age: be64(&b[8..16]),
            orig_ttl: be32(&b[16..20]),
            flags: b[20],
            hints: b[21],
            answer: &b[RECORD_FIXED..],
        })
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;
    fn next(&mut self) -> Option<Record<'a>> {
        if self.damaged || self.rest.is_empty() {
            return None;
        }
        match self.take() {
            Some(r) => {
                self.yielded = self.yielded.saturating_add(1);
                Some(r)
            }
            None => {
                self.damaged = true;
                None
            }
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be64(b: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[..8]);
    u64::from_be_bytes(w)
}

/// CRC-32C (Castagnoli), as iSCSI and ext4 use it (the `crc32c` crate:
/// the SSE 4.2 / ARMv8 instruction where there is one).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(n: u32) -> Vec<u8> {
        let mut e = Export::default();
        for i in 0..n {
            let answer = vec![i as u8; 40];
            assert!(Record { expires_in: -5, age: 7, orig_ttl: 60, flags: 1, hints: 0, answer: &answer }.write(&mut e.bytes));
            e.records += 1;
        }
        encode(1_000, &[e])
    }

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_trip() {
        let f = sample(3);
        let (h, mut recs) = Records::new(&f).unwrap();
        assert_eq!(h, Header { records: 3, written: 1_000 });
        let all: Vec<_> = recs.by_ref().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2], Record { expires_in: -5, age: 7, orig_ttl: 60, flags: 1, hints: 0, answer: &[2; 40] });
        assert_eq!((recs.unread(), recs.damaged()), (0, false));
        assert_eq!(h.age(1_500), Ok(500));
        assert_eq!(h.age(400), Err(DumpError::FromTheFuture(600)));
    }

    #[test]
    fn bad_headers_are_errors() {
        let f = sample(1);
        assert_eq!(Header::parse(&f[..27]), Err(DumpError::Truncated));
        let mut g = f.clone();
        g[0] = b'X';
        assert_eq!(Header::parse(&g), Err(DumpError::BadMagic));
        let mut g = f.clone();
        g[9] = 2;
        assert_eq!(Header::parse(&g), Err(DumpError::Version(2)));
        let mut g = f.clone();
        g[20] ^= 1;
        assert_eq!(Header::parse(&g), Err(DumpError::HeaderChecksum));
    }

    #[test]
    fn damage_ends_the_walk_and_is_counted() {
        let f = sample(4);
        let rec = 4 + RECORD_FIXED + 40 + 4;
        // A flipped byte in the second record: one read, three not.
        let mut g = f.clone();
        g[HEADER_LEN + rec + 10] ^= 0x40;
        let (_, mut recs) = Records::new(&g).unwrap();
        assert_eq!(recs.by_ref().count(), 1);
        assert_eq!((recs.unread(), recs.damaged()), (3, true));
        // Cut inside the last record.
        let (_, mut recs) = Records::new(&f[..f.len() - 3]).unwrap();
        assert_eq!(recs.by_ref().count(), 3);
        assert_eq!(recs.unread(), 1);
        // A hostile length.
        let mut g = f.clone();
        g[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let (_, mut recs) = Records::new(&g).unwrap();
        assert_eq!(recs.by_ref().count(), 0);
        assert_eq!(recs.unread(), 4);
        // Bytes after the last record.
        let mut g = f.clone();
        g.extend_from_slice(&[0; 3]);
        let (_, mut recs) = Records::new(&g).unwrap();
        assert_eq!(recs.by_ref().count(), 4);
        assert_eq!(recs.unread(), 1);
    }

    #[test]
    fn every_prefix_and_every_flipped_byte_is_handled() {
        let f = sample(3);
        for cut in 0..f.len() {
            if let Ok((_, recs)) = Records::new(&f[..cut]) {
                let _ = recs.count();
            }
        }
        for i in 0..f.len() {
            for bit in [0x01, 0x80] {
                let mut g = f.clone();
                g[i] ^= bit;
                if let Ok((_, mut recs)) = Records::new(&g) {
                    recs.by_ref().for_each(drop);
                    assert!(recs.damaged() || recs.unread() > 0, "byte {i}: damage goes unnoticed");
                }
            }
        }
    }
}
