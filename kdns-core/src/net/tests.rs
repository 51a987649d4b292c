//! Frame-level tests of `parse_udp_frame`, `turn_around` and
//! `write_udp_frame`, checked against the byte-by-byte reference checksum and
//! the independent frame builder of `testutil`.

use super::testutil::*;
use super::*;
use proptest::prelude::*;

#[test]
fn parse_real_query() {
    let info = parse_udp_frame(&REAL_V4_QUERY).unwrap();
    let want = FrameInfo {
        l2: L2Header { dst_mac: SERVER_MAC, src_mac: CLIENT_MAC, vlan: None },
        l3_offset: 14,
        l4_offset: 34,
        payload_offset: 42,
        payload_len: 29,
        src: client(false),
        dst: server(false),
        ip_ttl: 64,
    };
    assert_eq!(info, want);
    check_checksums(&REAL_V4_QUERY, &info);
}

#[test]
fn parse_table() {
    type Case = (&'static str, fn(&mut Spec), Result<(usize, usize, usize), FrameError>);
    // (name, mutation of the default spec, Ok((l3, l4, payload_len)) or error)
    let cases: [Case; 17] = [
        ("ipv4", |_| {}, Ok((14, 34, 29))),
        ("ipv4 options", |s| s.ip_opts = vec![0x94, 4, 0, 0, 1, 1, 1, 0], Ok((14, 42, 29))),
        ("ipv4 vlan", |s| s.vlan = Some(0x0064), Ok((18, 38, 29))),
        ("ipv6", |s| *s = spec(true), Ok((14, 54, 29))),
        ("ipv6 vlan", |s| (*s, s.vlan) = (spec(true), Some(7)), Ok((18, 58, 29))),
        ("ipv6 hop-by-hop", |s| (*s, s.ext_hop_by_hop) = (spec(true), true), Err(FrameError::Ipv6ExtensionHeader)),
        ("ipv6 fragment hdr", |s| (*s, s.proto) = (spec(true), 44), Err(FrameError::Fragment)),
        ("ipv6 icmp", |s| (*s, s.proto) = (spec(true), 58), Err(FrameError::NotUdp)),
        ("arp", |s| s.ethertype = 0x0806, Err(FrameError::NotIp)),
        ("qinq", |s| (s.vlan, s.ethertype) = (Some(1), 0x8100), Err(FrameError::NotIp)),
        ("tcp", |s| s.proto = 6, Err(FrameError::NotUdp)),
        ("more fragments", |s| s.frag = 0x2000, Err(FrameError::Fragment)),
        ("fragment offset", |s| s.frag = 0x00b9, Err(FrameError::Fragment)),
        ("padding, short udp", |s| (s.payload, s.padding) = (vec![1, 2, 3, 4], 14), Ok((14, 34, 4))),
        ("udp len < ip payload", |s| s.udp_extra_len = -9, Ok((14, 34, 20))),
        ("udp len > ip payload", |s| s.udp_extra_len = 1, Err(FrameError::BadUdpLength)),
        ("udp len < 8", |s| s.udp_extra_len = -30, Err(FrameError::BadUdpLength)),
    ];
    for (name, mutate, want) in cases {
        let mut s = spec(false);
        mutate(&mut s);
        let frame = build(&s);
        let got = parse_udp_frame(&frame).map(|i| (i.l3_offset, i.l4_offset, i.payload_len));
        assert_eq!(got, want, "{name}");
        if let Ok(info) = parse_udp_frame(&frame) {
            assert_eq!((info.src, info.dst, info.ip_ttl), (client(s.v6), server(s.v6), 57), "{name}");
            assert_eq!(info.l2.vlan, s.vlan, "{name}");
            assert_eq!(&frame[info.payload_offset..][..info.payload_len], &s.payload[..info.payload_len]);
            // Truncation at every byte before the end of the IP packet.
            for n in 0..frame.len() - s.padding {
                assert_eq!(parse_udp_frame(&frame[..n]).err(), Some(FrameError::Truncated), "{name} at {n}");
            }
        }
    }
}

#[test]
fn parse_bad_ip_checksum() {
    let mut f = REAL_V4_QUERY;
    f[24] ^= 1;
    assert_eq!(parse_udp_frame(&f), Err(FrameError::BadIpHeader));
}

#[test]
fn turn_around_matrix() {
    let mut count = 0;
    for v6 in [false, true] {
        for vlan in [None, Some(0x2064)] {
            let opt_sets: &[&[u8]] = if v6 { &[&[]] } else { &[&[], &[0x94, 4, 0, 0]] };
            for opts in opt_sets {
                for csum in [Csum::Valid, Csum::Zero, Csum::Partial, Csum::Garbage] {
                    for reply_len in [0usize, 12, 28, 29, 30, 101, 1400] {
                        let s = Spec { vlan, ip_opts: opts.to_vec(), csum, ..spec(v6) };
                        let query = build(&s);
                        let info = parse_udp_frame(&query).unwrap();
                        let mut buf = vec![0xEE; 2048];
                        buf[..query.len()].copy_from_slice(&query);
                        let reply: Vec<u8> = (0..reply_len).map(|i| (i * 7 + 3) as u8).collect();
                        buf[info.payload_offset..][..reply_len].copy_from_slice(&reply);
                        let n = turn_around(&mut buf, &info, reply_len).unwrap();
                        assert_eq!(n, info.payload_offset + reply_len);
                        // The whole buffer (trailing garbage included) parses the same.
                        for frame in [&buf[..n], &buf[..]] {
                            let out = parse_udp_frame(frame).unwrap();
                            assert_eq!(out.l2, info.l2.reversed());
                            assert_eq!((out.src, out.dst), (info.dst, info.src));
                            assert_eq!(out.ip_ttl, 64);
                            assert_eq!((out.l3_offset, out.l4_offset), (info.l3_offset, info.l4_offset));
                            assert_eq!(out.payload_len, reply_len);
                            assert_eq!(&frame[out.payload_offset..][..reply_len], &reply[..]);
                            check_checksums(frame, &out);
                        }
                        if !v6 {
                            let ip = Ipv4Packet::new_checked(&buf[info.l3_offset..n]).unwrap();
                            assert!(ip.dont_frag() && !ip.is_fragment() && ip.ident() == 0);
                            assert_eq!(ip.options(), *opts, "options kept");
                        }
                        count += 1;
                    }
                }
            }
        }
    }
    assert_eq!(count, 168);
}

#[test]
fn turn_around_too_large() {
    for v6 in [false, true] {
        let query = build(&spec(v6));
        let info = parse_udp_frame(&query).unwrap();
        let room = query.len() - info.payload_offset;
        let mut buf = query.clone();
        for reply_len in [room + 1, usize::MAX, usize::MAX - info.payload_offset + 1] {
            assert_eq!(turn_around(&mut buf, &info, reply_len), Err(FrameError::TooLarge));
            assert_eq!(buf, query, "unchanged on error");
        }
        assert_eq!(turn_around(&mut buf, &info, room), Ok(query.len()));
    }
    // Length fields: IPv4 total <= 65535 (counting options), UDP length <= 65535.
    let mut big = vec![0u8; 70_000];
    // (spec, largest reply that fits the length fields)
    let opts = Spec { ip_opts: vec![1, 1, 1, 0], ..spec(false) };
    for (s, max) in [(spec(false), 65535 - 28), (opts, 65535 - 32), (spec(true), 65535 - 8)] {
        let query = build(&s);
        let info = parse_udp_frame(&query).unwrap();
        big[..query.len()].copy_from_slice(&query);
        assert_eq!(turn_around(&mut big, &info, max + 1), Err(FrameError::TooLarge), "{s:?}");
        let n = turn_around(&mut big, &info, max).unwrap();
        let out = parse_udp_frame(&big[..n]).unwrap();
        assert_eq!(out.payload_len, max);
        check_checksums(&big[..n], &out);
    }
}

#[test]
fn turn_around_rejects_mismatched_info() {
    let q4 = build(&spec(false));
    let i4 = parse_udp_frame(&q4).unwrap();
    let i6 = parse_udp_frame(&build(&spec(true))).unwrap();
    let cases = [
        ("v6 info on v4 frame", i6),
        ("v4 info, ihl mismatch", FrameInfo { l4_offset: 38, payload_offset: 46, ..i4 }),
        ("l4 before l3", FrameInfo { l4_offset: 10, payload_offset: 18, ..i4 }),
        ("payload not after udp", FrameInfo { payload_offset: 43, ..i4 }),
        ("l3 inside ethernet", FrameInfo { l3_offset: 4, l4_offset: 24, payload_offset: 32, ..i4 }),
        ("mixed families", FrameInfo { dst: server(true), ..i4 }),
    ];
    for (name, info) in cases {
        let mut buf = q4.clone();
        buf.resize(512, 0);
        let before = buf.clone();
        assert_eq!(turn_around(&mut buf, &info, 20), Err(FrameError::BadIpHeader), "{name}");
        assert_eq!(buf, before, "{name}: unchanged");
    }
}

#[test]
fn write_frames() {
    for v6 in [false, true] {
        for vlan in [None, Some(0x0fff)] {
            let l2 = L2Header { dst_mac: CLIENT_MAC, src_mac: SERVER_MAC, vlan };
            let hl = udp_headers_len(&l2, v6);
            assert_eq!(hl, 14 + 4 * usize::from(vlan.is_some()) + if v6 { 48 } else { 28 });
            for payload_len in [0usize, 1, 33, 512] {
                let mut buf = vec![0xEE; 600];
                let payload: Vec<u8> = (0..payload_len).map(|i| (i * 13) as u8).collect();
                buf[hl..hl + payload_len].copy_from_slice(&payload);
                let n = write_udp_frame(&mut buf, &l2, server(v6), client(v6), payload_len).unwrap();
                assert_eq!(n, hl + payload_len);
                let info = parse_udp_frame(&buf[..n]).unwrap();
                assert_eq!((info.l2, info.src, info.dst, info.ip_ttl), (l2, server(v6), client(v6), 64));
                assert_eq!((info.payload_offset, info.payload_len), (hl, payload_len));
                assert_eq!(&buf[hl..n], &payload[..]);
                check_checksums(&buf[..n], &info);
                if !v6 {
                    let ip = Ipv4Packet::new_checked(&buf[info.l3_offset..n]).unwrap();
                    assert!(ip.dont_frag() && ip.ident() == 0 && ip.header_len() == 20);
                }
                // Too small by one byte.
                let mut small = buf[..n - 1].to_vec();
                let r = write_udp_frame(&mut small, &l2, server(v6), client(v6), payload_len);
                assert_eq!(r, Err(FrameError::TooLarge));
            }
        }
    }
    let l2 = L2Header { dst_mac: CLIENT_MAC, src_mac: SERVER_MAC, vlan: None };
    let mut buf = [0u8; 128];
    assert_eq!(write_udp_frame(&mut buf, &l2, server(false), client(true), 4), Err(FrameError::BadIpHeader));
    assert_eq!(write_udp_frame(&mut buf, &l2, server(true), client(false), 4), Err(FrameError::BadIpHeader));
    assert_eq!(write_udp_frame(&mut buf, &l2, server(true), client(true), usize::MAX), Err(FrameError::TooLarge));
    let mut big = vec![0u8; 70_000];
    for (v6, max) in [(false, 65535 - 28), (true, 65535 - 8)] {
        assert!(write_udp_frame(&mut big, &l2, server(v6), client(v6), max).is_ok());
        assert_eq!(write_udp_frame(&mut big, &l2, server(v6), client(v6), max + 1), Err(FrameError::TooLarge));
    }
}

#[test]
fn error_names_and_l2() {
    let names: Vec<&str> = FrameError::ALL.iter().map(|e| e.name()).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), names.len());
    assert!(names.iter().all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    assert_eq!(FrameError::Fragment.name(), "fragment");
    assert_eq!(FrameError::Truncated.to_string(), "frame truncated");
    let _: &dyn std::error::Error = &FrameError::TooLarge;
    let l2 = L2Header { dst_mac: SERVER_MAC, src_mac: CLIENT_MAC, vlan: Some(3) };
    assert_eq!(l2.reversed(), L2Header { dst_mac: CLIENT_MAC, src_mac: SERVER_MAC, vlan: Some(3) });
    assert_eq!(l2.reversed().reversed(), l2);
}

fn any_spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        proptest::option::of(any::<u16>()),
        0usize..=10,
        proptest::collection::vec(any::<u8>(), 0..120),
        0usize..20,
        prop_oneof![Just(Csum::Valid), Just(Csum::Zero), Just(Csum::Partial), Just(Csum::Garbage)],
    )
        .prop_map(|(v6, vlan, opt_words, payload, padding, csum)| Spec {
            vlan,
            ip_opts: vec![1; opt_words * 4],
            payload,
            padding,
            csum,
            ..spec(v6)
        })
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), reply_len in 0usize..300) {
        if let Ok(info) = parse_udp_frame(&bytes) {
            prop_assert!(info.payload_offset + info.payload_len <= bytes.len());
            let mut buf = bytes.clone();
            buf.resize(bytes.len() + 64, 0);
            if let Ok(n) = turn_around(&mut buf, &info, reply_len) {
                prop_assert!(parse_udp_frame(&buf[..n]).is_ok());
            }
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        s in any_spec(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cap_extra in 0usize..200,
        reply_len in 0usize..300,
    ) {
        let mut frame = build(&s);
        for (i, b) in flips {
            let i = i.index(frame.len());
            frame[i] ^= b;
        }
        if let Ok(info) = parse_udp_frame(&frame) {
            let mut buf = frame.clone();
            buf.resize(frame.len() + cap_extra, 0xA5);
            match turn_around(&mut buf, &info, reply_len) {
                Ok(n) => {
                    let out = parse_udp_frame(&buf[..n]).unwrap();
                    prop_assert_eq!((out.src, out.dst, out.payload_len), (info.dst, info.src, reply_len));
                    check_checksums(&buf[..n], &out);
                }
                Err(e) => prop_assert_eq!(e, FrameError::TooLarge),
            }
        }
    }

    #[test]
    fn turn_around_any_info_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        offs in (0usize..220, 0usize..220, 0usize..220),
        v6 in (any::<bool>(), any::<bool>()),
        reply_len in prop_oneof![0usize..300, Just(usize::MAX)],
    ) {
        let ip = |v6: bool| if v6 { IpAddr::from(S6) } else { IpAddr::from(S4) };
        let info = FrameInfo {
            l2: L2Header { dst_mac: SERVER_MAC, src_mac: CLIENT_MAC, vlan: None },
            l3_offset: offs.0,
            l4_offset: offs.1,
            payload_offset: offs.2,
            payload_len: 0,
            src: SocketAddr::new(ip(v6.0), 1),
            dst: SocketAddr::new(ip(v6.1), 2),
            ip_ttl: 0,
        };
        let mut buf = bytes;
        let _ = turn_around(&mut buf, &info, reply_len);
    }
}
