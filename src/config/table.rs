//! Every setting of kdns, defined once: its section and key, type,
//! default, checked range or words, command-line flag and meaning. The
//! file's structs, the flags, `--help`'s configuration file and the
//! README's table all come from here (see `define.rs`).

use std::time::Duration;

use kdns_core::cache::CacheConfig;
use kdns_core::engine::{ClientLimits, EngineConfig, OverLimit};
use kdns_core::upstream::{HealthConfig, Selection};

use super::define::settings;
use super::{BackendEntry, IoMode, Workers};

/// Where kdns listens when nothing says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5353";
/// `server.udp_receive_buffer` unless configured: about 40,000 queries
/// (the kernel charges a ~100-byte query 800 to 1,500 bytes of buffer,
/// the most when the XDP program passed it), two seconds of 20,000
/// queries a second waiting out a restart. Measured: 8 MiB held only
/// 12,000 of the 20,000 queries of a one-second gap on AF_XDP.
pub const DEFAULT_UDP_RECEIVE_BUFFER: usize = 32 << 20;
/// Where the control socket goes when nothing says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/kdns/control.sock";
/// Where a running kdns waits for the one that takes over from it.
pub const DEFAULT_HANDOVER_SOCKET: &str = "/run/kdns/handover.sock";
/// Where runtime changes to the local records are kept when nothing says otherwise.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/kdns/records.json";
/// Where the cache is dumped at a clean stop and loaded at start, next to
/// the records state file, when nothing says otherwise.
pub const DEFAULT_CACHE_DUMP: &str = "/var/lib/kdns/cache.dump";
/// Where the Docker API socket is unless configured.
pub const DEFAULT_DOCKER_SOCKET: &str = "/var/run/docker.sock";
/// Where the XDP program's link and maps are pinned unless configured.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/kdns";
/// SCHED_FIFO priority of the AF_XDP workers unless configured (0 with
/// `busy_poll`). A real-time worker runs whenever it has frames and sleeps
/// when its rings are empty, so the kernel's receive path on the same core
/// runs only then and never copies in more than the worker answers:
/// overload is shed before the copy. (The UDP socket workers stay at normal
/// priority: measured, real time did not help them.)
pub const DEFAULT_REALTIME_PRIORITY: u32 = 10;
/// Where the records learnt from etcd are kept for a start while etcd is
/// down, when nothing says otherwise.
pub const DEFAULT_CLUSTER_SNAPSHOT: &str = "/var/lib/kdns/cluster.json";
/// The etcd key prefix unless configured (docs/cluster.md).
pub const DEFAULT_CLUSTER_PREFIX: &str = "/kdns/v1";

/// `server.log_level`.
pub const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
/// `server.io`.
pub const IO_MODES: [(&str, IoMode); 3] = [("xdp", IoMode::Xdp), ("udp", IoMode::Udp), ("auto", IoMode::Auto)];
/// `upstream.selection`.
pub const SELECTIONS: [(&str, Selection); 2] = [("round-robin", Selection::RoundRobin), ("least-outstanding", Selection::LeastOutstanding)];
/// `docker.starting`: whether such a container is served.
pub const STARTING: [(&str, bool); 2] = [("serve", true), ("hide", false)];

/// `limits.client_max_pending` when unset: a sixteenth of `max_in_flight`.
pub fn default_max_pending(max_in_flight: usize) -> u32 {
    u32::try_from((max_in_flight / 16).max(1)).unwrap_or(u32::MAX)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

settings! {
    [server] ServerSection "" {
        listen: Vec<String> = vec![DEFAULT_LISTEN.into()],
            flag(1, "listen", Some('l'), "ADDR[:PORT]", "Address to serve UDP and TCP on; repeat for several (replaces server.listen)")
            => "UDP and TCP listen addresses, port 53 unless given (`\"[::1]:53\"` for IPv6)";
        workers: Workers = Workers::default(),
            flag(3, "workers", Some('w'), "N|auto", "UDP worker threads: a number or \"auto\" (one per core; replaces server.workers)")
            => "socket worker threads: a number (1..=1024) or `\"auto\"`, one per core";
        pin_workers: bool = true
            => "pin each worker to its own core";
        allow: Vec<String> = vec!["127.0.0.0/8".into(), "::1/128".into()],
            flag(5, "allow", Some('a'), "NET", "Network allowed to query (others get REFUSED); repeat for several (replaces server.allow)")
            => "client networks allowed to query; others get REFUSED";
        udp_size: u16 = EngineConfig::default().udp_size, range(512, 65535)
            => "the EDNS UDP payload size kdns offers";
        udp_receive_buffer: usize = DEFAULT_UDP_RECEIVE_BUFFER, range(65_536, 1 << 30)
            => "receive buffer of each listening UDP socket, bytes: queries wait there while no kdns reads (a restart with sockets held by systemd); SO_RCVBUFFORCE as root, else capped by net.core.rmem_max (logged)";
        control_socket: String = DEFAULT_CONTROL_SOCKET.into(),
            flag(6, "control-socket", None, "PATH", "Control socket path (for kdns-ctl; replaces server.control_socket)")
            => "the control socket, for kdns-ctl (HTTP/JSON, see docs/control-api.md)";
        handover_socket: String = DEFAULT_HANDOVER_SOCKET.into(),
            flag(18, "handover-socket", None, "PATH", "Unix socket where this kdns hands over to one started with --takeover (replaces server.handover_socket)")
            => "where a running kdns waits for the one that replaces it (`kdns --takeover`): listening sockets, cache and AF_XDP queues are handed over there";
        exit_after_handover: bool = true
            => "exit once a kdns started with `--takeover` has taken over (`false`: wait for SIGTERM, serving nothing, as in a Kubernetes pod, whose container would otherwise be restarted and take over back)";
        metrics: String = String::new(),
            flag(7, "metrics", None, "ADDR[:PORT]", "Serve Prometheus metrics on this address (replaces server.metrics)")
            => "Prometheus `/metrics` address, port 9153 unless given, e.g. `\"127.0.0.1:9153\"` (`\"\"`: off)";
        log_level: String = "info".into(), words(LOG_LEVELS),
            flag(8, "log-level", None, "LEVEL", "Log level: error, warn, info, debug, trace (RUST_LOG overrides; replaces server.log_level)")
            => "log level (RUST_LOG overrides)";
        io: String = "auto".into(), words(IO_MODES),
            flag(9, "io", None, "xdp|udp|auto", "How queries are read: \"xdp\" (AF_XDP sockets, one per NIC queue), \"udp\" (kernel sockets), or \"auto\" (AF_XDP where it can attach, sockets otherwise; replaces server.io)")
            => "how queries are read: AF_XDP sockets, kernel UDP sockets, or AF_XDP where it attaches and sockets otherwise";
    }

    [cache] CacheSection "per worker" {
        entries: usize = CacheConfig::default().max_entries, range(1, 268_435_456),
            flag(4, "cache-entries", None, "N", "Cache entries per worker (replaces cache.entries)")
            => "entries per worker; about 224 bytes each for an A answer";
        min_ttl: u32 = CacheConfig::default().min_ttl
            => "lowest TTL handed out, seconds (at most max_ttl)";
        max_ttl: u32 = CacheConfig::default().max_ttl
            => "highest TTL handed out, seconds";
        negative_max_ttl: u32 = CacheConfig::default().negative_max_ttl
            => "cap on the TTL of NXDOMAIN and NODATA answers (RFC 2308), seconds";
        servfail_ttl: u32 = CacheConfig::default().servfail_ttl, range(0, 30)
            => "how long SERVFAIL is cached, seconds";
        stale_window: u64 = CacheConfig::default().stale_window.as_secs()
            => "serve expired answers this long when no backend answers, seconds (0: never)";
        prefetch_percent: u32 = CacheConfig::default().prefetch_percent, range(0, 50)
            => "refresh popular entries in the last N percent of their TTL (0: never)";
        dump_file: String = DEFAULT_CACHE_DUMP.into(),
            flag(17, "cache-dump", None, "FILE", "Where the cache is written at a clean stop and read at start, a warm restart (\"\" for off; replaces cache.dump_file)")
            => "the cache is written here at a clean stop and loaded at start: a warm restart (`\"\"`: off)";
    }

    [upstream] UpstreamSection "" {
        backends: Vec<BackendEntry> = Vec::new(),
            example("[\"10.53.0.2\", { address = \"10.53.0.3:53\", weight = 2 }]"),
            flag(2, "backend", Some('b'), "ADDR[:PORT][@WEIGHT]", "Resolver to send misses to, port 53 by default; repeat for several (replaces upstream.backends)")
            => "the resolvers misses go to, `\"addr[:port]\"` or `{ address, weight }` (empty: the nameservers of /etc/resolv.conf, kdns's own addresses skipped)";
        selection: String = "round-robin".into(), words(SELECTIONS)
            => "how a backend is picked";
        try_timeout_ms: u64 = ms(EngineConfig::default().try_timeout), range(1, 60_000)
            => "the longest a try waits, and the wait before a backend's first answer; then each backend's own RTO";
        try_timeout_min_ms: u64 = ms(EngineConfig::default().try_timeout_min)
            => "the shortest try timeout (1..=try_timeout_ms)";
        max_tries: u8 = EngineConfig::default().max_tries, at_least(1)
            => "most backends asked per query; a silent try is retried on another";
        query_deadline_ms: u64 = ms(EngineConfig::default().query_deadline)
            => "give up (a stale answer or SERVFAIL) after this long (at least try_timeout_ms)";
        down_after_timeouts: u32 = HealthConfig::default().down_after_timeouts
            => "silent timeouts in a row that make a backend suspect; a probe then decides";
        failure_ratio: f32 = HealthConfig::default().down_failure_ratio, range(0.0, 1.0)
            => "share of silent timeouts over the last `window` outcomes that makes a backend suspect";
        window: u32 = HealthConfig::default().window
            => "outcomes in the failure window";
        up_after: u32 = HealthConfig::default().up_after_successes
            => "good probe answers that bring a backend back";
        probe_initial_ms: u64 = ms(HealthConfig::default().probe_initial), at_least(1)
            => "first probe delay";
        probe_max_ms: u64 = ms(HealthConfig::default().probe_max)
            => "longest probe delay (at least probe_initial_ms)";
        probe_name: String = EngineConfig::default().probe_name
            => "the name probed, with CH TXT; any answer counts";
        max_in_flight: usize = EngineConfig::default().pending_capacity, range(1, 32_768)
            => "queries in flight per worker";
        coalesce: bool = EngineConfig::default().coalesce
            => "identical questions in flight go upstream once";
        randomize_case: bool = EngineConfig::default().randomize_case
            => "0x20: randomise the letter case of forwarded questions and require it back";
        source_ports: u16 = 16, range(1, 1024)
            => "per worker: sockets on random ports backend queries leave from, one picked at random per query; an answer on another is dropped";
        source_port_rotate_after: u32 = 100
            => "a slot gets a new random port after this many queries (0: not by count)";
        source_port_rotate_ms: u64 = 10_000, range(0, 86_400_000)
            => "... or when its socket is this old (0: not by age); old sockets are read until query_deadline_ms has passed";
    }

    [limits] LimitsSection "fair shares per client, per worker (misses only)" {
        client_prefix_v4: u8 = ClientLimits::default().prefix_v4, range(0, 32)
            => "IPv4 clients within one /N are one client";
        client_prefix_v6: u8 = ClientLimits::default().prefix_v6, range(0, 128)
            => "IPv6 clients within one /N are one client";
        #[serde(skip_serializing_if = "Option::is_none")]
        client_max_pending: Option<u32> = None,
            shown(default_max_pending(EngineConfig::default().pending_capacity))
            => "queries one client may have waiting upstream, per worker (0: no share; unset: a sixteenth of upstream.max_in_flight)";
        client_miss_rate: u32 = ClientLimits::default().miss_rate
            => "misses one client may send upstream per second, per worker (0: no limit)";
        client_miss_burst: u32 = ClientLimits::default().miss_burst
            => "misses one client may send upstream in a burst (at least 1 while client_miss_rate is on)";
        over_limit: String = ClientLimits::default().over_limit.name().into(), words(OverLimit::ALL)
            => "what a client over its share gets, counted in stats and /metrics";
        clients: usize = ClientLimits::default().table_size, range(1, 1_048_576)
            => "clients tracked per worker";
        xdp_client_qps: u32 = 0, range(0, 100_000_000)
            => "queries (hits too) one client may send per second, enforced in the XDP program: over it they are dropped before any copy and counted in the queues' `dropped` (0: off)";
        xdp_client_burst: u32 = 200
            => "queries one client may send at once under xdp_client_qps (at least 1 while it is on)";
        xdp_clients: u32 = 65_536, range(1, 16_777_216)
            => "clients the XDP program tracks (LRU)";
    }

    [tcp] TcpSection "" {
        enabled: bool = true
            => "serve TCP on the listen addresses";
        idle_timeout_ms: u64 = 10_000
            => "close a connection idle this long (RFC 7766)";
        max_connections: usize = 1024, at_least(1)
            => "most open client connections; when the table is full, the longest-idle connection is closed for the new one";
        max_connections_per_client: usize = 64, at_least(1)
            => "most open connections from one client address; more are closed at once (max_connections or more: no cap of its own)";
    }

    [xdp] XdpSection "used when io is \"xdp\" or \"auto\"" {
        interfaces: Vec<String> = Vec::new(),
            flag(10, "interface", Some('i'), "IFNAME", "Interface to attach the AF_XDP path to; repeat for several (default: those holding a listen address; replaces xdp.interfaces)")
            => "interfaces to attach to (empty: those holding a listen address)";
        queues: Vec<u32> = Vec::new()
            => "RX queues to serve (empty: every RX queue of each interface)";
        busy_poll: bool = false
            => "spin instead of sleeping when idle (burns the core)";
        frame_size: u32 = 2048
            => "UMEM frame size: 2048 or 4096";
        frames: u32 = 4096
            => "UMEM frames per queue (at least 2 x ring_size, at most 1048576)";
        ring_size: u32 = 2048
            => "size of the RX, TX, fill and completion rings: a power of two in 64..=16384";
        zero_copy: bool = true
            => "try zero-copy first (copy mode otherwise)";
        realtime_priority: Option<u32> = None, shown(DEFAULT_REALTIME_PRIORITY),
            flag(14, "realtime-priority", None, "N", "SCHED_FIFO priority of the AF_XDP workers, 1-99; 0 for normal scheduling (replaces xdp.realtime_priority)")
            => "SCHED_FIFO priority of the AF_XDP workers, 1..=99; 0: normal scheduling (the default with busy_poll)";
        pin_dir: String = DEFAULT_PIN_DIR.into(),
            flag(17, "pin-dir", None, "DIR", "bpffs directory where the XDP program's link and maps are pinned, so the program outlives kdns and the next kdns adopts it (\"\" for no pinning; replaces xdp.pin_dir)")
            => "where the XDP link and maps are pinned (bpffs), one directory per interface: the program stays attached after kdns exits, passing queries to the kernel, and the next kdns adopts it (`\"\"`: no pinning, the program goes with kdns; `kdns --uninstall-xdp` removes it)";
        answer_tier: bool = false
            => "answer the hottest cached names and local answers in the XDP program itself (XDP_TX from a map the workers keep, cached TTLs counted down by the kernel clock; ARCHITECTURE.md, \"The in-kernel tier\"). Turn it on where XDP_TX frames reach the clients: a NIC with native XDP, or a veth whose peer runs NAPI (an XDP program of its own; a veth peer without one drops them)";
        answer_entries: u32 = 16_384, range(64, 1_048_576)
            => "entries of the in-kernel tier's map, shared out equally between the queues";
        answer_promote_hits: u32 = 4, range(1, 255)
            => "hits in a worker before a cache entry or a local answer is copied to the in-kernel tier";
    }

    [records] RecordsSection "local service discovery (docs/control-api.md)" {
        domains: Vec<String> = Vec::new(),
            flag(12, "domain", None, "DOMAIN", "Local domain answered by kdns itself; repeat for several (replaces records.domains)")
            => "local domains kdns answers itself, e.g. `[\"kdns\"]` (the records file may add more)";
        default_ttl: u32 = 10, range(1, crate::records::defs::MAX_TTL)
            => "TTL of local answers without their own";
        file: String = String::new(),
            flag(11, "records-file", None, "FILE", "Records file (TOML) of local services and records; reloaded when it changes (replaces records.file)")
            => "the records file (TOML) of services and static records, reloaded when it changes (`\"\"`: none)";
        state_file: String = DEFAULT_STATE_FILE.into(),
            flag(13, "state-file", None, "FILE", "Where changes made through the control API are kept (\"\" for nowhere; replaces records.state_file)")
            => "where changes made through the API are kept (`\"\"`: nowhere)";
        control_tcp: String = String::new()
            => "serve the control API on this TCP address too, e.g. `\"127.0.0.1:5380\"` (`\"\"`: no)";
        control_token_file: String = String::new()
            => "the file holding the TCP control API's bearer token (required with control_tcp)";
    }

    [docker] DockerSection "names learnt from the Docker engine" {
        enabled: bool = false,
            flag(15, "docker", None, "", "Follow the Docker engine: serve the running containers of the served networks by service, replica and container name (turns docker.enabled on)")
            => "follow the Docker engine: containers become services and names (needs a local domain)";
        socket: String = DEFAULT_DOCKER_SOCKET.into(),
            flag(16, "docker-socket", None, "PATH", "The Docker API socket (replaces docker.socket; turns the provider on)")
            => "the engine's API socket, a path or `unix://` and a path";
        networks: Vec<String> = Vec::new()
            => "served networks, by name or compose name (label com.docker.compose.network; empty: those whose subnet holds a listen address)";
        starting: String = "serve".into(), words(STARTING)
            => "a container whose healthcheck has not passed yet";
    }

    [cluster] ClusterSection "several hosts sharing records through etcd v3 (docs/cluster.md); off while etcd_endpoints is empty" {
        etcd_endpoints: Vec<String> = Vec::new()
            => "the etcd members, e.g. `[\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]`; `https://` for TLS (empty: no cluster)";
        host_id: String = String::new()
            => "this host's id in etcd (`\"\"`: the hostname); unique in the cluster";
        lease_ttl_s: u64 = 5, range(2, 3600)
            => "TTL of this host's lease, seconds: a host that stops keeping it alive leaves every host's answers this long after";
        prefix: String = DEFAULT_CLUSTER_PREFIX.into()
            => "the key prefix; every host of a cluster uses the same";
        snapshot_file: String = DEFAULT_CLUSTER_SNAPSHOT.into()
            => "the records learnt from etcd are kept here (atomic replace) and served at start until etcd answers (`\"\"`: nowhere)";
        ca_file: String = String::new()
            => "PEM CA certificate to verify the etcd members (with `https://` endpoints)";
        cert_file: String = String::new()
            => "PEM client certificate for etcd (with key_file)";
        key_file: String = String::new()
            => "PEM private key of cert_file";
        username: String = String::new()
            => "etcd user (with password_file; `\"\"`: no authentication)";
        password_file: String = String::new()
            => "the file holding the etcd user's password (never logged)";
        connect_timeout_ms: u64 = 2000, range(100, 60_000)
            => "how long a connection or a request to etcd may take";
    }
}
