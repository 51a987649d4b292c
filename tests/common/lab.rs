//! A whole lab: a client namespace ("the containers"), a server namespace
//! ("the host") with kdns and Unbound backends, joined by a veth pair.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde_json::Value;
use tempfile::TempDir;

use super::kdns::{ctl_json, stats, Kdns};
use super::netns::{veth_with_queues, Link, Netns};
use super::unbound::{Unbound, UNBOUND_PORT};
use super::{next_id, temp_dir};

/// What a [`Lab`] starts.
#[derive(Debug, Clone)]
pub struct LabOpts {
    /// Number of Unbound backends (127.0.0.1:5301, :5302, ...).
    pub backends: usize,
    /// `--allow` networks, with `{x}` replaced by the lab's subnet number;
    /// `None`: `10.53.{x}.0/25` and `fd53:{x}::/64` (the client's addresses).
    pub allow: Option<Vec<String>>,
    /// Extra daemon arguments.
    pub extra: Vec<String>,
    /// RX/TX queues on both ends of the veth pair (`None`: one).
    pub queues: Option<u32>,
    /// Run with the server namespace and the link once they are set up,
    /// before kdns starts (e.g. to attach a stale XDP program).
    pub before_kdns: Option<fn(&Netns, &Link)>,
    /// Appended to each Unbound's `server:` clause (see
    /// [`Unbound::start_with`]).
    pub unbound_extra: String,
    /// A configuration file for kdns (TOML), written to the lab's
    /// `kdns.toml` and given with `--config`.
    pub config: Option<String>,
}

impl LabOpts {
    /// The default lab with `extra` kdns arguments.
    pub fn with_args(extra: &[&str]) -> LabOpts {
        LabOpts { extra: extra.iter().map(|a| a.to_string()).collect(), ..LabOpts::default() }
    }

    /// The default lab with kdns reading the configuration `toml`.
    pub fn with_config(toml: &str) -> LabOpts {
        LabOpts { config: Some(toml.to_string()), ..LabOpts::default() }
    }
}

impl Default for LabOpts {
    fn default() -> Self {
        LabOpts { backends: 1, allow: None, extra: Vec::new(), queues: None, before_kdns: None, unbound_extra: String::new(), config: None }
    }
}

/// A client namespace ("the containers"), a server namespace ("the host")
/// with kdns on 10.53.X.1:53 and [fd53:X::1]:53 and Unbound backends on its
/// loopback, and a temp dir for the test's files. Dropped in order: kdns,
/// Unbounds, namespaces, the temp dir.
#[derive(Debug)]
pub struct Lab {
    pub kdns: Kdns,
    /// The arguments kdns was started with (without `--control-socket`).
    pub kdns_args: Vec<String>,
    pub unbounds: Vec<Unbound>,
    pub link: Link,
    pub client: Netns,
    pub server: Netns,
    /// Files of the test (query files, kdns.toml), removed last.
    pub dir: TempDir,
}

impl Lab {
    pub fn start(opts: LabOpts) -> Lab {
        let id = next_id();
        let x = (((std::process::id() as usize) * 7 + id) % 250 + 1) as u8;
        let client = Netns::new(id, "c");
        let server = Netns::new(id, "s");
        let link = veth_with_queues(&client, &server, id, x, opts.queues);
        let unbounds: Vec<Unbound> = (0..opts.backends)
            .map(|i| Unbound::start_with(&server, SocketAddr::from(([127, 0, 0, 1], UNBOUND_PORT + i as u16)), &opts.unbound_extra))
            .collect();
        let allow = opts.allow.clone().unwrap_or_else(|| vec!["10.53.{x}.0/25".into(), "fd53:{x}::/64".into()]);
        let allow = allow.iter().map(|a| a.replace("{x}", &x.to_string()));
        let mut args: Vec<String> =
            vec!["--listen".into(), format!("{}:53", link.server_v4()), "--listen".into(), format!("[{}]:53", link.server_v6())];
        for u in &unbounds {
            args.push("--backend".into());
            args.push(u.addr.to_string());
        }
        for a in allow {
            args.push("--allow".into());
            args.push(a);
        }
        let dir = temp_dir("lab");
        if let Some(toml) = &opts.config {
            let path = dir.path().join("kdns.toml");
            fs::write(&path, toml).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            args.extend(["--config".to_string(), path.display().to_string()]);
        }
        args.extend(opts.extra.iter().cloned());
        if let Some(f) = opts.before_kdns {
            f(&server, &link);
        }
        let mut kdns = Kdns::spawn(&server, &args);
        kdns.wait_ready(&client, &link.server_v4());
        Lab { kdns, kdns_args: args, unbounds, link, client, server, dir }
    }

    /// Starts a new kdns with the same arguments (the old one must have
    /// exited; it is dropped) and waits until it answers.
    pub fn respawn_kdns(&mut self) {
        assert!(self.kdns.try_exit().is_some(), "respawn_kdns: the previous kdns (pid {}) is still running", self.kdns.pid());
        self.kdns = Kdns::spawn(&self.server, &self.kdns_args);
        self.kdns.wait_ready(&self.client, &self.link.server_v4());
    }

    /// A path in the lab's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `@10.53.X.1`
    pub fn at4(&self) -> String {
        format!("@{}", self.link.server_v4())
    }

    /// `@fd53:X::1`
    pub fn at6(&self) -> String {
        format!("@{}", self.link.server_v6())
    }

    pub fn stats(&self) -> Value {
        stats(&self.kdns.socket)
    }

    /// Whether kdns is still running.
    pub fn kdns_alive(&mut self) -> bool {
        self.kdns.try_exit().is_none()
    }

    pub fn backends(&self) -> Value {
        ctl_json(&self.kdns.socket, &["backends"])
    }

    /// Prints the logs of every process (for a failing test's output).
    pub fn dump_logs(&self) {
        eprintln!("---- kdns log ----\n{}", self.kdns.log());
        for u in &self.unbounds {
            eprintln!("---- unbound {} log ----\n{}", u.addr, u.log());
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for u in &self.unbounds {
                eprintln!("---- unbound {} log ----\n{}", u.addr, u.log());
            }
        }
    }
}
