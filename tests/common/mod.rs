//! Harness for the daemon's integration tests: network namespaces joined by
//! a veth pair, Unbound backends, the kdns daemon, and the DNS tools (dig,
//! kdig, dnsperf, getent) run inside the namespaces.
//!
//! Every resource is owned by a guard whose `Drop` removes it (processes
//! killed, namespaces and /etc/netns/<ns> deleted, temp dirs removed), also
//! when a test fails or panics. Names carry the test process's pid and a
//! counter, so tests and concurrent test runs never collide; namespaces left
//! by a run that was killed outright (no `Drop`) are swept by the next run.
//!
//! Layout of a [`Lab`] (X = a per-lab number, 1..=250):
//!
//! ```text
//!  client ns "kdt<pid>n<k>c"                server ns "kdt<pid>n<k>s"
//!  kc<pid%10000><k> ---------- veth ---------- ks<pid%10000><k>
//!  10.53.X.2/24, fd53:X::2/64                  10.53.X.1/24, fd53:X::1/64   kdns :53
//!                                              127.0.0.1:5301, :5302 ...     Unbound
//! ```

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use serde_json::Value;

mod failover;
#[allow(unused_imports)] // tests/records.rs does not use it
pub use failover::failover_scenario;
mod records;
#[allow(unused_imports)] // used by tests/records.rs only
pub use records::*;

/// Prefix of every namespace the harness creates.
const NS_PREFIX: &str = "kdt";
/// Port of the first Unbound inside the server namespace (the next ones
/// follow).
pub const UNBOUND_PORT: u16 = 5301;
/// How long a started Unbound or kdns may take to answer its first query.
const READY_WITHIN: Duration = Duration::from_secs(15);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number unique within this test process.
pub fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst) + 1
}

// ---------------------------------------------------------------------------
// Serialisation of timing-sensitive tests
// ---------------------------------------------------------------------------

static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Held by ordinary tests: they may run in parallel with each other.
pub fn shared_slot() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by load tests (failover): they run alone, so timing assertions are
/// not disturbed by other tests competing for the two cores.
pub fn exclusive_slot() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

/// The tools the namespace tests run.
pub const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("unbound", "unbound"),
    ("dig", "dnsutils (bind9-dnsutils)"),
    ("kdig", "knot-dnsutils"),
    ("dnsperf", "dnsperf"),
    ("getent", "libc-bin"),
    ("timeout", "coreutils"),
];

/// Fails (never skips) unless we are root and every tool is installed:
/// these tests must not pass by doing nothing.
pub fn require_root_and_tools() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut problems = Vec::new();
    if euid != 0 {
        problems.push(format!("not running as root (euid {euid}): network namespaces need root; run `sudo -E cargo test --test daemon`"));
    }
    let missing: Vec<String> = TOOLS.iter().filter(|(t, _)| find_tool(t).is_none()).map(|(t, p)| format!("{t} (package {p})")).collect();
    if !missing.is_empty() {
        problems.push(format!("missing tools: {}; run scripts/setup.sh as root", missing.join(", ")));
    }
    if !problems.is_empty() {
        panic!("the daemon integration tests cannot run here:\n  - {}\n(see tests/README.md)", problems.join("\n  - "));
    }
    sweep_stale_namespaces();
}

/// The full path of `tool` on PATH (plus the sbin directories, which a
/// non-login root shell may lack).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn tool(t: &str) -> String {
    find_tool(t).map_or_else(|| t.to_string(), |p| p.display().to_string())
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Output of a finished command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// What was run, for messages.
    pub cmdline: String,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.status.success()
    }

    /// stdout then stderr, for failure messages.
    pub fn both(&self) -> String {
        format!("$ {}\n[exit {:?}]\n--- stdout\n{}--- stderr\n{}", self.cmdline, self.status.code(), self.stdout, self.stderr)
    }
}

impl From<(Output, String)> for Run {
    fn from((o, cmdline): (Output, String)) -> Run {
        Run {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            cmdline,
        }
    }
}

/// Runs `argv` to completion, killed after `limit` (coreutils `timeout`).
pub fn run_limited(argv: &[&str], limit: Duration) -> Run {
    let secs = format!("{:.1}", limit.as_secs_f64());
    let mut cmd = Command::new(tool("timeout"));
    cmd.args(["-k", "2", &secs]).args(argv).stdin(Stdio::null());
    die_with_parent(&mut cmd);
    let cmdline = argv.join(" ");
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    Run::from((out, cmdline))
}

/// Runs `argv` (30 s at most) and panics unless it exits 0.
pub fn run_ok(argv: &[&str]) -> Run {
    let r = run_limited(argv, Duration::from_secs(30));
    assert!(r.ok(), "command failed:\n{}", r.both());
    r
}

/// Makes the kernel kill the child if the thread that spawned it dies
/// (a test thread killed by a panic that skips `Drop`, or the whole test
/// process killed). `ip netns exec` execs its command in place, so the
/// setting reaches the daemon itself.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no
    // memory of the parent; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0);
            Ok(())
        });
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) with a pid we spawned ourselves; no memory involved.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Polls `f` every `every` until it returns `Some` or `limit` passes.
pub fn poll_until<T>(limit: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(every);
    }
}

// ---------------------------------------------------------------------------
// Temp dirs
// ---------------------------------------------------------------------------

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("kdns-test-{}-{}-{tag}", std::process::id(), next_id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------

/// A network namespace, deleted (with its /etc/netns/<name> directory) on
/// drop. Processes the harness started in it are owned by their own guards,
/// which are dropped first.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates namespace `kdt<pid>n<id><suffix>` with its loopback up.
    pub fn new(id: usize, suffix: &str) -> Netns {
        let name = format!("{NS_PREFIX}{}n{id}{suffix}", std::process::id());
        let _ = run_limited(&["ip", "netns", "del", &name], Duration::from_secs(10));
        run_ok(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The argv prefix that runs a command inside this namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec![tool("ip"), "netns".into(), "exec".into(), self.name.clone()]
    }

    /// A `Command` that runs `argv` inside this namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let p = self.prefix();
        let mut c = Command::new(&p[0]);
        c.args(&p[1..]).args(argv);
        die_with_parent(&mut c);
        c
    }

    /// Runs `argv` inside the namespace, killed after `limit`.
    pub fn exec(&self, argv: &[&str], limit: Duration) -> Run {
        let p = self.prefix();
        let mut full: Vec<&str> = p.iter().map(String::as_str).collect();
        full.extend_from_slice(argv);
        run_limited(&full, limit)
    }

    /// Runs `argv` inside the namespace (30 s at most); panics unless it
    /// exits 0.
    pub fn exec_ok(&self, argv: &[&str]) -> Run {
        let r = self.exec(argv, Duration::from_secs(30));
        assert!(r.ok(), "command in netns {} failed:\n{}", self.name, r.both());
        r
    }

    /// /etc/netns/<name>: files there are bind-mounted over /etc by
    /// `ip netns exec` (resolv.conf for the system resolver).
    pub fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// Writes /etc/netns/<name>/resolv.conf.
    pub fn set_resolv_conf(&self, text: &str) {
        let d = self.etc_dir();
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        fs::write(d.join("resolv.conf"), text).unwrap_or_else(|e| panic!("cannot write {}/resolv.conf: {e}", d.display()));
    }

    /// Runs `f` on a thread that has joined this namespace, e.g. to open
    /// sockets there (a socket stays in the namespace it was opened in).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = Path::new("/var/run/netns").join(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = fs::File::open(&path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                // SAFETY: setns(2) on a namespace fd we own; it changes only
                // this (scoped, short-lived) thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {}: {}", self.name, std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }

    /// A UDP socket bound to `bind` inside this namespace.
    pub fn udp_socket(&self, bind: SocketAddr) -> UdpSocket {
        self.within(|| UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind} in {}: {e}", self.name)))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(self.etc_dir());
        let _ = run_limited(&["ip", "netns", "del", &self.name], Duration::from_secs(10));
    }
}

/// Deletes namespaces and temp dirs left by test processes that died
/// without running their guards (killed by a signal): only ours (prefix and
/// a pid that no longer exists), and only the processes inside them.
fn sweep_stale_namespaces() {
    let list = run_limited(&["ip", "netns", "list"], Duration::from_secs(10));
    for line in list.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let Some((pid, _)) = rest.split_once('n') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pids = run_limited(&["ip", "netns", "pids", name], Duration::from_secs(10));
        for p in pids.stdout.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            signal(p, libc::SIGKILL);
        }
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
        let _ = run_limited(&["ip", "netns", "del", name], Duration::from_secs(10));
        eprintln!("harness: removed stale namespace {name} (test process {pid} is gone)");
    }
    // Temp dirs of such runs: kdns-test-<pid>-<n>-<tag>.
    for entry in fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("kdns-test-").and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The two ends of a veth pair between a client and a server namespace.
#[derive(Debug, Clone)]
pub struct Link {
    /// Subnet number X: 10.53.X.0/24 and fd53:X::/64.
    pub x: u8,
    /// Interface name in the client namespace.
    pub client_if: String,
    /// Interface name in the server namespace.
    pub server_if: String,
}

impl Link {
    pub fn server_v4(&self) -> String {
        format!("10.53.{}.1", self.x)
    }
    pub fn client_v4(&self) -> String {
        format!("10.53.{}.2", self.x)
    }
    pub fn server_v6(&self) -> String {
        format!("fd53:{}::1", self.x)
    }
    pub fn client_v6(&self) -> String {
        format!("fd53:{}::2", self.x)
    }
}

/// Joins `client` and `server` with a veth pair created directly inside
/// the namespaces (it never appears in the host's namespace and goes away
/// with them): IPv4 10.53.X.0/24, IPv6 fd53:X::/64 without DAD, links up.
pub fn veth(client: &Netns, server: &Netns, id: usize, x: u8) -> Link {
    veth_with_queues(client, server, id, x, None)
}

/// [`veth`] with `queues` RX and TX queues on both ends (`numrxqueues` =
/// `numtxqueues` on both, which native XDP on veth needs); `None`: the
/// kernel's default (one of each).
pub fn veth_with_queues(client: &Netns, server: &Netns, id: usize, x: u8, queues: Option<u32>) -> Link {
    let tag = format!("{}{id}", std::process::id() % 10000);
    let link = Link { x, client_if: format!("kc{tag}"), server_if: format!("ks{tag}") };
    assert!(link.client_if.len() <= 15, "interface name too long: {}", link.client_if);
    let q = queues.map(|q| q.to_string());
    let mut argv: Vec<&str> = vec!["ip", "link", "add", &link.client_if, "netns", &client.name];
    if let Some(q) = &q {
        argv.extend(["numtxqueues", q, "numrxqueues", q]);
    }
    argv.extend(["type", "veth", "peer", "name", &link.server_if, "netns", &server.name]);
    if let Some(q) = &q {
        argv.extend(["numtxqueues", q, "numrxqueues", q]);
    }
    run_ok(&argv);
    for (ns, ifname, v4, v6) in
        [(client, &link.client_if, link.client_v4(), link.client_v6()), (server, &link.server_if, link.server_v4(), link.server_v6())]
    {
        ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", ifname]);
        ns.exec_ok(&["ip", "-6", "addr", "add", &format!("{v6}/64"), "dev", ifname, "nodad"]);
        ns.exec_ok(&["ip", "link", "set", ifname, "up"]);
    }
    link
}

// ---------------------------------------------------------------------------
// dig / kdig
// ---------------------------------------------------------------------------

/// The parts of a dig or kdig answer the tests look at.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// "NOERROR", "REFUSED", ...; empty if no answer came.
    pub status: String,
    /// Header flags: "qr", "aa", "tc", "rd", "ra", ...
    pub flags: Vec<String>,
    /// The question line(s), as printed.
    pub question: Vec<String>,
    /// Answer-section records, as printed (tabs turned to spaces).
    pub answers: Vec<String>,
    /// Authority-section records, as printed (tabs turned to spaces).
    pub authority: Vec<String>,
    /// Everything the tool printed.
    pub text: String,
}

impl Answer {
    /// Parses dig's or kdig's default output.
    pub fn parse(text: &str) -> Answer {
        let mut a = Answer { text: text.to_string(), ..Answer::default() };
        let mut section = "";
        for raw in text.lines() {
            let line = raw.trim();
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(";; ->>header<<-") {
                if let Some(i) = lower.find("status: ") {
                    a.status = line[i + 8..].split([',', ';', ' ']).next().unwrap_or("").to_string();
                }
            } else if lower.starts_with(";; flags:") {
                let rest = &line[9..];
                let flags = rest.split(';').next().unwrap_or("");
                a.flags = flags.split_whitespace().map(str::to_ascii_lowercase).collect();
            } else if lower.starts_with(";; question section") {
                section = "q";
            } else if lower.starts_with(";; answer section") {
                section = "a";
            } else if lower.starts_with(";; authority section") {
                section = "u";
            } else if section == "q" && lower.starts_with(";; ") && !lower.contains("section") {
                // kdig prints the question as ";; name IN TYPE".
                a.question.push(line.trim_start_matches(';').split_whitespace().collect::<Vec<_>>().join(" "));
            } else if lower.starts_with(";;") || line.is_empty() {
                section = "";
            } else if section == "q" {
                a.question.push(line.trim_start_matches(';').split_whitespace().collect::<Vec<_>>().join(" "));
            } else if section == "a" {
                a.answers.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            } else if section == "u" {
                a.authority.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
        a
    }

    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// The data of the answer records of type `rtype` (last field(s)).
    pub fn rdata(&self, rtype: &str) -> Vec<String> {
        self.answers
            .iter()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let i = f.iter().position(|x| x.eq_ignore_ascii_case(rtype))?;
                (i >= 2).then(|| f[i + 1..].join(" "))
            })
            .collect()
    }
}

/// Runs `dig +time=2 +tries=1 <args>` in `ns` and parses its output.
pub fn dig(ns: &Netns, args: &[&str]) -> Answer {
    let mut argv = vec!["dig", "+time=2", "+tries=1"];
    argv.extend_from_slice(args);
    let r = ns.exec(&argv, Duration::from_secs(15));
    let mut a = Answer::parse(&r.stdout);
    a.text = r.both();
    a
}

/// Runs `kdig +timeout=2 +retry=0 <args>` in `ns` and parses its output.
pub fn kdig(ns: &Netns, args: &[&str]) -> Answer {
    let mut argv = vec!["kdig", "+timeout=2", "+retry=0"];
    argv.extend_from_slice(args);
    let r = ns.exec(&argv, Duration::from_secs(15));
    let mut a = Answer::parse(&r.stdout);
    a.text = r.both();
    a
}

// ---------------------------------------------------------------------------
// Unbound
// ---------------------------------------------------------------------------

/// Address record every name under `test.` gets.
pub const TEST_A: &str = "10.99.0.1";
/// www.static.test.
pub const WWW_A: &str = "10.99.0.5";
pub const WWW_AAAA: &str = "fd99::5";
/// big.static.test has this many TXT records of 200 bytes (> 512 bytes).
pub const BIG_TXT_RECORDS: usize = 8;

/// An Unbound serving the local zones (no Internet needed), in a namespace,
/// killed on drop.
#[derive(Debug)]
pub struct Unbound {
    pub addr: SocketAddr,
    ns_name: String,
    prefix: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Unbound {
    /// Writes the configuration and starts Unbound on `addr` inside `ns`,
    /// then waits until it answers.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Unbound {
        Self::start_with(ns, addr, "")
    }

    /// [`Unbound::start`] with `extra` inserted at the end of the `server:`
    /// clause (more server options, then e.g. a `stub-zone:` clause).
    pub fn start_with(ns: &Netns, addr: SocketAddr, extra: &str) -> Unbound {
        let dir = TempDir::new("unbound");
        let conf = unbound_conf(dir.path(), addr).replace("remote-control:\n", &format!("{extra}remote-control:\n"));
        fs::write(dir.join("unbound.conf"), conf).expect("write unbound.conf");
        let mut u = Unbound { addr, ns_name: ns.name.clone(), prefix: ns.prefix(), dir, child: None };
        u.spawn();
        u
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "unbound {} already running", self.addr);
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("unbound.log")).expect("unbound log");
        let mut c = Command::new(&self.prefix[0]);
        c.args(&self.prefix[1..])
            .args([tool("unbound").as_str(), "-d", "-c"])
            .arg(self.dir.join("unbound.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        die_with_parent(&mut c);
        self.child = Some(c.spawn().unwrap_or_else(|e| panic!("cannot start unbound: {e}")));
        let (ip, port) = (self.addr.ip().to_string(), self.addr.port().to_string());
        let ready = poll_until(READY_WITHIN, Duration::from_millis(100), || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("unbound {} exited at start ({st}):\n{}", self.addr, self.log());
            }
            let r = run_limited(
                &[
                    &self.prefix[0],
                    "netns",
                    "exec",
                    &self.ns_name,
                    "dig",
                    "+time=1",
                    "+tries=1",
                    "-p",
                    &port,
                    &format!("@{ip}"),
                    "ready.test",
                    "A",
                ],
                Duration::from_secs(5),
            );
            (Answer::parse(&r.stdout).status == "NOERROR").then_some(())
        });
        if ready.is_none() {
            panic!("unbound {} did not answer within {READY_WITHIN:?}:\n{}", self.addr, self.log());
        }
    }

    /// Kills Unbound at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same configuration and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("unbound.log")).unwrap_or_default()
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Unbound configuration: local zones only, foreground, no privileges
/// dropped, no chroot, no remote control, files in `dir`.
pub fn unbound_conf(dir: &Path, addr: SocketAddr) -> String {
    let mut big = String::new();
    for i in 0..BIG_TXT_RECORDS {
        let s = ((b'a' + i as u8) as char).to_string().repeat(200);
        let _ = writeln!(big, "    local-data: \"big.static.test. 300 IN TXT \\\"{s}\\\"\"");
    }
    format!(
        r#"server:
    interface: {ip}
    port: {port}
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    num-threads: 1
    module-config: "iterator"
    access-control: 0.0.0.0/0 allow
    access-control: ::/0 allow
    local-zone: "test." redirect
    local-data: "test. 300 IN A {TEST_A}"
    local-zone: "static.test." static
    local-data: "www.static.test. 300 IN A {WWW_A}"
    local-data: "www.static.test. 300 IN AAAA {WWW_AAAA}"
{big}remote-control:
    control-enable: no
"#,
        ip = addr.ip(),
        port = addr.port(),
        dir = dir.display(),
    )
}

// ---------------------------------------------------------------------------
// kdns
// ---------------------------------------------------------------------------

/// The kdns binary under test.
pub fn kdns_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kdns"))
}

/// kdns-ctl: another package, built by `cargo build --workspace` next to
/// the kdns binary (target/<profile>/).
pub fn kdns_ctl_bin() -> PathBuf {
    let p = kdns_bin().with_file_name("kdns-ctl");
    assert!(
        p.is_file(),
        "{} not found: kdns-ctl is another package of the workspace; run `cargo build --workspace` before `cargo test` (see tests/README.md)",
        p.display()
    );
    p
}

/// Runs `kdns-ctl --socket <socket> <args>` (10 s at most).
pub fn ctl(socket: &Path, args: &[&str]) -> Run {
    let bin = kdns_ctl_bin();
    let sock = socket.display().to_string();
    let mut argv = vec![bin.to_str().expect("utf-8 path"), "--socket", &sock];
    argv.extend_from_slice(args);
    run_limited(&argv, Duration::from_secs(10))
}

/// `kdns-ctl --socket <socket> <args> --json`, parsed; panics on failure.
pub fn ctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let r = ctl(socket, &a);
    assert!(r.ok(), "kdns-ctl failed:\n{}", r.both());
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("kdns-ctl printed invalid JSON ({e}):\n{}", r.both()))
}

/// `kdns-ctl stats --json`.
pub fn stats(socket: &Path) -> Value {
    ctl_json(socket, &["stats"])
}

/// `totals.<key>` of a stats document, as a number.
pub fn total(stats: &Value, key: &str) -> u64 {
    stats["totals"][key].as_u64().unwrap_or_else(|| panic!("totals.{key} missing or not a number in:\n{stats:#}"))
}

/// Sum of every `totals.drops.*` counter.
pub fn total_drops(stats: &Value) -> u64 {
    stats["totals"]["drops"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// The `workers[]` entries of a stats document whose `kind` is `kind`
/// ("xdp", "udp" or "tcp").
pub fn workers_of_kind<'a>(stats: &'a Value, kind: &str) -> Vec<&'a Value> {
    stats["workers"].as_array().map_or_else(Vec::new, |a| a.iter().filter(|w| w["kind"] == kind).collect())
}

/// Sum of `key` over the workers of `kind`.
pub fn kind_sum(stats: &Value, kind: &str, key: &str) -> u64 {
    workers_of_kind(stats, kind).iter().map(|w| w[key].as_u64().unwrap_or_else(|| panic!("workers[].{key} missing in:\n{w:#}"))).sum()
}

/// The entry for backend `addr` in a `kdns-ctl backends --json` list.
pub fn backend<'a>(list: &'a Value, addr: &SocketAddr) -> &'a Value {
    let want = addr.to_string();
    list.as_array()
        .and_then(|a| a.iter().find(|b| b["address"].as_str() == Some(want.as_str())))
        .unwrap_or_else(|| panic!("backend {want} not in:\n{list:#}"))
}

/// A running kdns daemon inside a namespace: SIGTERM (then SIGKILL) on
/// drop; its log is printed when the test fails.
#[derive(Debug)]
pub struct Kdns {
    pub dir: TempDir,
    /// The control socket (a path on the shared file system, so kdns-ctl
    /// reaches it from the host's namespace).
    pub socket: PathBuf,
    child: Option<Child>,
    exit: Option<ExitStatus>,
}

impl Kdns {
    /// Starts kdns in `ns` with `args` plus `--control-socket` in its own
    /// temp dir. Does not wait: see [`Kdns::wait_ready`].
    pub fn spawn(ns: &Netns, args: &[String]) -> Kdns {
        let dir = TempDir::new("kdns");
        let socket = dir.join("control.sock");
        let log = fs::File::create(dir.join("kdns.log")).expect("kdns log");
        let bin = kdns_bin();
        let mut c = ns.command(&[bin.to_str().expect("utf-8 path")]);
        c.args(args)
            .arg("--control-socket")
            .arg(&socket)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Kdns { dir, socket, child: Some(child), exit: None }
    }

    /// Waits until kdns answers `name` from `client` at `server` (dig,
    /// bounded), and until its control socket exists.
    pub fn wait_ready(&mut self, client: &Netns, server: &str) {
        let at = format!("@{server}");
        let ok = poll_until(READY_WITHIN, Duration::from_millis(100), || {
            if let Some(st) = self.try_exit() {
                panic!("kdns exited at start ({st}):\n{}", self.log());
            }
            let a = dig(client, &[&at, "+time=1", "ready.test", "A"]);
            (a.status == "NOERROR" && self.socket.exists()).then_some(())
        });
        assert!(ok.is_some(), "kdns did not answer at {server} within {READY_WITHIN:?}:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status, if kdns has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.exit = Some(st);
                }
            }
        }
        self.exit
    }

    /// Sends `sig` and waits up to `limit` for the exit.
    pub fn stop_with(&mut self, sig: libc::c_int, limit: Duration) -> Option<(ExitStatus, Duration)> {
        let t0 = Instant::now();
        if self.try_exit().is_none() {
            signal(self.pid(), sig);
        }
        let st = poll_until(limit, Duration::from_millis(20), || self.try_exit())?;
        Some((st, t0.elapsed()))
    }

    /// Everything kdns wrote to stdout and stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("kdns.log")).unwrap_or_default()
    }

    /// The log without terminal colour codes (tracing writes them even to
    /// a file), for matching messages.
    pub fn plain_log(&self) -> String {
        strip_ansi(&self.log())
    }
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Drop for Kdns {
    fn drop(&mut self) {
        if self.try_exit().is_none() && self.stop_with(libc::SIGTERM, Duration::from_secs(5)).is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- kdns log ({}) ----\n{}---- end of kdns log ----", self.dir.path().display(), self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// A whole lab
// ---------------------------------------------------------------------------

/// What a [`Lab`] starts.
#[derive(Debug, Clone)]
pub struct LabOpts {
    /// Number of Unbound backends (127.0.0.1:5301, :5302, ...).
    pub backends: usize,
    /// `--allow` networks, with `{x}` replaced by the lab's subnet number;
    /// `None`: `10.53.{x}.0/25` and `fd53:{x}::/64` (the client's addresses).
    pub allow: Option<Vec<String>>,
    /// Extra daemon arguments.
    pub extra: Vec<String>,
    /// RX/TX queues on both ends of the veth pair (`None`: one).
    pub queues: Option<u32>,
    /// Run with the server namespace and the link once they are set up,
    /// before kdns starts (e.g. to attach a stale XDP program).
    pub before_kdns: Option<fn(&Netns, &Link)>,
    /// Appended to each Unbound's `server:` clause (see
    /// [`Unbound::start_with`]).
    pub unbound_extra: String,
}

impl Default for LabOpts {
    fn default() -> Self {
        LabOpts { backends: 1, allow: None, extra: Vec::new(), queues: None, before_kdns: None, unbound_extra: String::new() }
    }
}

/// A client namespace ("the containers"), a server namespace ("the host")
/// with kdns on 10.53.X.1:53 and [fd53:X::1]:53 and Unbound backends on its
/// loopback. Dropped in order: kdns, Unbounds, namespaces.
#[derive(Debug)]
pub struct Lab {
    pub kdns: Kdns,
    /// The arguments kdns was started with (without `--control-socket`).
    pub kdns_args: Vec<String>,
    pub unbounds: Vec<Unbound>,
    pub link: Link,
    pub client: Netns,
    pub server: Netns,
}

impl Lab {
    pub fn start(opts: LabOpts) -> Lab {
        let id = next_id();
        let x = (((std::process::id() as usize) * 7 + id) % 250 + 1) as u8;
        let client = Netns::new(id, "c");
        let server = Netns::new(id, "s");
        let link = veth_with_queues(&client, &server, id, x, opts.queues);
        let unbounds: Vec<Unbound> = (0..opts.backends)
            .map(|i| Unbound::start_with(&server, SocketAddr::from(([127, 0, 0, 1], UNBOUND_PORT + i as u16)), &opts.unbound_extra))
            .collect();
        let allow = opts.allow.clone().unwrap_or_else(|| vec!["10.53.{x}.0/25".into(), "fd53:{x}::/64".into()]);
        let allow = allow.iter().map(|a| a.replace("{x}", &x.to_string()));
        let mut args: Vec<String> =
            vec!["--listen".into(), format!("{}:53", link.server_v4()), "--listen".into(), format!("[{}]:53", link.server_v6())];
        for u in &unbounds {
            args.push("--backend".into());
            args.push(u.addr.to_string());
        }
        for a in allow {
            args.push("--allow".into());
            args.push(a);
        }
        args.extend(opts.extra.iter().cloned());
        if let Some(f) = opts.before_kdns {
            f(&server, &link);
        }
        let mut kdns = Kdns::spawn(&server, &args);
        kdns.wait_ready(&client, &link.server_v4());
        Lab { kdns, kdns_args: args, unbounds, link, client, server }
    }

    /// Starts a new kdns with the same arguments (the old one must have
    /// exited; it is dropped) and waits until it answers.
    pub fn respawn_kdns(&mut self) {
        assert!(self.kdns.try_exit().is_some(), "respawn_kdns: the previous kdns (pid {}) is still running", self.kdns.pid());
        self.kdns = Kdns::spawn(&self.server, &self.kdns_args);
        self.kdns.wait_ready(&self.client, &self.link.server_v4());
    }

    /// `@10.53.X.1`
    pub fn at4(&self) -> String {
        format!("@{}", self.link.server_v4())
    }

    /// `@fd53:X::1`
    pub fn at6(&self) -> String {
        format!("@{}", self.link.server_v6())
    }

    pub fn stats(&self) -> Value {
        stats(&self.kdns.socket)
    }

    /// Whether kdns is still running.
    pub fn kdns_alive(&mut self) -> bool {
        self.kdns.try_exit().is_none()
    }

    pub fn backends(&self) -> Value {
        ctl_json(&self.kdns.socket, &["backends"])
    }

    /// Prints the logs of every process (for a failing test's output).
    pub fn dump_logs(&self) {
        eprintln!("---- kdns log ----\n{}", self.kdns.log());
        for u in &self.unbounds {
            eprintln!("---- unbound {} log ----\n{}", u.addr, u.log());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for u in &self.unbounds {
                eprintln!("---- unbound {} log ----\n{}", u.addr, u.log());
            }
        }
    }
}

// ---------------------------------------------------------------------------
// dnsperf
// ---------------------------------------------------------------------------

/// Writes a dnsperf query file of `count` distinct names `n<i>.<zone> A`,
/// starting at `first`.
pub fn write_queries(path: &Path, first: usize, count: usize, zone: &str) {
    let mut s = String::with_capacity(count * 16);
    for i in first..first + count {
        let _ = writeln!(s, "n{i}.{zone} A");
    }
    fs::write(path, s).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A dnsperf run in the background, bounded by its own `-l` and by a kill
/// on drop.
#[derive(Debug)]
pub struct Dnsperf {
    child: Option<Child>,
    out: PathBuf,
    _dir: TempDir,
}

impl Dnsperf {
    /// Starts `dnsperf -s <server> -d <file> <args>` in `ns`.
    pub fn spawn(ns: &Netns, server: &str, queries: &Path, args: &[&str]) -> Dnsperf {
        let dir = TempDir::new("dnsperf");
        let out = dir.join("dnsperf.out");
        let f = fs::File::create(&out).expect("dnsperf output");
        let mut c = ns.command(&["dnsperf", "-s", server, "-d", queries.to_str().expect("utf-8 path")]);
        c.args(args).stdin(Stdio::null()).stdout(f.try_clone().expect("dup")).stderr(f);
        let child = c.spawn().unwrap_or_else(|e| panic!("cannot start dnsperf: {e}"));
        Dnsperf { child: Some(child), out, _dir: dir }
    }

    /// Waits (at most `limit`) for dnsperf to finish; returns its report.
    pub fn wait(&mut self, limit: Duration) -> PerfReport {
        let mut c = self.child.take().expect("dnsperf waited twice");
        let st = poll_until(limit, Duration::from_millis(50), || c.try_wait().ok().flatten());
        if st.is_none() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let mut text = String::new();
        let _ = fs::File::open(&self.out).and_then(|mut f| f.read_to_string(&mut text));
        assert!(st.is_some(), "dnsperf did not finish within {limit:?}:\n{text}");
        PerfReport::parse(&text)
    }
}

impl Drop for Dnsperf {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The lines of dnsperf's report the tests use.
#[derive(Debug, Clone)]
pub struct PerfReport {
    pub sent: u64,
    pub completed: u64,
    pub lost: u64,
    /// The "Queries lost:" line as printed.
    pub lost_line: String,
    pub text: String,
}

impl PerfReport {
    pub fn parse(text: &str) -> PerfReport {
        let field = |name: &str| -> Option<(u64, String)> {
            let line = text.lines().find(|l| l.trim_start().starts_with(name))?;
            let n = line.trim_start()[name.len()..].split_whitespace().next()?.parse().ok()?;
            Some((n, line.trim().to_string()))
        };
        let get = |name: &str| field(name).unwrap_or_else(|| panic!("dnsperf output has no '{name}' line:\n{text}"));
        let (sent, _) = get("Queries sent:");
        let (completed, _) = get("Queries completed:");
        let (lost, lost_line) = get("Queries lost:");
        PerfReport { sent, completed, lost, lost_line, text: text.to_string() }
    }
}
