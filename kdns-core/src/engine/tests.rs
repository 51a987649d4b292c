//! Engine scenarios on a virtual clock: a query, what the backends say,
//! time passing, and the answer the client gets.

use super::*;
use crate::testutil::{a, answer, query, soa, ttls, Rr};
use crate::upstream::BackendState;
use crate::wire::Section;

const B0: &str = "127.0.0.1:5301";
const B1: &str = "127.0.0.1:5302";

struct World {
    engine: Engine,
    now: Timestamp,
    out: Vec<u8>,
    next_id: u16,
}

/// What the client saw.
#[derive(Debug)]
struct Reply {
    bytes: Vec<u8>,
}

impl Reply {
    fn header(&self) -> Header<&[u8]> {
        Header::new_checked(&self.bytes[..]).unwrap()
    }
    fn rcode(&self) -> Rcode {
        self.header().rcode()
    }
    fn ttls(&self) -> Vec<u32> {
        ttls(&self.bytes)
    }
    fn qname(&self) -> String {
        let m = Message::parse(&self.bytes).unwrap();
        m.question.name.display(&self.bytes).to_string()
    }
}

/// A query the engine sent to a backend.
#[derive(Debug, Clone)]
struct Sent {
    backend: BackendId,
    addr: SocketAddr,
    port: u16,
    bytes: Vec<u8>,
}

impl Sent {
    fn answer(&self, rcode: Rcode, rrs: &[Rr]) -> Vec<u8> {
        answer(&self.bytes, rcode, rrs, true)
    }
    fn qname(&self) -> String {
        let m = Message::parse(&self.bytes).unwrap();
        m.question.name.display(&self.bytes).to_string()
    }
}

#[derive(Debug)]
enum Outcome {
    Reply(Reply),
    Forward(Sent),
    Wait,
    Drop(DropReason),
}

fn client() -> Client {
    Client { addr: "127.0.0.1:40000".parse().unwrap(), local: "127.0.0.1:53".parse().unwrap(), transport: Transport::Udp, tag: 7 }
}

impl World {
    fn new(backends: &[&str]) -> World {
        Self::with(backends, |_| {})
    }

    fn with(backends: &[&str], tweak: impl FnOnce(&mut EngineConfig)) -> World {
        let mut cfg = EngineConfig {
            backends: backends.iter().map(|b| BackendSpec::new(b.parse().unwrap())).collect(),
            cache: CacheConfig::for_entries(1024),
            // Round numbers for the scenarios below.
            try_timeout: Duration::from_millis(1000),
            query_deadline: Duration::from_millis(3500),
            // One client asks everything here; the fair-share scenarios
            // turn the limits on.
            limits: ClientLimits { max_pending: 0, miss_rate: 0, ..ClientLimits::default() },
            ..EngineConfig::default()
        };
        tweak(&mut cfg);
        World { engine: Engine::new(cfg).unwrap(), now: Timestamp::from_secs(1000), out: vec![0; 65535], next_id: 100 }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn send_raw(&mut self, c: &Client, q: &[u8]) -> Outcome {
        match self.engine.handle_query(self.now, c, q, &mut self.out) {
            Verdict::Reply(len) => Outcome::Reply(Reply { bytes: self.out[..len].to_vec() }),
            Verdict::Forward { backend, addr, len, port } => {
                Outcome::Forward(Sent { backend, addr, port, bytes: self.out[..len].to_vec() })
            }
            Verdict::Wait => Outcome::Wait,
            Verdict::Drop(r) => Outcome::Drop(r),
        }
    }

    fn ask(&mut self, name: &str, qtype: Rtype) -> Outcome {
        self.next_id += 1;
        let q = query(self.next_id, name, qtype, Some((1232, false)));
        self.send_raw(&client(), &q)
    }

    fn ask_forwarded(&mut self, name: &str) -> Sent {
        match self.ask(name, Rtype::A) {
            Outcome::Forward(s) => s,
            Outcome::Reply(r) => panic!("expected a forward, got a reply {:?}", r.rcode()),
            Outcome::Wait => panic!("expected a forward, got a wait"),
            Outcome::Drop(d) => panic!("expected a forward, got a drop {d:?}"),
        }
    }

    fn ask_answered(&mut self, name: &str) -> Reply {
        match self.ask(name, Rtype::A) {
            Outcome::Reply(r) => r,
            Outcome::Forward(s) => panic!("expected a reply, got a forward to {:?}", s.backend),
            Outcome::Wait => panic!("expected a reply, got a wait"),
            Outcome::Drop(d) => panic!("expected a reply, got a drop {d:?}"),
        }
    }

    fn backend_says(&mut self, from: SocketAddr, bytes: &[u8]) -> AnswerVerdict {
        self.engine.handle_backend_answer(self.now, from, 0, bytes, &mut self.out)
    }

    fn backend_says_on(&mut self, sent: &Sent, bytes: &[u8]) -> AnswerVerdict {
        self.engine.handle_backend_answer(self.now, sent.addr, sent.port, bytes, &mut self.out)
    }

    fn deliver(&mut self, sent: &Sent, rrs: &[Rr]) -> Reply {
        let ans = sent.answer(Rcode::NOERROR, rrs);
        match self.backend_says_on(sent, &ans) {
            AnswerVerdict::Reply { len, client: c } => {
                assert_eq!(c, client());
                Reply { bytes: self.out[..len].to_vec() }
            }
            v => panic!("answer not turned into a reply: {v:?}"),
        }
    }

    /// Runs timers at the current time and collects what the engine sends.
    fn tick(&mut self) -> (Vec<Sent>, Vec<Reply>) {
        if self.engine.poll_timeout().is_some_and(|t| t <= self.now) {
            self.engine.handle_timeout(self.now);
        }
        let (mut sent, mut replies) = (vec![], vec![]);
        while let Some(t) = self.engine.poll_transmit(self.now, &mut self.out) {
            match t {
                Transmit::Backend { backend, addr, len, port } => sent.push(Sent { backend, addr, port, bytes: self.out[..len].to_vec() }),
                Transmit::Client { len, .. } => replies.push(Reply { bytes: self.out[..len].to_vec() }),
            }
        }
        (sent, replies)
    }

    fn stats(&self) -> &EngineStats {
        self.engine.stats()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

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
    let mut stale = None;
    for _ in 0..4 {
        w.advance(Duration::from_millis(1000));
        let (_retries, replies) = w.tick();
        if let Some(r) = replies.into_iter().next() {
            stale = Some(r);
            break;
        }
    }
    let stale = stale.expect("a stale answer");
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
    let mut servfail = None;
    for _ in 0..8 {
        w.advance(Duration::from_millis(500));
        if let Some(r) = w.tick().1.into_iter().next() {
            servfail = Some(r);
            break;
        }
    }
    let r = servfail.expect("SERVFAIL");
    assert_eq!((r.rcode(), r.qname().as_str()), (Rcode::SERVFAIL, "never.test."));
    assert_eq!(w.stats().gave_up.get(), 1);
}

#[test]
fn when_every_backend_is_marked_down_one_that_still_answers_is_used() {
    let mut w = World::new(&[B0]);
    // Three silent timeouts (an overload burst, say) and an unanswered
    // probe mark the only backend down.
    for i in 0..3 {
        w.ask_forwarded(&format!("slow{i}.test"));
    }
    w.advance(Duration::from_millis(1000));
    w.tick();
    w.advance(Duration::from_millis(1000));
    w.tick();
    assert_eq!(w.engine.pool().state(BackendId(0)), BackendState::Down);
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
    let mut got = None;
    for _ in 0..10 {
        w.advance(Duration::from_millis(500));
        let (_, replies) = w.tick();
        if let Some(r) = replies.into_iter().next() {
            got = Some(r);
            break;
        }
    }
    let r = got.expect("SERVFAIL");
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
    let mut tc = sent.answer(Rcode::NOERROR, &[]);
    tc[2] |= 0x02;
    let AnswerVerdict::Reply { len, .. } = w.backend_says(sent.addr, &tc) else { panic!() };
    assert!(Header::new_checked(&w.out[..len]).unwrap().tc(), "TC kept: the client must retry over TCP");
    assert_eq!(w.stats().not_cached.get(), 1);
    w.ask_forwarded("huge.test");
}

mod local_records {
    use super::*;
    use crate::records::{Instance, Mode, RecordsConfig, Service, Snapshot};

    fn records(addrs: &[&str]) -> Arc<Snapshot> {
        let svc = Service {
            name: "web".into(),
            mode: Mode::All,
            instances: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| Instance { id: format!("c{i}"), addrs: vec![a.parse().unwrap()], healthy: true, number: None })
                .collect(),
            ..Service::default()
        };
        let cfg = RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, services: vec![svc], records: vec![], serial: 1 };
        Arc::new(Snapshot::build(&cfg).unwrap())
    }

    #[test]
    fn local_names_are_answered_by_kdns_never_forwarded_nor_cached() {
        let mut w = World::new(&[B0]);
        w.engine.set_records(records(&["10.0.0.1", "10.0.0.2"]));
        let r = w.ask_answered("web.kdns");
        assert!(r.header().aa());
        assert_eq!(r.header().ancount(), 2);
        let second = w.ask_answered("web.kdns");
        assert_eq!(second.header().ancount(), 2);
        assert_ne!(r.bytes[12..], second.bytes[12..], "rotated between answers");
        assert_eq!(w.stats().local_answers.get(), 2);
        assert_eq!((w.stats().forwarded.get(), w.engine.cache().len()), (0, 0));
        // Other names still go to the backends.
        w.ask_forwarded("example.test");
    }

    #[test]
    fn a_new_snapshot_is_seen_by_the_next_query() {
        let mut w = World::new(&[B0]);
        w.engine.set_records(records(&["10.0.0.1"]));
        assert_eq!(w.ask_answered("web.kdns").header().ancount(), 1);
        w.engine.set_records(records(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]));
        assert_eq!(w.ask_answered("web.kdns").header().ancount(), 3);
    }

    #[test]
    fn a_new_domain_drops_answers_cached_from_the_backends() {
        let mut w = World::new(&[B0]);
        let sent = w.ask_forwarded("web.kdns");
        w.deliver(&sent, &[a(300, [6, 6, 6, 6])]);
        assert_eq!(w.engine.cache().len(), 1);
        w.engine.set_records(records(&["10.0.0.1"]));
        assert_eq!(w.engine.cache().len(), 0);
        let r = w.ask_answered("web.kdns");
        assert!(r.header().aa());
    }
}

/// Misbehaving clients and slow zones (issue: one client must not take
/// DNS down): every scenario on the virtual clock.
mod abuse {
    use super::*;

    fn client_at(ip: &str) -> Client {
        Client { addr: SocketAddr::new(ip.parse().unwrap(), 40000), ..client() }
    }

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    impl World {
        fn ask_from(&mut self, c: &Client, name: &str) -> Outcome {
            self.next_id += 1;
            let q = query(self.next_id, name, Rtype::A, Some((1232, false)));
            self.send_raw(c, &q)
        }

        /// Ordinary traffic answered at once, so every backend has RTT
        /// samples (1 ms) and a short try timeout.
        fn warm(&mut self, n: usize) {
            for i in 0..n {
                let s = self.ask_forwarded(&format!("warm{i}.ok.test"));
                self.advance(ms(1));
                self.deliver(&s, &[a(60, [10, 0, 0, 1])]);
            }
        }

        /// Runs timers and answers every probe at once (the backends are
        /// alive); returns the other queries sent and the replies.
        fn tick_answering_probes(&mut self) -> (Vec<Sent>, Vec<Reply>) {
            let (sent, replies) = self.tick();
            let mut rest = vec![];
            for s in sent {
                if s.qname().eq_ignore_ascii_case("id.server.") {
                    let ans = s.answer(Rcode::NOERROR, &[]);
                    assert_eq!(self.backend_says_on(&s, &ans), AnswerVerdict::Consumed);
                } else {
                    rest.push(s);
                }
            }
            (rest, replies)
        }
    }

    #[test]
    fn a_zone_that_never_answers_behind_healthy_backends_takes_no_backend_down() {
        let mut w = World::new(&[B0, B1]);
        w.warm(20);
        assert!(w.engine.pool().try_timeout(BackendId(0)) < ms(100), "the RTO followed the 1 ms answers");
        let (mut asked, mut servfails, mut ordinary) = (0u64, 0u64, 0u64);
        // 4 s: every 10 ms one name of the dead zone and two ordinary names
        // (round-robin then gives each backend ordinary traffic between
        // two names of the dead zone).
        for step in 0..400 {
            match w.ask(&format!("x{step}.blackhole.test"), Rtype::A) {
                Outcome::Forward(_) => asked += 1,
                o => panic!("a black-hole name is forwarded: {o:?}"),
            }
            for k in 0..2 {
                let s = w.ask_forwarded(&format!("o{step}-{k}.ok.test"));
                let r = w.deliver(&s, &[a(60, [10, 0, 0, 2])]);
                assert_eq!(r.rcode(), Rcode::NOERROR);
                ordinary += 1;
            }
            w.advance(ms(10));
            let (resent, replies) = w.tick_answering_probes();
            assert!(resent.is_empty(), "a slow name is not retried on another backend: {resent:?}");
            for r in replies {
                assert_eq!(r.rcode(), Rcode::SERVFAIL);
                servfails += 1;
            }
            for b in [BackendId(0), BackendId(1)] {
                assert_eq!(w.engine.pool().state(b), BackendState::Up, "backend {b:?} taken down at step {step}");
            }
        }
        assert_eq!(ordinary, 800);
        assert_eq!(w.stats().backend_down.get(), 0);
        assert_eq!(w.stats().retried.get(), 0);
        assert!(w.stats().slow_tries.get() >= asked - 6, "{} slow of {asked}", w.stats().slow_tries.get());
        // The black-hole names end at the query deadline (3.5 s): SERVFAIL.
        assert!((40..=60).contains(&servfails), "{servfails} SERVFAIL after 4 s of 10 ms steps");
        assert!(w.engine.in_flight() <= 360, "bounded by the deadline: {}", w.engine.in_flight());
        // Per backend, the tries were not counted against it.
        let t: u64 = [0u16, 1].iter().map(|&b| w.engine.pool().stats(BackendId(b)).timeouts.get()).sum();
        assert!(t <= servfails, "only deadline expiries: {t}");
    }

    #[test]
    fn a_zone_that_never_answers_with_no_other_traffic_costs_probes_not_backends() {
        let mut w = World::new(&[B0, B1]);
        w.warm(10);
        let mut servfails = 0;
        for step in 0..160 {
            if step < 60 {
                w.ask_forwarded(&format!("x{step}.blackhole.test"));
            }
            w.advance(ms(50));
            let (_resent, replies) = w.tick_answering_probes();
            servfails += replies.iter().filter(|r| r.rcode() == Rcode::SERVFAIL).count();
            assert_eq!(w.engine.pool().up_count(), 2, "step {step}");
        }
        assert_eq!(servfails, 60, "every query ended, none lost");
        assert_eq!(w.stats().backend_down.get(), 0);
        assert!(w.stats().probes.get() > 0, "silence made the backends suspect, and the probes cleared them");
        assert_eq!(w.engine.in_flight(), 0);
    }

    #[test]
    fn a_dead_backend_is_left_after_its_own_short_timeout() {
        let mut w = World::new(&[B0, B1]);
        w.warm(20);
        let rto = w.engine.pool().try_timeout(BackendId(0));
        assert_eq!(rto, ms(50), "floor of the RTO with 1 ms answers");
        // B0 dies; the next query to it is retried on B1 after 50 ms, not 1 s.
        let s = loop {
            let s = w.ask_forwarded("dead.test");
            if s.backend == BackendId(0) {
                break s;
            }
            w.deliver(&s, &[a(60, [10, 0, 0, 1])]);
            w.advance(secs(61));
        };
        let _ = s;
        w.advance(ms(49));
        assert!(w.tick().0.is_empty());
        w.advance(ms(1));
        let (sent, _) = w.tick();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].backend, BackendId(1));
        let r = w.deliver(&sent[0], &[a(60, [10, 0, 0, 1])]);
        assert_eq!(r.rcode(), Rcode::NOERROR);
    }

    #[test]
    fn a_late_answer_from_the_first_backend_is_taken() {
        let mut w = World::new(&[B0, B1]);
        w.warm(20);
        let first = loop {
            let s = w.ask_forwarded("late.test");
            if s.backend == BackendId(0) {
                break s;
            }
            w.deliver(&s, &[a(60, [10, 0, 0, 1])]);
            w.advance(secs(61));
        };
        w.advance(ms(60));
        let (retry, _) = w.tick();
        assert_eq!((retry.len(), retry[0].backend), (1, BackendId(1)));
        assert_eq!(&retry[0].bytes[..2], &first.bytes[..2], "the same ID for every try");
        // B0 was only slow: its answer comes first and is taken.
        let r = w.deliver(&first, &[a(60, [10, 0, 0, 7])]);
        assert_eq!(r.header().id(), w.next_id);
        assert_eq!(w.stats().late_answers.get(), 1);
        assert_eq!(w.engine.pool().stats(BackendId(0)).late_answers.get(), 1);
        // B1's answer to the same query is then unknown.
        let ans = retry[0].answer(Rcode::NOERROR, &[a(60, [10, 0, 0, 8])]);
        assert_eq!(w.backend_says_on(&retry[0], &ans), AnswerVerdict::Drop(DropReason::AnswerUnknownId));
        assert_eq!(w.engine.in_flight(), 0);
        assert_eq!(w.engine.pool().outstanding(BackendId(1)), 0, "B1's try was settled");
    }

    fn limited(max_pending: u32, miss_rate: u32, burst: u32, over: OverLimit) -> World {
        World::with(&[B0, B1], |c| {
            c.limits = ClientLimits { max_pending, miss_rate, miss_burst: burst, over_limit: over, ..ClientLimits::default() }
        })
    }

    #[test]
    fn a_client_over_its_pending_share_gets_a_fast_servfail_and_its_neighbour_is_served() {
        let mut w = limited(4, 0, 1, OverLimit::Servfail);
        let flooder = client_at("127.1.0.5");
        let neighbour = client_at("127.2.0.5");
        let mut forwarded = 0;
        let mut refused = 0;
        for i in 0..10 {
            match w.ask_from(&flooder, &format!("f{i}.blackhole.test")) {
                Outcome::Forward(_) => forwarded += 1,
                Outcome::Reply(r) => {
                    assert_eq!(r.rcode(), Rcode::SERVFAIL);
                    assert_eq!(r.header().id(), w.next_id, "its own ID");
                    assert_eq!(r.qname(), format!("f{i}.blackhole.test."));
                    refused += 1;
                }
                o => panic!("{o:?}"),
            }
        }
        assert_eq!((forwarded, refused), (4, 6));
        assert_eq!(w.stats().limited_pending.get(), 6);
        let Outcome::Forward(s) = w.ask_from(&neighbour, "n.ok.test") else { panic!("the neighbour is forwarded") };
        let ans = s.answer(Rcode::NOERROR, &[a(60, [10, 0, 0, 3])]);
        assert!(matches!(w.backend_says_on(&s, &ans), AnswerVerdict::Reply { client: c, .. } if c == neighbour));
        // When the flooder's queries end, its share is back.
        w.advance(ms(3500));
        let (_, replies) = w.tick_answering_probes();
        assert_eq!(replies.len(), 4);
        assert!(matches!(w.ask_from(&flooder, "again.test"), Outcome::Forward(_)));
    }

    #[test]
    fn over_limit_can_answer_refused_or_drop() {
        let mut w = limited(1, 0, 1, OverLimit::Refused);
        let c = client_at("127.1.0.5");
        w.ask_from(&c, "a.test");
        let Outcome::Reply(r) = w.ask_from(&c, "b.test") else { panic!() };
        assert_eq!(r.rcode(), Rcode::REFUSED);
        let mut w = limited(1, 0, 1, OverLimit::Drop);
        w.ask_from(&c, "a.test");
        assert!(matches!(w.ask_from(&c, "b.test"), Outcome::Drop(DropReason::OverLimit)));
        assert_eq!(w.stats().drops_for(DropReason::OverLimit), 1);
    }

    #[test]
    fn the_miss_rate_is_limited_per_client_and_hits_are_not() {
        let mut w = limited(0, 10, 2, OverLimit::Servfail);
        let c = client_at("127.1.0.5");
        let Outcome::Forward(s) = w.ask_from(&c, "hit.test") else { panic!() };
        let ans = s.answer(Rcode::NOERROR, &[a(60, [10, 0, 0, 1])]);
        assert!(matches!(w.backend_says_on(&s, &ans), AnswerVerdict::Reply { .. }));
        assert!(matches!(w.ask_from(&c, "m1.test"), Outcome::Forward(_)));
        let Outcome::Reply(r) = w.ask_from(&c, "m2.test") else { panic!("burst of 2 spent") };
        assert_eq!(r.rcode(), Rcode::SERVFAIL);
        assert_eq!(w.stats().limited_rate.get(), 1);
        for _ in 0..50 {
            let Outcome::Reply(r) = w.ask_from(&c, "hit.test") else { panic!("hits are never limited") };
            assert_eq!(r.rcode(), Rcode::NOERROR);
        }
        w.advance(ms(100));
        assert!(matches!(w.ask_from(&c, "m3.test"), Outcome::Forward(_)), "one token per 100 ms at 10/s");
        assert!(matches!(w.ask_from(&client_at("127.1.0.6"), "m4.test"), Outcome::Forward(_)), "another client has its own");
    }

    #[test]
    fn identical_questions_in_flight_go_upstream_once_and_all_are_answered() {
        let mut w = World::new(&[B0, B1]);
        let (c1, c2, c3) = (client_at("127.0.0.1"), client_at("127.0.0.2"), client_at("127.0.0.3"));
        let Outcome::Forward(s) = w.ask_from(&c1, "Same.test") else { panic!() };
        let id1 = w.next_id;
        assert!(matches!(w.ask_from(&c2, "SAME.test"), Outcome::Wait));
        let id2 = w.next_id;
        assert!(matches!(w.ask_from(&c3, "same.TEST"), Outcome::Wait));
        let id3 = w.next_id;
        assert_eq!(w.stats().coalesced.get(), 2);
        assert_eq!(w.stats().forwarded.get(), 1);
        // Another type is another question.
        w.next_id += 1;
        let q = query(w.next_id, "same.test", Rtype::AAAA, Some((1232, false)));
        assert!(matches!(w.send_raw(&c2, &q), Outcome::Forward(_)));
        let ans = s.answer(Rcode::NOERROR, &[a(60, [10, 0, 0, 5])]);
        let AnswerVerdict::Reply { client: c, len } = w.backend_says_on(&s, &ans) else { panic!() };
        let first = Reply { bytes: w.out[..len].to_vec() };
        assert_eq!((c, first.header().id(), first.qname()), (c1, id1, "Same.test.".to_string()));
        let (_, replies) = w.tick();
        let mut got: Vec<(u16, String, Vec<u32>)> = replies.iter().map(|r| (r.header().id(), r.qname(), r.ttls())).collect();
        got.sort();
        assert_eq!(got, vec![(id2, "SAME.test.".into(), vec![60]), (id3, "same.TEST.".into(), vec![60])]);
        assert_eq!(w.engine.in_flight(), 1, "only the AAAA question is left");
    }

    #[test]
    fn queries_waiting_on_one_that_no_backend_answers_get_servfail_with_it() {
        let mut w = World::new(&[B0]);
        w.ask_from(&client_at("127.0.0.1"), "gone.test");
        assert!(matches!(w.ask_from(&client_at("127.0.0.2"), "gone.test"), Outcome::Wait));
        let mut replies = vec![];
        for _ in 0..10 {
            w.advance(ms(500));
            replies.extend(w.tick().1);
        }
        assert_eq!(replies.len(), 2);
        assert!(replies.iter().all(|r| r.rcode() == Rcode::SERVFAIL));
        assert_eq!(w.stats().gave_up.get(), 2);
    }

    #[test]
    fn the_question_goes_upstream_in_random_case_and_must_come_back_so() {
        let mut w = World::new(&[B0]);
        let name = "averylongnamewithmanyletters.example.test";
        let s = w.ask_forwarded(name);
        assert!(s.qname().eq_ignore_ascii_case(&format!("{name}.")));
        assert_ne!(s.qname(), format!("{name}."), "letters flipped (2^-36 chance to fail)");
        // An answer (say, spoofed) with the question in the client's case.
        let mut bad = s.answer(Rcode::NOERROR, &[a(60, [6, 6, 6, 6])]);
        let qlen = name.len() + 2;
        let lower = crate::testutil::query(0, name, Rtype::A, None);
        bad[HEADER_LEN..HEADER_LEN + qlen].copy_from_slice(&lower[HEADER_LEN..HEADER_LEN + qlen]);
        assert_eq!(w.backend_says_on(&s, &bad), AnswerVerdict::Drop(DropReason::AnswerCaseMismatch));
        assert_eq!(w.stats().drops_for(DropReason::AnswerCaseMismatch), 1);
        let r = w.deliver(&s, &[a(60, [10, 0, 0, 1])]);
        assert_eq!(r.qname(), format!("{name}."), "the client's own spelling back");
        // With 0x20 off the client's spelling goes upstream.
        let mut w = World::with(&[B0], |c| c.randomize_case = false);
        assert_eq!(w.ask_forwarded("MiXed.test").qname(), "MiXed.test.");
    }

    #[test]
    fn each_query_leaves_from_a_random_port_slot_and_its_answer_must_come_back_there() {
        let mut w = World::with(&[B0], |c| c.source_ports = 16);
        let sent: Vec<Sent> = (0..64).map(|i| w.ask_forwarded(&format!("p{i}.test"))).collect();
        let ports: std::collections::HashSet<u16> = sent.iter().map(|s| s.port).collect();
        assert!(ports.len() >= 10 && ports.iter().all(|&p| p < 16), "{ports:?}");
        let s = &sent[0];
        let ans = s.answer(Rcode::NOERROR, &[a(60, [10, 0, 0, 1])]);
        let wrong = (s.port + 1) % 16;
        let v = w.engine.handle_backend_answer(w.now, s.addr, wrong, &ans, &mut w.out);
        assert_eq!(v, AnswerVerdict::Drop(DropReason::AnswerWrongPort));
        assert!(matches!(w.backend_says_on(s, &ans), AnswerVerdict::Reply { .. }));
    }
}
