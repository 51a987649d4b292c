//! Misbehaving clients and slow zones (one client must not take DNS
//! down): every scenario on the virtual clock.

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
    w.ask_forwarded_to_first("dead.test");
    w.advance(ms(49));
    assert!(w.tick().0.is_empty());
    w.advance(ms(1));
    let (sent, _) = w.tick();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].backend, BackendId(1));
    let r = w.deliver(&sent[0], &[a(60, [10, 0, 0, 1])]);
    assert_eq!(r.rcode(), Rcode::NOERROR);
}

/// A backend that answered other queries just after a try left, then
/// died: the try first waits like a slow name, but the silence that
/// follows sends it to another backend, not to the deadline.
#[test]
fn a_backend_that_dies_after_answering_is_left_once_it_stays_silent() {
    let mut w = World::new(&[B0, B1]);
    w.warm(20);
    assert_eq!(w.engine.pool().try_timeout(BackendId(0)), ms(50));
    w.ask_forwarded_to_first("dying.test");
    // B0's last answers, to queries sent after that try.
    w.advance(ms(1));
    let mut answered_by_b0 = 0;
    for i in 0.. {
        let s = w.ask_forwarded(&format!("last{i}.test"));
        let b0 = s.backend == BackendId(0);
        w.deliver(&s, &[a(60, [10, 0, 0, 1])]);
        if b0 {
            answered_by_b0 += 1;
            break;
        }
    }
    assert_eq!(answered_by_b0, 1);
    // Then silence: within a few try timeouts the query goes to B1.
    let mut resent = None;
    for _ in 0..40 {
        w.advance(ms(10));
        let (sent, replies) = w.tick_answering_probes();
        assert!(replies.is_empty(), "no SERVFAIL: {replies:?}");
        if let Some(s) = sent.into_iter().find(|s| s.qname().eq_ignore_ascii_case("dying.test.")) {
            resent = Some(s);
            break;
        }
    }
    let s = resent.expect("re-sent to another backend within 400 ms (the deadline is 3.5 s)");
    assert_eq!(s.backend, BackendId(1));
    let r = w.deliver(&s, &[a(60, [10, 0, 0, 9])]);
    assert_eq!(r.rcode(), Rcode::NOERROR);
}

#[test]
fn a_late_answer_from_the_first_backend_is_taken() {
    let mut w = World::new(&[B0, B1]);
    w.warm(20);
    let first = w.ask_forwarded_to_first("late.test");
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
