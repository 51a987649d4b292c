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
//! | `counters`  | PERCPU_ARRAY 64| `u32` rx queue              | `{u64 redirected, passed, malformed, dropped}` |
//! | `client_rate` | LRU_HASH, [`ClientRate::entries`] | `{u32 family, u32 addr[4]}` (source, masked) | `u64` theoretical arrival time |
//!
//! Globals: `volatile const __u16 dns_port`, the port in NETWORK byte order;
//! `client_interval_ns`, `client_burst_ns` (0: no rate) and
//! `client_prefix_v4`, `client_prefix_v6`.
//! A wildcard listen address (0.0.0.0 or ::) matches every destination of
//! its family.
//!
//! Attaching goes through a bpf_link that this process owns: when the
//! [`XdpProgram`] is dropped, or the process dies (even by SIGKILL), the
//! kernel detaches the program and gets all traffic back.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, XskMap};
use aya::programs::{ProgramFd, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};

mod error;
mod netlink;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod xsk_tests;

use error::errno_of;
pub use error::XdpError;

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
    /// Dropped by the program (XDP_DROP): a client over `limits.xdp_client_qps`.
    pub dropped: u64,
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
}

// SAFETY: repr(C), four u64 without padding; every bit pattern is valid.
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
            }
            if queue < self.inner.queues || c.redirected | c.passed | c.malformed | c.dropped != 0 {
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
    prog_fd: ProgramFd,
    prog_id: u32,
    _ebpf: Ebpf,
    ifname: String,
    ifindex: u32,
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
    /// per-client query rate. Does not attach.
    pub fn load(ifname: &str, listen: &[IpAddr], port: u16, rate: Option<&ClientRate>) -> Result<XdpProgram, XdpError> {
        let ifindex = ifindex_of(ifname)?;

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
        let mut ebpf = EbpfLoader::new()
            .override_global("dns_port", &port_be, true)
            .override_global("client_interval_ns", &interval, true)
            .override_global("client_burst_ns", &burst, true)
            .override_global("client_prefix_v4", &p4, true)
            .override_global("client_prefix_v6", &p6, true)
            .map_max_entries("client_rate", entries.max(1))
            .load(OBJECT)
            .map_err(|e| XdpError::load(ifname, e))?;
        let prog: &mut Xdp = ebpf
            .program_mut(PROGRAM)
            .ok_or(XdpError::Object(PROGRAM))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| XdpError::load(ifname, e))?;
        prog.load().map_err(|e| XdpError::load(ifname, e))?;
        let prog_fd = prog.fd().and_then(|fd| fd.try_clone().map_err(Into::into)).map_err(|e| XdpError::load(ifname, e))?;
        let prog_id = prog.info().map_err(|e| XdpError::load(ifname, e))?.id();

        {
            let map = ebpf.map_mut("listen_v4").ok_or(XdpError::Object("listen_v4"))?;
            let mut map: BpfHashMap<&mut MapData, u32, u8> = map.try_into().map_err(|e| XdpError::map("open", "listen_v4", e))?;
            for key in &v4 {
                map.insert(key, 1, 0).map_err(|e| XdpError::map("fill", "listen_v4", e))?;
            }
        }
        {
            let map = ebpf.map_mut("listen_v6").ok_or(XdpError::Object("listen_v6"))?;
            let mut map: BpfHashMap<&mut MapData, [u8; 16], u8> = map.try_into().map_err(|e| XdpError::map("open", "listen_v6", e))?;
            for key in &v6 {
                map.insert(key, 1, 0).map_err(|e| XdpError::map("fill", "listen_v6", e))?;
            }
        }
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
            prog_fd,
            prog_id,
            _ebpf: ebpf,
            ifname: ifname.to_owned(),
            ifindex,
        })
    }

    /// Attaches through a bpf_link in driver (native) mode, falling back to
    /// generic (SKB) mode with a warning naming the reason. First removes any
    /// XDP program attached to the interface by netlink (stale from a crashed
    /// run, libxdp's, Knot's), with a warning. A program attached through a
    /// bpf_link of another live process can't be removed: that is an error
    /// naming it. Calling it again once attached returns the mode.
    pub fn attach(&mut self) -> Result<AttachMode, XdpError> {
        if let (Some(_), Some(mode)) = (&self.link, self.mode) {
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
        self.remove_stale()?;
        self.attach_in(mode).map(|()| mode)
    }

    fn attach_in(&mut self, mode: AttachMode) -> Result<(), XdpError> {
        match sys::xdp_link_create(self.prog_fd.as_fd(), self.ifindex, mode.flags()) {
            Ok(link) => {
                self.link = Some(link);
                self.mode = Some(mode);
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
}

/// Number of rx queues of an interface (entries `rx-*` of
/// `/sys/class/net/<if>/queues`).
pub fn rx_queues(ifname: &str) -> io::Result<u32> {
    check_ifname(ifname)?;
    let mut n = 0u32;
    for entry in std::fs::read_dir(format!("/sys/class/net/{ifname}/queues"))? {
        if entry?.file_name().to_string_lossy().starts_with("rx-") {
            n += 1;
        }
    }
    Ok(n)
}

/// MAC address of an interface (`/sys/class/net/<if>/address`).
pub fn mac_address(ifname: &str) -> io::Result<[u8; 6]> {
    check_ifname(ifname)?;
    let text = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))?;
    parse_mac(text.trim())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{ifname} has no Ethernet address ({:?})", text.trim())))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn check_ifname(ifname: &str) -> io::Result<()> {
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') || ifname == "." || ifname == ".." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid interface name {ifname:?}")));
    }
    Ok(())
}

fn ifindex_of(ifname: &str) -> Result<u32, XdpError> {
    let not_found = || XdpError::InterfaceNotFound { ifname: ifname.to_owned() };
    let c = CString::new(ifname).map_err(|_| not_found())?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(not_found());
    }
    Ok(index)
}

/// Name and an fd of the loaded program `id`, if it still exists.
fn program_by_id(id: u32) -> (Option<String>, Option<ProgramFd>) {
    for info in aya::programs::loaded_programs().filter_map(Result::ok) {
        if info.id() == id {
            let name = info.name_as_str().map(str::to_owned);
            return (name, info.fd().ok());
        }
    }
    (None, None)
}

/// Processes holding an XDP bpf_link of program `prog_id` (from
/// /proc/<pid>/fdinfo). Best effort: a link pinned in bpffs has no holder.
fn link_holders(prog_id: u32) -> Vec<(u32, String)> {
    let mut holders = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return holders };
    let want = format!("prog_id:\t{prog_id}");
    for p in procs.filter_map(Result::ok) {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else { continue };
        let held = fds.filter_map(Result::ok).any(|fd| {
            std::fs::read_to_string(fd.path())
                .map(|s| s.lines().any(|l| l.trim_end() == "link_type:\txdp") && s.lines().any(|l| l.trim_end() == want))
                .unwrap_or(false)
        });
        if held {
            let comm = std::fs::read_to_string(p.path().join("comm")).map(|s| s.trim().to_owned()).unwrap_or_default();
            holders.push((pid, comm));
        }
    }
    holders
}

mod sys {
    use super::*;

    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;

    /// BPF_LINK_CREATE for XDP. Done here rather than with aya's
    /// `Xdp::attach`, because that falls back to a netlink attach when the
    /// kernel answers EINVAL, and a netlink-attached program would outlive
    /// this process (e.g. after kill -9) instead of going away with it.
    pub(super) fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
        // union bpf_attr, link_create: prog_fd, target_ifindex, attach_type,
        // flags; the rest must be zero.
        let mut attr = [0u32; 16];
        attr[0] = prog.as_raw_fd() as u32;
        attr[1] = ifindex;
        attr[2] = BPF_XDP;
        attr[3] = flags;
        // SAFETY: bpf(2) reads `size_of_val(&attr)` bytes from a live buffer.
        let ret = unsafe { libc::syscall(libc::SYS_bpf, BPF_LINK_CREATE, attr.as_mut_ptr(), std::mem::size_of_val(&attr) as libc::c_uint) };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: on success bpf(2) returns a new descriptor that we own.
        Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
    }
}
