//! The configuration: a TOML file, command-line overrides, defaults for
//! everything, and validation that names the key at fault.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kdns_core::cache::CacheConfig;
use kdns_core::engine::{Acl, ClientLimits, EngineConfig, IpNet, OverLimit};
use kdns_core::upstream::{BackendSpec, HealthConfig, Selection};
use serde::{Deserialize, Serialize};

use crate::upstream_sockets::PortsConfig;

/// Where kdns listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5353";
/// Where the control socket goes when nothing says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/kdns/control.sock";
/// Where runtime changes to the local records are kept when nothing says otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/kdns/records.json";

/// A configuration error: the key at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// `section.key` (or a file path when the file itself is at fault).
    pub key: String,
    /// What is wrong.
    pub msg: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, msg: impl Into<String>) -> ConfigError {
        ConfigError { key: key.into(), msg: msg.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.msg)
    }
}

impl std::error::Error for ConfigError {}

/// The file, as written. Every field has a default.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// `[server]`
    pub server: ServerSection,
    /// `[cache]`
    pub cache: CacheSection,
    /// `[upstream]`
    pub upstream: UpstreamSection,
    /// `[limits]`
    pub limits: LimitsSection,
    /// `[tcp]`
    pub tcp: TcpSection,
    /// `[xdp]`
    pub xdp: XdpSection,
    /// `[records]`
    pub records: RecordsSection,
    /// `[docker]`
    pub docker: DockerSection,
}

/// Where the Docker API socket is unless configured.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";

/// `[docker]`: names learnt from the Docker engine.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DockerSection {
    /// Follow the Docker engine.
    pub enabled: bool,
    /// The engine's API socket (a path, or `unix://` and a path).
    pub socket: String,
    /// Networks whose containers are served: a network's name, or the name
    /// a compose file gives it (label `com.docker.compose.network`). Empty:
    /// the networks whose subnets hold a listen address.
    pub networks: Vec<String>,
    /// A container whose healthcheck has not passed yet: `serve` or `hide`.
    pub starting: String,
}

impl Default for DockerSection {
    fn default() -> Self {
        DockerSection { enabled: false, socket: DEFAULT_DOCKER_SOCKET.into(), networks: Vec::new(), starting: "serve".into() }
    }
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

/// `[records]`: local service discovery.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordsSection {
    /// Local domains (the records file may add more).
    pub domains: Vec<String>,
    /// TTL of local answers without their own.
    pub default_ttl: u32,
    /// The records file (TOML), reloaded when it changes ("": none).
    pub file: String,
    /// Where changes made through the API are kept ("": nowhere).
    pub state_file: String,
    /// Serve the control API on this TCP address too ("": no).
    pub control_tcp: String,
    /// The bearer token of the TCP control API (required with `control_tcp`).
    pub control_token_file: String,
}

impl Default for RecordsSection {
    fn default() -> Self {
        RecordsSection {
            domains: Vec::new(),
            default_ttl: 10,
            file: String::new(),
            state_file: DEFAULT_STATE_FILE.into(),
            control_tcp: String::new(),
            control_token_file: String::new(),
        }
    }
}

/// The validated `[records]` settings.
#[derive(Clone, Default)]
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
    pub control_token: Option<String>,
}

impl fmt::Debug for RecordsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordsSettings")
            .field("domains", &self.domains)
            .field("default_ttl", &self.default_ttl)
            .field("file", &self.file)
            .field("state_file", &self.state_file)
            .field("control_tcp", &self.control_tcp)
            .field("control_token", &self.control_token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// SCHED_FIFO priority of the AF_XDP workers unless configured.
pub const DEFAULT_REALTIME_PRIORITY: u32 = 10;

/// `[xdp]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct XdpSection {
    /// Interfaces to attach to (empty: those holding a listen address).
    pub interfaces: Vec<String>,
    /// Queues to serve: empty for all of each interface's RX queues.
    pub queues: Vec<u32>,
    /// Spin instead of sleeping when idle.
    pub busy_poll: bool,
    /// UMEM frame size: 2048 or 4096.
    pub frame_size: u32,
    /// Frames per UMEM (per queue).
    pub frames: u32,
    /// Ring size (RX, TX, fill, completion), a power of two.
    pub ring_size: u32,
    /// Try zero-copy first (falls back to copy mode).
    pub zero_copy: bool,
    /// SCHED_FIFO priority of the AF_XDP workers (1-99; 0: normal
    /// scheduling). Unset: [`DEFAULT_REALTIME_PRIORITY`], or 0 with
    /// `busy_poll`. A real-time worker runs whenever it has frames and
    /// sleeps when its rings are empty, so the kernel's receive path on the
    /// same core runs only then and never copies in more than the worker
    /// answers: overload is shed before the copy. (The UDP socket workers
    /// stay at normal priority: measured, real time did not help them.)
    pub realtime_priority: Option<u32>,
}

impl Default for XdpSection {
    fn default() -> Self {
        XdpSection {
            interfaces: Vec::new(),
            queues: Vec::new(),
            busy_poll: false,
            frame_size: 2048,
            frames: 4096,
            ring_size: 2048,
            zero_copy: true,
            realtime_priority: None,
        }
    }
}

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

/// `[server]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// UDP and TCP listen addresses.
    pub listen: Vec<String>,
    /// Worker threads: a count or "auto" (one per core).
    pub workers: Workers,
    /// Pin each worker to its own core.
    pub pin_workers: bool,
    /// Networks allowed to query.
    pub allow: Vec<String>,
    /// Our EDNS UDP payload size.
    pub udp_size: u16,
    /// The control socket.
    pub control_socket: String,
    /// Prometheus metrics address (empty: off).
    pub metrics: String,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: String,
    /// "xdp", "udp" or "auto".
    pub io: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: vec![DEFAULT_LISTEN.into()],
            workers: Workers::default(),
            pin_workers: true,
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            udp_size: 1232,
            control_socket: DEFAULT_CONTROL_SOCKET.into(),
            metrics: String::new(),
            log_level: "info".into(),
            io: "auto".into(),
        }
    }
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSection {
    /// Entries per worker.
    pub entries: usize,
    /// Lowest TTL handed out (seconds).
    pub min_ttl: u32,
    /// Highest TTL handed out (seconds).
    pub max_ttl: u32,
    /// Cap on negative-answer TTLs (seconds).
    pub negative_max_ttl: u32,
    /// How long SERVFAIL is cached (seconds, at most 30).
    pub servfail_ttl: u32,
    /// How long expired answers may be served when no backend answers (seconds; 0: never).
    pub stale_window: u64,
    /// Refresh popular entries in the last N percent of their TTL (0: never).
    pub prefetch_percent: u32,
}

impl Default for CacheSection {
    fn default() -> Self {
        let c = CacheConfig::default();
        CacheSection {
            entries: c.max_entries,
            min_ttl: c.min_ttl,
            max_ttl: c.max_ttl,
            negative_max_ttl: c.negative_max_ttl,
            servfail_ttl: c.servfail_ttl,
            stale_window: c.stale_window.as_secs(),
            prefetch_percent: c.prefetch_percent,
        }
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

/// `[upstream]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    /// The resolvers misses go to (empty: from /etc/resolv.conf).
    pub backends: Vec<BackendEntry>,
    /// "round-robin" or "least-outstanding".
    pub selection: String,
    /// The longest a try waits (ms), and the wait before a backend's first
    /// answer; then each backend's timeout follows its round-trip times.
    pub try_timeout_ms: u64,
    /// The shortest try timeout (ms).
    pub try_timeout_min_ms: u64,
    /// Most backends asked per query.
    pub max_tries: u8,
    /// Give up (stale answer or SERVFAIL) after this long (ms).
    pub query_deadline_ms: u64,
    /// Silent timeouts in a row that make a backend suspect (a probe then
    /// decides).
    pub down_after_timeouts: u32,
    /// Share of silent timeouts over the window that makes a backend
    /// suspect.
    pub failure_ratio: f32,
    /// Outcomes in the failure window.
    pub window: u32,
    /// Good probe answers that bring a backend back.
    pub up_after: u32,
    /// First probe delay (ms).
    pub probe_initial_ms: u64,
    /// Longest probe delay (ms).
    pub probe_max_ms: u64,
    /// The name probed (CH TXT).
    pub probe_name: String,
    /// Queries in flight per worker.
    pub max_in_flight: usize,
    /// Answer identical questions in flight from one upstream query.
    pub coalesce: bool,
    /// 0x20: randomise the letter case of forwarded questions and require
    /// it back.
    pub randomize_case: bool,
    /// Source-port slots per worker: sockets on random ports that backend
    /// queries leave from, one picked at random per query.
    pub source_ports: u16,
    /// Give a slot a fresh socket (a new random port) after this many
    /// queries sent from it (0: not by count).
    pub source_port_rotate_after: u32,
    /// ... or when its socket is this old (ms; 0: not by age).
    pub source_port_rotate_ms: u64,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        let e = EngineConfig::default();
        let h = HealthConfig::default();
        let p = PortsConfig::default();
        UpstreamSection {
            backends: Vec::new(),
            selection: "round-robin".into(),
            try_timeout_ms: e.try_timeout.as_millis() as u64,
            try_timeout_min_ms: e.try_timeout_min.as_millis() as u64,
            max_tries: e.max_tries,
            query_deadline_ms: e.query_deadline.as_millis() as u64,
            down_after_timeouts: h.down_after_timeouts,
            failure_ratio: h.down_failure_ratio,
            window: h.window,
            up_after: h.up_after_successes,
            probe_initial_ms: h.probe_initial.as_millis() as u64,
            probe_max_ms: h.probe_max.as_millis() as u64,
            probe_name: e.probe_name,
            max_in_flight: e.pending_capacity,
            coalesce: e.coalesce,
            randomize_case: e.randomize_case,
            source_ports: p.slots,
            source_port_rotate_after: p.rotate_after,
            source_port_rotate_ms: p.rotate_every.as_millis() as u64,
        }
    }
}

/// `[limits]`: fair shares per client (on cache misses only).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// IPv4 clients sharing this prefix length are one client.
    pub client_prefix_v4: u8,
    /// IPv6 clients sharing this prefix length are one client.
    pub client_prefix_v6: u8,
    /// Most queries one client may have waiting upstream, per worker (0:
    /// off; unset: a sixteenth of `upstream.max_in_flight`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_max_pending: Option<u32>,
    /// Misses one client may send upstream per second, per worker (0: off).
    pub client_miss_rate: u32,
    /// Misses one client may send upstream in a burst.
    pub client_miss_burst: u32,
    /// What a client over its share gets: "servfail", "refused" or "drop".
    pub over_limit: String,
    /// Clients tracked per worker.
    pub clients: usize,
    /// Queries (hits included) one client may send per second, enforced in
    /// the XDP program (0: off).
    pub xdp_client_qps: u32,
    /// Queries one client may send at once under `xdp_client_qps`.
    pub xdp_client_burst: u32,
    /// Clients the XDP program tracks (LRU).
    pub xdp_clients: u32,
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

impl Default for LimitsSection {
    fn default() -> Self {
        let l = ClientLimits::default();
        LimitsSection {
            client_prefix_v4: l.prefix_v4,
            client_prefix_v6: l.prefix_v6,
            client_max_pending: None,
            client_miss_rate: l.miss_rate,
            client_miss_burst: l.miss_burst,
            over_limit: "servfail".into(),
            clients: l.table_size,
            xdp_client_qps: 0,
            xdp_client_burst: 200,
            xdp_clients: 65536,
        }
    }
}

fn settle_limits(l: &LimitsSection, max_in_flight: usize) -> Result<ClientLimits, ConfigError> {
    if l.client_prefix_v4 > 32 {
        return Err(ConfigError::new("limits.client_prefix_v4", format!("{}: must be 0..=32", l.client_prefix_v4)));
    }
    if l.client_prefix_v6 > 128 {
        return Err(ConfigError::new("limits.client_prefix_v6", format!("{}: must be 0..=128", l.client_prefix_v6)));
    }
    let max_pending = l.client_max_pending.unwrap_or((max_in_flight / 16).max(1) as u32);
    if max_pending as usize > max_in_flight {
        return Err(ConfigError::new(
            "limits.client_max_pending",
            format!("{max_pending}: must be at most upstream.max_in_flight ({max_in_flight}); 0 turns the share off"),
        ));
    }
    if l.client_miss_rate > 0 && l.client_miss_burst == 0 {
        return Err(ConfigError::new("limits.client_miss_burst", "must be at least 1 while client_miss_rate is on"));
    }
    if l.clients == 0 || l.clients > 1 << 20 {
        return Err(ConfigError::new("limits.clients", format!("{}: must be 1..=1048576", l.clients)));
    }
    if l.xdp_client_qps > 0 && l.xdp_client_burst == 0 {
        return Err(ConfigError::new("limits.xdp_client_burst", "must be at least 1 while xdp_client_qps is on"));
    }
    if l.xdp_client_qps > 100_000_000 {
        return Err(ConfigError::new("limits.xdp_client_qps", format!("{}: must be at most 100000000", l.xdp_client_qps)));
    }
    if l.xdp_clients == 0 || l.xdp_clients > 1 << 24 {
        return Err(ConfigError::new("limits.xdp_clients", format!("{}: must be 1..=16777216", l.xdp_clients)));
    }
    let Some(over_limit) = OverLimit::ALL.into_iter().find(|o| o.name() == l.over_limit) else {
        let other = &l.over_limit;
        return Err(ConfigError::new("limits.over_limit", format!("'{other}': expected servfail, refused or drop")));
    };
    Ok(ClientLimits {
        prefix_v4: l.client_prefix_v4,
        prefix_v6: l.client_prefix_v6,
        max_pending,
        miss_rate: l.client_miss_rate,
        miss_burst: l.client_miss_burst,
        over_limit,
        table_size: l.clients,
    })
}

/// `[tcp]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TcpSection {
    /// Serve TCP on the listen addresses.
    pub enabled: bool,
    /// Close a connection idle this long (ms).
    pub idle_timeout_ms: u64,
    /// Most open client connections. When the table is full, a new
    /// connection takes the place of the longest-idle one.
    pub max_connections: usize,
    /// Most open connections from one client address (at least 1; a
    /// value of `max_connections` or more means no cap of its own). A
    /// connection over the cap is closed at once.
    pub max_connections_per_client: usize,
}

impl Default for TcpSection {
    fn default() -> Self {
        TcpSection { enabled: true, idle_timeout_ms: 10_000, max_connections: 1024, max_connections_per_client: 64 }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Vec<String>,
    /// `--backend`
    pub backends: Vec<String>,
    /// `--workers`
    pub workers: Option<String>,
    /// `--cache-entries`
    pub cache_entries: Option<usize>,
    /// `--allow`
    pub allow: Vec<String>,
    /// `--control-socket`
    pub control_socket: Option<String>,
    /// `--metrics`
    pub metrics: Option<String>,
    /// `--log-level`
    pub log_level: Option<String>,
    /// `--io`
    pub io: Option<String>,
    /// `--interface`
    pub interfaces: Vec<String>,
    /// `--records-file`
    pub records_file: Option<String>,
    /// `--domain` (replaces records.domains)
    pub domains: Vec<String>,
    /// `--state-file`
    pub state_file: Option<String>,
    /// `--realtime-priority`.
    pub realtime_priority: Option<u32>,
    /// `--docker`
    pub docker: bool,
    /// `--docker-socket`
    pub docker_socket: Option<String>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// UDP/TCP listen addresses.
    pub listen: Vec<SocketAddr>,
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
}

/// Reads `path` (TOML).
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path.display().to_string(), format!("cannot read: {e}")))?;
    parse(&text).map_err(|e| ConfigError::new(path.display().to_string(), e.msg))
}

/// Parses TOML text.
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

/// Parses a `--backend` value: `addr[:port][@weight]`.
fn parse_backend_arg(s: &str) -> Option<BackendEntry> {
    match s.rsplit_once('@') {
        Some((a, w)) => Some(BackendEntry::Table { address: a.into(), weight: w.parse().ok()? }),
        None => Some(BackendEntry::Addr(s.into())),
    }
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

/// Merges the file, the overrides and the defaults, and checks everything.
/// `resolv_conf` is the text of /etc/resolv.conf (used when no backend is
/// configured); `cores` the number of usable cores.
pub fn settle(file: FileConfig, o: &Overrides, resolv_conf: Option<&str>, cores: usize) -> Result<Settings, ConfigError> {
    let s = &file.server;
    let listen_src: Vec<String> = if o.listen.is_empty() { s.listen.clone() } else { o.listen.clone() };
    let key_listen = if o.listen.is_empty() { "server.listen" } else { "--listen" };
    let mut listen = Vec::new();
    for (i, l) in listen_src.iter().enumerate() {
        let a =
            parse_addr(l, 53).ok_or_else(|| ConfigError::new(format!("{key_listen}[{i}]"), format!("'{l}' is not an address[:port]")))?;
        listen.push(a);
    }
    if listen.is_empty() {
        return Err(ConfigError::new(key_listen, "at least one listen address is needed"));
    }

    let workers = match (&o.workers, &s.workers) {
        (Some(w), _) => parse_workers(w, cores).ok_or_else(|| ConfigError::new("--workers", format!("'{w}' is not a number or 'auto'")))?,
        (None, Workers::Count(n)) => *n,
        (None, Workers::Word(w)) => {
            parse_workers(w, cores).ok_or_else(|| ConfigError::new("server.workers", format!("'{w}' is not a number or 'auto'")))?
        }
    };
    if workers == 0 || workers > 1024 {
        return Err(ConfigError::new("server.workers", format!("{workers} workers: must be 1..=1024")));
    }

    let allow_src: Vec<String> = if o.allow.is_empty() { s.allow.clone() } else { o.allow.clone() };
    let key_allow = if o.allow.is_empty() { "server.allow" } else { "--allow" };
    let mut nets = Vec::new();
    for (i, n) in allow_src.iter().enumerate() {
        nets.push(n.parse::<IpNet>().map_err(|e| ConfigError::new(format!("{key_allow}[{i}]"), e.to_string()))?);
    }
    if !(512..=65_535).contains(&s.udp_size) {
        return Err(ConfigError::new("server.udp_size", format!("{} is outside 512..=65535", s.udp_size)));
    }

    let c = &file.cache;
    let entries = o.cache_entries.unwrap_or(c.entries);
    if entries == 0 || entries > 1 << 28 {
        return Err(ConfigError::new("cache.entries", format!("{entries}: must be 1..=268435456")));
    }
    if c.min_ttl > c.max_ttl {
        return Err(ConfigError::new("cache.min_ttl", format!("{} is above cache.max_ttl ({})", c.min_ttl, c.max_ttl)));
    }
    if c.servfail_ttl > 30 {
        return Err(ConfigError::new("cache.servfail_ttl", format!("{} s: at most 30", c.servfail_ttl)));
    }
    if c.prefetch_percent > 50 {
        return Err(ConfigError::new("cache.prefetch_percent", format!("{}: at most 50", c.prefetch_percent)));
    }
    let cache = CacheConfig {
        min_ttl: c.min_ttl,
        max_ttl: c.max_ttl,
        negative_max_ttl: c.negative_max_ttl,
        servfail_ttl: c.servfail_ttl,
        stale_window: Duration::from_secs(c.stale_window),
        prefetch_percent: c.prefetch_percent,
        ..CacheConfig::for_entries(entries)
    };

    let u = &file.upstream;
    let mut entries_b: Vec<(String, BackendEntry)> =
        u.backends.iter().enumerate().map(|(i, b)| (format!("upstream.backends[{i}]"), b.clone())).collect();
    if !o.backends.is_empty() {
        entries_b.clear();
        for (i, b) in o.backends.iter().enumerate() {
            let e = parse_backend_arg(b)
                .ok_or_else(|| ConfigError::new(format!("--backend[{i}]"), format!("'{b}' is not addr[:port][@weight]")))?;
            entries_b.push((format!("--backend[{i}]"), e));
        }
    }
    let mut backends = Vec::new();
    let backends_from = if entries_b.is_empty() {
        let found = resolv_conf.map(|t| resolv_conf_backends(t, &listen)).unwrap_or_default();
        if found.is_empty() {
            return Err(ConfigError::new(
                "upstream.backends",
                "no backends configured and none usable in /etc/resolv.conf; set upstream.backends or pass --backend",
            ));
        }
        backends.extend(found.into_iter().map(BackendSpec::new));
        "/etc/resolv.conf".to_string()
    } else {
        for (key, e) in entries_b {
            let (addr, weight) = match &e {
                BackendEntry::Addr(a) => (a.as_str(), 1),
                BackendEntry::Table { address, weight } => (address.as_str(), *weight),
            };
            let a = parse_addr(addr, 53).ok_or_else(|| ConfigError::new(&key, format!("'{addr}' is not an address[:port]")))?;
            if weight == 0 {
                return Err(ConfigError::new(&key, "weight must be at least 1"));
            }
            if listen.contains(&a) {
                return Err(ConfigError::new(&key, format!("{a} is one of kdns's own listen addresses")));
            }
            backends.push(BackendSpec::new(a).with_weight(weight));
        }
        if o.backends.is_empty() {
            "the configuration".to_string()
        } else {
            "--backend".to_string()
        }
    };
    let selection = match u.selection.as_str() {
        "round-robin" => Selection::RoundRobin,
        "least-outstanding" => Selection::LeastOutstanding,
        other => return Err(ConfigError::new("upstream.selection", format!("'{other}': expected 'round-robin' or 'least-outstanding'"))),
    };
    if u.try_timeout_ms == 0 || u.try_timeout_ms > 60_000 {
        return Err(ConfigError::new("upstream.try_timeout_ms", format!("{}: must be 1..=60000", u.try_timeout_ms)));
    }
    if u.try_timeout_min_ms == 0 || u.try_timeout_min_ms > u.try_timeout_ms {
        return Err(ConfigError::new(
            "upstream.try_timeout_min_ms",
            format!("{}: must be 1..=upstream.try_timeout_ms ({})", u.try_timeout_min_ms, u.try_timeout_ms),
        ));
    }
    if u.query_deadline_ms < u.try_timeout_ms {
        return Err(ConfigError::new("upstream.query_deadline_ms", "must be at least upstream.try_timeout_ms"));
    }
    if u.max_tries == 0 {
        return Err(ConfigError::new("upstream.max_tries", "must be at least 1"));
    }
    if !(0.0..=1.0).contains(&u.failure_ratio) {
        return Err(ConfigError::new("upstream.failure_ratio", format!("{}: must be within 0..=1", u.failure_ratio)));
    }
    if u.probe_initial_ms == 0 || u.probe_max_ms < u.probe_initial_ms {
        return Err(ConfigError::new("upstream.probe_max_ms", "probe_initial_ms must be > 0 and probe_max_ms >= probe_initial_ms"));
    }
    if u.source_ports == 0 || u.source_ports > 1024 {
        return Err(ConfigError::new("upstream.source_ports", format!("{}: must be 1..=1024", u.source_ports)));
    }
    if u.source_port_rotate_ms > 86_400_000 {
        return Err(ConfigError::new(
            "upstream.source_port_rotate_ms",
            format!("{}: must be at most 86400000 (a day; 0: not by age)", u.source_port_rotate_ms),
        ));
    }
    let ports = PortsConfig {
        slots: u.source_ports,
        rotate_after: u.source_port_rotate_after,
        rotate_every: Duration::from_millis(u.source_port_rotate_ms),
        query_deadline: Duration::from_millis(u.query_deadline_ms),
    };
    if u.max_in_flight == 0 || u.max_in_flight > 32_768 {
        return Err(ConfigError::new("upstream.max_in_flight", format!("{}: must be 1..=32768", u.max_in_flight)));
    }
    let health = HealthConfig {
        down_after_timeouts: u.down_after_timeouts,
        window: u.window,
        down_failure_ratio: u.failure_ratio,
        up_after_successes: u.up_after,
        probe_initial: Duration::from_millis(u.probe_initial_ms),
        probe_max: Duration::from_millis(u.probe_max_ms),
        try_timeout_min: Duration::from_millis(u.try_timeout_min_ms),
        try_timeout_max: Duration::from_millis(u.try_timeout_ms),
    };
    let limits = settle_limits(&file.limits, u.max_in_flight)?;
    let engine = EngineConfig {
        cache,
        backends,
        health,
        selection,
        acl: Acl::new(nets),
        udp_size: s.udp_size,
        try_timeout: Duration::from_millis(u.try_timeout_ms),
        try_timeout_min: Duration::from_millis(u.try_timeout_min_ms),
        max_tries: u.max_tries,
        query_deadline: Duration::from_millis(u.query_deadline_ms),
        pending_capacity: u.max_in_flight,
        probe_name: u.probe_name.clone(),
        limits,
        coalesce: u.coalesce,
        source_ports: u.source_ports,
        randomize_case: u.randomize_case,
        seed: 0,
    };
    // Let the engine check what only it knows (probe name, pool limits).
    kdns_core::engine::Engine::new(EngineConfig { cache: CacheConfig::for_entries(1), ..engine.clone() })
        .map_err(|e| ConfigError::new("upstream", e.to_string()))?;

    let metrics_src = o.metrics.clone().unwrap_or_else(|| s.metrics.clone());
    let metrics = if metrics_src.is_empty() {
        None
    } else {
        Some(
            parse_addr(&metrics_src, 9153)
                .ok_or_else(|| ConfigError::new("server.metrics", format!("'{metrics_src}' is not an address[:port]")))?,
        )
    };
    let log_level = o.log_level.clone().unwrap_or_else(|| s.log_level.clone());
    if !matches!(log_level.as_str(), "error" | "warn" | "info" | "debug" | "trace") {
        return Err(ConfigError::new("server.log_level", format!("'{log_level}': expected error, warn, info, debug or trace")));
    }
    let t = &file.tcp;
    if t.max_connections == 0 {
        return Err(ConfigError::new("tcp.max_connections", "must be at least 1"));
    }
    if t.max_connections_per_client == 0 {
        return Err(ConfigError::new(
            "tcp.max_connections_per_client",
            "must be at least 1 (a value of tcp.max_connections or more means no cap per client)",
        ));
    }
    let io_src = o.io.clone().unwrap_or_else(|| s.io.clone());
    let io = match io_src.as_str() {
        "xdp" => IoMode::Xdp,
        "udp" => IoMode::Udp,
        "auto" => IoMode::Auto,
        other => {
            return Err(ConfigError::new(
                if o.io.is_some() { "--io" } else { "server.io" },
                format!("'{other}': expected xdp, udp or auto"),
            ))
        }
    };
    let mut xdp = file.xdp.clone();
    if !o.interfaces.is_empty() {
        xdp.interfaces = o.interfaces.clone();
    }
    let rt_key = if o.realtime_priority.is_some() { "--realtime-priority" } else { "xdp.realtime_priority" };
    let realtime_priority = match o.realtime_priority.or(xdp.realtime_priority) {
        Some(p) if p > 99 => {
            return Err(ConfigError::new(rt_key, format!("{p}: must be 0 (off) or 1..=99")));
        }
        Some(p) if p > 0 && xdp.busy_poll => {
            return Err(ConfigError::new(
                rt_key,
                format!("{p}: cannot be combined with busy_poll = true (a real-time worker that never sleeps leaves the kernel's receive path on its core no time); set it to 0"),
            ));
        }
        Some(p) => p,
        None if xdp.busy_poll => 0,
        None => DEFAULT_REALTIME_PRIORITY,
    };
    if xdp.frame_size != 2048 && xdp.frame_size != 4096 {
        return Err(ConfigError::new("xdp.frame_size", format!("{}: must be 2048 or 4096", xdp.frame_size)));
    }
    if !xdp.ring_size.is_power_of_two() || !(64..=16_384).contains(&xdp.ring_size) {
        return Err(ConfigError::new("xdp.ring_size", format!("{}: must be a power of two in 64..=16384", xdp.ring_size)));
    }
    if xdp.frames < 2 * xdp.ring_size || xdp.frames > 1 << 20 {
        return Err(ConfigError::new(
            "xdp.frames",
            format!("{}: must be at least 2 x ring_size ({}) and at most 1048576", xdp.frames, 2 * xdp.ring_size),
        ));
    }
    let records = settle_records(&file.records, o)?;
    let docker = settle_docker(&file.docker, o, &records, &listen)?;
    let xl = &file.limits;
    let xdp_client_rate = XdpClientRate { qps: xl.xdp_client_qps, burst: xl.xdp_client_burst, entries: xl.xdp_clients };
    Ok(Settings {
        xdp_client_rate,
        records,
        docker,
        listen,
        workers,
        pin_workers: s.pin_workers,
        realtime_priority,
        engine,
        backends_from,
        ports,
        control_socket: PathBuf::from(o.control_socket.clone().unwrap_or_else(|| s.control_socket.clone())),
        metrics,
        log_level,
        tcp: t.clone(),
        io,
        xdp,
    })
}

/// `[records]` with the command line's `--records-file`, `--domain` and
/// `--state-file`. Reads the control token file.
fn settle_records(r: &RecordsSection, o: &Overrides) -> Result<RecordsSettings, ConfigError> {
    let (src, key) = if o.domains.is_empty() { (&r.domains, "records.domains") } else { (&o.domains, "--domain") };
    let mut domains = Vec::new();
    for (i, d) in src.iter().enumerate() {
        let d = crate::records::defs::domain_name(d).map_err(|e| ConfigError::new(format!("{key}[{i}]"), e))?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    if r.default_ttl == 0 || r.default_ttl > crate::records::defs::MAX_TTL {
        return Err(ConfigError::new("records.default_ttl", format!("{}: must be 1..={}", r.default_ttl, crate::records::defs::MAX_TTL)));
    }
    let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    let file = path(o.records_file.as_deref().unwrap_or(&r.file));
    let state_file = path(o.state_file.as_deref().unwrap_or(&r.state_file));
    let control_tcp = if r.control_tcp.is_empty() {
        None
    } else {
        Some(r.control_tcp.parse::<SocketAddr>().map_err(|_| {
            ConfigError::new("records.control_tcp", format!("'{}' is not an address:port (e.g. \"127.0.0.1:5380\")", r.control_tcp))
        })?)
    };
    let control_token = match (control_tcp, r.control_token_file.as_str()) {
        (None, _) => None,
        (Some(_), "") => {
            return Err(ConfigError::new(
                "records.control_token_file",
                "required with records.control_tcp: the TCP control API only serves requests with its bearer token",
            ))
        }
        (Some(_), p) => {
            let t =
                std::fs::read_to_string(p).map_err(|e| ConfigError::new("records.control_token_file", format!("{p}: cannot read: {e}")))?;
            let t = t.trim().to_string();
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::new(
                    "records.control_token_file",
                    format!("{p}: the token must be one word (no spaces), and not empty"),
                ));
            }
            Some(t)
        }
    };
    Ok(RecordsSettings { domains, default_ttl: r.default_ttl, file, state_file, control_tcp, control_token })
}

/// `[docker]` with `--docker` and `--docker-socket` (which turns it on).
fn settle_docker(
    d: &DockerSection,
    o: &Overrides,
    records: &RecordsSettings,
    listen: &[SocketAddr],
) -> Result<Option<DockerSettings>, ConfigError> {
    let serve_starting = match d.starting.as_str() {
        "serve" => true,
        "hide" => false,
        other => return Err(ConfigError::new("docker.starting", format!("'{other}': expected \"serve\" or \"hide\""))),
    };
    let (socket, key) = match &o.docker_socket {
        Some(s) => (s.as_str(), "--docker-socket"),
        None => (d.socket.as_str(), "docker.socket"),
    };
    let socket = socket.strip_prefix("unix://").unwrap_or(socket);
    if !socket.starts_with('/') {
        return Err(ConfigError::new(
            key,
            format!("'{socket}': expected the absolute path of the Docker API socket (e.g. {DEFAULT_DOCKER_SOCKET})"),
        ));
    }
    for (i, n) in d.networks.iter().enumerate() {
        if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(format!("docker.networks[{i}]"), format!("{n:?} is not a network name")));
        }
    }
    if !(d.enabled || o.docker || o.docker_socket.is_some()) {
        return Ok(None);
    }
    if records.domains.is_empty() {
        return Err(ConfigError::new(
            if o.docker { "--docker" } else { "docker.enabled" },
            "the Docker provider needs a local domain to answer names under (records.domains or --domain)",
        ));
    }
    Ok(Some(DockerSettings {
        socket: PathBuf::from(socket),
        networks: d.networks.clone(),
        serve_starting,
        listen: listen.iter().map(|a| a.ip()).collect(),
    }))
}

fn parse_workers(w: &str, cores: usize) -> Option<usize> {
    if w == "auto" {
        Some(cores.max(1))
    } else {
        w.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_section() {
        assert_eq!(settle_text("").unwrap().docker, None, "off by default");
        let s = settle_text(
            "[server]\nlisten = [\"172.30.53.53:53\"]\n[records]\ndomains = [\"kdns\"]\n[docker]\nenabled = true\nsocket = \"unix:///run/d.sock\"\nnetworks = [\"dnsnet\"]\nstarting = \"hide\"\n",
        )
        .unwrap();
        let d = s.docker.unwrap();
        assert_eq!(d.socket, PathBuf::from("/run/d.sock"));
        assert_eq!((d.networks, d.serve_starting), (vec!["dnsnet".to_string()], false));
        assert_eq!(d.listen, vec!["172.30.53.53".parse::<std::net::IpAddr>().unwrap()]);
        let o = Overrides { docker_socket: Some("/tmp/x.sock".into()), domains: vec!["kdns".into()], ..Overrides::default() };
        let d = settle(FileConfig::default(), &o, Some("nameserver 10.0.0.53"), 1).unwrap().docker.unwrap();
        assert_eq!((d.socket, d.serve_starting), (PathBuf::from("/tmp/x.sock"), true), "--docker-socket turns it on");
        for (text, key) in [
            ("[docker]\nenabled = true", "docker.enabled"),
            ("[records]\ndomains = [\"kdns\"]\n[docker]\nstarting = \"later\"", "docker.starting"),
            ("[records]\ndomains = [\"kdns\"]\n[docker]\nsocket = \"docker.sock\"", "docker.socket"),
            ("[records]\ndomains = [\"kdns\"]\n[docker]\nnetworks = [\"\"]", "docker.networks[0]"),
        ] {
            assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
        }
        let o = Overrides { docker: true, ..Overrides::default() };
        assert_eq!(settle(FileConfig::default(), &o, Some("nameserver 10.0.0.53"), 1).unwrap_err().key, "--docker");
    }

    fn settle_text(text: &str) -> Result<Settings, ConfigError> {
        settle(parse(text)?, &Overrides::default(), Some("nameserver 10.0.0.53\n"), 4)
    }

    #[test]
    fn limits_section() {
        let l = settle_text("").unwrap().engine.limits;
        assert_eq!(l, ClientLimits::default());
        assert_eq!(l.max_pending, 256, "a sixteenth of max_in_flight (4096)");
        assert_eq!(settle_text("[upstream]\nmax_in_flight = 160").unwrap().engine.limits.max_pending, 10);
        let s = settle_text(
            "[limits]\nclient_prefix_v4 = 24\nclient_prefix_v6 = 56\nclient_max_pending = 64\nclient_miss_rate = 0\nover_limit = \"refused\"\nclients = 100\n[upstream]\ntry_timeout_min_ms = 20\ncoalesce = false\nrandomize_case = false\n",
        )
        .unwrap();
        let l = s.engine.limits;
        assert_eq!(
            (l.prefix_v4, l.prefix_v6, l.max_pending, l.miss_rate, l.over_limit, l.table_size),
            (24, 56, 64, 0, OverLimit::Refused, 100)
        );
        assert_eq!(s.engine.try_timeout_min, Duration::from_millis(20));
        assert_eq!(s.engine.health.try_timeout_min, Duration::from_millis(20));
        assert!(!s.engine.coalesce && !s.engine.randomize_case);
        for (text, key) in [
            ("[limits]\nclient_prefix_v4 = 33", "limits.client_prefix_v4"),
            ("[limits]\nclient_prefix_v6 = 129", "limits.client_prefix_v6"),
            ("[limits]\nclient_max_pending = 5000", "limits.client_max_pending"),
            ("[limits]\nclient_miss_burst = 0", "limits.client_miss_burst"),
            ("[limits]\nover_limit = \"tarpit\"", "limits.over_limit"),
            ("[limits]\nclients = 0", "limits.clients"),
            ("[limits]\nxdp_client_qps = 10\nxdp_client_burst = 0", "limits.xdp_client_burst"),
            ("[limits]\nxdp_clients = 0", "limits.xdp_clients"),
            ("[upstream]\ntry_timeout_min_ms = 900", "upstream.try_timeout_min_ms"),
            ("[upstream]\ntry_timeout_min_ms = 0", "upstream.try_timeout_min_ms"),
        ] {
            assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
        }
    }

    #[test]
    fn xdp_workers_are_real_time_unless_busy_polling() {
        let rt = |text: &str| settle_text(text).unwrap().realtime_priority;
        assert_eq!(rt(""), DEFAULT_REALTIME_PRIORITY);
        assert_eq!(rt("[xdp]\nbusy_poll = true"), 0);
        assert_eq!(rt("[xdp]\nrealtime_priority = 0"), 0);
        assert_eq!(rt("[xdp]\nrealtime_priority = 50"), 50);
        assert_eq!(rt("[xdp]\nrealtime_priority = 0\nbusy_poll = true"), 0);
        let o = Overrides { realtime_priority: Some(0), ..Overrides::default() };
        assert_eq!(
            settle(parse("[xdp]\nrealtime_priority = 20").unwrap(), &o, Some("nameserver 10.0.0.53\n"), 4).unwrap().realtime_priority,
            0
        );
    }

    #[test]
    fn defaults_serve_on_loopback_with_resolv_conf_backends() {
        let s =
            settle(FileConfig::default(), &Overrides::default(), Some("# x\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\n"), 2).unwrap();
        assert_eq!(s.listen, vec!["127.0.0.1:5353".parse().unwrap()]);
        assert_eq!(s.workers, 2);
        let b: Vec<SocketAddr> = s.engine.backends.iter().map(|b| b.addr).collect();
        assert_eq!(b, vec!["192.0.2.53:53".parse().unwrap(), "[fe80::1]:53".parse().unwrap()]);
        assert_eq!(s.backends_from, "/etc/resolv.conf");
        assert!(s.engine.acl.allows("127.0.0.1".parse().unwrap()));
        assert!(!s.engine.acl.allows("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn resolv_conf_skips_kdns_itself() {
        let ours = ["0.0.0.0:53".parse().unwrap()];
        assert!(resolv_conf_backends("nameserver 127.0.0.1\n", &ours).is_empty());
        let ours = ["127.0.0.1:5353".parse().unwrap()];
        assert_eq!(resolv_conf_backends("nameserver 127.0.0.1\n", &ours).len(), 1);
        let err = settle(
            FileConfig::default(),
            &Overrides { listen: vec!["127.0.0.1:53".into()], ..Default::default() },
            Some("nameserver 127.0.0.1"),
            1,
        )
        .unwrap_err();
        assert_eq!(err.key, "upstream.backends");
    }

    #[test]
    fn a_full_file() {
        let s = settle_text(
            r#"
            [server]
            listen = ["10.53.0.1:53", "[fd00::53]"]
            workers = 2
            allow = ["10.53.0.0/16"]
            [cache]
            entries = 1000
            min_ttl = 5
            [upstream]
            backends = ["10.53.1.1", { address = "10.53.1.2:5300", weight = 3 }]
            selection = "least-outstanding"
            try_timeout_ms = 700
            "#,
        )
        .unwrap();
        assert_eq!(s.listen[1], "[fd00::53]:53".parse().unwrap());
        assert_eq!(s.workers, 2);
        assert_eq!(s.engine.backends[1].weight, 3);
        assert_eq!(s.engine.backends[1].addr, "10.53.1.2:5300".parse().unwrap());
        assert_eq!(s.engine.try_timeout, Duration::from_millis(700));
        assert_eq!(s.engine.cache.max_entries, 1000);
        assert_eq!(s.engine.cache.min_ttl, 5);
        assert_eq!(s.engine.selection, Selection::LeastOutstanding);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[server]\nlisten = [\"nope\"]", "server.listen[0]"),
            ("[server]\nworkers = \"many\"", "server.workers"),
            ("[server]\nallow = [\"10.0.0.0/40\"]", "server.allow[0]"),
            ("[cache]\nmin_ttl = 10\nmax_ttl = 5", "cache.min_ttl"),
            ("[upstream]\nbackends = [\"x.y\"]", "upstream.backends[0]"),
            ("[upstream]\nselection = \"random\"", "upstream.selection"),
            ("[upstream]\ntry_timeout_ms = 0", "upstream.try_timeout_ms"),
            ("[upstream]\nbackends = [{ address = \"10.0.0.1\", weight = 0 }]", "upstream.backends[0]"),
            ("[server]\nlog_level = \"loud\"", "server.log_level"),
            ("[xdp]\nrealtime_priority = 100", "xdp.realtime_priority"),
            ("[xdp]\nrealtime_priority = 5\nbusy_poll = true", "xdp.realtime_priority"),
            ("[xdp]\nring_size = 1000", "xdp.ring_size"),
            ("[tcp]\nmax_connections = 0", "tcp.max_connections"),
            ("[upstream]\nsource_ports = 0", "upstream.source_ports"),
            ("[upstream]\nsource_ports = 5000", "upstream.source_ports"),
            ("[upstream]\nsource_port_rotate_ms = 100000000", "upstream.source_port_rotate_ms"),
            ("[tcp]\nmax_connections_per_client = 0", "tcp.max_connections_per_client"),
        ];
        for (text, key) in cases {
            assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
        }
        // Unknown keys and wrong types are caught by the parser, with the key in the message.
        let e = settle_text("[server]\nlisten_on = []").unwrap_err();
        assert!(e.msg.contains("listen_on"), "{e}");
        let e = settle_text("[cache]\nentries = \"lots\"").unwrap_err();
        assert!(e.msg.contains("entries"), "{e}");
    }

    #[test]
    fn overrides_win() {
        let o = Overrides {
            listen: vec!["127.0.0.2:53".into()],
            backends: vec!["127.0.0.1:5301@2".into(), "[::1]:5302".into()],
            workers: Some("3".into()),
            cache_entries: Some(77),
            ..Default::default()
        };
        let s = settle(FileConfig::default(), &o, None, 8).unwrap();
        assert_eq!(s.workers, 3);
        assert_eq!(s.engine.cache.max_entries, 77);
        assert_eq!(s.engine.backends[0].weight, 2);
        assert_eq!(s.engine.backends[1].addr, "[::1]:5302".parse().unwrap());
        assert_eq!(s.backends_from, "--backend");
        let bad = Overrides { backends: vec!["x@y".into()], ..Default::default() };
        assert_eq!(settle(FileConfig::default(), &bad, None, 1).unwrap_err().key, "--backend[0]");
    }

    #[test]
    fn records_section() {
        let s = settle_text("").unwrap();
        assert!(s.records.domains.is_empty());
        assert_eq!(s.records.default_ttl, 10);
        assert_eq!(s.records.file, None);
        assert_eq!(s.records.state_file, Some(PathBuf::from(DEFAULT_STATE_FILE)));
        assert_eq!((s.records.control_tcp, s.records.control_token.as_deref()), (None, None));

        let s = settle_text("[records]\ndomains = [\"KDNS.\", \"svc.cluster.local\"]\ndefault_ttl = 30\nfile = \"/etc/kdns/records.toml\"\nstate_file = \"\"\n").unwrap();
        assert_eq!(s.records.domains, vec!["kdns", "svc.cluster.local"]);
        assert_eq!(s.records.default_ttl, 30);
        assert_eq!(s.records.file, Some(PathBuf::from("/etc/kdns/records.toml")));
        assert_eq!(s.records.state_file, None, "an empty state_file keeps nothing");

        let o = Overrides {
            records_file: Some("/tmp/r.toml".into()),
            domains: vec!["kdns".into()],
            state_file: Some("/tmp/s.json".into()),
            ..Default::default()
        };
        let s = settle(parse("[records]\ndomains = [\"other\"]").unwrap(), &o, Some("nameserver 10.0.0.53"), 1).unwrap();
        assert_eq!(s.records.domains, vec!["kdns"], "--domain replaces records.domains");
        assert_eq!(s.records.file, Some(PathBuf::from("/tmp/r.toml")));
        assert_eq!(s.records.state_file, Some(PathBuf::from("/tmp/s.json")));
        let bad = Overrides { domains: vec!["ok".into(), "a..b".into()], ..Default::default() };
        assert_eq!(settle(FileConfig::default(), &bad, Some("nameserver 10.0.0.53"), 1).unwrap_err().key, "--domain[1]");

        for (text, key) in [
            ("[records]\ndomains = [\"a..b\"]", "records.domains[0]"),
            ("[records]\ndefault_ttl = 0", "records.default_ttl"),
            ("[records]\ncontrol_tcp = \"localhost\"", "records.control_tcp"),
            ("[records]\ncontrol_tcp = \"127.0.0.1:5380\"", "records.control_token_file"),
            ("[records]\ncontrol_tcp = \"127.0.0.1:5380\"\ncontrol_token_file = \"/nonexistent/token\"", "records.control_token_file"),
        ] {
            assert_eq!(settle_text(text).unwrap_err().key, key, "{text}");
        }
        let e = settle_text("[records]\nzones = []").unwrap_err();
        assert!(e.msg.contains("zones"), "{e}");

        let dir = std::env::temp_dir().join(format!("kdns-config-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tok = dir.join("token");
        std::fs::write(&tok, "  s3cret-token\n").unwrap();
        let s = settle_text(&format!("[records]\ncontrol_tcp = \"127.0.0.1:5380\"\ncontrol_token_file = \"{}\"", tok.display())).unwrap();
        assert_eq!(s.records.control_tcp, Some("127.0.0.1:5380".parse().unwrap()));
        assert_eq!(s.records.control_token.as_deref(), Some("s3cret-token"));
        assert!(!format!("{:?}", s.records).contains("s3cret"), "the token is not printed");
        std::fs::write(&tok, "\n").unwrap();
        let e =
            settle_text(&format!("[records]\ncontrol_tcp = \"127.0.0.1:5380\"\ncontrol_token_file = \"{}\"", tok.display())).unwrap_err();
        assert_eq!(e.key, "records.control_token_file");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
