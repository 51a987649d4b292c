//! The command line and the commands against a fake daemon: a thread that
//! serves canned answers on a temporary Unix socket (or TCP port) and
//! records the requests it got.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use clap::CommandFactory;

use super::*;

/// A fresh directory under the system temp dir, removed when dropped.
fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("kdns-ctl-test-").tempdir().expect("a temporary directory")
}

/// A request the fake daemon received.
#[derive(Debug)]
struct Got {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads one request (headers, then `Content-Length` bytes of body),
/// answers `status` with `body`, closes.
fn serve_one(mut c: impl Read + Write, status: u16, body: &str) -> Got {
    let mut raw = Vec::new();
    let mut b = [0u8; 4096];
    let end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = c.read(&mut b).unwrap();
        assert!(n > 0, "client closed before the end of the headers");
        raw.extend_from_slice(&b[..n]);
    };
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap().split(' ');
    let (method, path) = (first.next().unwrap().to_string(), first.next().unwrap().to_string());
    let headers: Vec<(String, String)> =
        lines.map(|l| l.split_once(':').unwrap()).map(|(k, v)| (k.to_string(), v.trim().to_string())).collect();
    let len: usize = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map_or(0, |(_, v)| v.parse().unwrap());
    let mut req_body = raw[end + 4..].to_vec();
    while req_body.len() < len {
        let n = c.read(&mut b).unwrap();
        assert!(n > 0, "client closed inside the body");
        req_body.extend_from_slice(&b[..n]);
    }
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Whatever",
    };
    write!(
        c,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    Got { method, path, headers, body: req_body }
}

/// A fake daemon on a Unix socket answering `answers` in turn, one per
/// connection. Join the handle for the requests it got.
fn unix_daemon(answers: Vec<(u16, &'static str)>) -> (PathBuf, JoinHandle<Vec<Got>>) {
    let tmp = temp_dir();
    let sock = tmp.path().join("control.sock");
    let l = UnixListener::bind(&sock).unwrap();
    // The directory goes when the last answer has been served.
    let t = std::thread::spawn(move || {
        let _tmp = tmp;
        answers.into_iter().map(|(status, body)| serve_one(l.accept().unwrap().0, status, body)).collect()
    });
    (sock, t)
}

/// The same on TCP, 127.0.0.1, a free port.
fn tcp_daemon(answers: Vec<(u16, &'static str)>) -> (SocketAddr, JoinHandle<Vec<Got>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let t = std::thread::spawn(move || answers.into_iter().map(|(status, body)| serve_one(l.accept().unwrap().0, status, body)).collect());
    (addr, t)
}

/// Runs `kdns-ctl ARGS` with no environment variables set.
fn ctl(args: &[&str]) -> (Result<(), Failure>, String) {
    ctl_env(args, Env::default())
}

fn ctl_env(args: &[&str], env: Env) -> (Result<(), Failure>, String) {
    let cli = Cli::try_parse_from(std::iter::once("kdns-ctl").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    let mut out = String::new();
    let r = run(cli, env, &mut out);
    (r, out)
}

/// `kdns-ctl --socket SOCK ARGS` against a fake daemon giving one answer;
/// returns the result, the output and the request.
fn one(args: &[&str], status: u16, answer: &'static str) -> (Result<(), Failure>, String, Got) {
    let (sock, t) = unix_daemon(vec![(status, answer)]);
    let s = sock.to_str().unwrap().to_string();
    let mut all = vec!["--socket", &s];
    all.extend_from_slice(args);
    let (r, out) = ctl(&all);
    let mut got = t.join().unwrap();
    let _ = std::fs::remove_dir_all(sock.parent().unwrap());
    (r, out, got.remove(0))
}

const CHANGED: &str = r#"{"serial": 12, "propagated_ms": 0.4}"#;

fn usage_error(args: &[&str]) -> clap::Error {
    match Cli::try_parse_from(std::iter::once("kdns-ctl").chain(args.iter().copied())) {
        Ok(c) => panic!("{args:?} parsed: {c:?}"),
        Err(e) => e,
    }
}

// ---- the command line ----

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
    let c = Cli::try_parse_from(["kdns-ctl", "instance", "rm", "web", "a", "--url", "http://h:1", "--token-file", "/t"]).unwrap();
    assert_eq!(c.url.unwrap().authority(), "h:1");
    assert_eq!(c.token_file, Some(PathBuf::from("/t")));
    let e = Cli::try_parse_from(["kdns-ctl", "frobnicate"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(Cli::try_parse_from(["kdns-ctl"]).unwrap_err().exit_code(), 2);
}

#[test]
fn url_token_and_socket_flags_combine_sensibly() {
    // Socket or URL, not both; a token file needs a URL.
    assert_eq!(usage_error(&["--socket", "/x", "--url", "http://h:1", "stats"]).exit_code(), 2);
    assert_eq!(usage_error(&["--token-file", "/t", "stats"]).exit_code(), 2);
    let e = usage_error(&["--url", "https://h:1", "stats"]);
    assert!(e.to_string().contains("https is not supported"), "{e}");
    assert_eq!(usage_error(&["--url", "h:1", "stats"]).exit_code(), 2);
}

#[test]
fn urls() {
    let u = http::parse_url("http://10.0.0.1:9154").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("10.0.0.1", 9154, ""));
    assert_eq!(u.to_string(), "http://10.0.0.1:9154");
    let u = http::parse_url("HTTP://[fd00::1]:8080/kdns/").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("fd00::1", 8080, "/kdns"));
    assert_eq!(u.authority(), "[fd00::1]:8080");
    let u = http::parse_url("http://kdns.example/").unwrap();
    assert_eq!((u.host.as_str(), u.port, u.prefix.as_str()), ("kdns.example", 80, ""));
    for bad in [
        "",
        "10.0.0.1:53",
        "ftp://h",
        "http://",
        "http://h:0",
        "http://h:99999",
        "http://h:x",
        "http://fd00::1:80",
        "http://[::1",
        "http://u:p@h:1",
        "http://h:1/?a",
    ] {
        assert!(http::parse_url(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn ports_and_checks_parse() {
    use cli::{parse_check, parse_port};
    use kdns_api::records::PortDef;
    assert_eq!(parse_port("http/tcp/80"), Ok(PortDef { name: "http".into(), proto: "tcp".into(), port: 80 }));
    assert_eq!(parse_port("_sip/_UDP/5060"), Ok(PortDef { name: "sip".into(), proto: "udp".into(), port: 5060 }));
    // The daemon's rule: `_<name>` must be one DNS label.
    assert_eq!(parse_port(&format!("{}/tcp/80", "a".repeat(62))).map(|p| p.port), Ok(80));
    assert!(parse_port(&format!("{}/tcp/80", "a".repeat(63))).unwrap_err().contains("at most 62"));
    for bad in ["http/tcp", "http/sctp/80", "/tcp/80", "http/tcp/0", "http/tcp/65536", "ht tp/tcp/80", "a/tcp/80/x"] {
        assert!(parse_port(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(parse_check("tcp:8080"), Ok(Check::Tcp(Some(8080))));
    assert_eq!(parse_check("TCP"), Ok(Check::Tcp(None)));
    assert_eq!(parse_check("dns"), Ok(Check::Dns(None)));
    assert_eq!(parse_check("dns:health.kdns"), Ok(Check::Dns(Some("health.kdns".into()))));
    for bad in ["tcp:", "tcp:0", "tcp:http", "dns:", "http:80", ""] {
        assert!(parse_check(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn service_add_usage_errors() {
    // Check tuning without a check.
    assert_eq!(usage_error(&["service", "add", "web", "--interval", "1000"]).exit_code(), 2);
    assert_eq!(usage_error(&["service", "add", "web", "--check", "tcp:80", "--rise", "0"]).exit_code(), 2);
    assert_eq!(usage_error(&["service", "add", "web", "--mode", "round-robin"]).exit_code(), 2);
    assert_eq!(usage_error(&["service", "add", "web", "--port", "http"]).exit_code(), 2);
    assert_eq!(usage_error(&["instance", "add", "web", "a"]).exit_code(), 2);
    assert_eq!(usage_error(&["instance", "add", "web", "a", "not-an-ip"]).exit_code(), 2);
    assert_eq!(usage_error(&["instance", "health", "web", "a", "sick"]).exit_code(), 2);
    assert_eq!(usage_error(&["records", "add", "x.kdns", "MX", "10 mail.kdns"]).exit_code(), 2);
}

#[test]
fn tokens() {
    let tmp = temp_dir();
    let dir = tmp.path();
    let f = dir.join("token");
    std::fs::write(&f, "s3cret-token\n").unwrap();
    assert_eq!(token(Some(&f), Some("from-env".into())), Ok(Some("s3cret-token".into())));
    assert_eq!(token(None, Some("from-env".into())), Ok(Some("from-env".into())));
    assert_eq!(token(None, Some("".into())), Ok(None));
    assert_eq!(token(None, None), Ok(None));
    std::fs::write(&f, "\n").unwrap();
    assert!(token(Some(&f), None).unwrap_err().0.contains("is empty"));
    std::fs::write(&f, "two words").unwrap();
    assert!(token(Some(&f), None).unwrap_err().0.contains("cannot go in an HTTP header"));
    let missing = dir.join("missing");
    assert!(token(Some(&missing), None).unwrap_err().0.starts_with("cannot read the token file"));
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

#[test]
fn encoding() {
    assert_eq!(encode("web-1.kdns_x~"), "web-1.kdns_x~");
    assert_eq!(encode("a b&c=d/e?é"), "a%20b%26c%3Dd%2Fe%3F%C3%A9");
}

#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (r, out) = ctl(&["completions", shell]);
        assert_eq!(r, Ok(()));
        assert!(out.contains("kdns-ctl"), "{shell}");
        // Subcommands and their flags are completed.
        assert!(out.contains("instance") && out.contains("token-file"), "{shell}:\n{out}");
        // Values too, where the shell's generator completes them.
        if ["bash", "zsh", "fish"].contains(&shell) {
            assert!(out.contains("random-one"), "{shell}:\n{out}");
        }
    }
    assert_eq!(usage_error(&["completions", "tcsh"]).exit_code(), 2);
}

// ---- the commands against a fake daemon ----

const RECORDS: &str = r#"{
  "serial": 12,
  "domains": ["kdns", "svc.local"],
  "default_ttl": 10,
  "services": [
    {"name": "web", "mode": "all", "ttl": 10,
     "ports": [{"name": "http", "proto": "tcp", "port": 80}, {"name": "https", "proto": "tcp", "port": 443}],
     "check": {"kind": "tcp", "port": 80, "interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 3},
     "source": "file",
     "instances": [
       {"number": 1, "id": "web-a", "addrs": ["10.0.0.11", "fd00::11"], "healthy": true, "health": "up", "checks_ok": 120, "checks_failed": 0, "last_error": null, "source": "file"},
       {"number": 3, "id": "3f2a9c01d4e5", "addrs": ["10.0.0.13"], "healthy": false, "health": "forced-down", "checks_ok": 7, "checks_failed": 1, "last_error": "connect: refused", "source": "runtime"}
     ]},
    {"name": "dns", "mode": "sticky", "ttl": 30, "ports": [], "check": {"kind": "dns", "name": "health.kdns", "port": 53, "interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 2}, "source": "runtime",
     "instances": [], "future_field": true}
  ],
  "records": [
    {"name": "www.kdns", "type": "A", "ttl": 60, "data": "10.0.0.5", "source": "file"},
    {"name": "info.kdns", "type": "TXT", "ttl": 10, "data": "owner=infra team", "source": "runtime"},
    {"name": "spf.kdns", "type": "TXT", "ttl": 5, "data": ["v=spf1", "-all"], "source": "runtime"}
  ]
}"#;

#[test]
fn records_list_tables() {
    let (r, out, got) = one(&["records", "list"], 200, RECORDS);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("GET", "/v1/records"));
    let want = "\
Serial:      12
Domains:     kdns, svc.local
Default TTL: 10 s

Services
SERVICE  MODE    TTL  PORTS                       CHECK                                                           HEALTHY  SOURCE
web      all      10  http/tcp/80, https/tcp/443  tcp:80, every 1000 ms, timeout 500 ms, rise 2, fall 3               1/2  file
dns      sticky   30  -                           dns:health.kdns, every 1000 ms, timeout 500 ms, rise 2, fall 2      0/0  runtime

Instances
SERVICE  #  ID            ADDRESSES            HEALTH       CHECKS OK  FAILED
web      1  web-a         10.0.0.11, fd00::11  up                 120       0
web      3  3f2a9c01d4e5  10.0.0.13            forced-down          7       1

Static records
NAME       TYPE  TTL  DATA              SOURCE
www.kdns   A      60  10.0.0.5          file
info.kdns  TXT    10  owner=infra team  runtime
spf.kdns   TXT     5  \"v=spf1\" \"-all\"   runtime
";
    assert_eq!(out, want, "got:\n{out}");
}

#[test]
fn empty_records_list() {
    let (r, out, _) =
        one(&["records", "list"], 200, r#"{"serial": 1, "domains": ["kdns"], "default_ttl": 10, "services": [], "records": []}"#);
    assert_eq!(r, Ok(()));
    assert!(out.ends_with("Services\n(none)\n\nStatic records\n(none)\n"), "{out}");
}

#[test]
fn service_list_is_services_only() {
    let (r, out, got) = one(&["service", "list"], 200, RECORDS);
    assert_eq!(r, Ok(()));
    assert_eq!(got.path, "/v1/records");
    assert!(out.starts_with("Services\nSERVICE"), "{out}");
    assert!(out.contains("\nInstances\n") && !out.contains("Static records") && !out.contains("www.kdns"), "{out}");

    let (_, out, _) = one(&["service", "list", "--json"], 200, RECORDS);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["instances"][1]["id"], "3f2a9c01d4e5");
}

#[test]
fn records_add_and_rm() {
    let (r, out, got) = one(&["records", "add", "www.kdns", "a", "10.0.0.5", "--ttl", "60"], 200, CHANGED);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/v1/records"));
    assert_eq!(got.header("Content-Type"), Some("application/json"));
    assert_eq!(got.json(), json!({"name": "www.kdns", "type": "A", "data": "10.0.0.5", "ttl": 60}));
    assert_eq!(out, "record www.kdns A 10.0.0.5 added (serial 12, in every worker after 0.4 ms)\n");

    let (_, out, got) = one(&["records", "add", "info.kdns", "TXT", "--", "-dash first-"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "info.kdns", "type": "TXT", "data": "-dash first-"}));
    assert!(out.starts_with("record info.kdns TXT -dash first- added"), "{out}");
    let (_, out, got) = one(&["records", "add", "spf.kdns", "txt", "--ttl", "5", "--", "v=spf1", "-all"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "spf.kdns", "type": "TXT", "data": ["v=spf1", "-all"], "ttl": 5}));
    assert!(out.starts_with("record spf.kdns TXT \"v=spf1\" \"-all\" added"), "{out}");
    let (_, _, got) = one(&["records", "add", "_ldap._tcp.kdns", "SRV", "10", "5", "389", "ldap.kdns"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "_ldap._tcp.kdns", "type": "SRV", "data": "10 5 389 ldap.kdns"}));

    let (r, out, got) = one(&["records", "rm", "www.kdns"], 200, CHANGED);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("DELETE", "/v1/records?name=www.kdns"));
    assert!(got.body.is_empty());
    assert_eq!(out, "records of www.kdns removed (serial 12, in every worker after 0.4 ms)\n");

    let (_, out, got) = one(&["records", "rm", "odd name&x=1.kdns", "aaaa"], 200, r#"{"serial": 13}"#);
    assert_eq!(got.path, "/v1/records?name=odd%20name%26x%3D1.kdns&type=AAAA");
    assert_eq!(out, "AAAA records of odd name&x=1.kdns removed (serial 13)\n");
}

#[test]
fn service_add_sends_every_option() {
    let args = [
        "service",
        "add",
        "api",
        "--mode",
        "random-one",
        "--ttl",
        "5",
        "--port",
        "http/tcp/8080",
        "--port",
        "_metrics/_tcp/9100",
        "--check",
        "tcp:8080",
        "--interval",
        "2000",
        "--timeout",
        "500",
        "--rise",
        "2",
        "--fall",
        "3",
    ];
    let (r, out, got) = one(&args, 200, CHANGED);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/v1/services"));
    assert_eq!(
        got.json(),
        json!({
            "name": "api", "mode": "random-one", "ttl": 5,
            "ports": [{"name": "http", "proto": "tcp", "port": 8080}, {"name": "metrics", "proto": "tcp", "port": 9100}],
            "check": {"kind": "tcp", "port": 8080, "interval_ms": 2000, "timeout_ms": 500, "rise": 2, "fall": 3}
        })
    );
    assert_eq!(out, "service api added (serial 12, in every worker after 0.4 ms)\n");

    // Only what was given is sent.
    let (_, _, got) = one(&["service", "add", "web"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "web"}));
    let (_, _, got) = one(&["service", "add", "res", "--mode", "sticky", "--check", "dns:health.kdns"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "res", "mode": "sticky", "check": {"kind": "dns", "name": "health.kdns"}}));
    let (_, _, got) = one(&["service", "add", "res", "--check", "dns", "--fall", "5"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "res", "check": {"kind": "dns", "fall": 5}}));
    let (_, _, got) = one(&["service", "add", "web", "--port", "http/tcp/80", "--check", "tcp"], 200, CHANGED);
    assert_eq!(got.json(), json!({"name": "web", "ports": [{"name": "http", "proto": "tcp", "port": 80}], "check": {"kind": "tcp"}}));
}

#[test]
fn service_rm() {
    let (r, out, got) = one(&["service", "rm", "web"], 200, r#"{"serial": 14, "propagated_ms": 1.25, "workers": 3, "workers_acked": 3}"#);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("DELETE", "/v1/services/web"));
    assert_eq!(out, "service web removed (serial 14, in every worker after 1.2 ms)\n");
    // A worker that did not take the change in time.
    let (r, out, _) = one(&["service", "rm", "web"], 200, r#"{"serial": 15, "propagated_ms": 1000.2, "workers": 3, "workers_acked": 2}"#);
    assert_eq!(r, Ok(()));
    assert_eq!(out, "service web removed (serial 15, in 2 of 3 workers after 1000.2 ms)\n");
}

#[test]
fn instance_add_rm_health() {
    let (r, out, got) =
        one(&["instance", "add", "web", "web-b", "10.0.0.12", "fd00::12"], 200, r#"{"serial": 15, "propagated_ms": 0.01, "number": 4}"#);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/v1/services/web/instances"));
    assert_eq!(got.json(), json!({"id": "web-b", "addrs": ["10.0.0.12", "fd00::12"]}));
    assert_eq!(out, "instance web-b added to service web as web-4 (serial 15, in every worker after less than 0.1 ms)\n");

    let (r, out, got) = one(&["instance", "rm", "web", "ctr/1 x"], 200, CHANGED);
    assert_eq!(r, Ok(()));
    assert_eq!((got.method.as_str(), got.path.as_str()), ("DELETE", "/v1/services/web/instances/ctr%2F1%20x"));
    assert_eq!(out, "instance ctr/1 x removed from service web (serial 12, in every worker after 0.4 ms)\n");

    for (state, said) in [("healthy", "forced healthy"), ("unhealthy", "forced unhealthy"), ("auto", "back to its health check")] {
        let (r, out, got) = one(&["instance", "health", "web", "web-b", state], 200, CHANGED);
        assert_eq!(r, Ok(()));
        assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/v1/services/web/instances/web-b/health"));
        assert_eq!(got.json(), json!({"state": state}));
        assert_eq!(out, format!("instance web-b of service web {said} (serial 12, in every worker after 0.4 ms)\n"));
    }
}

#[test]
fn daemon_errors_are_printed_as_they_come() {
    for (status, msg) in [(400, "bad address \"10.0.0.300\""), (404, "no service named web"), (409, "service web exists")] {
        let body: &'static str = Box::leak(json!({"error": msg}).to_string().into_boxed_str());
        let (r, out, _) = one(&["service", "add", "web"], status, body);
        assert_eq!(r, Err(Failure::new(msg)), "{status}");
        assert_eq!(out, "");
    }
    // No JSON error: the status says it.
    let (r, _, _) = one(&["stats"], 500, "oops");
    assert_eq!(r, Err(Failure::new("kdns answered 500 Whatever to GET /v1/stats")));
    // A 2xx that is not JSON.
    let (r, _, _) = one(&["records", "list"], 200, "<html>");
    assert!(r.unwrap_err().0.starts_with("kdns sent invalid JSON for GET /v1/records"));
}

#[test]
fn every_command_prints_the_daemons_json_with_json() {
    let stats = r#"{"version": "0.1.0", "totals": {"workers": 1}}"#;
    for (args, answer) in [
        (&["stats", "--json"][..], stats),
        (&["backends", "--json"][..], r#"[{"address": "10.0.0.1:53", "state": "up"}]"#),
        (&["cache", "flush", "--json"][..], r#"{"flushed_workers": 2, "workers": 2}"#),
        (&["records", "list", "--json"][..], RECORDS),
        (&["--json", "records", "add", "a.kdns", "A", "10.0.0.1"][..], CHANGED),
        (&["records", "rm", "a.kdns", "--json"][..], CHANGED),
        (&["service", "add", "web", "--json"][..], CHANGED),
        (&["service", "rm", "web", "--json"][..], CHANGED),
        (&["instance", "add", "web", "a", "10.0.0.1", "--json"][..], r#"{"serial": 3, "propagated_ms": 0.2, "number": 1}"#),
        (&["instance", "rm", "web", "a", "--json"][..], CHANGED),
        (&["instance", "health", "web", "a", "auto", "--json"][..], CHANGED),
    ] {
        let (r, out, _) = one(args, 200, answer);
        assert_eq!(r, Ok(()), "{args:?}");
        let want: Value = serde_json::from_str(answer).unwrap();
        assert_eq!(out, format!("{}\n", serde_json::to_string_pretty(&want).unwrap()), "{args:?}");
    }
}

#[test]
fn cache_flush_that_misses_workers_prints_then_fails() {
    let (r, out, got) = one(&["cache", "flush"], 200, r#"{"flushed_workers": 1, "workers": 3}"#);
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/v1/cache/flush"));
    assert_eq!(out, "cache flush sent to 1 of 3 workers\n");
    assert!(r.unwrap_err().0.contains("some workers could not be reached"));
}

#[test]
fn no_daemon_behind_the_socket() {
    let tmp = temp_dir();
    let s = tmp.path().join("none.sock");
    let (r, out) = ctl(&["--socket", s.to_str().unwrap(), "records", "list"]);
    assert!(r.unwrap_err().0.contains("no such socket (is kdns running?"));
    assert_eq!(out, "");
}

// ---- TCP with a token ----

#[test]
fn tcp_with_a_token_file() {
    let tmp = temp_dir();
    let tf = tmp.path().join("token");
    std::fs::write(&tf, "  s3cret\n").unwrap();
    let (addr, t) = tcp_daemon(vec![(200, CHANGED)]);
    let url = format!("http://{addr}");
    let (r, out) = ctl(&["--url", &url, "--token-file", tf.to_str().unwrap(), "service", "add", "web", "--ttl", "7"]);
    assert_eq!(r, Ok(()));
    assert_eq!(out, "service web added (serial 12, in every worker after 0.4 ms)\n");
    let got = t.join().unwrap().remove(0);
    assert_eq!((got.method.as_str(), got.path.as_str()), ("POST", "/v1/services"));
    assert_eq!(got.header("Authorization"), Some("Bearer s3cret"));
    assert_eq!(got.header("Host"), Some(addr.to_string().as_str()));
    assert_eq!(got.json(), json!({"name": "web", "ttl": 7}));
}

#[test]
fn tcp_token_from_the_environment_and_a_url_prefix() {
    let (addr, t) = tcp_daemon(vec![(200, r#"{"status": "ok", "serial": 1}"#)]);
    let url = format!("http://{addr}/kdns/");
    let env = Env { socket: Some("/ignored.sock".into()), token: Some("env-token".into()) };
    let (r, _) = ctl_env(&["--url", &url, "instance", "rm", "web", "a"], env);
    assert_eq!(r, Ok(()));
    let got = t.join().unwrap().remove(0);
    assert_eq!(got.path, "/kdns/v1/services/web/instances/a");
    assert_eq!(got.header("Authorization"), Some("Bearer env-token"));
}

#[test]
fn tcp_401_says_the_token_was_refused() {
    let (addr, t) = tcp_daemon(vec![(401, r#"{"error": "bad token"}"#), (401, r#"{"error": "missing token"}"#)]);
    let url = format!("http://{addr}");
    let env = Env { token: Some("wrong".into()), ..Env::default() };
    let (r, out) = ctl_env(&["--url", &url, "stats"], env);
    assert_eq!(r, Err(Failure::new("the daemon refused the token (401)")));
    assert_eq!(out, "");
    let (r, _) = ctl(&["--url", &url, "records", "list"]);
    assert_eq!(
        r,
        Err(Failure::new("the daemon refused the request without a token (401): pass --token-file PATH or set KDNS_CONTROL_TOKEN"))
    );
    let got = t.join().unwrap();
    assert_eq!(got[0].header("Authorization"), Some("Bearer wrong"));
    assert_eq!(got[1].header("Authorization"), None);
}

#[test]
fn tcp_nobody_listening() {
    // A port that was free a moment ago.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (r, _) = ctl(&["--url", &format!("http://{addr}"), "stats"]);
    let m = r.unwrap_err().0;
    assert!(m.starts_with(&format!("cannot reach kdns at http://{addr}: connection refused")), "{m}");
}
