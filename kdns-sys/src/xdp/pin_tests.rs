//! Tests of pinning (root, the veth rig of `tests.rs`): the program
//! outlives a killed process and fails open, the next loader adopts the
//! link, stale or foreign pins are replaced, `uninstall` removes all.
//! Each test mounts its own bpffs in a fresh temporary directory and
//! unmounts it when done (also on failure), which drops whatever is
//! pinned there.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray};

use super::tests::{query, received, require_root, totals, Child, Logs, Rig, S_IF, S_V4};
use super::*;

/// A bpffs mounted on a temporary directory; unmounted and removed on drop.
pub(super) struct BpfFs(PathBuf);

impl BpfFs {
    pub(super) fn new() -> BpfFs {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!("kdns-bpffs-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&path).unwrap();
        let fs = BpfFs(path);
        let ok = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(&fs.0).status().unwrap().success();
        assert!(ok, "mount -t bpf bpf {} failed", fs.0.display());
        fs
    }

    pub(super) fn pin_dir(&self) -> PathBuf {
        self.0.join("kdns")
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The counters of the program pinned in `dir`, read through the pin.
fn pinned_counters(dir: &Path) -> CounterReader {
    let map = MapData::from_pin(dir.join("counters")).unwrap();
    let map: PerCpuArray<MapData, RawCounters> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(map)).unwrap();
    CounterReader { inner: Arc::new(CounterInner { map, queues: 2 }) }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_pinned_program_outlives_sigkill_fails_open_and_is_adopted() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let fs = BpfFs::new();
    let pin_dir = fs.pin_dir();
    let if_dir = pin_dir.join(S_IF);

    let (child, old_id, link_id) = Child::attach(&rig, Some(&pin_dir));
    assert_eq!(rig.attached(), Some((old_id, false)));
    let mut pins: Vec<String> =
        std::fs::read_dir(&if_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    pins.sort();
    assert_eq!(pins, ["client_rate", "counters", "link", "listen_v4", "listen_v6", "xsks_map"]);

    // While the child lives, its (unbound) AF_XDP sockets take the queries:
    // the kernel's socket sees nothing.
    let srv = rig.server_udp(SocketAddr::new(IpAddr::V4(S_V4), 53));
    let cli = rig.client_udp(false);
    assert!(rig.ping(IpAddr::V4(S_V4)), "no ping reply");
    cli.send_to(&query(30), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv), None, "the child's AF_XDP socket should have taken the query");

    child.kill();
    // The program stays; the kernel emptied the slots of the dead sockets,
    // so queries now pass to the kernel's socket (fail-open).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rig.attached(), Some((old_id, false)), "the pinned program was detached by the kill");
    let reader = pinned_counters(&if_dir);
    let before = totals(&reader);
    let mut got = None;
    wait_for("a query to reach the kernel's UDP socket", || {
        cli.send_to(&query(31), (S_V4, 53)).unwrap();
        got = received(&srv);
        got.is_some()
    });
    assert_eq!(got, Some(31));
    let after = totals(&reader);
    assert!(after.passed > before.passed, "{before:?} -> {after:?}");
    assert_eq!(after.redirected, before.redirected, "an empty xsks_map slot redirected: {before:?} -> {after:?}");

    // A new loader adopts the link: same link, new program, reused maps.
    let (mut prog, logs) = rig.in_server(|| {
        let (logs, _guard) = Logs::capture();
        let mut prog = XdpProgram::load_pinned(S_IF, &[IpAddr::V4(S_V4)], 53, None, Some(&pin_dir), None).unwrap();
        assert_eq!(prog.attach().unwrap(), AttachMode::Driver);
        (prog, logs.text())
    });
    eprintln!("{logs}");
    assert!(!logs.contains("replacing"), "a pinned map of the same object was not reused: {logs}");
    assert!(logs.contains(&format!("adopted the pinned XDP link {link_id}")), "{logs}");
    assert_ne!(prog.program_id(), old_id);
    assert_eq!(prog.adopted_from(), Some(old_id));
    assert!(prog.attached_at().is_some());
    assert_eq!(prog.link_info().map(|l| (l.id, l.prog_id)), Some((link_id, prog.program_id())), "not the same link");
    assert_eq!(rig.attached(), Some((prog.program_id(), false)));
    assert_eq!(prog.pinned_in(), Some(if_dir.as_path()));
    // The counters carried over: the map is the pinned one.
    assert!(totals(&prog.counters()).passed >= after.passed);
    // Its own socket takes the queries again.
    let xsk = super::tests::unbound_xsk();
    for q in 0..2 {
        prog.register_socket(q, std::os::fd::AsRawFd::as_raw_fd(&xsk)).unwrap();
    }
    cli.send_to(&query(32), (S_V4, 53)).unwrap();
    assert_eq!(received(&srv), None, "the adopted program did not redirect to the new socket");

    // Dropped, it stays (pinned); uninstall removes it all.
    let new_id = prog.program_id();
    drop(prog);
    drop(xsk);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rig.attached(), Some((new_id, false)));
    let removed = pin::uninstall(&pin_dir, None).unwrap();
    assert_eq!(removed.len(), 1, "{removed:?}");
    assert_eq!(removed[0].dir, if_dir);
    assert_eq!(removed[0].link.map(|l| l.prog_id), Some(new_id));
    assert_eq!(removed[0].pins.len(), 6, "{removed:?}");
    assert!(removed[0].holders.is_empty(), "{removed:?}");
    rig.wait_detached();
    assert!(!pin_dir.exists(), "uninstall left {}", pin_dir.display());
    assert!(pin::uninstall(&pin_dir, None).unwrap().is_empty(), "a second uninstall finds nothing");
}

#[test]
fn stale_or_foreign_pins_are_reported_and_replaced() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let fs = BpfFs::new();
    let pin_dir = fs.pin_dir();
    let if_dir = pin_dir.join(S_IF);
    let load = || {
        rig.in_server(|| {
            let (logs, _guard) = Logs::capture();
            let mut prog = XdpProgram::load_pinned(S_IF, &[IpAddr::V4(S_V4)], 53, None, Some(&pin_dir), None).unwrap();
            prog.attach().unwrap();
            (prog, logs.text())
        })
    };

    // 1. A kdns link of another interface (a second veth pair in the
    // server namespace, gone with it), pinned under our name.
    rig.server.ip(&["link", "add", "kx-d", "type", "veth", "peer", "name", "kx-e"]).unwrap();
    rig.server.ip(&["link", "set", "kx-d", "up"]).unwrap();
    let other = rig.in_server(|| {
        let mut p = XdpProgram::load_pinned("kx-d", &[IpAddr::V4(S_V4)], 53, None, Some(&pin_dir), None).unwrap();
        p.attach().unwrap();
        p.ifindex()
    });
    std::fs::rename(pin_dir.join("kx-d"), &if_dir).unwrap();
    let (prog, logs) = load();
    eprintln!("{logs}");
    assert!(logs.contains(&format!("belongs to interface index {other}, not {}", prog.ifindex())), "{logs}");
    assert!(logs.contains("not adopted"), "{logs}");
    assert_eq!(prog.adopted_from(), None);
    assert_eq!(rig.attached(), Some((prog.program_id(), false)));
    wait_for("kx-d's unpinned program to go", || !rig.server.ip(&["link", "show", "dev", "kx-d"]).unwrap().contains("xdp"));
    let id = prog.program_id();
    drop(prog);

    // 2. A pinned map of the wrong shape: replaced, the link still adopted.
    std::fs::remove_file(if_dir.join("listen_v6")).unwrap();
    let v4 = pin::obj_get(&if_dir.join("listen_v4")).unwrap();
    pin::obj_pin(v4.as_fd(), &if_dir.join("listen_v6")).unwrap();
    let (prog, logs) = load();
    eprintln!("{logs}");
    assert!(logs.contains("listen_v6: a Some(Hash) map, key 4 B"), "{logs}");
    assert_eq!(prog.adopted_from(), Some(id));
    let id = prog.program_id();
    drop(prog);

    // 3. Something that is not a link at the link's place.
    std::fs::remove_file(if_dir.join("link")).unwrap();
    wait_for("the unpinned link to detach", || rig.attached().is_none());
    pin::obj_pin(v4.as_fd(), &if_dir.join("link")).unwrap();
    let (prog, logs) = load();
    eprintln!("{logs}");
    assert!(logs.contains("not a bpf_link"), "{logs}");
    assert_eq!(prog.adopted_from(), None);
    assert_ne!(prog.program_id(), id);
    assert_eq!(rig.attached(), Some((prog.program_id(), false)));

    // 4. Uninstall while the link is held: reported, detached once dropped.
    let removed = pin::uninstall(&pin_dir, Some(S_IF)).unwrap();
    assert_eq!(removed[0].holders.first().map(|h| h.0), Some(std::process::id()), "{removed:?}");
    assert_eq!(rig.attached(), Some((prog.program_id(), false)));
    drop(prog);
    rig.wait_detached();
}

#[test]
fn a_pin_dir_off_bpffs_is_an_error_naming_it() {
    require_root();
    let dir = std::env::temp_dir().join(format!("kdns-not-bpffs-{}", std::process::id()));
    let err = XdpProgram::load_pinned("lo", &[IpAddr::V4(S_V4)], 53, None, Some(&dir), None).unwrap_err();
    assert!(matches!(err, XdpError::NotBpffs { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("xdp.pin_dir") && text.contains(&dir.display().to_string()) && text.contains("mount -t bpf"), "{text}");
    assert!(!dir.exists());
}

#[test]
fn the_pinned_map_table_matches_the_object() {
    require_root();
    let fs = BpfFs::new();
    let pin_dir = fs.pin_dir();
    let rate = ClientRate { qps: 10, burst: 5, prefix_v4: 24, prefix_v6: 56, entries: 777 };
    let prog = XdpProgram::load_pinned("lo", &[IpAddr::V4(S_V4)], 53, Some(&rate), Some(&pin_dir), None).unwrap();
    for (name, ty, key, value, max) in pin::pinned_maps(rate.entries) {
        let info = aya::maps::MapInfo::from_pin(pin_dir.join("lo").join(name)).unwrap();
        let got = (info.map_type().ok(), info.key_size(), info.value_size(), info.max_entries());
        assert_eq!(got, (Some(ty), key, value, max), "{name}");
    }
    // Not attached: nothing pinned at the link's place.
    assert!(!pin_dir.join("lo").join(pin::LINK).exists());
    drop(prog);
}
