//! Cache keys: the question name compared without case, QTYPE, QCLASS and
//! the DO and CD bits, hashed with a per-cache seed.

use super::Cache;
use crate::wire::{Class, Rtype, MAX_NAME_LEN};

/// The DO and CD bits, part of the key: answers differ with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct KeyFlags(pub u8);

impl KeyFlags {
    /// DNSSEC OK was set in the query's OPT.
    pub const DO: u8 = 1;
    /// Checking Disabled was set in the query's header.
    pub const CD: u8 = 2;

    /// Flags from the two bits.
    pub fn new(dnssec_ok: bool, checking_disabled: bool) -> KeyFlags {
        KeyFlags(if dnssec_ok { Self::DO } else { 0 } | if checking_disabled { Self::CD } else { 0 })
    }
}

/// A cache key: the question name as the client wrote it (compared without
/// case), type, class and flags, with its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    pub(super) hash: u64,
    /// The question name in uncompressed wire form.
    pub name: &'a [u8],
    /// QTYPE.
    pub qtype: Rtype,
    /// QCLASS.
    pub qclass: Class,
    /// DO and CD.
    pub flags: KeyFlags,
}

impl Key<'_> {
    /// The key's hash (seeded per cache; the same for every spelling).
    pub fn hash(&self) -> u64 {
        self.hash
    }
}

impl Cache {
    /// The key for a question name in uncompressed wire form. Returns
    /// `None` for a name longer than 255 bytes.
    #[inline]
    pub fn key<'a>(&self, name: &'a [u8], qtype: Rtype, qclass: Class, flags: KeyFlags) -> Option<Key<'a>> {
        if name.len() > MAX_NAME_LEN {
            return None;
        }
        // The name is hashed 8 bytes at a time, lower-cased on the fly.
        let (k0, k1) = self.seed;
        let mut h = k0;
        let mut words = name.chunks_exact(8);
        for w in &mut words {
            h = folded_multiply(h ^ lower8(u64::from_le_bytes(w.try_into().expect("8 bytes"))), k1);
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = folded_multiply(h ^ lower8(u64::from_le_bytes(last)), k1);
        let tail = (name.len() as u64) << 40 | u64::from(qtype.0) << 24 | u64::from(qclass.0) << 8 | u64::from(flags.0);
        let h = folded_multiply(h ^ tail, k0 ^ 0x2d35_8dcc_aa6c_78a5);
        Some(Key { hash: h, name, qtype, qclass, flags })
    }
}

/// The multiply-and-fold mixing step of foldhash and wyhash: the 128-bit
/// product of `a` and `b`, high half XOR low half. With secret `b` it
/// spreads every input bit over the output. Written out here because the
/// key is fed word by word, lower-cased on the fly, which `Hasher` adds
/// buffering overhead to.
#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// One splitmix64 step: turns a seed into a well-mixed key.
pub(super) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// ASCII lower-casing of 8 bytes at once: bytes `A..=Z` get 0x20 added,
/// every other byte is kept.
#[inline(always)]
pub(super) fn lower8(x: u64) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = x & !HIGH;
    // Adding 0x3f sets a byte's top bit when it is >= 'A'; adding 0x25 when
    // it is > 'Z'. Neither carries into the next byte (0x7f + 0x3f < 0x100).
    let ge_a = low7.wrapping_add(0x3f3f_3f3f_3f3f_3f3f);
    let gt_z = low7.wrapping_add(0x2525_2525_2525_2525);
    let upper = ge_a & !gt_z & !x & HIGH;
    x | (upper >> 2)
}

/// Whether `name` lower-cased equals `lower` (already lower case).
#[inline(always)]
pub(super) fn eq_lower(name: &[u8], lower: &[u8]) -> bool {
    if name.len() != lower.len() {
        return false;
    }
    let mut a = name.chunks_exact(8);
    let mut b = lower.chunks_exact(8);
    for (x, y) in (&mut a).zip(&mut b) {
        if lower8(u64::from_le_bytes(x.try_into().expect("8 bytes"))) != u64::from_le_bytes(y.try_into().expect("8 bytes")) {
            return false;
        }
    }
    a.remainder().iter().zip(b.remainder()).all(|(x, y)| x.to_ascii_lowercase() == *y)
}
