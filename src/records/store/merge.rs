//! The records file, the runtime state and the Docker layer merged into
//! the records served ([`Merged`]), what the health checks check, and the
//! API's view of it all.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

use kdns_api::records::{self as defs, CheckSpec, InstanceDef, RecordData, RecordDef, ServiceDef};
use kdns_api::view::{Health, InstanceView, RecordView, RecordsView, ServiceView, Source};
use kdns_api::Error;
use kdns_core::records::{instance_number, Instance, RecordsConfig, Service, SrvPort, StaticData, StaticRecord};

use super::StoreConfig;
use crate::cluster::model::{Export, Layer as ClusterLayer};
use crate::docker::model::Layer as DockerLayer;
use crate::records::file::FileRecords;
use crate::records::health::{Key, Machine, Target};
use crate::records::state::{Forced, Runtime};

/// An instance as served.
#[derive(Debug, Clone)]
pub(super) struct EffInstance {
    pub def: InstanceDef,
    pub addrs: Vec<IpAddr>,
    pub source: Source,
    /// Its own number (Docker: the compose replica number); none: its place.
    pub number: Option<u32>,
    /// Health decided elsewhere (the Docker engine, or another host's
    /// checks through etcd): (in the answers, label).
    pub docker: Option<(bool, Health)>,
}

/// A service as served.
#[derive(Debug, Clone)]
pub(super) struct EffService {
    /// Without instances.
    pub def: ServiceDef,
    pub source: Source,
    pub check: Option<CheckSpec>,
    pub instances: Vec<EffInstance>,
}

/// A static record as served.
#[derive(Debug, Clone)]
pub(super) struct EffRecord {
    pub def: RecordDef,
    pub core: StaticRecord,
    pub source: Source,
}

/// The effective records: file and runtime merged.
#[derive(Debug, Clone, Default)]
pub(super) struct Merged {
    pub domains: Vec<String>,
    pub default_ttl: u32,
    pub services: Vec<EffService>,
    pub records: Vec<EffRecord>,
    /// Runtime instances of services that no longer exist (kept, not served).
    pub orphans: Vec<String>,
    /// Docker services and names not served because the records file or
    /// the API already use the name.
    pub docker_skipped: Vec<String>,
}

/// The error for a service that does not exist.
pub(super) fn no_service(name: &str) -> Error {
    Error::not_found(format!("no service '{name}'"))
}

impl Merged {
    pub fn service(&self, name: &str) -> Option<&EffService> {
        self.services.iter().find(|s| s.def.name == name)
    }

    /// The service `name`, or the error that says it does not exist.
    pub fn existing_service(&self, name: &str) -> Result<&EffService, Error> {
        self.service(name).ok_or_else(|| no_service(name))
    }

    /// The instance `id` of service `svc`, or the error that says which of
    /// the two does not exist.
    pub fn instance(&self, svc: &str, id: &str) -> Result<&EffInstance, Error> {
        let s = self.existing_service(svc)?;
        s.instances.iter().find(|i| i.def.id == id).ok_or_else(|| Error::not_found(format!("no instance '{id}' in service '{svc}'")))
    }

    /// `GET /v1/records`: the merged records with their health (checks
    /// in `machines`, forced in `forced`), at `serial`.
    pub fn view(&self, machines: &HashMap<Key, Machine>, forced: &[Forced], serial: u32) -> RecordsView {
        let m = self;
        let services = m
            .services
            .iter()
            .map(|s| ServiceView {
                name: s.def.name.clone(),
                mode: s.def.mode,
                ttl: s.def.ttl.unwrap_or(m.default_ttl),
                ports: s.def.ports.clone(),
                check: s.check.clone(),
                source: s.source,
                instances: s
                    .instances
                    .iter()
                    .enumerate()
                    .map(|(k, i)| {
                        let (healthy, health) = health_of(machines, forced, s, i);
                        let mach = machines.get(&(s.def.name.clone(), i.def.id.clone()));
                        InstanceView {
                            number: instance_number(i.number, k),
                            id: i.def.id.clone(),
                            addrs: i.addrs.iter().map(|a| a.to_string()).collect(),
                            healthy,
                            health,
                            checks_ok: mach.map_or(0, |m| m.checks_ok),
                            checks_failed: mach.map_or(0, |m| m.checks_failed),
                            last_error: mach.and_then(|m| m.last_error.clone()),
                            source: i.source,
                        }
                    })
                    .collect(),
            })
            .collect();
        let records = m
            .records
            .iter()
            .map(|r| RecordView {
                name: r.def.name.clone(),
                rtype: r.def.rtype.clone(),
                ttl: r.def.ttl.unwrap_or(m.default_ttl),
                data: r.def.data.clone(),
                source: r.source,
            })
            .collect();
        RecordsView { serial, domains: m.domains.clone(), default_ttl: m.default_ttl, services, records }
    }
}

fn eff_instance(def: &InstanceDef, source: Source) -> Result<EffInstance, Error> {
    Ok(EffInstance { def: def.clone(), addrs: defs::instance_addrs(def)?, source, number: None, docker: None })
}

fn eff_service(def: &ServiceDef, source: Source) -> Result<EffService, Error> {
    let d = defs::service(def).map_err(|e| Error::invalid(format!("service '{}': {e}", def.name)))?;
    let check = defs::check_spec(&d)?;
    let instances = d.instances.iter().map(|i| eff_instance(i, source)).collect::<Result<Vec<_>, _>>()?;
    Ok(EffService { def: ServiceDef { instances: Vec::new(), ..d }, source, check, instances })
}

/// File, runtime and Docker merged: a runtime service replaces the file's
/// service of the same name; runtime instances of a file service follow the
/// file's instances; runtime records follow the file's. Docker services and
/// names come last and never take a name the file or the API use (they are
/// listed in `docker_skipped` instead).
pub(super) fn merge(cfg: &StoreConfig, file: &FileRecords, rt: &Runtime, docker: &DockerLayer) -> Result<Merged, Error> {
    let mut m = Merged { default_ttl: file.default_ttl.unwrap_or(cfg.default_ttl), ..Merged::default() };
    for d in cfg.domains.iter().chain(&file.domains) {
        if !m.domains.contains(d) {
            m.domains.push(d.clone());
        }
    }
    for fs in &file.services {
        match rt.services.iter().find(|r| r.name == fs.name) {
            Some(r) => m.services.push(eff_service(r, Source::Runtime)?),
            None => {
                let mut s = eff_service(fs, Source::File)?;
                for x in rt.instances.iter().filter(|x| x.service == fs.name) {
                    s.instances.push(eff_instance(&x.instance, Source::Runtime)?);
                }
                m.services.push(s);
            }
        }
    }
    for r in &rt.services {
        if m.service(&r.name).is_none() {
            m.services.push(eff_service(r, Source::Runtime)?);
        }
    }
    for x in &rt.instances {
        if m.service(&x.service).is_none() {
            m.orphans.push(format!("{}/{}", x.service, x.instance.id));
        }
    }
    for (defs, source) in [(&file.records, Source::File), (&rt.records, Source::Runtime)] {
        for r in defs {
            let (def, core) = defs::record(r).map_err(|e| Error::invalid(format!("record '{}': {e}", r.name)))?;
            m.records.push(EffRecord { def, core, source });
        }
    }
    merge_docker(&mut m, docker);
    Ok(m)
}

/// Adds the Docker layer to `m`: its services unless the name is taken, then
/// each container name or alias, under every domain, unless a service, an
/// instance or a static record already holds that name.
fn merge_docker(m: &mut Merged, docker: &DockerLayer) {
    for ds in &docker.services {
        if m.service(&ds.def.name).is_some() {
            m.docker_skipped.push(format!("service {}", ds.def.name));
            continue;
        }
        let instances = ds
            .instances
            .iter()
            .map(|i| EffInstance {
                def: InstanceDef { id: i.id.clone(), addrs: i.addrs.iter().map(|a| a.to_string()).collect() },
                addrs: i.addrs.clone(),
                source: Source::Docker,
                number: Some(i.number),
                docker: Some((i.healthy, i.health)),
            })
            .collect();
        m.services.push(EffService { def: ds.def.clone(), source: Source::Docker, check: None, instances });
    }
    let mut labels: HashSet<String> = HashSet::new();
    for s in &m.services {
        labels.insert(s.def.name.clone());
        for (k, i) in s.instances.iter().enumerate() {
            labels.insert(format!("{}-{}", s.def.name, instance_number(i.number, k)));
        }
    }
    let statics: HashSet<String> = m.records.iter().map(|r| r.core.name.clone()).collect();
    for (label, addrs) in &docker.names {
        let owners: Vec<String> = m.domains.iter().map(|d| format!("{label}.{d}")).collect();
        if labels.contains(label) || owners.iter().any(|o| statics.contains(o)) {
            m.docker_skipped.push(format!("name {label}"));
            continue;
        }
        for owner in owners {
            for a in addrs {
                let (rtype, data) = match a {
                    IpAddr::V4(v4) => ("A", StaticData::A(*v4)),
                    IpAddr::V6(v6) => ("AAAA", StaticData::Aaaa(*v6)),
                };
                m.records.push(EffRecord {
                    def: RecordDef { name: owner.clone(), rtype: rtype.into(), data: RecordData::One(a.to_string()), ttl: None },
                    core: StaticRecord { name: owner.clone(), ttl: None, data },
                    source: Source::Docker,
                });
            }
        }
    }
}

/// The health of one instance: (in the answers, label).
fn health_of(machines: &HashMap<Key, Machine>, forced: &[Forced], svc: &EffService, inst: &EffInstance) -> (bool, Health) {
    if let Some(f) = forced.iter().find(|f| f.service == svc.def.name && f.id == inst.def.id) {
        return if f.healthy { (true, Health::ForcedUp) } else { (false, Health::ForcedDown) };
    }
    if let Some(d) = inst.docker {
        return d;
    }
    if svc.check.is_none() {
        return (true, Health::Up);
    }
    let up = machines.get(&(svc.def.name.clone(), inst.def.id.clone())).is_none_or(|m| m.up);
    if up {
        (true, Health::Up)
    } else {
        (false, Health::Down)
    }
}

pub(super) fn records_config(m: &Merged, machines: &HashMap<Key, Machine>, forced: &[Forced], serial: u32) -> RecordsConfig {
    RecordsConfig {
        domains: m.domains.clone(),
        default_ttl: m.default_ttl,
        services: m
            .services
            .iter()
            .map(|s| Service {
                name: s.def.name.clone(),
                mode: s.def.mode.into(),
                ttl: s.def.ttl,
                instances: s
                    .instances
                    .iter()
                    .map(|i| Instance {
                        id: i.def.id.clone(),
                        addrs: i.addrs.clone(),
                        healthy: health_of(machines, forced, s, i).0,
                        number: i.number,
                    })
                    .collect(),
                ports: s.def.ports.iter().map(|p| SrvPort { name: p.name.clone(), proto: p.proto.clone(), port: p.port }).collect(),
            })
            .collect(),
        records: m.records.iter().map(|r| r.core.clone()).collect(),
        serial,
    }
}

/// Instances with a check: what the checker thread checks.
pub(super) fn targets(m: &Merged) -> Vec<Target> {
    let mut out = Vec::new();
    for s in &m.services {
        let Some(c) = &s.check else { continue };
        // Another host's instances are checked by that host.
        for i in s.instances.iter().filter(|i| i.source != Source::Cluster) {
            if let Some(ip) = i.addrs.first() {
                out.push(Target { key: (s.def.name.clone(), i.def.id.clone()), addr: SocketAddr::new(*ip, c.port), check: c.clone() });
            }
        }
    }
    out
}

/// Adds other hosts' records (through etcd) to `m`: a service this host
/// does not define (with the API's instances of it, which `merge` left as
/// orphans), each instance of a service that exists here or there unless
/// its id is taken, and each static record not already served. What
/// clashes is left out: this host's own definitions win.
pub(super) fn merge_cluster(m: &mut Merged, rt: &Runtime, layer: &ClusterLayer) {
    if layer.services.is_empty() && layer.instances.is_empty() && layer.records.is_empty() {
        return;
    }
    let mut index: HashMap<String, usize> = m.services.iter().enumerate().map(|(k, s)| (s.def.name.clone(), k)).collect();
    for def in &layer.services {
        if index.contains_key(&def.name) {
            continue;
        }
        let Ok(mut s) = eff_service(def, Source::Cluster) else { continue };
        for x in rt.instances.iter().filter(|x| x.service == def.name) {
            if let Ok(i) = eff_instance(&x.instance, Source::Runtime) {
                s.instances.push(i);
                let orphan = format!("{}/{}", x.service, x.instance.id);
                m.orphans.retain(|o| *o != orphan);
            }
        }
        index.insert(def.name.clone(), m.services.len());
        m.services.push(s);
    }
    for v in &layer.instances {
        let Some(&k) = index.get(&v.service) else { continue };
        let s = &mut m.services[k];
        if s.instances.iter().any(|i| i.def.id == v.instance.id) {
            continue;
        }
        let Ok(mut i) = eff_instance(&v.instance, Source::Cluster) else { continue };
        i.docker = Some((v.healthy, if v.healthy { Health::Up } else { Health::Down }));
        s.instances.push(i);
    }
    let mut have: HashSet<(String, String, String)> =
        m.records.iter().map(|r| (r.def.name.clone(), r.def.rtype.clone(), format!("{:?}", r.def.data))).collect();
    for r in &layer.records {
        let Ok((def, core)) = defs::record(r) else { continue };
        if have.insert((def.name.clone(), def.rtype.clone(), format!("{:?}", def.data))) {
            m.records.push(EffRecord { def, core, source: Source::Cluster });
        }
    }
}

/// What this host puts in etcd: every service and instance not learnt
/// from etcd (each instance with its health here), and the static records
/// of the records file and the API (Docker's container names stay local).
pub(super) fn export(m: &Merged, machines: &HashMap<Key, Machine>, forced: &[Forced]) -> Export {
    let mut e = Export::default();
    for s in &m.services {
        if s.source != Source::Cluster {
            e.services.push(ServiceDef { instances: Vec::new(), ..s.def.clone() });
        }
        for i in s.instances.iter().filter(|i| i.source != Source::Cluster) {
            e.instances.push((s.def.name.clone(), i.def.clone(), health_of(machines, forced, s, i).0));
        }
    }
    e.records = m.records.iter().filter(|r| matches!(r.source, Source::File | Source::Runtime)).map(|r| r.def.clone()).collect();
    e
}
