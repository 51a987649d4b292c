//! The state file: what was changed at run time through the API (services,
//! instances, records, forced health), as JSON, replaced atomically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use kdns_api::records::{self as defs, InstanceDef, RecordDef, ServiceDef};

/// Version written in the file.
pub const VERSION: u32 = 1;

/// An instance added at run time to a service the records file defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraInstance {
    /// The service (lower-case).
    pub service: String,
    /// The instance.
    #[serde(flatten)]
    pub instance: InstanceDef,
}

/// A health state forced through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forced {
    /// The service (lower-case).
    pub service: String,
    /// The instance id.
    pub id: String,
    /// `true`: forced healthy; `false`: forced unhealthy.
    pub healthy: bool,
}

/// Everything changed at run time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// Services defined at run time (with their instances); a runtime
    /// service replaces a file service of the same name.
    #[serde(default)]
    pub services: Vec<ServiceDef>,
    /// Instances added at run time to services the file defines, oldest first.
    #[serde(default)]
    pub instances: Vec<ExtraInstance>,
    /// Static records added at run time.
    #[serde(default)]
    pub records: Vec<RecordDef>,
    /// Forced health states.
    #[serde(default)]
    pub health: Vec<Forced>,
}

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// [`VERSION`].
    pub version: u32,
    /// The serial of the last snapshot built from this state.
    #[serde(default)]
    pub serial: u32,
    /// The runtime changes.
    #[serde(flatten)]
    pub runtime: Runtime,
}

/// Checks every entry of a loaded state (the error names it).
fn validate(rt: &Runtime) -> Result<(), String> {
    for (i, s) in rt.services.iter().enumerate() {
        defs::service(s).map_err(|e| format!("services[{i}] '{}': {e}", s.name))?;
    }
    for (i, x) in rt.instances.iter().enumerate() {
        defs::instance_addrs(&x.instance).map_err(|e| format!("instances[{i}] '{}': {e}", x.instance.id))?;
    }
    for (i, r) in rt.records.iter().enumerate() {
        defs::record(r).map_err(|e| format!("records[{i}] '{}': {e}", r.name))?;
    }
    Ok(())
}

/// Loads `path`: `Ok(None)` if it does not exist; an error says exactly
/// what is wrong (unreadable, JSON error with line and column, bad entry).
pub fn load(path: &Path) -> Result<Option<State>, String> {
    let ctx = |m: String| format!("records state file {}: {m}", path.display());
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ctx(format!("cannot read: {e}"))),
    };
    let st: State = serde_json::from_slice(&bytes).map_err(|e| ctx(format!("not a valid state file: {e}")))?;
    if st.version != VERSION {
        return Err(ctx(format!("version {} (this kdns reads version {VERSION})", st.version)));
    }
    validate(&st.runtime).map_err(ctx)?;
    Ok(Some(st))
}

/// Writes `st` to `path` atomically (see [`write_atomic`]).
pub fn save(path: &Path, st: &State) -> io::Result<()> {
    let mut body = serde_json::to_vec_pretty(st).map_err(io::Error::other)?;
    body.push(b'\n');
    write_atomic(path, &body, 0o644)
}

/// Writes `body` to `path` atomically, with permissions `mode`: a
/// temporary file in the same directory, fsync, rename over `path`, fsync
/// of the directory. Readers see the old file or the new one, never a mix;
/// a crash leaves one of them (and at worst a stale temporary file,
/// replaced next time).
pub fn write_atomic(path: &Path, body: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path.file_name().ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "the path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let write = || -> io::Result<()> {
        // A stale temporary file would keep its own permissions.
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        f.write_all(body)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    };
    write().inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::defs::{ModeName, RecordData};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    fn temp_dir() -> std::path::PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!("kdns-state-test-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn sample(serial: u32) -> State {
        State {
            version: VERSION,
            serial,
            runtime: Runtime {
                services: vec![ServiceDef {
                    name: "api".into(),
                    mode: ModeName::RandomOne,
                    ttl: Some(3),
                    ports: vec![],
                    check: None,
                    instances: vec![InstanceDef { id: "a1".into(), addrs: vec!["10.1.0.1".into()] }],
                }],
                instances: vec![ExtraInstance {
                    service: "web".into(),
                    instance: InstanceDef { id: "c9".into(), addrs: vec!["10.0.0.9".into()] },
                }],
                records: vec![RecordDef { name: "db.kdns".into(), rtype: "A".into(), data: RecordData::One("10.5.0.1".into()), ttl: None }],
                health: vec![Forced { service: "web".into(), id: "c1".into(), healthy: false }],
            },
        }
    }

    #[test]
    fn round_trip_in_a_new_directory() {
        let dir = temp_dir();
        let p = dir.join("sub/records.json");
        assert_eq!(load(&p).unwrap(), None, "a missing file is fine");
        save(&p, &sample(7)).unwrap();
        assert_eq!(load(&p).unwrap(), Some(sample(7)));
        save(&p, &sample(8)).unwrap();
        assert_eq!(load(&p).unwrap().unwrap().serial, 8);
        // No temporary file left behind.
        let names: Vec<String> =
            fs::read_dir(p.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names, vec!["records.json"]);
        let text = fs::read_to_string(&p).unwrap();
        assert!(text.contains("\"version\": 1") && text.ends_with("}\n"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn corrupt_files_are_reported_exactly() {
        let dir = temp_dir();
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("records.json");
        let cases: &[(&str, &str)] = &[
            ("{\"version\": 1, \"services\": [", "line 1 column"),
            ("", "EOF"),
            ("{\"version\": 2}", "version 2"),
            ("{\"version\": 1, \"records\": [{\"name\": \"x.kdns\", \"type\": \"A\", \"data\": \"nope\"}]}", "records[0] 'x.kdns': data"),
            (
                "{\"version\": 1, \"services\": [{\"name\": \"web\", \"instances\": [{\"id\": \"c1\", \"addrs\": [\"x\"]}]}]}",
                "services[0] 'web': instances[0].addrs[0]",
            ),
        ];
        for (text, want) in cases {
            fs::write(&p, text).unwrap();
            let e = load(&p).unwrap_err();
            assert!(e.starts_with(&format!("records state file {}:", p.display())), "{e}");
            assert!(e.contains(want), "{text:?}: {e}");
        }
        // A directory where the file should be: unreadable.
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        assert!(load(&p).unwrap_err().contains("cannot read"));
        // And saving over it fails without leaving a temporary file.
        assert!(save(&p, &sample(1)).is_err());
        assert!(!dir.join(".records.json.tmp").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    /// A reader never sees a partly written file while a writer replaces it.
    #[test]
    fn replacement_is_atomic_for_readers() {
        let dir = temp_dir();
        let p = dir.join("records.json");
        save(&p, &sample(0)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (p, done) = (p.clone(), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) {
                    let st = load(&p).expect("always a whole file").expect("always present");
                    assert_eq!(st.runtime, sample(0).runtime);
                    reads += 1;
                }
                reads
            })
        };
        for serial in 1..200 {
            save(&p, &sample(serial)).unwrap();
        }
        done.store(true, Ordering::SeqCst);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(load(&p).unwrap().unwrap().serial, 199);
        let _ = fs::remove_dir_all(&dir);
    }
}
