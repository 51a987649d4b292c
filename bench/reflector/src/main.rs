//! kdns-reflector: the minimal AF_XDP DNS responder that sets the ceiling of
//! the AF_XDP benchmark rig (bench/xdp). See README.md.
//!
//! One AF_XDP socket on one queue of one interface, kdns' own XDP program
//! (bpf/kdns_xdp.c) steering UDP to the listen address(es) and port into it.
//! Every received frame becomes a fixed answer in place: QR/RA set,
//! ANCOUNT 1, everything after the question dropped, one fixed A record
//! appended (`<qname> 3600 IN A 10.99.0.1`, a pointer to the question name),
//! then kdns-core's `net::turn_around` swaps MACs/addresses/ports and fixes
//! lengths and checksums (the same code kdns runs), and the frame goes to
//! the TX ring. No DNS logic beyond skipping the question name.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use aya::maps::{HashMap as BpfHashMap, MapData, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::EbpfLoader;
use kdns_core::net;
use xsk_rs::config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{FrameDesc, Socket, Umem};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kdns_xdp.o"));

/// The answer record appended after the question: name = pointer to offset
/// 12 (the question name), type A, class IN, TTL 3600, RDLENGTH 4, 10.99.0.1.
const ANSWER: [u8; 16] = [0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0x0e, 0x10, 0, 4, 10, 99, 0, 1];

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

/// Turns the query in `desc` into the fixed answer in place; false if the
/// frame is no DNS query over UDP we can answer (it is then recycled).
fn reflect(umem: &Umem, desc: &mut FrameDesc, cap: usize) -> bool {
    // SAFETY: the frame came off the RX ring and is in no ring while we hold it.
    let mut data = unsafe { umem.data_mut(desc) };
    let Ok(info) = net::parse_udp_frame(data.contents()) else { return false };
    let (po, plen) = (info.payload_offset, info.payload_len);
    data.cursor().set_pos(cap);
    let total = {
        let frame = data.contents_mut();
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
    data.cursor().set_pos(total);
    true
}

/// All counters on one line: ours, then the kernel's for the socket.
fn counters_line(c: &Counters, st: Option<&xsk_rs::socket::XdpStatistics>) -> String {
    let mut line = format!(
        "rx {} tx {} not_dns {} tx_ring_full {} kicks {} turns {} sleeps {}",
        c.rx, c.tx, c.not_dns, c.tx_ring_full, c.kicks, c.turns, c.sleeps
    );
    if let Some(s) = st {
        line += &format!(
            " k_rx_dropped {} k_rx_ring_full {} k_fill_empty {} k_rx_invalid {} k_tx_invalid {} k_tx_ring_empty {}",
            s.rx_dropped(),
            s.rx_ring_full(),
            s.rx_fill_ring_empty_descs(),
            s.rx_invalid_descs(),
            s.tx_invalid_descs(),
            s.tx_ring_empty_descs()
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

    // The XDP program, its listen maps and port.
    let port_be = o.port.to_be();
    let mut ebpf = EbpfLoader::new().override_global("dns_port", &port_be, true).load(OBJECT).map_err(|e| format!("load: {e}"))?;
    let mut v4: BpfHashMap<MapData, u32, u8> =
        ebpf.take_map("listen_v4").ok_or("no map listen_v4")?.try_into().map_err(|e| format!("listen_v4: {e}"))?;
    let mut v6: BpfHashMap<MapData, [u8; 16], u8> =
        ebpf.take_map("listen_v6").ok_or("no map listen_v6")?.try_into().map_err(|e| format!("listen_v6: {e}"))?;
    for a in &o.addrs {
        match a {
            IpAddr::V4(a) => v4.insert(u32::from_ne_bytes(a.octets()), 1, 0),
            IpAddr::V6(a) => v6.insert(a.octets(), 1, 0),
        }
        .map_err(|e| format!("listen map insert {a}: {e}"))?;
    }
    let mut xsks: XskMap<MapData> = ebpf.take_map("xsks_map").ok_or("no map xsks_map")?.try_into().map_err(|e| format!("xsks_map: {e}"))?;

    // UMEM and socket: zero-copy if asked and possible, copy mode otherwise.
    let ring = QueueSize::new(o.ring).map_err(|e| format!("ring size: {e}"))?;
    let umem_cfg = UmemConfig::builder()
        .frame_size(FrameSize::new(o.frame_size).map_err(|e| format!("frame size: {e}"))?)
        .fill_queue_size(ring)
        .comp_queue_size(ring)
        .frame_headroom(0)
        .build()
        .map_err(|e| format!("umem config: {e}"))?;
    let iface: Interface = o.iface.parse().map_err(|_| format!("bad interface name {:?}", o.iface))?;
    let frames = NonZeroU32::new(o.frames).ok_or("--frames must be > 0")?;
    let make = |zc: bool| {
        let (umem, descs) = Umem::new(umem_cfg, frames, false).map_err(|e| format!("UMEM: {e}"))?;
        let cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(BindFlags::XDP_USE_NEED_WAKEUP | if zc { BindFlags::XDP_ZEROCOPY } else { BindFlags::XDP_COPY })
            .build();
        // SAFETY: the UMEM is used by this one socket only.
        let (tx, rx, rings) = unsafe { Socket::new(cfg, &umem, &iface, o.queue) }.map_err(|e| format!("AF_XDP socket: {e}"))?;
        let (fq, cq) = rings.ok_or("no fill/completion rings")?;
        Ok::<_, String>((umem, descs, tx, rx, fq, cq, zc))
    };
    let (umem, mut descs, mut tx, mut rx, mut fq, mut cq, zc) = if o.zero_copy {
        make(true).or_else(|e| {
            eprintln!("kdns-reflector: zero-copy not available ({e}); copy mode");
            make(false)
        })?
    } else {
        make(false)?
    };
    xsks.set(o.queue, rx.fd().as_raw_fd(), 0).map_err(|e| format!("xsks_map set: {e}"))?;

    let prog: &mut Xdp = ebpf.program_mut("kdns_xdp").ok_or("no program kdns_xdp")?.try_into().map_err(|e| format!("program: {e}"))?;
    prog.load().map_err(|e| format!("program load: {e}"))?;
    let mode = if o.generic { XdpMode::Skb } else { XdpMode::Driver };
    let link = prog.attach(&o.iface, mode).map_err(|e| format!("attach to {} in {mode:?} mode: {e}", o.iface))?;
    eprintln!(
        "kdns-reflector: {} queue {}: {} mode, XDP {mode:?}, ring {}, frames {}, batch {}, kicks {}, {}{}; answering {} port {}",
        o.iface,
        o.queue,
        if zc { "zero-copy" } else { "copy" },
        o.ring,
        o.frames,
        o.batch,
        o.kicks,
        if o.busy_poll { "busy-poll" } else { "sleeps when idle" },
        if o.realtime > 0 { format!(", SCHED_FIFO {}", o.realtime) } else { String::new() },
        o.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(","),
        o.port
    );

    // Half the frames wait in the fill ring; the rest are a reserve.
    let fill_n = (o.ring as usize).min(descs.len() / 2);
    let mut reserve = descs.split_off(fill_n);
    // SAFETY: fresh frames of this UMEM, in no ring.
    if unsafe { fq.produce(&descs) } != descs.len() {
        return Err("fill ring refused the initial frames".into());
    }
    let template = reserve.first().copied().ok_or("no frames")?;
    let cap = o.frame_size as usize;
    let mut rx_buf = vec![template; o.batch];
    let mut comp_buf = vec![template; o.ring as usize];
    let mut tx_batch: Vec<FrameDesc> = Vec::with_capacity(o.batch);
    let mut refill: Vec<FrameDesc> = Vec::with_capacity(2 * o.ring as usize);
    let mut c = Counters::default();
    let mut idle = 0u32;
    if o.realtime > 0 {
        let p = libc::sched_param { sched_priority: o.realtime as libc::c_int };
        // SAFETY: a valid sched_param for the calling thread (pid 0).
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &p) } != 0 {
            return Err(format!("SCHED_FIFO {}: {}", o.realtime, std::io::Error::last_os_error()));
        }
    }
    let started = Instant::now();
    let fd = rx.fd().as_raw_fd();

    while !stop.load(Ordering::Relaxed) {
        c.turns += 1;
        if dump.swap(false, Ordering::Relaxed) {
            let st = rx.fd_mut().xdp_statistics().ok();
            eprintln!("kdns-reflector: counters {}", counters_line(&c, st.as_ref()));
        }
        // 1. sent frames come back
        // SAFETY: comp_buf is ours; completed frames are no longer the kernel's.
        let done = unsafe { cq.consume(&mut comp_buf) };
        refill.extend_from_slice(&comp_buf[..done]);
        // 2. receive and answer
        // SAFETY: consumed frames are ours until put on the TX or fill ring.
        let n = unsafe { rx.consume(&mut rx_buf) };
        c.rx += n as u64;
        for d in &mut rx_buf[..n] {
            if reflect(&umem, d, cap) {
                tx_batch.push(*d);
            } else {
                c.not_dns += 1;
                refill.push(*d);
            }
        }
        // 3. transmit what fits; the rest is dropped (recycled)
        if !tx_batch.is_empty() {
            let room = (tx.nb_free(tx_batch.len() as u32) as usize).min(tx_batch.len());
            // SAFETY: these frames are ours and in no other ring.
            let put = if room > 0 { unsafe { tx.produce(&tx_batch[..room]) } } else { 0 };
            c.tx += put as u64;
            c.tx_ring_full += (tx_batch.len() - put) as u64;
            refill.extend_from_slice(&tx_batch[put..]);
            tx_batch.clear();
        }
        // 4. kick the kernel while the TX ring holds frames (copy mode sends
        //    at most 32 per sendto), at most `kicks` times
        let mut k = 0;
        while k < o.kicks && tx.nb_free_exact() < o.ring && tx.needs_wakeup() {
            let _ = tx.wakeup();
            k += 1;
        }
        c.kicks += u64::from(k);
        // 5. recycle into the fill ring (keep what does not fit for later)
        if !reserve.is_empty() {
            let room = fq.nb_free((o.batch + refill.len()) as u32) as usize;
            let take = room.saturating_sub(refill.len()).min(o.batch).min(reserve.len());
            refill.extend(reserve.drain(reserve.len() - take..));
        }
        if !refill.is_empty() {
            let room = (fq.nb_free(refill.len() as u32) as usize).min(refill.len());
            // SAFETY: these frames are ours and in no other ring.
            let put = if room > 0 { unsafe { fq.produce(&refill[..room]) } } else { 0 };
            refill.drain(..put);
            if fq.needs_wakeup() {
                let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd, zero timeout.
                unsafe { libc::poll(&mut p, 1, 0) };
            }
        }
        // 6. sleep only after a few idle turns
        if n + done > 0 || o.busy_poll {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle >= o.spin.max(1) {
            idle = 0;
            c.sleeps += 1;
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd; 100 ms so a signal is seen soon.
            unsafe { libc::poll(&mut p, 1, 100) };
        }
    }

    let secs = started.elapsed().as_secs_f64();
    let _ = prog.detach(link);
    drop(ebpf);
    let st = rx.fd_mut().xdp_statistics().ok();
    eprintln!("kdns-reflector: stopped after {secs:.1} s, detached; counters {}", counters_line(&c, st.as_ref()));
    Ok(())
}
