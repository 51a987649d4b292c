use super::*;

fn rec(name: &str, t: &str, data: &str) -> RecordDef {
    RecordDef { name: name.into(), rtype: t.into(), data: RecordData::One(data.into()), ttl: None }
}

#[test]
fn records_of_every_type() {
    let (d, r) = record(&rec("DB.kdns.", "a", "10.5.0.1")).unwrap();
    assert_eq!((d.name.as_str(), d.rtype.as_str()), ("db.kdns", "A"));
    assert_eq!(r.data, StaticData::A("10.5.0.1".parse().unwrap()));
    assert_eq!(record(&rec("x.kdns", "AAAA", "fd00::1")).unwrap().1.data, StaticData::Aaaa("fd00::1".parse().unwrap()));
    assert_eq!(record(&rec("x.kdns", "CNAME", "Web.kdns.")).unwrap().1.data, StaticData::Cname("web.kdns".into()));
    assert_eq!(record(&rec("1.0.0.10.in-addr.arpa", "PTR", "x.kdns")).unwrap().1.data, StaticData::Ptr("x.kdns".into()));
    assert_eq!(record(&rec("x.kdns", "TXT", "v=1")).unwrap().1.data, StaticData::Txt(vec!["v=1".into()]));
    let many = RecordDef { data: RecordData::Many(vec!["a".into(), "b".into()]), ..rec("x.kdns", "TXT", "") };
    assert_eq!(record(&many).unwrap().1.data, StaticData::Txt(vec!["a".into(), "b".into()]));
    let (d, r) = record(&rec("_pg._tcp.kdns", "SRV", " 0  10 5432 DB-1.kdns ")).unwrap();
    assert_eq!(r.data, StaticData::Srv { priority: 0, weight: 10, port: 5432, target: "db-1.kdns".into() });
    assert_eq!(d.data, RecordData::One("0 10 5432 db-1.kdns".into()));
}

#[test]
fn record_errors_name_the_key() {
    let cases = [
        (rec("x.kdns", "A", "10.5.0.x"), "data", "'10.5.0.x' is not an IPv4 address"),
        (rec("x.kdns", "AAAA", "10.0.0.1"), "data", "not an IPv6"),
        (rec("x.kdns", "MX", "10 mail"), "type", "'MX'"),
        (rec("", "A", "10.0.0.1"), "name", "not a domain name"),
        (rec("x.kdns", "SRV", "0 10 x y"), "data", "priority weight port target"),
        (rec("x.kdns", "SRV", "0 10 80"), "data", "priority weight port target"),
        (rec("x.kdns", "CNAME", "a..b"), "data", "not a domain name"),
        (RecordDef { ttl: Some(u32::MAX), ..rec("x.kdns", "A", "10.0.0.1") }, "ttl", "at most"),
        (RecordDef { data: RecordData::Many(vec!["a".into()]), ..rec("x.kdns", "A", "") }, "data", "only allowed for TXT"),
        (RecordDef { data: RecordData::Many(vec![]), ..rec("x.kdns", "TXT", "") }, "data", "at least one"),
        (RecordDef { data: RecordData::Many(vec!["a".into(), "b".repeat(256)]), ..rec("x.kdns", "TXT", "") }, "data[1]", "255"),
    ];
    for (def, key, msg) in cases {
        let e = record(&def).unwrap_err();
        assert_eq!(e.key, key, "{def:?}: {e}");
        assert!(e.msg.contains(msg), "{def:?}: {e}");
    }
}

fn svc() -> ServiceDef {
    ServiceDef {
        name: "Web".into(),
        mode: ModeName::Sticky,
        ttl: Some(5),
        ports: vec![PortDef { name: "_HTTP".into(), proto: "TCP".into(), port: 8080 }],
        check: Some(CheckDef { kind: CheckKind::Tcp, port: None, name: None, interval_ms: 1000, timeout_ms: 500, rise: 2, fall: 3 }),
        instances: vec![
            InstanceDef { id: "c1".into(), addrs: vec!["10.0.0.1".into(), "fd00::1".into()] },
            InstanceDef { id: "c2".into(), addrs: vec!["10.0.0.2".into()] },
        ],
    }
}

#[test]
fn services_are_normalised_and_converted() {
    let d = service(&svc()).unwrap();
    assert_eq!(d.name, "web");
    assert_eq!(d.ports[0], PortDef { name: "http".into(), proto: "tcp".into(), port: 8080 });
    let c = check_spec(&d).unwrap().unwrap();
    assert_eq!((c.kind, c.port, c.fall, c.name), (CheckKind::Tcp, 8080, 3, None));
    let dns = ServiceDef { check: Some(CheckDef { kind: CheckKind::Dns, port: None, ..svc().check.unwrap() }), ..d.clone() };
    let c = check_spec(&dns).unwrap().unwrap();
    assert_eq!((c.port, c.name.as_deref()), (53, Some("web")));
    assert_eq!(Mode::from(d.mode), Mode::Sticky);
    assert_eq!(instance_addrs(&d.instances[0]).unwrap(), vec!["10.0.0.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]);
}

#[test]
fn service_errors_name_the_key() {
    // Each breaks one rule of `svc()`.
    type Breaks = fn(&mut ServiceDef);
    let broken: [(Breaks, &str); 13] = [
        (|s| s.name = "a.b".into(), "name"),
        (|s| s.name = "-web".into(), "name"),
        (|s| s.name = String::new(), "name"),
        (|s| s.instances[1].addrs[0] = "10.0.0.300".into(), "instances[1].addrs[0]"),
        (|s| s.instances[1].id = "c1".into(), "instances[1].id"),
        (|s| s.instances[0].addrs.clear(), "instances[0].addrs"),
        (|s| s.ports[0].proto = "sctp".into(), "ports[0].proto"),
        (|s| s.ports.clear(), "check.port"),
        (|s| s.check.as_mut().unwrap().timeout_ms = 2000, "check.timeout_ms"),
        (|s| s.check.as_mut().unwrap().rise = 0, "check.rise"),
        (|s| s.check.as_mut().unwrap().fall = 0, "check.fall"),
        (|s| s.check.as_mut().unwrap().interval_ms = 1, "check.interval_ms"),
        (|s| s.ttl = Some(u32::MAX), "ttl"),
    ];
    let cases = broken.map(|(breaks, key)| {
        let mut def = svc();
        breaks(&mut def);
        (def, key)
    });
    for (def, key) in cases {
        let e = service(&def).unwrap_err();
        assert_eq!(e.key, key, "{e}");
    }
}
