//! kdns-ctl: the control client of the kdns daemon. It speaks the daemon's
//! HTTP/JSON API (`docs/control-api.md`) over the control Unix socket, or
//! over TCP with a bearer token (`--url`).

mod cli;
mod http;
mod render;

use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use kdns_api::stats::Backend;
use kdns_api::view::{ForcedHealth, RecordsView};
use serde_json::{json, Map, Value};

use cli::{CacheCommand, Check, Cli, Command, InstanceCommand, RecordsCommand, ServiceAdd, ServiceCommand};
use cli::{DEFAULT_SOCKET, SOCKET_ENV, TOKEN_ENV};
use http::{ClientError, Request, Target, Url};

/// How long one request may take in all.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A failure: the message printed before exiting with status 1.
#[derive(Debug, PartialEq, Eq)]
struct Failure(String);

impl Failure {
    fn new(msg: impl Into<String>) -> Self {
        Failure(msg.into())
    }
}

/// The socket to use: `--socket`, then the environment, then the default.
fn socket_path(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from)).unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Checks that a token can go in a header: visible ASCII, no spaces.
fn check_token(t: &str, from: &str) -> Result<(), Failure> {
    if t.is_empty() {
        return Err(Failure::new(format!("{from} is empty")));
    }
    if !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Failure::new(format!(
            "{from} holds characters that cannot go in an HTTP header (spaces, control or non-ASCII characters)"
        )));
    }
    Ok(())
}

/// The token for `--url`: the trimmed content of `--token-file`, else the
/// environment's, else none.
fn token(file: Option<&Path>, env: Option<OsString>) -> Result<Option<String>, Failure> {
    if let Some(p) = file {
        let text = std::fs::read_to_string(p).map_err(|e| Failure::new(format!("cannot read the token file {}: {e}", p.display())))?;
        let t = text.trim().to_string();
        check_token(&t, &format!("the token file {}", p.display()))?;
        return Ok(Some(t));
    }
    match env.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            let t = v.into_string().map_err(|_| Failure::new(format!("{TOKEN_ENV} is not valid UTF-8")))?;
            let t = t.trim().to_string();
            check_token(&t, &format!("${TOKEN_ENV}"))?;
            Ok(Some(t))
        }
    }
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

/// The message for a failed connect to the Unix socket.
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

/// The message for a failed connect to the TCP control API.
fn tcp_connect_error(url: &Url, e: &std::io::Error) -> String {
    let at = format!("cannot reach kdns at {url}");
    match e.kind() {
        ErrorKind::ConnectionRefused => {
            format!("{at}: connection refused (is kdns running, with its TCP control API on this address and port?)")
        }
        _ => format!("{at}: {e}"),
    }
}

/// Percent-encodes `s` for a path segment or a query value: everything but
/// the unreserved characters of RFC 3986.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where and how to reach the daemon.
#[derive(Debug)]
struct Client {
    target: Target,
    token: Option<String>,
}

impl Client {
    /// Sends a request and returns the JSON body of a 2xx answer (`null`
    /// for an empty one).
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
        let req = Request { method, path, body: bytes.as_deref(), token: self.token.as_deref() };
        let target = &self.target;
        let resp = http::send(target, &req, TIMEOUT).map_err(|e| {
            Failure::new(match (e, target) {
                (ClientError::Connect(e), Target::Unix(socket)) => connect_error(socket, &e),
                (ClientError::Connect(e), Target::Tcp(url)) => tcp_connect_error(url, &e),
                (ClientError::Resolve(e), Target::Tcp(url)) => format!("cannot reach kdns at {url}: cannot resolve {}: {e}", url.host),
                (ClientError::Resolve(e), _) => format!("cannot reach kdns at {target}: {e}"),
                (ClientError::Timeout, _) => format!("kdns at {target} did not answer within {} s", TIMEOUT.as_secs()),
                (ClientError::Io(e), _) => format!("talking to kdns at {target}: {e}"),
                (ClientError::Parse(e), _) => format!("kdns at {target} sent a malformed answer: {e}"),
            })
        })?;
        let json: Result<Value, _> =
            if resp.body.iter().all(u8::is_ascii_whitespace) { Ok(Value::Null) } else { serde_json::from_slice(&resp.body) };
        if resp.status == 401 {
            return Err(Failure::new(match self.token {
                Some(_) => "the daemon refused the token (401)".to_string(),
                None => format!("the daemon refused the request without a token (401): pass --token-file PATH or set {TOKEN_ENV}"),
            }));
        }
        if !(200..300).contains(&resp.status) {
            // The daemon's own message says what is wrong ("no service web").
            let msg = json.ok().and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
            return Err(Failure::new(match msg {
                Some(m) => m,
                None => format!("kdns answered {} {} to {method} {path}", resp.status, resp.reason).trim_end().to_string(),
            }));
        }
        json.map_err(|e| Failure::new(format!("kdns sent invalid JSON for {method} {path}: {e}")))
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    s.push('\n');
    s
}

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(v).map_err(|e| Failure::new(format!("unexpected {what} from kdns: {e}")))
}

/// "WHAT (serial 12, in every worker after 0.4 ms)" for the answer to a
/// change; "in 2 of 3 workers" when some worker had not taken the new
/// records when the daemon stopped waiting.
fn changed(what: &str, v: &Value) -> String {
    let serial = v.get("serial").and_then(Value::as_u64);
    let ms = v.get("propagated_ms").and_then(Value::as_f64);
    let workers = v.get("workers").and_then(Value::as_u64);
    let acked = v.get("workers_acked").and_then(Value::as_u64);
    let where_ = match (acked, workers) {
        (Some(a), Some(n)) if a < n => format!("in {a} of {n} workers"),
        _ => "in every worker".to_string(),
    };
    match (serial, ms) {
        (Some(s), Some(ms)) if ms > 0.0 && ms < 0.05 => format!("{what} (serial {s}, {where_} after less than 0.1 ms)\n"),
        (Some(s), Some(ms)) => format!("{what} (serial {s}, {where_} after {ms:.1} ms)\n"),
        (Some(s), None) => format!("{what} (serial {s})\n"),
        (None, _) => format!("{what}\n"),
    }
}

/// The body of `POST /v1/services`.
fn service_body(a: &ServiceAdd) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(a.name));
    if let Some(mode) = a.mode {
        m.insert("mode".into(), json!(mode.name()));
    }
    if let Some(ttl) = a.ttl {
        m.insert("ttl".into(), json!(ttl));
    }
    if !a.ports.is_empty() {
        let ports: Vec<Value> = a.ports.iter().map(|p| json!({"name": p.name, "proto": p.proto, "port": p.port})).collect();
        m.insert("ports".into(), Value::Array(ports));
    }
    if let Some(check) = &a.check {
        let mut c = Map::new();
        match check {
            Check::Tcp(port) => {
                c.insert("kind".into(), json!("tcp"));
                if let Some(p) = port {
                    c.insert("port".into(), json!(p));
                }
            }
            Check::Dns(name) => {
                c.insert("kind".into(), json!("dns"));
                if let Some(n) = name {
                    c.insert("name".into(), json!(n));
                }
            }
        }
        for (k, v) in
            [("interval_ms", a.interval), ("timeout_ms", a.timeout), ("rise", a.rise.map(u64::from)), ("fall", a.fall.map(u64::from))]
        {
            if let Some(v) = v {
                c.insert(k.into(), json!(v));
            }
        }
        m.insert("check".into(), Value::Object(c));
    }
    Value::Object(m)
}

/// The environment variables kdns-ctl reads.
#[derive(Debug, Default)]
struct Env {
    /// `KDNS_CONTROL_SOCKET`.
    socket: Option<OsString>,
    /// `KDNS_CONTROL_TOKEN`.
    token: Option<OsString>,
}

impl Env {
    fn read() -> Self {
        Env { socket: std::env::var_os(SOCKET_ENV), token: std::env::var_os(TOKEN_ENV) }
    }
}

/// Runs the command; what it prints goes to `out` (also when it then
/// fails, e.g. a cache flush that missed workers).
fn run(cli: Cli, env: Env, out: &mut String) -> Result<(), Failure> {
    let json_out = cli.json;
    if let Command::Completions { shell } = cli.command {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "kdns-ctl", &mut buf);
        out.push_str(&String::from_utf8_lossy(&buf));
        return Ok(());
    }
    let client = match cli.url {
        Some(url) => Client { target: Target::Tcp(url), token: token(cli.token_file.as_deref(), env.token)? },
        None => Client { target: Target::Unix(socket_path(cli.socket, env.socket)), token: None },
    };
    // A change: POST or DELETE, then the daemon's JSON or `line`.
    let change = |out: &mut String, method: &str, path: &str, body: Option<Value>, line: &dyn Fn(&Value) -> String| {
        let v = client.call(method, path, body.as_ref())?;
        out.push_str(&if json_out { pretty(&v) } else { line(&v) });
        Ok::<_, Failure>(())
    };

    match cli.command {
        Command::Completions { .. } => unreachable!("handled above"),
        Command::Stats => {
            let v = client.call("GET", "/v1/stats", None)?;
            out.push_str(&if json_out { pretty(&v) } else { render::stats(&parse(v, "statistics")?) });
        }
        Command::Cluster => {
            let v = client.call("GET", "/v1/cluster", None)?;
            out.push_str(&if json_out { pretty(&v) } else { render::cluster(&parse(v, "cluster view")?) });
        }
        Command::Backends => {
            let v = client.call("GET", "/v1/backends", None)?;
            if json_out {
                out.push_str(&pretty(&v));
            } else {
                let bs: Vec<Backend> = parse(v, "backend list")?;
                if bs.is_empty() {
                    out.push_str("no backends configured\n");
                } else {
                    out.push_str(&render::backends_table(&bs));
                }
            }
        }
        Command::Cache(CacheCommand::Flush) => {
            let v = client.call("POST", "/v1/cache/flush", None)?;
            let flushed = v.get("flushed_workers").and_then(Value::as_u64).unwrap_or(0);
            let workers = v.get("workers").and_then(Value::as_u64);
            if json_out {
                out.push_str(&pretty(&v));
            } else {
                match workers {
                    Some(n) => out.push_str(&format!("cache flush sent to {flushed} of {n} workers\n")),
                    None => out.push_str(&format!("cache flush sent to {flushed} workers\n")),
                }
            }
            if workers.is_some_and(|n| flushed < n) {
                return Err(Failure::new("some workers could not be reached; their caches were not flushed"));
            }
        }
        Command::Records(RecordsCommand::List) => {
            let v = client.call("GET", "/v1/records", None)?;
            out.push_str(&if json_out { pretty(&v) } else { render::records(&parse(v, "records")?) });
        }
        Command::Service(ServiceCommand::List) => {
            let v = client.call("GET", "/v1/records", None)?;
            if json_out {
                out.push_str(&pretty(v.get("services").unwrap_or(&Value::Array(Vec::new()))));
            } else {
                out.push_str(&render::services(&parse::<RecordsView>(v, "records")?.services));
            }
        }
        Command::Records(RecordsCommand::Add { name, rtype, data, ttl }) => {
            // TXT: each word a string; others: the words joined.
            let (data, shown) = if rtype == "TXT" && data.len() > 1 {
                (json!(data), data.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(" "))
            } else {
                let d = data.join(" ");
                (json!(d), d)
            };
            let mut body = json!({"name": name, "type": rtype, "data": data});
            if let Some(ttl) = ttl {
                body["ttl"] = json!(ttl);
            }
            change(out, "POST", "/v1/records", Some(body), &|v| changed(&format!("record {name} {rtype} {shown} added"), v))?;
        }
        Command::Records(RecordsCommand::Rm { name, rtype }) => {
            let mut path = format!("/v1/records?name={}", encode(&name));
            let what = match &rtype {
                Some(t) => {
                    path.push_str(&format!("&type={}", encode(t)));
                    format!("{t} records of {name} removed")
                }
                None => format!("records of {name} removed"),
            };
            change(out, "DELETE", &path, None, &|v| changed(&what, v))?;
        }
        Command::Service(ServiceCommand::Add(a)) => {
            change(out, "POST", "/v1/services", Some(service_body(&a)), &|v| changed(&format!("service {} added", a.name), v))?;
        }
        Command::Service(ServiceCommand::Rm { name }) => {
            change(out, "DELETE", &format!("/v1/services/{}", encode(&name)), None, &|v| changed(&format!("service {name} removed"), v))?;
        }
        Command::Instance(InstanceCommand::Add { service, id, addrs }) => {
            let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            let path = format!("/v1/services/{}/instances", encode(&service));
            change(out, "POST", &path, Some(json!({"id": id, "addrs": addrs})), &|v| {
                let what = match v.get("number").and_then(Value::as_u64) {
                    Some(n) => format!("instance {id} added to service {service} as {service}-{n}"),
                    None => format!("instance {id} added to service {service}"),
                };
                changed(&what, v)
            })?;
        }
        Command::Instance(InstanceCommand::Rm { service, id }) => {
            let path = format!("/v1/services/{}/instances/{}", encode(&service), encode(&id));
            change(out, "DELETE", &path, None, &|v| changed(&format!("instance {id} removed from service {service}"), v))?;
        }
        Command::Instance(InstanceCommand::Health { service, id, state }) => {
            let path = format!("/v1/services/{}/instances/{}/health", encode(&service), encode(&id));
            let what = match state {
                ForcedHealth::Healthy => format!("instance {id} of service {service} forced healthy"),
                ForcedHealth::Unhealthy => format!("instance {id} of service {service} forced unhealthy"),
                ForcedHealth::Auto => format!("instance {id} of service {service} back to its health check"),
            };
            change(out, "POST", &path, Some(json!({"state": state.name()})), &|v| changed(&what, v))?;
        }
    }
    Ok(())
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

fn main() -> ExitCode {
    // clap exits 2 on usage errors, 0 for --help and --version.
    let cli = Cli::parse();
    let mut out = String::new();
    let result = run(cli, Env::read(), &mut out);
    let result = emit(&out).and(result);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg)) => {
            eprintln!("kdns-ctl: {msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests;
