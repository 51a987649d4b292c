use super::*;

fn keys() -> Keys {
    Keys::new("/kdns/v1/")
}

fn inst(host: &str, svc: &str, id: &str, addr: &str, healthy: bool) -> (String, String) {
    let v = InstanceValue {
        host: host.into(),
        service: svc.into(),
        instance: InstanceDef { id: id.into(), addrs: vec![addr.into()] },
        healthy,
    };
    (keys().instance(host, svc, id), serde_json::to_string(&v).unwrap())
}

#[test]
fn key_parts_never_span_levels() {
    let k = keys();
    assert_eq!(k.all(), "/kdns/v1/");
    assert_eq!(k.instance("host a", "web", "x/y%"), "/kdns/v1/instances/host%20a/web/x%2Fy%25");
    assert_eq!(k.host("h1"), "/kdns/v1/hosts/h1");
    assert_eq!(k.service("web"), "/kdns/v1/services/web");
}

#[test]
fn values_decode_only_at_their_own_key_and_bad_ones_are_skipped_and_counted() {
    let k = keys();
    let mut e = Entries::default();
    let (key, val) = inst("a", "web", "c1", "10.0.0.1", true);
    e.put(&k, &key, val.as_bytes());
    assert_eq!(e.len(), 1);
    // The same value under another host's key.
    e.put(&k, "/kdns/v1/instances/b/web/c1", val.as_bytes());
    // Not JSON, an unknown kind, a bad address, an empty host.
    e.put(&k, "/kdns/v1/instances/a/web/c2", b"{nope");
    e.put(&k, "/kdns/v1/widgets/x", b"{}");
    let (key3, val3) = inst("a", "web", "c3", "10.0.0.300", true);
    e.put(&k, &key3, val3.as_bytes());
    let (key4, val4) = inst("", "web", "c4", "10.0.0.4", true);
    e.put(&k, &key4, val4.as_bytes());
    assert_eq!(e.skipped, 5);
    assert_eq!(e.len(), 1);
    // A bad value replacing a good one removes it.
    e.put(&k, &key, b"[]");
    assert_eq!(e.len(), 0);
}

#[test]
fn the_layer_is_the_other_hosts_and_own_is_this_ones() {
    let k = keys();
    let mut e = Entries::default();
    for (key, val) in [inst("a", "web", "c1", "10.0.0.1", true), inst("b", "web", "c2", "10.0.0.2", false)] {
        e.put(&k, &key, val.as_bytes());
    }
    let svc = ServiceValue { owner: "a".into(), service: defs::service(&ServiceDef { name: "web".into(), ..sdef() }).unwrap() };
    e.put(&k, &k.service("web"), serde_json::to_string(&svc).unwrap().as_bytes());
    let hv = HostValue { host: "b".into(), lease_ttl_s: 5, granted_unix_ms: 1_000, version: "0".into() };
    e.put(&k, &k.host("b"), serde_json::to_string(&hv).unwrap().as_bytes());
    let l = e.layer("a");
    assert_eq!(l.instances.len(), 1);
    assert_eq!(l.instances[0].instance.id, "c2");
    assert!(!l.instances[0].healthy);
    assert!(l.services.is_empty());
    let own = e.own("a");
    assert_eq!(own.leased.keys().collect::<Vec<_>>(), vec!["/kdns/v1/instances/a/web/c1"]);
    assert_eq!(own.plain.keys().collect::<Vec<_>>(), vec!["/kdns/v1/services/web"]);
    let hosts = e.hosts("a", 4_500);
    assert_eq!(hosts.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(), vec!["a", "b"]);
    assert!(hosts[0].local && !hosts[0].alive);
    assert_eq!((hosts[1].instances, hosts[1].healthy, hosts[1].lease_age_s, hosts[1].lease_ttl_s), (1, 0, Some(3.5), Some(5)));
}

fn sdef() -> ServiceDef {
    ServiceDef { name: String::new(), mode: Default::default(), ttl: None, ports: Vec::new(), check: None, instances: Vec::new() }
}

#[test]
fn desired_round_trips_through_decode_and_diff_writes_only_changes() {
    let k = keys();
    let export = Export {
        services: vec![ServiceDef { name: "web".into(), ttl: Some(30), ..sdef() }],
        instances: vec![("web".into(), InstanceDef { id: "c1".into(), addrs: vec!["10.0.0.1".into()] }, true)],
        records: vec![RecordDef { name: "db.kdns".into(), rtype: "A".into(), data: RecordData::One("10.5.0.1".into()), ttl: None }],
    };
    let d = desired(&k, "a", &export);
    let mut e = Entries::default();
    for (key, v) in d.leased.iter().chain(&d.plain) {
        e.put(&k, key, v.as_bytes());
    }
    assert_eq!(e.skipped, 0, "what this host writes must decode");
    assert_eq!(e.own("a"), d);
    let (puts, dels) = diff(&d.leased, &d.leased);
    assert!(puts.is_empty() && dels.is_empty());
    let mut less = export.clone();
    less.instances[0].2 = false;
    less.records.clear();
    let d2 = desired(&k, "a", &less);
    let (puts, dels) = diff(&d.leased, &d2.leased);
    assert_eq!((puts.len(), dels.len()), (1, 0));
    assert!(puts[0].1.contains("\"healthy\":false"));
    let (puts, dels) = diff(&d.plain, &d2.plain);
    assert_eq!((puts.len(), dels.len()), (0, 1));
}

/// GHSA-93mf-426m-g6x9: CoreDNS's etcd plugin answered with a lease id as
/// the TTL. Here the id is a handle only: the keep-alive period comes from
/// the granted TTL, and the DNS TTL of a shared service from its definition.
#[test]
fn a_lease_id_is_not_a_ttl() {
    let id = 0x694d_7a1b_3c2d_9e01_i64;
    let l = Lease::granted(id, 6);
    assert_eq!(l.ttl, Duration::from_secs(6));
    assert_eq!(l.keep_alive_every(), Duration::from_secs(2));
    assert_eq!(l.id_hex(), "694d7a1b3c2d9e01");
    // A TTL of 0 or less (an expired lease) is never read as a long one.
    assert_eq!(Lease::granted(id, 0).ttl, Duration::from_secs(1));
    assert_eq!(Lease::granted(id, -1).ttl, Duration::from_secs(1));
    // The values written under the lease carry no lease id and no TTL of
    // their own: the DNS TTL is the service's.
    let k = keys();
    let export = Export {
        services: vec![ServiceDef { name: "web".into(), ttl: Some(30), ..sdef() }],
        instances: vec![("web".into(), InstanceDef { id: "c1".into(), addrs: vec!["10.0.0.1".into()] }, true)],
        records: Vec::new(),
    };
    let d = desired(&k, "a", &export);
    for v in d.leased.values().chain(d.plain.values()) {
        assert!(!v.contains(&id.to_string()) && !v.contains("694d7a1b3c2d9e01"), "{v}");
    }
    let mut e = Entries::default();
    for (key, v) in d.leased.iter().chain(&d.plain) {
        e.put(&k, key, v.as_bytes());
    }
    let l = e.layer("b");
    assert_eq!(l.services[0].ttl, Some(30));
}
