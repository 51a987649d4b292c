//! The rules of the Docker provider, on containers written by hand.

use super::*;

const NET: &str = "kdns_dnsnet";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A running compose replica of `service` number `n` at `addr` on dnsnet.
/// `c` with `labels` added.
fn labelled<const N: usize>(mut c: Container, labels: [(&str, &str); N]) -> Container {
    c.labels.extend(labels.map(|(k, v)| (k.to_string(), v.to_string())));
    c
}

/// A model that has seen `containers`.
fn model(containers: Vec<Container>) -> Model {
    let mut m = Model::default();
    m.replace_all(containers);
    m
}

fn replica(service: &str, n: u32, addr: &str) -> Container {
    let id = format!("{service}{n}{:0>56}", 0);
    let mut labels = BTreeMap::new();
    labels.insert(COMPOSE_SERVICE.to_string(), service.to_string());
    labels.insert(COMPOSE_NUMBER.to_string(), n.to_string());
    Container {
        id: id.clone(),
        name: format!("kdns_{service}_{n}"),
        created: format!("2026-12-03T10:00:{n:02}Z"),
        labels,
        running: true,
        health: Health::None,
        endpoints: vec![Endpoint { network: NET.into(), addrs: vec![ip(addr)], aliases: vec![service.into(), short(&id).into()] }],
    }
}

fn sel() -> Selection {
    Selection { networks: vec!["dnsnet".into()], listen: vec![ip("172.30.53.53")], serve_starting: true }
}

fn layer(m: &mut Model) -> (Layer, Vec<String>) {
    m.layer(&[NET.to_string()], &sel())
}

/// An instance as the tests compare it: (number, addrs, healthy).
type Inst = (u32, Vec<IpAddr>, bool);

/// (service, instances) of a layer.
fn services(l: &Layer) -> Vec<(String, Vec<Inst>)> {
    l.services.iter().map(|s| (s.def.name.clone(), s.instances.iter().map(|i| (i.number, i.addrs.clone(), i.healthy)).collect())).collect()
}

fn name<'a>(l: &'a Layer, label: &str) -> Option<&'a Vec<IpAddr>> {
    l.names.iter().find(|(n, _)| n == label).map(|(_, a)| a)
}

#[test]
fn networks_are_chosen_by_name_compose_name_or_listen_address() {
    let nets = vec![
        Network { name: "bridge".into(), compose_name: None, subnets: vec![(ip("172.17.0.0"), 16)] },
        Network { name: "kdns_dnsnet".into(), compose_name: Some("dnsnet".into()), subnets: vec![(ip("172.30.53.0"), 24)] },
        Network { name: "other".into(), compose_name: None, subnets: vec![(ip("fd00:53::"), 64)] },
    ];
    assert_eq!(sel().served(&nets), vec!["kdns_dnsnet"], "by compose name");
    let by_name = Selection { networks: vec!["bridge".into()], ..sel() };
    assert_eq!(by_name.served(&nets), vec!["bridge"]);
    let auto = Selection { networks: vec![], ..sel() };
    assert_eq!(auto.served(&nets), vec!["kdns_dnsnet"], "the subnet holding 172.30.53.53");
    let v6 = Selection { networks: vec![], listen: vec![ip("fd00:53::53"), ip("127.0.0.1")], ..sel() };
    assert_eq!(v6.served(&nets), vec!["other"]);
    let none = Selection { networks: vec![], listen: vec![ip("0.0.0.0")], ..sel() };
    assert!(none.served(&nets).is_empty());
    assert_eq!(parse_subnet("172.30.53.0/24"), Some((ip("172.30.53.0"), 24)));
    assert_eq!(parse_subnet("fd00::/129"), None);
    assert_eq!(parse_subnet("nope"), None);
}

#[test]
fn compose_replicas_are_numbered_instances_and_names() {
    let mut m = model(vec![replica("web", 1, "172.30.53.21"), replica("web", 3, "172.30.53.23"), replica("db", 1, "172.30.53.31")]);
    let (l, warnings) = layer(&mut m);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        services(&l),
        vec![
            ("db".into(), vec![(1, vec![ip("172.30.53.31")], true)]),
            ("web".into(), vec![(1, vec![ip("172.30.53.21")], true), (3, vec![ip("172.30.53.23")], true)]),
        ],
        "compose numbers kept, with the gap"
    );
    assert_eq!(name(&l, "kdns_web_3"), Some(&vec![ip("172.30.53.23")]), "container name");
    let id = replica("web", 3, "172.30.53.23").id;
    assert_eq!(name(&l, short(&id)), Some(&vec![ip("172.30.53.23")]), "short id alias");
    assert_eq!(name(&l, "web"), None, "the service alias is the service itself");
    assert_eq!(l.services[1].instances[1].id, "kdns_web_3", "instances are known by container name");
}

#[test]
fn plain_containers_get_the_lowest_free_number_and_keep_it() {
    let plain = |name: &str, created: &str, addr: &str| {
        let mut c = replica("x", 1, addr);
        c.id = format!("{name:0>64}");
        c.name = name.into();
        c.created = created.into();
        c.labels = BTreeMap::from([(LABEL_SERVICE.to_string(), "api".to_string())]);
        c.endpoints[0].aliases.clear();
        c
    };
    let mut m = model(vec![plain("b", "2", "10.0.0.2"), plain("a", "1", "10.0.0.1")]);
    let (l, _) = layer(&mut m);
    assert_eq!(services(&l)[0].1, vec![(1, vec![ip("10.0.0.1")], true), (2, vec![ip("10.0.0.2")], true)], "oldest first");
    // The first one goes, a third comes: b keeps 2, c takes the free 1.
    m.remove(&plain("a", "1", "10.0.0.1").id);
    m.upsert(plain("c", "3", "10.0.0.3"));
    let (l, _) = layer(&mut m);
    assert_eq!(services(&l)[0].1, vec![(1, vec![ip("10.0.0.3")], true), (2, vec![ip("10.0.0.2")], true)]);
    // A resync that sees the same containers keeps the numbers.
    m.replace_all(vec![plain("c", "3", "10.0.0.3"), plain("b", "2", "10.0.0.2")]);
    assert_eq!(services(&layer(&mut m).0)[0].1, vec![(1, vec![ip("10.0.0.3")], true), (2, vec![ip("10.0.0.2")], true)]);
    // Two compose projects with a service of the same name on one network:
    // the second replica 1 gets the next free number.
    let mut m = Model::default();
    let mut other = replica("web", 1, "172.30.53.41");
    other.id = format!("{:0>64}", "other");
    other.name = "other_web_1".into();
    other.created = "2026-12-03T11:00:00Z".into();
    m.replace_all(vec![replica("web", 1, "172.30.53.21"), other]);
    assert_eq!(services(&layer(&mut m).0)[0].1.iter().map(|i| i.0).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn stopped_paused_disabled_and_off_network_containers_are_not_served() {
    let mut stopped = replica("web", 1, "172.30.53.21");
    stopped.running = false;
    let mut disabled = replica("web", 2, "172.30.53.22");
    disabled.labels.insert(LABEL_ENABLE.into(), "false".into());
    let mut elsewhere = replica("web", 3, "10.9.0.3");
    elsewhere.endpoints[0].network = "kdns_default".into();
    let mut no_addr = replica("web", 4, "172.30.53.24");
    no_addr.endpoints[0].addrs.clear();
    let mut m = model(vec![stopped, disabled, elsewhere, no_addr, replica("web", 5, "172.30.53.25")]);
    let (l, warnings) = layer(&mut m);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(services(&l), vec![("web".into(), vec![(5, vec![ip("172.30.53.25")], true)])]);
    assert_eq!(l.names.len(), 2, "kdns_web_5 and its short id: {:?}", l.names);
}

#[test]
fn health_unhealthy_leaves_starting_follows_the_setting() {
    let mut sick = replica("web", 1, "172.30.53.21");
    sick.health = Health::Unhealthy;
    let mut new = replica("web", 2, "172.30.53.22");
    new.health = Health::Starting;
    let mut ok = replica("web", 3, "172.30.53.23");
    ok.health = Health::Healthy;
    let mut m = model(vec![sick, new, ok]);
    let (l, _) = layer(&mut m);
    let health: Vec<(u32, bool, Served)> = l.services[0].instances.iter().map(|i| (i.number, i.healthy, i.health)).collect();
    assert_eq!(health, vec![(1, false, Served::Unhealthy), (2, true, Served::Starting), (3, true, Served::Up)]);
    assert_eq!(name(&l, "kdns_web_1"), None, "an unhealthy container's name does not answer");
    let hide = Selection { serve_starting: false, ..sel() };
    let (l, _) = m.layer(&[NET.to_string()], &hide);
    assert_eq!(l.services[0].instances[1].health, Served::Starting);
    assert!(!l.services[0].instances[1].healthy);
}

#[test]
fn labels_set_mode_ttl_and_ports_and_bad_ones_are_named_once() {
    let c = labelled(
        replica("web", 1, "172.30.53.21"),
        [(LABEL_MODE, "sticky"), (LABEL_TTL, "30"), (LABEL_PORTS, "http:8080/tcp, dns:53/udp")],
    );
    let mut m = model(vec![c]);
    let (l, w) = layer(&mut m);
    assert!(w.is_empty(), "{w:?}");
    let d = &l.services[0].def;
    assert_eq!((d.mode, d.ttl), (ModeName::Sticky, Some(30)));
    assert_eq!(
        d.ports,
        vec![
            PortDef { name: "http".into(), proto: "tcp".into(), port: 8080 },
            PortDef { name: "dns".into(), proto: "udp".into(), port: 53 }
        ]
    );

    let bad = labelled(replica("api", 1, "172.30.53.41"), [(LABEL_MODE, "roundrobin"), (LABEL_TTL, "-1"), (LABEL_PORTS, "http")]);
    let mut m = model(vec![bad]);
    let (l, w) = layer(&mut m);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().all(|x| x.starts_with("Docker container kdns_api_1 (")), "{w:?}");
    assert!(w[0].contains("kdns.mode='roundrobin' ignored"), "{w:?}");
    assert_eq!(services(&l), vec![("api".into(), vec![(1, vec![ip("172.30.53.41")], true)])], "still served, with defaults");
    assert!(layer(&mut m).1.is_empty(), "said once");

    // Replicas that disagree: the oldest one's labels, and a warning.
    let mut a = replica("web", 1, "172.30.53.21");
    a.labels.insert(LABEL_TTL.into(), "30".into());
    let b = replica("web", 2, "172.30.53.22");
    let mut m = model(vec![a, b]);
    let (l, w) = layer(&mut m);
    assert_eq!(l.services[0].def.ttl, Some(30));
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("kdns_web_2") && w[0].contains("differ from those of kdns_web_1"), "{w:?}");
}

#[test]
fn names_that_are_not_dns_labels_are_skipped_with_a_warning() {
    let mut bad_service = replica("web", 1, "172.30.53.21");
    bad_service.labels.insert(LABEL_SERVICE.into(), "bad_name!".into());
    let mut dotted = replica("x", 1, "172.30.53.22");
    dotted.labels.clear();
    dotted.name = "my.app".into();
    let mut bad_alias = replica("db", 1, "172.30.53.23");
    bad_alias.endpoints[0].aliases.push("not valid".into());
    bad_alias.name = "db.primary".into();
    let mut m = model(vec![bad_service, dotted, bad_alias]);
    let (l, w) = layer(&mut m);
    assert_eq!(services(&l), vec![("db".into(), vec![(1, vec![ip("172.30.53.23")], true)])]);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().any(|x| x.contains("kdns_web_1") && x.contains("label kdns.service 'bad_name!' is not a valid DNS label")), "{w:?}");
    assert!(w.iter().any(|x| x.contains("my.app") && x.contains("container name 'my.app'")), "{w:?}");
    assert!(w.iter().any(|x| x.contains("db.primary") && x.contains("answers as db and db-1 only")), "{w:?}");
    assert!(name(&l, "not valid").is_none());
}

#[test]
fn shared_aliases_answer_every_container_and_service_names_win() {
    let mut a = replica("web", 1, "172.30.53.21");
    a.endpoints[0].aliases.push("frontend".into());
    let mut b = replica("web", 2, "172.30.53.22");
    b.endpoints[0].aliases.push("frontend".into());
    // A container called like another service's instance.
    let mut clash = replica("x", 1, "172.30.53.30");
    clash.labels = BTreeMap::from([(LABEL_SERVICE.to_string(), "api".to_string())]);
    clash.name = "web-1".into();
    let mut m = model(vec![a, b, clash]);
    let (l, _) = layer(&mut m);
    assert_eq!(name(&l, "frontend"), Some(&vec![ip("172.30.53.21"), ip("172.30.53.22")]));
    assert_eq!(name(&l, "web-1"), None, "web-1 is the instance of web");
    // Two networks served: addresses from both.
    let mut two = replica("db", 1, "172.30.53.31");
    two.endpoints.push(Endpoint { network: "other".into(), addrs: vec![ip("fd00::31")], aliases: vec![] });
    let mut m = model(vec![two]);
    let (l, _) = m.layer(&[NET.to_string(), "other".into()], &sel());
    assert_eq!(l.services[0].instances[0].addrs, vec![ip("172.30.53.31"), ip("fd00::31")]);
}

#[test]
fn ports_label_syntax() {
    assert_eq!(parse_ports("http:80").unwrap(), vec![PortDef { name: "http".into(), proto: "tcp".into(), port: 80 }]);
    assert!(parse_ports("").is_err());
    assert!(parse_ports("http:x").is_err());
    assert!(parse_ports("http:99999").is_err());
}
