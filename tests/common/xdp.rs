//! XDP facts of the lab: the program `ip -d link` shows on an interface,
//! and a private bpffs for the tests that pin ([`BpfFs`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::netns::Netns;
use super::temp_dir;
use super::{kdns_bin, Lab, Run};

/// The XDP program on `ifname` in `ns`: (its `prog/xdp ...` line, the
/// mode `ip -d link` shows: "xdp" native, "xdpgeneric", "xdpoffload"), or
/// `None` if there is none.
pub fn attached_program(ns: &Netns, ifname: &str) -> Option<(String, String)> {
    let r = ns.exec_ok(&["ip", "-d", "link", "show", "dev", ifname]);
    let prog = r.stdout.lines().map(str::trim).find(|l| l.starts_with("prog/xdp"))?.to_string();
    let first = r.stdout.lines().next().unwrap_or("");
    let mode = first.split_whitespace().find(|w| w.starts_with("xdp")).unwrap_or("?").to_string();
    Some((prog, mode))
}

/// The id in a `prog/xdp id N ...` line.
pub fn prog_id(prog_line: &str) -> Option<u32> {
    let mut it = prog_line.split_whitespace();
    it.find(|w| *w == "id")?;
    it.next()?.parse().ok()
}

/// The id of the XDP program on `ifname` in `ns`, if any.
pub fn attached_id(ns: &Netns, ifname: &str) -> Option<u32> {
    attached_program(ns, ifname).and_then(|(line, _)| prog_id(&line))
}

/// A bpffs of the test's own, mounted on a temp dir: kdns pins under
/// [`BpfFs::pin_dir`]. Dropped, it is unmounted (which drops every pin
/// left in it: a pinned link nobody holds any more detaches its program)
/// and the directory removed, also when the test fails. Drop it after the
/// lab (declare it first), so kdns is gone by then.
#[derive(Debug)]
pub struct BpfFs {
    dir: TempDir,
}

impl BpfFs {
    pub fn new() -> BpfFs {
        let dir = temp_dir("bpffs");
        let st = Command::new("mount").args(["-t", "bpf", "bpf"]).arg(dir.path()).status().expect("run mount");
        assert!(st.success(), "mount -t bpf bpf {} failed ({st})", dir.path().display());
        BpfFs { dir }
    }

    /// What kdns gets as `--pin-dir` (not created: kdns makes it).
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.path().join("kdns")
    }

    /// The names pinned in `<pin_dir>/<ifname>`, sorted (empty if absent).
    pub fn pins(&self, ifname: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.pin_dir().join(ifname))
            .map(|d| d.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// What kdns pins per interface, sorted as [`BpfFs::pins`] lists them.
pub const PINS: [&str; 6] = ["client_rate", "counters", "link", "listen_v4", "listen_v6", "xsks_map"];

/// `kdns --uninstall-xdp --pin-dir DIR` in the lab's server namespace.
pub fn uninstall(lab: &Lab, dir: &Path) -> Run {
    let bin = kdns_bin();
    lab.server.exec(
        &[bin.to_str().expect("utf-8"), "--uninstall-xdp", "--pin-dir", dir.to_str().expect("utf-8")],
        std::time::Duration::from_secs(20),
    )
}

/// Checks that the interface holds the program the running kdns's stats
/// name and that the pins are the expected ones; returns the program id.
pub fn assert_serving_program(lab: &Lab, fs: &BpfFs) -> u32 {
    let st = lab.stats();
    let prog = st["xdp"][0]["program"]["program_id"].as_u64().expect("a program id in the stats") as u32;
    let sif = &lab.link.server_if;
    assert_eq!(attached_id(&lab.server, sif), Some(prog), "{sif} does not hold the running kdns's program");
    assert_eq!(fs.pins(sif), PINS);
    prog
}

/// SIGTERM to the lab's kdns (exit 0 within 15 s), then `--uninstall-xdp`:
/// no program on the interface, no pin left.
pub fn stop_and_uninstall(lab: &mut Lab, fs: &BpfFs) {
    let st = lab.kdns.stop_with(libc::SIGTERM, std::time::Duration::from_secs(15));
    assert!(st.is_some_and(|s| s.success()), "kdns's exit after SIGTERM: {st:?}\n{}", lab.kdns.log());
    let r = uninstall(lab, &fs.pin_dir());
    assert!(r.ok(), "{}", r.both());
    assert!(attached_id(&lab.server, &lab.link.server_if).is_none(), "a program is left on {}", lab.link.server_if);
    assert!(!fs.pin_dir().exists(), "pins left under {}", fs.pin_dir().display());
}

/// kdns's own compiled XDP object, from the build of the binary under
/// test: `target/<profile>/build/kdns-*/out/kdns_xdp.o` (the newest, if
/// several builds are there).
pub fn kdns_xdp_object() -> PathBuf {
    let build = kdns_bin().parent().expect("target dir").join("build");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", build.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kdns-"))
        .map(|e| e.path().join("out").join("kdns_xdp.o"))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).unwrap_or_else(|| panic!("no kdns_xdp.o under {}/kdns-*/out: build kdns (cargo build)", build.display()))
}

/// Attaches kdns's XDP program with no listen address (it passes every
/// frame) to `ifname` in `ns`, in driver mode. A veth end receives the
/// frames its peer sends with XDP_TX only when it runs NAPI, which an XDP
/// program of its own gives it: the client end of a pair whose server end
/// answers from the in-kernel tier needs one. Goes with the namespace.
pub fn pass_all_xdp(ns: &Netns, ifname: &str) {
    let obj = kdns_xdp_object();
    let obj = obj.to_str().expect("utf-8 path");
    ns.exec_ok(&["ip", "link", "set", "dev", ifname, "xdpdrv", "obj", obj, "sec", "xdp"]);
}

/// `(queue, counters)` of every queue of every interface in a stats
/// document's `xdp` list.
pub fn xdp_queues(st: &serde_json::Value) -> Vec<(u64, serde_json::Value)> {
    st["xdp"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|i| i["queues"].as_array().cloned().unwrap_or_default())
        .map(|q| (q["queue"].as_u64().unwrap_or(u64::MAX), q))
        .collect()
}

/// Counter `key` of queue `queue` (summed over interfaces; 0 if missing).
pub fn xdp_queue(st: &serde_json::Value, queue: u64, key: &str) -> u64 {
    xdp_queues(st).iter().filter(|(n, _)| *n == queue).map(|(_, q)| q[key].as_u64().unwrap_or(0)).sum()
}

/// Counter `key` of the XDP program summed over every interface and queue
/// (panics if a queue lacks it).
pub fn xdp_total(st: &serde_json::Value, key: &str) -> u64 {
    xdp_queues(st).iter().map(|(_, q)| q[key].as_u64().unwrap_or_else(|| panic!("xdp queue counter {key} missing in {q:#}"))).sum()
}
