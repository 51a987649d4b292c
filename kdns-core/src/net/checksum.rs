//! The one's-complement Internet checksum (RFC 1071) and its incremental
//! update (RFC 1624).
//!
//! [`sum`] accumulates 16-bit big-endian words into a `u32` that can be fed
//! back in as `initial` to chain several pieces (every piece but the last must
//! have an even length). [`fold`] folds the carries into 16 bits; the value put
//! on the wire is the complement of that, which [`checksum`] returns directly.

use core::net::{Ipv4Addr, Ipv6Addr};

/// Adds `b` to `a` with end-around carry. Never overflows: if the addition
/// wraps, the wrapped value is at most `b - 1`, so adding the carry back fits.
/// Correct for the Internet checksum because 2^64 = 1 (mod 0xFFFF).
#[inline(always)]
fn add_carry(a: u64, b: u64) -> u64 {
    let (s, c) = a.overflowing_add(b);
    s + u64::from(c)
}

/// Folds a 64-bit end-around-carry sum into 32 bits (congruent mod 0xFFFF).
#[inline(always)]
fn fold64(s: u64) -> u32 {
    let s = (s & 0xFFFF_FFFF) + (s >> 32); // <= 0x1_FFFF_FFFE
    let s = (s & 0xFFFF_FFFF) + (s >> 32); // <= 0xFFFF_FFFF
    s as u32
}

/// Sums `data` as big-endian 16-bit words into `initial` (one's-complement
/// arithmetic, carries deferred). An odd trailing byte is padded with a zero
/// byte on the right. Works 16 bytes per step with a 64-bit accumulator.
///
/// The result may be chained: `sum(b, sum(a, 0))` equals the sum over `a`
/// followed by `b` as long as `a` has an even length.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut acc2 = 0u64;
    let mut chunks = data.chunks_exact(16);
    for c in &mut chunks {
        let a = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let b = u64::from_be_bytes([c[8], c[9], c[10], c[11], c[12], c[13], c[14], c[15]]);
        acc = add_carry(acc, a);
        acc2 = add_carry(acc2, b);
    }
    acc = add_carry(acc, acc2);
    // The tail (< 16 bytes) in at most four steps rather than a word loop.
    // 32-bit words are congruent to their 16-bit halves' sum (2^16 = 1 mod
    // 0xFFFF), and these small additions cannot overflow after `add_carry`.
    let mut rest = chunks.remainder();
    let mut tail = 0u64;
    if let [a, b, c, d, e, f, g, h, r @ ..] = rest {
        tail += u64::from(u32::from_be_bytes([*a, *b, *c, *d])) + u64::from(u32::from_be_bytes([*e, *f, *g, *h]));
        rest = r;
    }
    if let [a, b, c, d, r @ ..] = rest {
        tail += u64::from(u32::from_be_bytes([*a, *b, *c, *d]));
        rest = r;
    }
    if let [a, b, r @ ..] = rest {
        tail += u64::from(u16::from_be_bytes([*a, *b]));
        rest = r;
    }
    if let [last] = rest {
        tail += u64::from(*last) << 8;
    }
    fold64(add_carry(acc, tail))
}

/// Folds the carries of a [`sum`] into 16 bits. The checksum field gets the
/// complement (`!fold(s)`); a received packet verifies when
/// `fold(sum over it) == 0xFFFF`.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum & 0xFFFF) + (sum >> 16); // <= 0x1_FFFE
    let s = (s & 0xFFFF) + (s >> 16); // <= 0xFFFF
    s as u16
}

/// The Internet checksum of `data`: the complemented folded [`sum`], ready to
/// be stored in a checksum field (computed with that field zeroed). Over data
/// that includes a correct checksum field it returns 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// Sum of the IPv4 pseudo-header (RFC 768): source, destination, protocol
/// and the upper-layer length. Pass it as `initial` to [`sum`].
#[inline]
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u32 {
    let s = u32::from(src);
    let d = u32::from(dst);
    (s >> 16) + (s & 0xFFFF) + (d >> 16) + (d & 0xFFFF) + u32::from(proto) + u32::from(len)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1): source,
/// destination, 32-bit upper-layer length and next header. Pass it as
/// `initial` to [`sum`].
#[inline]
pub fn pseudo_header_v6(src: &Ipv6Addr, dst: &Ipv6Addr, next_header: u8, len: u32) -> u32 {
    // 16 words of at most 0xFFFF plus the rest cannot overflow a u32.
    let mut s = (len >> 16) + (len & 0xFFFF) + u32::from(next_header);
    for w in src.segments() {
        s += u32::from(w);
    }
    for w in dst.segments() {
        s += u32::from(w);
    }
    s
}

/// Incremental update of a checksum when one 16-bit word changes from `old`
/// to `new` (RFC 1624 eqn. 3: `HC' = ~(~HC + ~m + m')`).
#[inline]
pub fn update16(old_checksum: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!old_checksum) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// Incremental update of a checksum when the bytes `old` (at an even offset
/// of the covered data) are replaced by `new`. Both should have the same
/// even length; the update is exact for that case. (Other lengths do not
/// panic; the result is then that of replacing `old`'s zero-padded sum by
/// `new`'s.)
#[inline]
pub fn update_bytes(old_checksum: u16, old: &[u8], new: &[u8]) -> u16 {
    let s = u32::from(!old_checksum) + u32::from(!fold(sum(old, 0))) + u32::from(fold(sum(new, 0)));
    !fold(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward reference: byte-by-byte, 16-bit words, u64 total.
    fn ref_sum(data: &[u8]) -> u64 {
        let mut s = 0u64;
        let mut i = 0;
        while i < data.len() {
            let hi = u64::from(data[i]) << 8;
            let lo = if i + 1 < data.len() { u64::from(data[i + 1]) } else { 0 };
            s += hi | lo;
            i += 2;
        }
        s
    }

    fn ref_fold(mut s: u64) -> u16 {
        while s > 0xFFFF {
            s = (s & 0xFFFF) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    #[test]
    fn known_ipv4_headers() {
        // (header with checksum zeroed at bytes 10..12, expected checksum)
        let cases: [([u8; 20], u16); 2] = [
            (
                [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7],
                0xb861,
            ),
            (
                [0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00, 0xac, 0x10, 0x0a, 0x63, 0xac, 0x10, 0x0a, 0x0c],
                0xb1e6,
            ),
        ];
        for (mut hdr, want) in cases {
            assert_eq!(checksum(&hdr), want);
            hdr[10..12].copy_from_slice(&want.to_be_bytes());
            assert_eq!(checksum(&hdr), 0, "verifies");
            assert_eq!(fold(sum(&hdr, 0)), 0xFFFF);
        }
    }

    #[test]
    fn edge_values() {
        assert_eq!(checksum(&[]), 0xFFFF);
        assert_eq!(checksum(&[0xFF]), 0x00FF);
        assert_eq!(fold(0xFFFF_FFFF), 0xFFFF);
        assert_eq!(fold(0x0001_FFFF), 0x0001);
        assert_eq!(sum(&[0xFF; 64], u32::MAX) as u64 % 0xFFFF, (ref_sum(&[0xFF; 64]) + u64::from(u32::MAX)) % 0xFFFF);
        // Odd chaining is only defined for the last piece.
        let d = [1u8, 2, 3, 4, 5];
        assert_eq!(fold(sum(&d[2..], sum(&d[..2], 0))), fold(sum(&d, 0)));
    }

    #[test]
    fn pseudo_headers() {
        let s4 = pseudo_header_v4(Ipv4Addr::new(192, 168, 0, 1), Ipv4Addr::new(10, 0, 0, 2), 17, 0x1234);
        assert_eq!(s4, 0xc0a8 + 0x0001 + 0x0a00 + 0x0002 + 17 + 0x1234);
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "fe80::ffff".parse().unwrap();
        let s6 = pseudo_header_v6(&a, &b, 17, 0x0001_0002);
        assert_eq!(s6, 0x2001 + 0x0db8 + 1 + 0xfe80 + 0xffff + 1 + 2 + 17);
        // Symmetric in source and destination.
        assert_eq!(pseudo_header_v6(&b, &a, 17, 9), pseudo_header_v6(&a, &b, 17, 9));
    }

    proptest! {
        #[test]
        fn sum_matches_reference(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            start in 0usize..17,
            initial in any::<u32>(),
        ) {
            let d = data.get(start..).unwrap_or(&[]);
            let fast = fold(sum(d, initial));
            let slow = ref_fold(ref_sum(d) + u64::from(initial));
            prop_assert_eq!(fast, slow);
            prop_assert_eq!(checksum(d), !ref_fold(ref_sum(d)));
        }

        #[test]
        fn update16_equals_recompute(
            words in proptest::collection::vec(any::<u16>(), 1..40),
            idx in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let mut data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let i = idx.index(words.len()) * 2;
            let hc = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let full = checksum(&data);
            let inc = update16(hc, old, new);
            if data.iter().any(|&b| b != 0) {
                prop_assert_eq!(inc, full);
            } else {
                // All-zero data: +0 vs -0, equivalent in one's complement.
                prop_assert!(inc == 0 || inc == 0xFFFF);
            }
        }

        #[test]
        fn update_bytes_equals_recompute(
            words in proptest::collection::vec(any::<u16>(), 1..40),
            a in any::<prop::sample::Index>(),
            b in any::<prop::sample::Index>(),
            seed in proptest::collection::vec(any::<u8>(), 80),
        ) {
            let mut data: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
            let (x, y) = (a.index(words.len()), b.index(words.len()));
            let (lo, hi) = (x.min(y) * 2, (x.max(y) + 1) * 2);
            let hc = checksum(&data);
            let old = data[lo..hi].to_vec();
            data[lo..hi].copy_from_slice(&seed[..hi - lo]);
            let full = checksum(&data);
            let inc = update_bytes(hc, &old, &data[lo..hi]);
            if data.iter().any(|&b| b != 0) {
                prop_assert_eq!(inc, full);
            } else {
                prop_assert!(inc == 0 || inc == 0xFFFF);
            }
        }
    }
}
