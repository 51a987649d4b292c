//! `[cluster]` checked: endpoints, the host id (the hostname unless
//! given), TLS files and the password read from its file (a
//! [`Secret`], never in `Debug` output or a log line).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ClusterSection, ConfigError, Secret};

/// The validated `[cluster]` settings (present when etcd endpoints are given).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// `http://host:port` or `https://host:port`.
    pub endpoints: Vec<String>,
    /// This host's id.
    pub host: String,
    /// The key prefix, without a trailing slash.
    pub prefix: String,
    /// The TTL asked for this host's lease.
    pub lease_ttl: Duration,
    /// Where the records learnt from etcd are kept.
    pub snapshot_file: Option<PathBuf>,
    /// TLS: CA certificate (PEM), client certificate and key (PEM).
    pub tls: Option<Tls>,
    /// User and password.
    pub auth: Option<(String, Secret)>,
    /// Connection and request timeout.
    pub timeout: Duration,
}

/// TLS material, read at start.
#[derive(Clone)]
pub struct Tls {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Secret)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("ca", &self.ca.is_some()).field("identity", &self.identity.is_some()).finish()
    }
}

/// The hostname (/proc/sys/kernel/hostname), the default host id.
fn hostname() -> Option<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let h = h.trim();
    (!h.is_empty()).then(|| h.to_string())
}

fn read(key: &str, p: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(p).map_err(|e| ConfigError::new(format!("cluster.{key}"), format!("{p}: cannot read: {e}")))
}

/// `[cluster]`; `None` while `etcd_endpoints` is empty.
pub fn settle(c: &ClusterSection) -> Result<Option<ClusterSettings>, ConfigError> {
    if c.etcd_endpoints.is_empty() {
        return Ok(None);
    }
    let mut endpoints = Vec::new();
    let mut https = false;
    for (i, e) in c.etcd_endpoints.iter().enumerate() {
        let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://").inspect(|_| https = true));
        match rest {
            Some(r) if !r.is_empty() && !r.contains(['/', ' ', '@']) => endpoints.push(e.clone()),
            _ => {
                return Err(ConfigError::new(
                    format!("cluster.etcd_endpoints[{i}]"),
                    format!("'{e}': expected http://host:port or https://host:port"),
                ))
            }
        }
    }
    let host = match c.host_id.as_str() {
        "" => hostname().ok_or_else(|| ConfigError::new("cluster.host_id", "no hostname to default to: set it"))?,
        h => h.to_string(),
    };
    if host.len() > 253 || host.chars().any(|ch| ch.is_whitespace() || ch.is_control() || ch == '/') {
        return Err(ConfigError::new("cluster.host_id", format!("{host:?}: no spaces, control characters or '/', 253 bytes at most")));
    }
    let prefix = c.prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/') || prefix.len() < 2 {
        return Err(ConfigError::new("cluster.prefix", format!("'{}': expected an absolute key prefix such as /kdns/v1", c.prefix)));
    }
    let tls = if c.ca_file.is_empty() && c.cert_file.is_empty() && c.key_file.is_empty() {
        None
    } else {
        let ca = (!c.ca_file.is_empty()).then(|| read("ca_file", &c.ca_file)).transpose()?;
        let identity = match (c.cert_file.as_str(), c.key_file.as_str()) {
            ("", "") => None,
            ("", _) | (_, "") => return Err(ConfigError::new("cluster.cert_file", "cert_file and key_file go together")),
            (cert, key) => {
                let k = String::from_utf8(read("key_file", key)?).map_err(|_| ConfigError::new("cluster.key_file", "not PEM text"))?;
                Some((read("cert_file", cert)?, Secret::new(k)))
            }
        };
        Some(Tls { ca, identity })
    };
    if tls.is_some() && !https {
        return Err(ConfigError::new("cluster.ca_file", "TLS files are set but no endpoint is https://"));
    }
    let auth = match (c.username.as_str(), c.password_file.as_str()) {
        ("", "") => None,
        ("", _) | (_, "") => return Err(ConfigError::new("cluster.username", "username and password_file go together")),
        (u, p) => {
            let text = String::from_utf8(read("password_file", p)?)
                .map_err(|_| ConfigError::new("cluster.password_file", format!("{p}: not UTF-8 text")))?;
            let pw = text.trim_end_matches(['\n', '\r']).to_string();
            if pw.is_empty() {
                return Err(ConfigError::new("cluster.password_file", format!("{p}: empty")));
            }
            Some((u.to_string(), Secret::new(pw)))
        }
    };
    let path = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
    Ok(Some(ClusterSettings {
        endpoints,
        host,
        prefix,
        lease_ttl: Duration::from_secs(c.lease_ttl_s),
        snapshot_file: path(&c.snapshot_file),
        tls,
        auth,
        timeout: Duration::from_millis(c.connect_timeout_ms),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: &str) -> ClusterSection {
        crate::config::parse(toml).expect("config").cluster
    }

    #[test]
    fn off_without_endpoints_and_checked_with() {
        assert!(settle(&section("")).unwrap().is_none());
        let c = settle(&section("[cluster]\netcd_endpoints = [\"http://10.0.0.1:2379\"]\nhost_id = \"h1\"\n")).unwrap().unwrap();
        assert_eq!((c.host.as_str(), c.prefix.as_str(), c.lease_ttl), ("h1", "/kdns/v1", Duration::from_secs(5)));
        for (toml, key) in [
            ("etcd_endpoints = [\"10.0.0.1:2379\"]", "cluster.etcd_endpoints[0]"),
            ("etcd_endpoints = [\"http://a:1\"]\nhost_id = \"a/b\"", "cluster.host_id"),
            ("etcd_endpoints = [\"http://a:1\"]\nprefix = \"kdns\"", "cluster.prefix"),
            ("etcd_endpoints = [\"http://a:1\"]\nusername = \"u\"", "cluster.username"),
            ("etcd_endpoints = [\"http://a:1\"]\nca_file = \"/dev/null\"", "cluster.ca_file"),
        ] {
            let e = settle(&section(&format!("[cluster]\n{toml}\n"))).unwrap_err();
            assert!(e.to_string().starts_with(key), "{toml}: {e}");
        }
    }

    /// The password is read from its file and shown nowhere: not in the
    /// settings' Debug (what --check-config and the logs would print).
    #[test]
    fn the_password_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cr3t-pw\n").unwrap();
        let toml = format!(
            "[cluster]\netcd_endpoints = [\"http://a:1\"]\nhost_id = \"h\"\nusername = \"root\"\npassword_file = \"{}\"\n",
            f.display()
        );
        let c = settle(&section(&toml)).unwrap().unwrap();
        let (user, pw) = c.auth.as_ref().unwrap();
        assert_eq!((user.as_str(), pw.expose()), ("root", "s3cr3t-pw"));
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<secret>"), "{shown}");
    }
}
