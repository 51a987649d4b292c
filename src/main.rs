//! kdns: a host-local DNS fast path for containers.
//!
//! This is the daemon: configuration, workers, the TCP server, the control
//! socket and signal handling. The DNS logic lives in `kdns-core`.

mod config;
mod control;
mod docker;
mod driver;
mod handle;
mod io;
mod records;
mod tcp;
mod upstream_sockets;
mod worker;
#[cfg(feature = "xdp")]
mod xdp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::config::{Overrides, Settings};
use crate::handle::{IoStats, WorkerHandle};

const LONG_ABOUT: &str = "\
kdns answers the DNS queries of the containers on a host from per-core
caches and sends cache misses round-robin to a pool of recursive resolvers
(Unbound), tracking their health from the traffic itself: a backend that
stops answering costs one retry on another backend, is marked down after a
few timeouts, probed with backoff, and taken back when it answers again.

Each worker thread is pinned to a core and owns its own cache, its own
SO_REUSEPORT UDP sockets (batched with recvmmsg/sendmmsg) and its own
sockets to the backends: a pool of source ports picked by the kernel at
random, one chosen at random per query and replaced now and then, so a
forwarded query is not guarded by its 16-bit ID alone; an answer that
arrives on another port than its query left from is dropped and counted.
Nothing is shared between workers. A TCP server
on the same addresses answers TCP queries (RFC 7766: pipelining, idle
timeout, a connection limit per client address and in all; when the
table is full the longest-idle connection is closed for the new one) and
clients whose UDP answer was truncated.

With no arguments kdns serves at once: UDP and TCP on 127.0.0.1:5353,
backends taken from /etc/resolv.conf (kdns's own addresses skipped),
clients allowed from loopback only. Options on the command line override
the configuration file; every setting has a default.";

const AFTER_HELP: &str = "\
CONFIGURATION FILE (TOML; every key optional, defaults shown):
    [server]
    listen = [\"127.0.0.1:5353\"]    # UDP and TCP; \"[::1]:53\" for IPv6
    workers = \"auto\"                # or a number; one per core by default
    pin_workers = true
    allow = [\"127.0.0.0/8\", \"::1/128\"]   # others get REFUSED
    udp_size = 1232                  # EDNS UDP payload size we offer
    control_socket = \"/run/kdns/control.sock\"
    metrics = \"\"                     # e.g. \"127.0.0.1:9153\" for /metrics
    log_level = \"info\"
    io = \"auto\"                     # \"xdp\", \"udp\" or \"auto\" (AF_XDP where it attaches)

    [cache]                          # per worker
    entries = 65536
    min_ttl = 0
    max_ttl = 86400
    negative_max_ttl = 3600          # NXDOMAIN/NODATA (RFC 2308)
    servfail_ttl = 2                 # at most 30
    stale_window = 3600              # serve expired answers this long if no backend answers
    prefetch_percent = 10            # refresh popular entries in the last 10% of their TTL

    [upstream]
    backends = [\"10.53.0.2\", { address = \"10.53.0.3:53\", weight = 2 }]
    selection = \"round-robin\"       # or \"least-outstanding\"
    try_timeout_ms = 800             # the longest a try waits, and the wait before a
                                     # backend's first answer; then its own RTO
    try_timeout_min_ms = 50          # the shortest try timeout
    max_tries = 3
    query_deadline_ms = 3000         # then a stale answer or SERVFAIL
    down_after_timeouts = 3          # silent timeouts in a row: suspect, a probe decides
    failure_ratio = 0.5              # share of silent timeouts over the last `window`
    window = 20                      #   outcomes that makes a backend suspect
    up_after = 2                     # good probe answers to come back
    probe_initial_ms = 500
    probe_max_ms = 8000
    probe_name = \"id.server.\"        # probed with CH TXT; any answer counts
    max_in_flight = 4096             # per worker
    coalesce = true                  # identical questions in flight go upstream once
    randomize_case = true            # 0x20 on forwarded questions, checked on answers
    source_ports = 16                # per worker: sockets on random ports, one picked per query
    source_port_rotate_after = 100   # a slot gets a new random port after this many queries
    source_port_rotate_ms = 10000    # ... or this old (0 turns either off); old sockets are
                                     # read until query_deadline_ms has passed

    [limits]                         # fair shares per client, per worker (misses only)
    client_prefix_v4 = 32            # clients within one /N are one client
    client_prefix_v6 = 64
    client_max_pending = 256         # queries waiting upstream at once (0: no share);
                                     # default: a sixteenth of max_in_flight
    client_miss_rate = 5000          # misses sent upstream per second (0: no limit)
    client_miss_burst = 10000
    over_limit = \"servfail\"          # what a client over its share gets:
                                     # \"servfail\", \"refused\" or \"drop\" (counted)
    clients = 4096                   # clients tracked per worker
    xdp_client_qps = 0               # queries (hits too) per client per second, enforced
                                     # in the XDP program: over it, dropped before any
                                     # copy (the queues' \"dropped\"); 0: off
    xdp_client_burst = 200
    xdp_clients = 65536              # clients the XDP program tracks (LRU)

    [tcp]
    enabled = true
    idle_timeout_ms = 10000
    max_connections = 1024           # when full, the longest-idle connection makes room
    max_connections_per_client = 64  # per client address; more are closed at once

    [xdp]                            # used when io is \"xdp\" or \"auto\"
    interfaces = []                  # default: those holding a listen address
    queues = []                      # default: every RX queue
    busy_poll = false                # spin instead of sleeping when idle
    frame_size = 2048                # UMEM frame size, 2048 or 4096
    frames = 4096                    # per queue
    ring_size = 2048                 # RX/TX/fill/completion rings
    zero_copy = true                 # tried first; copy mode otherwise
    realtime_priority = 10           # SCHED_FIFO priority of the AF_XDP workers, 1-99;
                                     # 0: normal scheduling (the default with busy_poll)

    [records]                        # local service discovery (docs/control-api.md)
    domains = []                     # e.g. [\"kdns\"]: answered by kdns itself
    default_ttl = 10
    file = \"\"                        # records file (TOML), reloaded when it changes
    state_file = \"/var/lib/kdns/records.json\"   # changes made through the API
    control_tcp = \"\"                 # e.g. \"127.0.0.1:5380\": the control API on TCP too
    control_token_file = \"\"          # its bearer token (required with control_tcp)

    [docker]                         # names learnt from the Docker engine
    enabled = false                  # --docker; needs a local domain
    socket = \"/var/run/docker.sock\" # the engine's API socket (--docker-socket)
    networks = []                    # served networks, by name or compose name;
                                     # default: those whose subnet holds a listen address
    starting = \"serve\"              # a container whose healthcheck has not passed
                                     # yet: \"serve\" or \"hide\"

AF_XDP:
    With io = \"xdp\" or \"auto\", kdns attaches its XDP program (through a
    bpf_link: it goes away when kdns exits, even on kill -9) to the
    interfaces holding the listen addresses and opens one AF_XDP socket per
    RX queue, each served by a worker pinned to a core. Only UDP queries to
    a listen address and port are redirected; ARP, ND, ICMP, TCP and
    everything else stay with the kernel, and one socket worker and the TCP
    server keep serving what the program passes. Loopback and wildcard
    listen addresses have no AF_XDP path: \"auto\" then uses sockets and
    logs why. A stale XDP program left on the interface by a crash or
    another tool is replaced, with a log line. The AF_XDP workers run in
    SCHED_FIFO (xdp.realtime_priority, 10): the kernel's receive path on
    the same core then runs only while the worker is idle, so a flood is
    shed before it costs the core anything. This needs CAP_SYS_NICE (kdns
    logs a warning and runs at normal priority without it); set 0 if other
    real-time work shares those cores.

ONE CLIENT CANNOT TAKE DNS DOWN:
    A try waits for its backend's own retransmission timeout (smoothed RTT
    plus four deviations, within try_timeout_min_ms and try_timeout_ms).
    When it runs out and that backend answered anything since the try
    left, the name is slow, not the backend: the query keeps waiting there
    (to query_deadline_ms) and nothing is held against the backend. A try
    met by silence is retried on another backend, and an answer from any
    backend asked is taken. down_after_timeouts silent timeouts in a row
    make a backend suspect: a probe is sent at once, and only its timing
    out takes the backend down. Each client (an address, or the /N of
    [limits]) may hold client_max_pending of a worker's max_in_flight and
    send client_miss_rate misses per second upstream; over that it gets an
    immediate SERVFAIL (or REFUSED, or nothing), counted in kdns-ctl stats
    and /metrics; hits and local answers are never limited. Identical
    questions in flight go upstream once and every client waiting on one
    gets its answer. Forwarded questions carry a random ID and 0x20 case;
    an answer that does not repeat both is dropped and counted. With
    AF_XDP, xdp_client_qps bounds every query of a client (hits too) in
    the XDP program itself, so a flood over it costs no copy.

LOCAL RECORDS:
    Names under the local domains are answered by kdns itself: web.kdns
    (the healthy instances of service web), web-2.kdns (instance 2),
    _http._tcp.web.kdns (SRV), static records, PTR of every instance
    address; a bare \"web\" is web.<first domain>. They come from the
    records file (--records-file; polled every second, a bad version is
    logged and the previous one kept), e.g.:
        domains = [\"kdns\"]
        [[service]]
        name = \"web\"
        mode = \"all\"                 # \"all\", \"random-one\" or \"sticky\"
        ports = [{ name = \"http\", proto = \"tcp\", port = 8080 }]
        check = { kind = \"tcp\", interval_ms = 1000, rise = 2, fall = 2 }   # port: 8080
        instances = [{ id = \"c1\", addrs = [\"10.0.0.1\", \"fd00::1\"] }]
        [[record]]
        name = \"db.kdns\"
        type = \"A\"                   # A AAAA CNAME TXT SRV PTR
        data = \"10.5.0.1\"
    and from changes made through the control API (kdns-ctl), kept in the
    state file; a service defined both ways is the API's.

DOCKER:
    With docker.enabled (--docker), kdns follows the Docker engine's API:
    every running container attached to a served network is an instance
    of a service, named by its label kdns.service, else its compose
    service, else its container name; web.kdns answers the running
    replicas, web-2.kdns the compose replica 2, and the container's name
    and its network aliases answer too (a bare name through the search
    domain). A container whose healthcheck fails leaves the answers.
    Labels: kdns.mode (all, random-one, sticky), kdns.ttl (seconds),
    kdns.ports (\"http:8080/tcp,dns:53/udp\": SRV records), kdns.enable=false
    (left out). A name that is not a DNS label is skipped with a warning
    naming the container. The names merge with the records file and the
    API's changes (which win a name both claim) and show in
    `kdns-ctl records list` with source docker. If the engine cannot be
    reached, kdns says why once, keeps serving what it learnt, retries
    (1 s doubling to 30 s) and resyncs everything when it is back.
    Containers reach kdns directly when their /etc/resolv.conf names it
    (see the README: on a user-defined network Docker's own resolver,
    127.0.0.11, would otherwise sit in front).

EXIT STATUS:
    0  stopped by SIGINT or SIGTERM
    1  could not start (a socket could not be opened, ...)
    2  bad command line or configuration (the message names the key)

EXAMPLES:
    kdns
    kdns --listen 10.53.0.1:53 --backend 10.53.1.1 --backend 10.53.1.2 --allow 10.0.0.0/8
    kdns --config /etc/kdns/kdns.toml
    kdns --records-file /etc/kdns/records.toml --domain kdns
    kdns-ctl stats";

/// Command-line options.
#[derive(Debug, Parser)]
#[command(name = "kdns", version, about = "Host-local DNS fast path for containers", long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
struct Cli {
    /// Configuration file (TOML). Without it, built-in defaults apply.
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve UDP and TCP on; repeat for several (replaces server.listen).
    #[arg(short, long, value_name = "ADDR[:PORT]")]
    listen: Vec<String>,
    /// Resolver to send misses to, port 53 by default; repeat for several (replaces upstream.backends).
    #[arg(short, long, value_name = "ADDR[:PORT][@WEIGHT]")]
    backend: Vec<String>,
    /// UDP worker threads: a number or "auto" (one per core).
    #[arg(short, long, value_name = "N|auto")]
    workers: Option<String>,
    /// Cache entries per worker.
    #[arg(long, value_name = "N")]
    cache_entries: Option<usize>,
    /// Network allowed to query (others get REFUSED); repeat for several (replaces server.allow).
    #[arg(short, long, value_name = "NET")]
    allow: Vec<String>,
    /// Control socket path (for kdns-ctl).
    #[arg(long, value_name = "PATH")]
    control_socket: Option<String>,
    /// Serve Prometheus metrics on this address.
    #[arg(long, value_name = "ADDR[:PORT]")]
    metrics: Option<String>,
    /// Log level: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// How queries are read: "xdp" (AF_XDP sockets, one per NIC queue), "udp" (kernel sockets), or "auto" (AF_XDP where it can attach, sockets otherwise).
    #[arg(long, value_name = "xdp|udp|auto")]
    io: Option<String>,
    /// Interface to attach the AF_XDP path to; repeat for several (default: those holding a listen address).
    #[arg(short, long, value_name = "IFNAME")]
    interface: Vec<String>,
    /// Records file (TOML) of local services and records; reloaded when it changes (replaces records.file).
    #[arg(long, value_name = "FILE")]
    records_file: Option<String>,
    /// Local domain answered by kdns itself; repeat for several (replaces records.domains).
    #[arg(long, value_name = "DOMAIN")]
    domain: Vec<String>,
    /// Where changes made through the control API are kept ("" for nowhere; replaces records.state_file).
    #[arg(long, value_name = "FILE")]
    state_file: Option<String>,
    /// SCHED_FIFO priority of the AF_XDP workers, 1-99; 0 for normal
    /// scheduling (replaces xdp.realtime_priority).
    #[arg(long, value_name = "N")]
    realtime_priority: Option<u32>,
    /// Follow the Docker engine: serve the running containers of the served
    /// networks by service, replica and container name (turns docker.enabled on).
    #[arg(long)]
    docker: bool,
    /// The Docker API socket (replaces docker.socket; turns the provider on).
    #[arg(long, value_name = "PATH")]
    docker_socket: Option<String>,
    /// Check the configuration, print the settings that would be used, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = match &cli.config {
        Some(p) => match config::read_file(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("kdns: configuration error: {e}");
                return ExitCode::from(2);
            }
        },
        None => config::FileConfig::default(),
    };
    let overrides = Overrides {
        listen: cli.listen.clone(),
        backends: cli.backend.clone(),
        workers: cli.workers.clone(),
        cache_entries: cli.cache_entries,
        allow: cli.allow.clone(),
        control_socket: cli.control_socket.clone(),
        metrics: cli.metrics.clone(),
        log_level: cli.log_level.clone(),
        io: cli.io.clone(),
        interfaces: cli.interface.clone(),
        records_file: cli.records_file.clone(),
        domains: cli.domain.clone(),
        state_file: cli.state_file.clone(),
        realtime_priority: cli.realtime_priority,
        docker: cli.docker,
        docker_socket: cli.docker_socket.clone(),
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").ok();
    let cores = core_affinity::get_core_ids().map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |c| c.len());
    let settings = match config::settle(file, &overrides, resolv.as_deref(), cores) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("kdns: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
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
    match run(settings) {
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

/// A random seed per worker (IDs, cache hash) from the kernel.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // getrandom(2) never fails for 8 bytes once the pool is initialised;
    // fall back to time and pid if it does.
    // SAFETY: `b` is a valid writable buffer of 8 bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    }
}

fn run(s: Settings) -> Result<(), String> {
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
    io::rlimit::ensure_open_files(workers * per_worker + 1024, &format!("upstream.source_ports = {} ({workers} workers)", s.ports.slots))?;
    let xdp_runtime = start_xdp(&s, &stop, &cores, &mut handles, &mut threads)?;
    // With AF_XDP, one socket worker serves what the XDP program passes to
    // the kernel (other queues, fragments); without it, one per core.
    let udp_workers = if xdp_runtime.is_some() { 1 } else { s.workers };
    let first = handles.len();
    for id in first..first + udp_workers {
        let mut listen = Vec::new();
        for &addr in &s.listen {
            let sock = worker::reuseport_udp(addr).map_err(|e| format!("cannot listen on udp {addr}: {e}{}", hint(&e)))?;
            listen.push((addr, sock));
        }
        let engine = kdns_core::engine::EngineConfig { seed: random_seed(), ..s.engine.clone() };
        let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
        let (h, t) = worker::spawn(worker::WorkerSetup { id, core, engine, listen, ports: s.ports.clone(), stop: Arc::clone(&stop) })
            .map_err(|e| format!("worker {id}: {e}"))?;
        handles.push(h);
        threads.push(t);
    }
    if s.tcp.enabled {
        let engine = kdns_core::engine::EngineConfig { seed: random_seed(), ..s.engine.clone() };
        let (h, t) = tcp::spawn(tcp::TcpSetup {
            id: handles.len(),
            listen: s.listen.clone(),
            engine,
            cfg: s.tcp.clone(),
            ports: s.ports.clone(),
            stop: Arc::clone(&stop),
        })
        .map_err(|e| format!("tcp: {e}"))?;
        handles.push(h);
        threads.push(t);
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
    let extras = control::Extras { records: Some(plane.store()), tcp: s.records.control_tcp.zip(s.records.control_token.clone()) };
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
    stop.store(true, Ordering::Relaxed);
    for h in &handles {
        let _ = h.waker.wake();
    }
    for t in threads {
        let _ = t.join();
    }
    // Detaches the XDP program once the workers are gone (socket-only
    // builds have nothing to drop).
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

fn hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => " (another DNS server on that address?)",
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        std::io::ErrorKind::AddrNotAvailable => " (no interface has that address)",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration shown in `--help` is a valid file with those defaults.
    #[test]
    fn the_help_example_config_parses() {
        let body: String = AFTER_HELP
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("AF_XDP:"))
            .map(|l| l.strip_prefix("    ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n");
        let file = config::parse(&body).expect("help example parses");
        let s = config::settle(file.clone(), &Overrides::default(), None, 2).expect("help example is valid");
        assert_eq!(s.engine.backends.len(), 2);
        assert_eq!(s.listen, vec!["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]);
        assert_eq!(s.engine.cache.max_entries, config::CacheSection::default().entries);
        assert_eq!(file.records, config::RecordsSection::default(), "[records] shows the defaults");
        assert_eq!(s.records.state_file.as_deref(), Some(std::path::Path::new(config::DEFAULT_STATE_FILE)));
    }

    /// The records file shown in `--help` parses.
    #[test]
    fn the_help_example_records_file_parses() {
        let body: String = AFTER_HELP
            .lines()
            .skip_while(|l| !l.starts_with("LOCAL RECORDS:"))
            .filter(|l| l.starts_with("        "))
            .map(|l| &l[8..])
            .collect::<Vec<_>>()
            .join("\n");
        let f = records::file::parse(&body).expect("help example parses");
        assert_eq!((f.services.len(), f.records.len()), (1, 1));
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
