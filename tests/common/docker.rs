//! The Docker engine of the Docker tests (`tests/docker.rs`,
//! `tests/docker_provider.rs`): its client, the checks that it can be used,
//! the base image, and guards for what a test creates in it ([`Container`],
//! [`Network`], [`Image`]); [`super::compose`] brings compose stacks up on
//! it.
//!
//! Every command runs under `timeout`; every wait polls with a deadline.
//! What a test creates carries the test process's pid in its name and is
//! removed on drop; what a run that was killed outright (no `Drop`) left is
//! removed by the next run.
//!
//! The client is `/usr/bin/docker`, the one that ships with Debian's engine
//! (`$KDNS_DOCKER` overrides it; /usr/local/bin may hold a newer one).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use super::*;

/// Prefix of compose projects, containers and networks (followed by the
/// test process's pid).
pub const PROJECT_PREFIX: &str = "kdnst";
/// Prefix of image repositories (`kdns-test-<what>:<pid>-<n>`).
pub const IMAGE_PREFIX: &str = "kdns-test-";

/// The docker client: `$KDNS_DOCKER`, else `/usr/bin/docker`.
pub fn docker_bin() -> String {
    std::env::var("KDNS_DOCKER").unwrap_or_else(|_| "/usr/bin/docker".to_string())
}

/// `docker <args>`, killed after `limit`.
pub fn docker(args: &[&str], limit: Duration) -> Run {
    let bin = docker_bin();
    let mut argv = vec![bin.as_str()];
    argv.extend_from_slice(args);
    run_limited(&argv, limit)
}

/// `docker <args>` (120 s at most); panics unless it exits 0.
pub fn docker_ok(args: &[&str]) -> Run {
    let r = docker(args, Duration::from_secs(120));
    assert!(r.ok(), "docker command failed:\n{}", r.both());
    r
}

/// Fails (never skips) unless a Docker test can run: root, the docker
/// client, nsenter, iptables, timeout, debootstrap and setpriv installed,
/// `more` problems of the caller's (e.g. compose missing) and the engine
/// answering. Removes what runs killed outright left behind.
pub fn require_engine(mut more: Vec<String>) {
    let mut problems = Vec::new();
    if !is_root() {
        problems.push("not running as root: the Docker tests need root (the API socket, nsenter)".to_string());
    }
    let bin = docker_bin();
    if !Path::new(&bin).is_file() {
        problems.push(format!("{bin} not found: install docker.io (scripts/setup.sh), or set KDNS_DOCKER"));
    }
    for (t, p) in [
        ("nsenter", "util-linux"),
        ("setpriv", "util-linux"),
        ("iptables", "iptables"),
        ("timeout", "coreutils"),
        ("debootstrap", "debootstrap"),
    ] {
        if find_tool(t).is_none() {
            problems.push(format!("{t} not found (package {p}); run scripts/setup.sh"));
        }
    }
    problems.append(&mut more);
    if problems.is_empty() {
        let v = docker(&["version", "--format", "{{.Server.Version}}"], Duration::from_secs(20));
        if !v.ok() {
            problems.push(format!(
                "the Docker engine does not answer; start it with `scripts/docker-engine.sh start` (scripts/test.sh does):\n{}",
                v.both()
            ));
        }
    }
    if !problems.is_empty() {
        panic!("the Docker tests cannot run here:\n  - {}\n(see tests/README.md)", problems.join("\n  - "));
    }
    sweep_stale();
}

/// A Debian base image made by `scripts/base-image.sh` (debootstrap, cached
/// in /var/cache/kdns-test; nothing is pulled), imported as `tag`.
pub fn base_image(tag: &str) {
    // The first run debootstraps (about a minute); later ones import.
    let script = repo().join("scripts/base-image.sh");
    let r = run_limited(&["env", &format!("DOCKER={}", docker_bin()), script.to_str().expect("utf-8 path"), tag], Duration::from_secs(600));
    assert!(r.ok(), "scripts/base-image.sh {tag} failed:\n{}", r.both());
}

/// A name for a container, network or project of this test process:
/// `kdnst<pid>n<k><suffix>` (removed by the next run if this one is killed).
pub fn unique_name(suffix: &str) -> String {
    format!("{PROJECT_PREFIX}{}n{}{suffix}", std::process::id(), next_id())
}

/// An image tag of this test process: `kdns-test-<what>:<pid>-<k>`.
pub fn unique_image(what: &str) -> String {
    format!("{IMAGE_PREFIX}{what}:{}-{}", std::process::id(), next_id())
}

/// The pid in a name `<prefix><pid>n...` or `<prefix>...:<pid>-...`.
fn pid_of(name: &str) -> Option<u32> {
    if let Some(rest) = name.strip_prefix(PROJECT_PREFIX) {
        return rest.split('n').next()?.parse().ok();
    }
    let tag = name.rsplit_once(':')?.1;
    tag.split('-').next()?.parse().ok()
}

/// Removes containers, networks, volumes and images of test runs whose
/// process no longer exists (killed before their guards ran).
fn sweep_stale() {
    let lines = |args: &[&str]| -> Vec<String> {
        let r = docker(args, Duration::from_secs(30));
        r.stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
    };
    let mut projects = BTreeSet::new();
    // Containers: of a compose project of ours, or started by a test with
    // `docker run --name kdnst<pid>n...`.
    for l in lines(&["ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Label \"com.docker.compose.project\"}}"]) {
        let f: Vec<&str> = l.split_whitespace().collect();
        let Some(id) = f.first() else { continue };
        if let Some(stale) = f[1..].iter().find(|n| pid_of(n).is_some_and(gone)) {
            projects.insert(stale.to_string());
            let _ = docker(&["rm", "-f", "-v", id], Duration::from_secs(60));
        }
    }
    for l in lines(&["network", "ls", "--format", "{{.Name}}"]) {
        if pid_of(&l).is_some_and(gone) || l.strip_suffix("_dnsnet").and_then(pid_of).is_some_and(gone) {
            let _ = docker(&["network", "rm", &l], Duration::from_secs(30));
        }
    }
    for l in lines(&["volume", "ls", "--format", "{{.Name}}"]) {
        if pid_of(&l).is_some_and(gone) {
            let _ = docker(&["volume", "rm", &l], Duration::from_secs(30));
        }
    }
    for l in lines(&["images", "--format", "{{.Repository}}:{{.Tag}}"]) {
        if l.starts_with(IMAGE_PREFIX) && pid_of(&l).is_some_and(gone) {
            let _ = docker(&["rmi", "-f", &l], Duration::from_secs(60));
        }
    }
    for p in projects {
        eprintln!("docker harness: removed stale container(s) of {p} (its test process is gone)");
    }
}

/// `scripts/docker-engine.sh <cmd>` (120 s at most).
pub fn engine(cmd: &str) -> Run {
    let script = repo().join("scripts/docker-engine.sh");
    run_limited(&["env", &format!("DOCKER={}", docker_bin()), script.to_str().unwrap(), cmd], Duration::from_secs(120))
}

/// Panics unless dockerd was started by scripts/docker-engine.sh (only
/// such an engine is ever stopped or restarted by the tests).
pub fn require_engine_started_by_script() {
    let st = engine("status");
    assert!(
        st.ok() && st.stdout.contains("started by this script"),
        "this test stops and restarts dockerd, which the tests do only to an engine scripts/docker-engine.sh started \
         (scripts/test.sh starts one when none runs); the engine here was not:\n{}\n\
         stop it (e.g. systemctl stop docker docker.socket) and run scripts/test.sh, or `scripts/docker-engine.sh start`",
        st.both()
    );
    require_engine_not_shared();
}

/// Panics if containers other than this test process's run on the engine:
/// stopping it would cut off whoever uses it (their containers keep
/// running under --live-restore, but nothing can talk to them meanwhile).
pub fn require_engine_not_shared() {
    let others = docker_ok(&["ps", "--format", "{{.Names}}"]).stdout;
    let ours = format!("{PROJECT_PREFIX}{}n", std::process::id());
    let others: Vec<&str> = others.lines().map(str::trim).filter(|n| !n.is_empty() && !n.starts_with(&ours)).collect();
    assert!(
        others.is_empty(),
        "this test stops and restarts dockerd, but containers it did not start run on it: {others:?}; \
         run it when the engine is not in use by anything else"
    );
}

/// dockerd stopped by scripts/docker-engine.sh: started again on drop (a
/// failing test must not leave the engine down).
#[derive(Debug)]
pub struct EngineStopped {
    started: bool,
}

impl EngineStopped {
    pub fn stop() -> EngineStopped {
        require_engine_not_shared();
        let r = engine("stop");
        assert!(r.ok(), "scripts/docker-engine.sh stop:\n{}", r.both());
        EngineStopped { started: false }
    }

    pub fn start(mut self) {
        let r = engine("start");
        self.started = true;
        assert!(r.ok(), "scripts/docker-engine.sh start:\n{}", r.both());
    }
}

impl Drop for EngineStopped {
    fn drop(&mut self) {
        if !self.started {
            let r = engine("start");
            if !r.ok() {
                eprintln!("could not start dockerd again:\n{}", r.both());
            }
        }
    }
}

/// A container started with `docker run` by a test: removed on drop.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    pub name: String,
}

impl Container {
    /// `docker run -d --name <name> <args>`.
    pub fn run(name: &str, args: &[&str]) -> Container {
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(args);
        let r = docker_ok(&a);
        Container { id: r.stdout.trim().to_string(), name: name.to_string() }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.id], Duration::from_secs(60));
    }
}

/// A Docker network created by a test: removed on drop (after the
/// containers on it, which are dropped first).
#[derive(Debug)]
pub struct Network {
    pub name: String,
}

impl Network {
    /// `docker network create <args> <name>`.
    pub fn create(name: &str, args: &[&str]) -> Network {
        docker_ok(&[&["network", "create"][..], args, &[name]].concat());
        Network { name: name.to_string() }
    }

    /// `docker network create <args> <name>`, `None` if the engine refuses
    /// (e.g. a subnet that overlaps another network's).
    pub fn try_create(name: &str, args: &[&str]) -> Option<Network> {
        docker(&[&["network", "create"][..], args, &[name]].concat(), Duration::from_secs(120))
            .ok()
            .then(|| Network { name: name.to_string() })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker(&["network", "rm", &self.name], Duration::from_secs(30));
    }
}

/// An image tag a test made: removed on drop.
#[derive(Debug)]
pub struct Image {
    pub tag: String,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker(&["rmi", "-f", &self.tag], Duration::from_secs(60));
    }
}
