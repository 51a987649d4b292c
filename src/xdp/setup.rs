//! Starting the AF_XDP path: which interfaces and queues, the program on
//! each interface, one socket and worker per queue.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;

use kdns_sys::ifaddrs::interface_of;
use kdns_sys::xdp::{self, AttachMode, CounterReader, XdpError, XdpProgram};

use kdns_core::cache::KernelTierConfig;

use crate::config::Settings;
use crate::handle::{WorkerHandle, XdpCounterSource, XdpQueueCounters};
use crate::xdp::worker::{self, XdpWorkerSetup};

/// What keeps the AF_XDP path alive: dropping it detaches the programs
/// that are not pinned (a pinned one stays, failing open to the kernel,
/// for the next kdns to adopt; the log says which).
#[derive(Debug)]
pub struct XdpRuntime {
    programs: Vec<XdpProgram>,
    /// (index in `programs`, queue) of every registered AF_XDP socket.
    queues: Vec<(usize, u32)>,
}

impl XdpRuntime {
    /// Readers of each interface's program counters, for the control thread.
    pub fn counters(&self) -> Vec<Arc<dyn XdpCounterSource>> {
        self.programs
            .iter()
            .map(|p| {
                Arc::new(ProgramCounters { ifname: p.ifname().to_string(), reader: p.counters(), program: program_info(p) })
                    as Arc<dyn XdpCounterSource>
            })
            .collect()
    }

    /// Takes this process's AF_XDP sockets out of the programs' XSKMAPs:
    /// from now on the programs pass those queues' queries to the kernel
    /// (a handover: the next kdns reads the same listening sockets). The
    /// workers keep what is already on their rings. Returns how many
    /// queues were released; a failure is logged and not counted.
    pub fn release_queues(&mut self) -> u32 {
        let mut n = 0;
        for (i, q) in std::mem::take(&mut self.queues) {
            let p = &mut self.programs[i];
            match p.unregister_socket(q) {
                Ok(()) => n += 1,
                Err(e) => tracing::warn!("{} queue {q}: cannot release the AF_XDP socket: {e}", p.ifname()),
            }
        }
        n
    }
}

impl Drop for XdpRuntime {
    fn drop(&mut self) {
        for p in self.programs.drain(..) {
            let ifname = p.ifname().to_string();
            match (p.mode(), p.pinned_in().map(|d| d.display().to_string())) {
                (Some(_), Some(dir)) => tracing::info!(
                    "XDP program left attached on {ifname} (pinned at {dir}): queries go to the kernel's sockets until the next kdns; `kdns --uninstall-xdp` removes it"
                ),
                (Some(_), None) => tracing::info!("XDP program {} detached from {ifname}", p.program_id()),
                (None, _) => {}
            }
        }
    }
}

/// The stats' view of an attached program.
fn program_info(p: &XdpProgram) -> Option<kdns_api::stats::XdpProgram> {
    let mode = p.mode()?;
    Some(kdns_api::stats::XdpProgram {
        program_id: p.program_id(),
        link_id: p.link_info().map_or(0, |l| l.id),
        mode: match mode {
            AttachMode::Driver => "driver",
            AttachMode::Generic => "generic",
        }
        .into(),
        pin_dir: p.pinned_in().map(|d| d.display().to_string()),
        attached_at: p.attached_at().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs()),
        adopted_from: p.adopted_from(),
    })
}

/// Loads the program of `ifname`, pinned under `pin_dir` unless it is
/// "". A pin directory that cannot be used (not on a bpffs, not
/// writable) is not worth losing AF_XDP for: the program is then loaded
/// unpinned, with a warning saying what that means. Nor is the in-kernel
/// tier: it needs what the rest of the program does not (bounded loops,
/// global functions with BTF), and a kernel that refuses it gets the
/// program without it.
fn load(
    ifname: &str,
    ips: &[IpAddr],
    port: u16,
    rate: Option<&xdp::ClientRate>,
    tier: Option<&xdp::AnswerTier>,
    pin_dir: &str,
) -> Result<XdpProgram, String> {
    let once = |tier: Option<&xdp::AnswerTier>| {
        if pin_dir.is_empty() {
            return XdpProgram::load_pinned(ifname, ips, port, rate, None, tier);
        }
        match XdpProgram::load_pinned(ifname, ips, port, rate, Some(Path::new(pin_dir)), tier) {
            Err(e @ (XdpError::NotBpffs { .. } | XdpError::Pin { .. })) => {
                tracing::warn!("{ifname}: {e}; the XDP program is not pinned: it goes away with this kdns and is not adopted by the next");
                XdpProgram::load_pinned(ifname, ips, port, rate, None, tier)
            }
            r => r,
        }
    };
    match once(tier) {
        Err(e @ XdpError::Load { .. }) if tier.is_some() => {
            tracing::warn!(
                "{ifname}: this kernel refused the XDP program with the in-kernel answer tier ({e}); loading it without the tier (xdp.answer_tier = false), the workers answer every query"
            );
            once(None)
        }
        r => r,
    }
    .map_err(|e| format!("{ifname}: {e}"))
}

/// The started AF_XDP path: what keeps it alive, and its workers.
pub type Started = (XdpRuntime, Vec<WorkerHandle>, Vec<JoinHandle<()>>);

#[derive(Debug)]
struct ProgramCounters {
    ifname: String,
    reader: CounterReader,
    program: Option<kdns_api::stats::XdpProgram>,
}

impl XdpCounterSource for ProgramCounters {
    fn ifname(&self) -> &str {
        &self.ifname
    }

    fn read(&self) -> Result<Vec<XdpQueueCounters>, String> {
        let v = self.reader.read().map_err(|e| e.to_string())?;
        Ok(v.into_iter()
            .map(|c| XdpQueueCounters {
                queue: c.queue,
                redirected: c.redirected,
                passed: c.passed,
                malformed: c.malformed,
                dropped: c.dropped,
                answered: c.answered,
                answer_misses: c.answer_misses,
            })
            .collect())
    }

    fn program(&self) -> Option<kdns_api::stats::XdpProgram> {
        self.program.clone()
    }
}

/// Which interfaces to attach to, or why AF_XDP does not apply.
fn pick_interfaces(s: &Settings) -> Result<Vec<String>, String> {
    if !s.xdp.interfaces.is_empty() {
        return Ok(s.xdp.interfaces.clone());
    }
    let mut out: Vec<String> = Vec::new();
    for a in &s.listen {
        if a.ip().is_unspecified() {
            return Err(format!("listen address {a} is a wildcard: AF_XDP needs the addresses (or set xdp.interfaces)"));
        }
        if a.ip().is_loopback() {
            return Err(format!("listen address {a} is on loopback, which has no AF_XDP path"));
        }
        let ifname = interface_of(a.ip()).ok_or_else(|| format!("no interface holds listen address {}", a.ip()))?;
        if !out.contains(&ifname) {
            out.push(ifname);
        }
    }
    Ok(out)
}

/// Starts the AF_XDP workers. `first_id` numbers them; `cores` are the
/// cores to pin to (queue q goes to cores[q % len]).
pub fn start(s: &Settings, stop: &Arc<AtomicBool>, first_id: usize, cores: &[core_affinity::CoreId]) -> Result<Started, String> {
    let ifaces = pick_interfaces(s)?;
    let port = s.listen[0].port();
    if s.listen.iter().any(|a| a.port() != port) {
        return Err("AF_XDP serves one port: all listen addresses must share it".into());
    }
    let ips: Vec<IpAddr> = s.listen.iter().map(SocketAddr::ip).collect();
    let settings = s.xdp_worker();
    // The in-kernel tier answers only clients the ACL lets in (anyone else
    // goes to the workers, which refuse them): with an empty ACL, nobody.
    let acl = s.engine.acl.nets();
    let tier = (s.xdp.answer_tier && !acl.is_empty()).then(|| xdp::AnswerTier {
        entries: s.xdp.answer_entries,
        udp_size: s.engine.udp_size,
        clients: acl.iter().map(|n| (n.addr(), n.prefix())).collect(),
    });
    // Built up in place, so that an error half-way logs what stays attached.
    let mut runtime = XdpRuntime { programs: Vec::new(), queues: Vec::new() };
    let mut prepared = Vec::new();
    let mut id = first_id;
    for ifname in &ifaces {
        let r = s.xdp_client_rate;
        let rate = (r.qps > 0).then_some(xdp::ClientRate {
            qps: r.qps,
            burst: r.burst,
            prefix_v4: s.engine.limits.prefix_v4,
            prefix_v6: s.engine.limits.prefix_v6,
            entries: r.entries,
        });
        let mut prog = load(ifname, &ips, port, rate.as_ref(), tier.as_ref(), &s.xdp.pin_dir)?;
        let answers = prog.answers();
        let n = xdp::rx_queues(ifname).map_err(|e| format!("{ifname}: cannot read its queues: {e}"))?;
        let queues: Vec<u32> =
            if s.xdp.queues.is_empty() { (0..n).collect() } else { s.xdp.queues.iter().copied().filter(|&q| q < n).collect() };
        if queues.is_empty() {
            return Err(format!("{ifname}: none of the configured queues exist (it has {n})"));
        }
        let mac = xdp::mac_address(ifname).map_err(|e| format!("{ifname}: cannot read its MAC address: {e}"))?;
        let mut modes = Vec::new();
        for &q in &queues {
            let core = (!cores.is_empty()).then(|| cores[q as usize % cores.len()]);
            let mut engine = s.engine_for_worker(kdns_sys::random_seed());
            let answers = answers.clone().map(|m| {
                engine.kernel_tier = Some(KernelTierConfig { promote_after: settings.answer_promote_hits, ..KernelTierConfig::default() });
                let quota = m.capacity() as usize / queues.len();
                (m, quota)
            });
            let setup = XdpWorkerSetup {
                id,
                core,
                ifname: ifname.clone(),
                queue: q,
                mac,
                engine,
                settings: settings.clone(),
                ports: s.ports.clone(),
                stop: Arc::clone(stop),
                answers,
            };
            let w = worker::prepare(setup)?;
            prog.register_socket(q, w.fd()).map_err(|e| format!("{ifname} queue {q}: {e}"))?;
            runtime.queues.push((runtime.programs.len(), q));
            modes.push(if w.zero_copy() { "zero-copy" } else { "copy" });
            prepared.push(w);
            id += 1;
        }
        let mode = prog.attach().map_err(|e| format!("{ifname}: {e}"))?;
        modes.dedup();
        tracing::info!(
            "AF_XDP on {ifname}: {} mode, {} queue{} ({}), program {}",
            modes.join("/"),
            queues.len(),
            if queues.len() == 1 { "" } else { "s" },
            queues.iter().map(|q| q.to_string()).collect::<Vec<_>>().join(","),
            match mode {
                AttachMode::Driver => "attached in driver mode",
                AttachMode::Generic => "attached in generic mode",
            }
        );
        if let (Some(from), Some(link)) = (prog.adopted_from(), prog.link_info()) {
            tracing::info!(
                "adopted the XDP program of a previous kdns on {ifname} (link {}, program {from} -> {})",
                link.id,
                prog.program_id()
            );
        }
        runtime.programs.push(prog);
    }
    let mut handles = Vec::new();
    let mut threads = Vec::new();
    for w in prepared {
        let (h, t) = w.start().map_err(|e| format!("AF_XDP worker: {e}"))?;
        handles.push(h);
        threads.push(t);
    }
    Ok((runtime, handles, threads))
}
