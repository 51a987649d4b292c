//! kdns: a host-local DNS fast path for containers.
//!
//! This is the daemon: configuration, workers, the TCP server, the control
//! socket and signal handling. The DNS logic lives in `kdns-core`; every
//! `unsafe` lives in `kdns-sys`.

#![forbid(unsafe_code)]

mod config;
mod control;
mod docker;
mod driver;
mod handle;
mod handover;
mod listeners;
mod records;
mod tcp;
mod upstream_sockets;
mod warm;
mod worker;
#[cfg(feature = "xdp")]
mod xdp;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::config::Settings;
use crate::handle::{IoStats, WorkerHandle};

fn main() -> ExitCode {
    let m = config::command().get_matches();
    if m.get_flag("print-config-reference") {
        print!("{}", config::reference_table());
        return ExitCode::SUCCESS;
    }
    // Before any thread or file: the descriptors from 3 up are systemd's.
    let passed = kdns_sys::listen_fds::take();
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    let cores = core_affinity::get_core_ids().map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |c| c.len());
    let settings = match config::load(&m, resolv.as_deref(), cores) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kdns: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if m.get_flag("check-config") {
        print_settings(&settings);
        return match records::check(&settings.records) {
            Ok(summary) => {
                println!("records:         {summary}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("kdns: configuration error: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(&settings.log_level);
    if m.get_flag("uninstall-xdp") {
        return uninstall_xdp(&settings);
    }
    let listeners = match passed.and_then(|p| listeners::Listeners::activated(p, &settings.listen, settings.tcp.enabled)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kdns: {e}");
            return ExitCode::from(1);
        }
    };
    match run(settings, listeners) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("kdns: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kdns={level},warn")));
    tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr).init();
}

fn print_settings(s: &Settings) {
    println!("listen:          {}", join(&s.listen));
    println!(
        "workers:         {} (pinned: {}; {})",
        s.workers,
        s.pin_workers,
        if s.realtime_priority > 0 { format!("AF_XDP workers in SCHED_FIFO {}", s.realtime_priority) } else { "normal scheduling".into() }
    );
    let b: Vec<String> = s
        .engine
        .backends
        .iter()
        .map(|b| if b.weight > 1 { format!("{} (weight {})", b.addr, b.weight) } else { b.addr.to_string() })
        .collect();
    println!("backends:        {} (from {})", b.join(", "), s.backends_from);
    println!("allowed clients: {}", s.engine.acl.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "));
    println!(
        "cache:           {} entries per worker, TTL {}..{} s",
        s.engine.cache.max_entries, s.engine.cache.min_ttl, s.engine.cache.max_ttl
    );
    println!("cache dump:      {}", s.cache_dump.as_ref().map_or("(none)".into(), |p| p.display().to_string()));
    println!("tcp:             {}", if s.tcp.enabled { "on" } else { "off" });
    println!("control socket:  {}", s.control_socket.display());
    println!("metrics:         {}", s.metrics.map_or("off".into(), |m| m.to_string()));
    let r = &s.records;
    println!("local domains:   {}", if r.domains.is_empty() { "(none)".into() } else { r.domains.join(", ") });
    println!("records file:    {}", r.file.as_ref().map_or("(none)".into(), |p| p.display().to_string()));
    match &s.docker {
        None => println!("docker:          off"),
        Some(d) => println!(
            "docker:          {} (networks: {}; containers still starting: {})",
            d.socket.display(),
            if d.networks.is_empty() { "those holding a listen address".into() } else { d.networks.join(", ") },
            if d.serve_starting { "served" } else { "hidden" }
        ),
    }
    println!("state file:      {}", r.state_file.as_ref().map_or("(none)".into(), |p| p.display().to_string()));
    println!("control tcp:     {}", r.control_tcp.map_or("off".into(), |a| format!("{a} (bearer token)")));
}

fn join(a: &[SocketAddr]) -> String {
    a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
}

/// Serves until SIGTERM or SIGINT. `listeners`: the sockets systemd
/// passed (none: kdns binds its own once it knows how many UDP workers
/// read them).
fn run(s: Settings, listeners: Option<listeners::Listeners>) -> Result<(), String> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let cores = if s.pin_workers { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let mut handles: Vec<WorkerHandle> = Vec::new();
    let mut threads = Vec::new();
    // Every worker holds up to this many sockets to the backends (its
    // source ports and the old ones still read); AF_XDP queue workers are
    // counted as one per core.
    let backends: Vec<SocketAddr> = s.engine.backends.iter().map(|b| b.addr).collect();
    let (v4, v6) = upstream_sockets::families(&backends);
    let per_worker = s.ports.max_sockets(usize::from(v4) + usize::from(v6)) as u64;
    let workers = s.workers.max(std::thread::available_parallelism().map_or(1, |n| n.get())) as u64 + 2;
    kdns_sys::rlimit::ensure_open_files(
        workers * per_worker + 1024,
        &format!("upstream.source_ports = {} ({workers} workers)", s.ports.slots),
    )?;
    let xdp_runtime = start_xdp(&s, &stop, &cores, &mut handles, &mut threads)?;
    // With AF_XDP, one socket worker serves what the XDP program passes to
    // the kernel (other queues, fragments); without it, one per core.
    let udp_workers = if xdp_runtime.is_some() { 1 } else { s.workers };
    let listeners = match listeners {
        Some(l) => l,
        None => listeners::Listeners::bind(&s.listen, s.tcp.enabled, udp_workers)?,
    };
    listeners.set_udp_receive_buffer(s.udp_receive_buffer);
    let first = handles.len();
    for id in first..first + udp_workers {
        let mut listen = Vec::new();
        for &addr in &s.listen {
            let socks = listeners.udp(addr, id - first, udp_workers).map_err(|e| format!("udp {addr}: {e}"))?;
            listen.extend(socks.into_iter().map(|sock| (addr, sock)));
        }
        let engine = s.engine_for_worker(kdns_sys::random_seed());
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let (h, t) = worker::spawn(worker::WorkerSetup { id, core, engine, listen, ports: s.ports.clone(), stop: Arc::clone(&stop) })
            .map_err(|e| format!("worker {id}: {e}"))?;
        handles.push(h);
        threads.push(t);
    }
    if s.tcp.enabled {
        let mut listen = Vec::new();
        for &addr in &s.listen {
            let l = listeners.tcp(addr).map_err(|e| format!("tcp {addr}: {e}"))?;
            listen.push((addr, l));
        }
        let engine = s.engine_for_worker(kdns_sys::random_seed());
        let (h, t) = tcp::spawn(tcp::TcpSetup {
            id: handles.len(),
            listen,
            engine,
            cfg: s.tcp.clone(),
            ports: s.ports.clone(),
            stop: Arc::clone(&stop),
        })
        .map_err(|e| format!("tcp: {e}"))?;
        handles.push(h);
        threads.push(t);
    }
    if listeners.origin() == listeners::Origin::Systemd {
        tracing::info!("listening on the sockets systemd passed (socket activation): {}", listeners.describe());
    }
    if let Some(path) = &s.cache_dump {
        warm::load_file(&handles, path);
    }
    let backends: Vec<SocketAddr> = s.engine.backends.iter().map(|b| b.addr).collect();
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
        join(&s.listen),
        handles.len(),
        if handles.len() == 1 { "" } else { "s" },
        xdp_scheduling(&handles, s.realtime_priority),
        join(&backends),
        s.backends_from,
        s.engine.acl.nets().iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
    );
    let info = control::DaemonInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        started,
        listen: s.listen.clone(),
        backends,
        pid: std::process::id(),
        xdp: xdp_counters(&xdp_runtime),
        limits: s.engine.limits,
        xdp_client_rate: if xdp_runtime.is_some() { s.xdp_client_rate } else { Default::default() },
        tcp_limits: (s.tcp.max_connections, s.tcp.max_connections_per_client),
        source_ports: s.ports.slots,
    };
    let plane = records::start(&s.records, handles.clone()).map_err(|e| format!("records: {e}"))?;
    let provider = match &s.docker {
        Some(d) => Some(docker::start(d, plane.store()).map_err(|e| format!("Docker provider: {e}"))?),
        None => None,
    };
    let extras = control::Extras {
        records: Some(plane.store()),
        tcp: s.records.control_tcp.zip(s.records.control_token.as_ref().map(|t| t.expose().to_string())),
    };
    let control = match control::spawn_with(&s.control_socket, s.metrics, handles.clone(), info, extras) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!("{e}; kdns-ctl will not reach this instance");
            None
        }
    };

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("signals: {e}"))?;
    let sig = signals.forever().next().unwrap_or(SIGTERM);
    tracing::info!("{} received: finishing queries in flight", if sig == SIGINT { "SIGINT" } else { "SIGTERM" });
    if let Some(p) = provider {
        p.shutdown();
    }
    plane.shutdown();
    warm::want_at_stop(&handles, s.cache_dump.is_some());
    stop.store(true, Ordering::Release);
    for h in &handles {
        let _ = h.waker.wake();
    }
    for t in threads {
        let _ = t.join();
    }
    if let Some(path) = &s.cache_dump {
        warm::dump_at_stop(&handles, path);
    }
    // Detaches the XDP program once the workers are gone, or leaves it
    // pinned (socket-only builds have nothing to drop).
    #[cfg_attr(not(feature = "xdp"), allow(dropping_copy_types))]
    drop(xdp_runtime);
    if let Some(c) = control {
        c.shutdown();
    }
    let queries: u64 = handles.iter().map(|h| h.engine.queries.get()).sum();
    let replies: u64 = handles.iter().map(|h| h.engine.replies()).sum();
    let lost: u64 = handles.iter().map(|h| IoStats::get(&h.io.lost_at_shutdown)).sum();
    tracing::info!("stopped after {:.1} s: {queries} queries, {replies} replies, {lost} lost in flight", started.elapsed().as_secs_f64());
    Ok(())
}

/// How the AF_XDP workers are scheduled, as they report it (each switches
/// itself when it starts; this waits up to a second for them): the
/// start-up line says what they got, not what was asked.
fn xdp_scheduling(handles: &[WorkerHandle], asked: u32) -> String {
    let xdp: Vec<&WorkerHandle> = handles.iter().filter(|h| h.kind == handle::WorkerKind::Xdp).collect();
    if xdp.is_empty() {
        return String::new();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while xdp.iter().any(|h| h.io.sched.get() == 0) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let rt = xdp.iter().filter(|h| h.io.sched.get() > 1).count();
    match (asked, rt) {
        (0, _) => " (AF_XDP workers at normal priority)".into(),
        (p, n) if n == xdp.len() => format!(" (AF_XDP workers in SCHED_FIFO {p})"),
        (p, 0) => format!(" (AF_XDP workers at normal priority: SCHED_FIFO {p} was refused)"),
        (p, n) => format!(" ({n} of {} AF_XDP workers in SCHED_FIFO {p}, the others at normal priority: refused)", xdp.len()),
    }
}

/// `kdns --uninstall-xdp`: prints what it removed; 1 on an error.
fn uninstall_xdp(s: &Settings) -> ExitCode {
    #[cfg(feature = "xdp")]
    let r = xdp::uninstall::uninstall(&s.xdp.pin_dir, &s.xdp.interfaces);
    #[cfg(not(feature = "xdp"))]
    let r: Result<Vec<String>, String> = Err(format!("built without AF_XDP support: cannot remove what is pinned under {}", s.xdp.pin_dir));
    match r {
        Ok(lines) => {
            lines.iter().for_each(|l| println!("{l}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kdns: --uninstall-xdp: {e}");
            ExitCode::from(1)
        }
    }
}

/// What keeps the AF_XDP path alive (nothing when built without it).
#[cfg(feature = "xdp")]
type XdpRuntime = xdp::setup::XdpRuntime;
#[cfg(not(feature = "xdp"))]
type XdpRuntime = ();

/// The XDP counter sources of a running AF_XDP path.
fn xdp_counters(rt: &Option<XdpRuntime>) -> Vec<Arc<dyn handle::XdpCounterSource>> {
    #[cfg(feature = "xdp")]
    {
        rt.as_ref().map(|r| r.counters()).unwrap_or_default()
    }
    #[cfg(not(feature = "xdp"))]
    {
        let _ = rt;
        Vec::new()
    }
}

/// Starts the AF_XDP workers when the configuration asks for them.
fn start_xdp(
    s: &Settings,
    stop: &Arc<AtomicBool>,
    cores: &[core_affinity::CoreId],
    handles: &mut Vec<WorkerHandle>,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
) -> Result<Option<XdpRuntime>, String> {
    use config::IoMode;
    if s.io == IoMode::Udp {
        return Ok(None);
    }
    #[cfg(feature = "xdp")]
    {
        match xdp::setup::start(s, stop, handles.len(), cores) {
            Ok((rt, hs, ts)) => {
                handles.extend(hs);
                threads.extend(ts);
                Ok(Some(rt))
            }
            Err(e) if s.io == IoMode::Auto => {
                tracing::info!("AF_XDP not used: {e}; serving with UDP sockets");
                Ok(None)
            }
            Err(e) => Err(format!("AF_XDP: {e}")),
        }
    }
    #[cfg(not(feature = "xdp"))]
    {
        let _ = (stop, cores, handles, threads);
        match s.io {
            IoMode::Xdp => Err("this kdns was built without AF_XDP support (cargo feature `xdp`)".into()),
            _ => {
                tracing::info!("AF_XDP not used: built without the `xdp` feature; serving with UDP sockets");
                Ok(None)
            }
        }
    }
}
