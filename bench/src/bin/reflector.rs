//! `reflector`: the minimal AF_XDP DNS responder that sets the ceiling of
//! the AF_XDP benchmark rig (bench/xdp).
//!
//! It does what the AF_XDP fast path of any DNS server has to do at least,
//! and nothing more, so its throughput on a rig is the ceiling against
//! which kdns (`--io xdp`) and other AF_XDP servers are measured
//! (bench/xdp/sweep.sh, bench/RESULTS.md, section "AF_XDP (kdns XDP
//! workers)"). It runs kdns' own ring and loader code:
//!
//! - **XDP program**: kdns' own, `bpf/kdns_xdp.c`, compiled by kdns-sys'
//!   build.rs and loaded by `kdns_sys::xdp::XdpProgram` (listen maps,
//!   `dns_port`, `xsks_map`). It redirects UDP to the listen address(es)
//!   and port into `xsks_map[rx_queue]` and passes everything else (ARP,
//!   ICMP, other addresses) to the kernel. Attached through a bpf_link in
//!   driver (native) mode (`--generic` for SKB mode), owned by the process:
//!   the kernel removes it when the process exits, also on kill -9. On
//!   SIGINT/SIGTERM the loop stops, the program is detached and counters
//!   are printed.
//! - **Socket**: `kdns_sys::xsk::XskRings`, the rings kdns' AF_XDP workers
//!   use: one AF_XDP socket on one queue (`--queue`, default 0) with its own
//!   UMEM (no libxdp default program), need_wakeup, copy mode (veth has no
//!   zero-copy; `--zero-copy` tries it first). Rings 2048, 4096 frames of
//!   2048 bytes, half of them in the fill ring.
//! - **Per frame**: `kdns_core::net::parse_udp_frame` (the same parser kdns
//!   uses), skip the question name, set QR and RA (RCODE 0, opcode and RD
//!   kept), QDCOUNT 1, ANCOUNT 1, NSCOUNT/ARCOUNT 0 (an OPT record in the
//!   query is cut off), append one fixed record (`<qname> 3600 IN A
//!   10.99.0.1`, name as a pointer to the question), then
//!   `kdns_core::net::turn_around` (the same code kdns runs: swap MACs,
//!   addresses and ports, fix lengths, IPv4 header checksum and the full UDP
//!   checksum) and put the frame on the TX ring. No cache, no DNS parsing
//!   beyond the question name, no engine, no backend sockets, no timers, no
//!   statistics on the hot path.
//! - **Loop**: completion ring -> free frames; RX batch (64) -> answers ->
//!   TX ring, with `sendto` kicks while the TX ring holds frames (the
//!   kernel's copy path sends at most 32 frames per kick), at most
//!   `--kicks` (8) per turn, putting on what did not fit after each kick;
//!   frames still without room are recycled and counted as `tx_ring_full`
//!   (`XskRings::flush_tx`, as kdns); used and free frames -> fill ring,
//!   with its wakeup when the kernel asks for it; after 16 empty turns it
//!   sleeps in `poll()` (`--spin N` to change that, `--busy-poll`: never).
//!   kdns' worker has the same batch, ring sizes, TX kicks and 16-turn spin
//!   (at normal priority; a real-time kdns worker sleeps at its first empty
//!   turn, which is `--realtime N --spin 0` here).
//!
//! It answers any query on the address with the same A record; it is a
//! benchmark tool, not a server.
//!
//! # Build and run
//!
//! ```sh
//! # Debian: clang libbpf-dev (and the rest of scripts/setup.sh)
//! cargo build --release -p kdns-bench --bin reflector
//! sudo target/release/reflector --iface veth0 --addr 10.78.3.1
//! ```
//!
//! Options: see `--help` ([`USAGE`]).
//!
//! On SIGUSR1 and on exit it prints one line of counters (rx, tx, not_dns,
//! tx_ring_full, kicks, turns, sleeps) followed by the kernel's AF_XDP
//! statistics of the socket (k_rx_dropped, k_rx_ring_full, k_fill_empty,
//! ...); bench/xdp/cost.sh reads them before and after each run.

#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kdns_core::net;
use kdns_sys::xdp::{AttachMode, XdpProgram};
use kdns_sys::xsk::{Frame, XskConfig, XskRings, XskStatistics};

/// The answer record appended after the question: name = pointer to offset
/// 12 (the question name), type A, class IN, TTL 3600, RDLENGTH 4, 10.99.0.1.
const ANSWER: [u8; 16] = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 10, 99, 0, 1];

/// The command line.
const USAGE: &str = "\
usage: kdns-reflector --iface IF --addr IP [--addr IP ...] [options]
  --iface IF         interface to attach to (XDP program + one AF_XDP socket)
  --addr IP          listen address (IPv4 or IPv6); repeatable
  --port N           UDP port (default 53)
  --queue N          RX queue to bind (default 0)
  --ring N           RX/TX/fill/completion ring size (default 2048)
  --frames N         UMEM frames (default 4096; half go to the fill ring)
  --frame-size N     2048 or 4096 (default 2048)
  --batch N          RX batch (default 64)
  --kicks N          at most N sendto() TX kicks per loop turn while the TX
                     ring holds frames (default 8; the kernel's copy path sends
                     at most 32 frames per kick); 1 = one kick per turn
  --spin N           empty loop turns up to sleeping in poll() (default 16,
                     as kdns; 0 = sleep as soon as a turn finds nothing)
  --busy-poll        never sleep in poll()
  --realtime N       run the loop in SCHED_FIFO at priority N (1-99), as kdns'
                     AF_XDP workers do by default; 0 = normal scheduling (default)
  --zero-copy        ask for zero-copy (falls back to copy mode)
  --generic          attach in generic (SKB) mode instead of driver mode
Runs until SIGINT/SIGTERM; then detaches the program and prints counters.
SIGUSR1 prints the counters so far (one line, \"kdns-reflector: counters ...\").";

#[derive(Debug)]
struct Opts {
    iface: String,
    addrs: Vec<IpAddr>,
    port: u16,
    queue: u32,
    ring: u32,
    frames: u32,
    frame_size: u32,
    batch: usize,
    kicks: u32,
    spin: u32,
    busy_poll: bool,
    realtime: u32,
    zero_copy: bool,
    generic: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        iface: String::new(),
        addrs: Vec::new(),
        port: 53,
        queue: 0,
        ring: 2048,
        frames: 4096,
        frame_size: 2048,
        batch: 64,
        kicks: 8,
        spin: 16,
        busy_poll: false,
        realtime: 0,
        zero_copy: false,
        generic: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--iface" => o.iface = val("--iface")?,
            "--addr" => o.addrs.push(val("--addr")?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--port" => o.port = val("--port")?.parse().map_err(|e| format!("--port: {e}"))?,
            "--queue" => o.queue = val("--queue")?.parse().map_err(|e| format!("--queue: {e}"))?,
            "--ring" => o.ring = val("--ring")?.parse().map_err(|e| format!("--ring: {e}"))?,
            "--frames" => o.frames = val("--frames")?.parse().map_err(|e| format!("--frames: {e}"))?,
            "--frame-size" => o.frame_size = val("--frame-size")?.parse().map_err(|e| format!("--frame-size: {e}"))?,
            "--batch" => o.batch = val("--batch")?.parse().map_err(|e| format!("--batch: {e}"))?,
            "--kicks" => o.kicks = val("--kicks")?.parse().map_err(|e| format!("--kicks: {e}"))?,
            "--spin" => o.spin = val("--spin")?.parse().map_err(|e| format!("--spin: {e}"))?,
            "--busy-poll" => o.busy_poll = true,
            "--realtime" => o.realtime = val("--realtime")?.parse().map_err(|e| format!("--realtime: {e}"))?,
            "--zero-copy" => o.zero_copy = true,
            "--generic" => o.generic = true,
            "-h" | "--help" => return Err(String::new()),
            _ => return Err(format!("unknown argument {a:?}")),
        }
    }
    if o.iface.is_empty() || o.addrs.is_empty() {
        return Err("--iface and --addr are required".into());
    }
    if o.batch == 0 || o.kicks == 0 {
        return Err("--batch and --kicks must be > 0".into());
    }
    if o.realtime > 99 {
        return Err("--realtime must be 0..=99".into());
    }
    o.frames = o.frames.max(2 * o.ring);
    Ok(o)
}

#[derive(Debug, Default)]
struct Counters {
    rx: u64,
    tx: u64,
    not_dns: u64,
    tx_ring_full: u64,
    kicks: u64,
    turns: u64,
    sleeps: u64,
}

/// Offset just past the question (name + type + class), if the message has
/// a plain (uncompressed) question name within `msg`.
fn question_end(msg: &[u8]) -> Option<usize> {
    let mut p = 12;
    loop {
        let l = *msg.get(p)? as usize;
        p += 1;
        if l == 0 {
            break;
        }
        if l & 0xc0 != 0 {
            return None;
        }
        p += l;
    }
    let end = p + 4;
    (end <= msg.len()).then_some(end)
}

/// Turns the query in `frame` into the fixed answer in place; false if the
/// frame is no DNS query over UDP we can answer (it is then recycled).
fn reflect(rings: &XskRings, frame: &mut Frame) -> bool {
    let mut data = rings.buf(frame);
    let Ok(info) = net::parse_udp_frame(data.bytes()) else { return false };
    let (po, plen) = (info.payload_offset, info.payload_len);
    let total = {
        let frame = data.whole_mut();
        let Some(dns) = frame.get_mut(po..) else { return false };
        let Some(qend) = dns.get(..plen).and_then(question_end) else { return false };
        if qend + ANSWER.len() > dns.len() || dns[2] & 0x80 != 0 {
            return false;
        }
        dns[2] = 0x80 | (dns[2] & 0x79); // QR; keep opcode and RD; clear AA, TC
        dns[3] = 0x80; // RA, RCODE 0
        dns[4..12].copy_from_slice(&[0, 1, 0, 1, 0, 0, 0, 0]);
        dns[qend..qend + ANSWER.len()].copy_from_slice(&ANSWER);
        match net::turn_around(frame, &info, qend + ANSWER.len()) {
            Ok(t) => t,
            Err(_) => return false,
        }
    };
    data.set_len(total);
    true
}

/// All counters on one line: ours, then the kernel's for the socket.
fn counters_line(c: &Counters, st: Option<&XskStatistics>) -> String {
    let mut line = format!(
        "rx {} tx {} not_dns {} tx_ring_full {} kicks {} turns {} sleeps {}",
        c.rx, c.tx, c.not_dns, c.tx_ring_full, c.kicks, c.turns, c.sleeps
    );
    if let Some(s) = st {
        line += &format!(
            " k_rx_dropped {} k_rx_ring_full {} k_fill_empty {} k_rx_invalid {} k_tx_invalid {} k_tx_ring_empty {}",
            s.rx_dropped, s.rx_ring_full, s.fill_ring_empty, s.rx_invalid, s.tx_invalid, s.tx_ring_empty
        );
    }
    line
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("kdns-reflector: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&o) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kdns-reflector: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &Opts) -> Result<(), String> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| format!("signal handler: {e}"))?;
    }
    let dump = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&dump)).map_err(|e| format!("signal handler: {e}"))?;

    // The XDP program with its listen maps and port; the socket
    // (zero-copy if asked and possible, copy mode otherwise) in its map.
    let mut prog = XdpProgram::load(&o.iface, &o.addrs, o.port, None).map_err(|e| format!("load: {e}"))?;
    let mut rings = XskRings::open(&XskConfig {
        ifname: &o.iface,
        queue: o.queue,
        frame_size: o.frame_size,
        frames: o.frames,
        ring_size: o.ring,
        batch: o.batch,
        zero_copy: o.zero_copy,
    })?;
    if let Some(e) = rings.zero_copy_refused() {
        eprintln!("kdns-reflector: zero-copy not available ({e}); copy mode");
    }
    prog.register_socket(o.queue, rings.fd()).map_err(|e| format!("xsks_map set: {e}"))?;
    let (mode, mode_name) = if o.generic { (AttachMode::Generic, "Skb") } else { (AttachMode::Driver, "Driver") };
    prog.attach_mode(mode).map_err(|e| format!("attach to {} in {mode_name} mode: {e}", o.iface))?;
    eprintln!(
        "kdns-reflector: {} queue {}: {} mode, XDP {mode_name}, ring {}, frames {}, batch {}, kicks {}, {}{}; answering {} port {}",
        o.iface,
        o.queue,
        if rings.zero_copy() { "zero-copy" } else { "copy" },
        o.ring,
        o.frames,
        o.batch,
        o.kicks,
        if o.busy_poll { "busy-poll" } else { "sleeps when idle" },
        if o.realtime > 0 { format!(", SCHED_FIFO {}", o.realtime) } else { String::new() },
        o.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        o.port
    );

    if o.realtime > 0 {
        kdns_sys::sched::set_fifo(o.realtime).map_err(|e| format!("SCHED_FIFO {}: {e}", o.realtime))?;
    }
    let mut c = Counters::default();
    let mut idle = 0u32;
    let started = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        c.turns += 1;
        if dump.swap(false, Ordering::Relaxed) {
            eprintln!("kdns-reflector: counters {}", counters_line(&c, rings.statistics().ok().as_ref()));
        }
        // 1. sent frames come back
        let done = rings.reap_completions();
        // 2. receive and answer
        let n = rings.receive();
        c.rx += n as u64;
        while let Some(mut frame) = rings.next_received() {
            if reflect(&rings, &mut frame) {
                rings.transmit(frame);
            } else {
                c.not_dns += 1;
                rings.recycle(frame);
            }
        }
        // 3. transmit, kicking the kernel while the TX ring holds frames;
        //    what finds no room is dropped (recycled)
        let t = rings.flush_tx(o.kicks);
        c.tx += t.sent as u64;
        c.tx_ring_full += t.dropped as u64;
        c.kicks += u64::from(t.kicks);
        // 4. used and free frames into the fill ring (no reserve kept)
        rings.refill(0);
        // 5. sleep only after a few idle turns
        if n + done > 0 || o.busy_poll {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle >= o.spin.max(1) {
            idle = 0;
            c.sleeps += 1;
            // 100 ms, so a signal is seen soon.
            let _ = kdns_sys::poll::wait_readable([rings.fd()], Duration::from_millis(100));
        }
    }

    let secs = started.elapsed().as_secs_f64();
    drop(prog);
    let st = rings.statistics().ok();
    eprintln!("kdns-reflector: stopped after {secs:.1} s, detached; counters {}", counters_line(&c, st.as_ref()));
    Ok(())
}
