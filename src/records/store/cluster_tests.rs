//! The other hosts' records (through etcd) merged into the store, this
//! host's export, and the API's changes gated on etcd being reachable.

use super::tests::{fake_worker, lookup, temp_dir};
use super::*;
use crate::cluster::model::Layer;
use crate::records::file;
use kdns_api::cluster::InstanceValue;
use kdns_api::records::{InstanceDef, RecordData, RecordDef, ServiceDef};
use kdns_api::view::{Health, Source};
use kdns_api::ErrorKind;
use kdns_core::wire::Rtype;

const FILE: &str = r#"
domains = ["kdns"]
[[service]]
name = "web"
instances = [{ id = "c1", addrs = ["10.0.0.1"] }, { id = "c2", addrs = ["10.0.0.2"] }]
[[record]]
name = "db.kdns"
type = "A"
data = "10.5.0.1"
"#;

fn svc(name: &str) -> ServiceDef {
    ServiceDef { name: name.into(), mode: Default::default(), ttl: Some(99), ports: Vec::new(), check: None, instances: Vec::new() }
}

fn inst(service: &str, id: &str, addr: &str, healthy: bool) -> InstanceValue {
    InstanceValue { host: "b".into(), service: service.into(), instance: InstanceDef { id: id.into(), addrs: vec![addr.into()] }, healthy }
}

fn a(name: &str, addr: &str) -> RecordDef {
    RecordDef { name: name.into(), rtype: "A".into(), data: RecordData::One(addr.into()), ttl: None }
}

#[test]
fn other_hosts_records_join_this_hosts_and_only_this_hosts_are_exported() {
    let dir = temp_dir();
    let (w, cur) = fake_worker(0);
    let cfg = StoreConfig { domains: vec![], default_ttl: 10, file: None, state_file: Some(dir.path().join("state.json")) };
    let store = Store::new(cfg, vec![w], file::parse(FILE).unwrap(), None);
    store.publish_initial();
    let link = Arc::new(Link::new("a", "/kdns/v1"));
    store.attach_cluster(Arc::clone(&link));
    let layer = Layer {
        services: vec![svc("web"), svc("api")],
        instances: vec![
            inst("web", "c9", "10.0.0.9", true),
            inst("web", "c1", "10.0.0.77", true), // the id is taken here: left out
            inst("api", "a1", "10.1.0.1", false), // unhealthy on its host
            inst("api", "a2", "10.1.0.2", true),
            inst("nosvc", "x", "10.2.0.1", true), // no host defines nosvc
        ],
        records: vec![a("db.kdns", "10.5.0.1"), a("other.kdns", "10.6.0.1")],
    };
    assert!(store.set_cluster(layer.clone()).unwrap().is_some());
    assert!(store.set_cluster(layer).unwrap().is_none(), "the same layer changes nothing");
    let snap = cur.lock().unwrap().clone();
    let (_, mut web) = lookup(&snap, "web.kdns", Rtype::A);
    web.sort();
    assert_eq!(web, ["10.0.0.1", "10.0.0.2", "10.0.0.9"]);
    assert_eq!(lookup(&snap, "api.kdns", Rtype::A).1, ["10.1.0.2"]);
    assert_eq!(lookup(&snap, "db.kdns", Rtype::A).1, ["10.5.0.1"]);
    assert_eq!(lookup(&snap, "other.kdns", Rtype::A).1, ["10.6.0.1"]);
    let v = store.view();
    let web = v.services.iter().find(|s| s.name == "web").unwrap();
    assert_eq!(web.source, Source::File, "this host's definition wins");
    let c9 = web.instances.iter().find(|i| i.id == "c9").unwrap();
    assert_eq!((c9.source, c9.health), (Source::Cluster, Health::Up));
    let api = v.services.iter().find(|s| s.name == "api").unwrap();
    assert_eq!((api.source, api.ttl), (Source::Cluster, 99));
    assert_eq!(api.instances.iter().find(|i| i.id == "a1").unwrap().health, Health::Down);
    // Exported: this host's service, instances and record only.
    let e = link.subscribe().borrow().clone();
    assert_eq!(e.services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["web"]);
    assert_eq!(e.instances.iter().map(|(_, i, h)| (i.id.as_str(), *h)).collect::<Vec<_>>(), [("c1", true), ("c2", true)]);
    assert_eq!(e.records.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["db.kdns"]);

    // Not connected: the API's changes are refused, nothing changes.
    let err = store.add_record(&a("new.kdns", "10.7.0.1")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.msg.starts_with("etcd is unreachable (not connected yet)"), "{}", err.msg);
    link.set_connected(true);
    // An instance of another host's service added here is this host's.
    store.add_instance("api", &InstanceDef { id: "m1".into(), addrs: vec!["10.1.0.3".into()] }).unwrap();
    let e = link.subscribe().borrow().clone();
    assert!(e.instances.iter().any(|(s, i, _)| s == "api" && i.id == "m1"), "{e:?}");
    assert!(!e.services.iter().any(|s| s.name == "api"), "the service stays the other host's");
    assert_eq!(store.delete_instance("web", "c9").unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(store.delete_service("api").unwrap_err().kind, ErrorKind::Conflict);
    assert_eq!(store.delete_records("other.kdns", None).unwrap_err().kind, ErrorKind::Conflict);
    // The other host gone: its instances and records leave, this host's stay.
    store.set_cluster(Layer { services: vec![svc("api")], ..Layer::default() }).unwrap();
    let snap = cur.lock().unwrap().clone();
    assert_eq!(lookup(&snap, "api.kdns", Rtype::A).1, ["10.1.0.3"]);
    assert_eq!(lookup(&snap, "web.kdns", Rtype::A).1.len(), 2);
    assert_eq!(lookup(&snap, "other.kdns", Rtype::A).0, 3, "NXDOMAIN");
}
