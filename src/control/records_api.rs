//! The records API: `/v1/records` and `/v1/services/...` (see
//! `docs/control-api.md`). Bodies are JSON objects; unknown fields are
//! refused; every error names the field, service, instance or record.

use std::io::Read;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tiny_http::Request;

use kdns_api::records::{CheckDef, InstanceDef, ModeName, PortDef, RecordData, RecordDef, ServiceDef};
use kdns_api::view::{Change, Changed, ForcedHealth};
use kdns_api::{Error, ErrorKind};

use super::Reply;
use crate::records::store::Store;

/// Largest request body read.
const MAX_BODY: u64 = 1 << 20;

/// The endpoints, with their path parameters.
enum Endpoint {
    Records,
    Services,
    Service(String),
    Instances(String),
    Instance(String, String),
    Health(String, String),
}

/// `%XX` decoding of a path segment or query value (`+` stays `+`).
fn pct_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn endpoint(path: &str) -> Option<Result<Endpoint, Reply>> {
    if path == "/v1/records" {
        return Some(Ok(Endpoint::Records));
    }
    if path == "/v1/services" {
        return Some(Ok(Endpoint::Services));
    }
    let rest = path.strip_prefix("/v1/services/")?;
    let segs: Option<Vec<String>> = rest.split('/').map(pct_decode).collect();
    let Some(segs) = segs else { return Some(Err(Reply::error(400, format!("bad percent-encoding in {path}")))) };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    Some(match s[..] {
        [n] if !n.is_empty() => Ok(Endpoint::Service(n.into())),
        [n, "instances"] if !n.is_empty() => Ok(Endpoint::Instances(n.into())),
        [n, "instances", id] if !n.is_empty() && !id.is_empty() => Ok(Endpoint::Instance(n.into(), id.into())),
        [n, "instances", id, "health"] if !n.is_empty() && !id.is_empty() => Ok(Endpoint::Health(n.into(), id.into())),
        _ => Err(Reply::error(404, format!("no such endpoint: {path} (see docs/control-api.md)"))),
    })
}

/// Answers `rq` if `path` is a records endpoint (and the records plane
/// runs); `None` otherwise.
pub(super) fn route(store: Option<&Store>, rq: &mut Request, path: &str) -> Option<Reply> {
    let store = store?;
    if path == "/v1/cluster" {
        if rq.method().as_str() != "GET" {
            return Some(Reply::not_allowed("GET", rq.method(), path));
        }
        return Some(match store.cluster_view() {
            Some(v) => Reply::json(200, &v),
            None => Reply::error(404, "no cluster: [cluster] etcd_endpoints is empty (see docs/cluster.md)"),
        });
    }
    let ep = match endpoint(path)? {
        Ok(e) => e,
        Err(r) => return Some(r),
    };
    let allow = match ep {
        Endpoint::Records => "GET, POST, DELETE",
        Endpoint::Services | Endpoint::Instances(_) | Endpoint::Health(..) => "POST",
        Endpoint::Service(_) | Endpoint::Instance(..) => "DELETE",
    };
    let method = rq.method().as_str().to_string();
    if !allow.split(", ").any(|m| m == method) {
        return Some(Reply::not_allowed(allow, rq.method(), path));
    }
    let r = match (method.as_str(), ep) {
        ("GET", Endpoint::Records) => return Some(Reply::json(200, &store.view())),
        ("POST", Endpoint::Records) => body(rq).and_then(|b| record_def(&b)).and_then(|d| store.add_record(&d)).map(|c| changed(c, None)),
        ("DELETE", Endpoint::Records) => {
            let url = rq.url().to_string();
            query(&url)
                .and_then(|q| {
                    let name = q.iter().find(|(k, _)| k == "name").map(|(_, v)| v.as_str());
                    let name =
                        name.filter(|n| !n.is_empty()).ok_or_else(|| bad("name: required (DELETE /v1/records?name=NAME[&type=TYPE])"))?;
                    let t = q.iter().find(|(k, _)| k == "type").map(|(_, v)| v.as_str()).filter(|t| !t.is_empty());
                    store.delete_records(name, t)
                })
                .map(|c| changed(c, None))
        }
        (_, Endpoint::Services) => body(rq).and_then(|b| service_def(&b)).and_then(|d| store.add_service(&d)).map(|c| changed(c, None)),
        (_, Endpoint::Service(n)) => store.delete_service(&n).map(|c| changed(c, None)),
        (_, Endpoint::Instances(n)) => body(rq)
            .and_then(|b| {
                only(&b, &["id", "addrs"])?;
                Ok(InstanceDef { id: req(&b, "id")?, addrs: req(&b, "addrs")? })
            })
            .and_then(|d| store.add_instance(&n, &d))
            .map(|(c, number)| changed(c, Some(number))),
        (_, Endpoint::Instance(n, id)) => store.delete_instance(&n, &id).map(|c| changed(c, None)),
        (_, Endpoint::Health(n, id)) => body(rq)
            .and_then(|b| {
                only(&b, &["state"])?;
                Ok(ForcedHealth::parse(&req::<String>(&b, "state")?)?)
            })
            .and_then(|s| store.set_health(&n, &id, s))
            .map(|c| changed(c, None)),
        (_, Endpoint::Records) => return Some(Reply::not_allowed(allow, rq.method(), path)),
    };
    Some(r.unwrap_or_else(|e| Reply::error(status(e.kind), e.msg)))
}

/// The HTTP status of a refused request: the one place that decides it.
fn status(kind: ErrorKind) -> u16 {
    match kind {
        ErrorKind::Invalid => 400,
        ErrorKind::NotFound => 404,
        ErrorKind::Conflict => 409,
        ErrorKind::Internal => 500,
        ErrorKind::Unavailable => 503,
    }
}

fn changed(change: Change, number: Option<usize>) -> Reply {
    Reply::json(200, &Changed { change, number })
}

fn bad(msg: impl Into<String>) -> Error {
    Error::invalid(msg)
}

/// The request body as a JSON object.
fn body(rq: &mut Request) -> Result<Map<String, Value>, Error> {
    let mut buf = Vec::new();
    rq.as_reader().take(MAX_BODY + 1).read_to_end(&mut buf).map_err(|e| bad(format!("body: cannot read: {e}")))?;
    if buf.len() as u64 > MAX_BODY {
        return Err(bad(format!("body: larger than {MAX_BODY} bytes")));
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(bad("body: a JSON object is expected"));
    }
    match serde_json::from_slice::<Value>(&buf) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("body: a JSON object is expected")),
        Err(e) => Err(bad(format!("body: not JSON: {e}"))),
    }
}

/// Refuses fields not in `allowed`.
fn only(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), Error> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!("{k}: unknown field (expected {})", allowed.join(", ")))),
        None => Ok(()),
    }
}

/// An optional field (`null` is absent).
fn opt<T: DeserializeOwned>(m: &Map<String, Value>, key: &str) -> Result<Option<T>, Error> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| bad(format!("{key}: {e}"))),
    }
}

/// A required field.
fn req<T: DeserializeOwned>(m: &Map<String, Value>, key: &str) -> Result<T, Error> {
    opt(m, key)?.ok_or_else(|| bad(format!("{key}: required")))
}

fn record_def(b: &Map<String, Value>) -> Result<RecordDef, Error> {
    only(b, &["name", "type", "data", "ttl"])?;
    let data = match b.get("data") {
        None | Some(Value::Null) => return Err(bad("data: required")),
        Some(Value::String(s)) => RecordData::One(s.clone()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            RecordData::Many(a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        }
        Some(_) => return Err(bad("data: a string is expected (or a list of strings for TXT)")),
    };
    Ok(RecordDef { name: req(b, "name")?, rtype: req(b, "type")?, data, ttl: opt(b, "ttl")? })
}

fn service_def(b: &Map<String, Value>) -> Result<ServiceDef, Error> {
    only(b, &["name", "mode", "ttl", "ports", "check", "instances"])?;
    Ok(ServiceDef {
        name: req(b, "name")?,
        mode: opt::<ModeName>(b, "mode")?.unwrap_or_default(),
        ttl: opt(b, "ttl")?,
        ports: opt::<Vec<PortDef>>(b, "ports")?.unwrap_or_default(),
        check: opt::<CheckDef>(b, "check")?,
        instances: opt::<Vec<InstanceDef>>(b, "instances")?.unwrap_or_default(),
    })
}

/// The query string's pairs, decoded.
fn query(url: &str) -> Result<Vec<(String, String)>, Error> {
    let Some((_, q)) = url.split_once('?') else { return Ok(Vec::new()) };
    let q = q.split('#').next().unwrap_or("");
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let v = v.replace('+', " ");
            match (pct_decode(k), pct_decode(&v)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(bad(format!("bad percent-encoding in the query string: {p}"))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use kdns_core::wire::Rtype;
    use serde_json::{json, Value};

    use super::super::{spawn_with, Extras};
    use crate::records::file;
    use crate::records::store::tests::{fake_worker, lookup, temp_dir};
    use crate::records::store::{Store, StoreConfig};

    struct Resp {
        status: u16,
        head: String,
        body: Value,
    }

    fn exchange(mut s: impl Read + Write, method: &str, path: &str, body: Option<&Value>, auth: Option<&str>) -> Resp {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let auth = auth.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(s, "{method} {path} HTTP/1.1\r\nHost: kdns\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("end of headers");
        let head = String::from_utf8(raw[..split].to_vec()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut b = raw[split + 4..].to_vec();
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            let mut out = Vec::new();
            let mut rest = &b[..];
            loop {
                let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
                let size = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&rest[eol + 2..eol + 2 + size]);
                rest = &rest[eol + 2 + size + 2..];
            }
            b = out;
        }
        let body = serde_json::from_slice(&b).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&b)));
        Resp { status, head, body }
    }

    fn unix(sock: &Path, method: &str, path: &str, body: Option<Value>) -> Resp {
        let s = UnixStream::connect(sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        exchange(s, method, path, body.as_ref(), None)
    }

    const FILE: &str = r#"
domains = ["kdns"]
[[service]]
name = "web"
ports = [{ name = "http", proto = "tcp", port = 8080 }]
instances = [{ id = "c1", addrs = ["10.0.0.1", "fd00::1"] }, { id = "c2", addrs = ["10.0.0.2"] }]
[[record]]
name = "db.kdns"
type = "A"
data = "10.5.0.1"
ttl = 60
"#;

    #[test]
    fn http_round_trip() {
        let tmp = temp_dir();
        let dir = tmp.path();
        let sock = dir.join("control.sock");
        let (w0, cur0) = fake_worker(0);
        let (w1, _cur1) = fake_worker(1);
        let workers = vec![w0, w1];
        let cfg = StoreConfig {
            domains: vec![],
            default_ttl: 10,
            file: Some(dir.join("records.toml")),
            state_file: Some(dir.join("records.json")),
        };
        let store = Arc::new(Store::new(cfg, workers.clone(), file::parse(FILE).unwrap(), None));
        let _ = store.publish_initial();
        let tok = "t0ken-42";
        let server = spawn_with(
            &sock,
            None,
            workers,
            super::super::DaemonInfo {
                version: "test".into(),
                started: std::time::Instant::now(),
                listen: vec![],
                backends: vec![],
                pid: 1,
                generation: 1,
                handover: None,
                xdp: vec![],
                limits: kdns_core::engine::ClientLimits::default(),
                xdp_client_rate: Default::default(),
                tcp_limits: (1024, 64),
                source_ports: 16,
            },
            Extras { records: Some(Arc::clone(&store)), tcp: Some(("127.0.0.1:0".parse().unwrap(), tok.into())) },
        )
        .unwrap();

        // GET: everything, in the documented shape.
        let r = unix(&sock, "GET", "/v1/records", None);
        assert_eq!(r.status, 200);
        let v = r.body;
        assert_eq!(v["serial"], 1);
        assert_eq!(v["domains"], json!(["kdns"]));
        assert_eq!(v["default_ttl"], 10);
        let web = &v["services"][0];
        assert_eq!(web["name"], "web");
        assert_eq!(web["mode"], "all");
        assert_eq!(web["ttl"], 10);
        assert_eq!(web["ports"], json!([{"name": "http", "proto": "tcp", "port": 8080}]));
        assert_eq!(web["check"], Value::Null);
        assert_eq!(web["source"], "file");
        let i = &web["instances"][0];
        assert_eq!(i["number"], 1);
        assert_eq!(i["id"], "c1");
        assert_eq!(i["addrs"], json!(["10.0.0.1", "fd00::1"]));
        assert_eq!((i["healthy"].as_bool(), i["health"].as_str()), (Some(true), Some("up")));
        assert_eq!((i["checks_ok"].as_u64(), i["checks_failed"].as_u64()), (Some(0), Some(0)));
        assert_eq!(v["records"], json!([{"name": "db.kdns", "type": "A", "ttl": 60, "data": "10.5.0.1", "source": "file"}]));

        // Services and instances.
        let r = unix(
            &sock,
            "POST",
            "/v1/services",
            Some(json!({"name": "api", "mode": "random-one", "ttl": 5, "ports": [{"name": "grpc", "proto": "tcp", "port": 9000}],
                        "check": {"kind": "tcp", "interval_ms": 2000}})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["serial"], 2);
        assert_eq!(r.body["workers_acked"], 2);
        let r = unix(&sock, "POST", "/v1/services/api/instances", Some(json!({"id": "a1", "addrs": ["10.1.0.1"]})));
        assert_eq!((r.status, r.body["number"].as_u64(), r.body["serial"].as_u64()), (200, Some(1), Some(3)), "{}", r.body);
        let r = unix(&sock, "POST", "/v1/services/web/instances", Some(json!({"id": "c3", "addrs": ["10.0.0.3"]})));
        assert_eq!((r.status, r.body["number"].as_u64()), (200, Some(3)), "{}", r.body);
        // One loop turn later every worker answers with it.
        assert_eq!(lookup(&cur0.lock().unwrap(), "web-3.kdns", Rtype::A).1, ["10.0.0.3"]);
        assert_eq!(lookup(&cur0.lock().unwrap(), "api.kdns", Rtype::A).1, ["10.1.0.1"]);
        let v = unix(&sock, "GET", "/v1/records", None).body;
        let api = v["services"].as_array().unwrap().iter().find(|s| s["name"] == "api").unwrap().clone();
        assert_eq!(api["source"], "runtime");
        assert_eq!(api["check"], json!({"kind": "tcp", "port": 9000, "interval_ms": 2000, "timeout_ms": 500, "rise": 2, "fall": 2}));
        assert_eq!(v["services"][0]["instances"][2]["source"], "runtime");

        // Health override.
        let r = unix(&sock, "POST", "/v1/services/web/instances/c1/health", Some(json!({"state": "unhealthy"})));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(lookup(&store.snapshot(), "web.kdns", Rtype::A).1, ["10.0.0.2", "10.0.0.3"]);
        let v = unix(&sock, "GET", "/v1/records", None).body;
        assert_eq!(v["services"][0]["instances"][0]["health"], "forced-down");
        assert_eq!(unix(&sock, "POST", "/v1/services/web/instances/c1/health", Some(json!({"state": "auto"}))).status, 200);

        // Records.
        let r = unix(&sock, "POST", "/v1/records", Some(json!({"name": "txt.kdns", "type": "TXT", "data": ["a", "b"], "ttl": 30})));
        assert_eq!(r.status, 200, "{}", r.body);
        let r = unix(&sock, "POST", "/v1/records", Some(json!({"name": "cache.kdns", "type": "a", "data": "10.6.0.1"})));
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(lookup(&store.snapshot(), "cache.kdns", Rtype::A).1, ["10.6.0.1"]);
        let v = unix(&sock, "GET", "/v1/records", None).body;
        assert_eq!(v["records"][1], json!({"name": "txt.kdns", "type": "TXT", "ttl": 30, "data": ["a", "b"], "source": "runtime"}));
        let r = unix(&sock, "DELETE", "/v1/records?name=cache.kdns&type=A", None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(unix(&sock, "DELETE", "/v1/records?name=txt.kdns", None).status, 200);
        assert_eq!(lookup(&store.snapshot(), "cache.kdns", Rtype::A).0, 3);

        // Deletes.
        assert_eq!(unix(&sock, "DELETE", "/v1/services/web/instances/c3", None).status, 200);
        assert_eq!(unix(&sock, "DELETE", "/v1/services/api", None).status, 200);
        assert_eq!(lookup(&store.snapshot(), "api.kdns", Rtype::A).0, 3);

        // Errors: status and a message naming the field or the thing.
        let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
            ("POST", "/v1/records", Some(json!({"name": "x.kdns", "type": "A"})), 400, "data: required"),
            (
                "POST",
                "/v1/records",
                Some(json!({"name": "x.kdns", "type": "A", "data": "nope"})),
                400,
                "data: 'nope' is not an IPv4 address",
            ),
            ("POST", "/v1/records", Some(json!({"name": "x.kdns", "type": "A", "data": "10.0.0.1", "ttl": "x"})), 400, "ttl:"),
            (
                "POST",
                "/v1/records",
                Some(json!({"name": "x.kdns", "type": "A", "data": "10.0.0.1", "prio": 1})),
                400,
                "prio: unknown field",
            ),
            (
                "POST",
                "/v1/records",
                Some(json!({"name": "x.other", "type": "A", "data": "10.0.0.1"})),
                400,
                "under none of the local domains",
            ),
            ("POST", "/v1/records", Some(json!({"name": "db.kdns", "type": "A", "data": "10.5.0.1"})), 409, "already exists"),
            ("POST", "/v1/records", Some(json!({"name": "db.kdns", "type": "CNAME", "data": "web.kdns"})), 409, "CNAME"),
            ("POST", "/v1/records", Some(json!(["not", "an", "object"])), 400, "body: a JSON object is expected"),
            ("POST", "/v1/records", None, 400, "body:"),
            ("DELETE", "/v1/records", None, 400, "name: required"),
            ("DELETE", "/v1/records?name=db.kdns", None, 409, "records file"),
            ("DELETE", "/v1/records?name=nope.kdns", None, 404, "no record nope.kdns"),
            ("POST", "/v1/services", Some(json!({"name": "web", "mode": "round-robin"})), 400, "mode:"),
            ("POST", "/v1/services", Some(json!({"mode": "all"})), 400, "name: required"),
            ("POST", "/v1/services", Some(json!({"name": "bad name"})), 400, "name: 'bad name'"),
            ("POST", "/v1/services", Some(json!({"name": "db"})), 409, "'db.kdns' is defined twice"),
            ("POST", "/v1/services", Some(json!({"name": "x", "check": {"kind": "tcp"}})), 400, "check.port"),
            ("DELETE", "/v1/services/web", None, 409, "defined in the records file"),
            ("DELETE", "/v1/services/nope", None, 404, "no service 'nope'"),
            ("POST", "/v1/services/nope/instances", Some(json!({"id": "x", "addrs": ["10.0.0.1"]})), 404, "no service 'nope'"),
            ("POST", "/v1/services/web/instances", Some(json!({"id": "c1", "addrs": ["10.0.0.1"]})), 409, "already exists"),
            ("POST", "/v1/services/web/instances", Some(json!({"id": "c4", "addrs": ["10.0.0.x"]})), 400, "addrs[0]: '10.0.0.x'"),
            ("POST", "/v1/services/web/instances", Some(json!({"id": "c4"})), 400, "addrs: required"),
            ("POST", "/v1/services/web/instances", Some(json!({"id": "c4", "addrs": "10.0.0.4"})), 400, "addrs:"),
            ("DELETE", "/v1/services/web/instances/c1", None, 409, "records file"),
            ("DELETE", "/v1/services/web/instances/c9", None, 404, "no instance 'c9'"),
            ("POST", "/v1/services/web/instances/c9/health", Some(json!({"state": "auto"})), 404, "no instance 'c9'"),
            ("POST", "/v1/services/web/instances/c1/health", Some(json!({"state": "ill"})), 400, "state: 'ill'"),
            ("POST", "/v1/services/web/instances/c1/health", Some(json!({})), 400, "state: required"),
            ("GET", "/v1/services/web/oops", None, 404, "no such endpoint"),
        ];
        for (m, p, b, status, msg) in cases {
            let r = unix(&sock, m, p, b.clone());
            assert_eq!(r.status, status, "{m} {p} {b:?}: {}", r.body);
            let e = r.body["error"].as_str().unwrap_or_else(|| panic!("{m} {p}: {}", r.body));
            assert!(e.contains(msg), "{m} {p} {b:?}: {e:?} lacks {msg:?}");
        }
        // Wrong methods.
        let r = unix(&sock, "PUT", "/v1/records", None);
        assert_eq!(r.status, 405);
        assert!(r.head.contains("Allow: GET, POST, DELETE"), "{}", r.head);
        assert_eq!(unix(&sock, "GET", "/v1/services/web", None).status, 405);
        // The existing endpoints still work.
        assert_eq!(unix(&sock, "GET", "/v1/health", None).status, 200);

        // The TCP listener: the same API, with the bearer token only.
        let addr = server.control_tcp_addr().unwrap();
        let tcp = |method: &str, path: &str, auth: Option<&str>| {
            let s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            exchange(s, method, path, None, auth)
        };
        let r = tcp("GET", "/v1/records", None);
        assert_eq!(r.status, 401);
        assert!(r.head.contains("WWW-Authenticate: Bearer"), "{}", r.head);
        assert!(r.body["error"].as_str().unwrap().contains("token"));
        assert_eq!(tcp("GET", "/v1/records", Some("wrong")).status, 401);
        assert_eq!(tcp("GET", "/v1/health", Some("t0ken-4")).status, 401);
        assert_eq!(tcp("GET", "/v1/stats", None).status, 401);
        let r = tcp("GET", "/v1/records", Some(tok));
        assert_eq!(r.status, 200);
        assert_eq!(r.body["services"][0]["name"], "web");
        let r = tcp("DELETE", "/v1/records?name=nope.kdns", Some(tok));
        assert_eq!(r.status, 404);

        // Everything changed at run time is in the state file.
        let st = crate::records::state::load(&dir.join("records.json")).unwrap().unwrap();
        assert_eq!(st.serial, store.snapshot().serial());
        assert_eq!(st.runtime.health, vec![]);
        server.shutdown();
    }

    #[test]
    fn percent_decoding_and_queries() {
        assert_eq!(super::pct_decode("a%2Fb%3a").as_deref(), Some("a/b:"));
        assert_eq!(super::pct_decode("%zz"), None);
        assert_eq!(super::pct_decode("%4"), None);
        let q = super::query("/v1/records?name=db.kdns&type=A&x").unwrap();
        assert_eq!(q, vec![("name".into(), "db.kdns".into()), ("type".into(), "A".into()), ("x".into(), String::new())]);
        assert!(super::query("/v1/records?name=%G1").is_err());
    }
}
