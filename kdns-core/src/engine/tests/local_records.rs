//! Local records: answered by kdns, never forwarded nor cached.

use super::*;
use crate::records::{Instance, Mode, RecordsConfig, Service, Snapshot};

fn records(addrs: &[&str]) -> Arc<Snapshot> {
    let svc = Service {
        name: "web".into(),
        mode: Mode::All,
        instances: addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Instance { id: format!("c{i}"), addrs: vec![a.parse().unwrap()], healthy: true, number: None })
            .collect(),
        ..Service::default()
    };
    let cfg = RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, services: vec![svc], records: vec![], serial: 1 };
    Arc::new(Snapshot::build(&cfg).unwrap())
}

#[test]
fn local_names_are_answered_by_kdns_never_forwarded_nor_cached() {
    let mut w = World::new(&[B0]);
    w.engine.set_records(records(&["10.0.0.1", "10.0.0.2"]));
    let r = w.ask_answered("web.kdns");
    assert!(r.header().aa());
    assert_eq!(r.header().ancount(), 2);
    let second = w.ask_answered("web.kdns");
    assert_eq!(second.header().ancount(), 2);
    assert_ne!(r.bytes[12..], second.bytes[12..], "rotated between answers");
    assert_eq!(w.stats().local_answers.get(), 2);
    assert_eq!((w.stats().forwarded.get(), w.engine.cache().len()), (0, 0));
    // Other names still go to the backends.
    w.ask_forwarded("example.test");
}

#[test]
fn a_new_snapshot_is_seen_by_the_next_query() {
    let mut w = World::new(&[B0]);
    w.engine.set_records(records(&["10.0.0.1"]));
    assert_eq!(w.ask_answered("web.kdns").header().ancount(), 1);
    w.engine.set_records(records(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]));
    assert_eq!(w.ask_answered("web.kdns").header().ancount(), 3);
}

#[test]
fn a_new_domain_drops_answers_cached_from_the_backends() {
    let mut w = World::new(&[B0]);
    let sent = w.ask_forwarded("web.kdns");
    w.deliver(&sent, &[a(300, [6, 6, 6, 6])]);
    assert_eq!(w.engine.cache().len(), 1);
    w.engine.set_records(records(&["10.0.0.1"]));
    assert_eq!(w.engine.cache().len(), 0);
    let r = w.ask_answered("web.kdns");
    assert!(r.header().aa());
}

#[test]
fn an_engine_built_with_records_answers_them_at_once_and_keeps_its_cache() {
    let snap = records(&["10.0.0.1"]);
    let mut w = World::with(&[B0], |c| c.records = Some(Arc::clone(&snap)));
    let r = w.ask_answered("web.kdns");
    assert!(r.header().aa(), "answered from the records the engine was built with");
    // An answer cached from the backends (a warm start), then the plane's
    // first update with the same records: the cache stays.
    let sent = w.ask_forwarded("example.test");
    w.deliver(&sent, &[a(300, [6, 6, 6, 6])]);
    assert_eq!(w.engine.cache().len(), 1);
    w.engine.set_records(snap);
    assert_eq!(w.engine.cache().len(), 1, "the same domains do not flush the cache");
}
