//! The store: the records file's content and the runtime state merged,
//! instance health on top, compiled into a [`Snapshot`] and sent to every
//! worker.
//!
//! Every change (API, file reload, health) is made on a copy: merged,
//! compiled with `Snapshot::build` (an invalid result is refused and
//! nothing changes), persisted when it is a runtime change, then published
//! under the lock (so workers get snapshots in serial order), and finally
//! waited for, outside the lock: each worker sets its `records_serial`
//! gauge after swapping the snapshot in, and the change returns once every
//! worker shows the new serial (at most [`PROPAGATION_WAIT`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kdns_core::records::{Instance, RecordsConfig, RecordsError, Service, Snapshot, StaticData, StaticRecord};
use serde::Serialize;

use super::defs::{self, CheckSpec, InstanceDef, ModeName, PortDef, RecordData, RecordDef, ServiceDef};
use super::file::FileRecords;
use super::health::{Checker, Key, Machine, Target};
use super::state::{self, ExtraInstance, Forced, Runtime, State};
use crate::docker::model::Layer as DockerLayer;
use crate::handle::{Control, WorkerHandle};

/// Longest wait for every worker to use a new snapshot.
pub const PROPAGATION_WAIT: Duration = Duration::from_secs(1);

/// What the store is configured with.
#[derive(Debug, Clone, Default)]
pub struct StoreConfig {
    /// `[records].domains` (and `--domain`), lower-case; the first one takes bare names.
    pub domains: Vec<String>,
    /// `[records].default_ttl` (the records file may replace it).
    pub default_ttl: u32,
    /// The records file, for messages.
    pub file: Option<PathBuf>,
    /// Where runtime changes are kept (none: not kept).
    pub state_file: Option<PathBuf>,
}

/// An API error: HTTP status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// 400, 404, 409 or 500.
    pub status: u16,
    /// What is wrong (names the field, service, instance or record).
    pub msg: String,
}

impl ApiError {
    pub fn new(status: u16, msg: impl Into<String>) -> ApiError {
        ApiError { status, msg: msg.into() }
    }

    fn from_build(e: &RecordsError) -> ApiError {
        let status = match e {
            RecordsError::Duplicate { .. } | RecordsError::CnameConflict { .. } => 409,
            _ => 400,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<defs::FieldError> for ApiError {
    fn from(e: defs::FieldError) -> ApiError {
        ApiError::new(400, e.to_string())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The records file.
    File,
    /// The API (kept in the state file).
    Runtime,
    /// The Docker engine (src/docker): running containers.
    Docker,
}

/// The outcome of a change.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Change {
    /// The new snapshot's serial.
    pub serial: u32,
    /// From sending the snapshot to the last worker's acknowledgement, in
    /// milliseconds (3 decimals); the wait if some worker did not
    /// acknowledge within 1 s.
    pub propagated_ms: f64,
    /// Workers the snapshot was sent to.
    pub workers: usize,
    /// Of which use it now.
    pub workers_acked: usize,
}

#[derive(Debug, Clone)]
struct EffInstance {
    def: InstanceDef,
    addrs: Vec<IpAddr>,
    source: Source,
    /// Its own number (Docker: the compose replica number); none: its place.
    number: Option<u32>,
    /// Health as the Docker engine reports it: (in the answers, label).
    docker: Option<(bool, &'static str)>,
}

impl EffInstance {
    /// `k` of `<service>-k` for the instance at place `k` (from 0): the
    /// rule of `kdns_core::records::Instance::number_at`.
    fn number_at(&self, k: usize) -> u64 {
        self.number.map_or(k as u64 + 1, u64::from)
    }
}

#[derive(Debug, Clone)]
struct EffService {
    /// Without instances.
    def: ServiceDef,
    source: Source,
    check: Option<CheckSpec>,
    instances: Vec<EffInstance>,
}

#[derive(Debug, Clone)]
struct EffRecord {
    def: RecordDef,
    core: StaticRecord,
    source: Source,
}

/// The effective records: file and runtime merged.
#[derive(Debug, Clone, Default)]
struct Merged {
    domains: Vec<String>,
    default_ttl: u32,
    services: Vec<EffService>,
    records: Vec<EffRecord>,
    /// Runtime instances of services that no longer exist (kept, not served).
    orphans: Vec<String>,
    /// Docker services and names not served because the records file or
    /// the API already use the name.
    docker_skipped: Vec<String>,
}

impl Merged {
    fn service(&self, name: &str) -> Option<&EffService> {
        self.services.iter().find(|s| s.def.name == name)
    }
}

fn eff_instance(def: &InstanceDef, source: Source) -> Result<EffInstance, ApiError> {
    Ok(EffInstance { def: def.clone(), addrs: defs::instance_addrs(def)?, source, number: None, docker: None })
}

fn eff_service(def: &ServiceDef, source: Source) -> Result<EffService, ApiError> {
    let d = defs::service(def).map_err(|e| ApiError::new(400, format!("service '{}': {e}", def.name)))?;
    let check = defs::check_spec(&d)?;
    let instances = d.instances.iter().map(|i| eff_instance(i, source)).collect::<Result<Vec<_>, _>>()?;
    Ok(EffService { def: ServiceDef { instances: Vec::new(), ..d }, source, check, instances })
}

/// Hands memory freed by a rebuild back to the kernel. glibc keeps freed
/// heap resident (a records file of 10k services costs hundreds of MB
/// while it is parsed and built, and most of that would stay in the RSS);
/// `malloc_trim` returns the free pages. It walks the heap, so it runs on
/// the control thread after a change, never on a worker.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// File, runtime and Docker merged: a runtime service replaces the file's
/// service of the same name; runtime instances of a file service follow the
/// file's instances; runtime records follow the file's. Docker services and
/// names come last and never take a name the file or the API use (they are
/// listed in `docker_skipped` instead).
fn merge(cfg: &StoreConfig, file: &FileRecords, rt: &Runtime, docker: &DockerLayer) -> Result<Merged, ApiError> {
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
            let (def, core) = defs::record(r).map_err(|e| ApiError::new(400, format!("record '{}': {e}", r.name)))?;
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
            labels.insert(format!("{}-{}", s.def.name, i.number_at(k)));
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
fn health_of(machines: &HashMap<Key, Machine>, forced: &[Forced], svc: &EffService, inst: &EffInstance) -> (bool, &'static str) {
    if let Some(f) = forced.iter().find(|f| f.service == svc.def.name && f.id == inst.def.id) {
        return if f.healthy { (true, "forced-up") } else { (false, "forced-down") };
    }
    if let Some(d) = inst.docker {
        return d;
    }
    if svc.check.is_none() {
        return (true, "up");
    }
    let up = machines.get(&(svc.def.name.clone(), inst.def.id.clone())).is_none_or(|m| m.up);
    if up {
        (true, "up")
    } else {
        (false, "down")
    }
}

fn records_config(m: &Merged, machines: &HashMap<Key, Machine>, forced: &[Forced], serial: u32) -> RecordsConfig {
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
                ports: s
                    .def
                    .ports
                    .iter()
                    .map(|p| kdns_core::records::SrvPort { name: p.name.clone(), proto: p.proto.clone(), port: p.port })
                    .collect(),
            })
            .collect(),
        records: m.records.iter().map(|r| r.core.clone()).collect(),
        serial,
    }
}

/// Instances with a check: what the checker thread checks.
fn targets(m: &Merged) -> Vec<Target> {
    let mut out = Vec::new();
    for s in &m.services {
        let Some(c) = &s.check else { continue };
        for i in &s.instances {
            if let Some(ip) = i.addrs.first() {
                out.push(Target { key: (s.def.name.clone(), i.def.id.clone()), addr: SocketAddr::new(*ip, c.port), check: c.clone() });
            }
        }
    }
    out
}

/// A snapshot sent, not yet waited for.
#[derive(Debug)]
#[must_use]
struct Published {
    serial: u32,
    at: Instant,
    reached: Vec<usize>,
    /// The snapshot this one replaced, dropped by [`Store::finish`] once the
    /// workers have moved on: freeing a large snapshot (hundreds of
    /// thousands of allocations) must happen here on the control thread,
    /// not in the worker that happens to let go of it last.
    retired: Option<Arc<Snapshot>>,
}

#[derive(Debug)]
struct Inner {
    file: FileRecords,
    runtime: Runtime,
    docker: DockerLayer,
    merged: Merged,
    machines: HashMap<Key, Machine>,
    serial: u32,
    snapshot: Arc<Snapshot>,
    targets: Vec<Target>,
}

/// The records plane's state; shared by the API handlers, the file
/// watcher and the health checker.
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    workers: Vec<WorkerHandle>,
    inner: Mutex<Inner>,
    checker: Mutex<Option<Checker>>,
}

/// `GET /v1/records`.
#[derive(Debug, Serialize)]
pub struct View {
    serial: u32,
    domains: Vec<String>,
    default_ttl: u32,
    services: Vec<ServiceView>,
    records: Vec<RecordView>,
}

#[derive(Debug, Serialize)]
struct ServiceView {
    name: String,
    mode: ModeName,
    ttl: u32,
    ports: Vec<PortDef>,
    check: Option<CheckSpec>,
    source: Source,
    instances: Vec<InstanceView>,
}

#[derive(Debug, Serialize)]
struct InstanceView {
    number: u64,
    id: String,
    addrs: Vec<String>,
    healthy: bool,
    health: &'static str,
    checks_ok: u64,
    checks_failed: u64,
    last_error: Option<String>,
    source: Source,
}

#[derive(Debug, Serialize)]
struct RecordView {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: u32,
    data: RecordData,
    source: Source,
}

impl Store {
    /// A store serving `file` (the records file's last good content) and
    /// `state` (the state file's). If they conflict, the runtime state is
    /// served alone (the file is reloaded when it changes); if the runtime
    /// state cannot be served either, the file alone. Nothing is sent to
    /// the workers before [`Store::publish_initial`].
    pub fn new(cfg: StoreConfig, workers: Vec<WorkerHandle>, file: FileRecords, state: Option<State>) -> Store {
        let (serial, runtime) = state.map(|s| (s.serial, s.runtime)).unwrap_or_default();
        let no_health = HashMap::new();
        let attempt = |f: &FileRecords, rt: &Runtime| -> Result<(Merged, Snapshot), ApiError> {
            let m = merge(&cfg, f, rt, &DockerLayer::default())?;
            let snap = Snapshot::build(&records_config(&m, &no_health, &rt.health, serial.wrapping_add(1).max(1)))
                .map_err(|e| ApiError::from_build(&e))?;
            Ok((m, snap))
        };
        let file_name = cfg.file.as_ref().map_or("the records file".into(), |p| format!("records file {}", p.display()));
        let state_name = cfg.state_file.as_ref().map_or("the runtime state".into(), |p| format!("records state file {}", p.display()));
        let (file, runtime, (merged, snap)) = match attempt(&file, &runtime) {
            Ok(ok) => (file, runtime, ok),
            Err(e) => match attempt(&FileRecords::default(), &runtime) {
                Ok(ok) => {
                    tracing::error!("{file_name} conflicts with {state_name}: {e}; serving the runtime state alone until the file changes");
                    (FileRecords::default(), runtime, ok)
                }
                Err(e2) => {
                    tracing::error!("{state_name} cannot be served: {e2}; starting with {file_name} alone");
                    match attempt(&file, &Runtime::default()) {
                        Ok(ok) => (file, Runtime::default(), ok),
                        Err(e3) => {
                            tracing::error!("{file_name} cannot be served: {e3}; starting without local records");
                            let ok = attempt(&FileRecords::default(), &Runtime::default()).unwrap_or_default();
                            (FileRecords::default(), Runtime::default(), ok)
                        }
                    }
                }
            },
        };
        if !merged.orphans.is_empty() {
            tracing::warn!("runtime instances of services that do not exist (kept, not served): {}", merged.orphans.join(", "));
        }
        let serial = snap.serial();
        let targets = targets(&merged);
        release_freed_memory();
        Store {
            cfg,
            workers,
            inner: Mutex::new(Inner {
                file,
                runtime,
                docker: DockerLayer::default(),
                merged,
                machines: HashMap::new(),
                serial,
                snapshot: Arc::new(snap),
                targets,
            }),
            checker: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends the current snapshot to every worker and waits for them.
    pub fn publish_initial(&self) -> Change {
        let p = {
            let mut g = self.lock();
            let snap = Arc::clone(&g.snapshot);
            self.publish(&mut g, snap)
        };
        self.finish(p, "initial records")
    }

    /// Starts health checks: outcomes come back to this store.
    pub fn start_checks(self: &Arc<Store>) -> std::io::Result<()> {
        let weak: Weak<Store> = Arc::downgrade(self);
        let checker = Checker::spawn(Arc::new(move |t: &Target, ok, why| {
            if let Some(s) = weak.upgrade() {
                s.check_result(t, ok, why);
            }
        }))?;
        let g = self.lock();
        checker.set_targets(g.targets.clone());
        *self.checker.lock().unwrap_or_else(|e| e.into_inner()) = Some(checker);
        Ok(())
    }

    /// Stops health checks.
    pub fn stop_checks(&self) {
        let c = self.checker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(c) = c {
            c.stop();
        }
    }

    /// The snapshot in use.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.lock().snapshot)
    }

    fn publish(&self, g: &mut Inner, snap: Arc<Snapshot>) -> Published {
        let old = std::mem::replace(&mut g.snapshot, Arc::clone(&snap));
        let retired = (!Arc::ptr_eq(&old, &snap)).then_some(old);
        let at = Instant::now();
        let reached =
            self.workers.iter().enumerate().filter(|(_, w)| w.send(Control::Records(Arc::clone(&snap)))).map(|(i, _)| i).collect();
        Published { serial: snap.serial(), at, reached, retired }
    }

    /// Waits (at most [`PROPAGATION_WAIT`]) until every worker reached
    /// uses serial `p.serial` or a later one.
    fn finish(&self, p: Published, what: &str) -> Change {
        let want = u64::from(p.serial);
        let acked = |r: &[usize]| r.iter().filter(|&&i| self.workers[i].io.records_serial.get() >= want).count();
        let mut n = acked(&p.reached);
        while n < p.reached.len() && p.at.elapsed() < PROPAGATION_WAIT {
            std::thread::sleep(Duration::from_micros(50));
            n = acked(&p.reached);
        }
        let ms = (p.at.elapsed().as_secs_f64() * 1e6).round() / 1e3;
        if let Some(old) = p.retired {
            // A worker that has not acknowledged may still hold it; then it
            // is freed there, as before.
            drop(old);
            release_freed_memory();
        }
        let c = Change { serial: p.serial, propagated_ms: ms, workers: p.reached.len(), workers_acked: n };
        if n < p.reached.len() {
            tracing::warn!(serial = c.serial, "{what}: {} of {} workers use the new records after {ms} ms", n, p.reached.len());
        } else {
            tracing::debug!(serial = c.serial, propagated_ms = ms, workers = n, "{what}: records propagated to every worker");
        }
        if p.reached.len() < self.workers.len() {
            tracing::warn!(
                "{what}: {} of {} workers could not be reached (stopped?)",
                self.workers.len() - p.reached.len(),
                self.workers.len()
            );
        }
        c
    }

    /// Builds and publishes `file` (`None`: the current one) + `rt`
    /// (persisting `rt` if `persist`); nothing changes on error.
    fn commit(&self, g: &mut Inner, file: Option<FileRecords>, rt: Runtime, persist: bool) -> Result<Published, ApiError> {
        self.commit_with(g, file, rt, None, persist)
    }

    /// [`Store::commit`] with a new Docker layer too.
    fn commit_with(
        &self,
        g: &mut Inner,
        file: Option<FileRecords>,
        rt: Runtime,
        docker: Option<DockerLayer>,
        persist: bool,
    ) -> Result<Published, ApiError> {
        let merged = merge(&self.cfg, file.as_ref().unwrap_or(&g.file), &rt, docker.as_ref().unwrap_or(&g.docker))?;
        if merged.docker_skipped != g.merged.docker_skipped && !merged.docker_skipped.is_empty() {
            tracing::warn!("Docker names not served, the records file or the API already use them: {}", merged.docker_skipped.join(", "));
        }
        let serial = g.serial.wrapping_add(1).max(1);
        let snap = Snapshot::build(&records_config(&merged, &g.machines, &rt.health, serial)).map_err(|e| ApiError::from_build(&e))?;
        if persist {
            if let Some(path) = &self.cfg.state_file {
                state::save(path, &State { version: state::VERSION, serial, runtime: rt.clone() }).map_err(|e| {
                    ApiError::new(500, format!("cannot write the records state file {}: {e}; nothing changed", path.display()))
                })?;
            }
        }
        let keys: HashSet<Key> =
            merged.services.iter().flat_map(|s| s.instances.iter().map(|i| (s.def.name.clone(), i.def.id.clone()))).collect();
        g.machines.retain(|k, _| keys.contains(k));
        let t = targets(&merged);
        if t != g.targets {
            if let Some(c) = self.checker.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                c.set_targets(t.clone());
            }
            g.targets = t;
        }
        if let Some(f) = file {
            g.file = f;
        }
        if let Some(d) = docker {
            g.docker = d;
        }
        g.runtime = rt;
        g.merged = merged;
        g.serial = serial;
        Ok(self.publish(g, Arc::new(snap)))
    }

    /// A runtime change: `f` edits a copy of the runtime state (seeing the
    /// merged records before the change) and returns a value.
    fn change<T>(&self, what: &str, f: impl FnOnce(&mut Runtime, &Merged) -> Result<T, ApiError>) -> Result<(Change, T), ApiError> {
        let mut g = self.lock();
        let mut rt = g.runtime.clone();
        let out = f(&mut rt, &g.merged)?;
        let p = self.commit(&mut g, None, rt, true)?;
        drop(g);
        tracing::info!("{what}");
        Ok((self.finish(p, what), out))
    }

    /// The records file changed: serve its new content (refused, old
    /// content kept, if the result would not build).
    pub fn set_file(&self, file: FileRecords) -> Result<Change, String> {
        let mut g = self.lock();
        let rt = g.runtime.clone();
        let p = self.commit(&mut g, Some(file), rt, false).map_err(|e| e.msg)?;
        if !g.merged.orphans.is_empty() {
            tracing::warn!("runtime instances of services that do not exist (kept, not served): {}", g.merged.orphans.join(", "));
        }
        drop(g);
        Ok(self.finish(p, "records file reloaded"))
    }

    /// The Docker provider's records changed: serve them (refused, old
    /// ones kept, if the result would not build).
    /// Returns `None` when nothing changed.
    pub fn set_docker(&self, layer: DockerLayer) -> Result<Option<Change>, String> {
        let mut g = self.lock();
        if g.docker == layer {
            return Ok(None);
        }
        let rt = g.runtime.clone();
        let p = self.commit_with(&mut g, None, rt, Some(layer), false).map_err(|e| e.msg)?;
        drop(g);
        Ok(Some(self.finish(p, "Docker records changed")))
    }

    /// Docker services, instances and names served.
    pub fn docker_summary(&self) -> (usize, usize, usize) {
        let g = self.lock();
        let d = &g.docker;
        (d.services.len(), d.services.iter().map(|s| s.instances.len()).sum(), d.names.len())
    }

    /// One health check's outcome.
    pub fn check_result(&self, t: &Target, ok: bool, why: Option<String>) {
        let mut g = self.lock();
        if !g.targets.contains(t) {
            return; // the instance or its check changed meanwhile
        }
        let m = g.machines.entry(t.key.clone()).or_default();
        let Some(up) = m.record(ok, t.check.rise, t.check.fall) else {
            if !ok {
                m.last_error = why;
            }
            return;
        };
        let (svc, id) = &t.key;
        if up {
            tracing::info!("service {svc} instance {id} ({}) is up: {} checks passed", t.addr, t.check.rise);
        } else {
            tracing::warn!(
                "service {svc} instance {id} ({}) is down: {} checks failed, last: {}",
                t.addr,
                t.check.fall,
                why.as_deref().unwrap_or("?")
            );
            m.last_error = why;
        }
        if g.runtime.health.iter().any(|f| f.service == *svc && f.id == *id) {
            return; // forced: the answers do not change
        }
        let rt = g.runtime.clone();
        match self.commit(&mut g, None, rt, false) {
            Ok(p) => {
                drop(g);
                self.finish(p, "health change");
            }
            Err(e) => tracing::error!("records not rebuilt after a health change: {e}"),
        }
    }

    /// Domains, services, instances and records served.
    pub fn summary(&self) -> (Vec<String>, usize, usize, usize) {
        let g = self.lock();
        let m = &g.merged;
        (m.domains.clone(), m.services.len(), m.services.iter().map(|s| s.instances.len()).sum(), m.records.len())
    }

    /// `GET /v1/records`.
    pub fn view(&self) -> View {
        let g = self.lock();
        let m = &g.merged;
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
                        let (healthy, health) = health_of(&g.machines, &g.runtime.health, s, i);
                        let mach = g.machines.get(&(s.def.name.clone(), i.def.id.clone()));
                        InstanceView {
                            number: i.number_at(k),
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
        View { serial: g.serial, domains: m.domains.clone(), default_ttl: m.default_ttl, services, records }
    }

    fn in_file(&self) -> String {
        self.cfg.file.as_ref().map_or("the records file".into(), |p| format!("the records file {}", p.display()))
    }

    /// `POST /v1/records`.
    pub fn add_record(&self, def: &RecordDef) -> Result<Change, ApiError> {
        let (d, core) = defs::record(def)?;
        let what = format!("record added: {} {} {}", d.name, d.rtype, data_text(&d.data));
        self.change(&what, |rt, m| {
            if m.records.iter().any(|r| r.core.name == core.name && r.core.data == core.data) {
                return Err(ApiError::new(409, format!("record {} {} {} already exists", d.name, d.rtype, data_text(&d.data))));
            }
            rt.records.push(d.clone());
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `DELETE /v1/records?name=N[&type=T]`.
    pub fn delete_records(&self, name: &str, rtype: Option<&str>) -> Result<Change, ApiError> {
        let name = defs::domain_name(name).map_err(|e| ApiError::new(400, format!("name: {e}")))?;
        let rtype = rtype.map(str::to_ascii_uppercase);
        if let Some(t) = &rtype {
            if !defs::RECORD_TYPES.contains(&t.as_str()) {
                return Err(ApiError::new(400, format!("type: '{t}': expected one of {}", defs::RECORD_TYPES.join(", "))));
            }
        }
        let label = format!("{name}{}", rtype.as_ref().map_or(String::new(), |t| format!(" {t}")));
        let in_file = self.in_file();
        self.change(&format!("records deleted: {label}"), |rt, m| {
            let matches = |r: &RecordDef| r.name == name && rtype.as_ref().is_none_or(|t| *t == r.rtype);
            let before = rt.records.len();
            rt.records.retain(|r| !matches(r));
            if rt.records.len() == before {
                if m.records.iter().any(|r| r.source == Source::File && matches(&r.def)) {
                    return Err(ApiError::new(409, format!("record {label} is defined in {in_file}; remove it there")));
                }
                if m.records.iter().any(|r| r.source == Source::Docker && matches(&r.def)) {
                    return Err(ApiError::new(
                        409,
                        format!("record {label} comes from a running Docker container; it goes when the container stops"),
                    ));
                }
                return Err(ApiError::new(404, format!("no record {label}")));
            }
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `POST /v1/services`.
    pub fn add_service(&self, def: &ServiceDef) -> Result<Change, ApiError> {
        let d = defs::service(def)?;
        let in_file = self.in_file();
        self.change(&format!("service added: {}", d.name), |rt, m| {
            if rt.services.iter().any(|s| s.name == d.name) {
                return Err(ApiError::new(409, format!("service '{}' already exists (delete it first)", d.name)));
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
    pub fn delete_service(&self, name: &str) -> Result<Change, ApiError> {
        let name = name.to_ascii_lowercase();
        let in_file = self.in_file();
        self.change(&format!("service deleted: {name}"), |rt, m| {
            let Some(i) = rt.services.iter().position(|s| s.name == name) else {
                match m.service(&name).map(|s| s.source) {
                    Some(Source::Docker) => {
                        return Err(ApiError::new(
                            409,
                            format!("service '{name}' comes from running Docker containers; it goes when they stop"),
                        ))
                    }
                    Some(_) => return Err(ApiError::new(409, format!("service '{name}' is defined in {in_file}; remove it there"))),
                    None => {}
                }
                return Err(ApiError::new(404, format!("no service '{name}'")));
            };
            rt.services.remove(i);
            rt.health.retain(|f| f.service != name);
            Ok(())
        })
        .map(|(c, ())| c)
    }

    /// `POST /v1/services/<name>/instances`: returns the change and the
    /// instance's number.
    pub fn add_instance(&self, service: &str, inst: &InstanceDef) -> Result<(Change, usize), ApiError> {
        let svc = service.to_ascii_lowercase();
        defs::instance_addrs(inst)?;
        self.change(&format!("instance added: {svc}/{} {}", inst.id, inst.addrs.join(" ")), |rt, m| {
            let s = m.service(&svc).ok_or_else(|| ApiError::new(404, format!("no service '{svc}'")))?;
            if s.instances.iter().any(|i| i.def.id == inst.id) {
                return Err(ApiError::new(409, format!("instance '{}' already exists in service '{svc}'", inst.id)));
            }
            match s.source {
                Source::Runtime => {
                    let r =
                        rt.services.iter_mut().find(|r| r.name == svc).ok_or_else(|| ApiError::new(404, format!("no service '{svc}'")))?;
                    r.instances.push(inst.clone());
                }
                Source::File => rt.instances.push(ExtraInstance { service: svc.clone(), instance: inst.clone() }),
                Source::Docker => {
                    return Err(ApiError::new(
                        409,
                        format!("service '{svc}' comes from Docker: start a container for it (or give the instance another service)"),
                    ))
                }
            }
            Ok(s.instances.len() + 1)
        })
    }

    /// `DELETE /v1/services/<name>/instances/<id>`.
    pub fn delete_instance(&self, service: &str, id: &str) -> Result<Change, ApiError> {
        let svc = service.to_ascii_lowercase();
        let in_file = self.in_file();
        self.change(&format!("instance deleted: {svc}/{id}"), |rt, m| {
            let s = m.service(&svc).ok_or_else(|| ApiError::new(404, format!("no service '{svc}'")))?;
            let i = s
                .instances
                .iter()
                .find(|i| i.def.id == id)
                .ok_or_else(|| ApiError::new(404, format!("no instance '{id}' in service '{svc}'")))?;
            if i.source == Source::File {
                return Err(ApiError::new(409, format!("instance '{id}' of service '{svc}' is defined in {in_file}; remove it there")));
            }
            if i.source == Source::Docker {
                return Err(ApiError::new(
                    409,
                    format!("instance '{id}' of service '{svc}' is a running Docker container; stop it instead"),
                ));
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

    /// `POST /v1/services/<name>/instances/<id>/health`: `healthy`,
    /// `unhealthy` (forced) or `auto` (back to checks).
    pub fn set_health(&self, service: &str, id: &str, state: &str) -> Result<Change, ApiError> {
        let svc = service.to_ascii_lowercase();
        let forced = match state {
            "healthy" => Some(true),
            "unhealthy" => Some(false),
            "auto" => None,
            other => return Err(ApiError::new(400, format!("state: '{other}': expected healthy, unhealthy or auto"))),
        };
        self.change(&format!("health of {svc}/{id} set to {state}"), |rt, m| {
            let s = m.service(&svc).ok_or_else(|| ApiError::new(404, format!("no service '{svc}'")))?;
            if !s.instances.iter().any(|i| i.def.id == id) {
                return Err(ApiError::new(404, format!("no instance '{id}' in service '{svc}'")));
            }
            rt.health.retain(|f| !(f.service == svc && f.id == id));
            if let Some(healthy) = forced {
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::handle::IoStats;
    use crate::records::defs::{CheckDef, CheckKind};
    use crate::records::file;
    use kdns_core::wire::{encode_name, Class, Rtype};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A worker that swaps snapshots in like the real ones do, and its
    /// current snapshot.
    pub(crate) fn fake_worker(id: usize) -> (WorkerHandle, Arc<Mutex<Arc<Snapshot>>>) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (tx, rx) = crossbeam_channel::unbounded::<Control>();
        let io = Arc::new(IoStats::default());
        let cur = Arc::new(Mutex::new(Arc::new(Snapshot::empty())));
        let (io2, cur2) = (Arc::clone(&io), Arc::clone(&cur));
        std::thread::spawn(move || {
            let _poll = poll;
            while let Ok(c) = rx.recv() {
                if let Control::Records(s) = c {
                    let serial = s.serial();
                    *cur2.lock().unwrap() = s;
                    io2.records_serial.set(u64::from(serial));
                }
            }
        });
        let pool = kdns_core::upstream::Pool::new(&[], Default::default(), Default::default());
        let backends = pool.map(|p| p.shared_stats()).unwrap_or_else(|_| Arc::from(Vec::new()));
        let h = WorkerHandle {
            id,
            kind: crate::handle::WorkerKind::Udp,
            core: None,
            engine: Arc::default(),
            cache: Arc::default(),
            backends,
            io,
            tx,
            waker,
        };
        (h, cur)
    }

    pub(crate) fn temp_dir() -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!("kdns-store-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&d);
        d
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
            kdns_core::records::LocalAnswer::Reply(len, rc) => {
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
            health: if healthy { "up" } else { "unhealthy" },
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
        let dir = temp_dir();
        let (w0, cur0) = fake_worker(0);
        let store = Store::new(cfg(&dir), vec![w0], file::parse(FILE).unwrap(), None);
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
        assert_eq!(store.delete_service("api").unwrap_err().status, 409);
        assert_eq!(store.delete_instance("api", "kdns_api_1").unwrap_err().status, 409);
        assert_eq!(store.add_instance("api", &InstanceDef { id: "x".into(), addrs: vec!["10.0.0.9".into()] }).unwrap_err().status, 409);
        assert_eq!(store.delete_records("kdns_api_1.kdns", None).unwrap_err().status, 409);
        store.set_health("api", "kdns_api_3", "unhealthy").unwrap();
        assert_eq!(a(&store.snapshot(), "api.kdns"), ["172.30.53.21"]);
        // Containers gone: their records go.
        store.set_docker(DockerLayer::default()).unwrap().expect("a change");
        assert_eq!(lookup(&store.snapshot(), "api.kdns", Rtype::A).0, 3);
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn changes_reach_the_snapshot_and_every_worker() {
        let dir = temp_dir();
        let (w0, cur0) = fake_worker(0);
        let (w1, cur1) = fake_worker(1);
        let store = Store::new(cfg(&dir), vec![w0, w1], file::parse(FILE).unwrap(), None);
        let c = store.publish_initial();
        assert_eq!((c.serial, c.workers, c.workers_acked), (1, 2, 2));
        assert!(c.propagated_ms < 1000.0);
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
        assert_eq!(e.status, 409, "{e}");
        let e = store.add_instance("nope", &InstanceDef { id: "x".into(), addrs: vec!["10.0.0.4".into()] }).unwrap_err();
        assert_eq!(e.status, 404, "{e}");
        let e = store.add_instance("web", &InstanceDef { id: "x".into(), addrs: vec!["10.0.0.x".into()] }).unwrap_err();
        assert_eq!((e.status, e.msg.as_str()), (400, "addrs[0]: '10.0.0.x' is not an IP address"));

        // Health override: forced down leaves the answers, auto brings it back.
        store.set_health("web", "c1", "unhealthy").unwrap();
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.2", "10.0.0.3"]);
        let v = serde_json::to_value(store.view()).unwrap();
        assert_eq!(v["services"][0]["instances"][0]["health"], "forced-down");
        assert_eq!(v["services"][0]["instances"][0]["healthy"], false);
        store.set_health("web", "c1", "auto").unwrap();
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert_eq!(store.set_health("web", "c9", "auto").unwrap_err().status, 404);
        assert_eq!(store.set_health("web", "c1", "sick").unwrap_err().status, 400);

        // A file instance cannot be deleted here; a runtime one can.
        assert_eq!(store.delete_instance("web", "c1").unwrap_err().status, 409);
        assert_eq!(store.delete_instance("web", "c7").unwrap_err().status, 404);
        store.delete_instance("web", "c3").unwrap();
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(lookup(&store.snapshot(), "web-3.kdns", Rtype::A).0, 3, "NXDOMAIN");

        // Records.
        let rec =
            |name: &str, t: &str, d: &str| RecordDef { name: name.into(), rtype: t.into(), data: RecordData::One(d.into()), ttl: None };
        store.add_record(&rec("cache.kdns", "A", "10.6.0.1")).unwrap();
        assert_eq!(a(&store.snapshot(), "cache.kdns"), ["10.6.0.1"]);
        assert_eq!(store.add_record(&rec("cache.kdns", "A", "10.6.0.1")).unwrap_err().status, 409);
        assert_eq!(store.add_record(&rec("db.kdns", "A", "10.5.0.1")).unwrap_err().status, 409, "same as the file's");
        let e = store.add_record(&rec("x.elsewhere", "A", "10.6.0.1")).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.msg.contains("under none of the local domains"), "{e}");
        let e = store.add_record(&rec("db.kdns", "CNAME", "web.kdns")).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(e.msg.contains("CNAME"), "{e}");
        let e = store.add_record(&rec("web-1.kdns", "A", "10.6.0.1")).unwrap_err();
        assert_eq!(e.status, 409, "an instance name: {e}");
        assert_eq!(store.delete_records("db.kdns", None).unwrap_err().status, 409);
        assert_eq!(store.delete_records("none.kdns", None).unwrap_err().status, 404);
        assert_eq!(store.delete_records("cache.kdns", Some("AAAA")).unwrap_err().status, 404);
        assert_eq!(store.delete_records("cache.kdns", Some("MX")).unwrap_err().status, 400);
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
        assert_eq!(store.add_service(&svc("api", &[])).unwrap_err().status, 409);
        store.add_service(&svc("web", &[("r1", "10.9.0.1")])).unwrap();
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.9.0.1"], "the runtime service wins");
        let v = serde_json::to_value(store.view()).unwrap();
        assert_eq!(v["services"][0]["source"], "runtime");
        store.delete_service("web").unwrap();
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"], "the file's is back");
        assert_eq!(store.delete_service("web").unwrap_err().status, 409);
        assert_eq!(store.delete_service("nope").unwrap_err().status, 404);
        let e = store.add_service(&svc("db", &[])).unwrap_err();
        assert_eq!(e.status, 409, "db.kdns is a record: {e}");
        assert_eq!(store.add_service(&svc("a.b", &[])).unwrap_err().status, 400);

        // Every change was persisted: a new store from the state file serves the same.
        let st = state::load(&dir.join("state/records.json")).unwrap().unwrap();
        assert_eq!(st.serial, store.view().serial);
        let again = Store::new(cfg(&dir), vec![], file::parse(FILE).unwrap(), Some(st));
        assert_eq!(a(&again.snapshot(), "api.kdns"), ["10.1.0.1"]);
        assert_eq!(again.snapshot().serial(), store.snapshot().serial() + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_reloads_and_conflicts() {
        let dir = temp_dir();
        let store = Store::new(cfg(&dir), vec![], file::parse(FILE).unwrap(), None);
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
        let next = FILE
            .replace("10.5.0.1", "10.5.0.2")
            .replace("{ id = \"c2\", addrs = [\"10.0.0.2\"] }", "{ id = \"c2\", addrs = [\"10.0.0.22\"] }");
        let c = store.set_file(file::parse(&next).unwrap()).unwrap();
        assert_eq!(c.serial, serial + 1);
        assert_eq!(a(&store.snapshot(), "db.kdns"), ["10.5.0.2"]);
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.22"]);
        // Nothing of the file went to the state file.
        let st = state::load(&dir.join("state/records.json")).unwrap().unwrap();
        assert!(st.runtime.services.is_empty() && st.runtime.records.len() == 1);
        // Start-up with a conflicting file: the runtime state is served, the file is not
        // (here `kdns` is configured, so the runtime CNAME stands without the file).
        let c2 = StoreConfig { domains: vec!["kdns".into()], ..cfg(&dir) };
        let s2 = Store::new(c2.clone(), vec![], file::parse(&clash).unwrap(), Some(st.clone()));
        assert_eq!(lookup(&s2.snapshot(), "www.kdns", Rtype::CNAME).1.len(), 1);
        assert_eq!(lookup(&s2.snapshot(), "db.kdns", Rtype::A).0, 3, "file not served");
        // If the runtime state cannot stand alone (its domain came from the file), the file is served.
        let s3 = Store::new(cfg(&dir), vec![], file::parse(&clash).unwrap(), Some(st));
        assert_eq!(a(&s3.snapshot(), "db.kdns"), ["10.5.0.1"]);
        assert_eq!(lookup(&s3.snapshot(), "www.kdns", Rtype::TXT).1.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn health_checks_take_instances_out_and_back() {
        let dir = temp_dir();
        let mut f = file::parse(FILE).unwrap();
        f.services[0].check =
            Some(CheckDef { kind: CheckKind::Tcp, port: None, name: None, interval_ms: 100, timeout_ms: 50, rise: 2, fall: 2 });
        let (w, cur) = fake_worker(0);
        let store = Store::new(cfg(&dir), vec![w], f, None);
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
        store.set_health("web", "c1", "healthy").unwrap();
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
        store.set_health("web", "c1", "auto").unwrap();
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
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn persistence_failure_changes_nothing() {
        let dir = temp_dir();
        std::fs::create_dir_all(&dir).unwrap();
        // The state file's directory is a file: it cannot be written.
        std::fs::write(dir.join("state"), b"x").unwrap();
        let store = Store::new(cfg(&dir), vec![], file::parse(FILE).unwrap(), None);
        let s = store.view().serial;
        let e = store.add_instance("web", &InstanceDef { id: "c3".into(), addrs: vec!["10.0.0.3".into()] }).unwrap_err();
        assert_eq!(e.status, 500);
        assert!(e.msg.contains("cannot write the records state file"), "{e}");
        assert_eq!(store.view().serial, s);
        assert_eq!(a(&store.snapshot(), "web.kdns"), ["10.0.0.1", "10.0.0.2"]);
        let _ = std::fs::remove_dir_all(&dir);
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
        let t = Instant::now();
        let c = store.publish_initial();
        assert!(t.elapsed() >= PROPAGATION_WAIT && t.elapsed() < PROPAGATION_WAIT * 3);
        assert_eq!((c.workers, c.workers_acked), (1, 0));
        drop(rx);
        let c = store.publish_initial();
        assert_eq!(c.workers, 0, "a worker that is gone is not waited for");
    }
}
