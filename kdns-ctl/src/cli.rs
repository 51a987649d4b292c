//! The command line: clap definitions, help texts, and the parsers of the
//! values that have a syntax of their own (`--port`, `--check`, `--url`).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Args, Parser, Subcommand};
use kdns_api::records::{srv_label, srv_proto, ModeName, PortDef, RECORD_TYPES};
use kdns_api::view::ForcedHealth;

use crate::http::{parse_url, Url};

/// The daemon's default control socket (its `server.control_socket`
/// default), as a literal for the help texts. Change it here only.
macro_rules! default_socket {
    () => {
        "/run/kdns/control.sock"
    };
}

/// The daemon's default control socket.
pub const DEFAULT_SOCKET: &str = default_socket!();
/// Environment variable that overrides [`DEFAULT_SOCKET`].
pub const SOCKET_ENV: &str = "KDNS_CONTROL_SOCKET";
/// Environment variable with the token for `--url` (when no
/// `--token-file` is given).
pub const TOKEN_ENV: &str = "KDNS_CONTROL_TOKEN";

const LONG_ABOUT: &str = concat!(
    "\
Control client for the kdns DNS daemon.

kdns-ctl talks to a running kdns over its control API, a small HTTP/JSON API \
(documented in docs/control-api.md). It reads statistics (queries, cache, \
per-worker and per-backend counters, backend health and round-trip times), \
flushes the cache, and manages the local records kdns answers itself: \
services with their instances and health checks, and static records.

By default it connects to the control socket, a Unix socket: --socket PATH, \
else the KDNS_CONTROL_SOCKET environment variable, else ",
    default_socket!(),
    ". The socket is mode 0660: run kdns-ctl as root or as a member of the \
socket's group.

With --url http://HOST:PORT it uses the daemon's TCP control API instead, \
authenticating with a bearer token read from --token-file PATH, else taken \
from the KDNS_CONTROL_TOKEN environment variable.

With --json, every command prints the daemon's JSON answer, pretty-printed, \
instead of tables or a message; the fields are described in \
docs/control-api.md.

Changes (records, services, instances, health) take effect at once: the \
daemon bumps the serial of its records and hands the new records to every \
worker; kdns-ctl reports the serial and how long that took. kdns-ctl never \
edits the configuration file: what it adds is listed with SOURCE \"runtime\".

Exit status: 0 on success, 1 if kdns cannot be reached or reports an error \
(its message is printed after \"kdns-ctl: \"), 2 on a usage error."
);

const EXAMPLES: &str = "\
Examples:
  kdns-ctl stats
      Summary, per-worker and per-backend tables.
  kdns-ctl stats --json | jq .totals.hit_ratio
      One figure, for scripts.
  kdns-ctl backends
      Backend health: up on how many workers, in flight, RTT percentiles.
  kdns-ctl cache flush
      Empty the cache of every worker.
  kdns-ctl service add web --port http/tcp/80 --check tcp:80
  kdns-ctl instance add web web-a 10.0.0.11
  kdns-ctl instance add web web-b 10.0.0.12 fd00::12
      A service with two instances, health-checked over TCP.
  kdns-ctl records list
      Services, instances and their health, static records.
  kdns-ctl records add www.kdns A 10.0.0.5 --ttl 60
      A static record.
  kdns-ctl --socket /tmp/kdns.sock stats
  KDNS_CONTROL_SOCKET=/tmp/kdns.sock kdns-ctl backends
      Talk to a kdns with a non-default control socket.
  kdns-ctl --url http://127.0.0.1:5380 --token-file /etc/kdns/token records list
      Talk to a kdns over its TCP control API.
  kdns-ctl completions bash > /etc/bash_completion.d/kdns-ctl
      Shell completions.";

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "kdns-ctl", version, about = "Control client for the kdns DNS daemon", long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "PATH",
        conflicts_with = "url",
        help = concat!("Control socket of the daemon [default: $KDNS_CONTROL_SOCKET, else ", default_socket!(), "]")
    )]
    pub socket: Option<PathBuf>,

    /// Use the daemon's TCP control API at this URL instead of the socket
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL",
        value_parser = parse_url,
        long_help = "\
Use the daemon's TCP control API at this URL (http://HOST:PORT, HOST a name, \
an IPv4 address or an [IPv6] address; port 80 if left out) instead of the \
control socket. Requests carry the token of --token-file or \
$KDNS_CONTROL_TOKEN as \"Authorization: Bearer TOKEN\". Plain HTTP only: \
reach a remote kdns over a trusted network or a tunnel."
    )]
    pub url: Option<Url>,

    /// File holding the token for --url [default: $KDNS_CONTROL_TOKEN]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "PATH",
        requires = "url",
        long_help = "\
File holding the bearer token for --url (surrounding whitespace and the \
final newline are ignored). Without it, the token is the value of the \
KDNS_CONTROL_TOKEN environment variable. A file keeps the token out of the \
process list and the shell history; make it readable by its owner only."
    )]
    pub token_file: Option<PathBuf>,

    /// Print the daemon's JSON answer (pretty-printed) instead of tables
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show traffic, cache, per-worker and per-backend statistics
    #[command(
        long_about = "\
Show traffic, cache, per-worker and per-backend statistics.

Prints a summary (uptime, queries per second over the last 1 and 10 seconds, \
queries, cache hit ratio, answers by rcode, forwarding outcomes, drops by \
reason, source-port sockets to the backends and their rotations, TCP \
connections open and closed by the limits), a table with one row per worker, and a table with one row per \
backend: its state (up, down, or partial when only some workers see it up), \
queries in flight, counts, and round-trip-time percentiles merged over \
workers.

RTTs come from a snapshot each worker sends on request; a worker that does \
not answer within 500 ms shows SNAPSHOT \"timeout\" and its RTTs are left out.",
        after_help = "Examples:\n  kdns-ctl stats\n  kdns-ctl stats --json"
    )]
    Stats,

    /// Show the backends, their health and round-trip times
    #[command(
        long_about = "\
Show the backends (upstream resolvers), their health and round-trip times.

Each worker tracks each backend's health on its own; STATE is \"up\" if every \
worker sees the backend up, \"down\" if none does, \"partial\" otherwise, and \
UP ON says on how many workers it is up. RTT percentiles are in milliseconds, \
\"-\" before the first answer.",
        after_help = "Examples:\n  kdns-ctl backends\n  kdns-ctl backends --json"
    )]
    Backends,

    /// Show the hosts sharing records through etcd
    #[command(
        long_about = "\
Show the hosts that share records through etcd ([cluster] in the \
configuration, docs/cluster.md): whether this kdns is connected, the etcd \
revision of the records it serves, and one row per host: whether its lease \
is alive, the age of its lease, its instances (healthy of all), and the \
services and static records it wrote.

While etcd is unreachable kdns keeps answering with the last known records \
and refuses changes (records, service, instance) with a message that says so.",
        after_help = "Examples:\n  kdns-ctl cluster\n  kdns-ctl cluster --json"
    )]
    Cluster,

    /// Manage the cache
    #[command(subcommand)]
    Cache(CacheCommand),

    /// List, add and remove local records (services and static records)
    #[command(
        subcommand,
        alias = "record",
        long_about = "\
List, add and remove the local records: the names kdns answers itself, \
before its cache and backends, under its local domains.

Services (see `kdns-ctl service`) and their instances (see `kdns-ctl \
instance`) make A, AAAA, SRV and PTR records; static records are any A, \
AAAA, CNAME, TXT, SRV or PTR record. Records come from the configuration \
file (SOURCE \"file\") or were added at run time (SOURCE \"runtime\")."
    )]
    Records(RecordsCommand),

    /// Add, remove and list services
    #[command(
        subcommand,
        alias = "services",
        long_about = "\
Add, remove and list services.

A service is a name under the local domains (web.<domain>) answered with the \
addresses of its healthy instances; each instance is also reachable by its \
own name, <service>-<number>.<domain>. SRV records list the service's ports. \
Instances are added with `kdns-ctl instance add`."
    )]
    Service(ServiceCommand),

    /// Add and remove the instances of a service, force their health
    #[command(
        subcommand,
        alias = "instances",
        long_about = "\
Add and remove the instances of a service, and force their health.

An instance is an ID (a container id or name: stable, it keys the sticky \
mode) and one or more addresses. Instances are numbered from 1 in the order \
they are added; instance N is also answered as <service>-N.<domain>."
    )]
    Instance(InstanceCommand),

    /// Print a shell completion script
    #[command(
        long_about = "\
Print a completion script for SHELL on standard output.

Load it in the running shell, or install it where the shell finds \
completions:
  bash:        kdns-ctl completions bash > /etc/bash_completion.d/kdns-ctl
  zsh:         kdns-ctl completions zsh > \"${fpath[1]}/_kdns-ctl\"
  fish:        kdns-ctl completions fish > ~/.config/fish/completions/kdns-ctl.fish
  elvish:      kdns-ctl completions elvish >> ~/.config/elvish/rc.elv
  powershell:  kdns-ctl completions powershell >> $PROFILE",
        after_help = "Example:\n  source <(kdns-ctl completions bash)"
    )]
    Completions {
        /// The shell
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
}

/// `kdns-ctl cache ...`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Empty the cache of every worker
    #[command(
        long_about = "\
Empty the cache of every worker.

Each worker drops all its entries at its next loop turn; later queries go to \
the backends until the cache warms up again. Exits 1 if some worker could not \
be reached.",
        after_help = "Example:\n  kdns-ctl cache flush"
    )]
    Flush,
}

fn record_type() -> impl clap::builder::TypedValueParser<Value = String> {
    PossibleValuesParser::new(RECORD_TYPES).map(|t| t.to_ascii_uppercase())
}

/// `kdns-ctl records ...`.
#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// List services, instances and static records
    #[command(
        visible_alias = "ls",
        long_about = "\
List the local records: the serial, the local domains and the default TTL; \
a table of services (MODE, TTL, SRV PORTS, health CHECK, healthy instances \
of all, SOURCE); a table of their instances (#: the number in \
<service>-<number>, ID, ADDRESSES, HEALTH, checks passed and failed); and a \
table of static records.

HEALTH is \"up\" or \"down\" as the health check sees it, or \"forced-up\" / \
\"forced-down\" after `kdns-ctl instance health`. Only healthy instances are \
answered.",
        after_help = "Examples:\n  kdns-ctl records list\n  kdns-ctl records list --json | jq '.services[].name'"
    )]
    List,

    /// Add a static record
    #[command(
        long_about = "\
Add a static record NAME TYPE DATA.

NAME is a fully qualified name under one of the local domains (or a name \
under in-addr.arpa / ip6.arpa for PTR). TYPE is A, AAAA, CNAME, TXT, SRV or \
PTR (any case). DATA is, by type: an IPv4 address (A), an IPv6 address \
(AAAA), a target name (CNAME, PTR), \"PRIORITY WEIGHT PORT TARGET\" (SRV; \
quoted or as four words), or the text (TXT: each DATA word is one string of \
the record, so quote a text with spaces; each string is at most 255 bytes). \
Put -- before DATA that starts with '-'. The record takes the default TTL \
unless --ttl is given.",
        after_help = "\
Examples:
  kdns-ctl records add www.kdns A 10.0.0.5
  kdns-ctl records add www.kdns AAAA fd00::5 --ttl 60
  kdns-ctl records add db.kdns CNAME db-1.kdns
  kdns-ctl records add info.kdns TXT 'owner=infra team'
  kdns-ctl records add spf.kdns TXT -- v=spf1 -all
  kdns-ctl records add _ldap._tcp.kdns SRV 10 5 389 ldap.kdns
  kdns-ctl records add 5.0.0.10.in-addr.arpa PTR www.kdns"
    )]
    Add {
        /// Owner name
        #[arg(value_name = "NAME")]
        name: String,
        /// Record type: A, AAAA, CNAME, TXT, SRV or PTR
        #[arg(value_name = "TYPE", ignore_case = true, value_parser = record_type(), hide_possible_values = true)]
        rtype: String,
        /// Record data; several words are joined with spaces (TXT: one string each)
        #[arg(value_name = "DATA", required = true, num_args = 1..)]
        data: Vec<String>,
        /// TTL in seconds [default: the records' default TTL]
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u32>,
    },

    /// Remove static records
    #[command(
        visible_alias = "remove",
        long_about = "\
Remove the static records of NAME: all of them, or those of TYPE only. \
Services and instances are removed with `kdns-ctl service rm` and \
`kdns-ctl instance rm`.",
        after_help = "Examples:\n  kdns-ctl records rm www.kdns\n  kdns-ctl records rm www.kdns AAAA"
    )]
    Rm {
        /// Owner name
        #[arg(value_name = "NAME")]
        name: String,
        /// Remove only the records of this type
        #[arg(value_name = "TYPE", ignore_case = true, value_parser = record_type(), hide_possible_values = true)]
        rtype: Option<String>,
    },
}

/// `kdns-ctl service ...`.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Add a service
    #[command(
        long_about = "\
Add a service NAME (a single DNS label, e.g. web), answered as \
NAME.<domain> with the addresses of its healthy instances.

--mode says how the name is answered: all (every healthy instance, the \
order rotated from answer to answer; the default), random-one (one healthy \
instance at random) or sticky (the same instance for the same client address \
as long as it stays healthy).

--port NAME/PROTO/PORT (repeatable) publishes the SRV record \
_NAME._PROTO.<service>.<domain>, pointing at every healthy instance on PORT.

--check enables a health check of every instance, every --interval \
milliseconds: tcp:PORT connects to the instance on PORT (tcp alone: on the \
service's first --port); dns or dns:NAME sends the instance a DNS query on \
port 53 for NAME (default: the service's name). A check that takes longer \
than --timeout milliseconds failed. An instance is taken out of the answers \
after --fall failed checks in a row and comes back after --rise good ones. \
Without --check, instances are always healthy (unless forced down with \
`kdns-ctl instance health`).",
        after_help = "\
Examples:
  kdns-ctl service add web
  kdns-ctl service add web --mode random-one --ttl 5 --port http/tcp/80 --port https/tcp/443 --check tcp
  kdns-ctl service add api --port http/tcp/8080 \\
      --check tcp:8080 --interval 2000 --timeout 500 --rise 2 --fall 3
  kdns-ctl service add resolver --mode sticky --port dns/udp/53 --check dns:health.kdns"
    )]
    Add(ServiceAdd),

    /// Remove a service and its instances
    #[command(
        visible_alias = "remove",
        long_about = "Remove the service NAME with all its instances and their names.",
        after_help = "Example:\n  kdns-ctl service rm web"
    )]
    Rm {
        /// Service name
        #[arg(value_name = "NAME")]
        name: String,
    },

    /// List services and their instances
    #[command(
        visible_alias = "ls",
        long_about = "\
List the services and their instances: `kdns-ctl records list` without the \
static records. With --json, prints the \"services\" array of the daemon's \
answer.",
        after_help = "Examples:\n  kdns-ctl service list\n  kdns-ctl service list --json | jq '.[] | {name, instances: [.instances[].id]}'"
    )]
    List,
}

/// `kdns-ctl service add`.
#[derive(Debug, Args)]
pub struct ServiceAdd {
    /// Service name (a DNS label)
    #[arg(value_name = "NAME")]
    pub name: String,

    /// How the service name is answered [default: all]
    #[arg(long, value_enum, value_name = "MODE")]
    pub mode: Option<ModeName>,

    /// TTL of its answers in seconds [default: the records' default TTL]
    #[arg(long, value_name = "SECONDS")]
    pub ttl: Option<u32>,

    /// An SRV port, e.g. http/tcp/80 (repeatable)
    #[arg(long = "port", value_name = "NAME/PROTO/PORT", value_parser = parse_port)]
    pub ports: Vec<PortDef>,

    /// Health check of every instance: tcp[:PORT] or dns[:NAME]
    #[arg(long, value_name = "tcp[:PORT]|dns[:NAME]", value_parser = parse_check)]
    pub check: Option<Check>,

    /// Milliseconds between two checks of an instance [default: 1000]
    #[arg(long, value_name = "MS", requires = "check")]
    pub interval: Option<u64>,

    /// Milliseconds a check may take, at most --interval [default: 500]
    #[arg(long, value_name = "MS", requires = "check")]
    pub timeout: Option<u64>,

    /// Good checks in a row that bring an instance back [default: 2]
    #[arg(long, value_name = "N", requires = "check", value_parser = clap::value_parser!(u32).range(1..))]
    pub rise: Option<u32>,

    /// Failed checks in a row that take an instance out [default: 2]
    #[arg(long, value_name = "N", requires = "check", value_parser = clap::value_parser!(u32).range(1..))]
    pub fall: Option<u32>,
}

/// Parses `NAME/PROTO/PORT` (`http/tcp/80`; `_http/_tcp/80` too).
/// The name and protocol follow the daemon's rules (`kdns_api::records`).
pub fn parse_port(s: &str) -> Result<PortDef, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [name, proto, port] = parts[..] else {
        return Err("expected NAME/PROTO/PORT, e.g. http/tcp/80".into());
    };
    let name = srv_label(name).ok_or_else(|| {
        format!("bad port name {:?}: letters, digits and '-' only (at most 62), e.g. http", name.strip_prefix('_').unwrap_or(name))
    })?;
    let proto = srv_proto(proto).map_err(|p| format!("bad protocol {p:?}: tcp or udp"))?;
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("bad port number {port:?}: 1 to 65535")),
    };
    Ok(PortDef { name, proto, port })
}

/// A health check kind, `tcp[:PORT]` or `dns[:NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Connect to this port (default: the service's first port).
    Tcp(Option<u16>),
    /// Send a DNS query (for this name, if given).
    Dns(Option<String>),
}

/// Parses `tcp`, `tcp:PORT`, `dns` or `dns:NAME`.
pub fn parse_check(s: &str) -> Result<Check, String> {
    let (kind, arg) = match s.split_once(':') {
        Some((k, a)) => (k, Some(a)),
        None => (s, None),
    };
    match (kind.to_ascii_lowercase().as_str(), arg) {
        ("tcp", Some(p)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Ok(Check::Tcp(Some(p))),
            _ => Err(format!("bad port {p:?} in tcp:PORT: 1 to 65535")),
        },
        ("tcp", None) => Ok(Check::Tcp(None)),
        ("dns", None) => Ok(Check::Dns(None)),
        ("dns", Some("")) => Err("empty name in dns:NAME".into()),
        ("dns", Some(n)) => Ok(Check::Dns(Some(n.to_string()))),
        _ => Err("expected tcp, tcp:PORT, dns or dns:NAME".into()),
    }
}

/// `kdns-ctl instance ...`.
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Add an instance to a service
    #[command(
        long_about = "\
Add the instance ID with the addresses ADDR... (IPv4 and/or IPv6) to the \
service SERVICE. The daemon gives it a number N (printed): while healthy, \
it is answered as SERVICE-N.<domain> as well as under the service name.",
        after_help = "\
Examples:
  kdns-ctl instance add web web-a 10.0.0.11
  kdns-ctl instance add web 3f2a9c01d4e5 10.0.0.12 fd00::12"
    )]
    Add {
        /// Service name
        #[arg(value_name = "SERVICE")]
        service: String,
        /// Instance ID (a container id or name)
        #[arg(value_name = "ID")]
        id: String,
        /// Its addresses
        #[arg(value_name = "ADDR", required = true, num_args = 1..)]
        addrs: Vec<IpAddr>,
    },

    /// Remove an instance from a service
    #[command(
        visible_alias = "remove",
        long_about = "Remove the instance ID from the service SERVICE.",
        after_help = "Example:\n  kdns-ctl instance rm web web-a"
    )]
    Rm {
        /// Service name
        #[arg(value_name = "SERVICE")]
        service: String,
        /// Instance ID
        #[arg(value_name = "ID")]
        id: String,
    },

    /// Force an instance healthy or unhealthy, or back to its health check
    #[command(
        long_about = "\
Force the health of the instance ID of SERVICE: healthy (answered whatever \
its health check says), unhealthy (never answered, e.g. to drain it before \
maintenance), or auto (its health check decides again; without a check it \
is healthy).",
        after_help = "\
Examples:
  kdns-ctl instance health web web-a unhealthy
  kdns-ctl instance health web web-a auto"
    )]
    Health {
        /// Service name
        #[arg(value_name = "SERVICE")]
        service: String,
        /// Instance ID
        #[arg(value_name = "ID")]
        id: String,
        /// The health to force
        #[arg(value_enum, value_name = "STATE")]
        state: ForcedHealth,
    },
}
