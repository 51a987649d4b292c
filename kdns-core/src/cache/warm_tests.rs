//! Export and import on virtual clocks: the exporting process's and the
//! importing one's are unrelated, the wall clock links them.

use proptest::prelude::*;

use core::time::Duration;

use super::super::dump::{encode, DumpError, Export, Record, Records, HEADER_LEN, VERSION};
use super::super::{Cache, CacheConfig, EntryKind, Key, KeyFlags, Lookup, NANOS};
use crate::testutil::{a, answer, query, soa, ttls};
use crate::time::Timestamp;
use crate::wire::{Message, Rcode, Rtype};

const S: u64 = NANOS;
/// The wall clock at the export (ns since the epoch).
const WALL: u64 = 1_700_000_000 * S;

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn key_of<'q>(c: &Cache, q: &'q [u8], flags: KeyFlags) -> Key<'q> {
    let m = Message::parse(q).unwrap();
    c.key(&q[12..m.question.name.end()], m.question.qtype, m.question.qclass, flags).unwrap()
}

fn put(c: &mut Cache, now: Timestamp, q: &[u8], ans: &[u8]) {
    let key = key_of(c, q, KeyFlags::default());
    c.insert(now, &key, ans, &Message::parse(ans).unwrap()).unwrap();
}

fn get(c: &mut Cache, now: Timestamp, q: &[u8]) -> (Lookup, Vec<u32>) {
    let key = key_of(c, q, KeyFlags::default());
    let mut out = [0u8; 1024];
    let l = c.lookup(now, &key, &mut out);
    let ttl = match l {
        Lookup::Hit { len, .. } => ttls(&out[..len]),
        _ => Vec::new(),
    };
    (l, ttl)
}

/// A whole dump of `c` taken at `now`, stamped WALL.
fn dump_of(c: &Cache, now: Timestamp) -> Vec<u8> {
    encode(WALL, &[c.export(now, Duration::ZERO)])
}

fn named(i: usize) -> Vec<u8> {
    query(1, &format!("host{i}.example.com"), Rtype::A, None)
}

#[test]
fn ttls_keep_counting_down_across_the_gap() {
    let mut old = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "example.com", Rtype::A, None);
    put(&mut old, t(100), &q, &answer(&q, Rcode::NOERROR, &[a(300, [192, 0, 2, 1]), a(120, [192, 0, 2, 2])], true));
    // Exported 30.4 s after the insert; loaded 5 s later by a process whose
    // clock is at 1 s.
    let file = dump_of(&old, Timestamp::from_millis(130_400));
    let mut new = Cache::new(CacheConfig::default(), 2);
    let r = new.import(t(1), WALL + 5 * S, &file).unwrap();
    assert_eq!((r.records, r.loaded, r.skipped()), (1, 1, 0));
    assert_eq!(r.age, Duration::from_secs(5));
    assert_eq!(new.stats().loaded.get(), 1);
    // 35.4 s old: TTLs down by 35, then by one more once 0.6 s has passed.
    let (l, ttl) = get(&mut new, t(1), &q);
    assert!(matches!(l, Lookup::Hit { kind: EntryKind::Positive, .. }));
    assert_eq!(ttl, vec![265, 85]);
    assert_eq!(get(&mut new, Timestamp::from_millis(1_500), &q).1, vec![265, 85]);
    assert_eq!(get(&mut new, Timestamp::from_millis(1_600), &q).1, vec![264, 84]);
    // It expires when the original would have: 120 s after the insert,
    // that is 84.6 s after the import; then it is stale.
    assert!(matches!(get(&mut new, Timestamp::from_millis(85_500), &q).0, Lookup::Hit { .. }));
    assert_eq!(get(&mut new, Timestamp::from_millis(85_600), &q).0, Lookup::Stale);
    // A clock younger than the age's fraction (a worker that just
    // started, at 0.2 s) cannot date the insert back: one second more off
    // until the fraction has passed, never one less.
    let mut young = Cache::new(CacheConfig::default(), 3);
    young.import(Timestamp::from_millis(200), WALL + 5 * S, &file).unwrap();
    assert_eq!(get(&mut young, Timestamp::from_millis(700), &q).1, vec![264, 84]);
    assert_eq!(get(&mut young, Timestamp::from_millis(1_800), &q).1, vec![263, 83]);
    assert_eq!(get(&mut young, Timestamp::from_millis(84_800), &q).0, Lookup::Stale);
}

#[test]
fn a_lead_makes_entries_older_never_younger() {
    let mut old = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "example.com", Rtype::A, None);
    put(&mut old, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(60, [192, 0, 2, 1])], false));
    // The stamp was read 2 s before this worker exported at t=10.
    let file = encode(WALL, &[old.export(t(10), Duration::from_secs(2))]);
    let mut new = Cache::new(CacheConfig::default(), 2);
    new.import(t(0), WALL + 3 * S, &file).unwrap();
    // Really 10 + 1 s old (the import ran 1 s after the export): 49 left.
    assert_eq!(get(&mut new, t(0), &q).1, vec![49]);
    assert_eq!(get(&mut new, Timestamp::from_millis(48_900), &q).1, vec![1]);
    assert_eq!(get(&mut new, t(49), &q).0, Lookup::Stale);
}

#[test]
fn expired_entries_are_skipped_and_stale_ones_stay_stale() {
    let cfg = CacheConfig { stale_window: Duration::from_secs(100), ..CacheConfig::default() };
    let mut old = Cache::new(cfg.clone(), 1);
    let short = query(1, "short.example.com", Rtype::A, None);
    let long = query(1, "long.example.com", Rtype::A, None);
    let fail = query(1, "fail.example.com", Rtype::A, None);
    let neg = query(1, "nx.example.com", Rtype::A, None);
    put(&mut old, t(0), &short, &answer(&short, Rcode::NOERROR, &[a(10, [1, 1, 1, 1])], false));
    put(&mut old, t(0), &long, &answer(&long, Rcode::NOERROR, &[a(1000, [2, 2, 2, 2])], false));
    put(&mut old, t(0), &fail, &answer(&fail, Rcode::SERVFAIL, &[], false));
    put(&mut old, t(0), &neg, &answer(&neg, Rcode::NXDOMAIN, &[soa(3600, 20)], false));
    let file = dump_of(&old, t(1));
    assert_eq!(Records::new(&file).unwrap().0.records, 4);
    // 30 s later: `short` expired 21 s ago (stale), the SERVFAIL is gone,
    // the NXDOMAIN expired 11 s ago (stale), `long` is fresh.
    let mut new = Cache::new(cfg.clone(), 2);
    let r = new.import(t(5), WALL + 30 * S, &file).unwrap();
    assert_eq!((r.loaded, r.expired), (3, 1));
    assert_eq!(new.stats().load_expired.get(), 1);
    assert_eq!(get(&mut new, t(5), &short).0, Lookup::Stale);
    let key = key_of(&new, &short, KeyFlags::default());
    let mut out = [0u8; 512];
    let len = new.lookup_stale(t(5), &key, &mut out).unwrap();
    assert_eq!(ttls(&out[..len]), vec![30], "served stale with the stale TTL");
    assert_eq!(get(&mut new, t(5), &fail).0, Lookup::Miss);
    assert_eq!(get(&mut new, t(5), &neg).0, Lookup::Stale);
    assert_eq!(get(&mut new, t(5), &long).1, vec![969]);
    // The stale window runs from the original expiry: 100 s after t=10 of
    // the old clock, i.e. 79 s after this import.
    assert!(new.has_stale(Timestamp::from_millis(83_900), &key));
    assert!(!new.has_stale(t(84), &key));
    // Past the whole window: nothing but `long` is loaded.
    let mut late = Cache::new(cfg, 3);
    let r = late.import(t(5), WALL + 200 * S, &file).unwrap();
    assert_eq!((r.loaded, r.expired), (1, 3));
}

#[test]
fn flags_and_kinds_survive() {
    let mut old = Cache::new(CacheConfig::default(), 1);
    let q = query(1, "Secure.Example.com", Rtype::A, Some((1232, true)));
    let ans = answer(&q, Rcode::NOERROR, &[a(60, [192, 0, 2, 9])], true);
    let do_cd = KeyFlags::new(true, true);
    let key = key_of(&old, &q, do_cd);
    old.insert(t(0), &key, &ans, &Message::parse(&ans).unwrap()).unwrap();
    let mut new = Cache::new(CacheConfig::default(), 2);
    new.import(t(0), WALL, &dump_of(&old, t(0))).unwrap();
    let mut out = [0u8; 512];
    // Found under the same flags (and any spelling), not without them.
    let other = query(1, "secure.EXAMPLE.com", Rtype::A, None);
    assert!(matches!(new.lookup(t(1), &key_of(&new, &other, do_cd), &mut out), Lookup::Hit { kind: EntryKind::Positive, .. }));
    assert_eq!(new.lookup(t(1), &key_of(&new, &other, KeyFlags::default()), &mut out), Lookup::Miss);
}

#[test]
fn the_union_of_several_exports_loads_once_keeping_the_longest() {
    let mut w0 = Cache::new(CacheConfig::default(), 1);
    let mut w1 = Cache::new(CacheConfig::default(), 2);
    let q = query(1, "shared.example.com", Rtype::A, None);
    put(&mut w0, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(100, [1, 1, 1, 1])], false));
    put(&mut w1, t(50), &q, &answer(&q, Rcode::NOERROR, &[a(100, [2, 2, 2, 2])], false));
    put(&mut w1, t(50), &named(1), &answer(&named(1), Rcode::NOERROR, &[a(100, [3, 3, 3, 3])], false));
    let file = encode(WALL, &[w0.export(t(60), Duration::ZERO), w1.export(t(60), Duration::ZERO)]);
    let mut new = Cache::new(CacheConfig::default(), 3);
    let r = new.import(t(0), WALL, &file).unwrap();
    assert_eq!((r.records, r.loaded, r.replaced, r.duplicates), (3, 2, 1, 0), "the later, longer copy replaces the first");
    assert_eq!(new.len(), 2);
    assert_eq!(get(&mut new, t(0), &q).1, vec![90]);
    // Loading it again adds nothing.
    let r = new.import(t(0), WALL, &file).unwrap();
    assert_eq!((r.loaded, r.duplicates), (0, 3));
    // The shorter copy alone does not replace the longer entry.
    let r = new.import(t(0), WALL, &encode(WALL, &[w0.export(t(60), Duration::ZERO)])).unwrap();
    assert_eq!(r.duplicates, 1);
    assert_eq!(get(&mut new, t(0), &q).1, vec![90]);
}

#[test]
fn a_smaller_cache_takes_what_fits_and_the_new_bounds() {
    let mut old = Cache::new(CacheConfig::default(), 1);
    for i in 0..100 {
        put(&mut old, t(0), &named(i), &answer(&named(i), Rcode::NOERROR, &[a(3000, [10, 0, 0, i as u8])], false));
    }
    let file = dump_of(&old, t(0));
    let cfg = CacheConfig { max_ttl: 600, ..CacheConfig::for_entries(16) };
    let mut new = Cache::new(cfg, 2);
    let r = new.import(t(0), WALL + S, &file).unwrap();
    assert_eq!(r.loaded, 100);
    assert_eq!(r.evicted, 84);
    assert_eq!(new.len(), 16);
    // The new max_ttl applies (never more than the entry had left either).
    let (l, ttl) = get(&mut new, t(0), &named(99));
    assert!(matches!(l, Lookup::Hit { .. }));
    assert_eq!(ttl, vec![600]);
}

/// A record as the writer would put it, around any answer bytes.
fn raw_dump(answer: &[u8], flags: u8, expires_in: i64) -> Vec<u8> {
    let mut e = Export::default();
    assert!(Record { expires_in, age: 0, orig_ttl: 60, flags, hints: 0, answer }.write(&mut e.bytes));
    e.records = 1;
    encode(WALL, &[e])
}

#[test]
fn records_the_cache_would_not_store_are_rejected() {
    let q = query(1, "example.com", Rtype::A, None);
    let mut c = Cache::new(CacheConfig::default(), 1);
    let good = answer(&q, Rcode::NOERROR, &[a(60, [1, 2, 3, 4])], false);
    let with_opt = answer(&q, Rcode::NOERROR, &[a(60, [1, 2, 3, 4])], true);
    let refused = answer(&q, Rcode::REFUSED, &[], false);
    let mut trailing = good.clone();
    trailing.push(0);
    for (bytes, flags) in [(&with_opt, 0), (&refused, 0), (&trailing, 0), (&good, 4), (&good[..20].to_vec(), 0)] {
        let r = c.import(t(0), WALL, &raw_dump(bytes, flags, 60 * S as i64)).unwrap();
        assert_eq!((r.loaded, r.rejected), (0, 1));
    }
    let r = c.import(t(0), WALL, &raw_dump(&good, 0, 60 * S as i64)).unwrap();
    assert_eq!(r.loaded, 1);
    // An answer longer than this cache keeps.
    let mut tiny = Cache::new(CacheConfig { max_answer_len: 20, ..CacheConfig::default() }, 1);
    assert_eq!(tiny.import(t(0), WALL, &raw_dump(&good, 0, 60 * S as i64)).unwrap().rejected, 1);
}

#[test]
fn unreadable_dumps_are_errors_and_damage_is_counted() {
    let mut old = Cache::new(CacheConfig::default(), 1);
    for i in 0..10 {
        put(&mut old, t(0), &named(i), &answer(&named(i), Rcode::NOERROR, &[a(300, [10, 0, 0, i as u8])], false));
    }
    let file = dump_of(&old, t(0));
    let mut c = Cache::new(CacheConfig::default(), 2);
    assert_eq!(c.import(t(0), WALL, &file[..HEADER_LEN - 1]).unwrap_err(), DumpError::Truncated);
    assert_eq!(c.import(t(0), WALL - S, &file).unwrap_err(), DumpError::FromTheFuture(S));
    let mut other = file.clone();
    other[8..10].copy_from_slice(&(VERSION + 1).to_be_bytes());
    assert_eq!(c.import(t(0), WALL, &other).unwrap_err(), DumpError::Version(VERSION + 1));
    assert_eq!(c.import(t(0), WALL, b"").unwrap_err(), DumpError::Truncated);
    assert!(c.is_empty());
    // Cut in the middle of the sixth record: five loaded, five damaged.
    let rec = (file.len() - HEADER_LEN) / 10;
    let r = c.import(t(0), WALL, &file[..HEADER_LEN + 5 * rec + rec / 2]).unwrap();
    assert_eq!((r.loaded, r.damaged), (5, 5));
    // A flipped bit in the third record's answer.
    let mut flipped = file.clone();
    flipped[HEADER_LEN + 2 * rec + 30] ^= 0x10;
    let mut c = Cache::new(CacheConfig::default(), 3);
    let r = c.import(t(0), WALL, &flipped).unwrap();
    assert_eq!((r.loaded, r.damaged), (2, 8));
}

/// A valid dump of `n` entries with TTLs from `ttl`.
fn sample(n: usize, ttl: u32) -> Vec<u8> {
    let mut old = Cache::new(CacheConfig::default(), 1);
    for i in 0..n {
        let q = named(i);
        put(&mut old, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(ttl + i as u32, [10, 0, 0, 1]), soa(ttl, 5)], i % 2 == 0));
    }
    dump_of(&old, t(1))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever the bytes, the reader returns: an error, or a report whose
    /// counts add up, with a cache that still works.
    #[test]
    fn any_bytes_are_refused_or_counted(body in proptest::collection::vec(any::<u8>(), 0..600), header in any::<bool>()) {
        let file = if header {
            let mut f = sample(0, 60);
            f.extend_from_slice(&body);
            f
        } else {
            body
        };
        let mut c = Cache::new(CacheConfig::for_entries(8), 1);
        if let Ok(r) = c.import(t(0), WALL, &file) {
            // Every counted record is accounted for, loaded or skipped.
            prop_assert!(r.loaded + r.replaced + r.skipped() >= r.records, "{r:?}");
            prop_assert!(c.len() <= 8);
        }
        let q = named(0);
        let _ = get(&mut c, t(1), &q);
    }

    /// Flipped bytes and cuts of a valid dump: never a panic, and what
    /// loads is never younger than the truth.
    #[test]
    fn damaged_dumps_load_only_checked_records(n in 1usize..6, at in any::<prop::sample::Index>(), bits in 1u8..=255, cut in any::<bool>()) {
        let good = sample(n, 100);
        let mut file = good.clone();
        let i = at.index(file.len());
        if cut { file.truncate(i) } else { file[i] ^= bits }
        let mut c = Cache::new(CacheConfig::default(), 1);
        if let Ok(r) = c.import(t(0), WALL + 2 * S, &file) {
            prop_assert!(r.damaged > 0 || r.rejected > 0 || file == good);
            prop_assert!(r.loaded <= n as u64);
        }
        for j in 0..n {
            if let (Lookup::Hit { .. }, ttl) = get(&mut c, t(0), &named(j)) {
                // Stored at 0, exported at 1, loaded 2 s later: 3 s old.
                prop_assert!(ttl[0] <= 100 + j as u32 - 3);
            }
        }
    }

    /// An imported entry never shows more TTL than the original has left,
    /// and is gone (or stale) when the original would be.
    #[test]
    fn never_more_ttl_than_left(ttl in 1u32..5000, stored_ms in 0u64..100_000, export_ms in 0u64..100_000,
                                gap_ms in 0u64..10_000, lead_ms in 0u64..3_000, now_ms in 0u64..3_000, later_ms in 0u64..6_000_000) {
        let stored = Timestamp::from_millis(stored_ms);
        let export = Timestamp::from_millis(stored_ms + export_ms);
        let q = named(7);
        let mut old = Cache::new(CacheConfig::default(), 1);
        put(&mut old, stored, &q, &answer(&q, Rcode::NOERROR, &[a(ttl, [1, 2, 3, 4])], false));
        let stamp = WALL - lead_ms * 1_000_000;
        let file = encode(stamp, &[old.export(export, Duration::from_millis(lead_ms))]);
        let mut new = Cache::new(CacheConfig::default(), 2);
        let now = Timestamp::from_millis(now_ms);
        let r = new.import(now, WALL + gap_ms * 1_000_000, &file).unwrap();
        prop_assert_eq!(r.loaded + r.expired, 1, "{:?}", r);
        // Real age of the entry at `now + later` of the new clock.
        let probe = Timestamp::from_millis(now_ms + later_ms);
        let age_ms = export_ms + gap_ms + later_ms;
        match get(&mut new, probe, &q) {
            (Lookup::Hit { .. }, t) => {
                prop_assert!(age_ms < u64::from(ttl) * 1000, "served {age_ms} ms after a {ttl} s TTL");
                // Whole seconds, as any cache shows them: below what is left plus one.
                prop_assert!(u64::from(t[0]) * 1000 < u64::from(ttl) * 1000 - age_ms + 1000, "TTL {} at age {age_ms} ms of {ttl} s", t[0]);
            }
            (Lookup::Stale, _) => prop_assert!(age_ms >= u64::from(ttl) * 1000, "stale at age {age_ms} of {ttl} s"),
            (l, _) => prop_assert!(age_ms >= u64::from(ttl) * 1000, "{l:?} at age {age_ms}"),
        }
    }
}
