//! kdns: a host-local DNS fast path for containers.
//!
//! This is the daemon: configuration, workers, the TCP server, the control
//! socket and signal handling. The DNS logic lives in `kdns-core`; every
//! `unsafe` lives in `kdns-sys`.

#![forbid(unsafe_code)]

mod cluster;
mod config;
mod control;
mod daemon;
mod docker;
mod driver;
mod handle;
mod handover;
mod listeners;
mod records;
mod supervisor;
mod tcp;
mod upstream_sockets;
mod warm;
mod worker;
#[cfg(feature = "xdp")]
mod xdp;

use std::net::SocketAddr;
use std::process::ExitCode;

use crate::config::Settings;

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
    if m.get_flag("supervise") {
        return match supervisor::run(&settings, listeners, m.get_flag("takeover")) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                tracing::error!("{e}");
                eprintln!("kdns: {e}");
                ExitCode::from(1)
            }
        };
    }
    match daemon::run(settings, listeners, m.get_flag("takeover")) {
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

pub(crate) fn join(a: &[SocketAddr]) -> String {
    a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
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
