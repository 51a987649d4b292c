//! The in-kernel tier's reply (the model of the XDP program,
//! [`KernelEntry::reply`]) is the engine's reply, byte for byte, for
//! generated names, records and queries at any time before the copy's
//! `serve_until`.

use super::*;
use crate::cache::{KernelEntry, KernelTierConfig};
use proptest::prelude::*;

/// A question name in random case.
fn name() -> impl Strategy<Value = (Vec<String>, Vec<bool>)> {
    (prop::collection::vec("[a-z0-9]{1,20}", 1..4), prop::collection::vec(any::<bool>(), 80))
}

fn spelled(labels: &[String], upper: &[bool]) -> String {
    labels.join(".").chars().zip(upper.iter().cycle()).map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c }).collect()
}

fn with_cd(mut q: Vec<u8>, cd: bool) -> Vec<u8> {
    if cd {
        q[3] |= 0x10;
    }
    q
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_kernel_reply_is_the_engine_reply(
        (labels, case0) in name(),
        case1 in prop::collection::vec(any::<bool>(), 80),
        ttls in prop::collection::vec(1u32..2000, 1..5),
        negative in any::<bool>(),
        dnssec_ok in any::<bool>(),
        cd in any::<bool>(),
        edns in prop::option::of(0u16..5000),
        id in any::<u16>(),
        later_ms in 0u64..2_100_000,
    ) {
        let mut w = World::with(&[B0], |c| c.kernel_tier = Some(KernelTierConfig { promote_after: 1, ..KernelTierConfig::default() }));
        let first = spelled(&labels, &case0);
        // The client that fills the cache: same DO and CD as the later one.
        let q0 = with_cd(query(1, &first, Rtype::A, Some((1232, dnssec_ok))), cd);
        let Outcome::Forward(sent) = w.send_raw(&client(), &q0) else { panic!("a miss goes to a backend") };
        let rrs: Vec<Rr> = if negative {
            vec![soa(ttls[0], 300)]
        } else {
            ttls.iter().enumerate().map(|(i, &t)| a(t, [192, 0, 2, i as u8])).collect()
        };
        let rcode = if negative { Rcode::NXDOMAIN } else { Rcode::NOERROR };
        let ans = sent.answer(rcode, &rrs);
        let cached = matches!(w.backend_says_on(&sent, &ans), AnswerVerdict::Reply { .. });
        prop_assert!(cached, "the answer reaches the client");
        // One hit promotes it.
        let Outcome::Reply(_) = w.send_raw(&client(), &q0) else { panic!("a hit") };
        let mut e = KernelEntry::default();
        let p = w.engine.cache_mut().next_promotion(w.now, &mut e).expect("promoted");
        prop_assert!(w.engine.cache_mut().promoted(p, true));
        // Another spelling, ID, EDNS size (or none when DO is clear), later.
        w.advance(Duration::from_millis(later_ms));
        let edns = if dnssec_ok { Some((edns.unwrap_or(1232), true)) } else { edns.map(|s| (s, false)) };
        let q = with_cd(query(id, &spelled(&labels, &case1), Rtype::A, edns), cd);
        let mut model = [0u8; 512];
        let modelled = e.reply(&q, w.now, 1232, &mut model);
        prop_assert_eq!(modelled.is_some(), w.now < e.serve_until);
        if let Some(len) = modelled {
            let Outcome::Reply(r) = w.send_raw(&client(), &q) else { panic!("a fresh entry is a hit") };
            prop_assert_eq!(&model[..len], &r.bytes[..]);
        }
    }
}

#[test]
fn the_bound_on_the_reply_is_the_engines_udp_size_when_smaller() {
    let mut w = World::with(&[B0], |c| {
        c.udp_size = 100;
        c.kernel_tier = Some(KernelTierConfig { promote_after: 1, ..KernelTierConfig::default() });
    });
    let sent = w.ask_forwarded("a-rather-long-name.example");
    w.deliver(&sent, &[a(300, [192, 0, 2, 1]), a(300, [192, 0, 2, 2]), a(300, [192, 0, 2, 3])]);
    w.ask_answered("a-rather-long-name.example");
    let mut e = KernelEntry::default();
    assert!(w.engine.cache_mut().next_promotion(w.now, &mut e).is_none(), "over 100 bytes with an OPT: not for the kernel");
}

mod local {
    //! Fixed local answers in the kernel tier: the model's reply is the
    //! engine's for any client, and a records change takes them out.

    use super::*;
    use crate::engine::KernelPromotion;
    use crate::records::{Instance, Mode, RecordsConfig, Service, Snapshot, StaticData, StaticRecord};
    use core::net::Ipv4Addr;

    fn snapshot(healthy: &[bool], mode: Mode, serial: u32) -> Arc<Snapshot> {
        let instances = healthy
            .iter()
            .enumerate()
            .map(|(i, &h)| Instance {
                id: format!("c{i}"),
                addrs: vec![format!("10.0.0.{}", i + 1).parse().unwrap(), format!("fd00::{}", i + 1).parse().unwrap()],
                healthy: h,
                number: None,
            })
            .collect();
        let svc = Service { name: "web".into(), mode, instances, ..Service::default() };
        let records = vec![
            StaticRecord { name: "db.kdns".into(), ttl: Some(60), data: StaticData::A(Ipv4Addr::new(10, 5, 0, 1)) },
            StaticRecord { name: "db.kdns".into(), ttl: None, data: StaticData::Txt(vec!["role=primary".into()]) },
            StaticRecord { name: "www.kdns".into(), ttl: None, data: StaticData::Cname("web.kdns".into()) },
        ];
        let cfg = RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, services: vec![svc], records, serial };
        Arc::new(Snapshot::build(&cfg).unwrap())
    }

    fn clients() -> [Client; 3] {
        let c = |a: &str| Client { addr: a.parse().unwrap(), ..client() };
        [c("127.0.0.1:40000"), c("127.0.0.2:5353"), c("[::1]:41000")]
    }

    fn tier(w: &mut World) -> Option<(KernelPromotion, KernelEntry)> {
        let mut e = KernelEntry::default();
        let p = w.engine.next_kernel_promotion(w.now, &mut e)?;
        Some((p, e))
    }

    const NAMES: [&str; 6] = ["web.kdns", "web-1.kdns", "web-2.kdns", "db.kdns", "www.kdns", "none.kdns"];
    const TYPES: [Rtype; 4] = [Rtype::A, Rtype::AAAA, Rtype::TXT, Rtype::MX];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn a_promoted_local_answer_is_the_engine_reply_for_every_client(
            healthy in prop::collection::vec(any::<bool>(), 1..4),
            mode in 0usize..3,
            name in 0usize..NAMES.len(),
            qtype in 0usize..TYPES.len(),
            case0 in prop::collection::vec(any::<bool>(), 40),
            case1 in prop::collection::vec(any::<bool>(), 40),
            dnssec_ok in any::<bool>(),
            cd in any::<bool>(),
            edns in prop::option::of(0u16..5000),
            id in any::<u16>(),
            later_ms in 0u64..10_000_000,
        ) {
            let mode = [Mode::All, Mode::RandomOne, Mode::Sticky][mode];
            let mut w = World::with(&[B0], |c| c.kernel_tier = Some(KernelTierConfig { promote_after: 1, ..KernelTierConfig::default() }));
            w.engine.set_records(snapshot(&healthy, mode, 1));
            let labels = vec![NAMES[name].to_string()];
            let edns = if dnssec_ok { Some((edns.unwrap_or(1232), true)) } else { edns.map(|s| (s, false)) };
            let q0 = with_cd(query(1, &spelled(&labels, &case0), TYPES[qtype], edns), cd);
            let Outcome::Reply(_) = w.send_raw(&client(), &q0) else { panic!("a local answer") };
            let Some((p, e)) = tier(&mut w) else {
                // Not fixed: a choice among several healthy instances.
                let several = healthy.iter().filter(|&&h| h).count() > 1;
                prop_assert!(several && matches!(NAMES[name], "web.kdns" | "www.kdns"), "{} {:?} not promoted", NAMES[name], TYPES[qtype]);
                return Ok(());
            };
            prop_assert!(matches!(p, KernelPromotion::Local(_)));
            prop_assert!(w.engine.kernel_promoted(p, &e.key, true));
            prop_assert!(tier(&mut w).is_none(), "promoted once");
            w.advance(Duration::from_millis(later_ms));
            for (i, c) in clients().iter().enumerate() {
                let q = with_cd(query(id.wrapping_add(i as u16), &spelled(&labels, &case1), TYPES[qtype], edns), cd);
                let mut model = [0u8; 512];
                let len = e.reply(&q, w.now, 1232, &mut model).expect("a local copy is served until taken out");
                let Outcome::Reply(r) = w.send_raw(c, &q) else { panic!("a local answer") };
                prop_assert_eq!(&model[..len], &r.bytes[..], "client {:?}", c.addr);
            }
        }
    }

    #[test]
    fn a_records_change_takes_every_local_copy_out_and_refuses_older_promotions() {
        let mut w = World::with(&[B0], |c| c.kernel_tier = Some(KernelTierConfig { promote_after: 2, ..KernelTierConfig::default() }));
        w.engine.set_records(snapshot(&[true], Mode::All, 1));
        let ask = |w: &mut World, name: &str| {
            let q = query(9, name, Rtype::A, None);
            assert!(matches!(w.send_raw(&client(), &q), Outcome::Reply(_)));
        };
        ask(&mut w, "web.kdns");
        assert!(tier(&mut w).is_none(), "one hit of two");
        ask(&mut w, "web.kdns");
        let (p, e) = tier(&mut w).expect("two hits promote");
        assert!(w.engine.kernel_promoted(p, &e.key, true));
        // Queued, not yet exported, when the records change: refused.
        ask(&mut w, "db.kdns");
        ask(&mut w, "db.kdns");
        let (p2, e2) = tier(&mut w).expect("db.kdns promoted");
        w.engine.set_records(snapshot(&[true, true], Mode::All, 2));
        assert!(!w.engine.kernel_promoted(p2, &e2.key, true), "built from the old records");
        let mut out = Vec::new();
        w.engine.kernel_demotions(&mut out);
        assert_eq!(out, vec![e.key], "the copy in the kernel leaves it");
        // web.kdns now rotates two instances: never promoted again.
        for _ in 0..4 {
            ask(&mut w, "web.kdns");
        }
        assert!(tier(&mut w).is_none());
        // A cold copy taken out counts again from zero.
        for _ in 0..2 {
            ask(&mut w, "web-1.kdns");
        }
        let (p, e) = tier(&mut w).expect("web-1 promoted");
        assert!(w.engine.kernel_promoted(p, &e.key, true));
        w.engine.kernel_demote(&e.key);
        ask(&mut w, "web-1.kdns");
        assert!(tier(&mut w).is_none());
        ask(&mut w, "web-1.kdns");
        assert!(tier(&mut w).is_some());
    }

    #[test]
    fn tcp_and_oversized_local_answers_stay_in_userspace() {
        let mut w = World::with(&[B0], |c| {
            c.kernel_tier = Some(KernelTierConfig { promote_after: 1, max_reply: 60, ..KernelTierConfig::default() })
        });
        w.engine.set_records(snapshot(&[true], Mode::All, 1));
        let tcp = Client { transport: Transport::Tcp, ..client() };
        let q = query(9, "web-1.kdns", Rtype::A, None);
        let _ = w.send_raw(&tcp, &q);
        assert!(tier(&mut w).is_none(), "TCP");
        let q = query(9, "db.kdns", Rtype::TXT, Some((1232, false)));
        let _ = w.send_raw(&client(), &q);
        assert!(tier(&mut w).is_none(), "over max_reply");
        let q = query(9, "db.kdns", Rtype::A, None);
        let _ = w.send_raw(&client(), &q);
        assert!(tier(&mut w).is_some(), "a small one is");
    }
}
