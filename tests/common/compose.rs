//! `compose.yaml` on the real Docker engine ([`super::docker`]), for
//! `tests/docker.rs` (Debian's docker.io with docker-compose 1.29 here).
//!
//! - [`require_compose`] fails (never skips) unless the engine can be used
//!   ([`require_engine`]), docker-compose is installed, and no other
//!   network holds dnsnet's fixed subnet.
//! - [`Images`] imports the Debian base image and builds the compose
//!   images from `deploy/Dockerfile` with BuildKit, kdns from the binaries
//!   of the cargo target dir these tests run from (target `kdns-host`),
//!   under unique tags; every tag is removed on drop.
//! - [`Stack`] brings compose.yaml up (plus test-only override files) as a
//!   unique project with a unique network name and those images, and takes
//!   it down on drop (`down -v --rmi all`, then anything left with the
//!   project's label), printing the logs first when the test failed.
//!
//! Compose is `docker-compose` (`$KDNS_COMPOSE`, split on spaces, overrides
//! it, e.g. `KDNS_COMPOSE="docker compose"`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::docker::*;
use super::*;

/// dnsnet's subnet in compose.yaml (fixed: one stack at a time).
pub const SUBNET: &str = "172.30.53.0/24";
/// kdns's address on dnsnet.
pub const KDNS_ADDR: &str = "172.30.53.53";
/// The Unbounds of the pool.
pub const POOL: [&str; 2] = ["172.30.53.11", "172.30.53.12"];
/// How long the stack may take to serve after `up`.
const STACK_READY_WITHIN: Duration = Duration::from_secs(60);

static STACK: Mutex<()> = Mutex::new(());

/// Held by every test that brings a stack up: they share dnsnet's fixed
/// subnet, so only one stack exists at a time.
pub fn one_stack_at_a_time() -> MutexGuard<'static, ()> {
    STACK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The compose command: `$KDNS_COMPOSE` (split on spaces), else
/// `docker-compose`.
pub fn compose_argv() -> Vec<String> {
    match std::env::var("KDNS_COMPOSE") {
        Ok(c) if !c.trim().is_empty() => c.split_whitespace().map(str::to_string).collect(),
        _ => vec![find_tool("docker-compose").map_or_else(|| "docker-compose".to_string(), |p| p.display().to_string())],
    }
}

/// Fails (never skips) unless the compose tests can run: the engine
/// ([`require_engine`]), compose installed, and no other network holding
/// dnsnet's subnet.
pub fn require_compose() {
    let compose = compose_argv();
    let mut more = Vec::new();
    if !Path::new(&compose[0]).is_file() && find_tool(&compose[0]).is_none() {
        more.push(format!("{} not found: install docker-compose (scripts/setup.sh), or set KDNS_COMPOSE", compose[0]));
    }
    require_engine(more);
    // dnsnet's subnet is fixed: another stack (a user's compose project, or
    // a concurrent test run) holding it would make `up` fail obscurely.
    for net in docker_ok(&["network", "ls", "-q"]).stdout.split_whitespace() {
        let r = docker(&["network", "inspect", "-f", "{{.Name}} {{range .IPAM.Config}}{{.Subnet}} {{end}}", net], Duration::from_secs(20));
        if r.ok() && r.stdout.split_whitespace().skip(1).any(|s| s == SUBNET) {
            panic!(
                "Docker network {} already holds dnsnet's subnet {SUBNET} (a kdns compose stack is running?): \
                 the Docker tests bring compose.yaml up themselves; stop it first",
                r.stdout.split_whitespace().next().unwrap_or(net)
            );
        }
    }
}

/// The images of one stack, under tags unique to this test: removed on drop.
#[derive(Debug)]
pub struct Images {
    pub base: String,
    pub kdns: String,
    pub unbound: String,
    pub client: String,
}

impl Images {
    /// Imports the base image and builds the three compose images.
    pub fn build() -> Images {
        let tag = format!("{}-{}", std::process::id(), next_id());
        let im = Images {
            base: format!("{IMAGE_PREFIX}base:{tag}"),
            kdns: format!("{IMAGE_PREFIX}kdns:{tag}"),
            unbound: format!("{IMAGE_PREFIX}unbound:{tag}"),
            client: format!("{IMAGE_PREFIX}client:{tag}"),
        };
        base_image(&im.base);
        // kdns-host copies kdns and kdns-ctl from the context: the cargo
        // target dir these tests were built in (BuildKit sends only them).
        let ctx = kdns_ctl_bin().parent().expect("target dir").to_path_buf();
        let dockerfile = repo().join("deploy/Dockerfile");
        for (target, image) in [("kdns-host", &im.kdns), ("unbound", &im.unbound), ("client", &im.client)] {
            let r = run_limited(
                &[
                    "env",
                    "DOCKER_BUILDKIT=1",
                    &docker_bin(),
                    "build",
                    "-q",
                    "-f",
                    dockerfile.to_str().unwrap(),
                    "--build-arg",
                    &format!("BASE={}", im.base),
                    "--target",
                    target,
                    "-t",
                    image,
                    ctx.to_str().unwrap(),
                ],
                Duration::from_secs(600),
            );
            assert!(r.ok(), "building target {target} of deploy/Dockerfile failed:\n{}", r.both());
        }
        im
    }

    fn all(&self) -> [&str; 4] {
        [&self.kdns, &self.unbound, &self.client, &self.base]
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for i in self.all() {
            let _ = docker(&["rmi", "-f", i], Duration::from_secs(60));
        }
    }
}

// ---------------------------------------------------------------------------
// The compose stack
// ---------------------------------------------------------------------------

/// compose.yaml (unmodified) plus test-only override files, up as project
/// `kdnst<pid>n<k>`.
#[derive(Debug)]
pub struct Stack {
    pub project: String,
    /// The Docker network dnsnet is created as.
    pub network: String,
    files: Vec<PathBuf>,
    pub images: Images,
}

impl Stack {
    /// Builds the images and runs `up -d` with compose.yaml and `extra`
    /// (paths relative to the repository), then waits until kdns answers
    /// the client.
    pub fn up(extra: &[&str]) -> Stack {
        let images = Images::build();
        let project = unique_name("");
        let mut files = vec![repo().join("compose.yaml")];
        files.extend(extra.iter().map(|f| repo().join(f)));
        let stack = Stack { network: format!("{project}_dnsnet"), project, files, images };
        let r = stack.compose(&["up", "-d", "--no-build"], Duration::from_secs(180));
        assert!(r.ok(), "compose up failed:\n{}", r.both());
        stack.wait_ready();
        stack
    }

    /// `compose -p <project> -f ... <args>` with the image and network
    /// names in its environment, killed after `limit`.
    pub fn compose(&self, args: &[&str], limit: Duration) -> Run {
        let env = [
            format!("KDNS_IMAGE={}", self.images.kdns),
            format!("KDNS_UNBOUND_IMAGE={}", self.images.unbound),
            format!("KDNS_CLIENT_IMAGE={}", self.images.client),
            format!("KDNS_NETWORK={}", self.network),
            // compose 1.29 builds with the docker CLI of PATH; never here
            // (--no-build), but keep it on Debian's client all the same.
            format!("PATH=/usr/bin:/usr/sbin:/bin:/sbin:{}", std::env::var("PATH").unwrap_or_default()),
        ];
        let compose = compose_argv();
        let mut argv: Vec<&str> = vec!["env"];
        argv.extend(env.iter().map(String::as_str));
        argv.extend(compose.iter().map(String::as_str));
        argv.extend(["-p", &self.project]);
        for f in &self.files {
            argv.extend(["-f", f.to_str().expect("utf-8 path")]);
        }
        argv.extend_from_slice(args);
        run_limited(&argv, limit)
    }

    /// [`Stack::compose`] (180 s at most); panics unless it exits 0.
    pub fn compose_ok(&self, args: &[&str]) -> Run {
        let r = self.compose(args, Duration::from_secs(180));
        assert!(r.ok(), "compose command failed:\n{}\n{}", r.both(), self.ps());
        r
    }

    /// Ids of the containers of `service` (running or not).
    pub fn containers(&self, service: &str) -> Vec<String> {
        let r = docker_ok(&[
            "ps",
            "-a",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
            "--filter",
            &format!("label=com.docker.compose.service={service}"),
        ]);
        r.stdout.split_whitespace().map(str::to_string).collect()
    }

    /// The id of the (single) container of `service`.
    pub fn container(&self, service: &str) -> String {
        let c = self.containers(service);
        assert_eq!(c.len(), 1, "service {service} has {} containers, expected 1:\n{}", c.len(), self.ps());
        c[0].clone()
    }

    /// `docker inspect` of a container, parsed.
    pub fn inspect(&self, container: &str) -> Value {
        let r = docker_ok(&["inspect", container]);
        let v: Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("docker inspect printed invalid JSON ({e}):\n{}", r.both()));
        v[0].clone()
    }

    /// The container's address on dnsnet ("" if it has none).
    pub fn address(&self, container: &str) -> String {
        self.inspect(container)["NetworkSettings"]["Networks"][&self.network]["IPAddress"].as_str().unwrap_or("").to_string()
    }

    /// `docker exec <container> <argv>`, killed after `limit`.
    pub fn exec(&self, container: &str, argv: &[&str], limit: Duration) -> Run {
        let mut a = vec!["exec", container];
        a.extend_from_slice(argv);
        docker(&a, limit)
    }

    /// `dig +time=2 +tries=1 <args>` in the client container, through its
    /// /etc/resolv.conf unless `args` names a server.
    pub fn dig(&self, args: &[&str]) -> Answer {
        let client = self.container("client");
        let argv = [&DIG_OPTS[..], args].concat();
        Answer::from_run(&self.exec(&client, &argv, Duration::from_secs(20)))
    }

    /// The sorted A records the client gets for `name` (empty on any
    /// failure).
    pub fn a_records(&self, name: &str) -> Vec<String> {
        let mut v = self.dig(&[name, "A"]).rdata("A");
        v.sort();
        v
    }

    /// `kdns-ctl <args> --json` inside the kdns container, parsed.
    pub fn ctl_json(&self, args: &[&str]) -> Value {
        let kdns = self.container("kdns");
        let mut argv = vec!["kdns-ctl"];
        argv.extend_from_slice(args);
        argv.push("--json");
        let r = self.exec(&kdns, &argv, Duration::from_secs(20));
        assert!(r.ok(), "kdns-ctl in the kdns container failed:\n{}\n{}", r.both(), self.kdns_log());
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("kdns-ctl printed invalid JSON ({e}):\n{}", r.both()))
    }

    pub fn stats(&self) -> Value {
        self.ctl_json(&["stats"])
    }

    /// kdns's log (`docker logs`), without colour codes.
    pub fn kdns_log(&self) -> String {
        let c = self.containers("kdns");
        let Some(c) = c.first() else { return String::from("(no kdns container)") };
        let r = docker(&["logs", c], Duration::from_secs(30));
        strip_ansi(&format!("{}{}", r.stdout, r.stderr))
    }

    /// `docker ps -a` of the project, for messages.
    pub fn ps(&self) -> String {
        let r = docker(
            &[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--format",
                "{{.Names}}\t{{.Status}}\t{{.Image}}",
            ],
            Duration::from_secs(30),
        );
        format!("---- containers of {} ----\n{}", self.project, r.stdout)
    }

    /// Panics with kdns's log unless the kdns container is running.
    pub fn assert_kdns_running(&self) {
        let c = self.container("kdns");
        let st = self.inspect(&c)["State"]["Status"].as_str().unwrap_or("?").to_string();
        assert_eq!(st, "running", "the kdns container is {st}:\n{}\n---- kdns log ----\n{}", self.ps(), self.kdns_log());
    }

    /// Waits until the client gets `resolver.kdns` (a record of
    /// deploy/records.toml) from kdns through its resolv.conf.
    pub fn wait_ready(&self) {
        let ok = poll_until(STACK_READY_WITHIN, Duration::from_millis(500), || {
            self.assert_kdns_running();
            (self.a_records("resolver.kdns") == [KDNS_ADDR]).then_some(())
        });
        assert!(ok.is_some(), "kdns did not answer the client within {STACK_READY_WITHIN:?}:\n{}\n{}", self.ps(), self.kdns_log());
    }

    /// Polls (every 300 ms, up to `limit`) until the client's A records
    /// for `name` are exactly `want` (sorted); panics with what it last
    /// saw and kdns's log otherwise.
    pub fn wait_answers(&self, name: &str, want: &[String], limit: Duration, what: &str) {
        let mut want = want.to_vec();
        want.sort();
        let mut last = Vec::new();
        let ok = poll_until(limit, Duration::from_millis(300), || {
            last = self.a_records(name);
            (last == want).then_some(())
        });
        if ok.is_none() {
            let a = self.dig(&[name, "A"]);
            panic!(
                "{what}: {name} should answer exactly {want:?} within {limit:?}, last answer {last:?}:\n{}\n{}\n---- kdns log ----\n{}",
                a.text,
                self.ps(),
                self.kdns_log()
            );
        }
    }

    /// Whether the container is running.
    pub fn running(&self, container: &str) -> bool {
        self.inspect(container)["State"]["Running"].as_bool() == Some(true)
    }

    /// The container's compose replica number (label
    /// `com.docker.compose.container-number`).
    pub fn number(&self, container: &str) -> u32 {
        let v = self.inspect(container);
        v["Config"]["Labels"]["com.docker.compose.container-number"]
            .as_str()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("container {container} has no compose container number:\n{:#}", v["Config"]["Labels"]))
    }

    /// The containers of `service` by replica number: (number, id,
    /// address on dnsnet, running).
    pub fn replicas(&self, service: &str) -> Vec<(u32, String, String, bool)> {
        let mut v: Vec<_> = self
            .containers(service)
            .into_iter()
            .map(|c| {
                let i = self.inspect(&c);
                let n = i["Config"]["Labels"]["com.docker.compose.container-number"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
                let addr = i["NetworkSettings"]["Networks"][&self.network]["IPAddress"].as_str().unwrap_or("").to_string();
                (n, c, addr, i["State"]["Running"].as_bool() == Some(true))
            })
            .collect();
        v.sort();
        v
    }

    /// The dnsnet addresses of the running containers of `service`.
    pub fn running_addrs(&self, service: &str) -> Vec<String> {
        let mut v: Vec<String> = self.replicas(service).into_iter().filter(|r| r.3 && !r.2.is_empty()).map(|r| r.2).collect();
        v.sort();
        v
    }

    /// The entry of service `name` in `kdns-ctl records list --json`.
    pub fn record_service(&self, name: &str) -> Option<Value> {
        let l = self.ctl_json(&["records", "list"]);
        l["services"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
    }

    /// `dig` run on the host inside the client's network namespace
    /// (nsenter): works while dockerd is down.
    pub fn dig_from_client_netns(&self, client_pid: u32, args: &[&str]) -> Answer {
        let pid = client_pid.to_string();
        let argv = [&["nsenter", "-t", &pid, "-n"][..], &DIG_OPTS, args].concat();
        Answer::from_run(&run_limited(&argv, Duration::from_secs(20)))
    }

    /// The host pid of a container's first process.
    pub fn pid(&self, container: &str) -> u32 {
        self.inspect(container)["State"]["Pid"].as_u64().unwrap_or(0) as u32
    }

    /// Packets the container's netns sent to Docker's embedded resolver
    /// 127.0.0.11: the counters of its DNAT rules (chain DOCKER_OUTPUT of
    /// the nat table, which Docker installs in every container on a
    /// user-defined network), UDP and TCP.
    pub fn embedded_dns_packets(&self, container: &str) -> u64 {
        let pid = self.pid(container).to_string();
        let r = run_limited(
            &["nsenter", "-t", &pid, "-n", "iptables", "-t", "nat", "-L", "DOCKER_OUTPUT", "-v", "-n", "-x"],
            Duration::from_secs(20),
        );
        assert!(r.ok(), "cannot read Docker's DNAT rules for 127.0.0.11 in the client's netns:\n{}", r.both());
        let rules: Vec<&str> = r.stdout.lines().filter(|l| l.contains("127.0.0.11") && l.contains("dpt:53")).collect();
        assert!(!rules.is_empty(), "no DNAT rule for 127.0.0.11:53 in the client's netns:\n{}", r.both());
        rules.iter().map(|l| l.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0)).sum()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.compose(&["logs", "--no-color", "--tail", "150"], Duration::from_secs(60));
            eprintln!("{}\n---- compose logs ----\n{}{}---- end of compose logs ----", self.ps(), logs.stdout, logs.stderr);
        }
        let r = self.compose(&["down", "-v", "--rmi", "all", "--remove-orphans", "-t", "2"], Duration::from_secs(180));
        if !r.ok() {
            eprintln!("compose down failed (removing by label):\n{}", r.both());
        }
        // Whatever compose left (or a container started by hand in the
        // project's name).
        let label = format!("label=com.docker.compose.project={}", self.project);
        let left = docker(&["ps", "-a", "-q", "--filter", &label], Duration::from_secs(30));
        for id in left.stdout.split_whitespace() {
            let _ = docker(&["rm", "-f", "-v", id], Duration::from_secs(60));
        }
        let _ = docker(&["network", "rm", &self.network], Duration::from_secs(30));
        let vols = docker(
            &["volume", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", self.project)],
            Duration::from_secs(30),
        );
        for v in vols.stdout.split_whitespace() {
            let _ = docker(&["volume", "rm", v], Duration::from_secs(30));
        }
    }
}
