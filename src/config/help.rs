//! The prose of `--help`. The configuration file it shows is rendered
//! from the settings table (`cli.rs`); defaults the prose mentions are
//! written as `{listen}` and `{realtime_priority}` and filled in from the
//! table's constants.

/// `--help`'s description.
pub const LONG_ABOUT: &str = "\
kdns answers the DNS queries of the containers on a host from per-core
caches and sends cache misses round-robin to a pool of recursive resolvers
(Unbound), tracking their health from the traffic itself: a backend that
stops answering costs one retry on another backend, is marked down after a
few timeouts, probed with backoff, and taken back when it answers again.

Each worker thread is pinned to a core and owns its own cache, its own
SO_REUSEPORT UDP sockets (batched with recvmmsg/sendmmsg) and its own
sockets to the backends: a pool of source ports picked by the kernel at
random, one chosen at random per query and replaced now and then, so a
forwarded query is not guarded by its 16-bit ID alone; an answer that
arrives on another port than its query left from is dropped and counted.
Nothing is shared between workers. A TCP server
on the same addresses answers TCP queries (RFC 7766: pipelining, idle
timeout, a connection limit per client address and in all; when the
table is full the longest-idle connection is closed for the new one) and
clients whose UDP answer was truncated.

With no arguments kdns serves at once: UDP and TCP on {listen},
backends taken from /etc/resolv.conf (kdns's own addresses skipped),
clients allowed from loopback only. Options on the command line override
the configuration file; every setting has a default.";

/// `--help`'s sections after the configuration file.
pub const AFTER_CONFIG: &str = "\
AF_XDP:
    With io = \"xdp\" or \"auto\", kdns attaches its XDP program (through a
    bpf_link pinned under xdp.pin_dir, {pin_dir}) to the
    interfaces holding the listen addresses and opens one AF_XDP socket per
    RX queue, each served by a worker pinned to a core. Only UDP queries to
    a listen address and port are redirected; ARP, ND, ICMP, TCP and
    everything else stay with the kernel, and one socket worker and the TCP
    server keep serving what the program passes. Loopback and wildcard
    listen addresses have no AF_XDP path: \"auto\" then uses sockets and
    logs why. Pinned, the program stays attached when kdns exits or dies
    and passes every query to the kernel's sockets (a socket-activated
    listener, or nobody) until the next kdns adopts it in one step (same
    link, new program); `kdns --uninstall-xdp` detaches and unpins it.
    With xdp.pin_dir = \"\" the program goes away with kdns, even on
    kill -9. A stale XDP program left on the interface by a crash or
    another tool is replaced, with a log line. The AF_XDP workers run in
    SCHED_FIFO (xdp.realtime_priority, {realtime_priority}): the kernel's receive path on
    the same core then runs only while the worker is idle, so a flood is
    shed before it costs the core anything. This needs CAP_SYS_NICE (kdns
    logs a warning and runs at normal priority without it); set 0 if other
    real-time work shares those cores.
    With xdp.answer_tier = true (off by default) the program also answers
    the hottest cached names itself (XDP_TX): the workers copy entries hit
    xdp.answer_promote_hits times into its map and take them out when the
    cache drops them, before the next batch; the reply is the worker's,
    TTLs counted down by the kernel clock, never past the entry's expiry.
    Local answers that are the same for every client (one instance, static
    data, NXDOMAIN) are copied the same way and taken out at every records
    change before the change is acknowledged; rotated, random and sticky
    answers among several instances stay with the workers.
    XDP_TX frames reach a veth's peer only when the peer runs an XDP
    program; a worker whose driver failed every XDP_TX send for a second
    turns the tier off for its queue and logs it.

ONE CLIENT CANNOT TAKE DNS DOWN:
    A try waits for its backend's own retransmission timeout (smoothed RTT
    plus four deviations, within try_timeout_min_ms and try_timeout_ms).
    When it runs out and that backend answered anything since the try
    left, the name is slow, not the backend: the query keeps waiting there
    (to query_deadline_ms) and nothing is held against the backend. A try
    met by silence is retried on another backend, and an answer from any
    backend asked is taken. down_after_timeouts silent timeouts in a row
    make a backend suspect: a probe is sent at once, and only its timing
    out takes the backend down. Each client (an address, or the /N of
    [limits]) may hold client_max_pending of a worker's max_in_flight and
    send client_miss_rate misses per second upstream; over that it gets an
    immediate SERVFAIL (or REFUSED, or nothing), counted in kdns-ctl stats
    and /metrics; hits and local answers are never limited. Identical
    questions in flight go upstream once and every client waiting on one
    gets its answer. Forwarded questions carry a random ID and 0x20 case;
    an answer that does not repeat both is dropped and counted. With
    AF_XDP, xdp_client_qps bounds every query of a client (hits too) in
    the XDP program itself, so a flood over it costs no copy.

LOCAL RECORDS:
    Names under the local domains are answered by kdns itself: web.kdns
    (the healthy instances of service web), web-2.kdns (instance 2),
    _http._tcp.web.kdns (SRV), static records, PTR of every instance
    address; a bare \"web\" is web.<first domain>. They come from the
    records file (--records-file; polled every second, a bad version is
    logged and the previous one kept), e.g.:
        domains = [\"kdns\"]
        [[service]]
        name = \"web\"
        mode = \"all\"                 # \"all\", \"random-one\" or \"sticky\"
        ports = [{ name = \"http\", proto = \"tcp\", port = 8080 }]
        check = { kind = \"tcp\", interval_ms = 1000, rise = 2, fall = 2 }   # port: 8080
        instances = [{ id = \"c1\", addrs = [\"10.0.0.1\", \"fd00::1\"] }]
        [[record]]
        name = \"db.kdns\"
        type = \"A\"                   # A AAAA CNAME TXT SRV PTR
        data = \"10.5.0.1\"
    and from changes made through the control API (kdns-ctl), kept in the
    state file; a service defined both ways is the API's.

DOCKER:
    With docker.enabled (--docker), kdns follows the Docker engine's API:
    every running container attached to a served network is an instance
    of a service, named by its label kdns.service, else its compose
    service, else its container name; web.kdns answers the running
    replicas, web-2.kdns the compose replica 2, and the container's name
    and its network aliases answer too (a bare name through the search
    domain). A container whose healthcheck fails leaves the answers.
    Labels: kdns.mode (all, random-one, sticky), kdns.ttl (seconds),
    kdns.ports (\"http:8080/tcp,dns:53/udp\": SRV records), kdns.enable=false
    (left out). A name that is not a DNS label is skipped with a warning
    naming the container. The names merge with the records file and the
    API's changes (which win a name both claim) and show in
    `kdns-ctl records list` with source docker. If the engine cannot be
    reached, kdns says why once, keeps serving what it learnt, retries
    (1 s doubling to 30 s) and resyncs everything when it is back.
    Containers reach kdns directly when their /etc/resolv.conf names it
    (see the README: on a user-defined network Docker's own resolver,
    127.0.0.11, would otherwise sit in front).

RESTARTS AND UPGRADES:
    Nothing is lost while kdns restarts when its listening sockets outlive
    the process: systemd's socket activation (deploy/kdns.socket) or
    --supervise hold them, queries wait in their buffers
    (server.udp_receive_buffer), and the pinned XDP program passes the
    AF_XDP share to them until the next kdns adopts it. The cache is
    dumped at SIGTERM (cache.dump_file) and loaded at start.
    kdns --takeover, started next to a running kdns, replaces it
    make-before-break: over server.handover_socket it receives the
    listening sockets, the cache and the AF_XDP queues, and the old one
    finishes its queries in flight and exits.
    kdns --supervise runs the server as the child of a small process that
    holds the sockets (for containers and pods, where nothing else does):
    a server that dies is started again at once on them (when servers
    keep dying within 30 s of their start, the next waits 0.1 s, then
    doubling to 5 s);
    SIGUSR2 or SIGHUP starts a new server with --takeover (the
    configuration and the program at the same path are read again);
    SIGTERM and SIGINT are passed to the server. With --takeover too, the
    supervisor copies the sockets of the kdns already running (another
    pod's) and its first server takes over from it; a server that exits 0
    by itself has handed over to such a kdns, and the supervisor then only
    waits for SIGTERM.

EXIT STATUS:
    0  stopped by SIGINT or SIGTERM; --uninstall-xdp removed what it found
       (or found nothing)
    1  could not start (a socket could not be opened, ...); --uninstall-xdp
       could not remove something
    2  bad command line or configuration (the message names the key)
    With --supervise: the last server's status (128 + N for signal N).

EXAMPLES:
    kdns
    kdns --listen 10.53.0.1:53 --backend 10.53.1.1 --backend 10.53.1.2 --allow 10.0.0.0/8
    kdns --config /etc/kdns/kdns.toml
    kdns --records-file /etc/kdns/records.toml --domain kdns
    kdns --supervise --config /etc/kdns/kdns.toml    (then kill -USR2 to upgrade)
    kdns --takeover --config /etc/kdns/kdns.toml
    kdns --uninstall-xdp --config /etc/kdns/kdns.toml
    kdns-ctl stats";
