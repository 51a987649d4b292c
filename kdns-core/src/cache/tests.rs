//! Cache behaviour on a virtual clock.

use super::key::lower8;
use super::*;
use crate::testutil::{a, answer, query, soa, ttls};
use crate::wire::{Class, Message, Section};

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn small() -> CacheConfig {
    CacheConfig { max_entries: 8, max_bytes: 8 * CHUNK, ..CacheConfig::default() }
}

/// The key of query `q`'s question (no DO or CD).
fn key_of<'q>(c: &Cache, q: &'q [u8]) -> Key<'q> {
    let m = Message::parse(q).unwrap();
    let name = &q[12..m.question.name.end()];
    c.key(name, m.question.qtype, m.question.qclass, KeyFlags::default()).unwrap()
}

/// Inserts the backend answer `ans` to `q` under the query's key.
fn put(c: &mut Cache, now: Timestamp, q: &[u8], ans: &[u8]) -> Result<EntryKind, NotCached> {
    let key = key_of(c, q);
    let am = Message::parse(ans).unwrap();
    c.insert(now, &key, ans, &am)
}

fn get(c: &mut Cache, now: Timestamp, q: &[u8], out: &mut [u8]) -> Lookup {
    let key = key_of(c, q);
    c.lookup(now, &key, out)
}

#[test]
fn hit_counts_ttls_down_with_age() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "example.com", Rtype::A, None);
    let ans = answer(&q, Rcode::NOERROR, &[a(300, [192, 0, 2, 1]), a(100, [192, 0, 2, 2])], true);
    assert_eq!(put(&mut c, t(10), &q, &ans), Ok(EntryKind::Positive));
    let mut out = [0u8; 512];
    let Lookup::Hit { len, refresh: false, kind: EntryKind::Positive } = get(&mut c, t(40), &q, &mut out) else { panic!() };
    assert_eq!(ttls(&out[..len]), vec![270, 70]);
    // The OPT is not stored: the engine adds the client's.
    assert_eq!(Header::new_checked(&out[..len]).unwrap().arcount(), 0);
    assert_eq!(len, ans.len() - 11);
    // Expires with the smallest TTL, then stale, then gone.
    assert!(matches!(get(&mut c, t(109), &q, &mut out), Lookup::Hit { .. }));
    assert_eq!(get(&mut c, t(110), &q, &mut out), Lookup::Stale);
    assert_eq!(get(&mut c, t(110 + 3600), &q, &mut out), Lookup::Miss);
    assert_eq!(c.len(), 0);
}

#[test]
fn key_ignores_case_but_not_type_or_flags() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "Example.COM", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(60, [1, 2, 3, 4])], false)).unwrap();
    let mut out = [0u8; 512];
    assert!(matches!(get(&mut c, t(1), &query(2, "eXample.com", Rtype::A, None), &mut out), Lookup::Hit { .. }));
    assert_eq!(get(&mut c, t(1), &query(2, "example.com", Rtype::AAAA, None), &mut out), Lookup::Miss);
    assert_eq!(get(&mut c, t(1), &query(2, "example.org", Rtype::A, None), &mut out), Lookup::Miss);
    let key = c.key(&q[12..25], Rtype::A, Class::IN, KeyFlags::new(true, false)).unwrap();
    assert_eq!(c.lookup(t(1), &key, &mut out), Lookup::Miss);
}

#[test]
fn negative_answers_live_for_the_soa_minimum() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "nope.example.com", Rtype::A, None);
    let nx = answer(&q, Rcode::NXDOMAIN, &[soa(3600, 60)], false);
    assert_eq!(put(&mut c, t(0), &q, &nx), Ok(EntryKind::Negative));
    let mut out = [0u8; 512];
    let Lookup::Hit { len, kind: EntryKind::Negative, .. } = get(&mut c, t(20), &q, &mut out) else { panic!() };
    assert_eq!(ttls(&out[..len]), vec![40], "SOA TTL is the negative TTL counted down");
    assert_eq!(get(&mut c, t(60), &q, &mut out), Lookup::Stale);
    // NODATA without SOA is not cached.
    let nodata = answer(&q, Rcode::NOERROR, &[], false);
    assert_eq!(put(&mut c, t(0), &q, &nodata), Err(NotCached::NoSoa));
}

#[test]
fn servfail_is_cached_briefly_and_never_served_stale() {
    let mut c = Cache::new(CacheConfig { servfail_ttl: 600, ..CacheConfig::default() }, 1);
    let q = query(1, "broken.example", Rtype::A, None);
    assert_eq!(put(&mut c, t(0), &q, &answer(&q, Rcode::SERVFAIL, &[], false)), Ok(EntryKind::ServFail));
    let mut out = [0u8; 512];
    assert!(matches!(get(&mut c, t(29), &q, &mut out), Lookup::Hit { kind: EntryKind::ServFail, .. }));
    assert_eq!(get(&mut c, t(30), &q, &mut out), Lookup::Miss, "capped at 30 s, no stale window");
}

#[test]
fn not_cached_cases() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "x.example", Rtype::A, None);
    let mut tc = answer(&q, Rcode::NOERROR, &[a(60, [1, 1, 1, 1])], false);
    tc[2] |= 0x02;
    assert_eq!(put(&mut c, t(0), &q, &tc), Err(NotCached::Truncated));
    assert_eq!(put(&mut c, t(0), &q, &answer(&q, Rcode::REFUSED, &[], false)), Err(NotCached::Rcode));
    assert_eq!(put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(0, [1, 1, 1, 1])], false)), Err(NotCached::ZeroTtl));
    let other = query(1, "y.example", Rtype::A, None);
    let key = key_of(&c, &q);
    let ans = answer(&other, Rcode::NOERROR, &[a(60, [1, 1, 1, 1])], false);
    assert_eq!(c.insert(t(0), &key, &ans, &Message::parse(&ans).unwrap()), Err(NotCached::QuestionMismatch));
    assert!(c.is_empty());
}

#[test]
fn ttl_bounds_clamp() {
    let mut c = Cache::new(CacheConfig { min_ttl: 30, max_ttl: 100, ..CacheConfig::default() }, 1);
    let q = query(1, "x.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(5, [1, 1, 1, 1]), a(9999, [2, 2, 2, 2])], false)).unwrap();
    let mut out = [0u8; 512];
    let Lookup::Hit { len, .. } = get(&mut c, t(0), &q, &mut out) else { panic!() };
    assert_eq!(ttls(&out[..len]), vec![30, 100]);
}

#[test]
fn near_expiry_hit_asks_for_one_refresh() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "x.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(100, [1, 1, 1, 1])], false)).unwrap();
    let mut out = [0u8; 512];
    assert!(matches!(get(&mut c, t(89), &q, &mut out), Lookup::Hit { refresh: false, .. }));
    assert!(matches!(get(&mut c, t(91), &q, &mut out), Lookup::Hit { refresh: true, .. }));
    assert!(matches!(get(&mut c, t(92), &q, &mut out), Lookup::Hit { refresh: false, .. }));
    let key = key_of(&c, &q);
    c.refresh_failed(&key);
    assert!(matches!(get(&mut c, t(93), &q, &mut out), Lookup::Hit { refresh: true, .. }));
}

#[test]
fn stale_copy_carries_the_stale_ttl() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "x.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(10, [1, 1, 1, 1])], false)).unwrap();
    let key = key_of(&c, &q);
    let mut out = [0u8; 512];
    let len = c.lookup_stale(t(500), &key, &mut out).unwrap();
    assert_eq!(ttls(&out[..len]), vec![30]);
    assert_eq!(c.lookup_stale(t(10 + 3600), &key, &mut out), None);
}

#[test]
fn clock_eviction_keeps_hot_entries() {
    let mut c = Cache::new(small(), 1);
    let hot = query(1, "hot.example", Rtype::A, None);
    put(&mut c, t(0), &hot, &answer(&hot, Rcode::NOERROR, &[a(600, [9, 9, 9, 9])], false)).unwrap();
    let mut out = [0u8; 512];
    for i in 0..100 {
        // The hot name is asked between every two one-off names.
        assert!(matches!(get(&mut c, t(1), &hot, &mut out), Lookup::Hit { .. }), "round {i}");
        let q = query(1, &format!("cold{i}.example"), Rtype::A, None);
        put(&mut c, t(1), &q, &answer(&q, Rcode::NOERROR, &[a(600, [1, 1, 1, 1])], false)).unwrap();
        assert!(c.len() <= 8);
    }
    assert!(c.stats().evictions.get() >= 90);
    assert_eq!(c.stats().entries.get(), c.len() as u64);
}

#[test]
fn bounded_by_bytes_as_well_as_entries() {
    let mut c = Cache::new(CacheConfig { max_entries: 100, max_bytes: 16 * CHUNK, ..CacheConfig::default() }, 1);
    let mut out = [0u8; 4096];
    for i in 0..20 {
        let q = query(1, &format!("big{i}.example"), Rtype::A, None);
        let rrs: Vec<_> = (0..20).map(|j| a(600, [10, 0, i as u8, j])).collect();
        put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &rrs, false)).unwrap(); // ~350 bytes: 3 chunks
        assert!(c.stats().bytes.get() <= 16 * CHUNK as u64);
        assert!(matches!(get(&mut c, t(0), &q, &mut out), Lookup::Hit { .. }));
    }
    assert!(c.len() <= 5);
}

#[test]
fn remove_name_and_clear() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    for (name, ty) in [("web.kdns", Rtype::A), ("web.kdns", Rtype::AAAA), ("db.kdns", Rtype::A)] {
        let q = query(1, name, ty, None);
        let rr = crate::testutil::Rr { section: Section::Answer, rtype: ty, ttl: 10, rdata: vec![0; if ty == Rtype::A { 4 } else { 16 }] };
        put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[rr], false)).unwrap();
    }
    let mut w = [0u8; 64];
    let n = crate::wire::encode_name("WEB.kdns", &mut w).unwrap();
    assert_eq!(c.remove_name(&w[..n]), 2);
    assert_eq!(c.len(), 1);
    c.clear();
    assert!(c.is_empty());
    assert_eq!(c.stats().bytes.get(), 0);
}

#[test]
fn too_long_for_the_buffer_is_reported() {
    let mut c = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "x.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(60, [1, 1, 1, 1])], false)).unwrap();
    let mut out = [0u8; 20];
    assert_eq!(get(&mut c, t(0), &q, &mut out), Lookup::TooLong { len: 43 });
}

#[test]
fn typical_a_answer_costs_under_256_bytes_per_entry() {
    // Sized as the defaults are.
    let n = 10_000;
    let mut c = Cache::new(CacheConfig::for_entries(n), 1);
    for i in 0..n {
        let q = query(1, &format!("host{i}.example.com"), Rtype::A, None);
        put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(600, [10, 1, (i >> 8) as u8, i as u8])], true)).unwrap();
    }
    assert_eq!(c.len(), n, "every entry fits");
    let per_entry = c.memory() / n;
    println!("cache memory: {} bytes per entry (entry {} + index + storage)", per_entry, core::mem::size_of::<Entry>());
    assert!(per_entry <= 256, "{per_entry} bytes per entry");
}

#[test]
fn swar_lower_case_matches_std() {
    for b in 0..=255u8 {
        let w = u64::from_le_bytes([b, b'A', b'z', b'@', b'[', b'Z', 0xc1, b]);
        let want = u64::from_le_bytes([b.to_ascii_lowercase(), b'a', b'z', b'@', b'[', b'z', 0xc1, b.to_ascii_lowercase()]);
        assert_eq!(lower8(w), want, "byte {b:#x}");
    }
    assert!(eq_lower(b"\x03WwW\x07ExAmple", b"\x03www\x07example"));
    assert!(!eq_lower(b"\x03www", b"\x03wwx"));
}
