//! Unbound backends serving the tests' local zones (no Internet needed).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tempfile::TempDir;

use super::dns::dig;
use super::netns::{InNs, Netns};
use super::process::{poll_until, Proc};
use super::{temp_dir, tool, READY_WITHIN};

/// Port of the first Unbound inside the server namespace (the next ones
/// follow).
pub const UNBOUND_PORT: u16 = 5301;

/// Address record every name under `test.` gets.
pub const TEST_A: &str = "10.99.0.1";
/// www.static.test.
pub const WWW_A: &str = "10.99.0.5";
pub const WWW_AAAA: &str = "fd99::5";
/// big.static.test has this many TXT records of 200 bytes (> 512 bytes).
pub const BIG_TXT_RECORDS: usize = 8;

/// An Unbound serving the local zones (no Internet needed), in a namespace,
/// killed on drop.
#[derive(Debug)]
pub struct Unbound {
    pub addr: SocketAddr,
    ns: InNs,
    dir: TempDir,
    proc: Option<Proc>,
}

impl Unbound {
    /// Writes the configuration and starts Unbound on `addr` inside `ns`,
    /// then waits until it answers.
    pub fn start(ns: &Netns, addr: SocketAddr) -> Unbound {
        Self::start_with(ns, addr, "")
    }

    /// [`Unbound::start`] with `extra` inserted at the end of the `server:`
    /// clause (more server options, then e.g. a `stub-zone:` clause).
    pub fn start_with(ns: &Netns, addr: SocketAddr, extra: &str) -> Unbound {
        let dir = temp_dir("unbound");
        let conf = unbound_conf(dir.path(), addr).replace("remote-control:\n", &format!("{extra}remote-control:\n"));
        fs::write(dir.path().join("unbound.conf"), conf).expect("write unbound.conf");
        let mut u = Unbound { addr, ns: ns.handle(), dir, proc: None };
        u.spawn();
        u
    }

    fn spawn(&mut self) {
        assert!(self.proc.is_none(), "unbound {} already running", self.addr);
        let conf = self.dir.path().join("unbound.conf");
        let cmd = self.ns.command(&[&tool("unbound"), "-d", "-c", conf.to_str().expect("utf-8 path")]);
        let mut proc = Proc::spawn(cmd, &self.dir.path().join("unbound.log"));
        let at = format!("@{}", self.addr.ip());
        let port = self.addr.port().to_string();
        let ready = poll_until(READY_WITHIN, Duration::from_millis(100), || {
            if let Some(st) = proc.try_exit() {
                panic!("unbound {} exited at start ({st}):\n{}", self.addr, proc.log());
            }
            (dig(&self.ns, &["+time=1", "-p", &port, &at, "ready.test", "A"]).status == "NOERROR").then_some(())
        });
        if ready.is_none() {
            panic!("unbound {} did not answer within {READY_WITHIN:?}:\n{}", self.addr, proc.log());
        }
        self.proc = Some(proc);
    }

    /// Kills Unbound at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.proc = None;
    }

    /// Starts it again with the same configuration and waits until it
    /// answers.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("unbound.log")).unwrap_or_default()
    }
}

/// The Unbound configuration: local zones only, foreground, no privileges
/// dropped, no chroot, no remote control, files in `dir`.
pub fn unbound_conf(dir: &Path, addr: SocketAddr) -> String {
    let mut conf = include_str!("../../scripts/unbound-base.conf")
        .replace("@IP@", &addr.ip().to_string())
        .replace("@PORT@", &addr.port().to_string())
        .replace("@DIR@", &dir.display().to_string());
    let _ = write!(
        conf,
        r#"    local-zone: "test." redirect
    local-data: "test. 300 IN A {TEST_A}"
    local-zone: "static.test." static
    local-data: "www.static.test. 300 IN A {WWW_A}"
    local-data: "www.static.test. 300 IN AAAA {WWW_AAAA}"
"#
    );
    for i in 0..BIG_TXT_RECORDS {
        let s = ((b'a' + i as u8) as char).to_string().repeat(200);
        let _ = writeln!(conf, "    local-data: \"big.static.test. 300 IN TXT \\\"{s}\\\"\"");
    }
    conf + "remote-control:\n    control-enable: no\n"
}
