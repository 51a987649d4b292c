//! `kdns --supervise`: a small parent process that holds the listening
//! sockets and runs the server as its child, where nothing else holds them
//! (a container, a Kubernetes pod; on a host, systemd's socket activation
//! does this job: `deploy/kdns.socket`).
//!
//! The supervisor binds the sockets once (or takes them from systemd, or
//! copies them from a kdns already running, with `--takeover`) and passes
//! them to each server it starts, as socket activation does. When the
//! server dies (kill -9, a panic, the OOM killer, which picks the server
//! and not this small process), the sockets stay open here: queries wait in
//! their buffers, the pinned XDP program passes the AF_XDP share to them
//! (the dead process's XSKMAP slots are empty), and the next server,
//! started at once, answers them. No container restart and no restart
//! back-off of the container engine or the kubelet is involved.
//!
//! | signal | what the supervisor does |
//! |---|---|
//! | SIGTERM, SIGINT | passes it to the server, waits for it, exits with its status |
//! | SIGUSR2, SIGHUP | starts a new server with `--takeover` next to the running one (make-before-break: the configuration and the binary at the same path are read again); the old one hands over and exits |
//! | the server dies | starts a new one on the same sockets at once; while servers keep dying within 30 s of their start, the next after 0.1 s, doubling to 5 s |
//! | the server exits 0 by itself | a newer kdns took over (another pod's, `kdns --takeover` run by hand): no new server; the supervisor waits for SIGTERM |
//!
//! The server gets SIGTERM when the supervisor dies (`PR_SET_PDEATHSIG`),
//! so it never runs on unwatched.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM, SIGUSR2};

use crate::config::{IoMode, Settings};
use crate::handover;
use crate::listeners::Listeners;

/// The second restart in a row after a quick death waits this long (the
/// first is at once)...
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// ... doubling up to this.
const MOST_DELAY: Duration = Duration::from_secs(5);
/// A server that ran this long died of something new: restart it at once.
const STABLE: Duration = Duration::from_secs(30);
/// A server that exited 0 by itself handed over if another kdns answers
/// on the handover socket within this (the new one binds it once the old
/// one has exited).
const HANDOVER_SEEN_WITHIN: Duration = Duration::from_secs(2);

/// Runs servers until SIGTERM or SIGINT; returns the exit status to exit
/// with (the last server's).
pub fn run(s: &Settings, passed: Option<Listeners>, takeover: bool) -> Result<u8, String> {
    // Signals first: a server that dies at once must still be seen.
    let signals = forward_signals()?;
    let listeners = hold(s, passed, takeover)?;
    listeners.set_udp_receive_buffer(s.udp_receive_buffer);
    tracing::info!("kdns --supervise (pid {}) holds {}", std::process::id(), listeners.describe());
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    // The server's command line is this one without the supervisor's own
    // flags; --takeover is added for an upgrade.
    let args: Vec<OsString> = std::env::args_os().skip(1).filter(|a| a != "--supervise" && a != "--takeover").collect();
    let mut sup = Supervisor {
        exe,
        args,
        listeners,
        handover_socket: s.handover_socket.clone(),
        current: None,
        next: None,
        delay: None,
        restart_at: None,
        exited_quietly: None,
        stopping: false,
        status: 0,
    };
    // A running kdns (--takeover found one): the first server takes over
    // from it.
    sup.start(takeover && handover::running(&s.handover_socket));
    sup.serve(&signals)
}

/// The sockets to hold: systemd's, a copy of a running kdns's, or bound here.
fn hold(s: &Settings, passed: Option<Listeners>, takeover: bool) -> Result<Listeners, String> {
    if let Some(l) = passed {
        return Ok(l);
    }
    if takeover {
        if let Some((pid, socks)) = handover::copy_sockets(&s.handover_socket)? {
            let fds = socks.into_iter().map(|(d, fd)| (d.transport.into(), d.addr, fd)).collect();
            let l = Listeners::from_fds(fds, &s.listen, s.tcp.enabled)
                .map_err(|e| format!("the running kdns (pid {pid}) serves other sockets than this configuration: {e}"))?;
            tracing::info!("copied the listening sockets of the running kdns (pid {pid}); its replacement will take over from it");
            return Ok(l);
        }
    }
    // One UDP socket per address, as systemd holds them; with io = "udp",
    // one per worker (a SO_REUSEPORT group, every member held here).
    let per_addr = if s.io == IoMode::Udp { s.workers } else { 1 };
    Listeners::bind(&s.listen, s.tcp.enabled, per_addr)
}

fn forward_signals() -> Result<Receiver<i32>, String> {
    let mut signals =
        signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGUSR2, SIGCHLD]).map_err(|e| format!("signals: {e}"))?;
    let (tx, rx) = unbounded();
    std::thread::Builder::new()
        .name("kdns-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| format!("signals: {e}"))?;
    Ok(rx)
}

/// A server process.
struct Server {
    child: Child,
    started: Instant,
}

struct Supervisor {
    exe: PathBuf,
    args: Vec<OsString>,
    listeners: Listeners,
    handover_socket: PathBuf,
    /// The server.
    current: Option<Server>,
    /// A server taking over from `current` (an upgrade).
    next: Option<Server>,
    /// The wait before the next restart: none after a server that ran
    /// long, zero after the first quick death, then growing.
    delay: Option<Duration>,
    restart_at: Option<Instant>,
    /// A server exited 0 by itself: (its pid, how long it ran, until when
    /// to look for the kdns it handed over to).
    exited_quietly: Option<(u32, Duration, Instant)>,
    stopping: bool,
    /// The exit status of the last server to exit.
    status: u8,
}

impl Supervisor {
    fn serve(&mut self, signals: &Receiver<i32>) -> Result<u8, String> {
        loop {
            let mut wait = self.restart_at.map_or(Duration::from_secs(3600), |t| t.saturating_duration_since(Instant::now()));
            if self.exited_quietly.is_some() {
                wait = wait.min(Duration::from_millis(10));
            }
            match signals.recv_timeout(wait) {
                Ok(SIGTERM | SIGINT) if !self.stopping => {
                    tracing::info!("stopping: passing SIGTERM to the server");
                    self.stopping = true;
                    self.restart_at = None;
                    self.exited_quietly = None;
                    for s in self.current.iter().chain(self.next.iter()) {
                        let _ = kdns_sys::process::signal(s.child.id(), SIGTERM);
                    }
                }
                Ok(SIGUSR2 | SIGHUP) if !self.stopping => self.upgrade(),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    if self.restart_at.is_some_and(|t| Instant::now() >= t) {
                        self.restart_at = None;
                        self.start(false);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Err("the signal thread stopped".into()),
            }
            self.reap();
            self.look_for_successor();
            if self.stopping && self.current.is_none() && self.next.is_none() {
                tracing::info!("stopped");
                return Ok(self.status);
            }
        }
    }

    /// Starts a server (`takeover`: next to the running one).
    fn start(&mut self, takeover: bool) {
        let mut cmd = Command::new(&self.exe);
        cmd.args(&self.args);
        if takeover {
            cmd.arg("--takeover");
        }
        let spawned = kdns_sys::listen_fds::pass_listen_fds(&mut cmd, &self.listeners.borrowed()).and_then(|()| {
            kdns_sys::process::signal_when_parent_dies(&mut cmd, SIGTERM);
            cmd.spawn()
        });
        match spawned {
            Ok(child) => {
                tracing::info!("started kdns pid {}{}", child.id(), if takeover { " (--takeover)" } else { "" });
                let s = Server { child, started: Instant::now() };
                if takeover && self.current.is_some() {
                    self.next = Some(s);
                } else {
                    self.current = Some(s);
                }
            }
            Err(e) => {
                tracing::error!("cannot start {}: {e}", self.exe.display());
                self.schedule(Duration::ZERO);
                let wait = self.delay.unwrap_or_default();
                tracing::info!("trying again in {} ms", wait.as_millis());
            }
        }
    }

    /// SIGUSR2 or SIGHUP: a new server takes over from the running one.
    fn upgrade(&mut self) {
        if let Some(n) = &self.next {
            tracing::warn!("an upgrade is already under way (kdns pid {}); ignoring the signal", n.child.id());
            return;
        }
        self.restart_at = None;
        tracing::info!("upgrade: starting a new server to take over");
        self.start(true);
    }

    /// Restarts after the back-off, given how long the dead one ran.
    fn schedule(&mut self, ran: Duration) {
        self.delay = next_delay(self.delay, ran);
        self.restart_at = Some(Instant::now() + self.delay.unwrap_or_default());
    }

    /// Collects exited servers and decides what follows.
    fn reap(&mut self) {
        let next_exit = exited(&mut self.next);
        let current_exit = exited(&mut self.current);
        if let Some((pid, st, _)) = next_exit {
            self.status = code(st);
            if self.current.is_some() && !self.stopping {
                tracing::error!("the new kdns (pid {pid}) {} before taking over; the running one keeps serving", describe(st));
            }
        }
        let Some((pid, st, ran)) = current_exit else { return };
        self.status = code(st);
        if let Some(n) = self.next.take() {
            tracing::info!("kdns pid {pid} handed over to pid {} and {}", n.child.id(), describe(st));
            self.current = Some(n);
            return;
        }
        if self.stopping {
            tracing::info!("kdns pid {pid} {}", describe(st));
            return;
        }
        if st.success() {
            // A handover to a kdns started elsewhere, or a SIGTERM from
            // someone else: the first shows on the handover socket.
            self.exited_quietly = Some((pid, ran, Instant::now() + HANDOVER_SEEN_WITHIN));
            return;
        }
        self.restart(pid, st, ran);
    }

    /// After a server exited 0 by itself: another kdns answering on the
    /// handover socket took over (the supervisor then waits for SIGTERM);
    /// none within [`HANDOVER_SEEN_WITHIN`]: it was stopped, start another.
    fn look_for_successor(&mut self) {
        let Some((pid, ran, until)) = self.exited_quietly else { return };
        if handover::running(&self.handover_socket) {
            self.exited_quietly = None;
            tracing::info!(
                "kdns pid {pid} handed over to a kdns started elsewhere (it answers on {}); not starting another, waiting for SIGTERM",
                self.handover_socket.display()
            );
        } else if Instant::now() >= until || self.current.is_some() {
            self.exited_quietly = None;
            if self.current.is_none() {
                tracing::warn!("kdns pid {pid} exited by itself and no kdns took over from it");
                self.restart(pid, ExitStatus::from_raw(0), ran);
            }
        }
    }

    /// Starts a new server after `pid` ended with `st` after running `ran`
    /// (at once, or after the back-off).
    fn restart(&mut self, pid: u32, st: ExitStatus, ran: Duration) {
        self.schedule(ran);
        tracing::error!(
            "kdns pid {pid} {} after {:.1} s; starting a new one on the held sockets{}",
            describe(st),
            ran.as_secs_f64(),
            match self.delay.unwrap_or_default() {
                d if d.is_zero() => " now".to_string(),
                d => format!(" in {} ms", d.as_millis()),
            }
        );
        if self.delay.unwrap_or_default().is_zero() {
            self.restart_at = None;
            self.start(false);
        }
    }
}

/// The wait before the next restart, after `prev`, for a server that ran
/// `ran`: at once after a long run and after the first quick death, then
/// [`FIRST_DELAY`] doubling to [`MOST_DELAY`] while servers die young.
fn next_delay(prev: Option<Duration>, ran: Duration) -> Option<Duration> {
    if ran >= STABLE {
        return None;
    }
    Some(match prev {
        None => Duration::ZERO,
        Some(d) if d.is_zero() => FIRST_DELAY,
        Some(d) => (d * 2).min(MOST_DELAY),
    })
}

/// The pid, status and run time of `slot`'s server if it has exited (the
/// slot is emptied then).
fn exited(slot: &mut Option<Server>) -> Option<(u32, ExitStatus, Duration)> {
    let s = slot.as_mut()?;
    match s.child.try_wait() {
        Ok(Some(st)) => {
            let s = slot.take()?;
            Some((s.child.id(), st, s.started.elapsed()))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!("cannot wait for kdns pid {}: {e}", s.child.id());
            None
        }
    }
}

/// `exited with status 1`, `was killed by signal 9`.
fn describe(st: ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(0), _) => "exited".into(),
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => format!("was killed by signal {sig}{}", if st.core_dumped() { " (core dumped)" } else { "" }),
        _ => format!("ended ({st})"),
    }
}

/// The shell's convention: the status, or 128 + the signal.
fn code(st: ExitStatus) -> u8 {
    match (st.code(), st.signal()) {
        (Some(c), _) => u8::try_from(c).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_while_servers_die_young() {
        let mut delays = Vec::new();
        let mut d = None;
        for ran in [1, 1, 1, 1, 1, 1, 1, 1, 1, 40, 1, 1] {
            d = next_delay(d, Duration::from_secs(ran));
            delays.push(d.unwrap_or_default().as_millis());
        }
        assert_eq!(delays, [0, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 0, 0, 100]);
    }

    #[test]
    fn statuses_read_as_a_shell_would() {
        assert_eq!(code(ExitStatus::from_raw(0)), 0);
        assert_eq!(code(ExitStatus::from_raw(2 << 8)), 2);
        assert_eq!(code(ExitStatus::from_raw(9)), 137);
        assert_eq!(describe(ExitStatus::from_raw(9)), "was killed by signal 9");
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exited with status 1");
    }
}
