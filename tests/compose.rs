//! The compose deployment (`compose.yaml` + `deploy/`): its files are
//! checked against each other and against the real programs
//! (`kdns --check-config`, `unbound-checkconf`) and against what Debian
//! 12's Docker (20.10, docker-compose 1.29) accepts, and its layout is run
//! in network namespaces (tests/docker.rs runs the file itself on a real
//! engine): a
//! namespace holding the "dnsnet" bridge, one namespace per compose
//! service joined to it by a veth named `eth0` with the address compose
//! gives the service, kdns started with `deploy/kdns.toml` (its container
//! paths mapped the way the compose volumes map them), Unbounds at the
//! pool's addresses, and a client whose resolv.conf is deploy/resolv.conf
//! (compose mounts it over the containers' /etc/resolv.conf).
//!
//! The Unbounds run the tests' configuration (local test zones) rather than
//! `deploy/unbound.conf`, which recurses to the Internet's root servers.
//!
//! Needs root and the Debian packages of scripts/setup.sh; fails (never
//! skips) without them. See tests/README.md.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_yaml::Value as Yaml;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Yaml {
    let p = repo().join("compose.yaml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn kdns_toml() -> (String, toml::Value) {
    let p = repo().join("deploy/kdns.toml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    let v = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (text, v)
}

fn service<'a>(c: &'a Yaml, name: &str) -> &'a Yaml {
    let s = &c["services"][name];
    assert!(s.is_mapping(), "compose.yaml has no service {name}");
    s
}

/// The service's address on dnsnet.
fn address(c: &Yaml, name: &str) -> String {
    service(c, name)["networks"]["dnsnet"]["ipv4_address"]
        .as_str()
        .unwrap_or_else(|| panic!("compose.yaml: service {name} has no ipv4_address on dnsnet"))
        .to_string()
}

fn strings(v: &Yaml) -> Vec<String> {
    v.as_sequence().map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

fn subnet(c: &Yaml) -> String {
    c["networks"]["dnsnet"]["ipam"]["config"][0]["subnet"].as_str().expect("compose.yaml: dnsnet has no subnet").to_string()
}

/// The kdns service's volumes as container path -> host path: bind mounts
/// (`./x:/y[:ro]`) to the repository's files, absolute ones to themselves,
/// named volumes to `state`.
fn kdns_mounts(c: &Yaml, state: &Path) -> BTreeMap<String, PathBuf> {
    let mut m = BTreeMap::new();
    for v in strings(&service(c, "kdns")["volumes"]) {
        let parts: Vec<&str> = v.split(':').collect();
        assert!(parts.len() >= 2, "compose.yaml: kdns volume {v:?} is not SRC:DST");
        let host = match parts[0].strip_prefix("./") {
            Some(rel) => repo().join(rel),
            None if parts[0].starts_with('/') => PathBuf::from(parts[0]),
            None => state.to_path_buf(),
        };
        m.insert(parts[1].to_string(), host);
    }
    m
}

/// deploy/resolv.conf, the containers' /etc/resolv.conf: (nameservers,
/// search domains, the whole text).
fn resolv_conf() -> (Vec<String>, Vec<String>, String) {
    let p = repo().join("deploy/resolv.conf");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
    let field = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix(key))
            .flat_map(|rest| rest.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    (field("nameserver "), field("search "), text.clone())
}

/// The capabilities Docker 20.10 (Debian 12's docker.io) knows: it rejects
/// a compose file naming any other (CAP_BPF and CAP_PERFMON came later).
const DOCKER_20_10_CAPS: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

#[test]
fn compose_runs_on_docker_20_10_and_compose_1_29() {
    let c = compose();
    // docker-compose 1.29 rejects a top-level `name:`.
    assert!(c.get("name").is_none(), "compose.yaml has a top-level `name:`, which docker-compose 1.29 rejects");
    let services = c["services"].as_mapping().expect("compose.yaml: services");
    for (name, s) in services {
        let name = name.as_str().unwrap_or("?");
        for cap in strings(&s["cap_add"]) {
            let bare = cap.strip_prefix("CAP_").unwrap_or(&cap);
            assert!(DOCKER_20_10_CAPS.contains(&bare), "service {name}: cap_add {cap} is unknown to Docker 20.10 (\"invalid CapAdd\")");
        }
        // Raising the memlock limit fails in many containers' contexts
        // ("error setting rlimit type 8"); CAP_IPC_LOCK lifts the check.
        assert!(s["ulimits"]["memlock"].is_null(), "service {name}: a memlock ulimit ({:?}) fails on Docker 20.10", s["ulimits"]);
        // Image names can be overridden (the tests use unique ones).
        let image = s["image"].as_str().unwrap_or_else(|| panic!("service {name} has no image"));
        assert!(image.starts_with("${KDNS_") && image.contains(":-"), "service {name}: image {image} is not ${{KDNS_...:-default}}");
    }
    let kdns_caps = strings(&service(&c, "kdns")["cap_add"]);
    for need in ["NET_ADMIN", "NET_RAW", "SYS_ADMIN", "IPC_LOCK"] {
        assert!(kdns_caps.iter().any(|x| x == need), "kdns lacks {need} (AF_XDP): {kdns_caps:?}");
    }
    // The Dockerfile's base image is a build argument, and the kdns-host
    // target comes after the Rust stage (the classic builder builds every
    // stage before its target; "unbound" and "client" must not need Rust).
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let stages: Vec<(String, String)> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f.last().unwrap_or(&"").to_string())
        })
        .collect();
    let pos = |stage: &str| stages.iter().position(|(_, n)| n == stage).unwrap_or_else(|| panic!("deploy/Dockerfile has no stage {stage}"));
    for s in ["unbound", "client"] {
        assert!(pos(s) < pos("build"), "deploy/Dockerfile: stage {s} comes after the Rust stage");
        assert_eq!(stages[pos(s)].0, "${BASE}", "deploy/Dockerfile: stage {s} is not FROM ${{BASE}}");
    }
    assert!(pos("kdns-host") > pos("build"), "deploy/Dockerfile: kdns-host must come last (see its comment)");
    assert!(dockerfile.contains("ARG BASE=debian:bookworm-slim"), "deploy/Dockerfile: no ARG BASE=debian:bookworm-slim");
}

/// deploy/kdns.toml with each container path replaced by where the compose
/// volumes put it.
fn mapped_kdns_toml(c: &Yaml, dir: &tempfile::TempDir) -> PathBuf {
    let (mut text, _) = kdns_toml();
    let mut mounts: Vec<(String, PathBuf)> = kdns_mounts(c, &dir.path().join("state")).into_iter().collect();
    mounts.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
    for (container, host) in mounts {
        text = text.replace(&format!("\"{container}"), &format!("\"{}", host.display()));
    }
    std::fs::create_dir_all(dir.path().join("state")).expect("state dir");
    let p = dir.path().join("kdns.toml");
    std::fs::write(&p, text).expect("write mapped kdns.toml");
    p
}

#[test]
fn compose_and_deploy_files_agree() {
    let c = compose();
    let (_, k) = kdns_toml();
    let vip = address(&c, "kdns");
    let pool = [address(&c, "unbound-a"), address(&c, "unbound-b")];
    let net = subnet(&c);

    // kdns listens on its compose address, allows the network, and asks the pool.
    let listen: Vec<&str> = k["server"]["listen"].as_array().expect("server.listen").iter().filter_map(|x| x.as_str()).collect();
    assert_eq!(listen, vec![format!("{vip}:53")], "deploy/kdns.toml server.listen");
    let allow: Vec<&str> = k["server"]["allow"].as_array().expect("server.allow").iter().filter_map(|x| x.as_str()).collect();
    assert!(allow.contains(&net.as_str()), "deploy/kdns.toml server.allow {allow:?} does not allow dnsnet {net}");
    let backends: Vec<&str> = k["upstream"]["backends"].as_array().expect("upstream.backends").iter().filter_map(|x| x.as_str()).collect();
    assert_eq!(backends, pool.iter().map(String::as_str).collect::<Vec<_>>(), "deploy/kdns.toml backends vs the compose Unbounds");
    // The client resolves through kdns directly (its /etc/resolv.conf is
    // deploy/resolv.conf, not Docker's 127.0.0.11), bare names under the
    // local domain.
    let client = service(&c, "client");
    let vols = strings(&client["volumes"]);
    assert!(vols.iter().any(|v| v == "./deploy/resolv.conf:/etc/resolv.conf:ro"), "client does not mount deploy/resolv.conf: {vols:?}");
    assert!(client["dns"].is_null() && client["dns_search"].is_null(), "client: dns/dns_search are pointless with the mounted resolv.conf");
    let (servers, search, _) = resolv_conf();
    assert_eq!(servers, vec![vip.clone()], "deploy/resolv.conf nameservers");
    let domains: Vec<&str> = k["records"]["domains"].as_array().expect("records.domains").iter().filter_map(|x| x.as_str()).collect();
    assert_eq!(search, domains, "deploy/resolv.conf search vs records.domains");
    // kdns reads the config its command names, and the files it names are mounted.
    let cmd = strings(&service(&c, "kdns")["command"]);
    let conf = cmd.windows(2).find(|w| w[0] == "--config").map(|w| w[1].clone()).expect("kdns command has --config");
    let dir = temp_dir("compose");
    let mounts = kdns_mounts(&c, &dir.path().join("state"));
    assert!(mounts.contains_key(&conf), "{conf} is not mounted into kdns: {mounts:?}");
    for key in ["file", "state_file"] {
        let path = k["records"][key].as_str().unwrap_or_else(|| panic!("records.{key}"));
        assert!(mounts.keys().any(|m| path.starts_with(m.as_str())), "records.{key} {path} is on no kdns volume: {mounts:?}");
    }
    // The mapped configuration is one kdns accepts, records file included.
    let mapped = mapped_kdns_toml(&c, &dir);
    let r = run_limited(&[kdns_bin().to_str().unwrap(), "--config", mapped.to_str().unwrap(), "--check-config"], Duration::from_secs(20));
    assert!(r.ok(), "kdns --check-config on deploy/kdns.toml (paths mapped):\n{}", r.both());
    assert!(r.stdout.contains("1 services"), "the records file was not read:\n{}", r.both());
    // Each Unbound reads deploy/unbound.conf, which unbound accepts and which lets dnsnet in.
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("deploy/Dockerfile");
    for u in ["unbound-a", "unbound-b"] {
        let vols = strings(&service(&c, u)["volumes"]);
        assert!(vols.iter().any(|v| v.starts_with("./deploy/unbound.conf:/etc/unbound/unbound.conf")), "{u} volumes {vols:?}");
    }
    assert!(dockerfile.contains("\"-c\", \"/etc/unbound/unbound.conf\""), "the unbound image does not read /etc/unbound/unbound.conf");
    let r = run_limited(&["unbound-checkconf", repo().join("deploy/unbound.conf").to_str().unwrap()], Duration::from_secs(20));
    assert!(r.ok(), "unbound-checkconf deploy/unbound.conf:\n{}", r.both());
    let uconf = std::fs::read_to_string(repo().join("deploy/unbound.conf")).expect("unbound.conf");
    assert!(uconf.contains(&format!("access-control: {net} allow")), "deploy/unbound.conf does not allow dnsnet {net}");
}

/// A namespace per compose service, joined by veth pairs (`eth0` inside)
/// to a bridge in a namespace of its own. Dropping it removes them all.
struct Dnsnet {
    services: BTreeMap<String, Netns>,
    _bridge: Netns,
}

impl Dnsnet {
    fn up(c: &Yaml, names: &[&str]) -> Dnsnet {
        let id = next_id();
        let bridge = Netns::new(id, "br");
        bridge.exec_ok(&["ip", "link", "add", "dnsnet", "type", "bridge"]);
        bridge.exec_ok(&["ip", "link", "set", "dnsnet", "up"]);
        let prefix_len = subnet(c).split('/').nth(1).expect("subnet length").to_string();
        let mut services = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let ns = Netns::new(id, &format!("s{i}"));
            let port = format!("d{}x{id}p{i}", std::process::id() % 10000);
            run_ok(&["ip", "link", "add", &port, "netns", &bridge.name, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
            bridge.exec_ok(&["ip", "link", "set", &port, "master", "dnsnet", "up"]);
            ns.exec_ok(&["ip", "addr", "add", &format!("{}/{prefix_len}", address(c, name)), "dev", "eth0"]);
            ns.exec_ok(&["ip", "link", "set", "eth0", "up"]);
            services.insert(name.to_string(), ns);
        }
        Dnsnet { services, _bridge: bridge }
    }

    fn ns(&self, name: &str) -> &Netns {
        &self.services[name]
    }
}

#[test]
fn compose_layout_in_namespaces_serves_the_client() {
    require_root_and_tools();
    let _slot = shared_slot();
    let c = compose();
    let net = Dnsnet::up(&c, &["kdns", "unbound-a", "unbound-b", "client"]);
    let vip = address(&c, "kdns");
    let pool = [address(&c, "unbound-a"), address(&c, "unbound-b")];
    let _unbounds: Vec<Unbound> = ["unbound-a", "unbound-b"]
        .iter()
        .map(|u| Unbound::start(net.ns(u), SocketAddr::new(address(&c, u).parse().unwrap(), 53)))
        .collect();
    let dir = temp_dir("compose");
    let conf = mapped_kdns_toml(&c, &dir);
    let client = net.ns("client");
    let (_, search, resolv) = resolv_conf();
    let search = search.join(" ");
    client.set_resolv_conf(&resolv);
    let mut kdns = Kdns::spawn(net.ns("kdns"), &["--config".into(), conf.display().to_string()]);
    kdns.wait_ready(client, &vip);
    let log = kdns.plain_log();
    assert!(log.contains("AF_XDP on eth0:"), "io = \"auto\" did not take AF_XDP on the service's eth0:\n{log}");

    // A name the pool answers, through the client's resolv.conf (no @server).
    let s0 = stats(&kdns.socket);
    let a = dig(client, &["+time=2", "+tries=1", "compose.t1.test", "A"]);
    assert_eq!(
        (a.status.as_str(), a.rdata("A")),
        ("NOERROR", vec![TEST_A.to_string()]),
        "dig compose.t1.test via resolv.conf:\n{}",
        a.text
    );
    // The local service of deploy/records.toml: both Unbounds, AA set.
    let a = dig(client, &["+time=2", "+tries=1", "unbound.kdns", "A"]);
    let mut got = a.rdata("A");
    got.sort();
    assert_eq!(got, pool.to_vec(), "unbound.kdns:\n{}", a.text);
    assert!(a.has_flag("aa"), "unbound.kdns is not authoritative:\n{}", a.text);
    // A bare name through the search domain, by the system resolver.
    let g = client.exec(&["getent", "ahostsv4", "resolver"], Duration::from_secs(10));
    assert!(g.ok() && g.stdout.contains(&vip), "getent ahostsv4 resolver (search {search}):\n{}", g.both());
    let s1 = stats(&kdns.socket);
    let xdp = kind_sum(&s1, "xdp", "queries") - kind_sum(&s0, "xdp", "queries");
    eprintln!(
        "compose layout: {xdp} queries answered by the AF_XDP worker; unbound.kdns -> {got:?}; getent resolver -> {}",
        g.stdout.trim()
    );
    assert!(xdp >= 3, "the AF_XDP worker answered {xdp} of the client's queries:\n{s1:#}");
    assert_eq!(total_drops(&s1), total_drops(&s0), "drops while serving the client:\n{s1:#}");
}
