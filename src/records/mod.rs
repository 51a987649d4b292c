//! The service-discovery plane: everything that feeds the workers' local
//! records (`kdns_core::records`).
//!
//! * [`file`]: the records file (TOML), polled every second (mtime, size,
//!   inode) and reloaded when it changes; a bad file keeps the old records
//!   and the log says what is wrong (file, line, key or name).
//! * [`state`]: the changes made through the API, kept in the state file
//!   (JSON, replaced atomically) and loaded at start.
//! * [`health`]: instance health checks (tcp connect, dns query) with rise
//!   and fall, on one non-blocking thread.
//! * [`store`]: merges the three, compiles a `Snapshot` with a new serial on
//!   every change, and sends it to every worker (`Control::Records`); the
//!   HTTP API (`src/control/records_api.rs`) calls it.

pub mod file;
pub mod health;
pub mod state;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{RecvTimeoutError, Sender};

pub use store::Store;

/// The records model: one definition, in the `kdns-api` crate.
pub use kdns_api::records as defs;

use crate::config::RecordsSettings;
use crate::handle::WorkerHandle;
use file::FileRecords;
use store::StoreConfig;

/// How often the records file is looked at.
pub const FILE_POLL: Duration = Duration::from_secs(1);

/// What identifies a version of the records file: size, mtime, inode.
type Stamp = Option<(u64, SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// The running plane; stop it with [`Plane::shutdown`].
#[derive(Debug)]
pub struct Plane {
    store: Arc<Store>,
    watcher: Option<(Sender<()>, JoinHandle<()>)>,
    /// Versions of the records file the watcher has handled (loaded,
    /// refused, or found gone).
    file_versions: Arc<AtomicU64>,
}

impl Plane {
    /// The store (for the control API).
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// Versions of the records file handled so far: a change to the file
    /// has been seen (and served or refused) once this has grown.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn file_versions(&self) -> u64 {
        self.file_versions.load(Ordering::Acquire)
    }

    /// Stops the file watcher and the health checks.
    pub fn shutdown(mut self) {
        if let Some((stop, t)) = self.watcher.take() {
            drop(stop);
            let _ = t.join();
        }
        self.store.stop_checks();
    }
}

/// Loads the records file for the first time: its content (empty if
/// missing or bad, with a log line) and its stamp.
fn first_load(path: &Path) -> (FileRecords, Stamp) {
    let st = stamp(path);
    if st.is_none() {
        tracing::warn!("records file {} does not exist (yet); it is loaded when it appears", path.display());
        return (FileRecords::default(), st);
    }
    match file::read(path) {
        Ok(f) => (f, st),
        Err(e) => {
            tracing::error!("{e}; serving without it until it is fixed");
            (FileRecords::default(), st)
        }
    }
}

/// Checks the records file the way the daemon would load it (for
/// `--check-config`): the error names the file, the line and the key.
pub fn check(s: &RecordsSettings) -> Result<String, String> {
    let Some(path) = &s.file else { return Ok("no records file".into()) };
    let f = file::read(path)?;
    let store = Store::new(cfg_of(s), Vec::new(), FileRecords::default(), None);
    store.set_file(f.clone()).map_err(|e| format!("records file {}: {e}", path.display()))?;
    Ok(format!("records file {}: {} services, {} records", path.display(), f.services.len(), f.records.len()))
}

fn cfg_of(s: &RecordsSettings) -> StoreConfig {
    StoreConfig { domains: s.domains.clone(), default_ttl: s.default_ttl, file: s.file.clone(), state_file: s.state_file.clone() }
}

/// The records loaded, before any worker exists: [`Prepared::snapshot`]
/// goes into every worker's engine, so that each answers local names from
/// its first query; [`Prepared::start`] then starts the plane.
#[derive(Debug)]
pub struct Prepared {
    store: Store,
    stamp: Stamp,
}

impl Prepared {
    /// The snapshot to build the workers with.
    pub fn snapshot(&self) -> Arc<kdns_core::records::Snapshot> {
        self.store.snapshot()
    }

    /// Starts the plane with `workers` (built with [`Prepared::snapshot`]).
    pub fn start(self, s: &RecordsSettings, workers: Vec<WorkerHandle>) -> std::io::Result<Plane> {
        let mut store = self.store;
        store.set_workers(workers);
        run(s, Arc::new(store), self.stamp)
    }
}

/// Loads the state file and the records file.
pub fn prepare(s: &RecordsSettings) -> Prepared {
    let state = match &s.state_file {
        None => None,
        Some(p) => match state::load(p) {
            Ok(st) => st,
            Err(e) => {
                let aside = PathBuf::from(format!("{}.corrupt", p.display()));
                let moved = if p.is_file() && std::fs::rename(p, &aside).is_ok() {
                    format!(" (moved aside to {})", aside.display())
                } else {
                    String::new()
                };
                tracing::error!("{e}{moved}; starting with the records file alone");
                None
            }
        },
    };
    let (file, st) = match &s.file {
        Some(p) => first_load(p),
        None => (FileRecords::default(), None),
    };
    Prepared { store: Store::new(cfg_of(s), Vec::new(), file, state), stamp: st }
}

/// Starts the plane: loads the state file and the records file, sends the
/// first snapshot to every worker (and waits for them), starts the health
/// checks and the file watcher.
#[cfg(test)]
pub fn start(s: &RecordsSettings, workers: Vec<WorkerHandle>) -> std::io::Result<Plane> {
    prepare(s).start(s, workers)
}

/// Sends the first snapshot to every worker (and waits for them), starts
/// the health checks and the file watcher.
fn run(s: &RecordsSettings, store: Arc<Store>, st: Stamp) -> std::io::Result<Plane> {
    let c = store.publish_initial();
    let (domains, services, instances, records) = store.summary();
    tracing::info!(
        "local records: domains [{}], {services} services ({instances} instances), {records} records, serial {} (in use by {} of {} workers after {} ms)",
        domains.join(", "),
        c.serial,
        c.workers_acked,
        c.workers,
        c.propagated_ms
    );
    if domains.is_empty() {
        tracing::info!("no local domains (records.domains, --domain or the records file): every query goes to the backends");
    }
    store.start_checks()?;
    let file_versions = Arc::new(AtomicU64::new(0));
    let watcher = match &s.file {
        None => None,
        Some(p) => {
            let (tx, rx) = crossbeam_channel::bounded::<()>(0);
            let (store, path, versions) = (Arc::clone(&store), p.clone(), Arc::clone(&file_versions));
            let t = std::thread::Builder::new().name("kdns-records-watch".into()).spawn(move || {
                let mut last = st;
                loop {
                    match rx.recv_timeout(FILE_POLL) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = stamp(&path);
                    if now == last {
                        continue;
                    }
                    last = now;
                    reload(&store, &path, now.is_some());
                    versions.fetch_add(1, Ordering::Release);
                }
            })?;
            Some((tx, t))
        }
    };
    Ok(Plane { store, watcher, file_versions })
}

/// Serves a new version of the records file (`exists`: false when it is
/// gone, which keeps its records).
fn reload(store: &Store, path: &Path, exists: bool) {
    if !exists {
        tracing::warn!("records file {} is gone; keeping its records until it is back", path.display());
        return;
    }
    match file::read(path).and_then(|f| {
        let counts = (f.services.len(), f.records.len());
        store.set_file(f).map(|c| (c, counts)).map_err(|e| format!("records file {}: {e}", path.display()))
    }) {
        Ok((c, (ns, nr))) => tracing::info!(
            "records file {} reloaded: {ns} services, {nr} records, serial {} (in use by {} of {} workers after {} ms)",
            path.display(),
            c.serial,
            c.workers_acked,
            c.workers,
            c.propagated_ms
        ),
        Err(e) => tracing::error!("{e}; keeping the previous records"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kdns_core::wire::Rtype;
    use std::time::Instant;

    fn settings(dir: &Path) -> RecordsSettings {
        RecordsSettings {
            domains: vec!["kdns".into()],
            default_ttl: 10,
            file: Some(dir.join("records.toml")),
            state_file: Some(dir.join("records.json")),
            control_tcp: None,
            control_token: None,
        }
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The plane end to end: the file is watched, a bad version keeps the
    /// old records, a corrupt state file is set aside.
    #[test]
    fn the_file_is_watched_and_a_corrupt_state_is_set_aside() {
        let tmp = store::tests::temp_dir();
        let dir = tmp.path();
        let s = settings(dir);
        let f = s.file.clone().unwrap();
        std::fs::write(&f, "[[record]]\nname = \"db.kdns\"\ntype = \"A\"\ndata = \"10.5.0.1\"\n").unwrap();
        std::fs::write(s.state_file.as_ref().unwrap(), "{ not json").unwrap();
        assert!(check(&s).unwrap().contains("0 services, 1 records"));
        let (w, cur) = store::tests::fake_worker(0);
        let plane = start(&s, vec![w]).unwrap();
        let a = |name: &str| store::tests::lookup(&cur.lock().unwrap(), name, Rtype::A).1;
        assert_eq!(a("db.kdns"), ["10.5.0.1"], "served at once");
        assert!(dir.join("records.json.corrupt").exists(), "corrupt state set aside");
        assert!(!dir.join("records.json").exists());

        // A bad version: seen, refused, the old records stay.
        let serial = plane.store().view().serial;
        let seen = plane.file_versions();
        std::fs::write(&f, "[[record]]\nname = \"db.kdns\"\ntype = \"A\"\ndata = \"10.5.0.x\"\n").unwrap();
        assert!(check(&s).unwrap_err().contains("line 4"));
        wait_for("the bad version to be seen", || plane.file_versions() > seen);
        assert_eq!(plane.store().view().serial, serial, "refused: no new serial");
        assert_eq!(a("db.kdns"), ["10.5.0.1"]);
        // A good one, with a service.
        std::fs::write(
            &f,
            "[[record]]\nname = \"db.kdns\"\ntype = \"A\"\ndata = \"10.5.0.2\"\n[[service]]\nname = \"web\"\ninstances = [{ id = \"c1\", addrs = [\"10.0.0.1\"] }]\n",
        )
        .unwrap();
        wait_for("the reload", || a("db.kdns") == ["10.5.0.2"]);
        assert_eq!(a("web.kdns"), ["10.0.0.1"]);
        // Removed: seen, its records kept.
        let serial = plane.store().view().serial;
        let seen = plane.file_versions();
        std::fs::remove_file(&f).unwrap();
        wait_for("the removal to be seen", || plane.file_versions() > seen);
        assert_eq!(plane.store().view().serial, serial, "kept: no new serial");
        assert_eq!(a("web.kdns"), ["10.0.0.1"]);
        plane.shutdown();
    }
}
