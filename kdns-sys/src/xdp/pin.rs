//! Pinning in bpffs: what lets kdns's XDP program outlive the process.
//!
//! One directory per interface, `<pin_dir>/<ifname>/`, holds the bpf_link
//! (`link`) and the maps that must survive a restart (`xsks_map`,
//! `counters`, `listen_v4`, `listen_v6`, `client_rate`). While the link is
//! pinned the program stays attached when kdns exits or dies; the kernel
//! empties a closed AF_XDP socket's `xsks_map` slot, and the program then
//! passes the queries to the kernel (fail-open). The next kdns adopts the
//! link (BPF_LINK_UPDATE: its program replaces the old one atomically) and
//! reuses the maps.
//!
//! Whatever is found there is checked before use: a link that is not an
//! XDP link of this interface running `kdns_xdp`, or a map whose type or
//! sizes differ from the object's, is reported and replaced.
//!
//! The answer tier's maps (`answers`, `acl_v4`, `acl_v6`) are never
//! pinned nor taken from pins: each program starts with an empty
//! `answers`, so the entries of a dead process are never served.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::{MapInfo, MapType};

use super::{program_by_id, XdpError, MAX_LISTEN, MAX_QUEUES, PROGRAM};

/// The pin of the bpf_link in an interface's directory.
pub(super) const LINK: &str = "link";

/// `statfs.f_type` of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// The pinned maps: name, type, key size, value size, max entries (`None`:
/// set at load, `client_rate`). Mirrors `bpf/kdns_xdp.c`; a test compares
/// them with a freshly loaded object.
pub(super) fn pinned_maps(client_entries: u32) -> [(&'static str, MapType, u32, u32, u32); 5] {
    [
        ("xsks_map", MapType::XskMap, 4, 4, MAX_QUEUES),
        ("counters", MapType::PerCpuArray, 4, 48, MAX_QUEUES),
        ("listen_v4", MapType::Hash, 4, 1, MAX_LISTEN as u32),
        ("listen_v6", MapType::Hash, 16, 1, MAX_LISTEN as u32),
        ("client_rate", MapType::LruHash, 20, 8, client_entries),
    ]
}

/// What [`prepare`] found in an interface's directory.
#[derive(Debug)]
pub(super) struct Found {
    /// The directory (created if needed).
    pub(super) dir: PathBuf,
    /// A pinned link fit to adopt, and the program on it.
    pub(super) link: Option<(OwnedFd, LinkInfo)>,
}

/// Info of a bpf_link (the head of `struct bpf_link_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link's id.
    pub id: u32,
    /// The id of the program on it.
    pub prog_id: u32,
    /// `BPF_LINK_TYPE_*`.
    pub link_type: u32,
    /// For an XDP link: the interface (0 once the interface is gone).
    pub ifindex: u32,
}

const BPF_LINK_TYPE_XDP: u32 = 6;

/// Makes sure `<pin_dir>/<ifname>` is a directory on bpffs, checks what is
/// pinned there, removes (with a warning) whatever is stale or foreign,
/// and returns the link to adopt, if any.
pub(super) fn prepare(pin_dir: &Path, ifname: &str, ifindex: u32, client_entries: u32) -> Result<Found, XdpError> {
    let pin_err = |path: &Path, what: &str, e: io::Error| XdpError::Pin { path: path.to_path_buf(), what: what.to_owned(), source: e };
    check_bpffs(pin_dir)?;
    let dir = pin_dir.join(ifname);
    match std::fs::symlink_metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            tracing::warn!("{}: not a directory (a stray pin?), replacing it", dir.display());
            std::fs::remove_file(&dir).map_err(|e| pin_err(&dir, "removing a stray pin at", e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(pin_err(&dir, "reading", e)),
    }
    std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, "creating", e))?;
    if let Err(e) = std::fs::read_dir(&dir) {
        return Err(pin_err(&dir, "reading", e));
    }

    let link_path = dir.join(LINK);
    let link = match obj_get(&link_path) {
        Ok(fd) => match check_link(fd.as_fd(), ifindex) {
            Ok(info) => Some((fd, info)),
            Err(why) => {
                tracing::warn!("{}: {why}; not adopted: removing the pins of {} and attaching anew", link_path.display(), dir.display());
                drop(fd);
                remove_all(&dir, false).map_err(|e| pin_err(&dir, "clearing", e))?;
                None
            }
        },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
        Err(e) => {
            tracing::warn!("{}: cannot open the pinned link ({e}); replacing it", link_path.display());
            remove_all(&dir, false).map_err(|e| pin_err(&dir, "clearing", e))?;
            None
        }
    };

    for (name, ty, key, value, max) in pinned_maps(client_entries) {
        let path = dir.join(name);
        if !path_exists(&path) {
            continue;
        }
        let why = match MapInfo::from_pin(&path) {
            Ok(info) => {
                let got = (info.map_type().ok(), info.key_size(), info.value_size(), info.max_entries());
                if got == (Some(ty), key, value, max) {
                    continue;
                }
                format!("a {:?} map, key {} B, value {} B, {} entries, not {ty:?}, {key} B, {value} B, {max}", got.0, got.1, got.2, got.3)
            }
            Err(e) => format!("not a readable map ({e})"),
        };
        tracing::warn!("{}: {why}; replacing it with a new map", path.display());
        std::fs::remove_file(&path).map_err(|e| pin_err(&path, "removing", e))?;
    }
    Ok(Found { dir, link })
}

/// Why a pinned link can't be adopted, if it can't.
fn check_link(fd: BorrowedFd<'_>, ifindex: u32) -> Result<LinkInfo, String> {
    // BPF_OBJ_GET_INFO_BY_FD answers for maps and programs too.
    let kind = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map(|p| p.to_string_lossy().into_owned());
    match kind.as_deref() {
        Ok("anon_inode:bpf-link") => {}
        Ok(other) => return Err(format!("not a bpf_link ({})", other.trim_start_matches("anon_inode:"))),
        Err(e) => return Err(format!("not a bpf_link? ({e})")),
    }
    let info = link_info(fd).map_err(|e| format!("not a bpf_link ({e})"))?;
    if info.link_type != BPF_LINK_TYPE_XDP {
        return Err(format!("link {} is not an XDP link (type {})", info.id, info.link_type));
    }
    if info.ifindex == 0 {
        return Err(format!("link {} is detached (its interface is gone)", info.id));
    }
    if info.ifindex != ifindex {
        return Err(format!("link {} belongs to interface index {}, not {ifindex}", info.id, info.ifindex));
    }
    match program_by_id(info.prog_id).0 {
        Some(name) if name == PROGRAM => Ok(info),
        Some(name) => Err(format!("link {} runs program {} ({name}), not kdns's {PROGRAM}", info.id, info.prog_id)),
        None => Err(format!("link {} runs program {}, which can't be read", info.id, info.prog_id)),
    }
}

fn path_exists(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok()
}

/// Removes every pin kdns puts in `dir` (the link first, so the program is
/// detached before its maps go) and, with `rmdir`, the directory. Returns
/// the names removed. Objects of other names are left alone.
pub(super) fn remove_all(dir: &Path, rmdir: bool) -> io::Result<Vec<&'static str>> {
    let mut removed = Vec::new();
    for name in std::iter::once(LINK).chain(pinned_maps(0).map(|m| m.0)) {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.join(name).display()))),
        }
    }
    if rmdir {
        match std::fs::remove_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        }
    }
    Ok(removed)
}

/// Fails unless `path` (or, while it does not exist, its nearest existing
/// parent) is on a bpffs.
pub(super) fn check_bpffs(path: &Path) -> Result<(), XdpError> {
    let mut at = path;
    while !path_exists(at) {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    let c = cstring(at)?;
    // SAFETY: statfs is plain data, all-zero is valid; statfs(2) writes
    // into it and reads the NUL-terminated path, both live for the call.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(XdpError::Pin { path: at.to_path_buf(), what: "checking".into(), source: io::Error::last_os_error() });
    }
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libcs
    if st.f_type as i64 != BPF_FS_MAGIC {
        return Err(XdpError::NotBpffs { path: path.to_path_buf(), checked: at.to_path_buf() });
    }
    Ok(())
}

fn cstring(p: &Path) -> Result<CString, XdpError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| XdpError::Pin {
        path: p.to_path_buf(),
        what: "using".into(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"),
    })
}

fn path_cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "the path holds a NUL byte"))
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_F_REPLACE: u32 = 1 << 2;

/// bpf(2) with `attr` (a zero-padded `union bpf_attr` prefix).
fn bpf(cmd: libc::c_long, attr: &mut [u64; 8]) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) reads (and for some commands writes) at most
    // `size_of_val(attr)` bytes of the live, exclusively borrowed buffer;
    // pointers inside it are the caller's, valid for the call.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr) as libc::c_uint) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret)
}

/// Two u32 fields as the u64 that holds them in a `union bpf_attr`.
fn pair(lo: u32, hi: u32) -> u64 {
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&lo.to_ne_bytes());
    b[4..].copy_from_slice(&hi.to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// BPF_OBJ_GET: opens a pinned object.
pub(super) fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstring(path)?;
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64; // pathname
    attr[1] = pair(0, 0); // bpf_fd, file_flags
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: on success bpf(2) returns a new descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// BPF_OBJ_PIN: pins `fd` at `path` (which must not exist).
pub(super) fn obj_pin(fd: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    let c = path_cstring(path)?;
    let mut attr = [0u64; 8];
    attr[0] = c.as_ptr() as u64;
    attr[1] = pair(fd.as_raw_fd() as u32, 0);
    bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// BPF_OBJ_GET_INFO_BY_FD on a link: its id, program, type, ifindex.
pub fn link_info(fd: BorrowedFd<'_>) -> io::Result<LinkInfo> {
    // struct bpf_link_info: type, id, prog_id, then a union (8-aligned)
    // whose XDP member starts with ifindex.
    let mut info = [0u32; 16];
    let mut attr = [0u64; 8];
    attr[0] = pair(fd.as_raw_fd() as u32, std::mem::size_of_val(&info) as u32); // bpf_fd, info_len
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(LinkInfo { link_type: info[0], id: info[1], prog_id: info[2], ifindex: info[4] })
}

/// BPF_LINK_UPDATE: puts `prog` on the link in place of `old` (the kernel
/// refuses with EPERM if `old` is no longer the program there), in one step.
pub(super) fn link_update(link: BorrowedFd<'_>, prog: BorrowedFd<'_>, old: BorrowedFd<'_>) -> io::Result<()> {
    let mut attr = [0u64; 8];
    attr[0] = pair(link.as_raw_fd() as u32, prog.as_raw_fd() as u32); // link_fd, new_prog_fd
    attr[1] = pair(BPF_F_REPLACE, old.as_raw_fd() as u32); // flags, old_prog_fd
    bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

/// What [`uninstall`] removed from one interface's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// The directory.
    pub dir: PathBuf,
    /// The pinned link and the program on it, if there was one.
    pub link: Option<LinkInfo>,
    /// Names of the pins removed.
    pub pins: Vec<&'static str>,
    /// Processes that still hold the link (it stays attached until they exit).
    pub holders: Vec<(u32, String)>,
}

/// Removes kdns's pins under `pin_dir`: of `ifname`'s directory, or of
/// every directory when `None`; then `pin_dir` itself if empty. Removing
/// the link pin detaches the program unless a live process holds the link.
pub fn uninstall(pin_dir: &Path, ifname: Option<&str>) -> Result<Vec<Removed>, XdpError> {
    let pin_err = |path: &Path, what: &str, e: io::Error| XdpError::Pin { path: path.to_path_buf(), what: what.to_owned(), source: e };
    if !path_exists(pin_dir) {
        return Ok(Vec::new());
    }
    check_bpffs(pin_dir)?;
    let dirs: Vec<PathBuf> = match ifname {
        Some(name) => vec![pin_dir.join(name)],
        None => {
            let mut v: Vec<PathBuf> = std::fs::read_dir(pin_dir)
                .map_err(|e| pin_err(pin_dir, "reading", e))?
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect();
            v.sort();
            v
        }
    };
    let mut out = Vec::new();
    for dir in dirs {
        if !path_exists(&dir) {
            continue;
        }
        let link = obj_get(&dir.join(LINK)).ok().and_then(|fd| link_info(fd.as_fd()).ok());
        let pins = remove_all(&dir, true).map_err(|e| pin_err(&dir, "removing the pins in", e))?;
        let holders = link.map(|l| super::link_holders(l.prog_id)).unwrap_or_default();
        out.push(Removed { dir, link, pins, holders });
    }
    // Only if nothing else lives there.
    let _ = std::fs::remove_dir(pin_dir);
    Ok(out)
}
