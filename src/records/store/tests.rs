use super::*;
use crate::handle::fake::FakeWorker;
use crate::handle::WorkerKind;
use crate::records::file;
use kdns_api::records::{CheckDef, CheckKind, InstanceDef, ModeName, RecordData, RecordDef, ServiceDef};
use kdns_api::view::{ForcedHealth, Health};
use kdns_api::ErrorKind::{Conflict, Internal, Invalid, NotFound};
use kdns_core::wire::{encode_name, Class, Rtype};

/// A worker that swaps snapshots in like the real ones do, and its
/// current snapshot.
pub(crate) fn fake_worker(id: usize) -> (WorkerHandle, Arc<Mutex<Arc<Snapshot>>>) {
    let fake = FakeWorker::new(id, WorkerKind::Udp, &[]);
    let io = Arc::clone(&fake.handle.io);
    let cur = Arc::new(Mutex::new(Arc::new(Snapshot::empty())));
    let current = Arc::clone(&cur);
    let h = fake.serve(move |c| {
        if let Control::Records(s) = c {
            let serial = s.serial();
            *current.lock().unwrap() = s;
            io.records_serial.set(u64::from(serial));
        }
    });
    (h, cur)
}

/// A directory of its own for a test, removed when dropped.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kdns-store-test-").tempdir().expect("a temporary directory")
}

const FILE: &str = r#"
domains = ["kdns"]
[[service]]
name = "web"
ports = [{ name = "http", port = 8080 }]
instances = [{ id = "c1", addrs = ["10.0.0.1"] }, { id = "c2", addrs = ["10.0.0.2"] }]
[[record]]
name = "db.kdns"
type = "A"
data = "10.5.0.1"
"#;

fn cfg(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        domains: vec!["local".into()],
        default_ttl: 10,
        file: Some(dir.join("records.toml")),
        state_file: Some(dir.join("state/records.json")),
    }
}

/// The A addresses `snap` answers for `name`, in answer order, and the rcode.
pub(crate) fn lookup(snap: &Snapshot, name: &str, qtype: Rtype) -> (u8, Vec<String>) {
    let mut q = [0u8; 256];
    let n = encode_name(name, &mut q).unwrap();
    let lq = kdns_core::records::LocalQuery {
        qname: &q[..n],
        qtype,
        qclass: Class::IN,
        id: 1,
        flags: 0,
        opt: None,
        client: "127.0.0.1".parse().unwrap(),
        limit: 4096,
        rotate: 0,
        random: 0,
    };
    let mut out = [0u8; 4096];
    match snap.answer(&lq, &mut out) {
        kdns_core::records::LocalAnswer::NotLocal => (255, vec![]),
        kdns_core::records::LocalAnswer::Reply(len, rc, _) => {
            let r = &out[..len];
            let m = kdns_core::wire::Message::parse(r).unwrap();
            let mut addrs = Vec::new();
            for rec in m.sections.records(r) {
                if rec.ttl_offset >= m.sections.authority {
                    continue;
                }
                let d = rec.rdata(r);
                match rec.rtype {
                    Rtype::A => addrs.push(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(d).unwrap()).to_string()),
                    Rtype::AAAA => addrs.push(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(d).unwrap()).to_string()),
                    _ => addrs.push(format!("{} bytes", d.len())),
                }
            }
            addrs.sort();
            (rc.0 as u8, addrs)
        }
    }
}

fn a(snap: &Snapshot, name: &str) -> Vec<String> {
    lookup(snap, name, Rtype::A).1
}

fn docker_instance(id: &str, number: u32, addr: &str, healthy: bool) -> crate::docker::model::DockerInstance {
    crate::docker::model::DockerInstance {
        id: id.into(),
        number,
        addrs: vec![addr.parse().unwrap()],
        healthy,
        health: if healthy { Health::Up } else { Health::Unhealthy },
    }
}

fn docker_service(name: &str, instances: Vec<crate::docker::model::DockerInstance>) -> crate::docker::model::DockerService {
    crate::docker::model::DockerService {
        def: ServiceDef { name: name.into(), mode: ModeName::All, ttl: None, ports: vec![], check: None, instances: vec![] },
        instances,
    }
}

/// Docker services and names join the file's and the API's records;
/// a name the file or the API use stays theirs.
#[test]
fn docker_records_merge_and_never_take_a_name() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let (w0, cur0) = fake_worker(0);
    let store = Store::new(cfg(dir), vec![w0], file::parse(FILE).unwrap(), None);
    store.publish_initial();
    let layer = DockerLayer {
        services: vec![
            docker_service(
                "api",
                vec![docker_instance("kdns_api_1", 1, "172.30.53.21", true), docker_instance("kdns_api_3", 3, "172.30.53.23", true)],
            ),
            docker_service("web", vec![docker_instance("kdns_web_1", 1, "172.30.53.99", true)]),
            docker_service("sick", vec![docker_instance("kdns_sick_1", 1, "172.30.53.31", false)]),
        ],
        names: vec![
            ("db".into(), vec!["172.30.53.98".parse().unwrap()]),
            ("kdns_api_1".into(), vec!["172.30.53.21".parse().unwrap()]),
            ("web-2".into(), vec!["172.30.53.97".parse().unwrap()]),
        ],
    };
    let c = store.set_docker(layer.clone()).unwrap().expect("a change");
    assert_eq!(c.workers_acked, 1);
    assert!(store.set_docker(layer).unwrap().is_none(), "the same layer again changes nothing");
    let snap = cur0.lock().unwrap().clone();
    assert_eq!(a(&snap, "api.kdns"), ["172.30.53.21", "172.30.53.23"]);
    assert_eq!(a(&snap, "api-3.local"), ["172.30.53.23"], "own numbers, every domain");
    assert_eq!(lookup(&snap, "api-2.kdns", Rtype::A).0, 3, "no replica 2: NXDOMAIN");
    assert_eq!(a(&snap, "kdns_api_1.kdns"), ["172.30.53.21"], "container names");
    assert_eq!(a(&snap, "web.kdns"), ["10.0.0.1", "10.0.0.2"], "the file's web wins");
    assert_eq!(a(&snap, "db.kdns"), ["10.5.0.1"], "the file's db.kdns wins");
    assert_eq!(a(&snap, "web-2.kdns"), ["10.0.0.2"], "the file's instance name wins");
    assert_eq!(lookup(&snap, "sick.kdns", Rtype::A), (0, vec![]), "unhealthy: NODATA");
    let v = serde_json::to_value(store.view()).unwrap();
    let api = v["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap();
    assert_eq!(api["source"], "docker");
    assert_eq!(api["instances"][1]["number"], 3);
    let sick = v["services"].as_array().unwrap().iter().find(|s| s["name"] == "sick").unwrap();
    assert_eq!((sick["instances"][0]["healthy"].as_bool(), sick["instances"][0]["health"].as_str()), (Some(false), Some("unhealthy")));
    assert!(v["records"].as_array().unwrap().iter().any(|r| r["name"] == "kdns_api_1.kdns" && r["source"] == "docker"));
    // The API cannot edit what Docker owns, but may force its health.
    assert_eq!(store.delete_service("api").unwrap_err().kind, Conflict);
    assert_eq!(store.delete_instance("api", "kdns_api_1").unwrap_err().kind, Conflict);
    assert_eq!(store.add_instance("api", &InstanceDef { id: "x".into(), addrs: vec!["10.0.0.9".into()] }).unwrap_err().kind, Conflict);
    assert_eq!(store.delete_records("kdns_api_1.kdns", None).unwrap_err().kind, Conflict);
    store.set_health("api", "kdns_api_3", ForcedHealth::Unhealthy).unwrap();
    assert_eq!(a(&store.snapshot(), "api.kdns"), ["172.30.53.21"]);
    // Containers gone: their records go.
    store.set_docker(DockerLayer::default()).unwrap().expect("a change");
    assert_eq!(lookup(&store.snapshot(), "api.kdns", Rtype::A).0, 3);
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn changes_reach_the_snapshot_and_every_worker() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let (w0, cur0) = fake_worker(0);
    let (w1, cur1) = fake_worker(1);
    let store = Store::new(cfg(dir), vec![w0, w1], file::parse(FILE).unwrap(), None);
    let c = store.publish_initial();
    assert_eq!((c.serial, c.workers, c.workers_acked), (1, 2, 2));
    assert_eq!(a(&cur0.lock().unwrap(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
    // `local` comes from the configuration, `kdns` from the file.
    assert_eq!(a(&cur1.lock().unwrap(), "web.local"), ["10.0.0.1", "10.0.0.2"]);

    // Instances: added to the file's service after its own (number 3).
    let (c, n) = store.add_instance("WEB", &InstanceDef { id: "c3".into(), addrs: vec!["10.0.0.3".into()] }).unwrap();
    assert_eq!((c.serial, n, c.workers_acked), (2, 3, 2));
    for cur in [&cur0, &cur1] {
        let s = cur.lock().unwrap();
        assert_eq!(s.serial(), 2);
        assert_eq!(a(&s, "web.kdns"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(a(&s, "web-3.kdns"), ["10.0.0.3"]);
    }
    let e = store.add_instance("web", &InstanceDef { id: "c3".into(), addrs: vec!["10.0.0.4".into()] }).unwrap_err();
    assert_eq!(e.kind, Conflict, "{e}");
    let e = store.add_instance("nope", &InstanceDef { id: "x".into(), addrs: vec!["10.0.0.4".into()] }).unwrap_err();
    assert_eq!(e.kind, NotFound, "{e}");
    let e = store.add_instance("web", &InstanceDef { id: "x".into(), addrs: vec!["10.0.0.x".into()] }).unwrap_err();
    assert_eq!((e.kind, e.msg.as_str()), (Invalid, "addrs[0]: '10.0.0.x' is not an IP address"));

    // Health override: forced down leaves the answers, auto brings it back.
    store.set_health("web", "c1", ForcedHealth::Unhealthy).unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.2", "10.0.0.3"]);
    let v = serde_json::to_value(store.view()).unwrap();
    assert_eq!(v["services"][0]["instances"][0]["health"], "forced-down");
    assert_eq!(v["services"][0]["instances"][0]["healthy"], false);
    store.set_health("web", "c1", ForcedHealth::Auto).unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    assert_eq!(store.set_health("web", "c9", ForcedHealth::Auto).unwrap_err().kind, NotFound);

    // A file instance cannot be deleted here; a runtime one can.
    assert_eq!(store.delete_instance("web", "c1").unwrap_err().kind, Conflict);
    assert_eq!(store.delete_instance("web", "c7").unwrap_err().kind, NotFound);
    store.delete_instance("web", "c3").unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
    assert_eq!(lookup(&store.snapshot(), "web-3.kdns", Rtype::A).0, 3, "NXDOMAIN");

    // Records.
    let rec = |name: &str, t: &str, d: &str| RecordDef { name: name.into(), rtype: t.into(), data: RecordData::One(d.into()), ttl: None };
    store.add_record(&rec("cache.kdns", "A", "10.6.0.1")).unwrap();
    assert_eq!(a(&store.snapshot(), "cache.kdns"), ["10.6.0.1"]);
    assert_eq!(store.add_record(&rec("cache.kdns", "A", "10.6.0.1")).unwrap_err().kind, Conflict);
    assert_eq!(store.add_record(&rec("db.kdns", "A", "10.5.0.1")).unwrap_err().kind, Conflict, "same as the file's");
    let e = store.add_record(&rec("x.elsewhere", "A", "10.6.0.1")).unwrap_err();
    assert_eq!(e.kind, Invalid);
    assert!(e.msg.contains("under none of the local domains"), "{e}");
    let e = store.add_record(&rec("db.kdns", "CNAME", "web.kdns")).unwrap_err();
    assert_eq!(e.kind, Conflict);
    assert!(e.msg.contains("CNAME"), "{e}");
    let e = store.add_record(&rec("web-1.kdns", "A", "10.6.0.1")).unwrap_err();
    assert_eq!(e.kind, Conflict, "an instance name: {e}");
    assert_eq!(store.delete_records("db.kdns", None).unwrap_err().kind, Conflict);
    assert_eq!(store.delete_records("none.kdns", None).unwrap_err().kind, NotFound);
    assert_eq!(store.delete_records("cache.kdns", Some("AAAA")).unwrap_err().kind, NotFound);
    assert_eq!(store.delete_records("cache.kdns", Some("MX")).unwrap_err().kind, Invalid);
    store.delete_records("Cache.kdns.", Some("a")).unwrap();
    assert_eq!(lookup(&store.snapshot(), "cache.kdns", Rtype::A).0, 3);

    // Services: a runtime one, then one replacing the file's.
    let svc = |name: &str, ids: &[(&str, &str)]| ServiceDef {
        name: name.into(),
        mode: ModeName::All,
        ttl: None,
        ports: vec![],
        check: None,
        instances: ids.iter().map(|(i, a)| InstanceDef { id: (*i).into(), addrs: vec![(*a).into()] }).collect(),
    };
    store.add_service(&svc("api", &[])).unwrap();
    assert_eq!(lookup(&store.snapshot(), "api.kdns", Rtype::A), (0, vec![]), "NODATA");
    assert_eq!(store.add_instance("api", &InstanceDef { id: "a1".into(), addrs: vec!["10.1.0.1".into()] }).unwrap().1, 1);
    assert_eq!(a(&store.snapshot(), "api.kdns"), ["10.1.0.1"]);
    assert_eq!(store.add_service(&svc("api", &[])).unwrap_err().kind, Conflict);
    store.add_service(&svc("web", &[("r1", "10.9.0.1")])).unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.9.0.1"], "the runtime service wins");
    let v = serde_json::to_value(store.view()).unwrap();
    assert_eq!(v["services"][0]["source"], "runtime");
    store.delete_service("web").unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"], "the file's is back");
    assert_eq!(store.delete_service("web").unwrap_err().kind, Conflict);
    assert_eq!(store.delete_service("nope").unwrap_err().kind, NotFound);
    let e = store.add_service(&svc("db", &[])).unwrap_err();
    assert_eq!(e.kind, Conflict, "db.kdns is a record: {e}");
    assert_eq!(store.add_service(&svc("a.b", &[])).unwrap_err().kind, Invalid);

    // Every change was persisted: a new store from the state file serves the same.
    let st = state::load(&dir.join("state/records.json")).unwrap().unwrap();
    assert_eq!(st.serial, store.view().serial);
    let again = Store::new(cfg(dir), vec![], file::parse(FILE).unwrap(), Some(st));
    assert_eq!(a(&again.snapshot(), "api.kdns"), ["10.1.0.1"]);
    assert_eq!(again.snapshot().serial(), store.snapshot().serial() + 1);
}

#[test]
fn file_reloads_and_conflicts() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let store = Store::new(cfg(dir), vec![], file::parse(FILE).unwrap(), None);
    store
        .add_record(&RecordDef { name: "www.kdns".into(), rtype: "CNAME".into(), data: RecordData::One("web.kdns".into()), ttl: None })
        .unwrap();
    let serial = store.view().serial;
    // A file that would clash with the runtime CNAME is refused; the old one stays.
    let clash = format!("{FILE}\n[[record]]\nname = \"www.kdns\"\ntype = \"TXT\"\ndata = \"x\"\n");
    let e = store.set_file(file::parse(&clash).unwrap()).unwrap_err();
    assert!(e.contains("'www.kdns' has a CNAME and other data"), "{e}");
    assert_eq!(store.view().serial, serial);
    assert_eq!(a(&store.snapshot(), "db.kdns"), ["10.5.0.1"]);
    // A good one replaces it.
    let next =
        FILE.replace("10.5.0.1", "10.5.0.2").replace("{ id = \"c2\", addrs = [\"10.0.0.2\"] }", "{ id = \"c2\", addrs = [\"10.0.0.22\"] }");
    let c = store.set_file(file::parse(&next).unwrap()).unwrap();
    assert_eq!(c.serial, serial + 1);
    assert_eq!(a(&store.snapshot(), "db.kdns"), ["10.5.0.2"]);
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.22"]);
    // Nothing of the file went to the state file.
    let st = state::load(&dir.join("state/records.json")).unwrap().unwrap();
    assert!(st.runtime.services.is_empty() && st.runtime.records.len() == 1);
    // Start-up with a conflicting file: the runtime state is served, the file is not
    // (here `kdns` is configured, so the runtime CNAME stands without the file).
    let c2 = StoreConfig { domains: vec!["kdns".into()], ..cfg(dir) };
    let s2 = Store::new(c2.clone(), vec![], file::parse(&clash).unwrap(), Some(st.clone()));
    assert_eq!(lookup(&s2.snapshot(), "www.kdns", Rtype::CNAME).1.len(), 1);
    assert_eq!(lookup(&s2.snapshot(), "db.kdns", Rtype::A).0, 3, "file not served");
    // If the runtime state cannot stand alone (its domain came from the file), the file is served.
    let s3 = Store::new(cfg(dir), vec![], file::parse(&clash).unwrap(), Some(st));
    assert_eq!(a(&s3.snapshot(), "db.kdns"), ["10.5.0.1"]);
    assert_eq!(lookup(&s3.snapshot(), "www.kdns", Rtype::TXT).1.len(), 1);
}

#[test]
fn health_checks_take_instances_out_and_back() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let mut f = file::parse(FILE).unwrap();
    f.services[0].check =
        Some(CheckDef { kind: CheckKind::Tcp, port: None, name: None, interval_ms: 100, timeout_ms: 50, rise: 2, fall: 2 });
    let (w, cur) = fake_worker(0);
    let store = Store::new(cfg(dir), vec![w], f, None);
    let _ = store.publish_initial();
    let t = store.lock().targets.clone();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].addr, "10.0.0.1:8080".parse().unwrap());
    let c1 = t[0].clone();
    let serial = store.view().serial;
    store.check_result(&c1, false, Some("connect: refused".into()));
    assert_eq!(store.view().serial, serial, "one failure is not enough");
    store.check_result(&c1, false, Some("connect: refused".into()));
    assert_eq!(store.view().serial, serial + 1);
    assert_eq!(a(&cur.lock().unwrap(), "web.kdns"), ["10.0.0.2"], "the workers have it");
    let v = serde_json::to_value(store.view()).unwrap();
    let i = &v["services"][0]["instances"][0];
    assert_eq!(
        (i["health"].as_str(), i["checks_failed"].as_u64(), i["last_error"].as_str()),
        (Some("down"), Some(2), Some("connect: refused"))
    );
    // SRV follows health too.
    assert_eq!(lookup(&store.snapshot(), "_http._tcp.web.kdns", Rtype::SRV).1.len(), 1);
    // Forced up wins over the checks.
    store.set_health("web", "c1", ForcedHealth::Healthy).unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
    store.set_health("web", "c1", ForcedHealth::Auto).unwrap();
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.2"]);
    store.check_result(&c1, true, None);
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.2"], "rise = 2");
    store.check_result(&c1, true, None);
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
    // Results for targets that are gone are ignored.
    let mut stale = c1.clone();
    stale.addr = "10.9.9.9:1".parse().unwrap();
    let s = store.view().serial;
    store.check_result(&stale, false, None);
    store.check_result(&stale, false, None);
    assert_eq!(store.view().serial, s);
}

#[test]
fn persistence_failure_changes_nothing() {
    let tmp = temp_dir();
    let dir = tmp.path();
    std::fs::create_dir_all(dir).unwrap();
    // The state file's directory is a file: it cannot be written.
    std::fs::write(dir.join("state"), b"x").unwrap();
    let store = Store::new(cfg(dir), vec![], file::parse(FILE).unwrap(), None);
    let s = store.view().serial;
    let e = store.add_instance("web", &InstanceDef { id: "c3".into(), addrs: vec!["10.0.0.3".into()] }).unwrap_err();
    assert_eq!(e.kind, Internal);
    assert!(e.msg.contains("cannot write the records state file"), "{e}");
    assert_eq!(store.view().serial, s);
    assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
}

#[test]
fn a_worker_that_never_acknowledges_costs_the_bounded_wait() {
    let (mut w, _) = fake_worker(0);
    let (tx, rx) = crossbeam_channel::unbounded();
    w.tx = tx;
    let store = Store::new(
        StoreConfig { domains: vec!["kdns".into()], default_ttl: 10, ..Default::default() },
        vec![w],
        FileRecords::default(),
        None,
    );
    let c = store.publish_initial();
    assert_eq!((c.workers, c.workers_acked), (1, 0), "sent, never acknowledged");
    assert!(c.propagated_ms >= PROPAGATION_WAIT.as_secs_f64() * 1e3, "the whole bounded wait is reported: {c:?}");
    drop(rx);
    let c = store.publish_initial();
    assert_eq!(c.workers, 0, "a worker that is gone is not waited for");
}
