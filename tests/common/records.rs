//! Harness for the local-records tests (`tests/records.rs`): a [`Lab`]
//! whose kdns serves a records file (socket or AF_XDP mode), several
//! queries in one dig run, background processes (TCP listeners for the
//! health checks), and small helpers on answers.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};

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
        let dir = TempDir::new("records");
        let records_file = dir.join("records.toml");
        let state_file = dir.join("state.json");
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
        let tmp = self.dir.join("records.toml.tmp");
        fs::write(&tmp, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", tmp.display()));
        fs::rename(&tmp, &self.records_file).unwrap_or_else(|e| panic!("cannot rename over {}: {e}", self.records_file.display()));
    }

    /// Stops kdns (SIGTERM, exit within 5 s) and starts it again with the
    /// same arguments (same records and state files).
    pub fn restart_kdns(&mut self) {
        let st = self.lab.kdns.stop_with(libc::SIGTERM, Duration::from_secs(5));
        assert!(st.is_some_and(|(s, _)| s.success()), "kdns did not stop cleanly on SIGTERM: {st:?}\n{}", self.lab.kdns.log());
        self.lab.respawn_kdns();
        self.check_io();
    }
}

/// Runs one `dig +time=2 +tries=1 <args> name1 type1 name2 type2 ...` in
/// `ns` (dig asks them one after the other, each from a new source port)
/// and parses each answer. Panics unless every query got an answer.
pub fn dig_many(ns: &Netns, args: &[&str], queries: &[(&str, &str)]) -> Vec<Answer> {
    let mut argv = vec!["dig", "+time=2", "+tries=1"];
    argv.extend_from_slice(args);
    for (name, rtype) in queries {
        argv.push(name);
        argv.push(rtype);
    }
    let r = ns.exec(&argv, Duration::from_secs(20 + queries.len() as u64 / 5));
    let marker = ";; Got answer:";
    let starts: Vec<usize> = r.stdout.match_indices(marker).map(|(i, _)| i).collect();
    assert_eq!(starts.len(), queries.len(), "dig answered {} of {} queries:\n{}", starts.len(), queries.len(), r.both());
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let end = starts.get(k + 1).copied().unwrap_or(r.stdout.len());
            Answer::parse(&r.stdout[s..end])
        })
        .collect()
}

/// The A and AAAA data of an answer, in order.
pub fn addrs(a: &Answer) -> Vec<String> {
    a.answers
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.len() >= 5 && (f[3] == "A" || f[3] == "AAAA")).then(|| f[4].to_string())
        })
        .collect()
}

/// The A and AAAA data of an answer, as a set.
pub fn addr_set(a: &Answer) -> BTreeSet<String> {
    addrs(a).into_iter().collect()
}

/// A set of strings from literals.
pub fn set_of(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The authority section holds the SOA of `zone` (e.g. "kdns.").
pub fn has_soa(a: &Answer, zone: &str) -> bool {
    a.authority.iter().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() >= 5 && f[0] == zone && f[3] == "SOA"
    })
}

/// A process started in a namespace and killed (SIGKILL) on drop; its
/// output goes to a log file in its own temp dir.
#[derive(Debug)]
pub struct Background {
    pub what: String,
    child: Option<Child>,
    dir: TempDir,
}

impl Background {
    pub fn spawn(ns: &Netns, argv: &[&str]) -> Background {
        let dir = TempDir::new("bg");
        let log = fs::File::create(dir.join("out.log")).expect("log file");
        let mut c = ns.command(argv);
        c.stdin(Stdio::null()).stdout(log.try_clone().expect("dup log")).stderr(log).current_dir(dir.path());
        let what = argv.join(" ");
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Background { what, child: Some(child), dir }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("out.log")).unwrap_or_default()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a TCP connect to `addr` from inside `ns` is accepted.
pub fn tcp_accepts(ns: &Netns, addr: SocketAddr) -> bool {
    ns.within(|| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok())
}

/// A real TCP listener on `addr` inside `ns` (`python3 -m http.server`
/// bound to it), once it accepts connections (10 s at most).
pub fn tcp_listener(ns: &Netns, addr: SocketAddr) -> Background {
    let py = find_tool("python3").unwrap_or_else(|| panic!("python3 not found: the health-check tests listen with python3 -m http.server"));
    let port = addr.port().to_string();
    let ip = addr.ip().to_string();
    let mut bg = Background::spawn(ns, &[py.to_str().expect("utf-8 path"), "-m", "http.server", &port, "--bind", &ip]);
    let ok = poll_until(Duration::from_secs(10), Duration::from_millis(50), || tcp_accepts(ns, addr).then_some(()));
    if ok.is_none() {
        let log = bg.log();
        bg.kill();
        panic!("the TCP listener on {addr} ({}) did not accept connections within 10 s:\n{log}", bg.what);
    }
    bg
}
