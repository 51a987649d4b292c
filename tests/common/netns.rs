//! The daemon tests' network namespaces ([`Netns`], made, deleted and
//! entered by [`kdns_sys::netns`]) with what only these tests need:
//! commands through `ip netns exec` under `timeout`, resolv.conf, the
//! sweep of namespaces left by killed runs, and the veth pair between a
//! client and a server namespace ([`Link`]).

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kdns_sys::netns::VethEnd;

use super::process::{die_with_parent, run_limited, signal, Run};
use super::{gone, tool, TEMP_PREFIX};

/// Prefix of every namespace the harness creates.
const NS_PREFIX: &str = "kdt";

/// A network namespace, deleted (with its /etc/netns/<name> directory) on
/// drop. Processes the harness started in it are owned by their own guards,
/// which are dropped first.
#[derive(Debug)]
pub struct Netns {
    owner: kdns_sys::netns::Netns,
    ns: InNs,
}

impl Netns {
    /// Creates namespace `kdt<pid>n<id><suffix>` with its loopback up.
    pub fn new(id: usize, suffix: &str) -> Netns {
        let name = format!("{NS_PREFIX}{}n{id}{suffix}", std::process::id());
        let owner = kdns_sys::netns::Netns::new(name.clone()).unwrap_or_else(|e| panic!("{e}"));
        Netns { owner, ns: InNs { name } }
    }

    /// A handle that runs commands in this namespace, for guards that
    /// outlive a borrow of it (the namespace must outlive them).
    pub fn handle(&self) -> InNs {
        self.ns.clone()
    }
}

impl std::ops::Deref for Netns {
    type Target = InNs;

    fn deref(&self) -> &InNs {
        &self.ns
    }
}

/// Runs commands and opens sockets in a namespace it does not own (see
/// [`Netns`], which derefs to it).
#[derive(Debug, Clone)]
pub struct InNs {
    pub name: String,
}

impl InNs {
    /// The argv prefix that runs a command inside this namespace.
    pub fn prefix(&self) -> Vec<String> {
        vec![tool("ip"), "netns".into(), "exec".into(), self.name.clone()]
    }

    /// A `Command` that runs `argv` inside this namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let p = self.prefix();
        let mut c = Command::new(&p[0]);
        c.args(&p[1..]).args(argv);
        die_with_parent(&mut c);
        c
    }

    /// Runs `argv` inside the namespace, killed after `limit`.
    pub fn exec(&self, argv: &[&str], limit: Duration) -> Run {
        let p = self.prefix();
        let mut full: Vec<&str> = p.iter().map(String::as_str).collect();
        full.extend_from_slice(argv);
        run_limited(&full, limit)
    }

    /// Runs `argv` inside the namespace (30 s at most); panics unless it
    /// exits 0.
    pub fn exec_ok(&self, argv: &[&str]) -> Run {
        let r = self.exec(argv, Duration::from_secs(30));
        assert!(r.ok(), "command in netns {} failed:\n{}", self.name, r.both());
        r
    }

    /// /etc/netns/<name>: files there are bind-mounted over /etc by
    /// `ip netns exec` (resolv.conf for the system resolver).
    pub fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// Writes /etc/netns/<name>/resolv.conf.
    pub fn set_resolv_conf(&self, text: &str) {
        let d = self.etc_dir();
        fs::create_dir_all(&d).unwrap_or_else(|e| panic!("cannot create {}: {e}", d.display()));
        fs::write(d.join("resolv.conf"), text).unwrap_or_else(|e| panic!("cannot write {}/resolv.conf: {e}", d.display()));
    }

    /// Runs `f` on a thread that has joined this namespace, e.g. to open
    /// sockets there (a socket stays in the namespace it was opened in).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        kdns_sys::netns::within(&self.name, f).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A UDP socket bound to `bind` inside this namespace.
    pub fn udp_socket(&self, bind: SocketAddr) -> UdpSocket {
        self.within(|| UdpSocket::bind(bind).unwrap_or_else(|e| panic!("bind {bind} in {}: {e}", self.name)))
    }
}

/// Deletes namespaces and temp dirs left by test processes that died
/// without running their guards (killed by a signal): only ours (prefix and
/// a pid that no longer exists), and only the processes inside them.
pub(crate) fn sweep_stale() {
    let list = run_limited(&["ip", "netns", "list"], Duration::from_secs(10));
    for line in list.stdout.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NS_PREFIX) else { continue };
        let Some((pid, _)) = rest.split_once('n') else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if !gone(pid) {
            continue;
        }
        let pids = run_limited(&["ip", "netns", "pids", name], Duration::from_secs(10));
        for p in pids.stdout.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
            signal(p, libc::SIGKILL);
        }
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
        let _ = run_limited(&["ip", "netns", "del", name], Duration::from_secs(10));
        eprintln!("harness: removed stale namespace {name} (test process {pid} is gone)");
    }
    // Temp dirs of such runs: kdns-test-<pid>-<tag>-<random>.
    for entry in fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.strip_prefix(TEMP_PREFIX).and_then(|r| r.split('-').next()).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(gone) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The two ends of a veth pair between a client and a server namespace.
#[derive(Debug, Clone)]
pub struct Link {
    /// Subnet number X: 10.53.X.0/24 and fd53:X::/64.
    pub x: u8,
    /// Interface name in the client namespace.
    pub client_if: String,
    /// Interface name in the server namespace.
    pub server_if: String,
}

impl Link {
    pub fn server_v4(&self) -> String {
        format!("10.53.{}.1", self.x)
    }
    pub fn client_v4(&self) -> String {
        format!("10.53.{}.2", self.x)
    }
    pub fn server_v6(&self) -> String {
        format!("fd53:{}::1", self.x)
    }
    pub fn client_v6(&self) -> String {
        format!("fd53:{}::2", self.x)
    }
}

/// Joins `client` and `server` with a veth pair created directly inside
/// the namespaces (it never appears in the host's namespace and goes away
/// with them): IPv4 10.53.X.0/24, IPv6 fd53:X::/64 without DAD, links up.
pub fn veth(client: &Netns, server: &Netns, id: usize, x: u8) -> Link {
    veth_with_queues(client, server, id, x, None)
}

/// [`veth`] with `queues` RX and TX queues on both ends (`numrxqueues` =
/// `numtxqueues` on both, which native XDP on veth needs); `None`: the
/// kernel's default (one of each).
pub fn veth_with_queues(client: &Netns, server: &Netns, id: usize, x: u8, queues: Option<u32>) -> Link {
    let tag = format!("{}{id}", std::process::id() % 10000);
    let link = Link { x, client_if: format!("kc{tag}"), server_if: format!("ks{tag}") };
    assert!(link.client_if.len() <= 15, "interface name too long: {}", link.client_if);
    let (c4, c6) = (format!("{}/24", link.client_v4()), format!("{}/64", link.client_v6()));
    let (s4, s6) = (format!("{}/24", link.server_v4()), format!("{}/64", link.server_v6()));
    let queues = queues.map(|q| (q, q));
    kdns_sys::netns::veth(
        &VethEnd { ns: &client.owner, ifname: &link.client_if, queues, addrs: &[&c4, &c6] },
        &VethEnd { ns: &server.owner, ifname: &link.server_if, queues, addrs: &[&s4, &s6] },
    )
    .unwrap_or_else(|e| panic!("veth pair {} <-> {}: {e}", link.client_if, link.server_if));
    link
}
