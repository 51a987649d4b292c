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
//!
//! [`merge`] puts the three sources together (and builds the API's view of
//! them); [`edit`] holds the API's changes. Errors are
//! [`kdns_api::Error`]s: their kind says what went wrong, the HTTP layer
//! gives it a status.

mod edit;
mod merge;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kdns_api::view::{Change, RecordsView};
use kdns_api::Error;
use kdns_core::records::Snapshot;

use super::file::FileRecords;
use super::health::{Checker, Key, Machine, Target};
use super::state::{self, Runtime, State};
use crate::cluster::model::Layer as ClusterLayer;
use crate::cluster::Link;
use crate::docker::model::Layer as DockerLayer;
use crate::handle::{Control, WorkerHandle};
use merge::{export, merge, merge_cluster, records_config, targets, Merged};

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

/// Hands memory freed by a rebuild back to the kernel. glibc keeps freed
/// heap resident (a records file of 10k services costs hundreds of MB
/// while it is parsed and built, and most of that would stay in the RSS);
/// `malloc_trim` returns the free pages. It walks the heap, so it runs on
/// the control thread after a change, never on a worker.
fn release_freed_memory() {
    kdns_sys::malloc_trim();
}

/// A snapshot sent, not yet waited for.
#[derive(Debug)]
#[must_use]
struct Published {
    serial: u32,
    at: Instant,
    /// The workers it was sent to, and how many there were.
    reached: Vec<WorkerHandle>,
    of: usize,
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
    /// Other hosts' records, through etcd.
    cluster: ClusterLayer,
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
    /// Replaced when an aborted handover restarts the AF_XDP workers.
    workers: std::sync::RwLock<Vec<WorkerHandle>>,
    inner: Mutex<Inner>,
    checker: Mutex<Option<Checker>>,
    /// The cluster thread, when `[cluster]` is on.
    cluster: std::sync::OnceLock<Arc<Link>>,
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
        let attempt = |f: &FileRecords, rt: &Runtime| -> Result<(Merged, Snapshot), Error> {
            let m = merge(&cfg, f, rt, &DockerLayer::default())?;
            let snap = Snapshot::build(&records_config(&m, &no_health, &rt.health, serial.wrapping_add(1).max(1))).map_err(Error::from)?;
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
            workers: std::sync::RwLock::new(workers),
            inner: Mutex::new(Inner {
                file,
                runtime,
                docker: DockerLayer::default(),
                cluster: ClusterLayer::default(),
                merged,
                machines: HashMap::new(),
                serial,
                snapshot: Arc::new(snap),
                targets,
            }),
            checker: Mutex::new(None),
            cluster: std::sync::OnceLock::new(),
        }
    }

    /// Joins the cluster thread: this host's records go to it after every
    /// change (the current ones at once), and the API's changes need etcd.
    pub fn attach_cluster(&self, link: Arc<Link>) {
        let g = self.lock();
        link.set_export(export(&g.merged, &g.machines, &g.runtime.health));
        let _ = self.cluster.set(link);
    }

    /// Other hosts' records changed: serve them (refused, old ones kept,
    /// if the result would not build). `None` when nothing changed.
    pub fn set_cluster(&self, layer: ClusterLayer) -> Result<Option<Change>, String> {
        let mut g = self.lock();
        if g.cluster == layer {
            return Ok(None);
        }
        let old = std::mem::replace(&mut g.cluster, layer);
        let rt = g.runtime.clone();
        match self.commit(&mut g, None, rt, false) {
            Ok(p) => {
                drop(g);
                Ok(Some(self.finish(p, "records of other hosts changed")))
            }
            Err(e) => {
                g.cluster = old;
                Err(e.msg)
            }
        }
    }

    /// `GET /v1/cluster` (`None`: no cluster).
    pub fn cluster_view(&self) -> Option<kdns_api::cluster::ClusterView> {
        self.cluster.get().map(|l| l.view())
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The workers the snapshots go to (set once, before the store is
    /// shared: the daemon builds the workers with the first snapshot).
    pub fn set_workers(&mut self, workers: Vec<WorkerHandle>) {
        *self.workers.get_mut().unwrap_or_else(|e| e.into_inner()) = workers;
    }

    /// Replaces the workers the snapshots go to (an aborted handover
    /// restarted the AF_XDP workers) and sends them the snapshot in use:
    /// workers built with an older one answer the current records from
    /// their next loop turn.
    pub fn replace_workers(&self, workers: Vec<WorkerHandle>) {
        let g = self.lock();
        for w in &workers {
            w.send(Control::Records(Arc::clone(&g.snapshot)));
        }
        *self.workers.write().unwrap_or_else(|e| e.into_inner()) = workers;
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
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.lock().snapshot)
    }

    fn publish(&self, g: &mut Inner, snap: Arc<Snapshot>) -> Published {
        let old = std::mem::replace(&mut g.snapshot, Arc::clone(&snap));
        let retired = (!Arc::ptr_eq(&old, &snap)).then_some(old);
        let at = Instant::now();
        let workers = self.workers.read().unwrap_or_else(|e| e.into_inner());
        let reached = workers.iter().filter(|w| w.send(Control::Records(Arc::clone(&snap)))).cloned().collect();
        Published { serial: snap.serial(), at, reached, of: workers.len(), retired }
    }

    /// Waits (at most [`PROPAGATION_WAIT`]) until every worker reached
    /// uses serial `p.serial` or a later one.
    fn finish(&self, p: Published, what: &str) -> Change {
        let want = u64::from(p.serial);
        let acked = |r: &[WorkerHandle]| r.iter().filter(|w| w.io.records_serial.get() >= want).count();
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
        if p.reached.len() < p.of {
            tracing::warn!("{what}: {} of {} workers could not be reached (stopped?)", p.of - p.reached.len(), p.of);
        }
        c
    }

    /// Builds and publishes `file` (`None`: the current one) + `rt`
    /// (persisting `rt` if `persist`); nothing changes on error.
    fn commit(&self, g: &mut Inner, file: Option<FileRecords>, rt: Runtime, persist: bool) -> Result<Published, Error> {
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
    ) -> Result<Published, Error> {
        let mut merged = merge(&self.cfg, file.as_ref().unwrap_or(&g.file), &rt, docker.as_ref().unwrap_or(&g.docker))?;
        merge_cluster(&mut merged, &rt, &g.cluster);
        if merged.docker_skipped != g.merged.docker_skipped && !merged.docker_skipped.is_empty() {
            tracing::warn!("Docker names not served, the records file or the API already use them: {}", merged.docker_skipped.join(", "));
        }
        let serial = g.serial.wrapping_add(1).max(1);
        let snap = Snapshot::build(&records_config(&merged, &g.machines, &rt.health, serial)).map_err(Error::from)?;
        if persist {
            if let Some(path) = &self.cfg.state_file {
                state::save(path, &State { version: state::VERSION, serial, runtime: rt.clone() }).map_err(|e| {
                    Error::internal(format!("cannot write the records state file {}: {e}; nothing changed", path.display()))
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
        if let Some(l) = self.cluster.get() {
            l.set_export(export(&g.merged, &g.machines, &g.runtime.health));
        }
        Ok(self.publish(g, Arc::new(snap)))
    }

    /// A runtime change: `f` edits a copy of the runtime state (seeing the
    /// merged records before the change) and returns a value.
    fn change<T>(&self, what: &str, f: impl FnOnce(&mut Runtime, &Merged) -> Result<T, Error>) -> Result<(Change, T), Error> {
        if let Some(l) = self.cluster.get() {
            l.writable()?;
        }
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
    pub fn view(&self) -> RecordsView {
        let g = self.lock();
        g.merged.view(&g.machines, &g.runtime.health, g.serial)
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod cluster_tests;
