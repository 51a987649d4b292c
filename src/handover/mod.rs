//! Make-before-break: a new kdns takes over from a running one without
//! losing a query.
//!
//! The running kdns listens on a unix socket (`server.handover_socket`).
//! A kdns started with `--takeover` connects there and receives the
//! listening sockets themselves (`SCM_RIGHTS`: the same kernel sockets, so
//! nothing queued in them is lost and no port is ever unbound); from then
//! on both read them. It then asks the old one to release: the old one
//! snapshots its cache, stops its AF_XDP workers and closes their queues.
//! The XDP program stays attached (pinned in bpffs) and, with those queues'
//! XSKMAP slots empty, passes the queries to the kernel, where the new
//! kdns is already reading the shared sockets. The new one loads the cache,
//! adopts the program, opens the queues and says `done`; the old one
//! finishes what it has in flight and exits. The exchange is in
//! [`protocol`]; the daemon's side of each step is in `main.rs`.

pub mod protocol;
#[cfg(test)]
mod tests;

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, Sender};

use protocol::{Msg, SocketDesc, PROTOCOL};

/// Passed sockets: what each is, and its descriptor.
pub type Sockets = Vec<(SocketDesc, OwnedFd)>;

/// How long either side waits for the other's next message. Stopping the
/// AF_XDP workers drains their queries in flight (up to the driver's
/// two-second drain), so this is generous.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Something the daemon's main thread must do or know.
#[derive(Debug)]
pub enum Event {
    /// SIGTERM or SIGINT.
    Signal(i32),
    /// Duplicates of the listening sockets, and this process's generation.
    Listeners(Sender<Result<(u64, Sockets), String>>),
    /// Snapshot the cache and release the AF_XDP queues: the snapshot and
    /// how many queues were released.
    Release(Sender<Result<(Vec<u8>, u32), String>>),
    /// The new kdns serves everything: finish and exit.
    HandedOver {
        /// The new process.
        pid: u32,
    },
    /// The new kdns hung up after the release: serve the queues again.
    Aborted {
        /// The new process.
        pid: u32,
        /// What happened.
        reason: String,
    },
}

/// What kdns-ctl shows of the last handover into this process.
#[derive(Debug, Clone)]
pub struct Record {
    /// The process handed over from.
    pub from_pid: u32,
    /// When it completed.
    pub at: SystemTime,
    /// From the connection to `done`.
    pub took: Duration,
    /// Listening sockets received.
    pub sockets: usize,
    /// Bytes of cache snapshot received.
    pub cache_bytes: usize,
    /// AF_XDP queues the old process released.
    pub queues: u32,
}

/// The old side: answers one handover on `path`, then stops.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The connection of a completed handover, held open until this
    /// process has stopped: the new kdns waits for it to close before it
    /// binds the control socket and metrics.
    done: Arc<std::sync::Mutex<Option<UnixStream>>>,
}

impl Server {
    /// Binds `path` (0600; a stale file nobody answers on is replaced)
    /// and answers there on a thread, asking the main thread through
    /// `events`.
    pub fn spawn(path: &Path, events: Sender<Event>) -> Result<Server, String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        if UnixStream::connect(path).is_ok() {
            return Err(format!("another kdns answers on {}", path.display()));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let done = Arc::new(std::sync::Mutex::new(None));
        let done2 = Arc::clone(&done);
        let thread = std::thread::Builder::new()
            .name("kdns-handover".into())
            .spawn(move || serve(listener, events, stop2, done2))
            .map_err(|e| format!("cannot start the handover thread: {e}"))?;
        Ok(Server { path: path.to_path_buf(), stop, thread: Some(thread), done })
    }

    /// Stops answering and removes the socket file (unless a newer kdns
    /// has bound its own there since).
    pub fn shutdown(mut self, handed_over: bool) {
        self.stop.store(true, Ordering::Relaxed);
        // The thread sees the flag within STOP_POLL.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        drop(self.done.lock().unwrap_or_else(|e| e.into_inner()).take());
        if !handed_over {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// How often the handover thread looks at its stop flag while nobody
/// connects.
const STOP_POLL: Duration = Duration::from_millis(200);

fn serve(listener: UnixListener, events: Sender<Event>, stop: Arc<AtomicBool>, done: Arc<std::sync::Mutex<Option<UnixStream>>>) {
    // Waiting in poll(2) rather than accept(2): a connection to the path
    // cannot be relied on to wake this thread at shutdown (the file may be
    // gone with its directory, or be a newer kdns's socket by then).
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("handover socket: {e}");
    }
    let fd = listener.as_raw_fd();
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match kdns_sys::poll::wait_readable([fd], STOP_POLL) {
            Ok([true]) => {}
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("handover socket: {e}");
                std::thread::sleep(STOP_POLL);
                continue;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!("handover socket: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(STEP_TIMEOUT));
        let _ = s.set_write_timeout(Some(STEP_TIMEOUT));
        match exchange(&s, &events) {
            Ok(Outcome::HandedOver(pid)) => {
                *done.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
                let _ = events.send(Event::HandedOver { pid });
                return;
            }
            Ok(Outcome::NotStarted) => {}
            Err(Failure::BeforeRelease(e)) => tracing::warn!("a handover failed before anything changed: {e}; still serving"),
            Err(Failure::AfterRelease(pid, reason)) => {
                let _ = events.send(Event::Aborted { pid, reason });
            }
        }
    }
}

enum Outcome {
    /// Someone connected and hung up without asking (a check that a kdns
    /// is running), or took copies of the sockets only.
    NotStarted,
    HandedOver(u32),
}

enum Failure {
    BeforeRelease(String),
    AfterRelease(u32, String),
}

/// Asks the main thread and waits for its answer.
fn ask<T>(events: &Sender<Event>, make: impl FnOnce(Sender<Result<T, String>>) -> Event) -> Result<T, String> {
    let (tx, rx) = bounded(1);
    events.send(make(tx)).map_err(|_| "kdns is stopping".to_string())?;
    rx.recv().map_err(|_| "kdns is stopping".to_string())?
}

fn exchange(s: &UnixStream, events: &Sender<Event>) -> Result<Outcome, Failure> {
    let before = Failure::BeforeRelease;
    let (pid, version, sockets_only) = match protocol::recv(s) {
        Ok((Msg::Hello { protocol, pid, version, sockets_only }, _)) if protocol == PROTOCOL => (pid, version, sockets_only),
        Ok((Msg::Hello { protocol: p, pid, .. }, _)) => {
            let reason = format!("handover protocol {p} from pid {pid}; this kdns speaks {PROTOCOL}");
            let _ = protocol::send(s, &Msg::Refused { reason: reason.clone() }, &[]);
            return Err(before(reason));
        }
        Ok((m, _)) => return Err(before(format!("expected hello, got {m:?}"))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Outcome::NotStarted),
        Err(e) => return Err(before(e.to_string())),
    };
    if sockets_only {
        tracing::info!("handover: kdns {version} --supervise (pid {pid}) asks for copies of the listening sockets");
    } else {
        tracing::info!("handover: kdns {version} (pid {pid}) is taking over");
    }
    let refuse = |reason: String| {
        let _ = protocol::send(s, &Msg::Refused { reason: reason.clone() }, &[]);
        reason
    };
    let (generation, socks) = ask(events, Event::Listeners).map_err(|e| before(refuse(e)))?;
    let (descs, fds): (Vec<SocketDesc>, Vec<OwnedFd>) = socks.into_iter().unzip();
    let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    protocol::send(s, &Msg::Listeners { pid: std::process::id(), generation, sockets: descs }, &borrowed)
        .map_err(|e| before(format!("sending the sockets: {e}")))?;
    drop(fds);
    if sockets_only {
        return Ok(Outcome::NotStarted);
    }
    match protocol::recv(s) {
        Ok((Msg::Release, _)) => {}
        Ok((Msg::Refused { reason }, _)) => return Err(before(format!("pid {pid} gave up: {reason}"))),
        Ok((m, _)) => return Err(before(format!("expected release, got {m:?}"))),
        Err(e) => return Err(before(format!("pid {pid}: {e}"))),
    }
    let (cache, queues) = match ask(events, Event::Release) {
        Ok(r) => r,
        Err(e) => return Err(Failure::AfterRelease(pid, refuse(e))),
    };
    let after = |e: String| Failure::AfterRelease(pid, e);
    protocol::send(s, &Msg::Released { cache_bytes: cache.len() as u64, queues }, &[]).map_err(|e| after(e.to_string()))?;
    protocol::send_raw(s, &cache).map_err(|e| after(format!("sending the cache: {e}")))?;
    match protocol::recv(s) {
        Ok((Msg::Done, _)) => Ok(Outcome::HandedOver(pid)),
        Ok((Msg::Refused { reason }, _)) => Err(after(reason)),
        Ok((m, _)) => Err(after(format!("expected done, got {m:?}"))),
        Err(e) => Err(after(e.to_string())),
    }
}

/// Copies of the listening sockets of the kdns on `path`, and its pid,
/// changing nothing there (`kdns --supervise --takeover` holds them for
/// the server it starts). `Ok(None)`: no kdns answers there.
pub fn copy_sockets(path: &Path) -> Result<Option<(u32, Sockets)>, String> {
    Ok(ask_sockets(path, true)?.map(|a| (a.pid, a.sockets)))
}

/// What the running kdns answered to `hello`.
struct Answer {
    s: UnixStream,
    pid: u32,
    generation: u64,
    sockets: Sockets,
}

/// Connects to the kdns on `path`, says hello and receives its listening
/// sockets. `Ok(None)`: no kdns answers there.
fn ask_sockets(path: &Path, sockets_only: bool) -> Result<Option<Answer>, String> {
    let s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(format!("cannot reach the running kdns at {}: {e}", path.display())),
    };
    let _ = s.set_read_timeout(Some(STEP_TIMEOUT));
    let _ = s.set_write_timeout(Some(STEP_TIMEOUT));
    let hello = Msg::Hello { protocol: PROTOCOL, pid: std::process::id(), version: env!("CARGO_PKG_VERSION").into(), sockets_only };
    protocol::send(&s, &hello, &[]).map_err(|e| format!("handover: {e}"))?;
    match protocol::recv(&s).map_err(|e| format!("handover: {e}"))? {
        (Msg::Listeners { pid, generation, sockets }, fds) => {
            if fds.len() != sockets.len() {
                return Err(format!("handover: pid {pid} announced {} sockets and passed {}", sockets.len(), fds.len()));
            }
            Ok(Some(Answer { s, pid, generation, sockets: sockets.into_iter().zip(fds).collect() }))
        }
        (Msg::Refused { reason }, _) => Err(format!("the running kdns refused the handover: {reason}")),
        (m, _) => Err(format!("handover: expected the sockets, got {m:?}")),
    }
}

/// The new side of a handover in progress.
#[derive(Debug)]
pub struct Takeover {
    s: UnixStream,
    started: Instant,
    /// The old process.
    pub from_pid: u32,
    /// The old process's generation.
    pub generation: u64,
    sockets: usize,
    cache_bytes: usize,
    queues: u32,
}

/// Whether a kdns answers on `path` (the check before starting without
/// `--takeover`).
pub fn running(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

impl Takeover {
    /// Connects to the kdns on `path` and receives its listening sockets.
    /// `Ok(None)`: no kdns answers there.
    pub fn start(path: &Path) -> Result<Option<(Takeover, Sockets)>, String> {
        let started = Instant::now();
        let Some(a) = ask_sockets(path, false)? else { return Ok(None) };
        let t =
            Takeover { s: a.s, started, from_pid: a.pid, generation: a.generation, sockets: a.sockets.len(), cache_bytes: 0, queues: 0 };
        Ok(Some((t, a.sockets)))
    }

    /// Asks the old process to release its cache and AF_XDP queues.
    pub fn release(&mut self) -> Result<Vec<u8>, String> {
        let pid = self.from_pid;
        protocol::send(&self.s, &Msg::Release, &[]).map_err(|e| format!("handover: pid {pid}: {e}"))?;
        match protocol::recv(&self.s).map_err(|e| format!("handover: pid {pid}: {e}"))? {
            (Msg::Released { cache_bytes, queues }, _) => {
                let cache = protocol::recv_raw(&self.s).map_err(|e| format!("handover: the cache: {e}"))?;
                if cache.len() as u64 != cache_bytes {
                    return Err(format!("handover: {cache_bytes} bytes of cache announced, {} received", cache.len()));
                }
                self.cache_bytes = cache.len();
                self.queues = queues;
                Ok(cache)
            }
            (Msg::Refused { reason }, _) => Err(format!("pid {pid} could not release: {reason}")),
            (m, _) => Err(format!("handover: expected released, got {m:?}")),
        }
    }

    /// Gives up (the old process keeps or takes back everything).
    pub fn abandon(self, reason: &str) {
        let _ = protocol::send(&self.s, &Msg::Refused { reason: reason.into() }, &[]);
    }

    /// Tells the old process to finish, and waits (up to `wait`) until it
    /// has stopped serving (it closes the connection then): its control
    /// socket and metrics port are free after this.
    pub fn done(self, wait: Duration) -> Result<Record, String> {
        protocol::send(&self.s, &Msg::Done, &[]).map_err(|e| format!("handover: pid {}: {e}", self.from_pid))?;
        let _ = self.s.set_read_timeout(Some(wait));
        let mut b = [0u8; 1];
        if let Err(e) = (&self.s).read(&mut b) {
            tracing::warn!("kdns pid {} has not finished {} s after the handover ({e})", self.from_pid, wait.as_secs());
        }
        Ok(Record {
            from_pid: self.from_pid,
            at: SystemTime::now(),
            took: self.started.elapsed(),
            sockets: self.sockets,
            cache_bytes: self.cache_bytes,
            queues: self.queues,
        })
    }
}
