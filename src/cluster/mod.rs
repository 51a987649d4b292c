//! Several hosts sharing records through etcd v3 (docs/cluster.md), off
//! the data path: one thread with a current-thread tokio runtime and the
//! `etcd-client` crate.
//!
//! * [`model`]: the key layout, values decoded and checked, the layer the
//!   records store merges, this host's keys and the diff that writes them,
//!   the lease (sans-IO, unit-tested).
//! * [`session`]: one connection to etcd from lease to watch, and the loop
//!   that reconnects with back-off.
//! * [`settings`]: `[cluster]` checked.
//!
//! The records store (src/records/store.rs) merges the other hosts'
//! [`model::Layer`] as its fourth source and hands this host's records
//! back through the [`Link`] after every change; the link also says
//! whether etcd is reachable (the API's changes are refused while it is
//! not) and holds what `GET /v1/cluster` shows. The records learnt from
//! etcd are kept in the snapshot file and served at start until etcd
//! answers.

pub mod model;
pub mod session;
pub mod settings;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kdns_api::cluster::{ClusterView, HostView};
use kdns_api::Error;
use serde::{Deserialize, Serialize};

use crate::records::Store;
use model::{Entries, Export, Keys, Lease};
pub use settings::ClusterSettings;

/// What the cluster thread and the records store share.
#[derive(Debug)]
pub struct Link {
    host: String,
    prefix: String,
    connected: AtomicBool,
    export: tokio::sync::watch::Sender<Arc<Export>>,
    status: Mutex<Status>,
}

/// What `GET /v1/cluster` shows besides the settings.
#[derive(Debug, Default, Clone)]
pub struct Status {
    pub last_error: Option<String>,
    pub revision: i64,
    pub lease: Option<Lease>,
    pub resyncs: u64,
    pub skipped: u64,
    pub puts: u64,
    pub deletes: u64,
    pub hosts: Vec<HostView>,
    /// When `hosts` was computed (lease ages grow from there).
    pub hosts_at: Option<std::time::Instant>,
}

impl Link {
    pub fn new(host: &str, prefix: &str) -> Link {
        Link {
            host: host.into(),
            prefix: prefix.into(),
            connected: AtomicBool::new(false),
            export: tokio::sync::watch::Sender::new(Arc::new(Export::default())),
            status: Mutex::new(Status::default()),
        }
    }

    /// The API's changes go through only while etcd is reachable: a change
    /// made now could not reach the other hosts.
    pub fn writable(&self) -> Result<(), Error> {
        if self.connected.load(Ordering::Acquire) {
            return Ok(());
        }
        let why = self.status().last_error.unwrap_or_else(|| "not connected yet".into());
        Err(Error::unavailable(format!(
            "etcd is unreachable ({why}): changes are refused until it is back; kdns keeps answering with the last known records"
        )))
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Release);
    }

    /// This host's records changed (the store calls it after every change).
    pub fn set_export(&self, e: Export) {
        self.export.send_if_modified(|cur| {
            let changed = **cur != e;
            if changed {
                *cur = Arc::new(e);
            }
            changed
        });
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Export>> {
        self.export.subscribe()
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// `GET /v1/cluster`.
    pub fn view(&self) -> ClusterView {
        let s = self.status();
        ClusterView {
            enabled: true,
            host: self.host.clone(),
            prefix: self.prefix.clone(),
            connected: self.connected(),
            last_error: s.last_error,
            revision: s.revision,
            lease_id: s.lease.map(|l| l.id_hex()),
            resyncs: s.resyncs,
            skipped: s.skipped,
            puts: s.puts,
            deletes: s.deletes,
            hosts: {
                let since = s.hosts_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
                s.hosts
                    .into_iter()
                    .map(|h| HostView { lease_age_s: h.lease_age_s.map(|a| ((a + since) * 10.0).round() / 10.0), ..h })
                    .collect()
            },
        }
    }
}

/// The snapshot file: the values last read from etcd.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    version: u32,
    prefix: String,
    revision: i64,
    kvs: Vec<(String, String)>,
}

/// Writes the snapshot file atomically.
pub fn save_snapshot(path: &Path, prefix: &str, revision: i64, entries: &Entries) -> std::io::Result<()> {
    let f = SnapshotFile { version: 1, prefix: prefix.into(), revision, kvs: entries.raw().map(|(k, v)| (k.clone(), v.clone())).collect() };
    let body = serde_json::to_vec(&f).map_err(std::io::Error::other)?;
    crate::records::state::write_atomic(path, &body, 0o600)
}

/// Reads the snapshot file into `entries` (values checked as if read from
/// etcd); returns its revision. A missing file is no error.
pub fn load_snapshot(path: &Path, keys: &Keys, prefix: &str, entries: &mut Entries) -> Result<Option<i64>, String> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let f: SnapshotFile = serde_json::from_slice(&text).map_err(|e| format!("not a cluster snapshot: {e}"))?;
    if f.version != 1 || f.prefix != prefix {
        return Err(format!("version {} under prefix {}: not this configuration's (version 1, {prefix})", f.version, f.prefix));
    }
    for (k, v) in &f.kvs {
        entries.put(keys, k, v.as_bytes());
    }
    Ok(Some(f.revision))
}

/// The running cluster thread; stop it with [`Cluster::shutdown`].
#[derive(Debug)]
pub struct Cluster {
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the cluster thread for `store`: the snapshot file is served at
/// once, then etcd is read and watched.
pub fn start(cfg: &ClusterSettings, store: Arc<Store>) -> std::io::Result<Cluster> {
    let link = Arc::new(Link::new(&cfg.host, &cfg.prefix));
    store.attach_cluster(Arc::clone(&link));
    let keys = Keys::new(&cfg.prefix);
    let mut entries = Entries::default();
    if let Some(path) = &cfg.snapshot_file {
        match load_snapshot(path, &keys, &cfg.prefix, &mut entries) {
            Ok(Some(rev)) => {
                let layer = entries.layer(&cfg.host);
                let n = layer.instances.len();
                if let Err(e) = store.set_cluster(layer) {
                    tracing::error!("cluster: the snapshot {} is not served: {e}", path.display());
                } else {
                    tracing::info!(
                        "cluster: serving {n} instances of other hosts from {} (revision {rev}) until etcd answers",
                        path.display()
                    );
                }
                link.update(|s| s.revision = rev);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cluster: snapshot {} not loaded: {e}", path.display()),
        }
    }
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let cfg = cfg.clone();
    let thread = std::thread::Builder::new().name("kdns-cluster".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!("cluster: no runtime: {e}; not joining the cluster");
                return;
            }
        };
        rt.block_on(session::run(cfg, store, link, entries, stop_rx));
    })?;
    Ok(Cluster { stop, thread: Some(thread) })
}

impl Cluster {
    /// Revokes this host's lease (its instances leave the other hosts'
    /// answers at once) and stops the thread.
    pub fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
