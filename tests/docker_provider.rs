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
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

const DOCKER: &str = "/usr/bin/docker";
const SOCKET: &str = "/var/run/docker.sock";
/// How long an answer may take to follow the engine (typically well under
/// a second; generous for a loaded machine).
const FOLLOW: Duration = Duration::from_secs(15);

fn docker(args: &[&str]) -> Run {
    let mut argv = vec![DOCKER];
    argv.extend_from_slice(args);
    run_limited(&argv, Duration::from_secs(120))
}

fn docker_ok(args: &[&str]) -> Run {
    let r = docker(args);
    assert!(r.ok(), "docker command failed:\n{}", r.both());
    r
}

fn require_engine() {
    require_root_and_tools();
    let r = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        r.ok(),
        "no Docker engine answers on {SOCKET} (start it with scripts/docker-engine.sh start, or install docker.io with scripts/setup.sh):\n{}",
        r.both()
    );
}

/// What a test created in the engine; removed on drop.
#[derive(Default)]
struct Created {
    containers: Vec<String>,
    networks: Vec<String>,
    images: Vec<String>,
}

impl Drop for Created {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for n in &self.networks {
            let _ = docker(&["network", "rm", n]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
    }
}

/// A Debian base image under a tag of this test process (scripts/base-image.sh).
fn base_image(created: &mut Created) -> String {
    let tag = format!("kdns-test-base:p{}-{}", std::process::id(), next_id());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/base-image.sh");
    let r = run_limited(&[script.to_str().expect("utf-8"), &tag], Duration::from_secs(600));
    assert!(r.ok(), "cannot make the base image:\n{}", r.both());
    created.images.push(tag.clone());
    tag
}

/// A kdns started directly (to run it as another user), killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn records_file(dir: &TempDir) -> PathBuf {
    let p = dir.join("records.toml");
    std::fs::write(&p, "[[record]]\nname = \"db.kdns\"\ntype = \"A\"\ndata = \"10.5.0.1\"\n").expect("records file");
    p
}

/// kdns in `ns` on 127.0.0.1:`port` with the records file and `docker`,
/// the arguments that turn the Docker provider on (`--docker-socket P` or
/// `--config F`); `as_nobody` drops to user nobody first.
fn start_kdns(ns: &Netns, dir: &TempDir, port: u16, docker: &[&str], as_nobody: bool) -> Proc {
    let log = dir.join(&format!("kdns-{port}.log"));
    let file = std::fs::File::create(&log).expect("log");
    let bin = kdns_bin();
    let records = records_file(dir);
    let mut argv: Vec<String> = Vec::new();
    if as_nobody {
        argv.extend(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"].map(String::from));
    }
    argv.push(bin.display().to_string());
    let listen = format!("127.0.0.1:{port}");
    let control = dir.join(&format!("control-{port}.sock"));
    argv.extend(
        [
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
            "--control-socket",
            control.to_str().expect("utf-8"),
        ]
        .map(String::from),
    );
    argv.extend(docker.iter().map(|a| a.to_string()));
    let args: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut c = ns.command(&args);
    c.env_remove("RUST_LOG").stdin(Stdio::null()).stdout(file.try_clone().expect("dup")).stderr(file);
    let child = c.spawn().expect("start kdns");
    Proc { child, log }
}

fn a_records(ns: &Netns, port: u16, name: &str) -> (String, BTreeSet<String>) {
    let a = dig(ns, &["@127.0.0.1", "-p", &port.to_string(), name, "A"]);
    (a.status.clone(), a.rdata("A").into_iter().collect())
}

fn wait_answer(ns: &Netns, port: u16, name: &str, want: &[&str], what: &str, log: &dyn Fn() -> String) {
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let mut last = (String::new(), BTreeSet::new());
    let ok = poll_until(FOLLOW, Duration::from_millis(100), || {
        last = a_records(ns, port, name);
        (last.0 == "NOERROR" && last.1 == want || want.is_empty() && last.0 == "NXDOMAIN").then_some(())
    });
    assert!(ok.is_some(), "{what}: {name} should answer {want:?}, got {} {:?}\nkdns log:\n{}", last.0, last.1, log());
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
    require_engine();
    let _slot = shared_slot();
    let id = next_id();
    let ns = Netns::new(id, "p");
    let dir = TempDir::new("provider");

    // 1. No socket (yet).
    let missing = dir.join("missing.sock");
    // 2. A socket file nobody listens on: what a stopped dockerd leaves.
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("bind"));
    // 3. The real engine's socket behind a directory only root may enter.
    let closed = dir.join("closed");
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
    let procs: Vec<Proc> = cases
        .iter()
        .map(|(port, sock, nobody, _)| start_kdns(&ns, &dir, *port, &["--docker-socket", sock.to_str().expect("utf-8")], *nobody))
        .collect();
    for ((port, _, _, _), p) in cases.iter().zip(&procs) {
        wait_answer(&ns, *port, "db.kdns", &["10.5.0.1"], "the records file is served without the engine", &|| p.log());
    }
    // Attempts at about 0, 1, 3 and 7 s: one line, whatever the number of retries.
    std::thread::sleep(Duration::from_secs(4));
    for ((port, sock, _, needle), p) in cases.iter().zip(&procs) {
        let log = p.log();
        println!("--- kdns on port {port} ({}):\n{log}", sock.display());
        assert_eq!(count(&log, needle), 1, "exactly one line saying '{needle}':\n{log}");
        assert!(log.contains("retrying with backoff"), "{log}");
        assert!(!log.contains("panicked"), "{log}");
        assert_eq!(a_records(&ns, *port, "db.kdns").1, BTreeSet::from(["10.5.0.1".to_string()]), "still served");
    }
    // The socket appears: kdns connects within its backoff (<= 8 s here).
    std::os::unix::fs::symlink(SOCKET, &missing).expect("link");
    let ok = poll_until(Duration::from_secs(20), Duration::from_millis(200), || {
        procs[0].log().contains("Docker provider: connected to Docker").then_some(())
    });
    assert!(ok.is_some(), "kdns did not connect once the socket was there:\n{}", procs[0].log());
    assert_eq!(a_records(&ns, 5301, "db.kdns").1, BTreeSet::from(["10.5.0.1".to_string()]));
}

/// Plain `docker run` containers on a network of the test's: each change
/// the engine makes reaches the answers, names that are not DNS labels are
/// skipped with a warning naming the container, a container elsewhere is
/// not served, and a new kdns rebuilds everything from the engine.
#[test]
fn plain_containers_follow_the_engine() {
    require_engine();
    let _slot = shared_slot();
    let id = next_id();
    let pid = std::process::id();
    let mut created = Created::default();
    let image = base_image(&mut created);
    // A /24 of 10.213.0.0/16 per run; the engine refuses an overlap, so a
    // concurrent run takes the next one.
    let net = format!("kdnsp{pid}-{id}");
    let mut subnet = String::new();
    for k in 0..50 {
        let s = format!("10.213.{}.0/24", (pid as usize + k) % 250);
        if docker(&["network", "create", "--subnet", &s, "--label", "kdns-test=provider", &net]).ok() {
            subnet = s;
            break;
        }
    }
    assert!(!subnet.is_empty(), "could not create a test network");
    created.networks.push(net.clone());
    let other = format!("kdnsp{pid}-{id}-other");
    docker_ok(&["network", "create", "--label", "kdns-test=provider", &other]);
    created.networks.push(other.clone());

    let ns = Netns::new(id, "d");
    let dir = TempDir::new("provider-events");
    let conf = dir.join("kdns.toml");
    std::fs::write(&conf, format!("[docker]\nenabled = true\nnetworks = [\"{net}\"]\n")).expect("conf");
    let start = |port: u16| start_kdns(&ns, &dir, port, &["--config", conf.to_str().expect("utf-8")], false);
    let kdns = start(5301);
    let port = 5301;
    let log = || kdns.log();
    wait_answer(&ns, port, "db.kdns", &["10.5.0.1"], "kdns is up", &log);

    let name = |s: &str| format!("kp{pid}-{id}-{s}");
    let run = |created: &mut Created, n: &str, extra: &[&str]| -> String {
        let mut args = vec!["run", "-d", "--name", n, "--network", &net, "--label", "kdns.service=api"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image.as_str(), "sleep", "600"]);
        let r = docker_ok(&args);
        created.containers.push(n.to_string());
        r.stdout.trim().to_string()
    };
    let ip_of = |n: &str| -> String {
        let r = docker_ok(&["inspect", "-f", &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"), n]);
        r.stdout.trim().to_string()
    };
    let (a, b) = (name("a"), name("b"));
    run(&mut created, &a, &["--network-alias", "shared"]);
    run(&mut created, &b, &["--network-alias", "shared"]);
    let (ip_a, ip_b) = (ip_of(&a), ip_of(&b));
    wait_answer(&ns, port, "api.kdns", &[&ip_a, &ip_b], "two containers of service api", &log);
    wait_answer(&ns, port, "api-1.kdns", &[&ip_a], "numbered by age", &log);
    wait_answer(&ns, port, &format!("{a}.kdns"), &[&ip_a], "container name", &log);
    wait_answer(&ns, port, "shared.kdns", &[&ip_a, &ip_b], "a network alias of both", &log);

    // Rename: the new name answers, the old one no longer.
    let a2 = name("a2");
    docker_ok(&["rename", &a, &a2]);
    created.containers.push(a2.clone());
    wait_answer(&ns, port, &format!("{a2}.kdns"), &[&ip_a], "renamed", &log);
    wait_answer(&ns, port, &format!("{a}.kdns"), &[], "old name gone", &log);

    // Network disconnect and connect.
    docker_ok(&["network", "disconnect", &net, &b]);
    wait_answer(&ns, port, "api.kdns", &[&ip_a], "b disconnected", &log);
    docker_ok(&["network", "connect", &net, &b]);
    let ip_b = ip_of(&b);
    wait_answer(&ns, port, "api.kdns", &[&ip_a, &ip_b], "b connected again", &log);

    // Bad names: skipped, and the log names the container.
    let bad = name("bad");
    run(&mut created, &bad, &["--label", "kdns.service=bad_name!"]);
    let dotted = name("x.y");
    let r = docker_ok(&["run", "-d", "--name", &dotted, "--network", &net, &image, "sleep", "600"]);
    created.containers.push(dotted.clone());
    let _ = r;
    // Off the served network: not served.
    let off = name("off");
    docker_ok(&["run", "-d", "--name", &off, "--network", &other, "--label", "kdns.service=offnet", &image, "sleep", "600"]);
    created.containers.push(off.clone());
    let ok = poll_until(FOLLOW, Duration::from_millis(200), || {
        let l = log();
        (l.contains(&format!("Docker container {bad} (")) && l.contains(&format!("Docker container {dotted} ("))).then_some(())
    });
    assert!(ok.is_some(), "no warning naming the bad containers:\n{}", log());
    let l = log();
    assert!(l.contains("label kdns.service 'bad_name!' is not a valid DNS label"), "{l}");
    assert!(l.contains(&format!("container name '{dotted}' is not a valid DNS label")), "{l}");
    assert_eq!(a_records(&ns, port, "offnet.kdns").0, "NXDOMAIN", "a container on another network is not served");
    assert_eq!(a_records(&ns, port, "api.kdns").1, BTreeSet::from([ip_a.clone(), ip_b.clone()]), "the bad ones are not api");

    // A new kdns rebuilds the Docker records from the engine.
    drop(kdns);
    let kdns2 = start(5302);
    let log2 = || kdns2.log();
    wait_answer(&ns, 5302, "api.kdns", &[&ip_a, &ip_b], "a new kdns resyncs", &log2);
    wait_answer(&ns, 5302, &format!("{a2}.kdns"), &[&ip_a], "names too", &log2);

    // kill and stop: gone from the answers.
    docker_ok(&["kill", &a2]);
    wait_answer(&ns, 5302, "api.kdns", &[&ip_b], "killed", &log2);
    docker_ok(&["stop", "-t", "1", &b]);
    wait_answer(&ns, 5302, "api.kdns", &[], "stopped: no instance left", &log2);
    let l = log2();
    println!("--- kdns log:\n{l}");
    assert!(l.contains(&format!("api-1 ({a2}) left api")), "the log says who left:\n{l}");
}
