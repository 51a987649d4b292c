//! Domain names, walked in place.
//!
//! A [`Name`] is a position in a message plus what validating it taught us
//! (its uncompressed length, whether it is compressed). Nothing is copied:
//! labels are read from the message on demand.
//!
//! Compression pointers (RFC 1035 4.1.4) must point strictly before the
//! start of the run of labels that contains them. Every compressor only
//! points at names it wrote earlier, so valid messages always pass, and the
//! rule makes loops impossible: each jump lands before every byte read so
//! far. A hop limit bounds the work anyway.

use core::fmt;

use super::WireError;

/// Longest name in uncompressed wire form, root label included (RFC 1035 2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Longest label.
pub const MAX_LABEL_LEN: usize = 63;
/// Most compression pointers followed in one name. A 255-byte name has at
/// most 127 labels, so a valid name never needs more.
pub const MAX_POINTER_HOPS: usize = 127;

/// A validated name inside a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name {
    start: usize,
    end: usize,
    wire_len: u16,
    compressed: bool,
}

impl Name {
    /// Validates the name that starts at `start` in `msg`.
    pub fn parse(msg: &[u8], start: usize) -> Result<Name, WireError> {
        Self::parse_above(msg, start, 0)
    }

    /// [`Name::parse`] for a name in a DNS message: no compression pointer
    /// may point below `floor` (the header's length). A pointer into the
    /// header would read other bytes once the header is rewritten (a reply
    /// carries the client's ID, flags and counts), so such a message is
    /// rejected as it arrives.
    pub fn parse_above(msg: &[u8], start: usize, floor: usize) -> Result<Name, WireError> {
        let mut pos = start;
        let mut segment_start = start;
        // After a jump, the labels read must end before the run that held
        // the pointer: the parts of a name never overlap (as hickory-proto
        // also requires).
        let mut limit = usize::MAX;
        let mut end = None;
        let mut wire_len = 1usize; // the root label
        let mut hops = 0;
        loop {
            let len = *msg.get(pos).ok_or(WireError::Truncated)? as usize;
            if pos >= limit {
                return Err(WireError::PointerLoop);
            }
            match len & 0xc0 {
                0x00 => {
                    if len == 0 {
                        let end = end.unwrap_or(pos + 1);
                        return Ok(Name { start, end, wire_len: wire_len as u16, compressed: hops > 0 });
                    }
                    if pos + 1 + len > limit {
                        return Err(WireError::PointerLoop);
                    }
                    wire_len += len + 1;
                    if wire_len > MAX_NAME_LEN {
                        return Err(WireError::NameTooLong);
                    }
                    pos += len + 1;
                    if pos >= msg.len() {
                        return Err(WireError::Truncated);
                    }
                }
                0xc0 => {
                    let lo = *msg.get(pos + 1).ok_or(WireError::Truncated)? as usize;
                    if pos + 1 >= limit {
                        return Err(WireError::PointerLoop);
                    }
                    let target = ((len & 0x3f) << 8) | lo;
                    if target >= pos || target < floor {
                        return Err(WireError::BadPointer);
                    }
                    if target >= segment_start {
                        return Err(WireError::PointerLoop);
                    }
                    hops += 1;
                    if hops > MAX_POINTER_HOPS {
                        return Err(WireError::PointerLoop);
                    }
                    end.get_or_insert(pos + 2);
                    limit = segment_start;
                    pos = target;
                    segment_start = target;
                }
                _ => return Err(WireError::BadLabelType),
            }
        }
    }

    /// Where the name starts in its message.
    #[inline]
    pub fn start(&self) -> usize {
        self.start
    }

    /// The position just after the name in its message (after the first
    /// compression pointer, if any).
    #[inline]
    pub fn end(&self) -> usize {
        self.end
    }

    /// Bytes the name takes in place (pointer included).
    #[inline]
    pub fn len_in_place(&self) -> usize {
        self.end - self.start
    }

    /// Length in uncompressed wire form, root label included (1..=255).
    #[inline]
    pub fn wire_len(&self) -> usize {
        self.wire_len as usize
    }

    /// Whether the name uses a compression pointer.
    #[inline]
    pub fn is_compressed(&self) -> bool {
        self.compressed
    }

    /// Whether this is the root name.
    #[inline]
    pub fn is_root(&self) -> bool {
        self.wire_len == 1
    }

    /// The labels, leftmost first, root label excluded. `msg` must be the
    /// message the name was parsed from; with another message the iterator
    /// ends early rather than panicking.
    pub fn labels<'a>(&self, msg: &'a [u8]) -> Labels<'a> {
        Labels { msg, pos: self.start, hops: 0 }
    }

    /// Copies the name in uncompressed wire form into `out`, lower-casing
    /// ASCII letters. Returns the length written.
    pub fn write_lowercase(&self, msg: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
        self.write_with(msg, out, |b| b.to_ascii_lowercase())
    }

    /// Copies the name in uncompressed wire form into `out`, case kept.
    pub fn write_uncompressed(&self, msg: &[u8], out: &mut [u8]) -> Result<usize, WireError> {
        self.write_with(msg, out, |b| b)
    }

    #[inline]
    fn write_with(&self, msg: &[u8], out: &mut [u8], map: impl Fn(u8) -> u8) -> Result<usize, WireError> {
        if out.len() < self.wire_len() {
            return Err(WireError::NoSpace);
        }
        if !self.compressed {
            // Fast path: the whole name sits in place.
            let src = msg.get(self.start..self.end).ok_or(WireError::Truncated)?;
            for (o, &b) in out.iter_mut().zip(src) {
                *o = map(b);
            }
            return Ok(src.len());
        }
        let mut at = 0;
        for label in self.labels(msg) {
            let n = label.len();
            let dst = out.get_mut(at..at + 1 + n).ok_or(WireError::NoSpace)?;
            dst[0] = n as u8;
            for (o, &b) in dst[1..].iter_mut().zip(label) {
                *o = map(b);
            }
            at += 1 + n;
        }
        *out.get_mut(at).ok_or(WireError::NoSpace)? = 0;
        Ok(at + 1)
    }

    /// Whether two names are equal ignoring ASCII case (RFC 4343).
    pub fn eq_ignore_case(&self, msg: &[u8], other: &Name, other_msg: &[u8]) -> bool {
        if self.wire_len != other.wire_len {
            return false;
        }
        let mut a = self.labels(msg);
        let mut b = other.labels(other_msg);
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => {}
                _ => return false,
            }
        }
    }

    /// Whether the name equals the uncompressed wire-form name `wire`,
    /// ignoring ASCII case.
    pub fn eq_wire_ignore_case(&self, msg: &[u8], wire: &[u8]) -> bool {
        if self.wire_len() != wire.len() {
            return false;
        }
        if !self.compressed {
            return msg.get(self.start..self.end).is_some_and(|s| s.eq_ignore_ascii_case(wire));
        }
        let mut at = 0;
        for label in self.labels(msg) {
            let n = label.len();
            match wire.get(at..at + 1 + n) {
                Some(w) if w[0] as usize == n && w[1..].eq_ignore_ascii_case(label) => at += 1 + n,
                _ => return false,
            }
        }
        wire.get(at) == Some(&0)
    }

    /// A displayable form (`www.example.com.`), for logs and tests.
    pub fn display<'a>(&self, msg: &'a [u8]) -> DisplayName<'a> {
        DisplayName { msg, name: *self }
    }
}

/// Iterator over the labels of a [`Name`].
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    msg: &'a [u8],
    pos: usize,
    hops: usize,
}

impl<'a> Iterator for Labels<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let len = *self.msg.get(self.pos)? as usize;
            match len & 0xc0 {
                0x00 if len == 0 => return None,
                0x00 => {
                    let label = self.msg.get(self.pos + 1..self.pos + 1 + len)?;
                    self.pos += 1 + len;
                    return Some(label);
                }
                0xc0 => {
                    self.hops += 1;
                    if self.hops > MAX_POINTER_HOPS {
                        return None;
                    }
                    let lo = *self.msg.get(self.pos + 1)? as usize;
                    self.pos = ((len & 0x3f) << 8) | lo;
                }
                _ => return None,
            }
        }
    }
}

/// See [`Name::display`].
#[derive(Debug)]
pub struct DisplayName<'a> {
    msg: &'a [u8],
    name: Name,
}

impl fmt::Display for DisplayName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_root() {
            return f.write_str(".");
        }
        for label in self.name.labels(self.msg) {
            for &b in label {
                match b {
                    b'.' | b'\\' => write!(f, "\\{}", b as char)?,
                    0x21..=0x7e => write!(f, "{}", b as char)?,
                    _ => write!(f, "\\{:03}", b)?,
                }
            }
            f.write_str(".")?;
        }
        Ok(())
    }
}

/// Writes the presentation name `text` (`www.example.com`, trailing dot
/// optional, no escapes) into `out` in wire form. For configuration and
/// tests, not for the query path.
pub fn encode_name(text: &str, out: &mut [u8]) -> Result<usize, WireError> {
    let text = text.strip_suffix('.').unwrap_or(text);
    let mut at = 0;
    if !text.is_empty() {
        for label in text.split('.') {
            let n = label.len();
            if n == 0 || n > MAX_LABEL_LEN {
                return Err(WireError::LabelTooLong);
            }
            let dst = out.get_mut(at..at + 1 + n).ok_or(WireError::NoSpace)?;
            dst[0] = n as u8;
            dst[1..].copy_from_slice(label.as_bytes());
            at += 1 + n;
        }
    }
    if at + 1 > MAX_NAME_LEN {
        return Err(WireError::NameTooLong);
    }
    *out.get_mut(at).ok_or(WireError::NoSpace)? = 0;
    Ok(at + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::name_wire as wire;

    /// A name in wire form from `(length, byte)` labels and the root,
    /// without the checks of `encode_name` (to build invalid names).
    fn raw_name(labels: &[(u8, u8)]) -> Vec<u8> {
        let mut v = Vec::new();
        for &(n, b) in labels {
            v.push(n);
            v.resize(v.len() + usize::from(n), b);
        }
        v.push(0);
        v
    }

    #[test]
    fn plain_name() {
        let msg = wire("www.Example.com");
        let n = Name::parse(&msg, 0).unwrap();
        assert_eq!((n.start(), n.end(), n.wire_len(), n.is_compressed()), (0, 17, 17, false));
        assert_eq!(n.display(&msg).to_string(), "www.Example.com.");
        let mut out = [0u8; 255];
        let len = n.write_lowercase(&msg, &mut out).unwrap();
        assert_eq!(&out[..len], &wire("www.example.com")[..]);
        assert!(n.eq_wire_ignore_case(&msg, &wire("WWW.EXAMPLE.COM")));
        assert!(!n.eq_wire_ignore_case(&msg, &wire("www.example.org")));
    }

    #[test]
    fn root_name() {
        let n = Name::parse(&[0], 0).unwrap();
        assert!(n.is_root());
        assert_eq!(n.display(&[0]).to_string(), ".");
    }

    #[test]
    fn compressed_name_follows_pointer_backwards() {
        // "example.com" at 0, then "www" + pointer to 0 at 13.
        let mut msg = wire("example.com");
        msg.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 0]);
        let n = Name::parse(&msg, 13).unwrap();
        assert!(n.is_compressed());
        assert_eq!((n.end(), n.len_in_place(), n.wire_len()), (19, 6, 17));
        assert_eq!(n.display(&msg).to_string(), "www.example.com.");
        let mut out = [0u8; 255];
        let len = n.write_uncompressed(&msg, &mut out).unwrap();
        assert_eq!(&out[..len], &wire("www.example.com")[..]);
        let plain = wire("WWW.example.COM");
        let p = Name::parse(&plain, 0).unwrap();
        assert!(n.eq_ignore_case(&msg, &p, &plain));
        assert!(n.eq_wire_ignore_case(&msg, &plain));
    }

    #[test]
    fn rejects_malformed_names() {
        let cases: &[(&[u8], WireError)] = &[
            (&[], WireError::Truncated),
            (&[3, b'a', b'b'], WireError::Truncated),
            (&[3, b'a', b'b', b'c'], WireError::Truncated),
            (&[0xc0], WireError::Truncated),
            (&[0xc0, 0x00], WireError::BadPointer),             // points at itself
            (&[0xc0, 0x05, 0, 0, 0, 0], WireError::BadPointer), // forward
            (&[1, b'a', 0xc0, 0x00], WireError::PointerLoop),   // back into its own labels
            (&[0x40, 0], WireError::BadLabelType),
            (&[0x80, 0], WireError::BadLabelType),
        ];
        for (bytes, err) in cases {
            assert_eq!(Name::parse(bytes, 0), Err(*err), "{bytes:?}");
        }
        // Two names pointing at each other: a at 0 -> b at 4, b -> a.
        let msg = [1, b'a', 0xc0, 4, 1, b'b', 0xc0, 0];
        // The jump back to "a" meets a pointer forward to "b" again.
        assert_eq!(Name::parse(&msg, 4), Err(WireError::BadPointer));
    }

    #[test]
    fn rejects_oversized_labels_and_names() {
        assert_eq!(Name::parse(&raw_name(&[(64, b'a')]), 0), Err(WireError::BadLabelType));
        // 4 labels of 63 = 256 bytes > 255.
        assert_eq!(Name::parse(&raw_name(&[(63, b'x'); 4]), 0), Err(WireError::NameTooLong));
        // 3 x 63 + 61 + root = 255: the longest legal name.
        let max = raw_name(&[(63, b'x'), (63, b'x'), (63, b'x'), (61, b'y')]);
        assert_eq!(Name::parse(&max, 0).unwrap().wire_len(), 255);
        assert_eq!(encode_name(&"a".repeat(64), &mut [0; 300]), Err(WireError::LabelTooLong));
    }

    #[test]
    fn parts_of_a_name_may_not_overlap() {
        // "a" at 0 then a pointer at 2 back to 0; a name at 4 points to 2:
        // fine. A name at 4 pointing to 1 would read the label "a"'s byte
        // and run into the run that held the pointer.
        let msg = [1, b'a', 0, 0, 0xc0, 0];
        assert_eq!(Name::parse(&msg, 4).unwrap().wire_len(), 3);
        // A pointer at 3 to 2, where a label of length 2 runs over the
        // pointer itself: "\xc0\x03." read through its own pointer.
        let msg = [0, 0, 2, 0xc0, 2, 0];
        assert_eq!(Name::parse(&msg, 3), Err(WireError::PointerLoop));
        // Label data that merely looks like a pointer is fine.
        let msg = [3, b'x', 0xc0, 0, 0, 0, 0xc0, 0];
        assert_eq!(Name::parse(&msg, 6).unwrap().wire_len(), 5);
    }

    #[test]
    fn truncated_at_every_offset_is_an_error() {
        let mut msg = wire("example.com");
        msg.extend_from_slice(&[3, b'w', b'w', b'w', 0xc0, 0]);
        for cut in 13..msg.len() {
            assert!(Name::parse(&msg[..cut], 13).is_err(), "cut at {cut}");
        }
        let plain = wire("www.example.com");
        for cut in 0..plain.len() {
            assert_eq!(Name::parse(&plain[..cut], 0), Err(WireError::Truncated));
        }
    }

    #[test]
    fn labels_on_a_foreign_buffer_do_not_panic() {
        let msg = wire("www.example.com");
        let n = Name::parse(&msg, 0).unwrap();
        assert_eq!(n.labels(&msg[..3]).count(), 0);
        assert_eq!(n.labels(&msg[..5]).count(), 1);
        assert_eq!(n.labels(&[0xc0, 0x00]).count(), 0); // pointer loop: bounded
    }
}
