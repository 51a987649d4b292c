//! Looking up BPF objects (a program by id, the processes holding an XDP
//! link) and BPF_LINK_CREATE.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use aya::programs::ProgramFd;

/// Name and an fd of the loaded program `id`, if it still exists.
pub(super) fn program_by_id(id: u32) -> (Option<String>, Option<ProgramFd>) {
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
pub(super) fn link_holders(prog_id: u32) -> Vec<(u32, String)> {
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

pub(super) mod sys {
    use super::*;

    const BPF_LINK_CREATE: libc::c_long = 28;
    const BPF_XDP: u32 = 37;

    /// BPF_LINK_CREATE for XDP. Done here rather than with aya's
    /// `Xdp::attach`, because that falls back to a netlink attach when the
    /// kernel answers EINVAL, and a netlink-attached program would outlive
    /// this process (e.g. after kill -9) instead of going away with it.
    pub(in crate::xdp) fn xdp_link_create(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
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
