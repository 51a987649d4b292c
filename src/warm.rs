//! Warm restart: the workers' caches written to a file at a clean stop
//! and loaded at start, and the same from a live process for a handover.
//!
//! The caches stay on their workers: an export or an import is a control
//! message ([`Control::ExportCache`], [`Control::ImportCache`]) the worker
//! runs between two packets, on its own engine. The file is kdns-core's
//! dump format (`kdns_core::cache::dump`: versioned, every record
//! checksummed); lifetimes in it are relative to a wall-clock stamp read
//! before any worker exported, so an entry can only look older than it
//! is. Each UDP worker has its own cache and the kernel's reuseport hash
//! may send a client to any of them, so every worker loads the union of
//! all the exports (up to its own capacity).

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kdns_core::cache::dump::{self, DumpError, Export};
use kdns_core::cache::{Cache, ImportReport};
use kdns_core::engine::WarmStart;
use kdns_core::Timestamp;

use crate::handle::{Control, WorkerHandle};

/// How long the workers get to answer an export or an import.
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// The wall clock, ns since the Unix epoch (0 before it).
pub fn wall_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A worker's export at its clock's `now`, relative to the stamp
/// `written` (read earlier, on the wall clock).
pub fn export(cache: &Cache, now: Timestamp, written: u64) -> Export {
    cache.export(now, Duration::from_nanos(wall_now().saturating_sub(written)))
}

/// A dump of every worker's live cache, taken while they serve (for a
/// handover). A worker that does not answer within a few seconds is left
/// out (logged).
pub fn snapshot(handles: &[WorkerHandle]) -> Vec<u8> {
    let written = wall_now();
    let (tx, rx) = crossbeam_channel::unbounded();
    let asked = handles.iter().filter(|h| h.send(Control::ExportCache { written, reply: tx.clone() })).count();
    drop(tx);
    let deadline = Instant::now() + REPLY_WAIT;
    let mut parts = Vec::with_capacity(asked);
    while parts.len() < asked {
        match rx.recv_deadline(deadline) {
            Ok((_, part)) => parts.push(part),
            Err(_) => {
                tracing::warn!("cache: {} of {} workers did not export their cache in time", asked - parts.len(), asked);
                break;
            }
        }
    }
    dump::encode(written, &parts)
}

/// What [`load`] did, summed over the workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Workers that loaded the dump.
    pub workers: usize,
    /// Records the dump holds.
    pub records: u64,
    /// Entries loaded, in the worker that took the most (each worker
    /// loads the same union; a smaller cache takes fewer).
    pub loaded: u64,
    /// Records that had expired (past their stale window) before the load.
    pub expired: u64,
    /// Records damaged, cut short or not cacheable here.
    pub unreadable: u64,
    /// How long before the load the dump was written.
    pub age: Duration,
}

/// Loads the dump `bytes` into every worker's cache. The header is
/// checked first: a foreign, damaged or future dump is an error and no
/// worker sees it.
pub fn load(handles: &[WorkerHandle], bytes: Vec<u8>) -> Result<LoadReport, DumpError> {
    let header = dump::Header::parse(&bytes)?;
    header.age(wall_now())?;
    let dump: Arc<[u8]> = bytes.into();
    let (tx, rx) = crossbeam_channel::unbounded();
    let asked = handles.iter().filter(|h| h.send(Control::ImportCache { dump: Arc::clone(&dump), reply: tx.clone() })).count();
    drop(tx);
    let deadline = Instant::now() + REPLY_WAIT;
    let mut report = LoadReport { records: header.records.into(), ..LoadReport::default() };
    for _ in 0..asked {
        match rx.recv_deadline(deadline) {
            Ok((_, Ok(r))) => add(&mut report, &r),
            Ok((worker, Err(e))) => tracing::warn!(worker, "cache: the dump was not loaded: {e}"),
            Err(_) => {
                tracing::warn!("cache: {} of {asked} workers did not load the dump in time", asked - report.workers);
                break;
            }
        }
    }
    Ok(report)
}

fn add(report: &mut LoadReport, r: &ImportReport) {
    report.workers += 1;
    report.loaded = report.loaded.max(r.loaded);
    report.expired = report.expired.max(r.expired);
    report.unreadable = report.unreadable.max(r.damaged + r.rejected);
    report.age = report.age.max(r.age);
}

/// At start: reads and checks `path`, for every worker's engine to load
/// as it is built (`EngineConfig::warm`), before its first query. A missing
/// file is normal; an unreadable, foreign or damaged one is a warning, and
/// kdns starts cold.
pub fn read_file(path: &Path) -> Option<WarmStart> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::debug!("cache: no dump at {} (starting cold)", path.display());
            return None;
        }
        Err(e) => {
            tracing::warn!("cache: cannot read {}: {e} (starting cold)", path.display());
            return None;
        }
    };
    checked(bytes).map_err(|e| tracing::warn!("cache: {} not loaded: {e} (starting cold)", path.display())).ok()
}

/// `bytes` as a warm start, if its header is sound.
pub fn checked(bytes: Vec<u8>) -> Result<WarmStart, DumpError> {
    let wall_now = wall_now();
    dump::Header::parse(&bytes)?.age(wall_now)?;
    Ok(WarmStart { dump: bytes.into(), wall_now })
}

/// Logs what the workers loaded at their start (`what`: where from).
pub fn log_loaded(handles: &[WorkerHandle], what: &str) {
    let loaded = handles.iter().map(|h| h.cache.loaded.get()).max().unwrap_or(0);
    let expired = handles.iter().map(|h| h.cache.load_expired.get()).max().unwrap_or(0);
    tracing::info!(workers = handles.len(), "cache: {loaded} entries loaded from {what} ({expired} expired)");
}

/// Before the stop: asks every worker to leave its cache's export when it
/// stops taking queries (when `on`).
pub fn want_at_stop(handles: &[WorkerHandle], on: bool) {
    if on {
        let written = wall_now();
        for h in handles {
            h.at_stop.want(written);
        }
    }
}

/// After the workers stopped: writes what they left to `path` atomically
/// (mode 0600). Failures are logged: a clean stop stays clean.
pub fn dump_at_stop(handles: &[WorkerHandle], path: &Path) {
    let Some(written) = handles.iter().find_map(|h| h.at_stop.wanted()) else { return };
    let t = Instant::now();
    let mut exports = Duration::ZERO;
    let mut parts = Vec::with_capacity(handles.len());
    for h in handles {
        match h.at_stop.take() {
            Some((part, took)) => {
                exports = exports.max(took);
                parts.push(part);
            }
            None => tracing::warn!(worker = h.id, "cache: the worker left no export (it did not stop cleanly)"),
        }
    }
    let entries: u64 = parts.iter().map(|p| u64::from(p.records)).sum();
    let bytes = dump::encode(written, &parts);
    match crate::records::state::write_atomic(path, &bytes, 0o600) {
        Ok(()) => tracing::info!(
            bytes = bytes.len(),
            "cache: {entries} entries dumped to {} in {} ms",
            path.display(),
            (exports + t.elapsed()).as_millis()
        ),
        Err(e) => tracing::warn!("cache: cannot write {}: {e} (the next start will be cold)", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::fake::FakeWorker;
    use crate::handle::WorkerKind;
    use kdns_core::cache::CacheConfig;
    use kdns_core::wire::{encode_name, flags, write_query, Class, Message, Rtype};

    /// Caches a one-record answer (TTL 300) for `name` at `now`.
    fn put(cache: &mut Cache, now: Timestamp, name: &str) {
        let mut qname = [0u8; 256];
        let n = encode_name(name, &mut qname).unwrap();
        let mut ans = vec![0u8; 512];
        let len = write_query(&mut ans, 0, flags::RD, &qname[..n], Rtype::A, Class::IN, None).unwrap();
        ans.truncate(len);
        ans[2..4].copy_from_slice(&(flags::QR | flags::RD | flags::RA).to_be_bytes());
        ans[7] = 1;
        ans.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 44, 0, 4, 192, 0, 2, 1]);
        let key = cache.key(&qname[..n], Rtype::A, Class::IN, Default::default()).unwrap();
        cache.insert(now, &key, &ans, &Message::parse(&ans).unwrap()).unwrap();
    }

    /// A worker whose cache answers the warm messages as a driver would.
    fn worker(id: usize, names: &[&str]) -> WorkerHandle {
        let mut cache = Cache::new(CacheConfig::for_entries(64), id as u64);
        for n in names {
            put(&mut cache, Timestamp::from_secs(1), n);
        }
        FakeWorker::new(id, WorkerKind::Udp, &[]).serve(move |c| match c {
            Control::ExportCache { written, reply } => {
                let _ = reply.send((id, export(&cache, Timestamp::from_secs(2), written)));
            }
            Control::ImportCache { dump, reply } => {
                let _ = reply.send((id, cache.import(Timestamp::from_secs(2), wall_now(), &dump)));
            }
            _ => {}
        })
    }

    #[test]
    fn a_snapshot_of_all_workers_loads_as_their_union_into_each() {
        let from = [worker(0, &["a.example", "b.example"]), worker(1, &["b.example", "c.example"])];
        let bytes = snapshot(&from);
        assert_eq!(dump::Header::parse(&bytes).unwrap().records, 4);
        let to = [worker(0, &[]), worker(1, &["a.example"])];
        let r = load(&to, bytes).unwrap();
        assert_eq!((r.workers, r.records, r.loaded, r.expired, r.unreadable), (2, 4, 3, 0, 0));
        // Each worker now holds the three names.
        let again = snapshot(&to);
        assert_eq!(dump::Header::parse(&again).unwrap().records, 6);
    }

    #[test]
    fn a_bad_header_reaches_no_worker() {
        let to = [worker(0, &[])];
        assert_eq!(load(&to, b"KDNSCDMP but not really".to_vec()), Err(DumpError::Truncated));
        let mut future = dump::encode(wall_now() + 3_600_000_000_000, &[]);
        assert!(matches!(load(&to, std::mem::take(&mut future)), Err(DumpError::FromTheFuture(_))));
        assert_eq!(dump::Header::parse(&snapshot(&to)).unwrap().records, 0);
    }

    #[test]
    fn the_stop_export_is_written_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/cache.dump");
        let hs = [worker(0, &[]), worker(1, &[])];
        // Nothing asked: nothing written.
        dump_at_stop(&hs, &path);
        assert!(!path.exists());
        want_at_stop(&hs, true);
        let mut cache = Cache::new(CacheConfig::for_entries(8), 1);
        put(&mut cache, Timestamp::from_secs(0), "x.example");
        hs[0].at_stop.put(export(&cache, Timestamp::from_secs(0), hs[0].at_stop.wanted().unwrap()), Duration::ZERO);
        dump_at_stop(&hs, &path);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(dump::Header::parse(&bytes).unwrap().records, 1);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
