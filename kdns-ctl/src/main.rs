//! kdns-ctl: the control client of the kdns daemon. It speaks the daemon's
//! HTTP/JSON API (`docs/control-api.md`) over the control Unix socket.

mod http;
mod render;

use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde_json::Value;

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
/// How long one request may take in all.
const TIMEOUT: Duration = Duration::from_secs(5);

const LONG_ABOUT: &str = concat!(
    "\
Control client for the kdns DNS daemon.

kdns-ctl talks to a running kdns over its control socket, a Unix socket that \
serves a small HTTP/JSON API (documented in docs/control-api.md). It reads \
statistics (queries, cache, per-worker and per-backend counters, backend \
health and round-trip times) and sends commands such as a cache flush.

The socket is, in order of precedence: --socket PATH, the KDNS_CONTROL_SOCKET \
environment variable, or ",
    default_socket!(),
    ". The socket is mode 0660: run \
kdns-ctl as root or as a member of the socket's group.

With --json, every command prints the daemon's JSON answer, pretty-printed, \
instead of tables; the fields are described in docs/control-api.md.

Exit status: 0 on success, 1 if kdns cannot be reached or reports an error, \
2 on a usage error."
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
  kdns-ctl --socket /tmp/kdns.sock stats
  KDNS_CONTROL_SOCKET=/tmp/kdns.sock kdns-ctl backends
      Talk to a kdns with a non-default control socket.";

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "kdns-ctl", version, about = "Control client for the kdns DNS daemon", long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Cli {
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        help = concat!("Control socket of the daemon [default: $KDNS_CONTROL_SOCKET, else ", default_socket!(), "]")
    )]
    socket: Option<PathBuf>,

    /// Print the daemon's JSON answer (pretty-printed) instead of tables
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Show traffic, cache, per-worker and per-backend statistics
    #[command(
        long_about = "\
Show traffic, cache, per-worker and per-backend statistics.

Prints a summary (uptime, queries per second over the last 1 and 10 seconds, \
queries, cache hit ratio, answers by rcode, forwarding outcomes, drops by \
reason), a table with one row per worker, and a table with one row per \
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

    /// Manage the cache
    #[command(subcommand)]
    Cache(CacheCommand),
}

/// `kdns-ctl cache ...`.
#[derive(Debug, Subcommand)]
enum CacheCommand {
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

/// A failure: the message printed before exiting with status 1.
#[derive(Debug)]
struct Failure(String);

impl Failure {
    fn new(msg: impl Into<String>) -> Self {
        Failure(msg.into())
    }
}

/// The socket to use: `--socket`, then the environment, then the default.
fn socket_path(flag: Option<PathBuf>, env: Option<std::ffi::OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// The name of group `gid` from /etc/group, if listed there.
fn group_name(gid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (id == gid).then(|| name.to_string())
    })
}

/// The message for a failed connect.
fn connect_error(socket: &Path, e: &std::io::Error) -> String {
    let at = format!("cannot reach kdns at {}", socket.display());
    match e.kind() {
        ErrorKind::NotFound => format!("{at}: no such socket (is kdns running? set --socket or {SOCKET_ENV})"),
        ErrorKind::PermissionDenied => {
            let group = std::fs::metadata(socket).ok().map(|m| m.gid()).map(|g| group_name(g).unwrap_or_else(|| format!("gid {g}")));
            match group {
                Some(g) => format!("{at}: permission denied (run as root or as a member of the socket's group '{g}')"),
                None => format!("{at}: permission denied (run as root or as a member of the socket's group)"),
            }
        }
        ErrorKind::ConnectionRefused => format!("{at}: socket exists but nothing is listening (stale socket; is kdns running?)"),
        _ => format!("{at}: {e}"),
    }
}

/// Sends a request and returns the JSON body of a 2xx answer.
fn call(socket: &Path, method: &str, path: &str) -> Result<Value, Failure> {
    let resp = http::request(socket, method, path, TIMEOUT).map_err(|e| {
        Failure::new(match e {
            http::ClientError::Connect(e) => connect_error(socket, &e),
            http::ClientError::Timeout => format!("kdns at {} did not answer within {} s", socket.display(), TIMEOUT.as_secs()),
            http::ClientError::Io(e) => format!("talking to kdns at {}: {e}", socket.display()),
            http::ClientError::Parse(e) => format!("kdns at {} sent a malformed answer: {e}", socket.display()),
        })
    })?;
    let json: Result<Value, _> = serde_json::from_slice(&resp.body);
    if !(200..300).contains(&resp.status) {
        let detail =
            json.ok().and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string)).unwrap_or_else(|| resp.reason.clone());
        return Err(Failure::new(format!("kdns answered {} to {method} {path}: {detail}", resp.status)));
    }
    json.map_err(|e| Failure::new(format!("kdns sent invalid JSON for {path}: {e}")))
}

/// Writes `text` to stdout; a closed pipe (`kdns-ctl stats | head`) is not
/// an error.
fn emit(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => Err(Failure::new(format!("writing output: {e}"))),
        _ => Ok(()),
    }
}

fn emit_json(v: &Value) -> Result<(), Failure> {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    emit(&s)
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure::new(format!("unexpected {what} from kdns: {e}")))
}

fn run(cli: Cli) -> Result<(), Failure> {
    let socket = socket_path(cli.socket, std::env::var_os(SOCKET_ENV));
    match cli.command {
        Command::Stats => {
            let v = call(&socket, "GET", "/v1/stats")?;
            if cli.json {
                emit_json(&v)?;
            } else {
                emit(&render::stats(&parse(v, "statistics")?))?;
            }
        }
        Command::Backends => {
            let v = call(&socket, "GET", "/v1/backends")?;
            if cli.json {
                emit_json(&v)?;
            } else {
                let bs: Vec<render::Backend> = parse(v, "backend list")?;
                if bs.is_empty() {
                    emit("no backends configured\n")?;
                } else {
                    emit(&render::backends_table(&bs))?;
                }
            }
        }
        Command::Cache(CacheCommand::Flush) => {
            let v = call(&socket, "POST", "/v1/cache/flush")?;
            let flushed = v.get("flushed_workers").and_then(Value::as_u64).unwrap_or(0);
            let workers = v.get("workers").and_then(Value::as_u64);
            if cli.json {
                emit_json(&v)?;
            } else {
                match workers {
                    Some(n) => emit(&format!("cache flush sent to {flushed} of {n} workers\n"))?,
                    None => emit(&format!("cache flush sent to {flushed} workers\n"))?,
                }
            }
            if workers.is_some_and(|n| flushed < n) {
                return Err(Failure::new("some workers could not be reached; their caches were not flushed"));
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // clap exits 2 on usage errors, 0 for --help and --version.
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("kdns-ctl: {msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn socket_precedence() {
        assert_eq!(socket_path(None, None), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(socket_path(None, Some("".into())), PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(socket_path(None, Some("/e.sock".into())), PathBuf::from("/e.sock"));
        assert_eq!(socket_path(Some("/f.sock".into()), Some("/e.sock".into())), PathBuf::from("/f.sock"));
    }

    #[test]
    fn global_flags_go_anywhere() {
        let c = Cli::try_parse_from(["kdns-ctl", "cache", "flush", "--json", "--socket", "/x"]).unwrap();
        assert!(c.json);
        assert_eq!(c.socket, Some(PathBuf::from("/x")));
        assert!(matches!(c.command, Command::Cache(CacheCommand::Flush)));
        let c = Cli::try_parse_from(["kdns-ctl", "--json", "stats"]).unwrap();
        assert!(c.json && matches!(c.command, Command::Stats));
        let e = Cli::try_parse_from(["kdns-ctl", "frobnicate"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(Cli::try_parse_from(["kdns-ctl"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn connect_errors_say_what_to_do() {
        let p = Path::new("/run/kdns/control.sock");
        let m = connect_error(p, &std::io::Error::from(ErrorKind::NotFound));
        assert_eq!(m, "cannot reach kdns at /run/kdns/control.sock: no such socket (is kdns running? set --socket or KDNS_CONTROL_SOCKET)");
        let m = connect_error(p, &std::io::Error::from(ErrorKind::ConnectionRefused));
        assert!(m.ends_with("socket exists but nothing is listening (stale socket; is kdns running?)"), "{m}");
        let m = connect_error(p, &std::io::Error::from(ErrorKind::PermissionDenied));
        assert!(m.contains("permission denied (run as root or as a member of the socket's group"), "{m}");
    }
}
