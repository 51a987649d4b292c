//! The kdns daemon under test ([`Kdns`]) and `kdns-ctl`, which reads its
//! counters over the control socket ([`ctl`], [`stats`]).

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::dns::dig;
use super::netns::InNs;
use super::process::{poll_until, run_limited, strip_ansi, Proc, Run};
use super::{temp_dir, READY_WITHIN};

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
    /// The control socket (a path on the shared file system, so kdns-ctl
    /// reaches it from the host's namespace).
    pub socket: PathBuf,
    proc: Proc,
    pub dir: TempDir,
}

impl Kdns {
    /// Starts kdns in `ns` with `args` plus `--control-socket` (and
    /// `--cache-dump`, `--handover-socket` and `--state-file`, unless
    /// `args` or its `--config` file name them) in its own temp dir, and
    /// `--pin-dir ""` unless `args` give one (a test that pins uses a bpffs
    /// directory of its own and removes it). Does not wait: see
    /// [`Kdns::wait_ready`].
    pub fn spawn(ns: &InNs, args: &[String]) -> Kdns {
        Self::spawn_as(ns, &[], args)
    }

    /// [`Kdns::spawn`] under `wrapper`, a command that runs its arguments
    /// (e.g. `setpriv --reuid=65534 ...` to run kdns as another user; its
    /// temp dir is then open to everyone, for the control socket).
    pub fn spawn_as(ns: &InNs, wrapper: &[&str], args: &[String]) -> Kdns {
        Self::spawn_with(ns, wrapper, args, |_| {})
    }

    /// [`Kdns::spawn_as`], with `prepare` called on the command before it
    /// starts (e.g. to pass it listening sockets).
    pub fn spawn_with(ns: &InNs, wrapper: &[&str], args: &[String], prepare: impl FnOnce(&mut std::process::Command)) -> Kdns {
        let dir = temp_dir("kdns");
        if !wrapper.is_empty() {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).expect("chmod the kdns dir");
        }
        let socket = dir.path().join("control.sock");
        let bin = kdns_bin();
        let mut cmd = ns.command(&[wrapper, &[bin.to_str().expect("utf-8 path")]].concat());
        cmd.args(args).arg("--control-socket").arg(&socket).env_remove("RUST_LOG");
        // Never the default /var/lib/kdns/cache.dump: each kdns starts cold
        // and dumps into its own temp dir unless the test names a file.
        if !args.iter().any(|a| a == "--cache-dump") {
            cmd.arg("--cache-dump").arg(dir.path().join("cache.dump"));
        }
        // Nor the default /run/kdns/handover.sock: kdns instances of tests
        // running side by side would each see "another kdns is running".
        if !args.iter().any(|a| a == "--handover-socket") {
            cmd.arg("--handover-socket").arg(dir.path().join("handover.sock"));
        }
        // Nor the default /var/lib/kdns/records.json: the API's changes of
        // one test would be the next one's records.
        if !names_state_file(args) {
            cmd.arg("--state-file").arg(dir.path().join("records.json"));
        }
        if !args.iter().any(|a| a == "--pin-dir") {
            cmd.args(["--pin-dir", ""]);
        }
        prepare(&mut cmd);
        let proc = Proc::spawn(cmd, &dir.path().join("kdns.log"));
        Kdns { socket, proc, dir }
    }

    /// Waits until kdns answers `name` from `client` at `server` (dig,
    /// bounded), and until its control socket exists.
    pub fn wait_ready(&mut self, client: &InNs, server: &str) {
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
        self.proc.pid()
    }

    /// The exit status, if kdns has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.proc.try_exit()
    }

    /// Waits up to `limit` for kdns to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.proc.wait(limit)
    }

    /// Sends `sig` and waits up to `limit` for the exit.
    pub fn stop_with(&mut self, sig: libc::c_int, limit: Duration) -> Option<ExitStatus> {
        self.proc.stop_with(sig, limit)
    }

    /// Kills kdns at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Everything kdns wrote to stdout and stderr.
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The log without terminal colour codes (tracing writes them even to
    /// a file), for matching messages.
    pub fn plain_log(&self) -> String {
        strip_ansi(&self.log())
    }
}

/// Whether `args` set the records state file: the flag, or a `--config`
/// file with the key.
fn names_state_file(args: &[String]) -> bool {
    args.iter().any(|a| a == "--state-file")
        || args.windows(2).any(|w| w[0] == "--config" && fs::read_to_string(&w[1]).is_ok_and(|t| t.contains("state_file")))
}

impl Drop for Kdns {
    fn drop(&mut self) {
        // SIGTERM first: kdns detaches its XDP program and removes its
        // socket; the Proc guard kills it if it did not stop.
        let _ = self.proc.stop_with(libc::SIGTERM, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("---- kdns log ({}) ----\n{}---- end of kdns log ----", self.dir.path().display(), self.log());
        }
    }
}
