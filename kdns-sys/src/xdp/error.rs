//! Errors of the XDP loader.

use std::error::Error;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;

use super::AttachMode;

/// The errno somewhere in the chain of `e`'s sources.
pub(super) fn errno_of(e: &(dyn Error + 'static)) -> Option<i32> {
    let mut cur: Option<&(dyn Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if let Some(n) = io.raw_os_error() {
                return Some(n);
            }
        }
        cur = err.source();
    }
    None
}

/// Errors of the XDP loader. Their `Display` says what to do.
#[derive(Debug)]
#[non_exhaustive]
pub enum XdpError {
    /// No interface of that name in this network namespace.
    InterfaceNotFound { ifname: String },
    /// The kernel refused for lack of privileges.
    PermissionDenied { what: String, source: io::Error },
    /// Loading the object or the program into the kernel failed.
    Load { ifname: String, source: Box<dyn Error + Send + Sync> },
    /// The embedded object lacks a program or map (a build problem).
    Object(&'static str),
    /// More listen addresses than the maps hold.
    TooManyAddresses { v4: usize, v6: usize, max: usize },
    /// A map operation failed.
    Map { what: String, map: &'static str, source: aya::maps::MapError },
    /// `register_socket` was given an fd that is not an AF_XDP socket.
    NotAnXdpSocket { fd: RawFd },
    /// Queue index beyond `xsks_map`'s size.
    QueueOutOfRange { queue: u32, max: u32 },
    /// Attaching in one mode failed.
    Attach { ifname: String, mode: AttachMode, source: io::Error },
    /// Neither driver nor generic mode could be attached.
    AttachFailed { ifname: String, driver: Box<XdpError>, generic: Box<XdpError> },
    /// Another XDP program is attached through a bpf_link (owned by a live
    /// process or pinned in bpffs): the kernel won't let us remove it.
    HeldByLink { ifname: String, prog_id: u32, prog_name: String, link_ids: Vec<u32>, holders: Vec<(u32, String)> },
    /// A netlink request failed.
    Netlink { ifname: String, what: String, source: io::Error, message: Option<String> },
    /// Something in the pin directory (bpffs) could not be read, made or removed.
    Pin { path: PathBuf, what: String, source: io::Error },
    /// The pin directory is not on a bpffs.
    NotBpffs { path: PathBuf, checked: PathBuf },
    /// BPF_LINK_UPDATE on the pinned link failed.
    Adopt { ifname: String, link_id: u32, prog_id: u32, source: io::Error },
    /// An answer's name, body or TTL list is beyond the tier's limits.
    AnswerTooLong { what: AnswerLimit, len: usize, max: usize },
    /// An answer that can't be stored as given (a TTL field beyond the body, an empty name).
    AnswerInvalid { why: &'static str },
    /// The `answers` map is full (E2BIG).
    AnswerMapFull { capacity: u32 },
    /// A bpf(2) call on the `answers` map failed.
    AnswerMap { what: &'static str, source: io::Error },
    /// A client network of the answer tier's ACL is not a network (prefix too long).
    BadClientNetwork { addr: std::net::IpAddr, prefix: u8 },
}

/// Which limit of an answer [`XdpError::AnswerTooLong`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerLimit {
    /// The QNAME's wire length (`ANSWER_NAME_MAX`).
    Name,
    /// The body's length (`ANSWER_BODY_MAX`).
    Body,
    /// The number of TTL fields (`ANSWER_TTLS_MAX`).
    Ttls,
}

impl fmt::Display for AnswerLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerLimit::Name => "name of",
            AnswerLimit::Body => "body of",
            AnswerLimit::Ttls => "TTL fields in",
        })
    }
}

impl XdpError {
    pub(super) fn load(ifname: &str, e: impl Into<Box<dyn Error + Send + Sync>>) -> XdpError {
        let source = e.into();
        // EACCES for root is the verifier refusing the program: keep its log.
        let denied = match errno_of(&*source) {
            Some(libc::EPERM) => true,
            Some(libc::EACCES) => !crate::process::is_root(),
            _ => false,
        };
        if denied {
            return XdpError::PermissionDenied {
                what: format!("loading the XDP program for {ifname}"),
                source: io::Error::from_raw_os_error(errno_of(&*source).unwrap_or(libc::EPERM)),
            };
        }
        XdpError::Load { ifname: ifname.to_owned(), source }
    }

    pub(super) fn map(what: &str, map: &'static str, e: aya::maps::MapError) -> XdpError {
        if let Some(n @ (libc::EPERM | libc::EACCES)) = errno_of(&e) {
            return XdpError::PermissionDenied { what: format!("{what} map {map}"), source: io::Error::from_raw_os_error(n) };
        }
        XdpError::Map { what: what.to_owned(), map, source: e }
    }

    pub(super) fn has_link(&self) -> bool {
        matches!(self, XdpError::HeldByLink { link_ids, holders, .. } if !link_ids.is_empty() || !holders.is_empty())
    }

    /// Errors that trying another attach mode can't fix.
    pub(super) fn is_fatal(&self) -> bool {
        matches!(self, XdpError::PermissionDenied { .. } | XdpError::InterfaceNotFound { .. } | XdpError::HeldByLink { .. })
    }

    /// The errno behind this error, if any.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            XdpError::PermissionDenied { source, .. }
            | XdpError::Attach { source, .. }
            | XdpError::Netlink { source, .. }
            | XdpError::Pin { source, .. }
            | XdpError::Adopt { source, .. }
            | XdpError::AnswerMap { source, .. } => source.raw_os_error(),
            XdpError::AnswerMapFull { .. } => Some(libc::E2BIG),
            XdpError::Load { source, .. } => errno_of(&**source),
            XdpError::Map { source, .. } => errno_of(source),
            XdpError::InterfaceNotFound { .. } => Some(libc::ENODEV),
            XdpError::HeldByLink { .. } => Some(libc::EBUSY),
            _ => None,
        }
    }
}

fn attach_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::ENOSPC) => {
            "veth needs as many rx queues as its peer has tx queues (create the pair with numrxqueues/numtxqueues, or ethtool -L)"
        }
        Some(libc::EOPNOTSUPP) => "the driver has no native XDP support; generic mode works with any driver",
        Some(libc::ERANGE) => "the MTU is too large for native XDP (on veth: the peer's MTU); lower it, e.g. to 1500",
        Some(libc::EEXIST) => {
            "an XDP program is attached in the other mode (native and generic can't be active together); remove it with `ip link set dev IF xdp off` or `xdpgeneric off`"
        }
        Some(libc::EINVAL) => {
            "the driver rejected the program (MTU too large for native XDP, too few queues?), or the kernel lacks XDP bpf_link support (needs Linux >= 5.9); `dmesg` may tell more"
        }
        Some(libc::EBUSY) => "another XDP program is attached to the interface; see `ip -d link show dev IF` (remove it with `ip link set dev IF xdp off`)",
        Some(libc::ENOMEM) => "the driver could not allocate XDP resources (too few free tx queues for XDP?)",
        _ => "",
    }
}

impl fmt::Display for XdpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PRIVS: &str = "kdns needs root, or CAP_BPF and CAP_NET_ADMIN (CAP_NET_RAW too for AF_XDP sockets)";
        match self {
            XdpError::InterfaceNotFound { ifname } => {
                write!(f, "network interface {ifname:?} not found (in this network namespace); check the name with `ip link`")
            }
            XdpError::PermissionDenied { what, source } => write!(f, "{what}: {source}: {PRIVS}"),
            XdpError::Load { ifname, source } => {
                write!(f, "loading the XDP program for {ifname} failed: {source}")?;
                let mut cause = source.source();
                while let Some(c) = cause {
                    write!(f, ": {c}")?;
                    cause = c.source();
                }
                Ok(())
            }
            XdpError::Object(name) => {
                write!(f, "the embedded XDP object has no {name:?}: build problem, rebuild kdns (bpf/kdns_xdp.c and build.rs out of sync?)")
            }
            XdpError::TooManyAddresses { v4, v6, max } => {
                write!(f, "too many listen addresses for the XDP program ({v4} IPv4, {v6} IPv6; at most {max} of each)")
            }
            XdpError::Map { what, map, source } => {
                write!(f, "cannot {what} BPF map {map}: {source}")?;
                if let Some(c) = source.source() {
                    write!(f, ": {c}")?;
                }
                Ok(())
            }
            XdpError::NotAnXdpSocket { fd } => write!(f, "fd {fd} is not an AF_XDP socket, it can't go into xsks_map"),
            XdpError::QueueOutOfRange { queue, max } => {
                write!(f, "rx queue {queue} is beyond the XDP program's {max} queues; reduce the interface's queues (ethtool -L)")
            }
            XdpError::Attach { ifname, mode, source } => {
                write!(f, "attaching XDP to {ifname} in {mode} mode failed: {source}")?;
                let hint = attach_hint(source.raw_os_error());
                if !hint.is_empty() {
                    write!(f, ": {hint}")?;
                }
                Ok(())
            }
            XdpError::AttachFailed { ifname, driver, generic } => {
                write!(f, "cannot attach XDP to {ifname}: {driver}; then {generic}")
            }
            XdpError::HeldByLink { ifname, prog_id, prog_name, link_ids, holders } => {
                write!(f, "XDP program {prog_id} ({prog_name}) is attached to {ifname} through a bpf_link")?;
                if !link_ids.is_empty() {
                    write!(f, " (link {})", link_ids.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))?;
                }
                if holders.is_empty() {
                    write!(f, " held by no visible process (pinned in /sys/fs/bpf? remove the pin)")?;
                } else {
                    let list: Vec<String> = holders.iter().map(|(pid, comm)| format!("{pid} ({comm})")).collect();
                    write!(f, " held by process {}", list.join(", "))?;
                }
                write!(f, "; it can't be removed while that link lives: stop its owner (another kdns?) first")
            }
            XdpError::Netlink { ifname, what, source, message } => {
                write!(f, "{what} on {ifname} via netlink failed: {source}")?;
                if let Some(m) = message {
                    write!(f, " ({m})")?;
                }
                Ok(())
            }
            XdpError::Pin { path, what, source } => write!(f, "xdp.pin_dir: {what} {} failed: {source}", path.display()),
            XdpError::NotBpffs { path, checked } => write!(
                f,
                "xdp.pin_dir {}: {} is not on a bpffs (mount one: `mount -t bpf bpf /sys/fs/bpf`; or set xdp.pin_dir = \"\" to run unpinned)",
                path.display(),
                checked.display()
            ),
            XdpError::Adopt { ifname, link_id, prog_id, source } => write!(
                f,
                "cannot put the new XDP program on the pinned link {link_id} of {ifname} (program {prog_id} stays): {source}"
            ),
            XdpError::AnswerTooLong { what, len, max } => {
                write!(f, "answer tier: {len} {what} an answer, at most {max}")
            }
            XdpError::AnswerInvalid { why } => write!(f, "answer tier: cannot store the answer: {why}"),
            XdpError::AnswerMapFull { capacity } => write!(f, "answer tier: the answers map is full ({capacity} entries)"),
            XdpError::AnswerMap { what, source } => write!(f, "answer tier: cannot {what} BPF map answers: {source}"),
            XdpError::BadClientNetwork { addr, prefix } => {
                write!(f, "answer tier: client network {addr}/{prefix}: the prefix is longer than the address")
            }
        }
    }
}

impl Error for XdpError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            XdpError::PermissionDenied { source, .. }
            | XdpError::Attach { source, .. }
            | XdpError::Netlink { source, .. }
            | XdpError::Pin { source, .. }
            | XdpError::Adopt { source, .. }
            | XdpError::AnswerMap { source, .. } => Some(source),
            XdpError::Load { source, .. } => Some(&**source),
            XdpError::Map { source, .. } => Some(source),
            XdpError::AttachFailed { generic, .. } => Some(&**generic),
            _ => None,
        }
    }
}
