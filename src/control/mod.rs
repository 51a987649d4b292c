//! The control plane: an HTTP/JSON API on a Unix socket (what `kdns-ctl`
//! talks to) and, optionally, Prometheus metrics on TCP.
//!
//! Nothing here touches a worker's engine. Counters are read through the
//! `Arc`s in each [`WorkerHandle`]; anything else (RTT histograms, cache
//! flush) is asked for with a [`Control`] message. The API is documented in
//! `docs/control-api.md`.
//!
//! Threads: tiny_http's accept thread (plus its per-connection readers) for
//! each server, [`CONTROL_THREADS`] request handlers for the socket, one for
//! metrics, and a sampler that records the total query count once a second
//! for the QPS figures. [`ControlServer::shutdown`] stops them all and
//! removes the socket file.

mod metrics;
mod rate;
mod records_api;
mod stats;
#[cfg(test)]
mod tests;

use std::fs;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::handle::{Control, WorkerHandle};
use rate::Rate;

/// Request handler threads of the control socket.
const CONTROL_THREADS: usize = 2;
/// Interval of the QPS sampler.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How long a `/v1/stats` or `/v1/backends` request waits for all workers'
/// snapshots, in all.
const SNAPSHOT_WAIT: Duration = Duration::from_millis(500);
/// Mode of the control socket's parent directory when we create it.
const DIR_MODE: u32 = 0o755;
/// Mode of the control socket.
const SOCKET_MODE: u32 = 0o660;

/// What the control API reports about the daemon itself.
#[derive(Debug, Clone)]
pub struct DaemonInfo {
    /// The daemon's version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// When the daemon started.
    pub started: Instant,
    /// Addresses it serves DNS on.
    pub listen: Vec<SocketAddr>,
    /// Configured backends, in configuration order (the order of the
    /// `backends` array in the API).
    pub backends: Vec<SocketAddr>,
    /// Process id.
    pub pid: u32,
    /// 1, or one more than the kdns this one took over from.
    pub generation: u64,
    /// The handover that started this process.
    pub handover: Option<crate::handover::Record>,
    /// The XDP programs' counters, one source per interface (empty without AF_XDP).
    pub xdp: Vec<Arc<dyn crate::handle::XdpCounterSource>>,
    /// The per-client fair shares in force.
    pub limits: kdns_core::engine::ClientLimits,
    /// The per-client query rate of the XDP program (qps 0: off, or no
    /// AF_XDP).
    pub xdp_client_rate: crate::config::XdpClientRate,
    /// TCP: most connections, and most from one client address.
    pub tcp_limits: (usize, usize),
    /// Source-port slots per worker for backend queries.
    pub source_ports: u16,
}

/// Optional parts of the control plane.
#[derive(Clone, Default)]
pub struct Extras {
    /// The local records: serves `/v1/records` and `/v1/services/...`.
    pub records: Option<Arc<crate::records::Store>>,
    /// Also serve the control API on this TCP address, to requests that
    /// carry `Authorization: Bearer <token>` (others get 401).
    pub tcp: Option<(SocketAddr, String)>,
}

impl std::fmt::Debug for Extras {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extras").field("records", &self.records.is_some()).field("tcp", &self.tcp.as_ref().map(|t| t.0)).finish()
    }
}

/// State shared by the request handlers and the sampler.
struct Shared {
    /// Replaced when an aborted handover restarts the AF_XDP workers...
    workers: std::sync::RwLock<Vec<WorkerHandle>>,
    /// ... and with them the AF_XDP path (first: `info.xdp`).
    xdp: std::sync::RwLock<Vec<Arc<dyn crate::handle::XdpCounterSource>>>,
    info: DaemonInfo,
    rate: Mutex<Rate>,
    records: Option<Arc<crate::records::Store>>,
}

impl Shared {
    /// Sum of `queries` over all workers.
    fn total_queries(&self) -> u64 {
        self.workers().iter().map(|w| w.engine.queries.get()).fold(0u64, u64::wrapping_add)
    }

    /// The workers now.
    fn workers(&self) -> Vec<WorkerHandle> {
        self.workers.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The AF_XDP path's programs and queues now.
    fn xdp(&self) -> Vec<Arc<dyn crate::handle::XdpCounterSource>> {
        self.xdp.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The running control plane; stop it with [`ControlServer::shutdown`]
/// (dropping it does the same).
pub struct ControlServer {
    socket: PathBuf,
    metrics_addr: Option<SocketAddr>,
    control_tcp_addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    servers: Vec<(Arc<Server>, usize)>,
    threads: Vec<JoinHandle<()>>,
    sampler_stop: Option<crossbeam_channel::Sender<()>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("socket", &self.socket)
            .field("metrics_addr", &self.metrics_addr)
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl ControlServer {
    /// Serves these workers and AF_XDP path from now on (an aborted
    /// handover restarted the AF_XDP workers); the query rate starts again
    /// from their counts.
    pub fn replace_workers(&self, workers: Vec<WorkerHandle>, xdp: Vec<Arc<dyn crate::handle::XdpCounterSource>>) {
        *self.shared.workers.write().unwrap_or_else(|e| e.into_inner()) = workers;
        *self.shared.xdp.write().unwrap_or_else(|e| e.into_inner()) = xdp;
        let mut r = self.shared.rate.lock().unwrap_or_else(|e| e.into_inner());
        *r = Rate::new();
        r.push(Instant::now(), self.shared.total_queries());
    }

    /// The address the metrics server listens on (with the real port when
    /// port 0 was asked for), if any.
    #[cfg_attr(not(test), allow(dead_code))] // the daemon logs it; tests bind port 0
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address of the TCP control API (real port when port 0 was asked for), if any.
    #[cfg_attr(not(test), allow(dead_code))] // spawn_with logs it; tests bind port 0
    pub fn control_tcp_addr(&self) -> Option<SocketAddr> {
        self.control_tcp_addr
    }

    /// Stops every thread and removes the socket file.
    pub fn shutdown(mut self) {
        self.stop_all();
    }

    fn stop_all(&mut self) {
        if self.stop.swap(true, Ordering::SeqCst) {
            return;
        }
        // Each unblock wakes exactly one handler blocked in recv(), which
        // then sees the stop flag and returns.
        for (server, handlers) in &self.servers {
            for _ in 0..*handlers {
                server.unblock();
            }
        }
        self.sampler_stop = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // Dropping the last reference closes the listener; tiny_http also
        // unlinks a Unix socket then.
        self.servers.clear();
        match fs::remove_file(&self.socket) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove control socket {}: {e}", self.socket.display()),
        }
        tracing::debug!("control plane stopped");
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Starts the control API on the Unix socket `socket` and, if `metrics` is
/// set, Prometheus metrics on that TCP address.
///
/// Creates the socket's parent directory (mode 0755) if missing and removes
/// a stale socket left by a daemon that died; fails with
/// [`ErrorKind::AddrInUse`] if a live process is listening there, and with
/// [`ErrorKind::AlreadyExists`] if the path is something other than a socket.
/// The socket gets mode 0660.
#[cfg_attr(not(test), allow(dead_code))] // the daemon uses spawn_with
pub fn spawn(socket: &Path, metrics: Option<SocketAddr>, workers: Vec<WorkerHandle>, info: DaemonInfo) -> io::Result<ControlServer> {
    spawn_with(socket, metrics, workers, info, Extras::default())
}

/// [`spawn`], plus the records API and the TCP control listener if `extras` has them.
pub fn spawn_with(
    socket: &Path,
    metrics: Option<SocketAddr>,
    workers: Vec<WorkerHandle>,
    info: DaemonInfo,
    extras: Extras,
) -> io::Result<ControlServer> {
    let listener = bind_unix(socket)?;
    let control =
        Server::from_listener(listener, None).map_err(|e| io::Error::other(format!("control socket {}: {e}", socket.display())))?;
    let control = Arc::new(control);

    let metrics_server = match metrics {
        None => None,
        Some(addr) => {
            let l = TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("metrics address {addr}: {e}")))?;
            let local = l.local_addr()?;
            let s = Server::from_listener(l, None).map_err(|e| io::Error::other(format!("metrics address {addr}: {e}")))?;
            Some((Arc::new(s), local))
        }
    };

    let control_tcp = match &extras.tcp {
        None => None,
        Some((addr, token)) => {
            let l = TcpListener::bind(addr).map_err(|e| io::Error::new(e.kind(), format!("control_tcp address {addr}: {e}")))?;
            let local = l.local_addr()?;
            let s = Server::from_listener(l, None).map_err(|e| io::Error::other(format!("control_tcp address {addr}: {e}")))?;
            Some((Arc::new(s), local, token.clone()))
        }
    };

    let (workers, xdp) = (std::sync::RwLock::new(workers), std::sync::RwLock::new(info.xdp.clone()));
    let shared = Arc::new(Shared { workers, xdp, info, rate: Mutex::new(Rate::new()), records: extras.records });
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut servers = Vec::new();

    {
        let mut r = shared.rate.lock().unwrap_or_else(|e| e.into_inner());
        r.push(Instant::now(), shared.total_queries());
    }
    let (sampler_stop, sampler_rx) = crossbeam_channel::bounded::<()>(0);
    {
        let shared = Arc::clone(&shared);
        threads.push(std::thread::Builder::new().name("kdns-ctl-sampler".into()).spawn(move || loop {
            match sampler_rx.recv_timeout(SAMPLE_EVERY) {
                Err(RecvTimeoutError::Timeout) => {
                    let total = shared.total_queries();
                    shared.rate.lock().unwrap_or_else(|e| e.into_inner()).push(Instant::now(), total);
                }
                _ => return,
            }
        })?);
    }

    for i in 0..CONTROL_THREADS {
        let (server, shared, stop) = (Arc::clone(&control), Arc::clone(&shared), Arc::clone(&stop));
        threads.push(
            std::thread::Builder::new()
                .name(format!("kdns-control-{i}"))
                .spawn(move || serve(&server, &stop, |rq| route_control(&shared, rq)))?,
        );
    }
    servers.push((control, CONTROL_THREADS));
    tracing::info!("control socket at {}", socket.display());

    let mut control_tcp_addr = None;
    if let Some((server, addr, token)) = control_tcp {
        let token = Arc::new(token);
        for i in 0..CONTROL_THREADS {
            let (srv, shared, stop, token) = (Arc::clone(&server), Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&token));
            threads.push(std::thread::Builder::new().name(format!("kdns-control-tcp-{i}")).spawn(move || {
                serve(&srv, &stop, |rq| if authorized(rq, &token) { route_control(&shared, rq) } else { Reply::unauthorized() })
            })?);
        }
        servers.push((server, CONTROL_THREADS));
        control_tcp_addr = Some(addr);
        tracing::info!("control API on tcp {addr} (bearer token required)");
    }

    let mut metrics_addr = None;
    if let Some((server, addr)) = metrics_server {
        let (srv, shared, stop) = (Arc::clone(&server), Arc::clone(&shared), Arc::clone(&stop));
        threads.push(
            std::thread::Builder::new().name("kdns-metrics".into()).spawn(move || serve(&srv, &stop, |rq| route_metrics(&shared, rq)))?,
        );
        servers.push((server, 1));
        metrics_addr = Some(addr);
        tracing::info!("metrics at http://{addr}/metrics");
    }

    Ok(ControlServer {
        socket: socket.to_path_buf(),
        metrics_addr,
        control_tcp_addr,
        stop,
        servers,
        threads,
        sampler_stop: Some(sampler_stop),
        shared,
    })
}

/// Prepares the path and binds the control socket.
fn bind_unix(path: &Path) -> io::Result<UnixListener> {
    let ctx = |e: io::Error, what: &str| io::Error::new(e.kind(), format!("control socket {}: {what}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir).map_err(|e| ctx(e, "cannot create directory"))?;
        }
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match UnixStream::connect(path) {
            Ok(_) => {
                return Err(io::Error::new(
                    ErrorKind::AddrInUse,
                    format!("control socket {}: another kdns is already listening there", path.display()),
                ));
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                tracing::info!("removing stale control socket {} (nothing listening)", path.display());
                fs::remove_file(path).map_err(|e| ctx(e, "cannot remove stale socket"))?;
            }
            Err(e) => return Err(ctx(e, "cannot check existing socket")),
        },
        Ok(_) => {
            return Err(io::Error::new(
                ErrorKind::AlreadyExists,
                format!("control socket {}: path exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(ctx(e, "cannot inspect path")),
    }
    let l = UnixListener::bind(path).map_err(|e| ctx(e, "cannot bind"))?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE)).map_err(|e| ctx(e, "cannot set mode"))?;
    Ok(l)
}

/// Handles requests until `stop` is set.
fn serve(server: &Server, stop: &AtomicBool, handle: impl Fn(&mut Request) -> Reply) {
    loop {
        let mut rq = match server.recv() {
            Ok(rq) => rq,
            Err(e) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                tracing::warn!("control server: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let reply = handle(&mut rq);
        tracing::debug!(method = %rq.method(), url = rq.url(), status = reply.status, "control request");
        let mut resp = Response::from_data(reply.body).with_status_code(reply.status);
        for (k, v) in reply.headers {
            if let Ok(h) = Header::from_bytes(k.as_bytes(), v.as_bytes()) {
                resp.add_header(h);
            }
        }
        if let Err(e) = rq.respond(resp) {
            tracing::debug!("control response not delivered: {e}");
        }
    }
}

/// A response before it goes to tiny_http.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, v: &impl serde::Serialize) -> Reply {
        let mut body = serde_json::to_vec_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
        body.push(b'\n');
        Reply { status, headers: vec![("Content-Type", "application/json".into())], body }
    }

    fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::json(status, &kdns_api::ErrorBody { error: msg.into() })
    }

    fn unauthorized() -> Reply {
        let mut r = Reply::error(401, "missing or wrong bearer token (Authorization: Bearer <token from records.control_token_file>)");
        r.headers.push(("WWW-Authenticate", "Bearer realm=\"kdns\"".into()));
        r
    }

    fn not_allowed(allow: &str, method: &Method, path: &str) -> Reply {
        let mut r = Reply::error(405, format!("method {method} not allowed on {path} (allowed: {allow})"));
        r.headers.push(("Allow", allow.into()));
        r
    }
}

/// The path of a request URL, without query string.
fn path_of(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or("")
}

/// Whether `rq` carries `Authorization: Bearer <token>` (compared in constant time).
fn authorized(rq: &Request, token: &str) -> bool {
    let Some(h) = rq.headers().iter().find(|h| h.field.equiv("Authorization")) else { return false };
    let v = h.value.as_str().trim();
    let Some((scheme, given)) = v.split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn route_control(shared: &Shared, rq: &mut Request) -> Reply {
    let url = rq.url().to_string();
    let path = path_of(&url);
    let path = if path.len() > 1 { path.trim_end_matches('/') } else { path };
    if let Some(r) = records_api::route(shared.records.as_deref(), rq, path) {
        return r;
    }
    let method = rq.method();
    let allow = match path {
        "/v1/stats" | "/v1/backends" | "/v1/health" => "GET",
        "/v1/cache/flush" => "POST",
        _ => return Reply::error(404, format!("no such endpoint: {path} (see docs/control-api.md)")),
    };
    if method.as_str() != allow {
        return Reply::not_allowed(allow, method, path);
    }
    match path {
        "/v1/stats" => Reply::json(200, &stats::collect(shared)),
        "/v1/backends" => Reply::json(200, &stats::collect(shared).backends),
        "/v1/health" => Reply::json(200, &serde_json::json!({ "status": "ok" })),
        _ => {
            let workers = shared.workers();
            let flushed = workers.iter().filter(|w| w.send(Control::FlushCache)).count();
            if flushed < workers.len() {
                tracing::warn!("cache flush reached {flushed} of {} workers", workers.len());
            } else {
                tracing::info!("cache flush sent to {flushed} workers");
            }
            Reply::json(200, &serde_json::json!({ "flushed_workers": flushed, "workers": workers.len() }))
        }
    }
}

fn route_metrics(shared: &Shared, rq: &Request) -> Reply {
    let path = path_of(rq.url());
    if path != "/metrics" {
        return Reply { status: 404, headers: vec![("Content-Type", "text/plain".into())], body: b"not found; try /metrics\n".to_vec() };
    }
    if *rq.method() != Method::Get {
        let mut r = Reply { status: 405, headers: vec![("Content-Type", "text/plain".into())], body: b"method not allowed\n".to_vec() };
        r.headers.push(("Allow", "GET".into()));
        return r;
    }
    Reply {
        status: 200,
        headers: vec![("Content-Type", metrics::CONTENT_TYPE.into())],
        body: metrics::render(
            &shared.workers(),
            &shared.info.backends,
            &shared.xdp(),
            &shared.info.limits,
            &shared.info.xdp_client_rate,
            shared.info.tcp_limits,
            shared.info.source_ports,
        )
        .into_bytes(),
    }
}
