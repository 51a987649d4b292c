//! Network namespaces for tests: [`Netns`] (made with `ip netns add`,
//! deleted on drop), closures run on a thread inside one ([`within`]), and
//! veth pairs between two ([`veth`]).
//!
//! The `ip` command does the setup, as a reader would by hand; only
//! entering a namespace needs system calls of our own ([`enter`],
//! [`mount_own_sysfs`]), since it changes the calling thread.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::process::find_tool;

/// Moves the calling thread into the network namespace of `ns_file`
/// (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`): sockets it opens from
/// then on belong to that namespace, wherever they are used later. Other
/// threads are not affected.
///
/// # Errors
/// Opening the file, or `setns(2)`'s (EPERM without CAP_SYS_ADMIN, EINVAL
/// when the file is not a network namespace).
pub fn enter(ns_file: &Path) -> io::Result<()> {
    let file = File::open(ns_file).map_err(|e| io::Error::new(e.kind(), format!("cannot open {}: {e}", ns_file.display())))?;
    // SAFETY: setns(2) on a descriptor we hold open for the call; it
    // changes only the calling thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns {}: {e}", ns_file.display())));
    }
    Ok(())
}

/// Gives the calling thread a mount namespace of its own with a fresh
/// `/sys`, which then shows the interfaces of the thread's network
/// namespace (what `ip netns exec` does): code that reads
/// `/sys/class/net` sees the namespace it runs in. Nothing propagates back
/// to the host's mounts.
///
/// # Errors
/// `unshare(2)` and `mount(2)`'s (EPERM without CAP_SYS_ADMIN).
pub fn mount_own_sysfs() -> io::Result<()> {
    let check = |rc: libc::c_int, what: &str| {
        if rc == 0 {
            Ok(())
        } else {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        }
    };
    // SAFETY: unshare(2) with a flag and no memory; for a thread it first
    // copies the fs_struct it shares with the other threads, so they keep
    // theirs.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, "unshare(CLONE_NEWNS)")?;
    // SAFETY: mount(2) and umount2(2) with NUL-terminated literals or null
    // where the call allows it; they change only this thread's (new) mount
    // namespace.
    unsafe {
        // Keep the remount of /sys from propagating back to the host.
        let slave = libc::MS_SLAVE | libc::MS_REC;
        check(libc::mount(std::ptr::null(), c"/".as_ptr(), std::ptr::null(), slave, std::ptr::null()), "mount --make-rslave /")?;
        // Nothing may be mounted there; the mount below then still works.
        libc::umount2(c"/sys".as_ptr(), libc::MNT_DETACH);
        check(libc::mount(c"sysfs".as_ptr(), c"/sys".as_ptr(), c"sysfs".as_ptr(), 0, std::ptr::null()), "mount sysfs on /sys")
    }
}

/// Where `ip netns add <name>` puts the namespace's file.
pub fn ns_file(name: &str) -> PathBuf {
    Path::new("/var/run/netns").join(name)
}

/// Runs `f` on a new thread that has entered namespace `name` ([`enter`],
/// [`mount_own_sysfs`]) and returns what `f` returns; a panic of `f` goes
/// on in the caller. Sockets `f` opens stay in the namespace.
///
/// # Errors
/// When the thread cannot enter the namespace; `f` has not run then.
pub fn within<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter(&ns_file(name))?;
                mount_own_sysfs()?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Runs `ip` with `args` and returns its standard output.
///
/// # Errors
/// When it cannot start, or exits with a failure (the message holds the
/// command line and what `ip` wrote on standard error).
pub fn ip(args: &[&str]) -> io::Result<String> {
    let prog = find_tool("ip").unwrap_or_else(|| PathBuf::from("ip"));
    let out = Command::new(&prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run ip {} (iproute2): {e}", args.join(" "))))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(io::Error::other(format!("ip {} failed ({}): {}", args.join(" "), out.status, err.trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace made with `ip netns add`, its loopback up. Dropping
/// it deletes it (with its interfaces, and the XDP programs attached
/// there) and its `/etc/netns/<name>` directory. Processes running in it
/// are not killed: whoever started them owns them.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes namespace `name`, first deleting one of that name left over
    /// by an earlier run. Names must be unique among the tests that run at
    /// the same time (put the process id in them).
    ///
    /// # Errors
    /// What `ip netns add` or `ip link set lo up` report.
    pub fn new(name: impl Into<String>) -> io::Result<Netns> {
        let name = name.into();
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/etc/netns/<name>`: files there are bind-mounted over /etc by `ip
    /// netns exec` (resolv.conf for the system resolver).
    pub fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// Runs `ip -n <name> args` and returns its standard output.
    ///
    /// # Errors
    /// As [`ip`].
    pub fn ip(&self, args: &[&str]) -> io::Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// [`within`] this namespace.
    ///
    /// # Errors
    /// As [`within`].
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        within(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.etc_dir());
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// One end of a veth pair: its namespace, its name there, its RX and TX
/// queue counts (`None`: the kernel's default, one of each) and its
/// addresses with their prefix length (`10.53.1.1/24`, `fd53:1::1/64`).
#[derive(Debug, Clone, Copy)]
pub struct VethEnd<'a> {
    pub ns: &'a Netns,
    pub ifname: &'a str,
    /// `(rx, tx)`; native XDP on veth needs as many RX queues on one end
    /// as TX queues on the other.
    pub queues: Option<(u32, u32)>,
    pub addrs: &'a [&'a str],
}

/// Joins `a` and `b` with a veth pair made inside `a`'s namespace (it never
/// appears in the caller's and goes away with the namespaces), adds the
/// addresses (IPv6 ones without duplicate address detection, so they work
/// at once) and sets both ends up.
///
/// # Errors
/// What `ip` reports for the first step that fails.
pub fn veth(a: &VethEnd<'_>, b: &VethEnd<'_>) -> io::Result<()> {
    let queues = |end: &VethEnd<'_>| end.queues.map(|(rx, tx)| (rx.to_string(), tx.to_string()));
    let (qa, qb) = (queues(a), queues(b));
    let mut args = vec!["link", "add", a.ifname];
    if let Some((rx, tx)) = &qa {
        args.extend(["numrxqueues", rx.as_str(), "numtxqueues", tx.as_str()]);
    }
    args.extend(["type", "veth", "peer", "name", b.ifname, "netns", b.ns.name()]);
    if let Some((rx, tx)) = &qb {
        args.extend(["numrxqueues", rx.as_str(), "numtxqueues", tx.as_str()]);
    }
    a.ns.ip(&args)?;
    for end in [a, b] {
        for addr in end.addrs {
            if addr.contains(':') {
                end.ns.ip(&["-6", "addr", "add", addr, "dev", end.ifname, "nodad"])?;
            } else {
                end.ns.ip(&["addr", "add", addr, "dev", end.ifname])?;
            }
        }
        end.ns.ip(&["link", "set", end.ifname, "up"])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_veth_pair_carries_datagrams_and_goes_away() {
        assert!(crate::process::is_root(), "network namespaces need root: run `sudo -E cargo test -p kdns-sys`");
        let tag = format!("kdnsn-{}", std::process::id());
        let (a, b) = (Netns::new(format!("{tag}-a")).unwrap(), Netns::new(format!("{tag}-b")).unwrap());
        let end = |ns, ifname, addrs| VethEnd { ns, ifname, queues: Some((2, 2)), addrs };
        veth(&end(&a, "va", &["10.201.0.1/24", "fd00:6b65::1/64"]), &end(&b, "vb", &["10.201.0.2/24", "fd00:6b65::2/64"])).unwrap();
        assert!(a.ip(&["-d", "link", "show", "va"]).unwrap().contains("numrxqueues 2"));
        for (from, to) in [("10.201.0.1:0", "10.201.0.2:5300"), ("[fd00:6b65::1]:0", "[fd00:6b65::2]:5300")] {
            let rx = b.within(|| UdpSocket::bind(to).unwrap()).unwrap();
            rx.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let tx = a.within(|| UdpSocket::bind(from).unwrap()).unwrap();
            tx.send_to(b"ping", to).unwrap();
            let mut buf = [0u8; 8];
            assert_eq!(rx.recv(&mut buf).unwrap(), 4, "nothing arrived at {to}");
        }
        // /sys shows the namespace's own interfaces inside.
        assert!(a.within(|| Path::new("/sys/class/net/va").exists()).unwrap());
        assert!(within("kdns-no-such-netns", || ()).is_err());
        let name = a.name().to_string();
        drop(a);
        assert!(!ns_file(&name).exists(), "{name} is still there");
    }
}
