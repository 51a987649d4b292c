//! Local records: each name form, answered as a client would see it.

use core::net::{IpAddr, Ipv4Addr};

use super::*;
use crate::testutil::{name_wire, query};
use crate::wire::{flags, Class, Header, Message, Rcode, Rtype};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn inst(id: &str, addrs: &[&str], healthy: bool) -> Instance {
    Instance { id: id.into(), addrs: addrs.iter().map(|a| ip(a)).collect(), healthy, number: None }
}

fn web(mode: Mode) -> Service {
    Service {
        name: "web".into(),
        mode,
        ttl: None,
        instances: vec![inst("c1", &["10.0.0.1", "fd00::1"], true), inst("c2", &["10.0.0.2"], true), inst("c3", &["10.0.0.3"], true)],
        ports: vec![SrvPort { name: "http".into(), proto: "tcp".into(), port: 8080 }],
    }
}

fn config(services: Vec<Service>, records: Vec<StaticRecord>) -> RecordsConfig {
    RecordsConfig { domains: vec!["kdns".into(), "svc.cluster.local".into()], default_ttl: 10, services, records, serial: 7 }
}

/// What a client sees for `name`/`qtype`.
#[derive(Debug)]
struct Seen {
    rcode: Rcode,
    aa: bool,
    tc: bool,
    answers: Vec<(String, Rtype, u32, Vec<u8>)>,
    authority: Vec<Rtype>,
    /// The same bytes for any client and later query (the in-kernel tier may hold it).
    fixed: bool,
}

impl Seen {
    fn addrs(&self) -> Vec<IpAddr> {
        self.answers
            .iter()
            .filter_map(|(_, t, _, d)| match *t {
                Rtype::A => Some(IpAddr::from(<[u8; 4]>::try_from(&d[..]).unwrap())),
                Rtype::AAAA => Some(IpAddr::from(<[u8; 16]>::try_from(&d[..]).unwrap())),
                _ => None,
            })
            .collect()
    }
}

fn ask_from(s: &Snapshot, name: &str, qtype: Rtype, client: &str, rotate: u32, random: u64) -> Option<Seen> {
    let q = query(0x4242, name, qtype, None);
    let m = Message::parse(&q).unwrap();
    let lq = LocalQuery {
        qname: &q[12..m.question.name.end()],
        qtype,
        qclass: Class::IN,
        id: 0x4242,
        flags: flags::RD,
        opt: None,
        client: ip(client),
        limit: 4096,
        rotate,
        random,
    };
    let mut out = [0u8; 4096];
    match s.answer(&lq, &mut out) {
        LocalAnswer::NotLocal => None,
        LocalAnswer::Reply(len, rcode, fixed) => {
            let r = &out[..len];
            let h = Header::new_checked(r).unwrap();
            assert_eq!(h.id(), 0x4242);
            assert!(h.qr() && h.rd());
            assert_eq!(h.rcode(), rcode);
            let m = Message::parse(r).unwrap();
            let mut answers = Vec::new();
            let mut authority = Vec::new();
            for rec in m.sections.records(r) {
                if rec.ttl_offset < m.sections.authority {
                    answers.push((rec.name.display(r).to_string(), rec.rtype, rec.ttl, rec.rdata(r).to_vec()));
                } else if rec.ttl_offset < m.sections.additional {
                    authority.push(rec.rtype);
                }
            }
            Some(Seen { rcode, aa: h.aa(), tc: h.tc(), answers, authority, fixed })
        }
    }
}

fn ask(s: &Snapshot, name: &str, qtype: Rtype) -> Seen {
    ask_from(s, name, qtype, "10.9.9.9", 0, 0).unwrap_or_else(|| panic!("{name} is not local"))
}

#[test]
fn a_service_name_gives_every_healthy_instance_rotated() {
    let s = Snapshot::build(&config(vec![web(Mode::All)], vec![])).unwrap();
    let a = ask(&s, "web.kdns", Rtype::A);
    assert_eq!((a.rcode, a.aa), (Rcode::NOERROR, true));
    assert_eq!(a.addrs(), vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")]);
    assert!(a.answers.iter().all(|(n, _, ttl, _)| n == "web.kdns." && *ttl == 10));
    let firsts: Vec<IpAddr> = (0..3).map(|r| ask_from(&s, "web.kdns", Rtype::A, "10.9.9.9", r, 0).unwrap().addrs()[0]).collect();
    assert_eq!(firsts, vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")], "order rotates");
    assert_eq!(ask(&s, "WEB.KDNS", Rtype::AAAA).addrs(), vec![ip("fd00::1")]);
    assert_eq!(ask(&s, "web.svc.cluster.local", Rtype::A).addrs().len(), 3, "every domain");
}

#[test]
fn instance_names_and_bare_names() {
    let s = Snapshot::build(&config(vec![web(Mode::All)], vec![])).unwrap();
    assert_eq!(ask(&s, "web-2.kdns", Rtype::A).addrs(), vec![ip("10.0.0.2")]);
    assert_eq!(ask(&s, "web-1.kdns", Rtype::AAAA).addrs(), vec![ip("fd00::1")]);
    let bare = ask(&s, "web", Rtype::A);
    assert_eq!(bare.addrs().len(), 3);
    assert_eq!(bare.answers[0].0, "web.", "owner is the name asked");
    assert!(ask_from(&s, "nothere", Rtype::A, "10.9.9.9", 0, 0).is_none(), "an unknown single label goes to the backends");
    assert!(ask_from(&s, "com", Rtype::NS, "10.9.9.9", 0, 0).is_none());
}

#[test]
fn instances_with_their_own_numbers_keep_them_in_names_srv_and_ptr() {
    let mut svc = web(Mode::All);
    // Replicas 1 and 3 of a scaled service whose replica 2 is gone.
    svc.instances = vec![inst("c1", &["10.0.0.1"], true), inst("c3", &["10.0.0.3"], true)];
    svc.instances[0].number = Some(1);
    svc.instances[1].number = Some(3);
    let s = Snapshot::build(&config(vec![svc.clone()], vec![])).unwrap();
    assert_eq!(ask(&s, "web-3.kdns", Rtype::A).addrs(), vec![ip("10.0.0.3")]);
    assert_eq!(ask(&s, "web-1.kdns", Rtype::A).addrs(), vec![ip("10.0.0.1")]);
    assert_eq!(ask(&s, "web-2.kdns", Rtype::A).rcode, Rcode::NXDOMAIN, "no replica 2");
    let srv = ask(&s, "_http._tcp.web.kdns", Rtype::SRV);
    let targets: Vec<Vec<u8>> = srv.answers.iter().map(|(_, _, _, d)| d[6..].to_vec()).collect();
    assert_eq!(targets, vec![name_wire("web-1.kdns"), name_wire("web-3.kdns")]);
    let ptr = ask(&s, "3.0.0.10.in-addr.arpa", Rtype::PTR);
    assert_eq!(ptr.answers[0].3, name_wire("web-3.kdns"));
    // The same number twice is refused, naming it.
    svc.instances[0].number = Some(3);
    assert_eq!(Snapshot::build(&config(vec![svc], vec![])).unwrap_err(), RecordsError::Duplicate { name: "web-3".into() });
}

#[test]
fn unknown_names_are_nxdomain_and_empty_services_nodata_with_the_soa() {
    let mut svc = web(Mode::All);
    for i in &mut svc.instances {
        i.healthy = false;
    }
    let s = Snapshot::build(&config(vec![svc], vec![])).unwrap();
    let nx = ask(&s, "nope.kdns", Rtype::A);
    assert_eq!((nx.rcode, nx.answers.len(), nx.authority.clone()), (Rcode::NXDOMAIN, 0, vec![Rtype::SOA]));
    let nodata = ask(&s, "web.kdns", Rtype::A);
    assert_eq!(
        (nodata.rcode, nodata.answers.len(), nodata.authority.clone()),
        (Rcode::NOERROR, 0, vec![Rtype::SOA]),
        "never a dead address"
    );
    assert_eq!(ask(&s, "web-1.kdns", Rtype::A).answers.len(), 0);
    assert_eq!(ask(&s, "web.kdns", Rtype::TXT).authority, vec![Rtype::SOA]);
    assert!(ask_from(&s, "example.com", Rtype::A, "10.9.9.9", 0, 0).is_none(), "not ours: forwarded");
}

#[test]
fn unhealthy_instances_leave_the_answers() {
    let mut svc = web(Mode::All);
    svc.instances[1].healthy = false;
    let s = Snapshot::build(&config(vec![svc], vec![])).unwrap();
    for r in 0..6 {
        let got = ask_from(&s, "web.kdns", Rtype::A, "10.9.9.9", r, 0).unwrap().addrs();
        assert_eq!(got.len(), 2);
        assert!(!got.contains(&ip("10.0.0.2")));
    }
}

#[test]
fn random_one_gives_one_instance() {
    let s = Snapshot::build(&config(vec![web(Mode::RandomOne)], vec![])).unwrap();
    let mut seen = std::collections::HashSet::new();
    for r in 0..30u64 {
        let a = ask_from(&s, "web.kdns", Rtype::A, "10.9.9.9", 0, r.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap().addrs();
        assert_eq!(a.len(), 1);
        seen.insert(a[0]);
    }
    assert_eq!(seen.len(), 3, "every instance gets picked");
}

#[test]
fn sticky_keeps_a_client_on_its_instance_while_it_is_healthy() {
    let s = Snapshot::build(&config(vec![web(Mode::Sticky)], vec![])).unwrap();
    let mut spread = std::collections::HashMap::new();
    for c in 0..200 {
        let client = format!("10.1.{}.{}", c / 250, c % 250 + 1);
        let first = ask_from(&s, "web.kdns", Rtype::A, &client, 0, 0).unwrap().addrs();
        assert_eq!(first.len(), 1);
        for r in 1..5 {
            assert_eq!(ask_from(&s, "web.kdns", Rtype::A, &client, r, r as u64).unwrap().addrs(), first, "sticky for {client}");
        }
        *spread.entry(first[0]).or_insert(0) += 1;
    }
    assert_eq!(spread.len(), 3, "clients spread over instances: {spread:?}");
    assert!(spread.values().all(|&n| n > 30), "{spread:?}");
    // The instance of some client goes down: it moves, the others stay.
    let victim = *spread.keys().next().unwrap();
    let mut svc = web(Mode::Sticky);
    for i in &mut svc.instances {
        if i.addrs.contains(&victim) {
            i.healthy = false;
        }
    }
    let s2 = Snapshot::build(&config(vec![svc], vec![])).unwrap();
    for c in 0..200 {
        let client = format!("10.1.{}.{}", c / 250, c % 250 + 1);
        let before = ask_from(&s, "web.kdns", Rtype::A, &client, 0, 0).unwrap().addrs()[0];
        let after = ask_from(&s2, "web.kdns", Rtype::A, &client, 0, 0).unwrap().addrs()[0];
        assert_ne!(after, victim);
        if before != victim {
            assert_eq!(before, after, "only the clients of the dead instance move");
        }
    }
}

#[test]
fn srv_and_ptr_for_instances() {
    let s = Snapshot::build(&config(vec![web(Mode::All)], vec![])).unwrap();
    let srv = ask(&s, "_http._tcp.web.kdns", Rtype::SRV);
    assert_eq!(srv.answers.len(), 3);
    let (_, t, _, d) = &srv.answers[1];
    assert_eq!(*t, Rtype::SRV);
    assert_eq!(u16::from_be_bytes([d[4], d[5]]), 8080);
    assert_eq!(&d[6..], &name_wire("web-2.kdns")[..]);
    let ptr = ask_from(&s, "2.0.0.10.in-addr.arpa", Rtype::PTR, "10.9.9.9", 0, 0).unwrap();
    assert_eq!(ptr.answers[0].3, name_wire("web-2.kdns"));
    let ptr6 = ask_from(&s, &super::build::reverse_name_text(ip("fd00::1")), Rtype::PTR, "10.9.9.9", 0, 0).unwrap();
    assert_eq!(ptr6.answers[0].3, name_wire("web-1.kdns"));
    assert!(ask_from(&s, "9.9.9.10.in-addr.arpa", Rtype::PTR, "10.9.9.9", 0, 0).is_none(), "other reverse names are forwarded");
}

#[test]
fn static_records_and_cnames_followed_inside_our_domains() {
    let recs = vec![
        StaticRecord { name: "db.kdns".into(), ttl: Some(60), data: StaticData::A(Ipv4Addr::new(10, 5, 0, 1)) },
        StaticRecord { name: "db.kdns".into(), ttl: None, data: StaticData::Txt(vec!["role=primary".into()]) },
        StaticRecord { name: "www.kdns".into(), ttl: None, data: StaticData::Cname("web.kdns".into()) },
        StaticRecord { name: "ext.kdns".into(), ttl: None, data: StaticData::Cname("example.com".into()) },
        StaticRecord { name: "chain.kdns".into(), ttl: None, data: StaticData::Cname("www.kdns".into()) },
    ];
    let s = Snapshot::build(&config(vec![web(Mode::All)], recs)).unwrap();
    let a = ask(&s, "db.kdns", Rtype::A);
    assert_eq!((a.addrs(), a.answers[0].2), (vec![ip("10.5.0.1")], 60));
    assert_eq!(ask(&s, "db.kdns", Rtype::TXT).answers[0].3, b"\x0crole=primary".to_vec());
    let c = ask(&s, "www.kdns", Rtype::A);
    assert_eq!(c.answers[0].1, Rtype::CNAME);
    assert_eq!(c.addrs().len(), 3, "followed to the service");
    assert_eq!(c.answers[1].0, "web.kdns.");
    let chain = ask(&s, "chain.kdns", Rtype::A);
    assert_eq!(chain.answers.iter().filter(|a| a.1 == Rtype::CNAME).count(), 2);
    assert_eq!(chain.addrs().len(), 3);
    let ext = ask(&s, "ext.kdns", Rtype::A);
    assert_eq!(ext.answers.len(), 1, "a target outside our domains is left to the client");
}

#[test]
fn ttl_defaults_to_ten_seconds_and_can_be_overridden() {
    let mut svc = web(Mode::All);
    svc.ttl = Some(3);
    let mut cfg = config(vec![svc], vec![]);
    cfg.default_ttl = 0;
    let s = Snapshot::build(&cfg).unwrap();
    assert!(ask(&s, "web.kdns", Rtype::A).answers.iter().all(|a| a.2 == 3));
    assert_eq!(s.soa_ttl, 10);
}

#[test]
fn bad_configurations_name_the_culprit() {
    let dup = config(vec![web(Mode::All), web(Mode::All)], vec![]);
    assert_eq!(Snapshot::build(&dup).unwrap_err(), RecordsError::Duplicate { name: "web".into() });
    let outside = config(vec![], vec![StaticRecord { name: "x.example".into(), ttl: None, data: StaticData::A(Ipv4Addr::LOCALHOST) }]);
    assert_eq!(Snapshot::build(&outside).unwrap_err(), RecordsError::NotUnderDomain { name: "x.example".into() });
    let cname = config(
        vec![],
        vec![
            StaticRecord { name: "a.kdns".into(), ttl: None, data: StaticData::A(Ipv4Addr::LOCALHOST) },
            StaticRecord { name: "a.kdns".into(), ttl: None, data: StaticData::Cname("b.kdns".into()) },
        ],
    );
    assert_eq!(Snapshot::build(&cname).unwrap_err(), RecordsError::CnameConflict { name: "a.kdns".into() });
    let mut bad = web(Mode::All);
    bad.name = "we b.x".into();
    assert!(matches!(Snapshot::build(&config(vec![bad], vec![])), Err(RecordsError::BadName { .. })));
    let clash = Service { name: "web-1".into(), ..web(Mode::All) };
    assert!(Snapshot::build(&config(vec![web(Mode::All), clash], vec![])).is_err(), "web-1 is an instance name already");
}

#[test]
fn an_answer_too_big_for_the_client_is_truncated() {
    let svc = Service {
        name: "big".into(),
        instances: (0..100).map(|i| inst(&format!("c{i}"), &[&format!("10.1.0.{i}")], true)).collect(),
        ..Service::default()
    };
    let s = Snapshot::build(&config(vec![svc], vec![])).unwrap();
    let q = query(1, "big.kdns", Rtype::A, None);
    let lq = LocalQuery {
        qname: &q[12..12 + 10],
        qtype: Rtype::A,
        qclass: Class::IN,
        id: 1,
        flags: 0,
        opt: None,
        client: ip("10.0.0.1"),
        limit: 512,
        rotate: 0,
        random: 0,
    };
    let mut out = [0u8; 512];
    let LocalAnswer::Reply(len, _, _) = s.answer(&lq, &mut out) else { panic!() };
    let h = Header::new_checked(&out[..len]).unwrap();
    assert!(h.tc() && h.ancount() == 0 && len <= 512);
    assert!(!ask(&s, "big.kdns", Rtype::A).tc);
}

#[test]
fn ten_thousand_services_of_ten_instances_fit_in_memory() {
    let services: Vec<Service> = (0..10_000u32)
        .map(|i| Service {
            name: format!("svc{i}"),
            instances: (0..10u32)
                .map(|k| inst(&format!("c{i}-{k}"), &[&IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i * 16 + k)).to_string()], true))
                .collect(),
            ..Service::default()
        })
        .collect();
    let cfg = RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, services, records: vec![], serial: 1 };
    let s = Snapshot::build(&cfg).unwrap();
    println!("10k services x 10 instances: {} names, ~{} MiB", s.len(), s.memory() >> 20);
    assert_eq!(s.len(), 10_000 * (1 + 10) + 100_000, "service + instance names, and a PTR per address");
    assert_eq!(ask(&s, "svc9999-10.kdns", Rtype::A).addrs(), vec![IpAddr::from(Ipv4Addr::from(0x0a00_0000 + 9999 * 16 + 9))]);
}

#[test]
fn the_apex_and_names_between_it_and_ours_exist() {
    let s = Snapshot::build(&config(vec![web(Mode::All)], vec![])).unwrap();
    let soa = ask(&s, "kdns", Rtype::SOA);
    assert_eq!((soa.rcode, soa.answers.len(), soa.answers[0].1), (Rcode::NOERROR, 1, Rtype::SOA));
    let apex_a = ask(&s, "kdns", Rtype::A);
    assert_eq!((apex_a.rcode, apex_a.answers.len(), apex_a.authority.clone()), (Rcode::NOERROR, 0, vec![Rtype::SOA]));
    assert_eq!(ask(&s, "svc.cluster.local", Rtype::SOA).answers.len(), 1);
    let ent = ask(&s, "_tcp.web.kdns", Rtype::SRV);
    assert_eq!((ent.rcode, ent.answers.len()), (Rcode::NOERROR, 0), "an empty non-terminal is NODATA");
    assert_eq!(ask(&s, "x._tcp.web.kdns", Rtype::SRV).rcode, Rcode::NXDOMAIN);
}

#[test]
fn an_answer_is_fixed_unless_it_chose_among_several_instances() {
    let mut one = web(Mode::Sticky);
    one.name = "one".into();
    one.instances.truncate(1);
    let mut pick = web(Mode::RandomOne);
    pick.name = "pick".into();
    let records = vec![
        StaticRecord { name: "db.kdns".into(), ttl: Some(60), data: StaticData::A(Ipv4Addr::new(10, 5, 0, 1)) },
        StaticRecord { name: "www.kdns".into(), ttl: None, data: StaticData::Cname("web.kdns".into()) },
        StaticRecord { name: "alias.kdns".into(), ttl: None, data: StaticData::Cname("one.kdns".into()) },
    ];
    let s = Snapshot::build(&config(vec![web(Mode::All), one, pick], records)).unwrap();
    let fixed = |name: &str, t: Rtype| ask(&s, name, t).fixed;
    // Three healthy instances: rotated, or one picked.
    assert!(!fixed("web.kdns", Rtype::A));
    assert!(!fixed("pick.kdns", Rtype::A));
    assert!(!fixed("www.kdns", Rtype::A), "a CNAME to a rotated service");
    // One instance of the family asked, one instance, static data, no data.
    assert!(fixed("web.kdns", Rtype::AAAA), "only c1 has an IPv6 address");
    assert!(fixed("web-2.kdns", Rtype::A));
    assert!(fixed("one.kdns", Rtype::A), "sticky with one instance");
    assert!(fixed("alias.kdns", Rtype::A));
    assert!(fixed("db.kdns", Rtype::A));
    assert!(fixed("nothing.kdns", Rtype::A), "NXDOMAIN");
    assert!(fixed("db.kdns", Rtype::MX), "NODATA");
    // And it is: the same bytes from another client, rotation and random.
    for (name, t) in [("web.kdns", Rtype::AAAA), ("one.kdns", Rtype::A), ("alias.kdns", Rtype::A)] {
        let a = ask_from(&s, name, t, "10.9.9.9", 0, 0).unwrap();
        let b = ask_from(&s, name, t, "10.1.2.3", 7, 99).unwrap();
        assert_eq!(a.answers, b.answers, "{name}");
    }
}
