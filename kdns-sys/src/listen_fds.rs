//! Socket activation: the listening sockets systemd (or any launcher that
//! speaks its protocol) opened for kdns and passed at exec.
//!
//! The protocol of `sd_listen_fds(3)` is written here by hand: it is about
//! thirty lines, and libsystemd would be a C library for them.
//!
//! | variable | meaning |
//! |---|---|
//! | `LISTEN_PID` | the process the descriptors are for; another pid: not for us |
//! | `LISTEN_FDS` | how many: descriptors 3 to 3 + `LISTEN_FDS` - 1 |
//! | `LISTEN_FDNAMES` | optional, their names separated by `:` (`FileDescriptorName=`) |
//! | `KDNS_LISTEN_PARENT` | instead of `LISTEN_PID`: the descriptors are for a child of this process |
//!
//! `KDNS_LISTEN_PARENT` is kdns's own addition, for `kdns --supervise`: a
//! launcher cannot write its child's pid into `LISTEN_PID` without setting
//! a variable between fork and exec (which may allocate, and is not
//! async-signal-safe), but it knows its own pid, and the child checks it
//! against its parent's. `LISTEN_PID`, when present, decides.
//!
//! [`take`] reads the variables and removes them whatever they say, so a
//! child process never takes the descriptors for its own; it checks each
//! descriptor (a socket, datagram or stream, UDP or TCP, bound to an IPv4
//! or IPv6 address, a stream one listening), marks it close-on-exec as
//! `sd_listen_fds` does, and hands it out with its type and address. The
//! daemon matches them to its listen addresses.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::sockaddr;

/// The first descriptor passed (`SD_LISTEN_FDS_START`).
pub const FIRST_FD: RawFd = 3;
/// More descriptors than this is a malformed `LISTEN_FDS`.
const MOST: usize = 4096;
/// The variables of the protocol.
const VARS: [&str; 4] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", PARENT_VAR];
/// The launcher's pid, for its child (see the module's table).
pub const PARENT_VAR: &str = "KDNS_LISTEN_PARENT";

/// A passed socket's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A UDP socket (`ListenDatagram=`).
    Udp,
    /// A listening TCP socket (`ListenStream=`).
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        })
    }
}

/// One passed socket, checked.
#[derive(Debug)]
pub struct ListenFd {
    /// The socket (close-on-exec), now owned by the caller.
    pub fd: OwnedFd,
    /// Its number as passed (3, 4, ...), for messages.
    pub number: RawFd,
    /// UDP or TCP.
    pub transport: Transport,
    /// The address it is bound to (`getsockname`).
    pub local: SocketAddr,
    /// Its name in `LISTEN_FDNAMES`, if any.
    pub name: Option<String>,
}

impl ListenFd {
    /// `udp 127.0.0.1:53 (descriptor 3, "kdns.socket")`, for messages.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(n) => format!("{} {} (descriptor {}, \"{n}\")", self.transport, self.local, self.number),
            None => format!("{} {} (descriptor {})", self.transport, self.local, self.number),
        }
    }
}

/// Takes the sockets passed to this process and removes the variables from
/// the environment. None passed (no `LISTEN_PID`, or another process's):
/// an empty list. A malformed variable or a descriptor that is not a bound
/// UDP or listening TCP socket: an error naming it (no descriptor is
/// closed then).
///
/// Call it at the start of `main`, before any thread starts (it changes
/// the environment) and before any file is opened (the descriptors from 3
/// up must still be the ones passed).
pub fn take() -> Result<Vec<ListenFd>, String> {
    let [pid, fds, names, parent] = VARS.map(|v| std::env::var(v).ok());
    for v in VARS {
        std::env::remove_var(v);
    }
    let who = For { pid: pid.as_deref(), parent: parent.as_deref() };
    let n = match count(who, fds.as_deref(), std::process::id(), std::os::unix::process::parent_id())? {
        0 => return Ok(Vec::new()),
        n => n,
    };
    let names: Vec<Option<String>> = match names.as_deref().map(|s| s.split(':').collect::<Vec<_>>()) {
        // Names only label the messages; a list of another length is ignored.
        Some(list) if list.len() == n => list.into_iter().map(|s| (!s.is_empty()).then(|| s.to_string())).collect(),
        _ => vec![None; n],
    };
    // Every descriptor is checked before any is owned: on an error none is
    // closed (some may belong to something else when LISTEN_FDS is wrong).
    let mut checked = Vec::with_capacity(n);
    for (i, name) in names.into_iter().enumerate() {
        let number = FIRST_FD + i as RawFd;
        let label = name.as_ref().map_or_else(|| format!("descriptor {number}"), |s| format!("descriptor {number} (\"{s}\")"));
        let (transport, local) = inspect(number).map_err(|e| format!("socket activation: {label} of LISTEN_FDS={n}: {e}"))?;
        checked.push((number, transport, local, name));
    }
    Ok(checked
        .into_iter()
        .map(|(number, transport, local, name)| {
            // SAFETY: `number` is open (inspect checked it with fcntl) and is
            // one of the descriptors passed to this process at exec, which
            // nothing else in it owns: the variables that name them were
            // removed above, so no second call takes them again.
            let fd = unsafe { OwnedFd::from_raw_fd(number) };
            ListenFd { fd, number, transport, local, name }
        })
        .collect())
}

/// Whom the descriptors are for: `LISTEN_PID`, else `KDNS_LISTEN_PARENT`.
#[derive(Debug, Clone, Copy)]
struct For<'a> {
    pid: Option<&'a str>,
    parent: Option<&'a str>,
}

/// How many descriptors `LISTEN_FDS` passes to process `me`, child of
/// `my_parent`.
fn count(who: For<'_>, fds: Option<&str>, me: u32, my_parent: u32) -> Result<usize, String> {
    let (var, value, expected) = match who {
        For { pid: Some(p), .. } => ("LISTEN_PID", p, me),
        For { pid: None, parent: Some(p) } => (PARENT_VAR, p, my_parent),
        For { pid: None, parent: None } => return Ok(0),
    };
    let pid: u32 = value.trim().parse().map_err(|_| format!("socket activation: {var}={value:?} is not a process id"))?;
    if pid != expected {
        return Ok(0);
    }
    let Some(fds) = fds else { return Ok(0) };
    match fds.trim().parse::<usize>() {
        Ok(n) if n <= MOST => Ok(n),
        _ => Err(format!("socket activation: LISTEN_FDS={fds:?} is not a number of descriptors (0..={MOST})")),
    }
}

/// The transport and bound address of a socket received another way (a
/// planned handover passes them over a unix socket): the same checks as
/// for a passed descriptor. Also marks it close-on-exec.
pub fn identify(fd: std::os::fd::BorrowedFd<'_>) -> Result<(Transport, SocketAddr), String> {
    use std::os::fd::AsRawFd;
    inspect(fd.as_raw_fd())
}

/// Sets the receive buffer of socket `fd` to `bytes`: `SO_RCVBUFFORCE`,
/// which only root (CAP_NET_ADMIN) may use and which ignores
/// `net.core.rmem_max`, else `SO_RCVBUF`, capped by it. Returns the size
/// the kernel granted, as asked for (the kernel reports twice that, the
/// other half being its bookkeeping).
///
/// A held UDP socket keeps queries in this buffer while no process reads
/// it (a restart): 32 MiB holds about 40,000 queries.
///
/// # Errors
/// `SO_RCVBUF`'s, or reading the size back.
pub fn set_receive_buffer(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    set_buffer(fd, bytes, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF)
}

/// The same for the send buffer (`SO_SNDBUFFORCE`, else `SO_SNDBUF`): a
/// restart's backlog of queries is answered in bursts, and a reply that
/// meets a full send buffer is dropped.
///
/// # Errors
/// `SO_SNDBUF`'s, or reading the size back.
pub fn set_send_buffer(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> io::Result<usize> {
    set_buffer(fd, bytes, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)
}

fn set_buffer(fd: std::os::fd::BorrowedFd<'_>, bytes: usize, force: libc::c_int, plain: libc::c_int) -> io::Result<usize> {
    use std::os::fd::AsRawFd;
    let fd = fd.as_raw_fd();
    // The kernel doubles the value it is given, in an int.
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX / 2).min(libc::c_int::MAX / 2);
    let set = |opt: libc::c_int| {
        // SAFETY: `v` is a readable c_int and the length its size.
        let r = unsafe {
            libc::setsockopt(fd, libc::SOL_SOCKET, opt, (&v as *const libc::c_int).cast(), mem::size_of::<libc::c_int>() as libc::socklen_t)
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    if set(force).is_err() {
        set(plain)?;
    }
    let got = sockopt(fd, plain)?;
    Ok(usize::try_from(got).unwrap_or(0) / 2)
}

/// Marks `fd` close-on-exec and reads its transport and bound address.
fn inspect(fd: RawFd) -> Result<(Transport, SocketAddr), String> {
    // SAFETY: fcntl on an integer descriptor touches no memory; a closed
    // one is EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(format!("not open ({})", io::Error::last_os_error()));
    }
    // SAFETY: as above; sets only the descriptor's own flag.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(format!("cannot mark it close-on-exec: {}", io::Error::last_os_error()));
    }
    let kind = sockopt(fd, libc::SO_TYPE).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => "not a socket".to_string(),
        _ => format!("cannot read its socket type: {e}"),
    })?;
    let proto = sockopt(fd, libc::SO_PROTOCOL).map_err(|e| format!("cannot read its protocol: {e}"))?;
    let transport = match (kind, proto) {
        (libc::SOCK_DGRAM, libc::IPPROTO_UDP) => Transport::Udp,
        (libc::SOCK_STREAM, libc::IPPROTO_TCP) => Transport::Tcp,
        _ => return Err(format!("a socket of type {kind}, protocol {proto}: neither UDP (ListenDatagram=) nor TCP (ListenStream=)")),
    };
    let mut ss = sockaddr::empty_storage();
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `ss` is a writable sockaddr_storage and `len` its size; the
    // kernel writes at most `len` bytes.
    if unsafe { libc::getsockname(fd, (&mut ss as *mut libc::sockaddr_storage).cast(), &mut len) } < 0 {
        return Err(format!("cannot read its address: {}", io::Error::last_os_error()));
    }
    let local = sockaddr::from_storage(&ss, len)
        .ok_or_else(|| format!("a {transport} socket of address family {}, not IPv4 or IPv6", ss.ss_family))?;
    if transport == Transport::Tcp && sockopt(fd, libc::SO_ACCEPTCONN).map_err(|e| format!("cannot read SO_ACCEPTCONN: {e}"))? == 0 {
        return Err(format!("a tcp socket on {local} that is not listening"));
    }
    Ok((transport, local))
}

/// An integer `SOL_SOCKET` option of `fd`.
fn sockopt(fd: RawFd, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` is a writable c_int and `len` its size.
    if unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(v)
}

/// Passes `fds` to the program `cmd` runs as descriptors 3, 4, ... and
/// sets `LISTEN_FDS` and `KDNS_LISTEN_PARENT` (this process): the
/// launcher's half of the protocol. The program `cmd` runs must be the
/// reader (kdns itself), or a program that sets `LISTEN_PID` to its own
/// pid and execs the reader ([`LISTEN_PID_WRAPPER`]): a program that
/// reads only `LISTEN_PID` needs it.
///
/// # Errors
/// `fcntl(F_DUPFD_CLOEXEC)`'s in the parent; `dup2`'s in the child (the
/// spawn then fails with it).
pub fn pass_listen_fds(cmd: &mut std::process::Command, fds: &[std::os::fd::BorrowedFd<'_>]) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    cmd.env("LISTEN_FDS", fds.len().to_string())
        .env(PARENT_VAR, std::process::id().to_string())
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    // Copies numbered above the targets, so no dup2 below overwrites a
    // source it still needs; they close with `cmd`.
    let above = FIRST_FD + fds.len() as RawFd;
    let copies: Vec<OwnedFd> = fds
        .iter()
        .map(|fd| {
            // SAFETY: fcntl on a descriptor we borrow; it returns a new one.
            let c = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, above) };
            if c < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `c` was just returned by fcntl and nothing else owns it.
            Ok(unsafe { OwnedFd::from_raw_fd(c) })
        })
        .collect::<io::Result<_>>()?;
    // SAFETY: the closure runs between fork and exec in the child; it only
    // calls dup2(2), which is async-signal-safe, on descriptors it reads
    // from memory the parent prepared and does not change.
    unsafe {
        cmd.pre_exec(move || {
            for (i, c) in copies.iter().enumerate() {
                if libc::dup2(c.as_raw_fd(), FIRST_FD + i as RawFd) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// `sh -c` and a script that sets `LISTEN_PID` to its own pid and then
/// execs its arguments (same pid): put it before the program's path.
pub const LISTEN_PID_WRAPPER: [&str; 3] = ["sh", "-c", "LISTEN_PID=$$ exec \"$0\" \"$@\""];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_follows_the_protocol() {
        let pid = |p| For { pid: Some(p), parent: None };
        assert_eq!(count(For { pid: None, parent: None }, Some("2"), 7, 1), Ok(0), "no LISTEN_PID: nothing passed");
        assert_eq!(count(pid("8"), Some("2"), 7, 1), Ok(0), "another process's descriptors");
        assert_eq!(count(pid("7"), None, 7, 1), Ok(0));
        assert_eq!(count(pid("7"), Some("2"), 7, 1), Ok(2));
        assert_eq!(count(pid(" 7 "), Some("0"), 7, 1), Ok(0));
        assert!(count(pid("x"), Some("2"), 7, 1).unwrap_err().contains("LISTEN_PID=\"x\""));
        assert!(count(pid("7"), Some("-1"), 7, 1).unwrap_err().contains("LISTEN_FDS=\"-1\""));
        assert!(count(pid("7"), Some("100000"), 7, 1).unwrap_err().contains("LISTEN_FDS"));
    }

    #[test]
    fn count_takes_a_parents_descriptors() {
        let parent = |p| For { pid: None, parent: Some(p) };
        assert_eq!(count(parent("5"), Some("2"), 7, 5), Ok(2), "passed by our parent");
        assert_eq!(count(parent("6"), Some("2"), 7, 5), Ok(0), "passed to a sibling or a grandchild");
        assert!(count(parent("x"), Some("2"), 7, 5).unwrap_err().contains("KDNS_LISTEN_PARENT=\"x\""));
        // LISTEN_PID decides when both are set.
        assert_eq!(count(For { pid: Some("9"), parent: Some("5") }, Some("2"), 7, 5), Ok(0));
        assert_eq!(count(For { pid: Some("7"), parent: Some("4") }, Some("2"), 7, 5), Ok(2));
    }

    #[test]
    fn inspect_tells_udp_tcp_and_the_rest_apart() {
        use std::os::fd::AsRawFd;
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(inspect(u.as_raw_fd()), Ok((Transport::Udp, u.local_addr().unwrap())));
        let l = std::net::TcpListener::bind("[::1]:0").unwrap();
        assert_eq!(inspect(l.as_raw_fd()), Ok((Transport::Tcp, l.local_addr().unwrap())));
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        assert!(inspect(s.as_raw_fd()).unwrap_err().contains("not listening"));
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(inspect(f.as_raw_fd()), Err("not a socket".into()));
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        assert!(inspect(a.as_raw_fd()).unwrap_err().contains("neither UDP"), "{:?}", inspect(a.as_raw_fd()));
        assert!(inspect(1 << 20).unwrap_err().contains("not open"));
    }

    #[test]
    fn receive_buffer_is_granted_or_capped() {
        use std::os::fd::AsFd;
        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let got = set_receive_buffer(u.as_fd(), 4 << 20).unwrap();
        if crate::process::is_root() {
            assert_eq!(got, 4 << 20, "SO_RCVBUFFORCE as root");
        } else {
            assert!(got > 0 && got <= 4 << 20, "{got}");
        }
        let small = set_receive_buffer(u.as_fd(), 64 << 10).unwrap();
        assert!(small <= 64 << 10 && small > 0, "{small}");
    }
}
