//! A minimal HTTP/1.1 client over a Unix socket or TCP: one request per
//! connection (`Connection: close`), the response read to the end, then
//! parsed. Enough for the daemon's control API, nothing more.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A parsed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Reason phrase, e.g. "OK".
    pub reason: String,
    /// Header fields in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// No blank line ends the header block.
    NoEndOfHeaders,
    /// The status line is not `HTTP/1.x NNN reason`.
    BadStatusLine(String),
    /// A header line without a colon, or not UTF-8.
    BadHeader(String),
    /// `Content-Length` is not a number.
    BadContentLength(String),
    /// Fewer body bytes than `Content-Length` says.
    TruncatedBody {
        /// Bytes announced.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// A malformed chunk or missing chunk terminator.
    BadChunk(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::NoEndOfHeaders => write!(f, "response ends inside the headers"),
            ParseError::BadStatusLine(l) => write!(f, "bad status line {l:?}"),
            ParseError::BadHeader(l) => write!(f, "bad header line {l:?}"),
            ParseError::BadContentLength(v) => write!(f, "bad Content-Length {v:?}"),
            ParseError::TruncatedBody { expected, got } => write!(f, "body truncated: {got} of {expected} bytes"),
            ParseError::BadChunk(why) => write!(f, "bad chunked encoding: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Position of the first `needle` in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a complete response (the connection was read to its end).
pub fn parse_response(raw: &[u8]) -> Result<Response, ParseError> {
    let end = find(raw, b"\r\n\r\n").ok_or(ParseError::NoEndOfHeaders)?;
    let head = &raw[..end];
    let rest = &raw[end + 4..];
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));

    let status_line = lines.next().unwrap_or_default();
    let status_str = String::from_utf8_lossy(status_line).into_owned();
    let bad_status = || ParseError::BadStatusLine(status_str.clone());
    let mut parts = status_str.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    let reason = parts.next().unwrap_or_default().to_string();
    if !version.starts_with("HTTP/1.") || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_status());
    }
    let status: u16 = code.parse().map_err(|_| bad_status())?;
    if !(100..=599).contains(&status) {
        return Err(bad_status());
    }

    let mut headers = Vec::new();
    for line in lines {
        let line = std::str::from_utf8(line).map_err(|_| ParseError::BadHeader(String::from_utf8_lossy(line).into_owned()))?;
        let (k, v) = line.split_once(':').ok_or_else(|| ParseError::BadHeader(line.to_string()))?;
        if k.is_empty() || k.contains(' ') {
            return Err(ParseError::BadHeader(line.to_string()));
        }
        headers.push((k.to_string(), v.trim().to_string()));
    }
    let mut resp = Response { status, reason, headers, body: Vec::new() };

    let chunked = resp.header("Transfer-Encoding").is_some_and(|te| te.split(',').any(|t| t.trim().eq_ignore_ascii_case("chunked")));
    resp.body = if chunked {
        dechunk(rest)?
    } else if let Some(cl) = resp.header("Content-Length") {
        let n: usize = cl.trim().parse().map_err(|_| ParseError::BadContentLength(cl.to_string()))?;
        if rest.len() < n {
            return Err(ParseError::TruncatedBody { expected: n, got: rest.len() });
        }
        rest[..n].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(resp)
}

/// Decodes a chunked body (RFC 9112 section 7.1); trailers are skipped.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::new();
    loop {
        let eol = find(rest, b"\r\n").ok_or_else(|| ParseError::BadChunk("missing chunk size line".into()))?;
        let line = std::str::from_utf8(&rest[..eol]).map_err(|_| ParseError::BadChunk("chunk size is not text".into()))?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).map_err(|_| ParseError::BadChunk(format!("bad chunk size {hex:?}")))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 {
            return Err(ParseError::BadChunk(format!("chunk of {size} bytes truncated")));
        }
        if &rest[size..size + 2] != b"\r\n" {
            return Err(ParseError::BadChunk("chunk not followed by CRLF".into()));
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The control Unix socket.
    Unix(PathBuf),
    /// The TCP control API at this URL.
    Tcp(Url),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "{}", p.display()),
            Target::Tcp(u) => write!(f, "{u}"),
        }
    }
}

/// An `http://HOST[:PORT][/PREFIX]` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or address, IPv6 without brackets.
    pub host: String,
    /// Port (80 if the URL has none).
    pub port: u16,
    /// Path prefix without a trailing `/` (usually empty), prepended to
    /// every request path.
    pub prefix: String,
}

impl Url {
    /// The `Host` header value: `host:port`, IPv6 in brackets.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
    }
}

/// Parses `http://HOST[:PORT][/PREFIX]`; HOST may be `[IPv6]`.
pub fn parse_url(s: &str) -> Result<Url, String> {
    let rest = match s.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err("https is not supported: kdns serves plain HTTP (put it behind a TLS proxy, or use ssh port forwarding)".into())
        }
        Some((scheme, _)) => return Err(format!("unsupported scheme {scheme:?}: use http://HOST:PORT")),
        None => return Err("expected http://HOST:PORT".into()),
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) {
        return Err("the URL must not have a query or fragment".into());
    }
    if hostport.contains('@') {
        return Err("credentials in the URL are not supported; use --token-file".into());
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unterminated [IPv6 address]")?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':').ok_or_else(|| format!("unexpected {p:?} after the address"))?)),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => return Err("put an IPv6 address in brackets: http://[::1]:PORT".into()),
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("missing or invalid host".into());
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("bad port {p:?}")),
        },
    };
    Ok(Url { host: host.to_string(), port, prefix: path.trim_end_matches('/').to_string() })
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'a str,
    /// Path and query, starting with `/`.
    pub path: &'a str,
    /// A JSON body, if any.
    pub body: Option<&'a [u8]>,
    /// Sent as `Authorization: Bearer TOKEN`.
    pub token: Option<&'a str>,
}

impl<'a> Request<'a> {
    /// A request without body or token.
    #[cfg(test)]
    pub fn new(method: &'a str, path: &'a str) -> Self {
        Request { method, path, body: None, token: None }
    }

    /// The request bytes; `host` is the `Host` header value.
    pub fn to_bytes(self, host: &str) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: kdns-ctl/{}\r\nAccept: application/json\r\n",
            self.method,
            self.path,
            env!("CARGO_PKG_VERSION")
        );
        if let Some(t) = self.token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        let body = self.body.unwrap_or_default();
        if self.body.is_some() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        out
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// The host name did not resolve.
    Resolve(io::Error),
    /// Connecting failed.
    Connect(io::Error),
    /// The exchange took longer than the timeout.
    Timeout,
    /// Writing or reading failed.
    Io(io::Error),
    /// The response was malformed.
    Parse(ParseError),
}

/// A connected stream of either kind.
trait Conn: Read + Write {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()>;
}

impl Conn for UnixStream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

impl Conn for TcpStream {
    fn set_timeouts(&self, read: Option<Duration>, write: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(read)?;
        self.set_write_timeout(write)
    }
}

/// Connects to `url`, trying each address it resolves to until `deadline`.
fn connect_tcp(url: &Url, deadline: Instant) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = (url.host.as_str(), url.port).to_socket_addrs().map_err(ClientError::Resolve)?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
    for a in addrs {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout);
        }
        match TcpStream::connect_timeout(&a, left) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return Err(ClientError::Timeout),
            Err(e) => last = e,
        }
    }
    Err(ClientError::Connect(last))
}

/// Sends `req` to `target` and returns the response, giving up after
/// `timeout` in all. With a TCP target, the URL's prefix is prepended to
/// the path.
pub fn send(target: &Target, req: &Request<'_>, timeout: Duration) -> Result<Response, ClientError> {
    let deadline = Instant::now() + timeout;
    match target {
        Target::Unix(path) => {
            let s = UnixStream::connect(path).map_err(ClientError::Connect)?;
            exchange(s, &req.to_bytes("kdns"), deadline, timeout)
        }
        Target::Tcp(url) => {
            let s = connect_tcp(url, deadline)?;
            let full = format!("{}{}", url.prefix, req.path);
            exchange(s, &Request { path: &full, ..*req }.to_bytes(&url.authority()), deadline, timeout)
        }
    }
}

/// Sends `method path` (no body) over the Unix socket `socket` and returns
/// the response, giving up after `timeout` in all.
#[cfg(test)]
pub fn request(socket: &Path, method: &str, path: &str, timeout: Duration) -> Result<Response, ClientError> {
    send(&Target::Unix(socket.to_path_buf()), &Request::new(method, path), timeout)
}

/// Writes the request, reads the response to its end, parses it.
fn exchange(mut s: impl Conn, req: &[u8], deadline: Instant, timeout: Duration) -> Result<Response, ClientError> {
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    };
    s.set_timeouts(None, Some(timeout)).map_err(ClientError::Io)?;
    s.write_all(req).map_err(io_err)?;
    let mut raw = Vec::with_capacity(16 * 1024);
    let mut buf = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout);
        }
        s.set_timeouts(Some(left), Some(left)).map_err(ClientError::Io)?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // The server may close after answering (e.g. 401) before it
            // read our body: what it sent is still the answer.
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => return Err(io_err(e)),
        }
    }
    parse_response(&raw).map_err(ClientError::Parse)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.reason, "OK");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, b"{\"status\":\"ok\"}");
    }

    #[test]
    fn content_length_ignores_extra_bytes_and_catches_truncation() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcdef").unwrap();
        assert_eq!(r.body, b"ab");
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
            Err(ParseError::TruncatedBody { expected: 10, got: 3 })
        );
        assert!(matches!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), Err(ParseError::BadContentLength(_))));
    }

    #[test]
    fn chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6;ext=1\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-Trailer: 1\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.body, b"Wikipedia in \r\n\r\nchunks.");
    }

    #[test]
    fn bad_chunks() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in ["zz\r\nab\r\n0\r\n\r\n", "10\r\nabc", "3\r\nabcX\r\n0\r\n\r\n", "3\r\nabc\r\n"] {
            let raw = format!("{head}{body}");
            assert!(matches!(parse_response(raw.as_bytes()), Err(ParseError::BadChunk(_))), "{body:?}");
        }
    }

    #[test]
    fn no_length_reads_to_end() {
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":\"x\"}\n").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"{\"error\":\"x\"}\n");
    }

    #[test]
    fn bad_status_lines() {
        for raw in [
            &b"SSH-2.0-OpenSSH\r\n\r\n"[..],
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 099 Low\r\n\r\n",
            b"\r\n\r\n",
        ] {
            assert!(matches!(parse_response(raw), Err(ParseError::BadStatusLine(_))), "{:?}", String::from_utf8_lossy(raw));
        }
        assert_eq!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n"), Err(ParseError::NoEndOfHeaders));
        assert!(matches!(parse_response(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"), Err(ParseError::BadHeader(_))));
        // A reason phrase is optional.
        assert_eq!(parse_response(b"HTTP/1.1 204\r\n\r\n").unwrap().status, 204);
    }

    #[test]
    fn request_bytes() {
        let r = Request::new("GET", "/v1/stats").to_bytes("kdns");
        let r = String::from_utf8(r).unwrap();
        assert!(r.starts_with("GET /v1/stats HTTP/1.1\r\nHost: kdns\r\n"), "{r}");
        assert!(r.ends_with("Content-Length: 0\r\nConnection: close\r\n\r\n"), "{r}");
        assert!(!r.contains("Authorization") && !r.contains("Content-Type"), "{r}");

        let body = br#"{"name":"web"}"#;
        let req = Request { method: "POST", path: "/v1/services", body: Some(body), token: Some("t0k") };
        let r = String::from_utf8(req.to_bytes("[::1]:9154")).unwrap();
        assert!(r.contains("Host: [::1]:9154\r\n"), "{r}");
        assert!(r.contains("Authorization: Bearer t0k\r\n"), "{r}");
        assert!(r.contains("Content-Type: application/json\r\nContent-Length: 14\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\n{\"name\":\"web\"}"), "{r}");
    }

    #[test]
    fn round_trip_over_a_socket() {
        use std::os::unix::net::UnixListener;
        let tmp = tempfile::Builder::new().prefix("kdns-ctl-http-").tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let l = UnixListener::bind(&path).unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            while find(&req, b"\r\n\r\n").is_none() {
                let n = c.read(&mut b).unwrap();
                req.extend_from_slice(&b[..n]);
            }
            c.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").unwrap();
            String::from_utf8(req).unwrap()
        });
        let r = request(&path, "POST", "/v1/cache/flush", Duration::from_secs(5)).unwrap();
        assert_eq!(r.body, b"{}");
        let req = t.join().unwrap();
        assert!(req.starts_with("POST /v1/cache/flush HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Connection: close\r\n"));

        // Nobody accepts: the timeout fires.
        let path2 = dir.join("slow.sock");
        let _ = std::fs::remove_file(&path2);
        let _l2 = UnixListener::bind(&path2).unwrap();
        // The outcome is a timeout error; the channel's deadline is only
        // there so that a client that hangs fails the test.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(request(&path2, "GET", "/", Duration::from_millis(200))));
        let r = rx.recv_timeout(Duration::from_secs(30)).expect("the request gives up by itself");
        assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
    }
}
