//! A running daemon: its listening sockets, workers, records, control
//! server and handover end, from the start to the exit.
//!
//! Started on its own, kdns binds (or is passed) its listening sockets,
//! starts the AF_XDP path, then the socket workers. Started with
//! `--takeover` next to a running kdns, it receives that one's sockets
//! first, starts its socket workers on them (both processes now read the
//! same sockets), has the old one release its cache and AF_XDP queues,
//! loads the cache, starts the AF_XDP path (adopting the pinned program),
//! and lets the old one go: see [`crate::handover`]. Control socket and
//! metrics are bound once the old process is gone.

mod xdp_path;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::config::{IoMode, Settings};
use crate::handle::{self, IoStats, WorkerHandle};
use crate::handover::protocol::SocketDesc;
use crate::handover::{self, Event, Takeover};
use crate::listeners::{self, Listeners, Origin};
use crate::{control, docker, records, tcp, upstream_sockets, warm, worker};
use xdp_path::XdpPath;

/// How long a new kdns waits for the old one to stop after `done` before
/// binding the control socket and metrics anyway.
const OLD_EXIT_WAIT: Duration = Duration::from_secs(10);

/// Serves until SIGTERM or SIGINT, or until a newer kdns took over.
/// `passed`: the sockets passed at start by systemd or `kdns --supervise` (none: kdns binds its own, or
/// receives them in a takeover).
pub fn run(mut s: Settings, passed: Option<Listeners>, takeover: bool) -> Result<(), String> {
    let started = Instant::now();
    let (events_tx, events) = unbounded();
    forward_signals(events_tx.clone())?;
    let cores = if s.pin_workers { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    raise_file_limit(&s)?;

    // A takeover: the old kdns's sockets.
    let mut taking = None;
    let mut listeners = passed;
    if takeover {
        match Takeover::start(&s.handover_socket)? {
            Some((t, socks)) => {
                let fds = socks.into_iter().map(|(d, fd)| (d.transport.into(), d.addr, fd)).collect();
                let l = Listeners::from_fds(fds, &s.listen, s.tcp.enabled)
                    .map_err(|e| format!("the running kdns (pid {}) serves other sockets than this configuration: {e}", t.from_pid))?;
                tracing::info!("taking over from kdns pid {} (generation {}): received {}", t.from_pid, t.generation, l.describe());
                listeners = Some(l);
                taking = Some(t);
            }
            None => tracing::info!("--takeover: no kdns answers on {}; starting on its own", s.handover_socket.display()),
        }
    } else if handover::running(&s.handover_socket) {
        return Err(format!(
            "another kdns is running (it answers on {}): start this one with --takeover to replace it without losing a query, or stop that one first",
            s.handover_socket.display()
        ));
    }

    // The local records, before any worker: every worker starts with them.
    let records = records::prepare(&s.records);
    s.engine.records = Some(records.snapshot());
    let mut w = Workers { handles: Vec::new(), threads: Vec::new(), stop: Arc::new(AtomicBool::new(false)) };
    let mut xdp;
    let listeners = if let Some(t) = taking.as_mut() {
        // Socket workers first, on the shared sockets: when the old kdns
        // releases its queues, the kernel's share grows to everything.
        let listeners = listeners.expect("received");
        let udp_workers = if s.io == IoMode::Udp { s.workers } else { 1 };
        w.spawn_socket_workers(&s, &listeners, udp_workers, &cores)?;
        let cache = t.release()?;
        // The socket workers now get what the old kdns's AF_XDP workers
        // got: the cache goes to them at once, and into the AF_XDP
        // workers' engines as they are built.
        let warm =
            warm::checked(cache).map_err(|e| tracing::warn!("cache: the handed-over cache was not loaded: {e} (starting cold)")).ok();
        if let Some(wm) = &warm {
            if let Err(e) = warm::load(&w.handles, wm.dump.to_vec()) {
                tracing::warn!("cache: the handed-over cache was not loaded into the socket workers: {e}");
            }
        }
        s.engine.warm = warm;
        xdp = match XdpPath::start(&s, w.handles.len(), &cores) {
            Ok(x) => x,
            Err(e) => {
                taking.take().expect("taking").abandon(&e);
                return Err(format!("{e} (the old kdns takes its queues back and keeps serving)"));
            }
        };
        if !xdp.running() && s.io == IoMode::Auto && s.workers > udp_workers {
            w.spawn_socket_workers(&s, &listeners, s.workers - udp_workers, &cores)?;
        }
        w.handles.extend(xdp.handles().iter().cloned());
        if s.engine.warm.take().is_some() {
            warm::log_loaded(&w.handles, &format!("kdns pid {}", t.from_pid));
        }
        listeners
    } else {
        // The dump goes into every engine as it is built.
        s.engine.warm = s.cache_dump.as_deref().and_then(warm::read_file);
        xdp = XdpPath::start(&s, 0, &cores)?;
        w.handles.extend(xdp.handles().iter().cloned());
        // With AF_XDP, one socket worker serves what the XDP program passes
        // to the kernel (other queues, fragments); without it, one per core.
        let udp_workers = if xdp.running() { 1 } else { s.workers };
        let listeners = match listeners {
            Some(l) => l,
            None => Listeners::bind(&s.listen, s.tcp.enabled, udp_workers)?,
        };
        w.spawn_socket_workers(&s, &listeners, udp_workers, &cores)?;
        if let (Some(_), Some(path)) = (s.engine.warm.take(), &s.cache_dump) {
            warm::log_loaded(&w.handles, &path.display().to_string());
        }
        listeners
    };
    if listeners.origin() == Origin::Passed {
        tracing::info!("listening on the sockets passed at start (LISTEN_FDS: systemd or kdns --supervise): {}", listeners.describe());
    }
    let plane = records.start(&s.records, w.handles.clone()).map_err(|e| format!("records: {e}"))?;
    let provider = match &s.docker {
        Some(d) => Some(docker::start(d, plane.store()).map_err(|e| format!("Docker provider: {e}"))?),
        None => None,
    };
    let cluster = s.cluster.as_ref().map(|c| crate::cluster::start(c, plane.store())).transpose().map_err(|e| format!("cluster: {e}"))?;
    let (generation, record) = match taking {
        Some(t) => {
            let generation = t.generation + 1;
            let from = t.from_pid;
            let rec = t.done(OLD_EXIT_WAIT)?;
            tracing::info!(
                "took over from kdns pid {from} in {} ms: generation {generation}, {} sockets, {} KiB of cache, {} AF_XDP queues",
                rec.took.as_millis(),
                rec.sockets,
                rec.cache_bytes / 1024,
                rec.queues
            );
            (generation, Some(rec))
        }
        None => (1, None),
    };
    log_serving(&s, &w.handles);
    let took_over = record.is_some();
    let info = control::DaemonInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        started,
        listen: s.listen.clone(),
        backends: s.engine.backends.iter().map(|b| b.addr).collect(),
        pid: std::process::id(),
        generation,
        handover: record,
        xdp: xdp.counters(),
        limits: s.engine.limits,
        xdp_client_rate: if xdp.running() { s.xdp_client_rate } else { Default::default() },
        tcp_limits: (s.tcp.max_connections, s.tcp.max_connections_per_client),
        source_ports: s.ports.slots,
    };
    let extras = control::Extras {
        records: Some(plane.store()),
        tcp: s.records.control_tcp.zip(s.records.control_token.as_ref().map(|t| t.expose().to_string())),
    };
    let control = spawn_control(&s, &w.handles, info, extras, took_over);
    let server = match handover::Server::spawn(&s.handover_socket, events_tx) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("{e}: a kdns started with --takeover will not find this one");
            None
        }
    };

    // Workers restarted after an aborted handover: the records plane sends
    // them the records in use, and the control server counts them.
    let store = plane.store();
    let replace = |handles: Vec<WorkerHandle>, xdp: &XdpPath| {
        store.replace_workers(handles.clone());
        if let Some(c) = &control {
            c.replace_workers(handles, xdp.counters());
        }
    };
    let ctx = Serving { s: &s, events: &events, listeners: &listeners, generation, cores: &cores, replace: &replace };
    let end = serve(&ctx, &mut w, &mut xdp);
    match end {
        End::Signal(sig) => tracing::info!("{} received: finishing queries in flight", if sig == SIGINT { "SIGINT" } else { "SIGTERM" }),
        End::HandedOver(pid) => tracing::info!("handed over to kdns pid {pid}: finishing queries in flight"),
    }
    if let Some(p) = provider {
        p.shutdown();
    }
    if let Some(c) = cluster {
        c.shutdown();
    }
    plane.shutdown();
    let handed_over = matches!(end, End::HandedOver(_));
    let dump = s.cache_dump.as_ref().filter(|_| !handed_over);
    warm::want_at_stop(&w.handles, dump.is_some());
    // The queues first: what arrives from now on waits in the kernel's
    // sockets (held by systemd, or the next kdns's) rather than in rings
    // nobody reads.
    xdp.release();
    w.stop_all();
    if let Some(path) = dump {
        warm::dump_at_stop(&w.handles, path);
    }
    drop(xdp);
    if let Some(c) = control {
        c.shutdown();
    }
    if let Some(h) = server {
        h.shutdown(handed_over);
    }
    let queries: u64 = w.handles.iter().map(|h| h.engine.queries.get()).sum();
    let replies: u64 = w.handles.iter().map(|h| h.engine.replies()).sum();
    let lost: u64 = w.handles.iter().map(|h| IoStats::get(&h.io.lost_at_shutdown)).sum();
    tracing::info!("stopped after {:.1} s: {queries} queries, {replies} replies, {lost} lost in flight", started.elapsed().as_secs_f64());
    if handed_over && !s.exit_after_handover {
        drop(listeners);
        tracing::info!("handed over; waiting for SIGTERM (server.exit_after_handover = false)");
        while !matches!(events.recv(), Ok(Event::Signal(_)) | Err(_)) {}
    }
    Ok(())
}

/// How long a kdns that took over tries again to bind the control socket
/// and metrics: the old process has closed them when the handover ends,
/// but the HTTP server's accept thread lets go of its listener a moment
/// later.
const REBIND_WITHIN: Duration = Duration::from_secs(3);

/// The control server; after a takeover, binding again while the old
/// process's listeners are still going away (address in use).
fn spawn_control(
    s: &Settings,
    handles: &[WorkerHandle],
    info: control::DaemonInfo,
    extras: control::Extras,
    took_over: bool,
) -> Option<control::ControlServer> {
    let started = Instant::now();
    loop {
        match control::spawn_with(&s.control_socket, s.metrics, handles.to_vec(), info.clone(), extras.clone()) {
            Ok(c) => return Some(c),
            Err(e) if took_over && e.kind() == std::io::ErrorKind::AddrInUse && started.elapsed() < REBIND_WITHIN => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!("{e}; kdns-ctl will not reach this instance");
                return None;
            }
        }
    }
}

/// Why [`serve`] returned.
enum End {
    Signal(i32),
    HandedOver(u32),
}

/// What [`serve`] answers with.
#[derive(Clone, Copy)]
struct Serving<'a> {
    s: &'a Settings,
    events: &'a Receiver<Event>,
    listeners: &'a Listeners,
    generation: u64,
    cores: &'a [core_affinity::CoreId],
    /// Tells the records plane and the control server of a new worker list.
    replace: &'a dyn Fn(Vec<WorkerHandle>, &XdpPath),
}

/// Answers the handover's requests until a signal or a completed handover.
fn serve(ctx: &Serving<'_>, w: &mut Workers, xdp: &mut XdpPath) -> End {
    let Serving { s, events, listeners, generation, cores, replace } = *ctx;
    let mut snapshot: Option<Vec<u8>> = None;
    loop {
        let Ok(ev) = events.recv() else { return End::Signal(SIGTERM) };
        match ev {
            Event::Signal(sig) => return End::Signal(sig),
            Event::HandedOver { pid } => return End::HandedOver(pid),
            Event::Listeners(reply) => {
                let r = listeners.duplicates().map_err(|e| format!("cannot duplicate the listening sockets: {e}")).map(|v| {
                    let socks = v.into_iter().map(|(t, addr, fd)| (SocketDesc { transport: t.into(), addr }, fd)).collect();
                    (generation, socks)
                });
                let _ = reply.send(r);
            }
            Event::Release(reply) => {
                let t = Instant::now();
                let cache = warm::snapshot(&w.handles);
                let queues = xdp.release();
                tracing::info!(
                    "handover: released {queues} AF_XDP queues and {} KiB of cache in {} ms",
                    cache.len() / 1024,
                    t.elapsed().as_millis()
                );
                snapshot = Some(cache.clone());
                let _ = reply.send(Ok((cache, queues)));
            }
            Event::Aborted { pid, reason } => {
                tracing::warn!("handover to kdns pid {pid} failed ({reason}): serving on");
                if !xdp.running() && s.io != IoMode::Udp {
                    w.handles.retain(|h| h.kind != handle::WorkerKind::Xdp);
                    match XdpPath::start(s, w.handles.len(), cores) {
                        Ok(x) => {
                            *xdp = x;
                            w.handles.extend(xdp.handles().iter().cloned());
                            if let Some(c) = snapshot.take() {
                                let _ = warm::load(xdp.handles(), c);
                            }
                            replace(w.handles.clone(), xdp);
                            tracing::info!("AF_XDP queues taken back");
                        }
                        Err(e) => tracing::error!("cannot take the AF_XDP queues back ({e}): serving with the socket workers only"),
                    }
                }
            }
        }
    }
}

/// The socket workers (UDP and TCP) and their stop flag.
struct Workers {
    handles: Vec<WorkerHandle>,
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl Workers {
    /// Starts `n` UDP workers on `listeners` (and the TCP server, the first
    /// time).
    fn spawn_socket_workers(&mut self, s: &Settings, l: &Listeners, n: usize, cores: &[core_affinity::CoreId]) -> Result<(), String> {
        l.set_udp_receive_buffer(s.udp_receive_buffer);
        let first = self.handles.len();
        for i in 0..n {
            let id = first + i;
            let mut listen = Vec::new();
            for &addr in &s.listen {
                let socks = l.udp(addr, i, n).map_err(|e| format!("udp {addr}: {e}{}", listeners::hint(&e)))?;
                listen.extend(socks.into_iter().map(|sock| (addr, sock)));
            }
            let engine = s.engine_for_worker(kdns_sys::random_seed());
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let stop = Arc::clone(&self.stop);
            let (h, t) = worker::spawn(worker::WorkerSetup { id, core, engine, listen, ports: s.ports.clone(), stop })
                .map_err(|e| format!("worker {id}: {e}"))?;
            self.handles.push(h);
            self.threads.push(t);
        }
        if s.tcp.enabled && !self.handles.iter().any(|h| h.kind == handle::WorkerKind::Tcp) {
            let mut listen = Vec::new();
            for &addr in &s.listen {
                let t = l.tcp(addr).map_err(|e| format!("tcp {addr}: {e}{}", listeners::hint(&e)))?;
                listen.push((addr, t));
            }
            let engine = s.engine_for_worker(kdns_sys::random_seed());
            let (h, t) = tcp::spawn(tcp::TcpSetup {
                id: self.handles.len(),
                listen,
                engine,
                cfg: s.tcp.clone(),
                ports: s.ports.clone(),
                stop: Arc::clone(&self.stop),
            })
            .map_err(|e| format!("tcp: {e}"))?;
            self.handles.push(h);
            self.threads.push(t);
        }
        Ok(())
    }

    /// Stops the socket workers (each drains its queries in flight).
    fn stop_all(&mut self) {
        stop_and_join(&self.stop, &self.handles, &mut self.threads);
    }
}

/// Sets `stop`, wakes the workers of `handles` and waits for `threads`:
/// each worker drains its queries in flight first.
fn stop_and_join(stop: &AtomicBool, handles: &[WorkerHandle], threads: &mut Vec<JoinHandle<()>>) {
    stop.store(true, Ordering::Release);
    for h in handles {
        let _ = h.waker.wake();
    }
    for t in threads.drain(..) {
        let _ = t.join();
    }
}

/// Every worker holds up to this many sockets to the backends (its source
/// ports and the old ones still read); AF_XDP queue workers are counted as
/// one per core.
fn raise_file_limit(s: &Settings) -> Result<(), String> {
    let backends: Vec<SocketAddr> = s.engine.backends.iter().map(|b| b.addr).collect();
    let (v4, v6) = upstream_sockets::families(&backends);
    let per_worker = s.ports.max_sockets(usize::from(v4) + usize::from(v6)) as u64;
    let workers = s.workers.max(std::thread::available_parallelism().map_or(1, |n| n.get())) as u64 + 2;
    kdns_sys::rlimit::ensure_open_files(
        workers * per_worker + 1024,
        &format!("upstream.source_ports = {} ({workers} workers)", s.ports.slots),
    )
}

/// SIGTERM and SIGINT become [`Event::Signal`].
fn forward_signals(tx: Sender<Event>) -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("signals: {e}"))?;
    std::thread::Builder::new()
        .name("kdns-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("signals: {e}"))
}

/// The start-up line.
fn log_serving(s: &Settings, handles: &[WorkerHandle]) {
    let backends: Vec<String> = s.engine.backends.iter().map(|b| b.addr.to_string()).collect();
    let xdp_workers = handles.iter().filter(|h| h.kind == handle::WorkerKind::Xdp).count();
    tracing::info!(
        "kdns {} serving {}udp{} on {} with {} worker{}{}; backends {} (from {}); clients allowed from {}",
        env!("CARGO_PKG_VERSION"),
        if xdp_workers > 0 {
            format!("AF_XDP ({xdp_workers} queue worker{}) + kernel ", if xdp_workers == 1 { "" } else { "s" })
        } else {
            String::new()
        },
        if s.tcp.enabled { "+tcp" } else { "" },
        crate::join(&s.listen),
        handles.len(),
        if handles.len() == 1 { "" } else { "s" },
        xdp_scheduling(handles, s.realtime_priority),
        backends.join(", "),
        s.backends_from,
        s.engine.acl.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
    );
}

/// How the AF_XDP workers are scheduled, as they report it (each switches
/// itself when it starts; this waits up to a second for them): the
/// start-up line says what they got, not what was asked.
fn xdp_scheduling(handles: &[WorkerHandle], asked: u32) -> String {
    let xdp: Vec<&WorkerHandle> = handles.iter().filter(|h| h.kind == handle::WorkerKind::Xdp).collect();
    if xdp.is_empty() {
        return String::new();
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while xdp.iter().any(|h| h.io.sched.get() == 0) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let rt = xdp.iter().filter(|h| h.io.sched.get() > 1).count();
    match (asked, rt) {
        (0, _) => " (AF_XDP workers at normal priority)".into(),
        (p, n) if n == xdp.len() => format!(" (AF_XDP workers in SCHED_FIFO {p})"),
        (p, 0) => format!(" (AF_XDP workers at normal priority: SCHED_FIFO {p} was refused)"),
        (p, n) => format!(" ({n} of {} AF_XDP workers in SCHED_FIFO {p}, the others at normal priority: refused)", xdp.len()),
    }
}
