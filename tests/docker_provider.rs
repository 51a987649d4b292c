//! The Docker provider against the real engine, without compose: kdns runs
//! in a network namespace of its own (its queries stay there) and reaches
//! the engine through its API socket, a file path; containers are started
//! with plain `docker run` on a network the test creates. What the compose
//! stack covers (scaling, healthchecks in compose, a dockerd restart) is in
//! tests/docker.rs; this file covers what a plain engine does to a
//! container (rename, network connect and disconnect, kill, stop), names
//! that are not DNS labels, containers off the served network, a kdns
//! restart, and an engine that cannot be reached.
//!
//! Needs root, the Debian packages of scripts/setup.sh and a Docker engine
//! answering on /var/run/docker.sock (scripts/docker-engine.sh start, which
//! scripts/test.sh runs). Fails, never skips, without them. Everything it
//! creates (containers, the network, the base image tag) carries the test
//! process's pid and is removed on drop.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::docker::*;
use common::*;

/// The engine's API socket.
const SOCKET: &str = "/var/run/docker.sock";
/// How long an answer may take to follow the engine (typically well under
/// a second; generous for a loaded machine).
const FOLLOW: Duration = Duration::from_secs(15);

/// The records file: one static record, served with or without the engine.
fn records_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let p = dir.path().join("records.toml");
    std::fs::write(&p, "[[record]]\nname = \"db.kdns\"\ntype = \"A\"\ndata = \"10.5.0.1\"\n").expect("records file");
    p
}

/// kdns in `ns` on 127.0.0.1:`port` with the records file and `docker`,
/// the arguments that turn the Docker provider on (`--docker-socket P` or
/// `--config F`); `as_nobody` drops to user nobody first.
fn start_kdns(ns: &Netns, dir: &tempfile::TempDir, port: u16, docker: &[&str], as_nobody: bool) -> Kdns {
    let records = records_file(dir);
    let listen = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = [
        "--io",
        "udp",
        "--workers",
        "1",
        "--listen",
        &listen,
        "--backend",
        "127.0.0.1:9",
        "--domain",
        "kdns",
        "--records-file",
        records.to_str().expect("utf-8"),
        "--state-file",
        "",
    ]
    .map(String::from)
    .to_vec();
    args.extend(docker.iter().map(|a| a.to_string()));
    let nobody: &[&str] = if as_nobody { &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"] } else { &[] };
    Kdns::spawn_as(ns, nobody, &args)
}

fn a_records(ns: &Netns, port: u16, name: &str) -> (String, BTreeSet<String>) {
    let a = dig(ns, &["@127.0.0.1", "-p", &port.to_string(), name, "A"]);
    (a.status.clone(), a.rdata("A").into_iter().collect())
}

/// Polls until `name` answers exactly `want` (NXDOMAIN for an empty
/// `want`), within [`FOLLOW`]; panics with kdns's log otherwise.
fn wait_answer(ns: &Netns, port: u16, name: &str, want: &[&str], what: &str, kdns: &Kdns) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let mut last = (String::new(), BTreeSet::new());
    let ok = poll_until(FOLLOW, Duration::from_millis(100), || {
        last = a_records(ns, port, name);
        (last.0 == "NOERROR" && last.1 == want || want.is_empty() && last.0 == "NXDOMAIN").then_some(())
    });
    assert!(ok.is_some(), "{what}: {name} should answer {want:?}, got {} {:?}\nkdns log:\n{}", last.0, last.1, kdns.plain_log());
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// No socket, a socket nobody listens on (dockerd down), a socket kdns may
/// not open: one clear log line each, retries with backoff, and the other
/// records are served all along. The missing socket then appears (a link
/// to the real engine's): kdns connects and says so.
#[test]
fn an_engine_that_cannot_be_reached_is_said_once_and_retried() {
    require_root_and_tools();
    require_engine(Vec::new());
    let _slot = shared_slot();
    let id = next_id();
    let ns = Netns::new(id, "p");
    let dir = temp_dir("provider");

    // 1. No socket (yet).
    let missing = dir.path().join("missing.sock");
    // 2. A socket file nobody listens on: what a stopped dockerd leaves.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    // 3. The real engine's socket behind a directory only root may enter.
    let closed = dir.path().join("closed");
    std::fs::create_dir(&closed).expect("dir");
    std::os::unix::fs::symlink(SOCKET, closed.join("docker.sock")).expect("link");
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // kdns runs as nobody there: its own files must be reachable.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");

    let cases = [
        (5301, missing.clone(), false, "no Docker API socket at"),
        (5302, stale.clone(), false, "nothing listens on the Docker API socket"),
        (5303, closed.join("docker.sock"), true, "permission denied on the Docker API socket"),
    ];
    let procs: Vec<Kdns> = cases
        .iter()
        .map(|(port, sock, nobody, _)| start_kdns(&ns, &dir, *port, &["--docker-socket", sock.to_str().expect("utf-8")], *nobody))
        .collect();
    for ((port, _, _, _), p) in cases.iter().zip(&procs) {
        wait_answer(&ns, *port, "db.kdns", &["10.5.0.1"], "the records file is served without the engine", p);
    }
    // Attempts at about 0, 1, 3 and 7 s: one line, whatever the number of retries.
    std::thread::sleep(Duration::from_secs(4));
    for ((port, sock, _, needle), p) in cases.iter().zip(&procs) {
        let log = p.plain_log();
        println!("--- kdns on port {port} ({}):\n{log}", sock.display());
        assert_eq!(count(&log, needle), 1, "exactly one line saying '{needle}':\n{log}");
        assert!(log.contains("retrying with backoff"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
        assert_eq!(a_records(&ns, *port, "db.kdns").1, BTreeSet::from(["10.5.0.1".to_string()]), "still served");
    }
    // The socket appears: kdns connects within its backoff (<= 8 s here).
    std::os::unix::fs::symlink(SOCKET, &missing).expect("link");
    let ok = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        procs[0].plain_log().contains("Docker provider: connected to Docker").then_some(())
    });
    assert!(ok.is_some(), "kdns did not connect once the socket was there:\n{}", procs[0].plain_log());
    assert_eq!(a_records(&ns, 5301, "db.kdns").1, BTreeSet::from(["10.5.0.1".to_string()]));
}

/// Plain `docker run` containers on a network of the test's: each change
/// the engine makes reaches the answers, names that are not DNS labels are
/// skipped with a warning naming the container, a container elsewhere is
/// not served, and a new kdns rebuilds everything from the engine.
#[test]
fn plain_containers_follow_the_engine() {
    require_root_and_tools();
    require_engine(Vec::new());
    let _slot = shared_slot();
    let id = next_id();
    let pid = std::process::id();
    let image = Image { tag: unique_image("base") };
    base_image(&image.tag);
    // A /24 of 10.213.0.0/16 per run; the engine refuses an overlap, so a
    // concurrent run takes the next one.
    let net = unique_name("");
    let _served = (0..50)
        .find_map(|k| {
            let s = format!("10.213.{}.0/24", (pid as usize + k) % 250);
            Network::try_create(&net, &["--subnet", &s, "--label", "kdns-test=provider"])
        })
        .expect("could not create a test network");
    let other = Network::create(&unique_name("-other"), &["--label", "kdns-test=provider"]);

    let ns = Netns::new(id, "d");
    let dir = temp_dir("provider-events");
    let conf = dir.path().join("kdns.toml");
    std::fs::write(&conf, format!("[docker]\nenabled = true\nnetworks = [\"{net}\"]\n")).expect("conf");
    let start = |port: u16| start_kdns(&ns, &dir, port, &["--config", conf.to_str().expect("utf-8")], false);
    let kdns = start(5301);
    let port = 5301;
    wait_answer(&ns, port, "db.kdns", &["10.5.0.1"], "kdns is up", &kdns);

    let name = |s: &str| unique_name(&format!("-{s}"));
    let run = |n: &str, net: &str, extra: &[&str]| -> Container {
        let args = [&["--network", net][..], extra, &[image.tag.as_str(), "sleep", "600"]].concat();
        Container::run(n, &args)
    };
    let ip_of = |n: &str| -> String {
        let r = docker_ok(&["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"), n]);
        r.stdout.trim().to_string()
    };
    let (a, b) = (name("a"), name("b"));
    let _ca = run(&a, &net, &["--label", "kdns.service=api", "--network-alias", "shared"]);
    let _cb = run(&b, &net, &["--label", "kdns.service=api", "--network-alias", "shared"]);
    let (ip_a, ip_b) = (ip_of(&a), ip_of(&b));
    wait_answer(&ns, port, "api.kdns", &[&ip_a, &ip_b], "two containers of service api", &kdns);
    wait_answer(&ns, port, "api-1.kdns", &[&ip_a], "numbered by age", &kdns);
    wait_answer(&ns, port, &format!("{a}.kdns"), &[&ip_a], "container name", &kdns);
    wait_answer(&ns, port, "shared.kdns", &[&ip_a, &ip_b], "a network alias of both", &kdns);

    // Rename: the new name answers, the old one no longer.
    let a2 = name("a2");
    docker_ok(&["rename", &a, &a2]);
    wait_answer(&ns, port, &format!("{a2}.kdns"), &[&ip_a], "renamed", &kdns);
    wait_answer(&ns, port, &format!("{a}.kdns"), &[], "old name gone", &kdns);

    // Network disconnect and connect.
    docker_ok(&["network", "disconnect", &net, &b]);
    wait_answer(&ns, port, "api.kdns", &[&ip_a], "b disconnected", &kdns);
    docker_ok(&["network", "connect", &net, &b]);
    let ip_b = ip_of(&b);
    wait_answer(&ns, port, "api.kdns", &[&ip_a, &ip_b], "b connected again", &kdns);

    // Bad names: skipped, and the log names the container.
    let bad = name("bad");
    let _cbad = run(&bad, &net, &["--label", "kdns.service=bad_name!"]);
    let dotted = name("x.y");
    let _cdotted = run(&dotted, &net, &[]);
    // Off the served network: not served.
    let _coff = run(&name("off"), &other.name, &["--label", "kdns.service=offnet"]);
    let ok = poll_until(FOLLOW, Duration::from_millis(200), || {
        let l = kdns.plain_log();
        (l.contains(&format!("Docker container {bad} (")) && l.contains(&format!("Docker container {dotted} ("))).then_some(())
    });
    assert!(ok.is_some(), "no warning naming the bad containers:\n{}", kdns.plain_log());
    let l = kdns.plain_log();
    assert!(l.contains("label kdns.service 'bad_name!' is not a valid DNS label"), "{l}");
    assert!(l.contains(&format!("container name '{dotted}' is not a valid DNS label")), "{l}");
    assert_eq!(a_records(&ns, port, "offnet.kdns").0, "NXDOMAIN", "a container on another network is not served");
    assert_eq!(a_records(&ns, port, "api.kdns").1, BTreeSet::from([ip_a.clone(), ip_b.clone()]), "the bad ones are not api");

    // A new kdns rebuilds the Docker records from the engine.
    drop(kdns);
    let kdns2 = start(5302);
    wait_answer(&ns, 5302, "api.kdns", &[&ip_a, &ip_b], "a new kdns resyncs", &kdns2);
    wait_answer(&ns, 5302, &format!("{a2}.kdns"), &[&ip_a], "names too", &kdns2);

    // kill and stop: gone from the answers.
    docker_ok(&["kill", &a2]);
    wait_answer(&ns, 5302, "api.kdns", &[&ip_b], "killed", &kdns2);
    docker_ok(&["stop", "-t", "1", &b]);
    wait_answer(&ns, 5302, "api.kdns", &[], "stopped: no instance left", &kdns2);
    let l = kdns2.plain_log();
    println!("--- kdns log:\n{l}");
    assert!(l.contains(&format!("api-1 ({a2}) left api")), "the log says who left:\n{l}");
}
