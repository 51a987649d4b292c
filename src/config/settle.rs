//! From the file (with the command line's values in place) to the
//! [`Settings`] the daemon runs with: the checks the table cannot make
//! (keys that depend on others, addresses, files to read) and the one
//! conversion of every section into the values its users take.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kdns_core::cache::CacheConfig;
use kdns_core::engine::{Acl, ClientLimits, EngineConfig, IpNet, OverLimit};
use kdns_core::upstream::{BackendSpec, HealthConfig, Selection};

use super::define::{pick, Origins};
use super::table::{default_max_pending, DEFAULT_DOCKER_SOCKET, DEFAULT_REALTIME_PRIORITY, IO_MODES, SELECTIONS, STARTING};
use super::{
    parse_addr, resolv_conf_backends, BackendEntry, CacheSection, ConfigError, DockerSection, DockerSettings, FileConfig, IoMode,
    LimitsSection, RecordsSection, RecordsSettings, Secret, Settings, UpstreamSection, Workers, XdpClientRate, XdpSection,
};
use crate::upstream_sockets::PortsConfig;

/// Checks everything and builds the settings. `file` holds the command
/// line's values already (`names` says which); `resolv_conf` is the text
/// of /etc/resolv.conf (used when no backend is configured); `cores` the
/// number of usable cores.
pub fn settle(file: FileConfig, names: &Origins, resolv_conf: Option<&str>, cores: usize) -> Result<Settings, ConfigError> {
    file.check(names)?;
    let s = &file.server;
    let listen = addresses(&s.listen, 53, names.key("server.listen"))?;
    if listen.is_empty() {
        return Err(ConfigError::new(names.key("server.listen"), "at least one listen address is needed"));
    }
    let workers = match &s.workers {
        Workers::Count(n) => *n,
        Workers::Word(w) if w == "auto" => cores.max(1),
        Workers::Word(w) => {
            w.parse().map_err(|_| ConfigError::new(names.key("server.workers"), format!("'{w}' is not a number or 'auto'")))?
        }
    };
    if workers == 0 || workers > 1024 {
        return Err(ConfigError::new(names.key("server.workers"), format!("{workers} workers: must be 1..=1024")));
    }
    let mut nets = Vec::new();
    for (i, n) in s.allow.iter().enumerate() {
        nets.push(n.parse::<IpNet>().map_err(|e| ConfigError::new(format!("{}[{i}]", names.key("server.allow")), e.to_string()))?);
    }
    let (backends, backends_from) = backends(&file.upstream, names, &listen, resolv_conf)?;
    let engine = engine(&file, Acl::new(nets), backends)?;
    let u = &file.upstream;
    let ports = PortsConfig {
        slots: u.source_ports,
        rotate_after: u.source_port_rotate_after,
        rotate_every: Duration::from_millis(u.source_port_rotate_ms),
        query_deadline: Duration::from_millis(u.query_deadline_ms),
    };
    let metrics = match s.metrics.as_str() {
        "" => None,
        m => Some(
            parse_addr(m, 9153).ok_or_else(|| ConfigError::new(names.key("server.metrics"), format!("'{m}' is not an address[:port]")))?,
        ),
    };
    let io = pick(&IO_MODES, &s.io).unwrap_or(IoMode::Auto);
    let realtime_priority = realtime_priority(&file.xdp, names)?;
    check_xdp(&file.xdp)?;
    let records = settle_records(&file.records, names)?;
    let docker = settle_docker(&file.docker, names, &records, &listen)?;
    let cluster = crate::cluster::settings::settle(&file.cluster)?;
    let l = &file.limits;
    Ok(Settings {
        xdp_client_rate: XdpClientRate { qps: l.xdp_client_qps, burst: l.xdp_client_burst, entries: l.xdp_clients },
        records,
        docker,
        cluster,
        listen,
        udp_receive_buffer: s.udp_receive_buffer,
        workers,
        pin_workers: s.pin_workers,
        realtime_priority,
        engine,
        backends_from,
        ports,
        control_socket: PathBuf::from(&s.control_socket),
        handover_socket: PathBuf::from(&s.handover_socket),
        exit_after_handover: s.exit_after_handover,
        metrics,
        log_level: s.log_level.clone(),
        tcp: file.tcp.clone(),
        io,
        xdp: file.xdp.clone(),
        cache_dump: (!file.cache.dump_file.is_empty()).then(|| PathBuf::from(&file.cache.dump_file)),
    })
}

/// `addr[:port]` strings, each error naming `key[i]`.
fn addresses(list: &[String], default_port: u16, key: &str) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut out = Vec::new();
    for (i, l) in list.iter().enumerate() {
        out.push(
            parse_addr(l, default_port)
                .ok_or_else(|| ConfigError::new(format!("{key}[{i}]"), format!("'{l}' is not an address[:port]")))?,
        );
    }
    Ok(out)
}

/// The backends, and where they came from (for the log): the
/// configuration, `--backend`, or /etc/resolv.conf when neither names any.
fn backends(
    u: &UpstreamSection,
    names: &Origins,
    listen: &[SocketAddr],
    resolv_conf: Option<&str>,
) -> Result<(Vec<BackendSpec>, String), ConfigError> {
    if u.backends.is_empty() {
        let found = resolv_conf.map(|t| resolv_conf_backends(t, listen)).unwrap_or_default();
        if found.is_empty() {
            return Err(ConfigError::new(
                "upstream.backends",
                "no backends configured and none usable in /etc/resolv.conf; set upstream.backends or pass --backend",
            ));
        }
        return Ok((found.into_iter().map(BackendSpec::new).collect(), "/etc/resolv.conf".into()));
    }
    let key = names.key("upstream.backends");
    let mut out = Vec::new();
    for (i, e) in u.backends.iter().enumerate() {
        let key = format!("{key}[{i}]");
        let (addr, weight) = match e {
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
        out.push(BackendSpec::new(a).with_weight(weight));
    }
    let from = if names.given_by_flag("upstream.backends") { "--backend" } else { "the configuration" };
    Ok((out, from.into()))
}

/// `[cache]`, `[upstream]` and `[limits]` as the engine takes them.
fn engine(file: &FileConfig, acl: Acl, backends: Vec<BackendSpec>) -> Result<EngineConfig, ConfigError> {
    let u = &file.upstream;
    if u.try_timeout_min_ms == 0 || u.try_timeout_min_ms > u.try_timeout_ms {
        return Err(ConfigError::new(
            "upstream.try_timeout_min_ms",
            format!("{}: must be 1..=upstream.try_timeout_ms ({})", u.try_timeout_min_ms, u.try_timeout_ms),
        ));
    }
    if u.query_deadline_ms < u.try_timeout_ms {
        return Err(ConfigError::new("upstream.query_deadline_ms", "must be at least upstream.try_timeout_ms"));
    }
    if u.probe_max_ms < u.probe_initial_ms {
        return Err(ConfigError::new(
            "upstream.probe_max_ms",
            format!("{}: must be at least upstream.probe_initial_ms ({})", u.probe_max_ms, u.probe_initial_ms),
        ));
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
    let engine = EngineConfig {
        cache: cache(&file.cache)?,
        backends,
        health,
        selection: pick(&SELECTIONS, &u.selection).unwrap_or(Selection::RoundRobin),
        acl,
        udp_size: file.server.udp_size,
        try_timeout: Duration::from_millis(u.try_timeout_ms),
        try_timeout_min: Duration::from_millis(u.try_timeout_min_ms),
        max_tries: u.max_tries,
        query_deadline: Duration::from_millis(u.query_deadline_ms),
        pending_capacity: u.max_in_flight,
        probe_name: u.probe_name.clone(),
        limits: limits(&file.limits, u.max_in_flight)?,
        coalesce: u.coalesce,
        source_ports: u.source_ports,
        randomize_case: u.randomize_case,
        seed: 0,
        records: None,
        warm: None,
        // Set per AF_XDP worker when its program has the answer map.
        kernel_tier: None,
    };
    // Let the engine check what only it knows (probe name, pool limits).
    kdns_core::engine::Engine::new(EngineConfig { cache: CacheConfig::for_entries(1), ..engine.clone() })
        .map_err(|e| ConfigError::new("upstream", e.to_string()))?;
    Ok(engine)
}

fn cache(c: &CacheSection) -> Result<CacheConfig, ConfigError> {
    if c.min_ttl > c.max_ttl {
        return Err(ConfigError::new("cache.min_ttl", format!("{} is above cache.max_ttl ({})", c.min_ttl, c.max_ttl)));
    }
    Ok(CacheConfig {
        min_ttl: c.min_ttl,
        max_ttl: c.max_ttl,
        negative_max_ttl: c.negative_max_ttl,
        servfail_ttl: c.servfail_ttl,
        stale_window: Duration::from_secs(c.stale_window),
        prefetch_percent: c.prefetch_percent,
        ..CacheConfig::for_entries(c.entries)
    })
}

fn limits(l: &LimitsSection, max_in_flight: usize) -> Result<ClientLimits, ConfigError> {
    let max_pending = l.client_max_pending.unwrap_or_else(|| default_max_pending(max_in_flight));
    if max_pending as usize > max_in_flight {
        return Err(ConfigError::new(
            "limits.client_max_pending",
            format!("{max_pending}: must be at most upstream.max_in_flight ({max_in_flight}); 0 turns the share off"),
        ));
    }
    if l.client_miss_rate > 0 && l.client_miss_burst == 0 {
        return Err(ConfigError::new("limits.client_miss_burst", "must be at least 1 while client_miss_rate is on"));
    }
    if l.xdp_client_qps > 0 && l.xdp_client_burst == 0 {
        return Err(ConfigError::new("limits.xdp_client_burst", "must be at least 1 while xdp_client_qps is on"));
    }
    Ok(ClientLimits {
        prefix_v4: l.client_prefix_v4,
        prefix_v6: l.client_prefix_v6,
        max_pending,
        miss_rate: l.client_miss_rate,
        miss_burst: l.client_miss_burst,
        over_limit: OverLimit::ALL.into_iter().find(|o| o.name() == l.over_limit).unwrap_or(OverLimit::Servfail),
        table_size: l.clients,
    })
}

/// The AF_XDP workers' priority: real time unless busy polling.
fn realtime_priority(x: &XdpSection, names: &Origins) -> Result<u32, ConfigError> {
    let key = names.key("xdp.realtime_priority");
    match x.realtime_priority {
        Some(p) if p > 99 => Err(ConfigError::new(key, format!("{p}: must be 0 (off) or 1..=99"))),
        Some(p) if p > 0 && x.busy_poll => Err(ConfigError::new(
            key,
            format!("{p}: cannot be combined with busy_poll = true (a real-time worker that never sleeps leaves the kernel's receive path on its core no time); set it to 0"),
        )),
        Some(p) => Ok(p),
        None if x.busy_poll => Ok(0),
        None => Ok(DEFAULT_REALTIME_PRIORITY),
    }
}

fn check_xdp(x: &XdpSection) -> Result<(), ConfigError> {
    if x.frame_size != 2048 && x.frame_size != 4096 {
        return Err(ConfigError::new("xdp.frame_size", format!("{}: must be 2048 or 4096", x.frame_size)));
    }
    if !x.ring_size.is_power_of_two() || !(64..=16_384).contains(&x.ring_size) {
        return Err(ConfigError::new("xdp.ring_size", format!("{}: must be a power of two in 64..=16384", x.ring_size)));
    }
    if x.frames < 2 * x.ring_size || x.frames > 1 << 20 {
        return Err(ConfigError::new(
            "xdp.frames",
            format!("{}: must be at least 2 x ring_size ({}) and at most 1048576", x.frames, 2 * x.ring_size),
        ));
    }
    if !x.pin_dir.is_empty() && !std::path::Path::new(&x.pin_dir).is_absolute() {
        return Err(ConfigError::new("xdp.pin_dir", format!("{:?}: must be an absolute path (on a bpffs) or \"\"", x.pin_dir)));
    }
    Ok(())
}

/// `[records]`; reads the control token file.
fn settle_records(r: &RecordsSection, names: &Origins) -> Result<RecordsSettings, ConfigError> {
    let key = names.key("records.domains");
    let mut domains = Vec::new();
    for (i, d) in r.domains.iter().enumerate() {
        let d = crate::records::defs::domain_name(d).map_err(|e| ConfigError::new(format!("{key}[{i}]"), e))?;
        if !domains.contains(&d) {
            domains.push(d);
        }
    }
    let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    let control_tcp = match r.control_tcp.as_str() {
        "" => None,
        a => Some(
            a.parse::<SocketAddr>()
                .map_err(|_| ConfigError::new("records.control_tcp", format!("'{a}' is not an address:port (e.g. \"127.0.0.1:5380\")")))?,
        ),
    };
    let control_token = match (control_tcp, r.control_token_file.as_str()) {
        (None, _) => None,
        (Some(_), "") => {
            return Err(ConfigError::new(
                "records.control_token_file",
                "required with records.control_tcp: the TCP control API only serves requests with its bearer token",
            ))
        }
        (Some(_), p) => Some(read_token(p)?),
    };
    Ok(RecordsSettings {
        domains,
        default_ttl: r.default_ttl,
        file: path(&r.file),
        state_file: path(&r.state_file),
        control_tcp,
        control_token,
    })
}

fn read_token(p: &str) -> Result<Secret, ConfigError> {
    let key = "records.control_token_file";
    let t = std::fs::read_to_string(p).map_err(|e| ConfigError::new(key, format!("{p}: cannot read: {e}")))?;
    let t = t.trim().to_string();
    if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(key, format!("{p}: the token must be one word (no spaces), and not empty")));
    }
    Ok(Secret(t))
}

/// `[docker]`; `--docker-socket` turns the provider on as `--docker` does.
fn settle_docker(
    d: &DockerSection,
    names: &Origins,
    records: &RecordsSettings,
    listen: &[SocketAddr],
) -> Result<Option<DockerSettings>, ConfigError> {
    let socket = d.socket.strip_prefix("unix://").unwrap_or(&d.socket);
    if !socket.starts_with('/') {
        return Err(ConfigError::new(
            names.key("docker.socket"),
            format!("'{socket}': expected the absolute path of the Docker API socket (e.g. {DEFAULT_DOCKER_SOCKET})"),
        ));
    }
    for (i, n) in d.networks.iter().enumerate() {
        if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(format!("docker.networks[{i}]"), format!("{n:?} is not a network name")));
        }
    }
    if !(d.enabled || names.given_by_flag("docker.socket")) {
        return Ok(None);
    }
    if records.domains.is_empty() {
        return Err(ConfigError::new(
            names.key("docker.enabled"),
            "the Docker provider needs a local domain to answer names under (records.domains or --domain)",
        ));
    }
    Ok(Some(DockerSettings {
        socket: PathBuf::from(socket),
        networks: d.networks.clone(),
        serve_starting: pick(&STARTING, &d.starting).unwrap_or(true),
        listen: listen.iter().map(|a| a.ip()).collect(),
    }))
}

impl Settings {
    /// The engine settings of one worker, with its own random seed.
    pub fn engine_for_worker(&self, seed: u64) -> EngineConfig {
        EngineConfig { seed, ..self.engine.clone() }
    }

    /// What an AF_XDP worker takes: the `[xdp]` ring and frame sizes and
    /// the settled scheduling priority.
    #[cfg(feature = "xdp")]
    pub fn xdp_worker(&self) -> crate::xdp::worker::XdpSettings {
        let x = &self.xdp;
        crate::xdp::worker::XdpSettings {
            frame_size: x.frame_size,
            frames: x.frames,
            ring_size: x.ring_size,
            busy_poll: x.busy_poll,
            realtime_priority: self.realtime_priority,
            zero_copy: x.zero_copy,
            answer_promote_hits: x.answer_promote_hits as u8,
        }
    }
}
