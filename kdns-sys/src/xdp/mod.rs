//! kdns' XDP program (`bpf/kdns_xdp.c`, built by `build.rs` and embedded
//! as [`OBJECT`]): loads and attaches it, fills its listen maps, and
//! manages the AF_XDP socket map.
//!
//! The program redirects to `xsks_map[rx_queue]` only UDP DNS queries for the
//! listen addresses and port (IPv4/IPv6, at most one VLAN tag, no fragments,
//! no IPv6 extension headers, sane lengths) and passes everything else to the
//! kernel. It drops only queries of a client over the optional per-client
//! rate ([`ClientRate`]). Maps (see the C file for the authoritative text):
//!
//! | map         | type           | key                         | value                  |
//! |-------------|----------------|-----------------------------|------------------------|
//! | `xsks_map`  | XSKMAP, 64     | `u32` rx queue              | AF_XDP socket fd       |
//! | `listen_v4` | HASH, 1024     | `u32` IPv4, network order   | `u8` (1)               |
//! | `listen_v6` | HASH, 1024     | `[u8; 16]` IPv6             | `u8` (1)               |
//! | `counters`  | PERCPU_ARRAY 64| `u32` rx queue              | `{u64 redirected, passed, malformed, dropped, answered, answer_misses}` |
//! | `client_rate` | LRU_HASH, [`ClientRate::entries`] | `{u32 family, u32 addr[4]}` (source, masked) | `u64` theoretical arrival time |
//! | `answers`   | HASH, [`AnswerTier::entries`] (1: tier off) | `struct answer_key` | `struct answer_val` (see [`answers`]) |
//! | `acl_v4`    | LPM_TRIE, 1024 | `{u32 prefixlen, u8 addr[4]}` | `u8` (1)             |
//! | `acl_v6`    | LPM_TRIE, 1024 | `{u32 prefixlen, u8 addr[16]}` | `u8` (1)            |
//!
//! Globals: `volatile const __u16 dns_port`, the port in NETWORK byte order;
//! `client_interval_ns`, `client_burst_ns` (0: no rate) and
//! `client_prefix_v4`, `client_prefix_v6`; `answer_tier_on` (0: the answer
//! tier's code does not run), `answer_udp_size` and `answer_acl_all` (every
//! client allowed: the ACL tries are not looked up), `answer_hash_seed`
//! (random per load: the seed of the names' hash in the `answers` key).
//!
//! The answer tier ([`AnswerTier`], [`AnswerMap`]): with it, the program
//! answers a query itself (XDP_TX) from the `answers` map the workers fill,
//! byte for byte what the worker would send; everything it does not answer
//! takes the redirect path as before. `answers`, `acl_v4` and `acl_v6` are
//! never pinned.
//! A wildcard listen address (0.0.0.0 or ::) matches every destination of
//! its family.
//!
//! Attaching goes through a bpf_link. Unpinned ([`XdpProgram::load`]), this
//! process owns it: when the [`XdpProgram`] is dropped, or the process dies
//! (even by SIGKILL), the kernel detaches the program and gets all traffic
//! back. Pinned ([`XdpProgram::load_pinned`], see [`pin`]), the link and the
//! maps live in bpffs: the program stays attached after the process, its
//! empty `xsks_map` slots pass the queries to the kernel, and the next
//! loader adopts the link, swapping its program in with BPF_LINK_UPDATE.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use aya::maps::lpm_trie::{Key as LpmKey, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{ProgramFd, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};

#[cfg(test)]
mod answer_tests;
pub mod answers;
mod error;
mod iface;
mod kernel;
mod netlink;
pub mod pin;
#[cfg(test)]
mod pin_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod xsk_tests;

pub use answers::{AnswerEntry, AnswerMap, AnswerTier};
use error::errno_of;
pub use error::{AnswerLimit, XdpError};
use iface::ifindex_of;
#[cfg(test)]
use iface::parse_mac;
pub use iface::{mac_address, rx_queues};
use kernel::{link_holders, program_by_id, sys};

/// The compiled program (an ELF object for the BPF target), from `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kdns_xdp.o"));

/// Name of the XDP function in the object (also what `ip link` shows).
const PROGRAM: &str = "kdns_xdp";
/// `max_entries` of `xsks_map` and `counters`.
pub const MAX_QUEUES: u32 = 64;
/// `max_entries` of `listen_v4` and `listen_v6` (each).
pub const MAX_LISTEN: usize = 1024;

/// How the program ended up attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native XDP, run by the driver (fast; AF_XDP zero-copy possible).
    Driver,
    /// Generic XDP (SKB mode), run by the kernel stack for any driver.
    Generic,
}

impl AttachMode {
    fn flags(self) -> u32 {
        match self {
            AttachMode::Driver => netlink::XDP_FLAGS_DRV_MODE,
            AttachMode::Generic => netlink::XDP_FLAGS_SKB_MODE,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Driver => "driver (native)",
            AttachMode::Generic => "generic (SKB)",
        })
    }
}

/// Counters of one rx queue, summed over CPUs. Each frame the program sees
/// increments exactly one of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// The rx queue.
    pub queue: u32,
    /// Redirected to the AF_XDP socket of the queue.
    pub redirected: u64,
    /// Given to the kernel: not a DNS query for us (other protocol, address,
    /// port; fragments; ARP, ND, ...), or a query on a queue without socket.
    pub passed: u64,
    /// A truncated/inconsistent IP frame, or UDP to a listen address and port
    /// with bad lengths; given to the kernel as well.
    pub malformed: u64,
    /// Dropped by the program (XDP_DROP): a client over `limits.xdp_client_qps`
    /// (or, rarely, an answer whose entry was replaced while the program wrote it).
    pub dropped: u64,
    /// Answered by the program from the answer tier (XDP_TX); not in `redirected`.
    pub answered: u64,
    /// Not one of the partition above: queries the answer tier (when on)
    /// did not answer (no entry, expired, not eligible); each also counts
    /// in `redirected` or `passed`.
    pub answer_misses: u64,
}

/// The optional per-client query rate the XDP program enforces (hits
/// included): a client over it has its queries dropped before any copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRate {
    /// Queries per second, sustained (0: off).
    pub qps: u32,
    /// Queries at once.
    pub burst: u32,
    /// Clients within one IPv4 /N are one client.
    pub prefix_v4: u8,
    /// Clients within one IPv6 /N are one client.
    pub prefix_v6: u8,
    /// Clients tracked (LRU).
    pub entries: u32,
}

/// Value layout of the `counters` map (`struct kdns_counters`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct RawCounters {
    redirected: u64,
    passed: u64,
    malformed: u64,
    dropped: u64,
    answered: u64,
    answer_misses: u64,
}

// SAFETY: repr(C), six u64 without padding; every bit pattern is valid.
unsafe impl Pod for RawCounters {}

/// Reads the per-queue counters of one [`XdpProgram`] from any thread.
/// Stays valid (reading the last values) after the program is dropped.
#[derive(Clone)]
pub struct CounterReader {
    inner: Arc<CounterInner>,
}

struct CounterInner {
    map: PerCpuArray<MapData, RawCounters>,
    /// Queues always reported (the interface's rx queue count at load).
    queues: u32,
}

impl fmt::Debug for CounterReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CounterReader").field("queues", &self.inner.queues).finish_non_exhaustive()
    }
}

impl CounterReader {
    /// Counters summed over CPUs: every queue below the interface's rx queue
    /// count (at load time), plus any higher queue with a non-zero counter.
    pub fn read(&self) -> Result<Vec<QueueCounters>, XdpError> {
        let mut out = Vec::new();
        for queue in 0..MAX_QUEUES {
            let per_cpu = self.inner.map.get(&queue, 0).map_err(|e| XdpError::map("read", "counters", e))?;
            let mut c = QueueCounters { queue, ..Default::default() };
            for v in per_cpu.iter() {
                c.redirected += v.redirected;
                c.passed += v.passed;
                c.malformed += v.malformed;
                c.dropped += v.dropped;
                c.answered += v.answered;
                c.answer_misses += v.answer_misses;
            }
            if queue < self.inner.queues || c.redirected | c.passed | c.malformed | c.dropped | c.answered | c.answer_misses != 0 {
                out.push(c);
            }
        }
        Ok(out)
    }
}

/// kdns' XDP program for one interface: owns the loaded object and, once
/// attached, the bpf_link. Dropping it detaches the program.
pub struct XdpProgram {
    // Field order matters: the link goes first, so the program is detached
    // before its maps and the object are released.
    link: Option<OwnedFd>,
    mode: Option<AttachMode>,
    xsks: XskMap<MapData>,
    counters: CounterReader,
    answers: Option<AnswerMap>,
    verified_insns: Option<u32>,
    prog_fd: ProgramFd,
    prog_id: u32,
    _ebpf: Ebpf,
    ifname: String,
    ifindex: u32,
    /// The pin directory and, until adopted, the pinned link found there.
    pins: Option<pin::Found>,
    /// Whether our link is pinned (the program outlives us).
    link_pinned: bool,
    /// The program replaced on an adopted link.
    adopted: Option<u32>,
    /// When our program went onto the interface.
    attached_at: Option<SystemTime>,
}

impl fmt::Debug for XdpProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdpProgram")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("prog_id", &self.prog_id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl XdpProgram {
    /// Loads the program for interface `ifname` with the listen addresses and
    /// port (only addresses of listen entries; the caller passes all of them,
    /// including ones on other interfaces, that is fine), and the optional
    /// per-client query rate. Does not attach. Nothing is pinned: the
    /// program goes away with this process.
    pub fn load(ifname: &str, listen: &[IpAddr], port: u16, rate: Option<&ClientRate>) -> Result<XdpProgram, XdpError> {
        XdpProgram::load_pinned(ifname, listen, port, rate, None, None)
    }

    /// [`load`](XdpProgram::load), with the link and the maps pinned under
    /// `pin_dir/<ifname>/` (on a bpffs) when `pin_dir` is given: compatible
    /// maps pinned there are reused, a pinned kdns link of this interface is
    /// adopted by [`attach`](XdpProgram::attach); anything stale or foreign
    /// there is removed with a warning (see [`pin`]).
    ///
    /// `tier`: the answer tier ([`XdpProgram::answers`]); `None`: off, the
    /// program only steers. Its maps are never pinned (a new program
    /// starts with no answers).
    pub fn load_pinned(
        ifname: &str,
        listen: &[IpAddr],
        port: u16,
        rate: Option<&ClientRate>,
        pin_dir: Option<&Path>,
        tier: Option<&AnswerTier>,
    ) -> Result<XdpProgram, XdpError> {
        let ifindex = ifindex_of(ifname)?;
        let acl = match tier {
            Some(t) => acl_networks(&t.clients)?,
            None => (Vec::new(), Vec::new()),
        };
        if acl.0.len() > answers::MAX_ACL || acl.1.len() > answers::MAX_ACL {
            return Err(XdpError::TooManyAddresses { v4: acl.0.len(), v6: acl.1.len(), max: answers::MAX_ACL });
        }

        let mut v4: Vec<u32> = Vec::new();
        let mut v6: Vec<[u8; 16]> = Vec::new();
        for addr in listen {
            match addr {
                // The key is the address as it is on the wire.
                IpAddr::V4(a) => v4.push(u32::from_ne_bytes(a.octets())),
                IpAddr::V6(a) => {
                    v6.push(a.octets());
                    // A v4-mapped listen address ([::ffff:a.b.c.d]) receives IPv4.
                    if let Some(m) = a.to_ipv4_mapped() {
                        v4.push(u32::from_ne_bytes(m.octets()));
                    }
                }
            }
        }
        v4.sort_unstable();
        v4.dedup();
        v6.sort_unstable();
        v6.dedup();
        if v4.len() > MAX_LISTEN || v6.len() > MAX_LISTEN {
            return Err(XdpError::TooManyAddresses { v4: v4.len(), v6: v6.len(), max: MAX_LISTEN });
        }

        let port_be: u16 = port.to_be();
        let (interval, burst, p4, p6, entries) = match rate {
            Some(r) if r.qps > 0 => {
                let interval = 1_000_000_000u64 / u64::from(r.qps);
                (interval, interval * u64::from(r.burst.max(1)), u32::from(r.prefix_v4.min(32)), u32::from(r.prefix_v6.min(128)), r.entries)
            }
            _ => (0u64, 0u64, 32u32, 64u32, 1u32),
        };
        let pins = match pin_dir {
            Some(dir) => Some(pin::prepare(dir, ifname, ifindex, entries.max(1))?),
            None => None,
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global("dns_port", &port_be, true)
            .override_global("client_interval_ns", &interval, true)
            .override_global("client_burst_ns", &burst, true)
            .override_global("client_prefix_v4", &p4, true)
            .override_global("client_prefix_v6", &p6, true)
            .map_max_entries("client_rate", entries.max(1));
        let tier_on: u32 = u32::from(tier.is_some());
        let udp_size: u16 = tier.map_or(1232, |t| t.udp_size);
        let acl_all: u32 = u32::from(tier.is_some_and(|t| t.clients.is_empty()));
        let hash_seed: u64 = crate::random_seed();
        let answer_entries = tier.map_or(1, |t| t.entries.max(1));
        loader
            .override_global("answer_tier_on", &tier_on, true)
            .override_global("answer_udp_size", &udp_size, true)
            .override_global("answer_acl_all", &acl_all, true)
            .override_global("answer_hash_seed", &hash_seed, true)
            .map_max_entries("answers", answer_entries);
        if let Some(p) = &pins {
            for (name, ..) in pin::pinned_maps(0) {
                loader.map_pin_path(name, p.dir.join(name));
            }
        }
        let mut ebpf = loader.load(OBJECT).map_err(|e| XdpError::load(ifname, e))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Object(PROGRAM))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpError::load(ifname, e))?;
        prog.load().map_err(|e| XdpError::load(ifname, e))?;
        let prog_fd = prog.fd().and_then(|fd| fd.try_clone().map_err(Into::into)).map_err(|e| XdpError::load(ifname, e))?;
        let info = prog.info().map_err(|e| XdpError::load(ifname, e))?;
        let prog_id = info.id();
        let verified_insns = info.verified_instruction_count();

        {
            let map = ebpf.map_mut("listen_v4").ok_or(XdpError::Object("listen_v4"))?;
            let mut map: BpfHashMap<&mut MapData, u32, u8> = map.try_into().map_err(|e| XdpError::map("open", "listen_v4", e))?;
            for key in &v4 {
                map.insert(key, 1, 0).map_err(|e| XdpError::map("fill", "listen_v4", e))?;
            }
            // A reused (pinned) map may hold addresses no longer listened on.
            let stale: Vec<u32> = map.keys().filter_map(Result::ok).filter(|k| v4.binary_search(k).is_err()).collect();
            for key in &stale {
                map.remove(key).map_err(|e| XdpError::map("prune", "listen_v4", e))?;
            }
        }
        {
            let map = ebpf.map_mut("listen_v6").ok_or(XdpError::Object("listen_v6"))?;
            let mut map: BpfHashMap<&mut MapData, [u8; 16], u8> = map.try_into().map_err(|e| XdpError::map("open", "listen_v6", e))?;
            for key in &v6 {
                map.insert(key, 1, 0).map_err(|e| XdpError::map("fill", "listen_v6", e))?;
            }
            let stale: Vec<[u8; 16]> = map.keys().filter_map(Result::ok).filter(|k| v6.binary_search(k).is_err()).collect();
            for key in &stale {
                map.remove(key).map_err(|e| XdpError::map("prune", "listen_v6", e))?;
            }
        }
        {
            let map = ebpf.map_mut("acl_v4").ok_or(XdpError::Object("acl_v4"))?;
            let mut map: LpmTrie<&mut MapData, [u8; 4], u8> = map.try_into().map_err(|e| XdpError::map("open", "acl_v4", e))?;
            for (addr, prefix) in &acl.0 {
                map.insert(&LpmKey::new(*prefix, *addr), 1, 0).map_err(|e| XdpError::map("fill", "acl_v4", e))?;
            }
        }
        {
            let map = ebpf.map_mut("acl_v6").ok_or(XdpError::Object("acl_v6"))?;
            let mut map: LpmTrie<&mut MapData, [u8; 16], u8> = map.try_into().map_err(|e| XdpError::map("open", "acl_v6", e))?;
            for (addr, prefix) in &acl.1 {
                map.insert(&LpmKey::new(*prefix, *addr), 1, 0).map_err(|e| XdpError::map("fill", "acl_v6", e))?;
            }
        }
        let answers = match tier {
            Some(_) => {
                let map = ebpf.take_map("answers").ok_or(XdpError::Object("answers"))?;
                let aya::maps::Map::HashMap(data) = map else { return Err(XdpError::Object("answers")) };
                let fd = data.fd().as_fd().try_clone_to_owned().map_err(|e| XdpError::AnswerMap { what: "open", source: e })?;
                Some(AnswerMap::new(fd, answer_entries, hash_seed))
            }
            None => None,
        };
        let xsks: XskMap<MapData> =
            ebpf.take_map("xsks_map").ok_or(XdpError::Object("xsks_map"))?.try_into().map_err(|e| XdpError::map("open", "xsks_map", e))?;
        let map: PerCpuArray<MapData, RawCounters> =
            ebpf.take_map("counters").ok_or(XdpError::Object("counters"))?.try_into().map_err(|e| XdpError::map("open", "counters", e))?;
        let queues = rx_queues(ifname).unwrap_or(1).clamp(1, MAX_QUEUES);

        Ok(XdpProgram {
            link: None,
            mode: None,
            xsks,
            counters: CounterReader { inner: Arc::new(CounterInner { map, queues }) },
            answers,
            verified_insns,
            prog_fd,
            prog_id,
            _ebpf: ebpf,
            ifname: ifname.to_owned(),
            ifindex,
            pins,
            link_pinned: false,
            adopted: None,
            attached_at: None,
        })
    }

    /// Attaches through a bpf_link in driver (native) mode, falling back to
    /// generic (SKB) mode with a warning naming the reason. First removes any
    /// XDP program attached to the interface by netlink (stale from a crashed
    /// run, libxdp's, Knot's), with a warning. A program attached through a
    /// bpf_link of another live process can't be removed: that is an error
    /// naming it. Calling it again once attached returns the mode.
    ///
    /// A pinned kdns link of this interface found at load is adopted
    /// instead: our program replaces the one on it in one step
    /// (BPF_LINK_UPDATE), and the link keeps its mode.
    pub fn attach(&mut self) -> Result<AttachMode, XdpError> {
        if let (Some(_), Some(mode)) = (&self.link, self.mode) {
            return Ok(mode);
        }
        if let Some(mode) = self.adopt()? {
            return Ok(mode);
        }
        self.remove_stale()?;

        let driver_err = match self.attach_in(AttachMode::Driver) {
            Ok(()) => return Ok(AttachMode::Driver),
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => e,
        };
        tracing::warn!(
            ifname = %self.ifname,
            "native XDP attach failed, falling back to generic (SKB) mode, which is slower: {driver_err}"
        );
        match self.attach_in(AttachMode::Generic) {
            Ok(()) => Ok(AttachMode::Generic),
            Err(e) if e.is_fatal() => Err(e),
            Err(e) => Err(XdpError::AttachFailed { ifname: self.ifname.clone(), driver: Box::new(driver_err), generic: Box::new(e) }),
        }
    }

    /// Attaches in `mode` only, without the fallback of [`attach`]
    /// (first removing stale netlink-attached programs as it does).
    /// Calling it again once attached returns the mode in effect.
    ///
    /// [`attach`]: XdpProgram::attach
    pub fn attach_mode(&mut self, mode: AttachMode) -> Result<AttachMode, XdpError> {
        if let (Some(_), Some(mode)) = (&self.link, self.mode) {
            return Ok(mode);
        }
        if let Some(mode) = self.adopt()? {
            return Ok(mode);
        }
        self.remove_stale()?;
        self.attach_in(mode).map(|()| mode)
    }

    fn attach_in(&mut self, mode: AttachMode) -> Result<(), XdpError> {
        match sys::xdp_link_create(self.prog_fd.as_fd(), self.ifindex, mode.flags()) {
            Ok(link) => {
                if let Some(p) = &self.pins {
                    let path = p.dir.join(pin::LINK);
                    match pin::obj_pin(link.as_fd(), &path) {
                        Ok(()) => self.link_pinned = true,
                        Err(e) => tracing::warn!(
                            ifname = %self.ifname,
                            "cannot pin the XDP link at {}: {e}; the program will go away with this process",
                            path.display()
                        ),
                    }
                }
                self.link = Some(link);
                self.mode = Some(mode);
                self.attached_at = Some(SystemTime::now());
                Ok(())
            }
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::EPERM | libc::EACCES) => {
                    XdpError::PermissionDenied { what: format!("attaching XDP to {}", self.ifname), source: e }
                }
                Some(libc::ENODEV) => XdpError::InterfaceNotFound { ifname: self.ifname.clone() },
                Some(libc::EBUSY) => {
                    // Another program is attached (a link appeared since our
                    // check, or a netlink one we could not remove): name it.
                    match netlink::attached_programs(self.ifindex) {
                        Ok(list) if !list.is_empty() => match self.held_by_link(list[0].1) {
                            held @ XdpError::HeldByLink { .. } if held.has_link() => held,
                            _ => XdpError::Attach { ifname: self.ifname.clone(), mode, source: e },
                        },
                        _ => XdpError::Attach { ifname: self.ifname.clone(), mode, source: e },
                    }
                }
                _ => XdpError::Attach { ifname: self.ifname.clone(), mode, source: e },
            }),
        }
    }

    /// Puts our program on the pinned link found at load, if any.
    fn adopt(&mut self) -> Result<Option<AttachMode>, XdpError> {
        let Some((link, info)) = self.pins.as_mut().and_then(|p| p.link.take()) else { return Ok(None) };
        let adopt_err = |e: io::Error| XdpError::Adopt { ifname: self.ifname.clone(), link_id: info.id, prog_id: info.prog_id, source: e };
        let (_, old) = program_by_id(info.prog_id);
        let old = old.ok_or_else(|| adopt_err(io::Error::from_raw_os_error(libc::ENOENT)))?;
        pin::link_update(link.as_fd(), self.prog_fd.as_fd(), old.as_fd()).map_err(adopt_err)?;
        let attached = netlink::attached_programs(self.ifindex).map_err(|e| self.netlink_err("reading the XDP state", e))?;
        let mode = match attached.iter().find(|(_, id)| *id == self.prog_id) {
            Some((netlink::Slot::Generic, _)) => AttachMode::Generic,
            _ => AttachMode::Driver,
        };
        // The daemon says it at info level, in its own words.
        tracing::debug!(
            ifname = %self.ifname,
            "adopted the pinned XDP link {} in {mode} mode: program {} replaced program {} in one step",
            info.id,
            self.prog_id,
            info.prog_id
        );
        self.link = Some(link);
        self.mode = Some(mode);
        self.link_pinned = true;
        self.adopted = Some(info.prog_id);
        self.attached_at = Some(SystemTime::now());
        Ok(Some(mode))
    }

    /// Removes programs attached to our interface by netlink; errors out on
    /// one held by a bpf_link.
    fn remove_stale(&self) -> Result<(), XdpError> {
        let attached = netlink::attached_programs(self.ifindex).map_err(|e| self.netlink_err("reading the XDP state", e))?;
        for (slot, id) in attached {
            let (name, fd) = program_by_id(id);
            let name = name.unwrap_or_else(|| "?".to_owned());
            let Some(fd) = fd else {
                // Gone meanwhile (or not visible): nothing to remove.
                continue;
            };
            match netlink::detach(self.ifindex, slot, fd.as_fd()) {
                Ok(()) => {
                    let ifname = &self.ifname;
                    tracing::warn!(mode = slot.name(), "removed stale XDP program {id} ({name}) from {ifname}");
                }
                Err(e) if e.io.raw_os_error() == Some(libc::EBUSY) => return Err(self.held_by_link(id)),
                Err(e) => return Err(self.netlink_err(&format!("removing XDP program {id} ({name}) in {} mode", slot.name()), e)),
            }
        }
        Ok(())
    }

    fn held_by_link(&self, prog_id: u32) -> XdpError {
        let (name, _) = program_by_id(prog_id);
        let link_ids = aya::programs::loaded_links()
            .filter_map(Result::ok)
            .filter(|l| l.program_id() == prog_id && matches!(l.link_type(), Ok(aya::programs::links::LinkType::Xdp)))
            .map(|l| l.id())
            .collect();
        XdpError::HeldByLink {
            ifname: self.ifname.clone(),
            prog_id,
            prog_name: name.unwrap_or_else(|| "?".to_owned()),
            link_ids,
            holders: link_holders(prog_id),
        }
    }

    fn netlink_err(&self, what: &str, e: netlink::NlError) -> XdpError {
        if matches!(e.io.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            return XdpError::PermissionDenied { what: format!("{what} on {}", self.ifname), source: e.io };
        }
        XdpError::Netlink { ifname: self.ifname.clone(), what: what.to_owned(), source: e.io, message: e.message }
    }

    /// Puts an AF_XDP socket fd into `xsks_map` at `queue` (any other fd
    /// is refused by the kernel: [`XdpError::NotAnXdpSocket`]).
    pub fn register_socket(&mut self, queue: u32, fd: RawFd) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange { queue, max: MAX_QUEUES });
        }
        self.xsks.set(queue, fd, 0).map_err(|e| {
            if errno_of(&e) == Some(libc::EOPNOTSUPP) {
                XdpError::NotAnXdpSocket { fd }
            } else {
                XdpError::map("register a socket in", "xsks_map", e)
            }
        })
    }

    /// Removes the entry for `queue` (a no-op if there is none).
    pub fn unregister_socket(&mut self, queue: u32) -> Result<(), XdpError> {
        if queue >= MAX_QUEUES {
            return Err(XdpError::QueueOutOfRange { queue, max: MAX_QUEUES });
        }
        match self.xsks.unset(queue) {
            Ok(()) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(XdpError::map("unregister a socket from", "xsks_map", e)),
        }
    }

    /// The answer tier's map, when the program was loaded with one.
    pub fn answers(&self) -> Option<AnswerMap> {
        self.answers.clone()
    }

    /// How many instructions the kernel's verifier processed to accept the
    /// program (`verified_insns`, Linux >= 5.16), if it says.
    pub fn verified_insns(&self) -> Option<u32> {
        self.verified_insns
    }

    /// A handle another thread can use to read the counters.
    pub fn counters(&self) -> CounterReader {
        self.counters.clone()
    }

    /// The interface's name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// The interface's index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The attach mode, once attached.
    pub fn mode(&self) -> Option<AttachMode> {
        self.mode
    }

    /// The kernel's id of the loaded program (as `ip link` / bpftool show it).
    pub fn program_id(&self) -> u32 {
        self.prog_id
    }

    /// The interface's pin directory while our link is pinned there: the
    /// program stays attached after this process.
    pub fn pinned_in(&self) -> Option<&Path> {
        self.pins.as_ref().filter(|_| self.link_pinned).map(|p| p.dir.as_path())
    }

    /// The program our program replaced on an adopted pinned link.
    pub fn adopted_from(&self) -> Option<u32> {
        self.adopted
    }

    /// When our program went onto the interface (attached or adopted).
    pub fn attached_at(&self) -> Option<SystemTime> {
        self.attached_at
    }

    /// The bpf_link's info, once attached.
    pub fn link_info(&self) -> Option<pin::LinkInfo> {
        self.link.as_ref().and_then(|l| pin::link_info(l.as_fd()).ok())
    }
}

/// The answer tier's ACL as LPM keys (address masked to its prefix):
/// (IPv4, IPv6). Empty: everyone (0.0.0.0/0 and ::/0). A v4-mapped IPv6
/// network also allows the IPv4 clients it maps.
/// LPM keys of the IPv4 and IPv6 tries: (address bytes, prefix length).
type AclKeys = (Vec<([u8; 4], u32)>, Vec<([u8; 16], u32)>);

fn acl_networks(clients: &[(IpAddr, u8)]) -> Result<AclKeys, XdpError> {
    if clients.is_empty() {
        return Ok((vec![([0; 4], 0)], vec![([0; 16], 0)]));
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for &(addr, prefix) in clients {
        match addr {
            IpAddr::V4(a) => {
                if prefix > 32 {
                    return Err(XdpError::BadClientNetwork { addr, prefix });
                }
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                v4.push(((u32::from(a) & mask).to_be_bytes(), u32::from(prefix)));
            }
            IpAddr::V6(a) => {
                if prefix > 128 {
                    return Err(XdpError::BadClientNetwork { addr, prefix });
                }
                let mask = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
                v6.push(((u128::from(a) & mask).to_be_bytes(), u32::from(prefix)));
                if prefix >= 96 {
                    if let Some(m) = a.to_ipv4_mapped() {
                        let p4 = prefix - 96;
                        let mask = if p4 == 0 { 0 } else { u32::MAX << (32 - p4) };
                        v4.push(((u32::from(m) & mask).to_be_bytes(), u32::from(p4)));
                    }
                }
            }
        }
    }
    v4.sort_unstable();
    v4.dedup();
    v6.sort_unstable();
    v6.dedup();
    Ok((v4, v6))
}
