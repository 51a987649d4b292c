//! The API's changes to the runtime records: each edits a copy of the
//! runtime state, seeing the merged records before the change, and says
//! what is refused and why (the kind of [`Error`] and a message naming the
//! record, service or instance).

use kdns_api::records::{self as defs, InstanceDef, RecordData, RecordDef, RecordType, ServiceDef};
use kdns_api::view::{Change, ForcedHealth, Source};
use kdns_api::Error;

use super::merge;
use super::Store;
use crate::records::state::{ExtraInstance, Forced};

impl Store {
    fn in_file(&self) -> String {
        self.cfg.file.as_ref().map_or("the records file".into(), |p| format!("the records file {}", p.display()))
    }

    /// `POST /v1/records`.
    pub fn add_record(&self, def: &RecordDef) -> Result<Change, Error> {
        let (d, core) = defs::record(def)?;
        let what = format!("record added: {} {} {}", d.name, d.rtype, data_text(&d.data));
        self.change(&what, |rt, m| {
            if m.records.iter().any(|r| r.core.name == core.name && r.core.data == core.data) {
                return Err(Error::conflict(format!("record {} {} {} already exists", d.name, d.rtype, data_text(&d.data))));
            }
            rt.records.push(d.clone());
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `DELETE /v1/records?name=N[&type=T]`.
    pub fn delete_records(&self, name: &str, rtype: Option<&str>) -> Result<Change, Error> {
        let name = defs::domain_name(name).map_err(|e| Error::invalid(format!("name: {e}")))?;
        let rtype = rtype.map(RecordType::parse).transpose()?.map(|t| t.name().to_string());
        let label = format!("{name}{}", rtype.as_ref().map_or(String::new(), |t| format!(" {t}")));
        let in_file = self.in_file();
        self.change(&format!("records deleted: {label}"), |rt, m| {
            let matches = |r: &RecordDef| r.name == name && rtype.as_ref().is_none_or(|t| *t == r.rtype);
            let before = rt.records.len();
            rt.records.retain(|r| !matches(r));
            if rt.records.len() == before {
                if m.records.iter().any(|r| r.source == Source::File && matches(&r.def)) {
                    return Err(Error::conflict(format!("record {label} is defined in {in_file}; remove it there")));
                }
                if m.records.iter().any(|r| r.source == Source::Cluster && matches(&r.def)) {
                    return Err(Error::conflict(format!("record {label} comes from another host through etcd; remove it there")));
                }
                if m.records.iter().any(|r| r.source == Source::Docker && matches(&r.def)) {
                    return Err(Error::conflict(format!(
                        "record {label} comes from a running Docker container; it goes when the container stops"
                    )));
                }
                return Err(Error::not_found(format!("no record {label}")));
            }
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `POST /v1/services`.
    pub fn add_service(&self, def: &ServiceDef) -> Result<Change, Error> {
        let d = defs::service(def)?;
        let in_file = self.in_file();
        self.change(&format!("service added: {}", d.name), |rt, m| {
            if rt.services.iter().any(|s| s.name == d.name) {
                return Err(Error::conflict(format!("service '{}' already exists (delete it first)", d.name)));
            }
            if m.service(&d.name).is_some() {
                tracing::info!("runtime service '{}' replaces the one in {in_file}", d.name);
            }
            // Runtime instances added to the file's service move to the new one.
            let mut d = d.clone();
            let (mine, rest): (Vec<ExtraInstance>, Vec<ExtraInstance>) = rt.instances.drain(..).partition(|x| x.service == d.name);
            rt.instances = rest;
            for x in mine {
                if !d.instances.iter().any(|i| i.id == x.instance.id) {
                    d.instances.push(x.instance);
                }
            }
            rt.services.push(d);
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `DELETE /v1/services/<name>`.
    pub fn delete_service(&self, name: &str) -> Result<Change, Error> {
        let name = name.to_ascii_lowercase();
        let in_file = self.in_file();
        self.change(&format!("service deleted: {name}"), |rt, m| {
            let Some(i) = rt.services.iter().position(|s| s.name == name) else {
                match m.service(&name).map(|s| s.source) {
                    Some(Source::Cluster) => {
                        return Err(Error::conflict(format!("service '{name}' comes from another host through etcd; remove it there")))
                    }
                    Some(Source::Docker) => {
                        return Err(Error::conflict(format!(
                            "service '{name}' comes from running Docker containers; it goes when they stop"
                        )))
                    }
                    Some(_) => return Err(Error::conflict(format!("service '{name}' is defined in {in_file}; remove it there"))),
                    None => {}
                }
                return Err(merge::no_service(&name));
            };
            rt.services.remove(i);
            rt.health.retain(|f| f.service != name);
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `POST /v1/services/<name>/instances`: returns the change and the
    /// instance's number.
    pub fn add_instance(&self, service: &str, inst: &InstanceDef) -> Result<(Change, usize), Error> {
        let svc = service.to_ascii_lowercase();
        defs::instance_addrs(inst)?;
        self.change(&format!("instance added: {svc}/{} {}", inst.id, inst.addrs.join(" ")), |rt, m| {
            let s = m.existing_service(&svc)?;
            if s.instances.iter().any(|i| i.def.id == inst.id) {
                return Err(Error::conflict(format!("instance '{}' already exists in service '{svc}'", inst.id)));
            }
            match s.source {
                Source::Runtime => {
                    let r = rt.services.iter_mut().find(|r| r.name == svc).ok_or_else(|| merge::no_service(&svc))?;
                    r.instances.push(inst.clone());
                }
                Source::File | Source::Cluster => rt.instances.push(ExtraInstance { service: svc.clone(), instance: inst.clone() }),
                Source::Docker => {
                    return Err(Error::conflict(format!(
                        "service '{svc}' comes from Docker: start a container for it (or give the instance another service)"
                    )))
                }
            }
            Ok(s.instances.len() + 1)
        })
    }

    /// `DELETE /v1/services/<name>/instances/<id>`.
    pub fn delete_instance(&self, service: &str, id: &str) -> Result<Change, Error> {
        let svc = service.to_ascii_lowercase();
        let in_file = self.in_file();
        self.change(&format!("instance deleted: {svc}/{id}"), |rt, m| {
            let i = m.instance(&svc, id)?;
            if i.source == Source::File {
                return Err(Error::conflict(format!("instance '{id}' of service '{svc}' is defined in {in_file}; remove it there")));
            }
            if i.source == Source::Cluster {
                return Err(Error::conflict(format!("instance '{id}' of service '{svc}' runs on another host (etcd); remove it there")));
            }
            if i.source == Source::Docker {
                return Err(Error::conflict(format!("instance '{id}' of service '{svc}' is a running Docker container; stop it instead")));
            }
            for r in rt.services.iter_mut().filter(|r| r.name == svc) {
                r.instances.retain(|i| i.id != id);
            }
            rt.instances.retain(|x| !(x.service == svc && x.instance.id == id));
            rt.health.retain(|f| !(f.service == svc && f.id == id));
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `POST /v1/services/<name>/instances/<id>/health`: forced healthy,
    /// unhealthy, or back to the checks (`auto`).
    pub fn set_health(&self, service: &str, id: &str, state: ForcedHealth) -> Result<Change, Error> {
        let svc = service.to_ascii_lowercase();
        self.change(&format!("health of {svc}/{id} set to {}", state.name()), |rt, m| {
            m.instance(&svc, id)?;
            rt.health.retain(|f| !(f.service == svc && f.id == id));
            if let Some(healthy) = state.forced() {
                rt.health.push(Forced { service: svc.clone(), id: id.to_string(), healthy });
            }
            Ok(())
        })
        .map(|(c, ())| c)
    }
}

fn data_text(d: &RecordData) -> String {
    match d {
        RecordData::One(s) => s.clone(),
        RecordData::Many(v) => v.join(" "),
    }
}
