//! Commands run to completion under `timeout` ([`Run`]), background
//! processes owned by a guard ([`Proc`]), and bounded polling.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use super::tool;

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

pub use kdns_sys::process::die_with_parent;

/// Sends `sig` to `pid`. A process that has exited already is no error
/// here: the callers wait for the exit next.
pub fn signal(pid: u32, sig: libc::c_int) {
    let _ = kdns_sys::process::signal(pid, sig);
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

/// A process the harness started (kdns, Unbound, dnsperf, a listener),
/// stdin from /dev/null, stdout and stderr appended to a log file. Killed
/// (SIGKILL) and reaped on drop, also when a test fails; it also dies with
/// the thread that started it ([`die_with_parent`]).
#[derive(Debug)]
pub struct Proc {
    /// What was started, for messages.
    pub what: String,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    log: PathBuf,
}

impl Proc {
    /// Starts `cmd`, its output appended to `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Proc {
        let what = format!("{cmd:?}");
        let file =
            fs::OpenOptions::new().create(true).append(true).open(log).unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        cmd.stdin(Stdio::null()).stdout(file.try_clone().expect("dup log")).stderr(file);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc { what, child: Some(child), exit: None, log: log.to_path_buf() }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status, if it has exited.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                self.exit = Some(st);
            }
        }
        self.exit
    }

    /// Waits up to `limit` for it to exit by itself.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        poll_until(limit, Duration::from_millis(20), || self.try_exit())
    }

    /// Sends `sig` (unless it has exited) and waits up to `limit` for the
    /// exit.
    pub fn stop_with(&mut self, sig: libc::c_int, limit: Duration) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            signal(self.pid(), sig);
        }
        self.wait(limit)
    }

    /// Kills it at once (SIGKILL), as a crash would, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            if let Ok(st) = c.wait() {
                self.exit.get_or_insert(st);
            }
        }
    }

    /// Everything it wrote so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
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
