//! Queries, answers, cache, failover and bad input.

use super::*;

#[test]
fn miss_is_forwarded_answered_then_served_from_cache_with_ttl_counted_down() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("www.Example.com");
    assert_eq!(sent.addr, B0.parse().unwrap());
    assert!(sent.qname().eq_ignore_ascii_case("www.example.com."), "{}", sent.qname());
    let reply = w.deliver(&sent, &[a(300, [192, 0, 2, 1])]);
    assert_eq!(reply.qname(), "www.Example.com.", "the client's spelling, not the 0x20 one sent upstream");
    assert_eq!(reply.header().id(), 101, "the client's ID, not ours");
    assert_eq!(reply.ttls(), vec![300]);
    let m = Message::parse(&reply.bytes).unwrap();
    assert_eq!(m.edns().unwrap().udp_size, 1232, "our OPT, not the backend's");

    w.advance(secs(100));
    let hit = w.ask_answered("WWW.example.COM");
    assert_eq!(hit.qname(), "WWW.example.COM.", "0x20 spelling survives a hit");
    assert_eq!(hit.header().id(), 102);
    assert!(hit.header().qr() && hit.header().rd() && !hit.header().tc());
    assert_eq!(hit.ttls(), vec![200]);
    assert_eq!(w.stats().cache_hits.get(), 1);
    assert_eq!(w.stats().cache_misses.get(), 1);
    assert_eq!(w.stats().replies_with(Rcode::NOERROR), 2);
    let lat: Vec<u64> = w.stats().latency.iter().map(|c| c.get()).collect();
    assert_eq!((lat[0], lat.iter().sum::<u64>()), (2, 2), "the miss was answered at once on the virtual clock, the hit too");
}

#[test]
fn entry_expires_and_is_asked_again() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("a.test");
    w.deliver(&sent, &[a(60, [10, 0, 0, 1])]);
    w.advance(secs(59));
    assert_eq!(w.ask_answered("a.test").ttls(), vec![1]);
    // That hit was of a popular entry about to expire: a refresh went out.
    let (refresh, _) = w.tick();
    assert_eq!((refresh.len(), w.stats().refreshes.get()), (1, 1));
    w.advance(secs(1));
    // Expired: the next query waits on the refresh in flight instead of
    // asking again, and gets its answer.
    assert!(matches!(w.ask("a.test", Rtype::A), Outcome::Wait));
    let ans = refresh[0].answer(Rcode::NOERROR, &[a(60, [10, 0, 0, 2])]);
    assert_eq!(w.backend_says_on(&refresh[0], &ans), AnswerVerdict::Consumed);
    let (_, replies) = w.tick();
    assert_eq!(replies.len(), 1);
    assert_eq!((replies[0].ttls(), replies[0].header().id()), (vec![60], w.next_id));
    // Expired again with nothing in flight: asked again.
    w.advance(secs(60));
    let again = w.ask_forwarded("a.test");
    assert_eq!(w.deliver(&again, &[a(60, [10, 0, 0, 3])]).ttls(), vec![60]);
}

#[test]
fn negative_answers_are_cached_for_the_soa_minimum() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("nope.test");
    let nx = sent.answer(Rcode::NXDOMAIN, &[soa(3600, 30)]);
    let AnswerVerdict::Reply { len, .. } = w.backend_says(sent.addr, &nx) else { panic!() };
    assert_eq!(Header::new_checked(&w.out[..len]).unwrap().rcode(), Rcode::NXDOMAIN);
    w.advance(secs(10));
    let hit = w.ask_answered("nope.test");
    assert_eq!(hit.rcode(), Rcode::NXDOMAIN);
    assert_eq!(hit.ttls(), vec![20]);
    assert_eq!(w.stats().cache_negative_hits.get(), 1);
    w.advance(secs(20));
    w.ask_forwarded("nope.test");
}

#[test]
fn a_backend_that_stops_answering_costs_a_retry_then_is_marked_down_probed_and_taken_back() {
    let mut w = World::new(&[B0, B1]);
    let b0: SocketAddr = B0.parse().unwrap();
    let b1: SocketAddr = B1.parse().unwrap();
    // B0 dies. Each query sent to it is retried on B1 after one try timeout.
    let mut to_b0 = 0;
    let mut probe = None;
    for i in 0..8 {
        let name = format!("n{i}.test");
        let sent = w.ask_forwarded(&name);
        if sent.addr == b1 {
            w.deliver(&sent, &[a(60, [10, 0, 0, 1])]);
            continue;
        }
        to_b0 += 1;
        w.advance(Duration::from_millis(1000));
        let (sent, replies) = w.tick();
        assert!(replies.is_empty());
        let (retries, probes): (Vec<_>, Vec<_>) = sent.into_iter().partition(|s| !s.qname().eq_ignore_ascii_case("id.server."));
        assert_eq!(retries.len(), 1, "re-sent once");
        assert_eq!(retries[0].addr, b1, "to the other backend");
        let reply = w.deliver(&retries[0], &[a(60, [10, 0, 0, 1])]);
        assert_eq!(reply.header().id(), w.next_id, "no query lost: the client gets its answer");
        if let Some(p) = probes.into_iter().next() {
            assert_eq!(p.addr, b0, "the silent backend is probed");
            probe = Some(p);
            break;
        }
        assert_eq!(w.engine.pool().state(BackendId(0)), BackendState::Up);
    }
    assert_eq!(to_b0, 3, "suspect after 3 silent timeouts in a row");
    assert!(probe.is_some() && w.engine.pool().is_suspect(BackendId(0)));
    // The probe is not answered either: down, after the probe timeout.
    w.advance(Duration::from_millis(1000));
    w.tick();
    assert_eq!(w.engine.pool().state(BackendId(0)), BackendState::Down);
    assert_eq!(w.stats().backend_down.get(), 1);
    assert_eq!(w.stats().retried.get(), 3);
    assert_eq!(w.stats().slow_tries.get(), 0, "silence is not a slow name");
    // While down, every query goes straight to B1.
    for i in 0..4 {
        let sent = w.ask_forwarded(&format!("m{i}.test"));
        assert_eq!(sent.addr, b1);
        w.deliver(&sent, &[a(60, [10, 0, 0, 1])]);
    }
    // After the probe interval a probe goes to B0; it still does not answer.
    w.advance(Duration::from_millis(500));
    let (probes, _) = w.tick();
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].addr, b0);
    assert_eq!(probes[0].qname().to_ascii_lowercase(), "id.server.");
    w.advance(Duration::from_millis(1000));
    assert!(w.tick().0.is_empty(), "failed probe: backoff doubles to 1 s");
    w.advance(Duration::from_millis(1000));
    let (probes, _) = w.tick();
    assert_eq!(probes.len(), 1, "probed again after the backoff");
    // B0 is back: two good probe answers bring it up.
    let ans = answer(&probes[0].bytes, Rcode::REFUSED, &[], true);
    assert_eq!(w.backend_says(b0, &ans), AnswerVerdict::Consumed);
    let (probes, _) = w.tick();
    assert_eq!(probes.len(), 1, "next probe right after a good one");
    let ans = answer(&probes[0].bytes, Rcode::NOERROR, &[], true);
    assert_eq!(w.backend_says(b0, &ans), AnswerVerdict::Consumed);
    assert_eq!(w.engine.pool().state(BackendId(0)), BackendState::Up);
    assert_eq!(w.stats().backend_up.get(), 1);
    // And takes traffic again.
    let addrs: Vec<_> = (0..4).map(|i| w.ask_forwarded(&format!("k{i}.test")).addr).collect();
    assert!(addrs.contains(&b0) && addrs.contains(&b1), "{addrs:?}");
}

#[test]
fn with_every_backend_down_a_stale_answer_then_servfail() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("s.test");
    w.deliver(&sent, &[a(10, [10, 9, 9, 9])]);
    w.advance(secs(11)); // expired, within the stale window
                         // The backend has died: three tries time out, then the stale answer.
    let first = w.ask_forwarded("s.test");
    assert_eq!(first.addr, B0.parse().unwrap());
    let stale = w.first_reply(Duration::from_millis(1000), 4).expect("a stale answer");
    assert_eq!(stale.rcode(), Rcode::NOERROR);
    assert_eq!(stale.ttls(), vec![30], "RFC 8767 stale TTL");
    assert_eq!(stale.header().id(), w.next_id);
    assert_eq!(w.stats().stale_answers.get(), 1);
    assert_eq!(w.engine.pool().state(BackendId(0)), BackendState::Down);
    // The backend is down now: stale answers come at once ...
    let r = w.ask_answered("s.test");
    assert_eq!(r.ttls(), vec![30]);
    // ... and a name never seen is still asked (panic mode: the pool may
    // have marked a live backend down under overload) ...
    let sent = w.ask_forwarded("never.test");
    assert_eq!(sent.addr, B0.parse().unwrap());
    assert_eq!(w.stats().panic_forwards.get(), 1);
    // ... and gets SERVFAIL when nothing answers within the deadline.
    let r = w.first_reply(Duration::from_millis(500), 8).expect("SERVFAIL");
    assert_eq!((r.rcode(), r.qname().as_str()), (Rcode::SERVFAIL, "never.test."));
    assert_eq!(w.stats().gave_up.get(), 1);
}

#[test]
fn when_every_backend_is_marked_down_one_that_still_answers_is_used() {
    let mut w = World::new(&[B0]);
    w.take_down_the_only_backend();
    // A new query is still sent to it, and its answer reaches the client.
    let sent = w.ask_forwarded("fine.test");
    let reply = w.deliver(&sent, &[a(60, [10, 0, 0, 9])]);
    assert_eq!(reply.rcode(), Rcode::NOERROR);
    assert_eq!(reply.ttls(), vec![60]);
}

#[test]
fn a_query_no_backend_answers_ends_in_servfail_within_the_deadline() {
    let mut w = World::new(&[B0, B1]);
    let start = w.now;
    w.ask_forwarded("lost.test");
    let r = w.first_reply(Duration::from_millis(500), 10).expect("SERVFAIL");
    assert_eq!(r.rcode(), Rcode::SERVFAIL);
    assert!(w.now.saturating_since(start) <= Duration::from_millis(3500));
    assert_eq!(w.stats().timeouts.get(), 3, "three tries");
    assert_eq!(w.engine.in_flight(), 0, "nothing left behind");
}

#[test]
fn spoofed_answers_are_ignored_and_counted() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("bank.test");
    let good = sent.answer(Rcode::NOERROR, &[a(60, [10, 1, 1, 1])]);
    // Right ID and question, wrong source.
    let evil: SocketAddr = "127.0.0.9:5301".parse().unwrap();
    assert_eq!(w.backend_says(evil, &good), AnswerVerdict::Drop(DropReason::AnswerWrongSource));
    // Wrong port.
    assert_eq!(w.backend_says("127.0.0.1:5399".parse().unwrap(), &good), AnswerVerdict::Drop(DropReason::AnswerWrongSource));
    // Wrong ID.
    let mut bad_id = good.clone();
    bad_id[0] ^= 0xff;
    bad_id[1] ^= 0x5a;
    assert_eq!(w.backend_says(sent.addr, &bad_id), AnswerVerdict::Drop(DropReason::AnswerUnknownId));
    // Wrong question.
    let mut other = query(0, "evil.test", Rtype::A, None);
    other[..2].copy_from_slice(&sent.bytes[..2]);
    let wrong_q = answer(&other, Rcode::NOERROR, &[a(60, [6, 6, 6, 6])], false);
    assert_eq!(w.backend_says(sent.addr, &wrong_q), AnswerVerdict::Drop(DropReason::AnswerWrongQuestion));
    // Garbage.
    assert_eq!(w.backend_says(sent.addr, &good[..5]), AnswerVerdict::Drop(DropReason::AnswerMalformed));
    let s = w.stats();
    assert_eq!(s.drops_for(DropReason::AnswerWrongSource), 2);
    assert_eq!(s.drops_for(DropReason::AnswerUnknownId), 1);
    assert_eq!(s.drops_for(DropReason::AnswerWrongQuestion), 1);
    // The real answer still gets through, once.
    let r = w.deliver(&sent, &[a(60, [10, 1, 1, 1])]);
    assert_eq!(r.rcode(), Rcode::NOERROR);
    assert_eq!(w.backend_says(sent.addr, &good), AnswerVerdict::Drop(DropReason::AnswerUnknownId), "a replay is unknown");
}

#[test]
fn bad_queries_get_error_rcodes_or_counted_drops() {
    let mut w = World::new(&[B0]);
    let c = client();
    // Too short: dropped.
    assert!(matches!(w.send_raw(&c, &[1, 2, 3]), Outcome::Drop(DropReason::QueryTooShort)));
    // QR set: dropped.
    let mut q = query(5, "x.test", Rtype::A, None);
    q[2] |= 0x80;
    assert!(matches!(w.send_raw(&c, &q), Outcome::Drop(DropReason::QueryIsResponse)));
    // Opcode UPDATE: NOTIMP.
    let mut q = query(5, "x.test", Rtype::A, None);
    q[2] |= 5 << 3;
    let Outcome::Reply(r) = w.send_raw(&c, &q) else { panic!() };
    assert_eq!((r.rcode(), r.header().id(), r.header().opcode()), (Rcode::NOTIMP, 5, Opcode::UPDATE));
    assert_eq!(r.header().flags() & flags::RA, 0, "NOTIMP claims no recursion");
    assert_ne!(r.header().flags() & flags::RD, 0, "RD is copied (RFC 1035 4.1.1)");
    // Two questions: FORMERR.
    let mut q = query(6, "x.test", Rtype::A, None);
    q[5] = 2;
    let Outcome::Reply(r) = w.send_raw(&c, &q) else { panic!() };
    assert_eq!((r.rcode(), r.header().qdcount()), (Rcode::FORMERR, 0));
    // A truncated question: FORMERR.
    let q = query(7, "x.test", Rtype::A, None);
    let Outcome::Reply(r) = w.send_raw(&c, &q[..q.len() - 3]) else { panic!() };
    assert_eq!(r.rcode(), Rcode::FORMERR);
    // EDNS version 1: BADVERS (extended rcode 16) with an OPT.
    let mut q = query(8, "x.test", Rtype::A, Some((1232, false)));
    let n = q.len();
    q[n - 5] = 1; // OPT TTL: the version byte
    let Outcome::Reply(r) = w.send_raw(&c, &q) else { panic!() };
    let m = Message::parse(&r.bytes).unwrap();
    assert_eq!((r.header().rcode().0, m.edns().unwrap().ext_rcode), (0, 1));
    // A client outside the allowed networks: REFUSED, question echoed.
    let outsider = Client { addr: "192.0.2.7:5555".parse().unwrap(), ..c };
    let Outcome::Reply(r) = w.send_raw(&outsider, &query(9, "x.test", Rtype::A, None)) else { panic!() };
    assert_eq!((r.rcode(), r.qname().as_str()), (Rcode::REFUSED, "x.test."));
    let s = w.stats();
    assert_eq!((s.notimp.get(), s.formerr.get(), s.badvers.get(), s.refused_acl.get()), (1, 2, 1, 1));
    assert_eq!(s.drops_for(DropReason::QueryTooShort) + s.drops_for(DropReason::QueryIsResponse), 2);
    assert_eq!(s.replies_with(Rcode::BADVERS), 1);
    // And the engine still answers.
    w.ask_forwarded("fine.test");
}

#[test]
fn an_answer_too_large_for_the_client_gets_tc() {
    let mut w = World::new(&[B0]);
    let c = client();
    // No EDNS: 512 bytes at most.
    let q = query(77, "big.test", Rtype::TXT, None);
    let Outcome::Forward(sent) = w.send_raw(&c, &q) else { panic!() };
    let txt = |i: u8| Rr { section: Section::Answer, rtype: Rtype::TXT, ttl: 60, rdata: [&[99u8][..], &[b'a' + i; 99]].concat() };
    let rrs: Vec<_> = (0..8).map(txt).collect();
    let ans = sent.answer(Rcode::NOERROR, &rrs);
    assert!(ans.len() > 512);
    let AnswerVerdict::Reply { len, .. } = w.backend_says(sent.addr, &ans) else { panic!() };
    let h = Header::new_checked(&w.out[..len]).unwrap();
    assert!(h.tc() && len <= 512);
    assert_eq!((h.id(), h.ancount(), h.arcount()), (77, 0, 0));
    // The full answer was cached: a hit for a small client is TC too ...
    let Outcome::Reply(r) = w.send_raw(&c, &query(78, "big.test", Rtype::TXT, None)) else { panic!() };
    assert!(r.header().tc());
    // ... and whole over TCP.
    let tcp = Client { transport: Transport::Tcp, ..c };
    let Outcome::Reply(r) = w.send_raw(&tcp, &query(79, "big.test", Rtype::TXT, None)) else { panic!() };
    assert!(!r.header().tc());
    assert_eq!(r.header().ancount(), 8);
    assert_eq!(w.stats().truncated.get(), 2);
}

#[test]
fn a_popular_entry_is_refreshed_before_it_expires() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("hot.test");
    w.deliver(&sent, &[a(100, [10, 0, 0, 1])]);
    w.advance(secs(95));
    // This hit is served from the cache and asks the backend in the background.
    assert_eq!(w.ask_answered("hot.test").ttls(), vec![5]);
    let (refresh, replies) = w.tick();
    assert!(replies.is_empty());
    assert_eq!(refresh.len(), 1);
    assert_eq!(w.stats().refreshes.get(), 1);
    let ans = refresh[0].answer(Rcode::NOERROR, &[a(100, [10, 0, 0, 2])]);
    assert_eq!(w.backend_says(refresh[0].addr, &ans), AnswerVerdict::Consumed);
    w.advance(secs(10));
    assert_eq!(w.ask_answered("hot.test").ttls(), vec![90], "the refreshed entry, no miss");
    assert_eq!(w.stats().cache_misses.get(), 1);
}

#[test]
fn servfail_from_a_backend_is_passed_on_and_cached_briefly() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("broken.test");
    let sf = sent.answer(Rcode::SERVFAIL, &[]);
    let AnswerVerdict::Reply { len, .. } = w.backend_says(sent.addr, &sf) else { panic!() };
    assert_eq!(Header::new_checked(&w.out[..len]).unwrap().rcode(), Rcode::SERVFAIL);
    w.advance(secs(1));
    assert_eq!(w.ask_answered("broken.test").rcode(), Rcode::SERVFAIL);
    w.advance(secs(2));
    w.ask_forwarded("broken.test");
}

#[test]
fn outgoing_ids_are_unpredictable_and_unique_in_flight() {
    let mut w = World::with(&[B0], |c| c.pending_capacity = 2000);
    let mut ids = std::collections::HashSet::new();
    for i in 0..1000 {
        let s = w.ask_forwarded(&format!("id{i}.test"));
        ids.insert(u16::from_be_bytes([s.bytes[0], s.bytes[1]]));
    }
    assert_eq!(ids.len(), 1000, "no ID reused while in flight");
    let sequential = ids.iter().filter(|&&id| ids.contains(&id.wrapping_add(1))).count();
    assert!(sequential < 100, "IDs look sequential: {sequential}");
}

#[test]
fn a_full_pending_table_drops_and_counts() {
    let mut w = World::with(&[B0], |c| c.pending_capacity = 2);
    w.ask_forwarded("p1.test");
    w.ask_forwarded("p2.test");
    assert!(matches!(w.ask("p3.test", Rtype::A), Outcome::Drop(DropReason::PendingFull)));
    assert_eq!(w.stats().drops_for(DropReason::PendingFull), 1);
}

#[test]
fn same_seed_same_behaviour() {
    let run = || {
        let mut w = World::new(&[B0, B1]);
        (0..20).map(|i| w.ask_forwarded(&format!("d{i}.test")).bytes).collect::<Vec<_>>()
    };
    assert_eq!(run(), run(), "deterministic for a given seed");
}

#[test]
fn a_truncated_backend_answer_reaches_the_client_truncated() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("huge.test");
    let tc = sent.truncated();
    let AnswerVerdict::Reply { len, .. } = w.backend_says(sent.addr, &tc) else { panic!() };
    assert!(Header::new_checked(&w.out[..len]).unwrap().tc(), "TC kept: the client must retry over TCP");
    assert_eq!(w.stats().not_cached.get(), 1);
    w.ask_forwarded("huge.test");
}
