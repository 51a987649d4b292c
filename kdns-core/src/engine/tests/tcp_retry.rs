//! A TCP client's query whose UDP answer comes back truncated is asked
//! again over TCP ([`Transmit::BackendTcp`]); the engine checks that
//! answer, and ends a failed exchange with a stale answer or SERVFAIL.

use super::*;

fn tcp_client() -> Client {
    Client { transport: Transport::Tcp, tag: 9, ..client() }
}

impl World {
    /// A TCP client asks `name`; the backend's UDP answer is truncated.
    /// Returns the client's query ID and the exchange the engine asks for.
    fn truncated_for_tcp(&mut self, name: &str) -> (u16, Sent) {
        self.next_id += 1;
        let id = self.next_id;
        let q = query(id, name, Rtype::A, None);
        let Outcome::Forward(udp) = self.send_raw(&tcp_client(), &q) else { panic!("not forwarded") };
        let tc = udp.truncated();
        assert_eq!(self.backend_says_on(&udp, &tc), AnswerVerdict::Consumed, "not passed on truncated");
        let (mut sent, replies) = self.tick();
        assert!(replies.is_empty());
        assert_eq!(sent.len(), 1, "one TCP exchange");
        let s = sent.remove(0);
        assert!(s.tcp.is_some());
        (id, s)
    }

    fn tcp_says(&mut self, s: &Sent, bytes: &[u8]) -> AnswerVerdict {
        self.engine.handle_tcp_answer(self.now, s.tcp.unwrap(), s.addr, bytes, &mut self.out)
    }

    /// Runs the timers and returns the one reply the client gets.
    fn one_reply(&mut self) -> Reply {
        let (sent, mut replies) = self.tick();
        assert!(sent.is_empty());
        assert_eq!(replies.len(), 1);
        replies.remove(0)
    }
}

#[test]
fn a_truncated_answer_for_a_tcp_client_is_asked_again_over_tcp_and_answered_whole() {
    let mut w = World::new(&[B0, B1]);
    let (id, s) = w.truncated_for_tcp("big.test");
    let m = Message::parse(&s.bytes).unwrap();
    assert_eq!(m.question.name.display(&s.bytes).to_string().to_ascii_lowercase(), "big.test.");
    assert!(m.edns().is_some(), "our OPT on the TCP query too");
    assert_eq!(w.stats().tcp_retries.get(), 1);
    let ex = s.tcp.unwrap();
    assert!(w.engine.tcp_exchange_open(ex));
    let rrs: Vec<Rr> = (0..40).map(|i| a(60, [10, 0, 0, i])).collect();
    let full = s.answer(Rcode::NOERROR, &rrs);
    let AnswerVerdict::Reply { client, len } = w.tcp_says(&s, &full) else { panic!("TCP answer not accepted") };
    assert_eq!(client, tcp_client());
    let r = Reply { bytes: w.out[..len].to_vec() };
    assert_eq!((r.header().id(), r.header().tc(), r.header().ancount()), (id, false, 40));
    assert!(!w.engine.tcp_exchange_open(ex));
    assert_eq!((w.engine.in_flight(), w.stats().tcp_retry_failures.get()), (0, 0));
    // Cached whole: the next TCP client is answered at once.
    let q = query(7, "big.test", Rtype::A, None);
    let Outcome::Reply(r) = w.send_raw(&tcp_client(), &q) else { panic!("not a cache hit") };
    assert_eq!(r.header().ancount(), 40);
}

#[test]
fn a_failed_exchange_ends_in_servfail_and_is_counted() {
    let mut w = World::new(&[B0]);
    let (id, s) = w.truncated_for_tcp("big.test");
    w.engine.tcp_failed(w.now, s.tcp.unwrap());
    w.engine.tcp_failed(w.now, s.tcp.unwrap()); // told twice: counted once
    let r = w.one_reply();
    assert_eq!((r.rcode(), r.header().id(), r.qname()), (Rcode::SERVFAIL, id, "big.test.".to_string()));
    assert_eq!((w.stats().tcp_retry_failures.get(), w.stats().gave_up.get()), (1, 1));
    assert!(!w.engine.tcp_exchange_open(s.tcp.unwrap()));
    assert_eq!(w.engine.in_flight(), 0);
    // Its deadline no longer matters, and a late answer is refused.
    w.advance(secs(10));
    assert_eq!(w.tick().1.len(), 0);
    let full = s.answer(Rcode::NOERROR, &[a(60, [1, 2, 3, 4])]);
    assert_eq!(w.tcp_says(&s, &full), AnswerVerdict::Drop(DropReason::AnswerUnknownId));
}

#[test]
fn an_exchange_with_no_answer_by_the_query_deadline_gets_servfail_on_the_virtual_clock() {
    let mut w = World::new(&[B0]);
    let (_, s) = w.truncated_for_tcp("slow.test");
    w.advance(Duration::from_millis(3400));
    assert!(w.tick().1.is_empty(), "the exchange has the whole query deadline");
    assert!(w.engine.tcp_exchange_open(s.tcp.unwrap()));
    w.advance(Duration::from_millis(200));
    assert_eq!(w.one_reply().rcode(), Rcode::SERVFAIL);
    assert_eq!(w.stats().tcp_retry_failures.get(), 1);
    assert!(!w.engine.tcp_exchange_open(s.tcp.unwrap()));
}

#[test]
fn a_failed_exchange_serves_a_stale_answer_when_there_is_one() {
    let mut w = World::new(&[B0]);
    let (_, s) = w.truncated_for_tcp("big.test");
    let ok = s.answer(Rcode::NOERROR, &[a(30, [1, 1, 1, 1])]);
    assert!(matches!(w.tcp_says(&s, &ok), AnswerVerdict::Reply { .. }));
    w.advance(secs(40)); // expired, within the stale window
    let (_, s) = w.truncated_for_tcp("big.test");
    w.engine.tcp_failed(w.now, s.tcp.unwrap());
    let r = w.one_reply();
    assert_eq!((r.rcode(), r.ttls()), (Rcode::NOERROR, vec![30]));
    assert_eq!(w.stats().stale_answers.get(), 1);
}

#[test]
fn tcp_answers_are_checked_like_udp_ones() {
    let mut w = World::new(&[B0]);
    // Another ID: not this exchange's answer.
    let (_, s) = w.truncated_for_tcp("a.test");
    let mut wrong = s.answer(Rcode::NOERROR, &[a(60, [1, 2, 3, 4])]);
    wrong[0] ^= 0xff;
    assert_eq!(w.tcp_says(&s, &wrong), AnswerVerdict::Drop(DropReason::AnswerUnknownId));
    assert_eq!(w.one_reply().rcode(), Rcode::SERVFAIL);
    // Another question.
    let (_, s) = w.truncated_for_tcp("b.test");
    let other = Sent { bytes: query(u16::from_be_bytes([s.bytes[0], s.bytes[1]]), "c.test", Rtype::A, None), ..s.clone() };
    let ans = other.answer(Rcode::NOERROR, &[a(60, [1, 2, 3, 4])]);
    assert_eq!(w.tcp_says(&s, &ans), AnswerVerdict::Drop(DropReason::AnswerWrongQuestion));
    assert_eq!(w.one_reply().rcode(), Rcode::SERVFAIL);
    // The exchange's answer arriving over UDP instead.
    let (_, s) = w.truncated_for_tcp("d.test");
    let ans = s.answer(Rcode::NOERROR, &[a(60, [1, 2, 3, 4])]);
    assert_eq!(w.backend_says_on(&s, &ans), AnswerVerdict::Drop(DropReason::AnswerWrongPort));
    assert!(w.engine.tcp_exchange_open(s.tcp.unwrap()), "a spoofed datagram does not end it");
    assert!(matches!(w.tcp_says(&s, &ans), AnswerVerdict::Reply { .. }));
    assert_eq!(w.stats().drops_for(DropReason::AnswerWrongQuestion), 1);
}

#[test]
fn the_exchange_goes_to_an_up_backend_and_without_one_the_truncated_answer_is_passed_on() {
    let mut w = World::new(&[B0, B1]);
    let q = query(1, "x.test", Rtype::A, None);
    let Outcome::Forward(udp) = w.send_raw(&tcp_client(), &q) else { panic!() };
    let tc = udp.truncated();
    w.backend_says_on(&udp, &tc);
    let (sent, _) = w.tick();
    assert_eq!(sent[0].addr, udp.addr, "the backend that answered, while it is up");
    // A lone backend marked down (three silent timeouts, an unanswered
    // probe) is still asked in panic mode, but not over TCP: the client
    // gets the truncated answer and may ask again.
    let mut w = World::new(&[B0]);
    w.take_down_the_only_backend();
    let q = query(2, "y.test", Rtype::A, None);
    let Outcome::Forward(udp) = w.send_raw(&tcp_client(), &q) else { panic!() };
    let tc = udp.truncated();
    let AnswerVerdict::Reply { len, .. } = w.backend_says_on(&udp, &tc) else { panic!("not passed on") };
    assert!(Header::new_checked(&w.out[..len]).unwrap().tc());
    assert!(w.tick().0.is_empty());
    assert_eq!(w.stats().tcp_retries.get(), 0);
}

#[test]
fn a_udp_client_gets_the_truncated_answer_and_no_exchange() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("huge.test");
    let tc = sent.truncated();
    assert!(matches!(w.backend_says_on(&sent, &tc), AnswerVerdict::Reply { .. }));
    assert!(w.tick().0.is_empty());
    assert_eq!(w.stats().tcp_retries.get(), 0);
}
