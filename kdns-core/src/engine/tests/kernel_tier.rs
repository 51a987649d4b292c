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
