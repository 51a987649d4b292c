//! The in-kernel tier's bookkeeping on a virtual clock.

use super::*;
use crate::cache::{CacheConfig, Key, Lookup, CHUNK};
use crate::testutil::{a, answer, query, soa};
use crate::wire::{Message, Rcode};

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn tiered(cfg: CacheConfig) -> Cache {
    let mut c = Cache::new(cfg, 7);
    c.enable_kernel_tier(KernelTierConfig { promote_after: 3, max_reply: 512, queue: 8 });
    c
}

fn key_of<'q>(c: &Cache, q: &'q [u8]) -> Key<'q> {
    let m = Message::parse(q).unwrap();
    let dnssec_ok = m.edns().is_some_and(|e| e.dnssec_ok());
    let cd = q[3] & 0x10 != 0;
    c.key(&q[12..m.question.name.end()], m.question.qtype, m.question.qclass, KeyFlags::new(dnssec_ok, cd)).unwrap()
}

fn put(c: &mut Cache, now: Timestamp, q: &[u8], ans: &[u8]) {
    let key = key_of(c, q);
    c.insert(now, &key, ans, &Message::parse(ans).unwrap()).unwrap();
}

fn hit(c: &mut Cache, now: Timestamp, q: &[u8]) -> Vec<u8> {
    let key = key_of(c, q);
    let mut out = [0u8; 1024];
    match c.lookup(now, &key, &mut out) {
        Lookup::Hit { len, .. } => out[..len].to_vec(),
        other => panic!("{other:?}"),
    }
}

/// Promotes `q`'s entry: hits until queued, then exports it.
fn promote(c: &mut Cache, now: Timestamp, q: &[u8]) -> KernelEntry {
    for _ in 0..3 {
        hit(c, now, q);
    }
    let mut e = KernelEntry::default();
    let p = c.next_promotion(now, &mut e).expect("queued after 3 hits");
    assert!(c.promoted(p, true));
    e
}

#[test]
fn an_entry_is_promoted_after_its_hits_and_exported_whole() {
    let mut c = tiered(CacheConfig::default());
    let q = query(1, "Www.Example.com", Rtype::A, None);
    put(&mut c, t(10), &q, &answer(&q, Rcode::NOERROR, &[a(300, [192, 0, 2, 1]), a(100, [192, 0, 2, 2])], true));
    let mut e = KernelEntry::default();
    hit(&mut c, t(11), &q);
    hit(&mut c, t(11), &q);
    assert!(c.next_promotion(t(11), &mut e).is_none(), "two hits are not enough");
    let stored = hit(&mut c, t(11), &q);
    let p = c.next_promotion(t(11), &mut e).expect("promoted at the third hit");
    assert!(c.promoted(p, true));
    assert_eq!(c.in_kernel(), 1);
    assert_eq!(e.key.name(), b"\x03www\x07example\x03com\x00");
    assert_eq!((e.key.qtype, e.key.qclass), (Rtype::A, Class::IN));
    assert_eq!(e.header, stored[2..12]);
    let q_end = 12 + 17 + 4;
    // The body is the stored answer after the question, TTLs as stored.
    let mut body = stored[q_end..].to_vec();
    for &(off, ttl) in e.ttls() {
        body[usize::from(off)..usize::from(off) + 4].copy_from_slice(&ttl.to_be_bytes());
    }
    assert_eq!(e.body(), &body[..]);
    assert_eq!(e.ttls().iter().map(|t| t.1).collect::<Vec<_>>(), vec![300, 100]);
    assert_eq!(e.inserted, t(10));
    // The smallest TTL is 100 s: refreshed early in its last 10 s.
    assert_eq!(e.serve_until, t(10 + 90));
    // In the kernel now: hits do not queue it again.
    for _ in 0..10 {
        hit(&mut c, t(12), &q);
    }
    assert!(c.next_promotion(t(12), &mut e).is_none());
}

#[test]
fn the_model_reply_equals_the_cache_hit_the_engine_would_send() {
    let mut c = tiered(CacheConfig::default());
    let q = query(1, "example.com", Rtype::A, Some((1232, false)));
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(60, [192, 0, 2, 1])], true));
    let e = promote(&mut c, t(1), &q);
    // A query in another spelling, 7 s later.
    let q2 = query(0x4242, "ExAmPlE.cOm", Rtype::A, Some((4096, false)));
    let mut out = [0u8; 512];
    let len = e.reply(&q2, t(7), 1232, &mut out).expect("answered");
    let r = &out[..len];
    assert_eq!(&r[..2], &[0x42, 0x42]);
    assert_eq!(&r[12..25], &q2[12..25], "the client's spelling");
    let m = Message::parse(r).unwrap();
    assert_eq!(m.edns().unwrap().udp_size, 1232);
    assert_eq!(crate::testutil::ttls(r), vec![53]);
    // Not from serve_until on: 60 s less the last 10% (the early refresh).
    assert_eq!(e.serve_until, t(54));
    assert!(e.reply(&q2, t(53), 1232, &mut out).is_some());
    assert!(e.reply(&q2, t(54), 1232, &mut out).is_none());
    // Another type, or DO set: another key.
    assert!(e.reply(&query(3, "example.com", Rtype::AAAA, None), t(7), 1232, &mut out).is_none());
    assert!(e.reply(&query(3, "example.com", Rtype::A, Some((1232, true))), t(7), 1232, &mut out).is_none());
}

#[test]
fn every_removal_of_an_in_kernel_entry_is_a_demotion() {
    let mut c = tiered(CacheConfig::default());
    let names = ["a.example", "b.example", "c.example", "d.example"];
    let qs: Vec<_> = names.iter().map(|n| query(1, n, Rtype::A, None)).collect();
    for q in &qs {
        put(&mut c, t(0), q, &answer(q, Rcode::NOERROR, &[a(600, [192, 0, 2, 1])], false));
        promote(&mut c, t(1), q);
    }
    assert_eq!(c.in_kernel(), 4);
    let mut gone = Vec::new();
    c.take_demotions(&mut gone);
    assert!(gone.is_empty());
    // Replaced by a fresher answer.
    put(&mut c, t(2), &qs[0], &answer(&qs[0], Rcode::NOERROR, &[a(600, [192, 0, 2, 9])], false));
    c.take_demotions(&mut gone);
    assert_eq!(gone.iter().map(|k| k.name().to_vec()).collect::<Vec<_>>(), vec![b"\x01a\x07example\x00".to_vec()]);
    // ... and promoted again at its next hit.
    hit(&mut c, t(3), &qs[0]);
    let mut e = KernelEntry::default();
    let p = c.next_promotion(t(3), &mut e).expect("a refreshed hot entry goes up at once");
    assert!(c.promoted(p, true));
    // Removed for a records change.
    c.remove_name(b"\x01b\x07example\x00");
    // The whole cache flushed.
    gone.clear();
    c.take_demotions(&mut gone);
    assert_eq!(gone.len(), 1);
    c.clear();
    c.take_demotions(&mut gone);
    assert_eq!(gone.len(), 1 + 3);
    assert_eq!(c.in_kernel(), 0);
}

#[test]
fn eviction_of_an_in_kernel_entry_is_a_demotion_and_cold_ones_are_demoted() {
    let cfg = CacheConfig { max_entries: 4, max_bytes: 4 * CHUNK, ..CacheConfig::default() };
    let mut c = tiered(cfg);
    let hot = query(1, "hot.example", Rtype::A, None);
    put(&mut c, t(0), &hot, &answer(&hot, Rcode::NOERROR, &[a(600, [192, 0, 2, 1])], false));
    let e = promote(&mut c, t(1), &hot);
    // A scan of one-off names does not push an in-kernel entry out.
    for i in 0..20 {
        let q = query(1, &format!("n{i}.example"), Rtype::A, None);
        put(&mut c, t(2), &q, &answer(&q, Rcode::NOERROR, &[a(600, [192, 0, 2, 2])], false));
    }
    let mut gone = Vec::new();
    c.take_demotions(&mut gone);
    assert!(gone.is_empty());
    hit(&mut c, t(3), &hot);
    // Gone cold in the kernel: the worker demotes it, then it can be evicted.
    c.demote(&e.key);
    assert_eq!(c.in_kernel(), 0);
    for i in 20..40 {
        let q = query(1, &format!("n{i}.example"), Rtype::A, None);
        put(&mut c, t(4), &q, &answer(&q, Rcode::NOERROR, &[a(600, [192, 0, 2, 2])], false));
    }
    c.take_demotions(&mut gone);
    assert!(gone.is_empty(), "a demoted entry leaves no second demotion");
}

#[test]
fn what_the_kernel_cannot_answer_is_never_promoted() {
    let mut c = tiered(CacheConfig::default());
    let mut e = KernelEntry::default();
    // SERVFAIL is cached for seconds, never answered by the kernel.
    let q = query(1, "broken.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::SERVFAIL, &[], false));
    for _ in 0..3 {
        hit(&mut c, t(0), &q);
    }
    assert!(c.next_promotion(t(0), &mut e).is_none());
    // Too long for a 512-byte reply with an OPT.
    let q = query(1, "big.example", Rtype::A, None);
    let many: Vec<_> = (0..40).map(|i| a(600, [192, 0, 2, i])).collect();
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &many, false));
    for _ in 0..3 {
        hit(&mut c, t(0), &q);
    }
    assert!(c.next_promotion(t(0), &mut e).is_none());
    // ... and not counted again.
    for _ in 0..10 {
        hit(&mut c, t(0), &q);
    }
    assert!(c.next_promotion(t(0), &mut e).is_none());
    // Negative answers are.
    let q = query(1, "nx.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NXDOMAIN, &[soa(3600, 60)], false));
    let e = promote(&mut c, t(0), &q);
    assert_eq!(e.header[1] & 0x0f, 3);
}

#[test]
fn an_entry_gone_before_its_export_is_skipped() {
    let mut c = tiered(CacheConfig::default());
    let q = query(1, "x.example", Rtype::A, None);
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(600, [192, 0, 2, 1])], false));
    for _ in 0..3 {
        hit(&mut c, t(0), &q);
    }
    c.clear();
    let mut e = KernelEntry::default();
    assert!(c.next_promotion(t(0), &mut e).is_none());
    // Exported, then gone before the worker reported the insert.
    put(&mut c, t(0), &q, &answer(&q, Rcode::NOERROR, &[a(600, [192, 0, 2, 1])], false));
    for _ in 0..3 {
        hit(&mut c, t(0), &q);
    }
    let p = c.next_promotion(t(0), &mut e).unwrap();
    c.clear();
    assert!(!c.promoted(p, true), "the worker must delete the copy it inserted");
}

#[test]
fn queries_the_kernel_leaves_to_userspace() {
    let q = query(9, "example.com", Rtype::A, Some((1232, true)));
    let parsed = KernelQuery::parse(&q).unwrap();
    assert!(parsed.opt && parsed.key.flags.0 & KeyFlags::DO != 0);
    // A response, another opcode, two questions, an answer record.
    for (at, v) in [(2usize, 0x80u8), (2, 0x08), (5, 2), (7, 1)] {
        let mut bad = q.clone();
        bad[at] |= v;
        assert!(KernelQuery::parse(&bad).is_none(), "byte {at} |= {v:#x}");
    }
    // EDNS version 1.
    let mut bad = q.clone();
    let opt = bad.len() - 11;
    bad[opt + 6] = 1;
    assert!(KernelQuery::parse(&bad).is_none());
    // Trailing bytes.
    let mut bad = q.clone();
    bad.push(0);
    assert!(KernelQuery::parse(&bad).is_none());
    // A compressed name.
    let mut bad = query(9, "a", Rtype::A, None);
    bad[12] = 0xc0;
    assert!(KernelQuery::parse(&bad).is_none());
    // A name over KERNEL_NAME_MAX.
    let long = ["abcdefghijklmnopqrstuvwxyz012345678"; 4].join(".");
    assert!(KernelQuery::parse(&query(9, &long, Rtype::A, None)).is_none());
}
