//! Several kdns hosts sharing records through a real etcd cluster
//! (`tests/cluster.rs`): [`Etcd`], three etcd members (Debian's
//! etcd-server) in a namespace of their own, and [`Host`], one kdns "host"
//! (server namespace with kdns and an Unbound, client namespace for dig)
//! joined to the etcd namespace by a veth pair of its own.
//!
//! ```text
//!  client ns --veth-- server ns (kdns, Unbound) --veth-- etcd ns
//!  10.53.X.2          10.53.X.1 | 10.53.Y.1              10.53.Y.2 (one Y per host)
//!                                                        members m1..m3: clients :23791..3,
//!                                                        peers 127.0.0.1:23801..3
//! ```
//!
//! Members, namespaces and temp dirs are removed on drop, also when a test
//! fails.

use std::collections::BTreeSet;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::*;

/// Members of every test cluster.
pub const MEMBERS: usize = 3;
/// The local domain of the hosts.
pub const DOMAIN: &str = "kdns";

fn client_port(i: usize) -> u16 {
    23791 + i as u16
}

fn peer_port(i: usize) -> u16 {
    23801 + i as u16
}

/// Three etcd members in one namespace; each can be killed and started
/// again on its data dir.
#[derive(Debug)]
pub struct Etcd {
    members: Vec<Option<Proc>>,
    /// `root`'s password when authentication is on.
    pub root_password: Option<String>,
    /// Clients over TLS with client certificates (see [`Etcd::start_tls`]).
    pub tls: Option<Pki>,
    token: String,
    pub ns: Netns,
    pub dir: TempDir,
}

impl Etcd {
    /// Starts the members and waits until the cluster answers.
    pub fn start() -> Etcd {
        Self::start_with(false)
    }

    /// The members serve clients over TLS only (certificates of a CA made
    /// for the run, client certificates required); hosts reach them as
    /// `etcd.test` ([`TLS_NAME`]).
    pub fn start_tls() -> Etcd {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Etcd {
        let id = next_id();
        let ns = Netns::new(id, "e");
        let dir = temp_dir("etcd");
        let token = format!("kdt{}n{id}", std::process::id());
        let tls = tls.then(|| Pki::make(&dir.path().join("pki")));
        let mut e = Etcd { members: (0..MEMBERS).map(|_| None).collect(), root_password: None, tls, token, ns, dir };
        for i in 0..MEMBERS {
            e.start_member(i);
        }
        e.wait_healthy(MEMBERS);
        e
    }

    /// Starts member `i` (again, on its data dir).
    pub fn start_member(&mut self, i: usize) {
        assert!(self.members[i].is_none(), "etcd member {i} is running");
        let cluster: Vec<String> = (0..MEMBERS).map(|k| format!("m{k}=http://127.0.0.1:{}", peer_port(k))).collect();
        let data = self.dir.path().join(format!("m{i}"));
        let scheme = self.scheme();
        let mut argv: Vec<String> = vec![
            tool("etcd"),
            "--name".into(),
            format!("m{i}"),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client-urls".into(),
            format!("{scheme}://0.0.0.0:{}", client_port(i)),
            "--advertise-client-urls".into(),
            format!("{scheme}://127.0.0.1:{}", client_port(i)),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{}", peer_port(i)),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{}", peer_port(i)),
            "--initial-cluster".into(),
            cluster.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            self.token.clone(),
            "--heartbeat-interval".into(),
            "100".into(),
            "--election-timeout".into(),
            "1000".into(),
            "--log-level".into(),
            "warn".into(),
            "--logger".into(),
            "zap".into(),
        ];
        if let Some(p) = &self.tls {
            for (flag, f) in [("--cert-file", &p.server_cert), ("--key-file", &p.server_key), ("--trusted-ca-file", &p.ca)] {
                argv.extend([flag.to_string(), f.display().to_string()]);
            }
            argv.push("--client-cert-auth".into());
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let cmd = self.ns.command(&argv);
        self.members[i] = Some(Proc::spawn(cmd, &self.dir.path().join(format!("m{i}.log"))));
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill_member(&mut self, i: usize) {
        let mut p = self.members[i].take().unwrap_or_else(|| panic!("etcd member {i} is not running"));
        p.kill();
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The client URLs of the members, as a host reaches them over `link`
    /// (with TLS: by the certificates' name, which the host's
    /// /etc/netns/<ns>/hosts maps to the link's address).
    pub fn endpoints(&self, link: &Link) -> Vec<String> {
        let host = if self.tls.is_some() { TLS_NAME.to_string() } else { link.client_v4() };
        (0..MEMBERS).map(|i| format!("{}://{host}:{}", self.scheme(), client_port(i))).collect()
    }

    /// Runs etcdctl against the running members (10 s at most).
    pub fn ctl(&self, args: &[&str]) -> Run {
        let eps: Vec<String> = (0..MEMBERS)
            .filter(|i| self.members[*i].is_some())
            .map(|i| format!("{}://127.0.0.1:{}", self.scheme(), client_port(i)))
            .collect();
        let eps = format!("--endpoints={}", eps.join(","));
        let user = self.root_password.as_ref().map(|p| format!("--user=root:{p}"));
        let mut argv = vec!["env", "ETCDCTL_API=3", "etcdctl", &eps, "--command-timeout=5s", "--dial-timeout=2s"];
        if let Some(u) = &user {
            argv.push(u);
        }
        let tls: Vec<String> = self.tls.as_ref().map_or_else(Vec::new, |p| {
            vec![
                format!("--cacert={}", p.ca.display()),
                format!("--cert={}", p.client_cert.display()),
                format!("--key={}", p.client_key.display()),
            ]
        });
        argv.extend(tls.iter().map(String::as_str));
        argv.extend_from_slice(args);
        self.ns.exec(&argv, Duration::from_secs(10))
    }

    /// [`Etcd::ctl`], panicking unless it succeeds.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let r = self.ctl(args);
        assert!(r.ok(), "etcdctl {args:?} failed:\n{}\n{}", r.both(), self.logs());
        r.stdout
    }

    /// Waits until `n` members report healthy.
    pub fn wait_healthy(&self, n: usize) {
        let ok = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let r = self.ctl(&["endpoint", "health"]);
            (r.ok() && r.stdout.matches("is healthy").count() + r.stderr.matches("is healthy").count() >= n).then_some(())
        });
        assert!(ok.is_some(), "etcd: {n} healthy members not seen within 30 s:\n{}", self.logs());
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl_ok(&["endpoint", "status", "--write-out=json"]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("etcdctl endpoint status: {e}: {out}"));
        v.as_array().and_then(|a| a.iter().filter_map(|m| m["Status"]["header"]["revision"].as_i64()).max()).expect("a revision")
    }

    /// Adds user root with `password` and turns authentication on.
    pub fn enable_auth(&mut self, password: &str) {
        self.ctl_ok(&["user", "add", &format!("root:{password}")]);
        self.ctl_ok(&["auth", "enable"]);
        self.root_password = Some(password.to_string());
    }

    /// Every member's log.
    pub fn logs(&self) -> String {
        (0..MEMBERS)
            .map(|i| {
                let p = self.dir.path().join(format!("m{i}.log"));
                format!("---- etcd m{i} ----\n{}", fs::read_to_string(&p).unwrap_or_default())
            })
            .collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

/// What a [`Host`] is started with.
#[derive(Debug, Clone)]
pub struct HostOpts {
    /// The records file (TOML).
    pub records: String,
    /// `[cluster] lease_ttl_s`.
    pub lease_ttl_s: u32,
    /// etcd user root's password, if the cluster has authentication on.
    pub password: Option<String>,
}

/// One kdns host of the cluster. Dropped in order: kdns, Unbound,
/// namespaces, the temp dir (records file, state and snapshot files).
#[derive(Debug)]
pub struct Host {
    pub kdns: Kdns,
    pub args: Vec<String>,
    pub unbound: Unbound,
    pub name: String,
    pub link: Link,
    pub etcd_link: Link,
    pub client: Netns,
    pub server: Netns,
    pub dir: TempDir,
}

impl Host {
    /// Starts host `name` joined to `etcd` and waits until kdns answers
    /// and is connected to etcd.
    pub fn start(etcd: &Etcd, name: &str, o: &HostOpts) -> Host {
        let id = next_id();
        let x = |id: usize| (((std::process::id() as usize) * 7 + id) % 250 + 1) as u8;
        let client = Netns::new(id, "c");
        let server = Netns::new(id, "s");
        let link = veth(&client, &server, id, x(id));
        let eid = next_id();
        let etcd_link = veth(&etcd.ns, &server, eid, x(eid));
        let unbound = Unbound::start(&server, SocketAddr::from(([127, 0, 0, 1], UNBOUND_PORT)));
        let dir = temp_dir("host");
        let records = dir.path().join("records.toml");
        fs::write(&records, &o.records).expect("write the records file");
        let eps: Vec<String> = etcd.endpoints(&etcd_link).iter().map(|e| format!("\"{e}\"")).collect();
        let mut toml = format!(
            "[cluster]\netcd_endpoints = [{}]\nhost_id = \"{name}\"\nlease_ttl_s = {}\nsnapshot_file = \"{}\"\nconnect_timeout_ms = 1000\n",
            eps.join(", "),
            o.lease_ttl_s,
            dir.path().join("cluster.json").display()
        );
        if let Some(p) = &etcd.tls {
            fs::create_dir_all(server.etc_dir()).expect("/etc/netns/<ns>");
            fs::write(server.etc_dir().join("hosts"), format!("127.0.0.1 localhost\n{} {TLS_NAME}\n", etcd_link.client_v4()))
                .expect("write /etc/netns/<ns>/hosts");
            toml.push_str(&format!(
                "ca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                p.ca.display(),
                p.client_cert.display(),
                p.client_key.display()
            ));
        }
        if let Some(pw) = &o.password {
            let f = dir.path().join("etcd-password");
            fs::write(&f, format!("{pw}\n")).expect("write the password file");
            toml.push_str(&format!("username = \"root\"\npassword_file = \"{}\"\n", f.display()));
        }
        let conf = dir.path().join("kdns.toml");
        fs::write(&conf, toml).expect("write kdns.toml");
        let args: Vec<String> = [
            "--io",
            "udp",
            "--workers",
            "1",
            "--listen",
            &format!("{}:53", link.server_v4()),
            "--backend",
            &unbound.addr.to_string(),
            "--allow",
            &format!("10.53.{}.0/24", link.x),
            "--domain",
            DOMAIN,
            "--records-file",
            &records.display().to_string(),
            "--state-file",
            &dir.path().join("state.json").display().to_string(),
            "--config",
            &conf.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut kdns = Kdns::spawn(&server, &args);
        kdns.wait_ready(&client, &link.server_v4());
        let h = Host { kdns, args, unbound, name: name.into(), link, etcd_link, client, server, dir };
        // Until then the API's changes are refused (etcd not reached yet).
        let ok = poll_until(Duration::from_secs(15), Duration::from_millis(50), || (h.cluster()["connected"] == true).then_some(()));
        assert!(ok.is_some(), "host {name} did not connect to etcd within 15 s:\n{}", h.kdns.log());
        h
    }

    /// A path in the host's temp dir.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The addresses this host answers for `name` (A).
    pub fn addrs(&self, name: &str) -> BTreeSet<String> {
        let a = dig(&self.client, &[&format!("@{}", self.link.server_v4()), name, "A"]);
        addr_set(&a)
    }

    /// kdns-ctl against this host.
    pub fn ctl(&self, args: &[&str]) -> Run {
        ctl(&self.kdns.socket, args)
    }

    /// `kdns-ctl cluster --json`.
    pub fn cluster(&self) -> Value {
        ctl_json(&self.kdns.socket, &["cluster"])
    }

    /// Starts kdns again with the same arguments (the old one must have exited).
    pub fn respawn(&mut self) {
        assert!(self.kdns.try_exit().is_some(), "{}: kdns still running", self.name);
        self.kdns = Kdns::spawn(&self.server, &self.args);
        self.kdns.wait_ready(&self.client, &self.link.server_v4());
    }

    /// Cuts (or restores) the host's link to etcd.
    pub fn etcd_link_up(&self, up: bool) {
        self.server.exec_ok(&["ip", "link", "set", &self.etcd_link.server_if, if up { "up" } else { "down" }]);
    }
}

/// Waits (at most `limit`) until `f` holds for every host; returns the
/// time it took, or panics with `what`.
pub fn until_all(hosts: &[&Host], limit: Duration, what: &str, f: impl Fn(&Host) -> bool) -> Duration {
    let t = std::time::Instant::now();
    let ok = poll_until(limit, Duration::from_millis(50), || hosts.iter().all(|h| f(h)).then_some(()));
    if ok.is_none() {
        for h in hosts {
            eprintln!("---- kdns log of host {} ----\n{}", h.name, h.kdns.log());
        }
        panic!("{what}: not seen on every host within {limit:?}");
    }
    t.elapsed()
}

/// The name the members' certificate holds (besides 127.0.0.1).
pub const TLS_NAME: &str = "etcd.test";

/// A CA made for one run, a server certificate for the members
/// ([`TLS_NAME`], 127.0.0.1) and a client certificate (openssl, P-256).
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn make(dir: &std::path::Path) -> Pki {
        fs::create_dir_all(dir).expect("pki dir");
        let f = |n: &str| dir.join(n).display().to_string();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let run = |args: &[&str]| {
            let r = run_limited(&[&["openssl"][..], args].concat(), Duration::from_secs(30));
            assert!(r.ok(), "openssl {args:?}:\n{}", r.both());
        };
        let (ca, cak) = (f("ca.pem"), f("ca.key"));
        run(&[&["req", "-x509"][..], &ec, &["-keyout", &cak, "-out", &ca, "-days", "2", "-subj", "/CN=kdns test CA"]].concat());
        for (name, cn, san, usage) in [
            ("server", TLS_NAME, format!("DNS:{TLS_NAME},IP:127.0.0.1"), "serverAuth,clientAuth"),
            ("client", "root", "DNS:kdns".to_string(), "clientAuth"),
        ] {
            let (key, csr, crt, ext) =
                (f(&format!("{name}.key")), f(&format!("{name}.csr")), f(&format!("{name}.pem")), f(&format!("{name}.ext")));
            fs::write(&ext, format!("subjectAltName={san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n")).expect("ext");
            run(&[&["req"][..], &ec, &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={cn}")]].concat());
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &cak,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ]);
        }
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}
