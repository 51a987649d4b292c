//! Behaviour of the [`Pool`] on a virtual clock: selection, the health
//! state machine, probes, and a property test of the bookkeeping.

use super::*;
use proptest::prelude::*;

const RTT: Duration = Duration::from_micros(300);

fn addr(i: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, 1], 5300 + i))
}

fn pool_with(weights: &[u16], cfg: HealthConfig, sel: Selection) -> Pool {
    let specs: Vec<_> = (0..weights.len() as u16).map(|i| BackendSpec::new(addr(i)).with_weight(weights[i as usize])).collect();
    Pool::new(&specs, cfg, sel).unwrap()
}

fn pool(n: usize) -> Pool {
    pool_with(&vec![1; n], HealthConfig::default(), Selection::RoundRobin)
}

fn ms(x: u64) -> Timestamp {
    Timestamp::from_millis(x)
}

const A: BackendId = BackendId(0);
const B: BackendId = BackendId(1);

/// One query to `id` that times out in silence.
fn lose(p: &mut Pool, id: BackendId, now: Timestamp) -> Option<Transition> {
    p.on_sent(id, now);
    p.on_timeout(id, now, false)
}

/// One query to `id` that is answered.
fn answer(p: &mut Pool, id: BackendId, now: Timestamp) -> Option<Transition> {
    p.on_sent(id, now);
    p.on_answer(id, now + RTT, Some(RTT), false)
}

/// The probe handed out for `id`, answered.
fn probe_ok(p: &mut Pool, id: BackendId, now: Timestamp) -> Option<Transition> {
    p.on_sent(id, now);
    p.on_answer(id, now + RTT, Some(RTT), true)
}

/// The probe handed out for `id`, timed out.
fn probe_lost(p: &mut Pool, id: BackendId, now: Timestamp) -> Option<Transition> {
    p.on_sent(id, now);
    p.on_timeout(id, now, true)
}

/// Three silent timeouts make `id` suspect; its probe times out: down.
fn take_down(p: &mut Pool, id: BackendId, now: Timestamp) {
    for _ in 0..3 {
        assert_eq!(lose(p, id, now), None);
    }
    assert!(p.is_suspect(id));
    assert_eq!(p.state(id), BackendState::Up, "suspect, still up");
    let due = p.next_probe(id).unwrap();
    assert!(due <= now + Duration::from_millis(500), "a suspect is probed at once, or probe_initial after the last probe");
    let now = now.max(due);
    assert_eq!(p.probe_due(now), Some(id));
    assert_eq!(probe_lost(p, id, now), Some(Transition::WentDown));
}

fn picks(p: &mut Pool, n: usize) -> Vec<u16> {
    (0..n).map(|_| p.select(ms(0), TriedSet::EMPTY).unwrap().0).collect()
}

#[test]
fn round_robin_alternates_over_two() {
    assert_eq!(picks(&mut pool(2), 6), [0, 1, 0, 1, 0, 1]);
    assert_eq!(picks(&mut pool(3), 6), [0, 1, 2, 0, 1, 2]);
}

#[test]
fn weights_3_to_1_give_3_to_1_smoothly() {
    let mut p = pool_with(&[3, 1], HealthConfig::default(), Selection::RoundRobin);
    let seq = picks(&mut p, 400);
    assert_eq!(seq.iter().filter(|&&b| b == 0).count(), 300);
    assert_eq!(&seq[..8], [0, 0, 1, 0, 0, 0, 1, 0]);
    // Never two of the light one in a row nor more than three heavy.
    assert!(seq.windows(2).all(|w| w != [1, 1]));
    assert!(seq.windows(4).all(|w| w != [0, 0, 0, 0]));
}

#[test]
fn tried_backends_are_skipped() {
    let mut p = pool(3);
    let tried = TriedSet::new().with(A).with(BackendId(2));
    for _ in 0..5 {
        assert_eq!(p.select(ms(0), tried), Some(B));
    }
    let all = tried.with(B);
    assert_eq!(p.select(ms(0), all), None);
}

#[test]
fn k_timeouts_take_a_backend_down_and_the_other_carries_on() {
    let mut p = pool(2);
    take_down(&mut p, A, ms(0));
    assert_eq!(p.state(A), BackendState::Down);
    assert_eq!(p.up_count(), 1);
    assert_eq!(picks(&mut p, 4), [1, 1, 1, 1]);
    assert_eq!(p.stats(A).went_down.get(), 1);
    assert_eq!(p.stats(A).state_up.get(), 0);
}

#[test]
fn silent_timeouts_only_make_it_suspect_and_an_answered_probe_clears_that() {
    let mut p = pool(2);
    for _ in 0..3 {
        assert_eq!(lose(&mut p, A, ms(0)), None);
    }
    assert!(p.is_suspect(A));
    assert_eq!(p.next_probe(A), Some(ms(0)));
    assert_eq!(p.stats(A).suspected.get(), 1);
    assert_eq!(picks(&mut p, 4), [0, 1, 0, 1], "a suspect still takes traffic");
    assert_eq!(p.probe_due(ms(1)), Some(A));
    assert_eq!(p.probe_due(ms(1)), None, "one probe at a time");
    assert_eq!(probe_ok(&mut p, A, ms(1)), None);
    assert!(!p.is_suspect(A));
    assert_eq!(p.state(A), BackendState::Up);
    // More silence: suspect again, but the next probe waits probe_initial.
    for _ in 0..3 {
        lose(&mut p, A, ms(10));
    }
    assert!(p.is_suspect(A));
    assert_eq!(p.probe_due(ms(10)), None);
    assert_eq!(p.next_probe_at(), Some(ms(1) + RTT + Duration::from_millis(500)));
    // Any answer clears the suspicion without a probe.
    p.on_late_answer(A, ms(20));
    assert!(!p.is_suspect(A));
    assert_eq!(p.next_probe_at(), None);
}

#[test]
fn answered_since_tells_a_slow_name_from_silence() {
    let mut p = pool(1);
    assert!(!p.answered_since(A, ms(0)), "never answered");
    p.on_sent(A, ms(100));
    p.on_sent(A, ms(100));
    p.on_answer(A, ms(150), Some(Duration::from_millis(50)), false);
    assert!(p.answered_since(A, ms(100)), "answered after the try left");
    assert!(p.answered_since(A, ms(150)) && !p.answered_since(A, ms(151)));
    p.on_slow(A);
    assert_eq!(p.stats(A).slow.get(), 1);
}

#[test]
fn try_timeout_follows_the_rtt_within_bounds() {
    let cfg =
        HealthConfig { try_timeout_min: Duration::from_millis(50), try_timeout_max: Duration::from_millis(800), ..HealthConfig::default() };
    let mut p = pool_with(&[1, 1], cfg, Selection::RoundRobin);
    assert_eq!(p.try_timeout(A), Duration::from_millis(800), "no sample yet");
    // Steady 20 ms answers: srtt 20 ms, rttvar shrinking: about 20..60 ms, at least the minimum.
    for t in 0..50 {
        p.on_sent(A, ms(t * 100));
        p.on_answer(A, ms(t * 100 + 20), Some(Duration::from_millis(20)), false);
    }
    let rto = p.try_timeout(A);
    assert!(rto >= Duration::from_millis(50) && rto < Duration::from_millis(60), "{rto:?}");
    // Answers of 100 ms +- 50: the timeout grows with mean and variation.
    for t in 0..50u64 {
        p.on_sent(A, ms(10_000 + t * 200));
        let r = if t % 2 == 0 { 50 } else { 150 };
        p.on_answer(A, ms(10_000 + t * 200 + r), Some(Duration::from_millis(r)), false);
    }
    let rto = p.try_timeout(A);
    assert!(rto > Duration::from_millis(200) && rto < Duration::from_millis(400), "{rto:?}");
    assert_eq!(p.probe_timeout(A), Duration::from_millis(800), "probes get four times, capped");
    // Fast answers (300 us): the floor.
    for t in 0..100 {
        answer(&mut p, B, ms(t));
    }
    assert_eq!(p.try_timeout(B), Duration::from_millis(50));
    assert_eq!(p.probe_timeout(B), Duration::from_millis(200));
}

#[test]
fn an_answer_resets_the_timeout_streak() {
    let mut p = pool(1);
    for t in 0..10 {
        assert_eq!(lose(&mut p, A, ms(t)), None);
        assert_eq!(lose(&mut p, A, ms(t)), None);
        assert_eq!(answer(&mut p, A, ms(t)), None);
        assert_eq!(answer(&mut p, A, ms(t)), None);
    }
    assert_eq!(p.state(A), BackendState::Up);
}

#[test]
fn nothing_up_selects_nothing() {
    let mut p = pool(2);
    take_down(&mut p, A, ms(0));
    take_down(&mut p, B, ms(0));
    assert_eq!(p.select(ms(1), TriedSet::EMPTY), None);
    let mut empty = Pool::new(&[], HealthConfig::default(), Selection::RoundRobin).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.select(ms(0), TriedSet::EMPTY), None);
    assert_eq!(empty.probe_due(ms(0)), None);
    assert_eq!(empty.next_probe_at(), None);
}

#[test]
fn probe_is_due_after_probe_initial_and_handed_out_once() {
    let mut p = pool(2);
    assert_eq!(p.next_probe_at(), None);
    take_down(&mut p, A, ms(1000));
    assert_eq!(p.stats(A).probes.get(), 1, "the suspect's probe");
    assert_eq!(p.next_probe_at(), Some(ms(1500)));
    assert_eq!(p.next_probe(A), Some(ms(1500)));
    assert_eq!(p.probe_due(ms(1499)), None);
    assert_eq!(p.probe_due(ms(1500)), Some(A));
    // In flight: not due again, and not reported as upcoming.
    p.on_sent(A, ms(1500));
    assert_eq!(p.probe_due(ms(9000)), None);
    assert_eq!(p.next_probe_at(), None);
    assert_eq!(p.select(ms(1500), TriedSet::EMPTY), Some(B));
    assert_eq!(p.stats(A).probes.get(), 2);
}

#[test]
fn failed_probes_double_the_backoff_up_to_probe_max() {
    let mut p = pool(1);
    take_down(&mut p, A, ms(0));
    let mut now = ms(0);
    let mut waits = vec![];
    for _ in 0..7 {
        let due = p.next_probe_at().unwrap();
        waits.push(due.saturating_since(now).as_millis());
        assert_eq!(p.probe_due(due), Some(A));
        now = due + Duration::from_secs(1);
        assert_eq!(probe_lost(&mut p, A, now), None);
    }
    assert_eq!(waits, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
    assert_eq!(p.state(A), BackendState::Down);
}

#[test]
fn r_good_probes_bring_it_back() {
    let mut p = pool(2);
    take_down(&mut p, A, ms(0));
    assert_eq!(p.probe_due(ms(500)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(500)), None);
    assert_eq!(p.state(A), BackendState::Down);
    // The next probe is due at once after a good one.
    assert_eq!(p.next_probe_at(), Some(ms(500) + RTT));
    assert_eq!(p.probe_due(ms(501)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(501)), Some(Transition::CameUp));
    assert_eq!(p.state(A), BackendState::Up);
    assert_eq!(p.next_probe_at(), None);
    assert_eq!(picks(&mut p, 4), [0, 1, 0, 1]);
    let s = p.stats(A);
    assert_eq!((s.came_up.get(), s.state_up.get()), (1, 1));
}

#[test]
fn a_failed_probe_restarts_the_count_of_good_ones() {
    let mut p = pool(1);
    take_down(&mut p, A, ms(0));
    assert_eq!(p.probe_due(ms(500)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(500)), None);
    assert_eq!(p.probe_due(ms(501)), Some(A));
    assert_eq!(probe_lost(&mut p, A, ms(1501)), None);
    assert_eq!(p.next_probe_at(), Some(ms(2501)));
    assert_eq!(p.probe_due(ms(2501)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(2501)), None);
    assert_eq!(p.probe_due(ms(2502)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(2502)), Some(Transition::CameUp));
}

#[test]
fn failure_ratio_over_a_full_window_makes_it_suspect() {
    let mut p = pool(1);
    // 60% silent timeouts, never three in a row: T S T T S ...
    let pattern = [true, false, true, true, false];
    let mut outcomes = 0;
    while !p.is_suspect(A) {
        let t = if pattern[outcomes % 5] { lose(&mut p, A, ms(outcomes as u64)) } else { answer(&mut p, A, ms(outcomes as u64)) };
        assert_eq!(t, None);
        outcomes += 1;
        assert!(outcomes < 25, "never suspect");
    }
    // Not before the 20-outcome window is full.
    assert!(outcomes >= 20, "{outcomes}");
}

#[test]
fn exactly_half_failures_is_not_too_many() {
    let mut p = pool(1);
    for t in 0..200 {
        assert_eq!(lose(&mut p, A, ms(t)), None);
        assert_eq!(answer(&mut p, A, ms(t)), None);
    }
    assert_eq!(p.state(A), BackendState::Up);
}

#[test]
fn stale_timeouts_do_not_touch_the_probe_schedule() {
    let mut p = pool(1);
    for _ in 0..3 {
        p.on_sent(A, ms(0));
    }
    take_down(&mut p, A, ms(100));
    assert_eq!(p.outstanding(A), 3);
    assert_eq!(p.probe_due(ms(600)), Some(A));
    p.on_sent(A, ms(600));
    // The three old queries time out: no backoff, the probe stays out.
    for _ in 0..3 {
        assert_eq!(p.on_timeout(A, ms(1000), false), None);
    }
    assert_eq!(p.next_probe_at(), None);
    // The probe's own answer counts.
    assert_eq!(p.on_answer(A, ms(601), Some(Duration::from_millis(1)), true), None);
    assert_eq!(p.probe_due(ms(601)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(601)), Some(Transition::CameUp));
    assert_eq!(p.stats(A).timeouts.get(), 7);
}

#[test]
fn late_answer_to_an_old_query_is_not_a_good_probe() {
    let mut p = pool(1);
    p.on_sent(A, ms(0));
    take_down(&mut p, A, ms(100));
    assert_eq!(p.probe_due(ms(600)), Some(A));
    p.on_sent(A, ms(600));
    // Answer to the query sent at 0 arrives after the probe went out.
    assert_eq!(p.on_answer(A, ms(700), Some(Duration::from_millis(700)), false), None);
    assert_eq!(p.next_probe_at(), None, "probe still out");
    assert_eq!(p.on_timeout(A, ms(1600), true), None);
    assert_eq!(p.next_probe_at(), Some(ms(2600)), "backoff doubled");
}

#[test]
fn queries_sent_around_recovery_keep_the_counts_straight() {
    // Found by the property test: a non-probe query sent while down is
    // stale; answered after recovery it must not leave a stale count behind.
    let mut p = pool(1);
    take_down(&mut p, A, ms(0));
    assert_eq!(p.probe_due(ms(500)), Some(A));
    assert_eq!(probe_ok(&mut p, A, ms(500)), None);
    assert_eq!(p.probe_due(ms(501)), Some(A));
    p.on_sent(A, ms(501)); // the probe
    p.on_sent(A, ms(501)); // regular traffic the engine should not send
    assert_eq!(p.on_answer(A, ms(502), Some(RTT), true), Some(Transition::CameUp));
    assert_eq!(p.on_answer(A, ms(503), Some(RTT), false), None);
    assert_eq!(p.outstanding(A), 0);
    // Fresh timeouts count again.
    take_down(&mut p, A, ms(600));
}

#[test]
fn a_probe_that_could_not_be_sent_stays_due() {
    let mut p = pool(1);
    take_down(&mut p, A, ms(0));
    assert_eq!(p.probe_due(ms(500)), Some(A));
    p.on_cancel(A);
    assert_eq!(p.outstanding(A), 0);
    assert_eq!(p.probe_due(ms(500)), Some(A));
}

#[test]
fn least_outstanding_prefers_the_idle_one() {
    let mut p = pool_with(&[1, 1, 1], HealthConfig::default(), Selection::LeastOutstanding);
    p.on_sent(A, ms(0));
    p.on_sent(A, ms(0));
    p.on_sent(BackendId(2), ms(0));
    assert_eq!(p.select(ms(0), TriedSet::EMPTY), Some(B));
    p.on_sent(B, ms(0));
    p.on_sent(B, ms(0));
    assert_eq!(p.select(ms(0), TriedSet::EMPTY), Some(BackendId(2)));
    // All idle: ties go round-robin.
    let mut idle = pool_with(&[1, 1, 1], HealthConfig::default(), Selection::LeastOutstanding);
    assert_eq!(picks(&mut idle, 6), [0, 1, 2, 0, 1, 2]);
}

#[test]
fn stats_are_readable_from_another_thread() {
    let mut p = pool(2);
    let shared = p.shared_stats();
    for _ in 0..10 {
        answer(&mut p, B, ms(0));
    }
    take_down(&mut p, A, ms(0));
    let reader = std::thread::spawn(move || {
        let a = &shared[A.index()];
        let b = &shared[B.index()];
        (a.timeouts.get(), a.state_up.get(), b.answers.get(), b.addr, b.mean_rtt())
    });
    let seen = reader.join().unwrap();
    assert_eq!(seen, (4, 0, 10, addr(1), Some(RTT)), "three silent timeouts and the failed probe");
}

#[test]
fn more_than_64_backends_are_rejected() {
    let specs: Vec<_> = (0..65).map(|i| BackendSpec::new(addr(i))).collect();
    let r = Pool::new(&specs, HealthConfig::default(), Selection::RoundRobin);
    assert_eq!(r.unwrap_err(), PoolError::TooManyBackends { count: 65 });
    let mut p = Pool::new(&specs[..64], HealthConfig::default(), Selection::RoundRobin).unwrap();
    take_down(&mut p, BackendId(63), ms(0));
    assert_eq!(p.probe_due(ms(500)), Some(BackendId(63)));
    let dup = [BackendSpec::new(addr(1)), BackendSpec::new(addr(1))];
    let r = Pool::new(&dup, HealthConfig::default(), Selection::RoundRobin);
    assert_eq!(r.unwrap_err(), PoolError::DuplicateAddress(addr(1)));
}

#[test]
fn find_matches_answer_sources() {
    let v6: SocketAddr = "[2001:db8::53]:53".parse().unwrap();
    let specs = [BackendSpec::new(addr(0)), BackendSpec::new(v6)];
    let p = Pool::new(&specs, HealthConfig::default(), Selection::RoundRobin).unwrap();
    assert_eq!(p.find(addr(0)), Some(A));
    assert_eq!(p.find("[::ffff:10.0.0.1]:5300".parse().unwrap()), Some(A));
    assert_eq!(p.find(v6), Some(B));
    assert_eq!(p.find(addr(9)), None);
    assert_eq!(p.find("[2001:db8::53]:54".parse().unwrap()), None);
    assert_eq!(p.addr(B), v6);
}

#[derive(Clone, Debug)]
enum Op {
    Sent(u16),
    Answer(u16, u16, bool),
    Timeout(u16, bool),
    Cancel(u16),
    Select(u8),
    Probe,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u16..5; // one past the pool: unknown ids are ignored
    prop_oneof![
        3 => id.clone().prop_map(Op::Sent),
        2 => (id.clone(), any::<u16>(), any::<bool>()).prop_map(|(i, r, p)| Op::Answer(i, r, p)),
        2 => (id.clone(), any::<bool>()).prop_map(|(i, p)| Op::Timeout(i, p)),
        1 => id.prop_map(Op::Cancel),
        2 => any::<u8>().prop_map(Op::Select),
        2 => Just(Op::Probe),
        1 => (0u16..3000).prop_map(Op::Advance),
    ]
}

proptest! {
    #[test]
    fn random_events_keep_the_books_straight(
        ops in proptest::collection::vec(op(), 0..300),
        least in any::<bool>(),
    ) {
        let sel = if least { Selection::LeastOutstanding } else { Selection::RoundRobin };
        let cfg = HealthConfig { window: 8, ..HealthConfig::default() };
        let mut p = pool_with(&[1, 2, 1, 3], cfg, sel);
        let mut now = ms(0);
        let mut model = [0u32; 4];
        let mut spurious = [0u64; 4];
        let mut dispensed = [false; 4];
        for op in ops {
            match op {
                Op::Sent(i) => {
                    p.on_sent(BackendId(i), now);
                    if i < 4 {
                        model[i as usize] += 1;
                        dispensed[i as usize] = false;
                    }
                }
                Op::Cancel(i) if i < 4 && dispensed[i as usize] => {
                    p.on_cancel(BackendId(i));
                    dispensed[i as usize] = false;
                }
                Op::Answer(i, _, _) | Op::Timeout(i, _) | Op::Cancel(i) => {
                    let id = BackendId(i);
                    match op {
                        Op::Answer(_, r, probe) => {
                            p.on_answer(id, now, Some(Duration::from_micros(u64::from(r) * 50)), probe);
                        }
                        Op::Timeout(_, probe) => {
                            p.on_timeout(id, now, probe);
                        }
                        _ => p.on_cancel(id),
                    }
                    if i < 4 {
                        let m = &mut model[i as usize];
                        if *m == 0 {
                            spurious[i as usize] += 1
                        } else {
                            *m -= 1
                        }
                    }
                }
                Op::Select(bits) => {
                    let tried = TriedSet(u64::from(bits));
                    if let Some(id) = p.select(now, tried) {
                        prop_assert!(!tried.contains(id));
                        prop_assert_eq!(p.state(id), BackendState::Up);
                    } else {
                        prop_assert!(p.ids().all(|id| tried.contains(id)
                            || p.state(id) == BackendState::Down));
                    }
                }
                Op::Probe => {
                    if let Some(id) = p.probe_due(now) {
                        prop_assert!(p.state(id) == BackendState::Down || p.is_suspect(id));
                        dispensed[id.index()] = true;
                    }
                }
                Op::Advance(d) => now += Duration::from_millis(u64::from(d)),
            }
            for id in p.ids() {
                let (s, i) = (&p.slots[id.index()], id.index());
                let st = p.stats(id);
                prop_assert_eq!(s.outstanding, model[i]);
                prop_assert_eq!(st.spurious.get(), spurious[i]);
                prop_assert_eq!(s.probe == Probe::Dispensed, dispensed[i]);
                prop_assert_eq!(st.outstanding.get(), u64::from(s.outstanding));
                let in_flight = u32::from(matches!(s.probe, Probe::InFlight { .. }));
                prop_assert!(s.stale + in_flight <= s.outstanding);
                let up = s.state == BackendState::Up;
                prop_assert_eq!(p.up & (1 << i) != 0, up);
                prop_assert_eq!(st.state_up.get(), u64::from(up));
                prop_assert_eq!(st.went_down.get() - st.came_up.get(), u64::from(!up));
                prop_assert!(!s.suspect || up, "only an up backend is suspect");
                let r = p.try_timeout(id);
                prop_assert!(r >= p.config().try_timeout_min && r <= p.config().try_timeout_max);
            }
        }
    }
}
