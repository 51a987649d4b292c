//! The configuration: a TOML file, command-line flags that replace its
//! keys, defaults for everything, and validation that names the key at
//! fault.
//!
//! Every setting is defined once, in `table.rs`: the file's sections, the
//! flags, the defaults, the range and word checks, and the documentation
//! (`--help`'s configuration file, the README's table) all come from that
//! table. A run goes: the file is parsed ([`parse`]), the command line's
//! values are put in place of its keys ([`FileConfig::apply_flags`]), and
//! [`settle`] checks what the table cannot (keys that depend on others)
//! and builds the [`Settings`] every part of the daemon takes its values
//! from.

mod cli;
mod define;
mod help;
mod settle;
mod table;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use kdns_core::engine::EngineConfig;
use serde::{Deserialize, Serialize};

use crate::upstream_sockets::PortsConfig;

pub use cli::{command, load, reference_table};
pub use settle::settle;
pub use table::{
    CacheSection, ClusterSection, DockerSection, FileConfig, LimitsSection, RecordsSection, TcpSection, UpstreamSection, XdpSection,
};

/// A configuration error: the key at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key`, the flag that set it (`--listen[0]`), or a file path
    /// when the file itself is at fault.
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), msg: msg.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// How queries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// AF_XDP sockets (fail to start if that is not possible).
    Xdp,
    /// Kernel UDP sockets.
    Udp,
    /// AF_XDP where it can attach, UDP sockets otherwise (the reason is logged).
    Auto,
}

/// `workers = "auto"` or a number.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Workers {
    /// A fixed count.
    Count(usize),
    /// `"auto"`: one per core.
    Word(String),
}

impl Default for Workers {
    fn default() -> Self {
        Workers::Word("auto".into())
    }
}

/// A backend: `"addr[:port]"` or `{ address = "...", weight = N }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum BackendEntry {
    /// `"10.0.0.2:53"`, `"10.0.0.2"`, `"[fd00::2]:53"`.
    Addr(String),
    /// `{ address = "10.0.0.2:53", weight = 2 }`.
    Table {
        /// The address.
        address: String,
        /// The weight (default 1).
        #[serde(default = "one")]
        weight: u16,
    },
}

fn one() -> u16 {
    1
}

/// The per-client query rate the XDP program enforces (`[limits]
/// xdp_client_*`; `qps` 0: off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct XdpClientRate {
    /// Queries per second.
    pub qps: u32,
    /// Queries at once.
    pub burst: u32,
    /// Clients tracked.
    pub entries: u32,
}

/// The validated `[docker]` settings (present when the provider runs).
#[derive(Debug, Clone, PartialEq)]
pub struct DockerSettings {
    /// The API socket path.
    pub socket: PathBuf,
    /// Network names or compose network names; empty: by listen address.
    pub networks: Vec<String>,
    /// Serve containers whose healthcheck is still starting.
    pub serve_starting: bool,
    /// The listen addresses (to find the networks when none are named).
    pub listen: Vec<std::net::IpAddr>,
}

/// A secret read from a file: kept out of `Debug` output (logs,
/// `--check-config`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// The validated `[records]` settings.
#[derive(Debug, Clone, Default)]
pub struct RecordsSettings {
    /// Local domains, lower-case, without the trailing dot.
    pub domains: Vec<String>,
    /// Default TTL.
    pub default_ttl: u32,
    /// The records file.
    pub file: Option<PathBuf>,
    /// The state file.
    pub state_file: Option<PathBuf>,
    /// The TCP control API's address.
    pub control_tcp: Option<SocketAddr>,
    /// Its bearer token (read from `control_token_file`).
    pub control_token: Option<Secret>,
}

/// The validated configuration the daemon runs with: every driver takes
/// its values from here.
#[derive(Debug, Clone)]
pub struct Settings {
    /// UDP/TCP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Receive buffer of each listening UDP socket, bytes.
    pub udp_receive_buffer: usize,
    /// Number of UDP workers.
    pub workers: usize,
    /// Pin workers to cores.
    pub pin_workers: bool,
    /// SCHED_FIFO priority of the AF_XDP workers; 0: normal scheduling.
    pub realtime_priority: u32,
    /// The engine settings (backends, cache, health, ACL) shared by all workers;
    /// each worker gets its own seed.
    pub engine: EngineConfig,
    /// The per-client query rate of the XDP program.
    pub xdp_client_rate: XdpClientRate,
    /// Where backends came from, for the log.
    pub backends_from: String,
    /// The source-port slots of every worker's backend sockets.
    pub ports: PortsConfig,
    /// Control socket path.
    pub control_socket: PathBuf,
    /// Where a kdns started with `--takeover` finds this one.
    pub handover_socket: PathBuf,
    /// Exit after handing over (else wait for SIGTERM).
    pub exit_after_handover: bool,
    /// Metrics address.
    pub metrics: Option<SocketAddr>,
    /// Log filter.
    pub log_level: String,
    /// TCP settings.
    pub tcp: TcpSection,
    /// How queries are read.
    pub io: IoMode,
    /// AF_XDP settings (validated even in a socket-only build, so a
    /// configuration file means the same to both).
    #[cfg_attr(not(feature = "xdp"), allow(dead_code))]
    pub xdp: XdpSection,
    /// Local records.
    pub records: RecordsSettings,
    /// The Docker provider (none: off).
    pub docker: Option<DockerSettings>,
    /// Several hosts sharing records through etcd (none: off).
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// Where the cache is dumped at a clean stop and loaded at start
    /// (none: off).
    pub cache_dump: Option<PathBuf>,
}

/// Reads `path` (TOML).
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
    parse(&text).map_err(|e| ConfigError::new(path.display().to_string(), e.msg))
}

/// Parses TOML text. Unknown keys and wrong types are refused with the
/// key in the message.
pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::new("config", e.to_string().trim_end().to_string()))
}

/// Parses `addr[:port]` with a default port (IPv6 with a port in brackets).
pub fn parse_addr(s: &str, default_port: u16) -> Option<SocketAddr> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some(a);
    }
    let ip = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')).unwrap_or(s);
    ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, default_port))
}

/// Nameservers from resolv.conf text, skipping any of `ours` (kdns itself).
pub fn resolv_conf_backends(text: &str, ours: &[SocketAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next().and_then(|a| a.parse::<IpAddr>().ok()))
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|a| !ours.iter().any(|o| o.port() == a.port() && (o.ip() == a.ip() || o.ip().is_unspecified())))
        .collect()
}

#[cfg(test)]
mod tests;
