//! Harness for the daemon's integration tests: network namespaces joined by
//! a veth pair, Unbound backends, the kdns daemon, and the DNS tools (dig,
//! kdig, dnsperf, getent) run inside the namespaces.
//!
//! One module a topic:
//!
//! | module | holds |
//! |---|---|
//! | [`process`] | commands under `timeout` ([`Run`]), [`Proc`] (one guard for every background process), [`poll_until`] |
//! | [`netns`] | [`Netns`], the veth [`Link`], the sweep of namespaces left by killed runs |
//! | [`unbound`] | [`Unbound`] serving the local test zones |
//! | [`kdns`] | the [`Kdns`] daemon process and `kdns-ctl` ([`ctl`], [`stats`], counters) |
//! | [`lab`] | [`Lab`]: client and server namespaces, Unbounds and kdns in one call |
//! | [`dns`] | dig / kdig parsed into an [`Answer`], several queries in one dig run |
//! | [`dnsperf`] | [`Dnsperf`] in the background and its [`PerfReport`] |
//! | [`failover`], [`records`] | scenarios shared by several test files |
//! | [`docker`], [`compose`] | the Docker engine, containers, and compose stacks on it |
//! | [`etcd`] | a 3-member etcd cluster and kdns hosts joined to it (`tests/cluster.rs`) |
//! | [`xdp`] | the XDP program on an interface, [`BpfFs`] (a private bpffs for pinning tests) |
//!
//! Every resource is owned by a guard whose `Drop` removes it (processes
//! killed, namespaces and /etc/netns/<ns> deleted, temp dirs removed), also
//! when a test fails or panics. Names carry the test process's pid and a
//! counter, so tests and concurrent test runs never collide; namespaces left
//! by a run that was killed outright (no `Drop`) are swept by the next run.
//!
//! Layout of a [`Lab`] (X = a per-lab number, 1..=250):
//!
//! ```text
//!  client ns "kdt<pid>n<k>c"                server ns "kdt<pid>n<k>s"
//!  kc<pid%10000><k> ---------- veth ---------- ks<pid%10000><k>
//!  10.53.X.2/24, fd53:X::2/64                  10.53.X.1/24, fd53:X::1/64   kdns :53
//!                                              127.0.0.1:5301, :5302 ...     Unbound
//! ```

// Each test binary uses a different part of the harness.
#![allow(dead_code, unused_imports)]
// System calls come from kdns-sys (feature test-util), behind safe types.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

pub mod compose;
pub mod dns;
pub mod dnsperf;
pub mod docker;
pub mod etcd;
pub mod failover;
pub mod kdns;
pub mod kxdpgun;
pub mod lab;
pub mod netns;
pub mod process;
pub mod records;
pub mod unbound;
pub mod xdp;

pub use dns::*;
pub use dnsperf::*;
pub use failover::failover_scenario;
pub use kdns::*;
pub use kxdpgun::Gun;
pub use lab::*;
pub use netns::*;
pub use process::*;
pub use records::*;
pub use unbound::*;
pub use xdp::*;

/// How long a started Unbound or kdns may take to answer its first query.
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(15);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A number unique within this test process.
pub fn next_id() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst) + 1
}

/// Prefix of the temp dirs of the harness: `kdns-test-<pid>-<tag>-<random>`
/// (the pid lets the next run remove those of a killed run).
const TEMP_PREFIX: &str = "kdns-test-";

/// A fresh directory under the system temp dir, removed on drop.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-{tag}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir for {tag}: {e}"))
}

// ---------------------------------------------------------------------------
// Tests that load the machine run alone
// ---------------------------------------------------------------------------

static EXCLUSIVE: RwLock<()> = RwLock::new(());

/// Held by ordinary tests: they may run in parallel with each other.
pub fn shared_slot() -> RwLockReadGuard<'static, ()> {
    EXCLUSIVE.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by load tests (failover, floods): they run alone, so the two cores
/// are theirs and their deadlines need less slack.
pub fn exclusive_slot() -> RwLockWriteGuard<'static, ()> {
    EXCLUSIVE.write().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Preconditions
// ---------------------------------------------------------------------------

/// The tools the namespace tests run.
pub const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("unbound", "unbound"),
    ("dig", "dnsutils (bind9-dnsutils)"),
    ("kdig", "knot-dnsutils"),
    ("dnsperf", "dnsperf"),
    ("getent", "libc-bin"),
    ("timeout", "coreutils"),
    ("etcd", "etcd-server"),
    ("etcdctl", "etcd-client"),
];

pub use kdns_sys::process::{find_tool, is_root};

/// Fails (never skips) unless we are root and every tool is installed:
/// these tests must not pass by doing nothing.
pub fn require_root_and_tools() {
    let mut problems = Vec::new();
    if !is_root() {
        problems.push("not running as root: network namespaces need root; run `sudo -E cargo test --test daemon`".to_string());
    }
    let missing: Vec<String> = TOOLS.iter().filter(|(t, _)| find_tool(t).is_none()).map(|(t, p)| format!("{t} (package {p})")).collect();
    if !missing.is_empty() {
        problems.push(format!("missing tools: {}; run scripts/setup.sh as root", missing.join(", ")));
    }
    if !problems.is_empty() {
        panic!("the daemon integration tests cannot run here:\n  - {}\n(see tests/README.md)", problems.join("\n  - "));
    }
    netns::sweep_stale();
}

/// `tool`'s full path, or its bare name when it is not found (the command
/// then fails with a message naming it).
pub fn tool(t: &str) -> String {
    find_tool(t).map_or_else(|| t.to_string(), |p| p.display().to_string())
}

/// The repository's root (the kdns package).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the process `pid` is gone and not this one: its leftovers
/// (namespaces, temp dirs, Docker objects) may be removed.
pub fn gone(pid: u32) -> bool {
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}
