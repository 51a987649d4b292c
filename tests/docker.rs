//! The compose deployment on a real Docker engine: the repository's
//! `compose.yaml`, unmodified, brought up with docker-compose (1.29 on
//! Debian 12) on Debian's docker.io (20.10), with images built from
//! `deploy/Dockerfile` (kdns from the binaries of this cargo target dir,
//! target `kdns-host`; the base image made by debootstrap, nothing is
//! pulled).
//!
//! The tests share dnsnet's fixed subnet, so they run one stack at a time
//! (`one_stack_at_a_time`). Everything they create (images, containers,
//! networks, volumes) carries the test process's pid in its name and is
//! removed on drop, also on failure.
//!
//! Needs root, a running engine (`scripts/docker-engine.sh start`; done by
//! scripts/test.sh), docker-compose, debootstrap; fails (never skips)
//! without them. See tests/README.md.

mod common;
#[path = "common/docker.rs"]
mod docker;

use std::time::Duration;

use common::*;
use docker::*;

/// The client's resolv.conf is kdns's (deploy/resolv.conf, mounted), and
/// a local record, a local service, a bare name through the search domain
/// (getent) and names the Unbound pool answers all come from kdns, on its
/// AF_XDP worker, with nothing sent to Docker's embedded resolver.
#[test]
fn compose_stack_serves_the_client_directly_over_af_xdp() {
    require_docker();
    let _one = one_stack_at_a_time();
    let stack = Stack::up(&[]);
    let client = stack.container("client");
    let kdns = stack.container("kdns");

    // The client's /etc/resolv.conf is deploy/resolv.conf, as mounted.
    let want = std::fs::read_to_string(repo().join("deploy/resolv.conf")).expect("deploy/resolv.conf");
    let r = stack.exec(&client, &["cat", "/etc/resolv.conf"], Duration::from_secs(20));
    assert!(r.ok() && r.stdout == want, "the client's /etc/resolv.conf is not deploy/resolv.conf:\n{}", r.both());
    let servers: Vec<&str> = want.lines().filter_map(|l| l.strip_prefix("nameserver ")).map(str::trim).collect();
    assert_eq!(servers, vec![KDNS_ADDR], "deploy/resolv.conf nameservers");

    let log = stack.kdns_log();
    assert!(log.contains("AF_XDP on eth0:"), "kdns did not take AF_XDP on its eth0 in the container:\n{log}");

    let docker_dns0 = stack.embedded_dns_packets(&client);
    let s0 = stack.stats();
    let b0 = stack.ctl_json(&["backends"]);
    let sent = |b: &serde_json::Value| -> u64 { b.as_array().map_or(0, |a| a.iter().filter_map(|x| x["sent"].as_u64()).sum()) };

    // Local records (deploy/records.toml), through the resolv.conf.
    let a = stack.dig(&["unbound.kdns", "A"]);
    let mut got = a.rdata("A");
    got.sort();
    assert_eq!(got, POOL.to_vec(), "unbound.kdns:\n{}", a.text);
    assert!(a.has_flag("aa"), "unbound.kdns is not authoritative:\n{}", a.text);
    assert!(a.text.contains(&format!("SERVER: {KDNS_ADDR}#53")), "dig did not ask kdns:\n{}", a.text);
    let a = stack.dig(&["resolver.kdns", "A"]);
    assert_eq!(a.rdata("A"), vec![KDNS_ADDR.to_string()], "resolver.kdns:\n{}", a.text);
    // The system resolver: a bare name through the search domain, and a
    // full one.
    let g = stack.exec(&client, &["getent", "hosts", "resolver"], Duration::from_secs(20));
    assert!(
        g.ok() && g.stdout.contains(KDNS_ADDR) && g.stdout.contains("resolver.kdns"),
        "getent hosts resolver (search kdns):\n{}",
        g.both()
    );
    let g = stack.exec(&client, &["getent", "ahostsv4", "unbound.kdns"], Duration::from_secs(20));
    assert!(g.ok() && POOL.iter().all(|p| g.stdout.contains(p)), "getent ahostsv4 unbound.kdns:\n{}", g.both());

    // Names only the Unbound pool answers (its default local zones; no
    // Internet needed): forwarded by kdns.
    let a = stack.dig(&["localhost.", "A"]);
    assert_eq!((a.status.as_str(), a.rdata("A")), ("NOERROR", vec!["127.0.0.1".to_string()]), "localhost. A through kdns:\n{}", a.text);
    let a = stack.dig(&["-x", "127.0.0.1"]);
    assert_eq!(a.rdata("PTR"), vec!["localhost.".to_string()], "1.0.0.127.in-addr.arpa PTR through kdns:\n{}", a.text);
    let b1 = stack.ctl_json(&["backends"]);
    assert!(sent(&b1) >= sent(&b0) + 2, "kdns sent {} queries to the Unbound pool for two forwarded names:\n{b1:#}", sent(&b1) - sent(&b0));

    // All of it answered by the AF_XDP worker, none by the socket worker.
    let s1 = stack.stats();
    let d = |kind: &str, key: &str| kind_sum(&s1, kind, key) - kind_sum(&s0, kind, key);
    let redirected = |s: &serde_json::Value| -> u64 {
        s["xdp"].as_array().map_or(0, |ifs| {
            ifs.iter().flat_map(|i| i["queues"].as_array().cloned().unwrap_or_default()).filter_map(|q| q["redirected"].as_u64()).sum()
        })
    };
    let red = redirected(&s1) - redirected(&s0);
    eprintln!(
        "compose on Docker: xdp worker queries +{}, local answers +{}, program redirected +{red}; udp worker queries +{}; pool sent +{}",
        d("xdp", "queries"),
        d("xdp", "local_answers"),
        d("udp", "queries"),
        sent(&b1) - sent(&b0)
    );
    assert!(d("xdp", "queries") >= 6, "the AF_XDP worker answered {} of the client's queries:\n{s1:#}", d("xdp", "queries"));
    assert!(d("xdp", "local_answers") >= 4, "the AF_XDP worker gave {} local answers:\n{s1:#}", d("xdp", "local_answers"));
    assert!(red >= 6, "the XDP program redirected {red} of the client's queries:\n{s1:#}");
    assert_eq!(d("udp", "queries"), 0, "the socket worker answered some of the client's queries:\n{s1:#}");

    // Docker's embedded resolver was never asked...
    let docker_dns1 = stack.embedded_dns_packets(&client);
    assert_eq!(docker_dns1, docker_dns0, "the client sent {} packets to 127.0.0.11", docker_dns1 - docker_dns0);
    // ...and the counters would have shown it: ask it once on purpose.
    let _ = stack.dig(&["@127.0.0.11", "+time=1", "resolver.kdns", "A"]);
    assert!(stack.embedded_dns_packets(&client) > docker_dns1, "a query to 127.0.0.11 did not move its DNAT counters");

    // kdns reads the Docker API through the mounted directory.
    let mounts = stack.inspect(&kdns)["Mounts"].clone();
    assert!(
        mounts.as_array().is_some_and(|m| m.iter().any(|x| x["Destination"] == "/run/docker-host" && x["RW"] == false)),
        "the kdns container does not have the host's /var/run at /run/docker-host, read-only:\n{mounts:#}"
    );
    let r = stack.exec(&kdns, &["test", "-S", "/run/docker-host/docker.sock"], Duration::from_secs(20));
    assert!(r.ok(), "no Docker API socket at /run/docker-host/docker.sock in the kdns container:\n{}", r.both());
}
