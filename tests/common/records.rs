//! Harness for the local-records tests (`tests/records.rs`): a [`Lab`]
//! whose kdns serves a records file (socket or AF_XDP mode), and TCP
//! listeners for the health checks.

use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::*;

/// How kdns reads queries in a records test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    /// `--io udp`: SO_REUSEPORT sockets.
    Udp,
    /// `--io xdp`: AF_XDP sockets only (no fallback), as `tests/xdp.rs`.
    Xdp,
}

impl Io {
    pub fn args(self) -> Vec<String> {
        vec!["--io".into(), self.name().into()]
    }

    pub fn name(self) -> &'static str {
        match self {
            Io::Udp => "udp",
            Io::Xdp => "xdp",
        }
    }

    /// The `workers[].kind` of the workers that answer UDP queries.
    pub fn worker_kind(self) -> &'static str {
        self.name()
    }
}

/// The local domain given with `--domain` (the records file adds
/// `svc.cluster.local`).
pub const DOMAIN: &str = "kdns";

/// A [`Lab`] whose kdns serves local records: `--records-file`,
/// `--domain kdns` and `--state-file` in a temp dir of its own that
/// outlives restarts of kdns.
#[derive(Debug)]
pub struct RecordsLab {
    /// Dropped first: kdns, Unbound, namespaces.
    pub lab: Lab,
    pub io: Io,
    pub records_file: PathBuf,
    pub state_file: PathBuf,
    /// Holds the records file, the state file and anything else the test
    /// writes; removed last.
    pub dir: TempDir,
}

impl RecordsLab {
    /// Writes `records` (TOML) to the records file, starts the lab with
    /// `--io <io>` and `extra` kdns arguments, and for AF_XDP checks that
    /// kdns's program is attached in driver mode.
    pub fn start(io: Io, records: &str, extra: &[String]) -> RecordsLab {
        let dir = temp_dir("records");
        let records_file = dir.path().join("records.toml");
        let state_file = dir.path().join("state.json");
        fs::write(&records_file, records).unwrap_or_else(|e| panic!("cannot write {}: {e}", records_file.display()));
        let mut args = io.args();
        for (k, v) in [
            ("--records-file", records_file.display().to_string()),
            ("--domain", DOMAIN.to_string()),
            ("--state-file", state_file.display().to_string()),
        ] {
            args.push(k.into());
            args.push(v);
        }
        args.extend(extra.iter().cloned());
        let lab = Lab::start(LabOpts { extra: args, ..LabOpts::default() });
        let rl = RecordsLab { lab, io, records_file, state_file, dir };
        rl.check_io();
        rl
    }

    /// For `--io xdp`: the log says AF_XDP runs on the server's end of the
    /// veth pair in driver mode and the stats list AF_XDP workers.
    pub fn check_io(&self) {
        if self.io != Io::Xdp {
            return;
        }
        let log = self.lab.kdns.plain_log();
        let ifname = &self.lab.link.server_if;
        let line = log
            .lines()
            .find(|l| l.contains(&format!("AF_XDP on {ifname}:")))
            .unwrap_or_else(|| panic!("kdns --io xdp: no 'AF_XDP on {ifname}:' line in the log:\n{log}"));
        assert!(line.contains("driver mode"), "the XDP program was not attached in driver mode: {line}");
        let st = self.lab.stats();
        assert!(!workers_of_kind(&st, "xdp").is_empty(), "kdns --io xdp runs no AF_XDP worker:\n{:#}", st["workers"]);
    }

    /// `@10.53.X.1`
    pub fn at(&self) -> String {
        self.lab.at4()
    }

    /// One dig (`+time=2 +tries=1`) from the client namespace.
    pub fn dig(&self, args: &[&str]) -> Answer {
        let at = self.at();
        let mut a = vec![at.as_str()];
        a.extend_from_slice(args);
        dig(&self.lab.client, &a)
    }

    /// `kdns-ctl --socket <socket> <args>`.
    pub fn ctl(&self, args: &[&str]) -> Run {
        ctl(&self.lab.kdns.socket, args)
    }

    /// `kdns-ctl <args> --json`, parsed; panics on failure.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        ctl_json(&self.lab.kdns.socket, args)
    }

    /// Replaces the records file atomically (a temp file renamed over it,
    /// as editors do), so kdns never reads a half-written file.
    pub fn write_records(&self, text: &str) {
        let tmp = self.dir.path().join("records.toml.tmp");
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
        fs::rename(&tmp, &self.records_file).unwrap_or_else(|e| panic!("cannot rename over {}: {e}", self.records_file.display()));
    }

    /// Stops kdns (SIGTERM, exit within 5 s) and starts it again with the
    /// same arguments (same records and state files).
    pub fn restart_kdns(&mut self) {
        let st = self.lab.kdns.stop_with(libc::SIGTERM, Duration::from_secs(5));
        assert!(st.is_some_and(|s| s.success()), "kdns did not stop cleanly on SIGTERM: {st:?}\n{}", self.lab.kdns.log());
        self.lab.respawn_kdns();
        self.check_io();
    }
}

/// Whether a TCP connect to `addr` from inside `ns` is accepted.
pub fn tcp_accepts(ns: &Netns, addr: SocketAddr) -> bool {
    ns.within(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
}

/// A real TCP listener on `addr` inside `ns` (`python3 -m http.server`
/// bound to it), once it accepts connections (10 s at most).
pub fn tcp_listener(ns: &Netns, addr: SocketAddr) -> Listener {
    let py = find_tool("python3").unwrap_or_else(|| panic!("python3 not found: the health-check tests listen with python3 -m http.server"));
    let dir = temp_dir("listener");
    let mut cmd =
        ns.command(&[py.to_str().expect("utf-8 path"), "-m", "http.server", &addr.port().to_string(), "--bind", &addr.ip().to_string()]);
    cmd.current_dir(dir.path());
    let proc = Proc::spawn(cmd, &dir.path().join("out.log"));
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(50), || tcp_accepts(ns, addr).then_some(()));
    assert!(ok.is_some(), "the TCP listener on {addr} ({}) did not accept connections within 10 s:\n{}", proc.what, proc.log());
    Listener { proc, _dir: dir }
}

/// A TCP listener of [`tcp_listener`]: killed on drop.
#[derive(Debug)]
pub struct Listener {
    pub proc: Proc,
    _dir: TempDir,
}
