//! Several hosts sharing records through etcd ([cluster], docs/cluster.md):
//! a real 3-member etcd cluster (Debian's etcd-server), three kdns hosts,
//! dig from a client namespace on each host. Root and the tools of
//! tests/README.md are required.

mod common;

use std::time::{Duration, Instant};

use common::etcd::{until_all, Etcd, Host, HostOpts};
use common::*;

/// The lease TTL of the hosts, seconds.
const TTL: u32 = 3;

const RECORDS_A: &str = r#"
[[service]]
name = "web"
instances = [{ id = "a1", addrs = ["10.61.0.1"] }]

[[record]]
name = "shared.kdns"
type = "A"
data = "10.62.0.1"
"#;

fn opts(records: &str) -> HostOpts {
    HostOpts { records: records.into(), lease_ttl_s: TTL, password: None }
}

/// etcd and hosts a, b, c (a with RECORDS_A).
fn three_hosts(password: Option<&str>) -> (Etcd, Vec<Host>) {
    require_root_and_tools();
    let mut etcd = Etcd::start();
    if let Some(pw) = password {
        etcd.enable_auth(pw);
    }
    let mut hosts = Vec::new();
    for (name, records) in [("a", RECORDS_A), ("b", ""), ("c", "")] {
        let o = HostOpts { password: password.map(String::from), ..opts(records) };
        hosts.push(Host::start(&etcd, name, &o));
    }
    (etcd, hosts)
}

fn has(h: &Host, name: &str, addr: &str) -> bool {
    h.addrs(name).contains(addr)
}

/// The instance of the records file and one added with kdns-ctl on host a
/// are answered on b and c; so is a's static record; `kdns-ctl cluster`
/// on b shows a with its instances and a live lease. etcd has
/// authentication on, and no kdns log line holds the password; a bad
/// value is skipped and counted.
#[test]
fn an_instance_on_one_host_is_answered_on_the_others() {
    let _slot = exclusive_slot();
    let password = format!("pw-{}-secret", std::process::id());
    let (etcd, hosts) = three_hosts(Some(&password));
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    let r = a.ctl(&["instance", "add", "web", "a2", "10.61.0.2"]);
    assert!(r.ok(), "kdns-ctl instance add on a:\n{}", r.both());
    until_all(&[a, b, c], Duration::from_secs(15), "web.kdns answers a1 and a2", |h| {
        h.addrs("web.kdns") == set_of(&["10.61.0.1", "10.61.0.2"])
    });
    until_all(&[b, c], Duration::from_secs(15), "shared.kdns from a's records file", |h| has(h, "shared.kdns", "10.62.0.1"));
    // An instance added on b to a's service joins the same answer everywhere.
    let r = b.ctl(&["instance", "add", "web", "b1", "10.61.0.11"]);
    assert!(r.ok(), "kdns-ctl instance add on b:\n{}", r.both());
    until_all(&[a, b, c], Duration::from_secs(15), "web.kdns answers a1, a2 and b1", |h| {
        h.addrs("web.kdns") == set_of(&["10.61.0.1", "10.61.0.2", "10.61.0.11"])
    });
    let v = b.cluster();
    assert_eq!(v["connected"], true, "{v:#}");
    let ha = v["hosts"].as_array().and_then(|hs| hs.iter().find(|h| h["host"] == "a").cloned()).expect("host a listed");
    assert_eq!((ha["alive"].as_bool(), ha["instances"].as_u64(), ha["healthy"].as_u64()), (Some(true), Some(2), Some(2)), "{v:#}");
    assert!(ha["lease_age_s"].as_f64().is_some_and(|a| a >= 0.0), "{v:#}");
    let out = b.ctl(&["cluster"]);
    assert!(out.ok() && out.stdout.contains("connected to etcd") && out.stdout.contains("a "), "{}", out.both());
    // Removed on a: gone everywhere.
    let r = a.ctl(&["instance", "rm", "web", "a2"]);
    assert!(r.ok(), "kdns-ctl instance rm on a:\n{}", r.both());
    until_all(&[a, b, c], Duration::from_secs(15), "a2 gone", |h| !has(h, "web.kdns", "10.61.0.2"));
    // A bad value written by someone else: a log line and a counted skip,
    // the answers unchanged.
    etcd.ctl_ok(&["put", "/kdns/v1/instances/x/web/bad", "{not json"]);
    until_all(&[b, c], Duration::from_secs(10), "the bad value counted", |h| h.cluster()["skipped"].as_u64() >= Some(1));
    for h in [b, c] {
        assert!(h.kdns.plain_log().contains("etcd key /kdns/v1/instances/x/web/bad skipped: not a valid value"), "{}", h.kdns.plain_log());
        assert_eq!(h.addrs("web.kdns"), set_of(&["10.61.0.1", "10.61.0.11"]));
    }
    for h in &hosts {
        let log = h.kdns.plain_log();
        assert!(log.contains("cluster: joined as host"), "host {} did not join:\n{log}", h.name);
        assert!(!log.contains(&password), "host {}: the etcd password is in the log:\n{log}", h.name);
    }
}

/// Host a killed with SIGKILL: its instances leave b's and c's answers
/// when its lease expires (TTL), within TTL + 1 s of the kill plus slack
/// for the machine.
#[test]
fn a_killed_host_leaves_the_answers_within_its_lease() {
    let _slot = exclusive_slot();
    let (_etcd, mut hosts) = three_hosts(None);
    until_all(&[&hosts[1], &hosts[2]], Duration::from_secs(15), "a1 answered", |h| has(h, "web.kdns", "10.61.0.1"));
    hosts[0].kdns.kill();
    let t = Instant::now();
    let (b, c) = (&hosts[1], &hosts[2]);
    let took = until_all(&[b, c], Duration::from_secs(u64::from(TTL) + 10), "a1 gone after kill -9", |h| !has(h, "web.kdns", "10.61.0.1"));
    let took = took.max(t.elapsed());
    eprintln!("cluster: a's instance left b's and c's answers {:.2} s after kill -9 (lease TTL {TTL} s)", took.as_secs_f64());
    assert!(
        took < Duration::from_secs(u64::from(TTL) + 1) + Duration::from_secs(3),
        "a1 left the answers only after {took:?} (lease TTL {TTL} s)"
    );
    let v = b.cluster();
    let ha = v["hosts"].as_array().and_then(|hs| hs.iter().find(|h| h["host"] == "a").cloned());
    assert!(ha.is_none_or(|h| h["alive"] == false && h["instances"] == 0), "{v:#}");
}

/// One etcd member killed: changes still reach every host. Two killed (no
/// quorum): the last known records are answered, kdns-ctl changes are
/// refused with a message naming etcd, the outage is logged once; with
/// the members back, changes go through again.
#[test]
fn etcd_members_lost_and_back() {
    let _slot = exclusive_slot();
    let (mut etcd, hosts) = three_hosts(None);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    until_all(&[b, c], Duration::from_secs(15), "a1 answered", |h| has(h, "web.kdns", "10.61.0.1"));

    etcd.kill_member(0);
    let added = poll_until(Duration::from_secs(20), Duration::from_millis(500), || {
        a.ctl(&["instance", "add", "web", "a3", "10.61.0.3"]).ok().then_some(())
    });
    assert!(
        added.is_some(),
        "instance add with one member down kept failing:\n{}",
        a.ctl(&["instance", "add", "web", "a3", "10.61.0.3"]).both()
    );
    until_all(&[b, c], Duration::from_secs(20), "a3 answered with one member down", |h| has(h, "web.kdns", "10.61.0.3"));

    let before: Vec<usize> = hosts.iter().map(|h| h.kdns.plain_log().matches("etcd unreachable").count()).collect();
    etcd.kill_member(1);
    until_all(&[a, b, c], Duration::from_secs(30), "every host sees etcd unreachable", |h| h.cluster()["connected"] == false);
    for h in [b, c] {
        assert_eq!(h.addrs("web.kdns"), set_of(&["10.61.0.1", "10.61.0.3"]), "host {}: the last known records", h.name);
    }
    let r = a.ctl(&["instance", "add", "web", "a4", "10.61.0.4"]);
    assert!(!r.ok(), "a change went through without quorum:\n{}", r.both());
    assert!(r.both().contains("etcd is unreachable"), "unclear refusal:\n{}", r.both());
    // Several retries later, still one line per host for the outage.
    std::thread::sleep(Duration::from_secs(4));
    for (h, n) in hosts.iter().zip(&before) {
        let now = h.kdns.plain_log().matches("etcd unreachable").count();
        assert_eq!(now, n + 1, "host {}: the outage must be logged once:\n{}", h.name, h.kdns.plain_log());
    }

    etcd.start_member(0);
    etcd.start_member(1);
    etcd.wait_healthy(3);
    until_all(&[a, b, c], Duration::from_secs(30), "every host connected again", |h| h.cluster()["connected"] == true);
    let r = a.ctl(&["instance", "add", "web", "a4", "10.61.0.4"]);
    assert!(r.ok(), "instance add after quorum came back:\n{}", r.both());
    until_all(&[b, c], Duration::from_secs(15), "a4 answered", |h| h.addrs("web.kdns") == set_of(&["10.61.0.1", "10.61.0.3", "10.61.0.4"]));
    for h in &hosts {
        assert!(h.kdns.plain_log().contains("cluster: etcd answers again"), "host {}: recovery not logged", h.name);
    }
}

/// Compactions while the hosts watch, and changes made while host c is cut
/// off from etcd and compacted away before it comes back: every host ends
/// with exactly the current records (nothing stale, nothing missing).
#[test]
fn compaction_while_watching_resyncs() {
    let _slot = exclusive_slot();
    let (etcd, hosts) = three_hosts(None);
    let (a, b, c) = (&hosts[0], &hosts[1], &hosts[2]);
    until_all(&[b, c], Duration::from_secs(15), "a1 answered", |h| has(h, "web.kdns", "10.61.0.1"));
    // Changes, then a compaction to the newest revision, while watching.
    for i in 2..=4 {
        let r = a.ctl(&["instance", "add", "web", &format!("a{i}"), &format!("10.61.0.{i}")]);
        assert!(r.ok(), "{}", r.both());
    }
    etcd.ctl_ok(&["compact", &etcd.revision().to_string()]);
    let r = a.ctl(&["instance", "rm", "web", "a3"]);
    assert!(r.ok(), "{}", r.both());
    let want = set_of(&["10.61.0.1", "10.61.0.2", "10.61.0.4"]);
    until_all(&[a, b, c], Duration::from_secs(15), "a1 a2 a4 after the compaction", |h| h.addrs("web.kdns") == want);

    // c misses changes, and their history is compacted away.
    let resyncs = c.cluster()["resyncs"].as_u64().expect("resyncs");
    c.etcd_link_up(false);
    until_all(&[c], Duration::from_secs(30), "c sees etcd unreachable", |h| h.cluster()["connected"] == false);
    for (cmd, id, addr) in [("rm", "a2", ""), ("add", "a5", "10.61.0.5")] {
        let mut args = vec!["instance", cmd, "web", id];
        if !addr.is_empty() {
            args.push(addr);
        }
        let r = a.ctl(&args);
        assert!(r.ok(), "{}", r.both());
    }
    etcd.ctl_ok(&["compact", &etcd.revision().to_string()]);
    assert_eq!(c.addrs("web.kdns"), want, "c, cut off, answers the last known records");
    c.etcd_link_up(true);
    let want = set_of(&["10.61.0.1", "10.61.0.4", "10.61.0.5"]);
    until_all(&[a, b, c], Duration::from_secs(30), "a1 a4 a5 everywhere", |h| h.addrs("web.kdns") == want);
    assert!(c.cluster()["resyncs"].as_u64().expect("resyncs") > resyncs, "c did not read everything again");
}

/// Host b restarted while every etcd member is down serves a's instance
/// from its snapshot file.
#[test]
fn a_restarted_host_serves_its_snapshot_while_etcd_is_down() {
    let _slot = exclusive_slot();
    let (mut etcd, mut hosts) = three_hosts(None);
    until_all(&[&hosts[1]], Duration::from_secs(15), "a1 answered on b", |h| has(h, "web.kdns", "10.61.0.1"));
    // The snapshot is written within a second of a change.
    std::thread::sleep(Duration::from_millis(1500));
    for i in 0..3 {
        etcd.kill_member(i);
    }
    let b = &mut hosts[1];
    assert!(b.kdns.stop_with(libc::SIGTERM, Duration::from_secs(10)).is_some(), "b did not stop");
    b.respawn();
    assert!(has(b, "web.kdns", "10.61.0.1"), "b does not serve a1 from its snapshot:\n{}", b.kdns.plain_log());
    assert!(has(b, "shared.kdns", "10.62.0.1"));
    assert!(b.kdns.plain_log().contains("until etcd answers"), "{}", b.kdns.plain_log());
    assert_eq!(b.cluster()["connected"], false);
}

/// Host d's watch falls behind a compaction: d is stopped (SIGSTOP, its
/// lease TTL long enough to outlive the pause) while 400 writes of 32 kB pile up
/// beyond what its stream buffers, so etcd takes its watch off the live
/// path; etcd is compacted past d's position; d continued: its watch is
/// cancelled with a compact revision (ErrCompacted), d logs that it fell
/// behind a compaction, reads everything again and answers exactly the
/// current records. Then d stops cleanly: its lease is revoked, so its
/// instance leaves a's answers at once rather than after the 60 s TTL.
#[test]
fn a_watch_behind_a_compaction_resyncs() {
    let _slot = exclusive_slot();
    require_root_and_tools();
    let etcd = Etcd::start();
    let a = Host::start(&etcd, "a", &opts(RECORDS_A));
    let d = Host::start(&etcd, "d", &HostOpts { lease_ttl_s: 60, ..opts("") });
    until_all(&[&d], Duration::from_secs(15), "a1 on d", |h| has(h, "web.kdns", "10.61.0.1"));
    signal(d.kdns.pid(), libc::SIGSTOP);
    let fill = "x".repeat(32_000);
    let script = format!(
        "for i in $(seq 400); do ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:23791 put /kdns/v1/junk/k$i '{fill}' >/dev/null || exit 1; done"
    );
    let r = etcd.ns.exec(&["sh", "-c", &script], Duration::from_secs(120));
    let r2 = a.ctl(&["instance", "add", "web", "a9", "10.61.0.9"]);
    let rev = etcd.revision();
    let r3 = etcd.ctl(&["compact", &rev.to_string()]);
    signal(d.kdns.pid(), libc::SIGCONT);
    assert!(r.ok() && r2.ok() && r3.ok(), "{}\n{}\n{}", r.both(), r2.both(), r3.both());
    until_all(&[&d], Duration::from_secs(30), "d answers a1 and a9", |h| h.addrs("web.kdns") == set_of(&["10.61.0.1", "10.61.0.9"]));
    let ok = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
        d.kdns.plain_log().contains("the watch fell behind a compaction").then_some(())
    });
    assert!(
        ok.is_some(),
        "d did not see its watch compacted:\n{}",
        d.kdns.plain_log().lines().filter(|l| l.contains("cluster:") && !l.contains("skipped")).collect::<Vec<_>>().join("\n")
    );
    // A clean stop revokes d's lease: its instance leaves a's answers at
    // once, long before the 60 s TTL would end it.
    let r = d.ctl(&["instance", "add", "web", "d1", "10.61.0.21"]);
    assert!(r.ok(), "{}", r.both());
    until_all(&[&a], Duration::from_secs(15), "d1 on a", |h| has(h, "web.kdns", "10.61.0.21"));
    let mut d = d;
    assert!(d.kdns.stop_with(libc::SIGTERM, Duration::from_secs(10)).is_some(), "d did not stop");
    until_all(&[&a], Duration::from_secs(10), "d1 gone from a after d's clean stop", |h| !has(h, "web.kdns", "10.61.0.21"));
}

/// etcd serving clients over TLS only, client certificates required:
/// hosts with `https://` endpoints, `ca_file`, `cert_file` and `key_file`
/// share records as over plain HTTP.
#[test]
fn tls_with_client_certificates() {
    let _slot = exclusive_slot();
    require_root_and_tools();
    let etcd = Etcd::start_tls();
    let a = Host::start(&etcd, "a", &opts(RECORDS_A));
    let b = Host::start(&etcd, "b", &opts(""));
    until_all(&[&b], Duration::from_secs(15), "a1 on b over TLS", |h| has(h, "web.kdns", "10.61.0.1"));
    let r = b.ctl(&["instance", "add", "web", "b1", "10.61.0.11"]);
    assert!(r.ok(), "{}", r.both());
    until_all(&[&a, &b], Duration::from_secs(15), "b1 on a", |h| has(h, "web.kdns", "10.61.0.11"));
    assert!(a.kdns.plain_log().contains("joined as host a through https://etcd.test:"), "{}", a.kdns.plain_log());
}

/// Each host's checks decide its own instances: host a checks service
/// `hc` (tcp, port 8089) on two addresses of its own; only the one with a
/// listener is answered on b, and b's `kdns-ctl cluster` counts a's
/// instances healthy and not. A listener on the second: b answers it too.
/// b never checks a's instances itself (they are not reachable from b).
#[test]
fn each_hosts_checks_decide_its_instances() {
    let _slot = exclusive_slot();
    require_root_and_tools();
    let etcd = Etcd::start();
    let records = r#"
[[service]]
name = "hc"
check = { kind = "tcp", port = 8089, interval_ms = 200, timeout_ms = 200, rise = 2, fall = 2 }
instances = [{ id = "h1", addrs = ["10.63.0.1"] }, { id = "h2", addrs = ["10.63.0.2"] }]
"#;
    let a = Host::start(&etcd, "a", &opts(records));
    for ip in ["10.63.0.1", "10.63.0.2"] {
        a.server.exec_ok(&["ip", "addr", "add", &format!("{ip}/32"), "dev", "lo"]);
    }
    let _l1 = tcp_listener(&a.server, "10.63.0.1:8089".parse().expect("addr"));
    let b = Host::start(&etcd, "b", &opts(""));
    until_all(&[&a, &b], Duration::from_secs(15), "only h1 answered", |h| h.addrs("hc.kdns") == set_of(&["10.63.0.1"]));
    let v = b.cluster();
    let ha = v["hosts"].as_array().and_then(|hs| hs.iter().find(|h| h["host"] == "a").cloned()).expect("host a");
    assert_eq!((ha["instances"].as_u64(), ha["healthy"].as_u64()), (Some(2), Some(1)), "{v:#}");
    let _l2 = tcp_listener(&a.server, "10.63.0.2:8089".parse().expect("addr"));
    until_all(&[&a, &b], Duration::from_secs(15), "h1 and h2 answered", |h| h.addrs("hc.kdns") == set_of(&["10.63.0.1", "10.63.0.2"]));
}
