//! Test helpers for frame-level tests (also usable by other modules' tests):
//! a byte-by-byte reference checksum and a hand-written frame builder that
//! shares no code with the `net` views.

use super::{FrameInfo, MacAddr};
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

pub(crate) const CLIENT_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x02];
pub(crate) const SERVER_MAC: MacAddr = [0x02, 0, 0, 0, 0, 0x01];
pub(crate) const C4: [u8; 4] = [10, 0, 0, 2];
pub(crate) const S4: [u8; 4] = [10, 0, 0, 1];
pub(crate) const C6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub(crate) const S6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// A real query: 10.0.0.2:53000 -> 10.0.0.1:53, "example.com A", RD set.
pub(crate) const REAL_V4_QUERY: [u8; 71] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x45, 0x00, 0x00, 0x39, 0xab, 0xcd, 0x40, 0x00,
    0x40, 0x11, 0x7a, 0xe4, 0x0a, 0x00, 0x00, 0x02, 0x0a, 0x00, 0x00, 0x01, 0xcf, 0x08, 0x00, 0x35, 0x00, 0x25, 0x3a, 0xc2, 0x12, 0x34,
    0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x63, 0x6f, 0x6d,
    0x00, 0x00, 0x01, 0x00, 0x01,
];

// ---- reference checksum: byte by byte, no chunking ----

pub(crate) fn ref_fold(bytes: &[u8]) -> u16 {
    let mut s: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        s += if i % 2 == 0 { u64::from(*b) << 8 } else { u64::from(*b) };
    }
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    s as u16
}

/// The UDP checksum a correct sender puts in `udp` (whose own checksum
/// field is ignored), computed over an explicitly built pseudo-header.
pub(crate) fn ref_udp_checksum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let mut all = Vec::new();
    all.extend_from_slice(src);
    all.extend_from_slice(dst);
    let len = udp.len() as u32;
    if src.len() == 4 {
        all.extend_from_slice(&[0, 17]);
        all.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        all.extend_from_slice(&len.to_be_bytes());
        all.extend_from_slice(&[0, 0, 0, 17]);
    }
    all.extend_from_slice(&udp[..6]);
    all.extend_from_slice(&[0, 0]);
    all.extend_from_slice(&udp[8..]);
    match !ref_fold(&all) {
        0 => 0xFFFF,
        c => c,
    }
}

// ---- independent frame builder ----

#[derive(Clone, Copy, Debug)]
pub(crate) enum Csum {
    Valid,
    Zero,
    Partial,
    Garbage,
}

#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) v6: bool,
    pub(crate) vlan: Option<u16>,
    pub(crate) ethertype: u16,
    pub(crate) ip_opts: Vec<u8>,
    pub(crate) proto: u8,
    pub(crate) frag: u16,
    pub(crate) ext_hop_by_hop: bool,
    pub(crate) payload: Vec<u8>,
    pub(crate) udp_extra_len: i32,
    pub(crate) padding: usize,
    pub(crate) csum: Csum,
}

pub(crate) fn spec(v6: bool) -> Spec {
    Spec {
        v6,
        vlan: None,
        ethertype: if v6 { 0x86dd } else { 0x0800 },
        ip_opts: vec![],
        proto: 17,
        frag: 0x4000,
        ext_hop_by_hop: false,
        payload: REAL_V4_QUERY[42..].to_vec(),
        udp_extra_len: 0,
        padding: 0,
        csum: Csum::Valid,
    }
}

pub(crate) fn build(s: &Spec) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    if let Some(tci) = s.vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&s.ethertype.to_be_bytes());
    let udp_len = (8 + s.payload.len() as i32 + s.udp_extra_len) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&53000u16.to_be_bytes());
    udp.extend_from_slice(&53u16.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&s.payload);
    let (src, dst): (&[u8], &[u8]) = if s.v6 { (&C6, &S6) } else { (&C4, &S4) };
    let c = match s.csum {
        Csum::Valid => ref_udp_checksum(src, dst, &udp),
        Csum::Zero => 0,
        Csum::Partial => !ref_udp_checksum(src, dst, &udp[..8]),
        Csum::Garbage => 0xdead,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    if s.v6 {
        let ext: &[u8] = if s.ext_hop_by_hop { &[17, 0, 1, 4, 0, 0, 0, 0] } else { &[] };
        let nh = if s.ext_hop_by_hop { 0 } else { s.proto };
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + udp.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[nh, 57]);
        f.extend_from_slice(&C6);
        f.extend_from_slice(&S6);
        f.extend_from_slice(ext);
    } else {
        let hl = 20 + s.ip_opts.len();
        let mut ip = vec![0x40 | (hl / 4) as u8, 0];
        ip.extend_from_slice(&((hl + udp.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x11, 0x11]);
        ip.extend_from_slice(&s.frag.to_be_bytes());
        ip.extend_from_slice(&[57, s.proto, 0, 0]);
        ip.extend_from_slice(&C4);
        ip.extend_from_slice(&S4);
        ip.extend_from_slice(&s.ip_opts);
        let c = !ref_fold(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
    }
    f.extend_from_slice(&udp);
    f.extend(std::iter::repeat_n(0, s.padding));
    f
}

pub(crate) fn client(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(Ipv6Addr::from(C6).into(), 53000)
    } else {
        SocketAddr::new(Ipv4Addr::from(C4).into(), 53000)
    }
}

pub(crate) fn server(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::new(Ipv6Addr::from(S6).into(), 53)
    } else {
        SocketAddr::new(Ipv4Addr::from(S4).into(), 53)
    }
}

/// Checks a parsed reply/answer frame against the reference checksums.
pub(crate) fn check_checksums(frame: &[u8], info: &FrameInfo) {
    let ip = &frame[info.l3_offset..info.l4_offset];
    let udp = &frame[info.l4_offset..info.payload_offset + info.payload_len];
    let (src, dst): (Vec<u8>, Vec<u8>) = if info.is_ipv6() {
        (ip[8..24].to_vec(), ip[24..40].to_vec())
    } else {
        assert_eq!(ref_fold(ip), 0xFFFF, "IPv4 header checksum verifies");
        (ip[12..16].to_vec(), ip[16..20].to_vec())
    };
    let got = u16::from_be_bytes([udp[6], udp[7]]);
    assert_eq!(got, ref_udp_checksum(&src, &dst, udp), "UDP checksum");
}
