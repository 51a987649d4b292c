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

use std::path::Path;
use std::time::Duration;

use common::compose::*;
use common::docker::*;
use common::kxdpgun;
use common::*;

/// The client's resolv.conf is kdns's (deploy/resolv.conf, mounted), and
/// a local record, a local service, a bare name through the search domain
/// (getent) and names the Unbound pool answers all come from kdns, on its
/// AF_XDP worker, with nothing sent to Docker's embedded resolver.
#[test]
fn compose_stack_serves_the_client_directly_over_af_xdp() {
    require_compose();
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

/// The kdns container runs `kdns --supervise`: kill -9 of the server
/// inside the container is answered by a new server on the sockets the
/// supervisor holds, without a container restart; `docker kill -s USR2`
/// replaces the server make-before-break. Load: kxdpgun in the client
/// container's network namespace (open loop, local answers).
#[test]
fn compose_kdns_survives_a_server_crash_and_upgrades_in_place() {
    require_compose();
    let _one = one_stack_at_a_time();
    let stack = Stack::up(&[]);
    let kdns = stack.container("kdns");
    let client = stack.container("client");
    let log = stack.kdns_log();
    assert!(log.contains("kdns --supervise (pid 1) holds udp 172.30.53.53:53"), "the kdns container does not run the supervisor:\n{log}");
    let container_pid = stack.pid(&kdns);
    let net = |c: &str| stack.inspect(c)["NetworkSettings"]["Networks"][&stack.network].clone();
    let (cn, kn) = (net(&client), net(&kdns));
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("no {k} in {v:#}")).to_string();
    let dir = temp_dir("compose-gun");
    let target = kxdpgun::Target {
        enter: vec!["nsenter".into(), "-t".into(), stack.pid(&client).to_string(), "-n".into()],
        dir: dir.path().to_path_buf(),
        iface: "eth0".into(),
        src_mac: field(&cn, "MacAddress"),
        src_v4: field(&cn, "IPAddress"),
        dst_mac: field(&kn, "MacAddress"),
        dst_v4: KDNS_ADDR.into(),
    };
    let names: Vec<String> = ["resolver.kdns", "unbound.kdns", "Resolver.kdns"].iter().map(|n| n.to_string()).collect();
    let server = |stack: &Stack| -> (u64, u64) {
        let st = stack.stats();
        (st["pid"].as_u64().expect("pid"), st["generation"].as_u64().unwrap_or(0))
    };
    let wait_server = |stack: &Stack, what: &str, ok: &dyn Fn(u64, u64) -> bool| {
        let got = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let kdns = stack.container("kdns");
            let r = stack.exec(&kdns, &["kdns-ctl", "stats", "--json"], Duration::from_secs(10));
            let st: serde_json::Value = serde_json::from_str(&r.stdout).ok()?;
            let (pid, generation) = (st["pid"].as_u64()?, st["generation"].as_u64().unwrap_or(0));
            ok(pid, generation).then_some(())
        });
        assert!(got.is_some(), "{what}:\n{}", stack.kdns_log());
    };
    let unanswered = |(sent, replies): (u64, u64)| sent.saturating_sub(replies);

    // kill -9 of the server (the shell's kill: the image has no procps).
    let (old, _) = server(&stack);
    let gun = Gun::start_at(&target, 5_000, 6, &names);
    std::thread::sleep(Duration::from_secs(2));
    let r = stack.exec(&kdns, &["sh", "-c", &format!("kill -9 {old}")], Duration::from_secs(20));
    assert!(r.ok(), "kill -9 {old} in the kdns container:\n{}", r.both());
    wait_server(&stack, "no new server after kill -9", &|pid, _| pid != old);
    let lost = unanswered(gun.finish_reported("compose, kill -9 of the server"));
    // What the killed process's AF_XDP rings held and what came until the
    // kernel closed its AF_XDP sockets (tests/supervise.rs); longer in a
    // container (measured: 0 to 80 of 30,010).
    assert!(lost * 100 < 5_000 * 6, "{lost} unanswered across kill -9 of the server (limit: 1%)");
    let log = stack.kdns_log();
    assert!(log.contains(&format!("kdns pid {old} was killed by signal 9")), "{log}");
    assert_eq!(stack.pid(&kdns), container_pid, "the kdns container was restarted");
    assert_eq!(stack.inspect(&kdns)["RestartCount"], 0, "the kdns container was restarted");

    // SIGUSR2 to the container: a new server takes over, nothing lost.
    let (old, _) = server(&stack);
    let gun = Gun::start_at(&target, 5_000, 6, &names);
    std::thread::sleep(Duration::from_secs(2));
    docker_ok(&["kill", "-s", "USR2", &kdns]);
    wait_server(&stack, "no takeover after SIGUSR2", &|pid, generation| pid != old && generation == 2);
    let lost = unanswered(gun.finish_reported("compose, SIGUSR2"));
    let st = stack.stats();
    eprintln!("after SIGUSR2: totals {}\nxdp {}", st["totals"], st["xdp"]);
    assert_eq!(lost, 0, "queries went unanswered across the in-place upgrade:\n{}", stack.kdns_log());
    assert!(stack.kdns_log().contains(&format!("kdns pid {old} handed over to pid")), "{}", stack.kdns_log());
    assert_eq!(stack.pid(&kdns), container_pid, "the kdns container was restarted");
    let a = stack.dig(&["resolver.kdns", "A"]);
    assert_eq!(a.rdata("A"), vec![KDNS_ADDR.to_string()], "{}", a.text);
}

/// How long the Docker provider may take to follow a change (it reacts to
/// the engine's events within a second; generous for a loaded machine).
const FOLLOW_WITHIN: Duration = Duration::from_secs(30);

/// `web-<n>.kdns` answers exactly the address of replica n (or nothing).
fn check_numbered(stack: &Stack, what: &str) {
    for (n, _, addr, running) in stack.replicas("web") {
        let want = if running { vec![addr] } else { Vec::new() };
        stack.wait_answers(&format!("web-{n}.kdns"), &want, FOLLOW_WITHIN, what);
    }
}

/// The Docker provider (`[docker]` in deploy/kdns.toml) with the test-only
/// service `web` (tests/docker/web.yaml): `web.kdns` answers exactly the
/// running, not unhealthy replicas through scale 1 -> 3 -> 1, `docker
/// stop`, `docker kill` and a failing healthcheck; `web-N.kdns` follow
/// the compose replica numbers; bare `web` through the search domain; SRV
/// from the `kdns.ports` label; `records list` shows source docker.
#[test]
fn docker_provider_follows_scale_stop_kill_and_health() {
    require_compose();
    let _one = one_stack_at_a_time();
    let stack = Stack::up(&["tests/docker/web.yaml"]);

    // One replica.
    let one = stack.running_addrs("web");
    assert_eq!(one.len(), 1, "web should have one running replica:\n{}", stack.ps());
    stack.wait_answers("web.kdns", &one, FOLLOW_WITHIN, "web at scale 1");
    check_numbered(&stack, "web at scale 1");
    let client = stack.container("client");
    let g = stack.exec(&client, &["getent", "ahostsv4", "web"], Duration::from_secs(20));
    assert!(g.ok() && g.stdout.contains(&one[0]), "getent ahostsv4 web (bare name, search kdns):\n{}", g.both());
    let srv = stack.dig(&["_http._tcp.web.kdns", "SRV"]);
    assert_eq!(srv.rdata("SRV"), vec!["0 10 8080 web-1.kdns.".to_string()], "SRV from label kdns.ports:\n{}", srv.text);
    let a = stack.dig(&["web.kdns", "A"]);
    assert!(a.answers.iter().all(|l| l.split(' ').nth(1) == Some("5")), "TTL from label kdns.ttl=5:\n{}", a.text);
    let svc = stack.record_service("web").unwrap_or_else(|| panic!("kdns-ctl records list has no service web:\n{}", stack.kdns_log()));
    assert_eq!(svc["source"], "docker", "records list: web's source:\n{svc:#}");
    // The client itself, by its compose service name.
    stack.wait_answers("client.kdns", &[stack.address(&client)], FOLLOW_WITHIN, "the compose service client");

    // 1 -> 3.
    stack.compose_ok(&["up", "-d", "--no-build", "--scale", "web=3"]);
    let three = stack.running_addrs("web");
    assert_eq!(three.len(), 3, "web should have 3 running replicas:\n{}", stack.ps());
    stack.wait_answers("web.kdns", &three, FOLLOW_WITHIN, "web at scale 3");
    check_numbered(&stack, "web at scale 3");
    let srv = stack.dig(&["_http._tcp.web.kdns", "SRV"]);
    assert_eq!(srv.rdata("SRV").len(), 3, "SRV at scale 3:\n{}", srv.text);

    // docker stop and docker kill take a replica out.
    let reps = stack.replicas("web");
    let (n3, id3) = (reps[2].0, reps[2].1.clone());
    docker_ok(&["stop", "-t", "1", &id3]);
    stack.wait_answers("web.kdns", &stack.running_addrs("web"), FOLLOW_WITHIN, &format!("web after docker stop of replica {n3}"));
    stack.wait_answers(&format!("web-{n3}.kdns"), &[], FOLLOW_WITHIN, "a stopped replica's numbered name");
    let (n2, id2) = (reps[1].0, reps[1].1.clone());
    docker_ok(&["kill", &id2]);
    let left = stack.running_addrs("web");
    assert_eq!(left.len(), 1, "one replica should be left running:\n{}", stack.ps());
    stack.wait_answers("web.kdns", &left, FOLLOW_WITHIN, &format!("web after docker kill of replica {n2}"));

    // Back to 3 (compose starts the stopped ones again).
    stack.compose_ok(&["up", "-d", "--no-build", "--scale", "web=3"]);
    let three = stack.running_addrs("web");
    assert_eq!(three.len(), 3, "web should have 3 running replicas again:\n{}", stack.ps());
    stack.wait_answers("web.kdns", &three, FOLLOW_WITHIN, "web at scale 3 again");

    // A failing healthcheck takes a replica out; passing again brings it back.
    let reps = stack.replicas("web");
    let (n, id, addr, _) = reps[1].clone();
    let r = stack.exec(&id, &["touch", "/tmp/unhealthy"], Duration::from_secs(20));
    assert!(r.ok(), "{}", r.both());
    let healthy: Vec<String> = three.iter().filter(|a| **a != addr).cloned().collect();
    stack.wait_answers("web.kdns", &healthy, FOLLOW_WITHIN, &format!("web with replica {n} unhealthy"));
    let health = stack.inspect(&id)["State"]["Health"]["Status"].clone();
    assert_eq!(health, "unhealthy", "Docker's view of replica {n}");
    let svc = stack.record_service("web").expect("service web");
    let inst = svc["instances"].as_array().and_then(|a| a.iter().find(|i| i["number"] == n).cloned());
    assert!(inst.as_ref().is_some_and(|i| i["health"] == "unhealthy" && i["healthy"] == false), "records list, replica {n}:\n{svc:#}");
    let r = stack.exec(&id, &["rm", "/tmp/unhealthy"], Duration::from_secs(20));
    assert!(r.ok(), "{}", r.both());
    stack.wait_answers("web.kdns", &three, FOLLOW_WITHIN, &format!("web with replica {n} healthy again"));

    // 3 -> 1.
    stack.compose_ok(&["up", "-d", "--no-build", "--scale", "web=1"]);
    let one = stack.running_addrs("web");
    assert_eq!(one.len(), 1, "web should be back to one replica:\n{}", stack.ps());
    stack.wait_answers("web.kdns", &one, FOLLOW_WITHIN, "web back at scale 1");
    for n in [2, 3] {
        stack.wait_answers(&format!("web-{n}.kdns"), &[], FOLLOW_WITHIN, "a removed replica's numbered name");
    }
    stack.assert_kdns_running();
    eprintln!("provider log lines:\n{}", stack.kdns_log().lines().filter(|l| l.contains("Docker")).collect::<Vec<_>>().join("\n"));
}

/// How long kdns may take to reconnect to a restarted dockerd (it retries
/// after 1 s, doubling) and resync.
const RECONNECT_WITHIN: Duration = Duration::from_secs(60);

/// dockerd stopped and started again (scripts/docker-engine.sh; with
/// --live-restore the containers keep running): kdns keeps serving what it
/// knew while the engine is down, reconnects, resyncs (a replica killed
/// with SIGKILL while dockerd was down is gone, the others stay) and
/// follows events again; a plain restart the same. The kdns container
/// restarted: its Docker records are rebuilt from the engine.
#[test]
fn docker_provider_resyncs_after_dockerd_and_kdns_restarts() {
    require_compose();
    require_engine_started_by_script();
    let _one = one_stack_at_a_time();
    let stack = Stack::up(&["tests/docker/web.yaml"]);
    stack.compose_ok(&["up", "-d", "--no-build", "--scale", "web=3"]);
    let three = stack.running_addrs("web");
    assert_eq!(three.len(), 3, "web should have 3 running replicas:\n{}", stack.ps());
    stack.wait_answers("web.kdns", &three, FOLLOW_WITHIN, "web at scale 3");
    let kdns = stack.container("kdns");
    let kdns_pid = stack.pid(&kdns);
    let client_pid = stack.pid(&stack.container("client"));
    let reps = stack.replicas("web");
    let (victim_n, victim, victim_addr, _) = reps[2].clone();
    let victim_pid = stack.pid(&victim);

    // dockerd down; a replica dies meanwhile (its process killed from the
    // host): nobody tells kdns.
    let down = EngineStopped::stop();
    let a = stack.dig_from_client_netns(client_pid, &[&format!("@{KDNS_ADDR}"), "web.kdns", "A"]);
    let mut got = a.rdata("A");
    got.sort();
    assert_eq!(got, three, "kdns should keep serving what it knew while dockerd is down:\n{}", a.text);
    signal(victim_pid, libc::SIGKILL);
    assert!(poll_until(Duration::from_secs(10), Duration::from_millis(100), || (!Path::new(&format!("/proc/{victim_pid}")).exists())
        .then_some(()))
    .is_some());
    down.start();

    // What dockerd reports after its restart: the replica exited.
    let st = stack.inspect(&victim)["State"].clone();
    eprintln!("after the restart dockerd reports replica {victim_n} as: status {} exit code {}", st["Status"], st["ExitCode"]);
    assert_eq!(st["Running"], false, "dockerd still reports the killed replica running:\n{st:#}");
    assert_eq!(stack.pid(&kdns), kdns_pid, "the kdns container did not survive the dockerd restart (live-restore)");
    let two: Vec<String> = three.iter().filter(|a| **a != victim_addr).cloned().collect();
    stack.wait_answers("web.kdns", &two, RECONNECT_WITHIN, "web after the resync (replica killed while dockerd was down)");
    stack.wait_answers(&format!("web-{victim_n}.kdns"), &[], FOLLOW_WITHIN, "the killed replica's numbered name");
    // Events are followed again.
    stack.compose_ok(&["up", "-d", "--no-build", "--scale", "web=3"]);
    let three = stack.running_addrs("web");
    assert_eq!(three.len(), 3, "{}", stack.ps());
    stack.wait_answers("web.kdns", &three, FOLLOW_WITHIN, "web at scale 3 after the dockerd restart");

    // A plain restart of dockerd.
    require_engine_not_shared();
    let r = engine("restart");
    assert!(r.ok(), "scripts/docker-engine.sh restart:\n{}", r.both());
    assert_eq!(stack.pid(&kdns), kdns_pid, "the kdns container did not survive the dockerd restart (live-restore)");
    let connects = || stack.kdns_log().matches("connected to Docker").count();
    assert!(
        poll_until(RECONNECT_WITHIN, Duration::from_millis(500), || (connects() >= 3).then_some(())).is_some(),
        "kdns did not reconnect to the restarted dockerd (connected {} times):\n{}",
        connects(),
        stack.kdns_log()
    );
    stack.compose_ok(&["up", "-d", "--no-build", "--scale", "web=1"]);
    let one = stack.running_addrs("web");
    stack.wait_answers("web.kdns", &one, FOLLOW_WITHIN, "web at scale 1 after a plain dockerd restart");

    // The kdns container restarted: its Docker records come back from the engine.
    docker_ok(&["restart", "-t", "2", &kdns]);
    stack.wait_ready();
    stack.wait_answers("web.kdns", &one, RECONNECT_WITHIN, "web after the kdns container restarted");
    let svc = stack.record_service("web").expect("service web after the kdns restart");
    assert_eq!(svc["source"], "docker", "{svc:#}");
    eprintln!("provider log lines:\n{}", stack.kdns_log().lines().filter(|l| l.contains("Docker")).collect::<Vec<_>>().join("\n"));
}

/// Bad input: a container whose `kdns.service` label is not a DNS name is
/// skipped and kdns's log warns naming it; a container on another network
/// and one labelled `kdns.enable=false` are not answered; a plain `docker
/// run` container on dnsnet with deploy/resolv.conf mounted is answered by
/// its name and its network alias, and resolves through kdns itself.
#[test]
fn docker_provider_skips_bad_names_other_networks_and_disabled() {
    require_compose();
    let _one = one_stack_at_a_time();
    let stack = Stack::up(&[]);
    let tag = unique_name("");
    let other = Network::create(&format!("{tag}-other"), &[]);
    let image = stack.images.client.clone();
    let resolv = format!("{}:/etc/resolv.conf:ro", repo().join("deploy/resolv.conf").display());
    let sleep = ["sleep", "infinity"];
    let run = |name: &str, extra: &[&str]| -> Container {
        let mut a: Vec<&str> = extra.to_vec();
        a.push(&image);
        a.extend_from_slice(&sleep);
        Container::run(name, &a)
    };
    let bad = run(&format!("{tag}-bad"), &["--network", &stack.network, "--label", "kdns.service=bad_name!"]);
    let off = run(&format!("{tag}-off"), &["--network", &stack.network, "--label", "kdns.enable=false"]);
    let out = run(&format!("{tag}-out"), &["--network", &other.name]);
    // Last: once it is answered, kdns has seen the others.
    let good = run(&format!("{tag}-good"), &["--network", &stack.network, "--network-alias", "webalias", "-v", &resolv]);
    let good_addr = stack.address(&good.id);
    stack.wait_answers(
        &format!("{}.kdns", good.name),
        std::slice::from_ref(&good_addr),
        FOLLOW_WITHIN,
        "a docker run container by its name",
    );
    stack.wait_answers("webalias.kdns", std::slice::from_ref(&good_addr), FOLLOW_WITHIN, "a docker run container by its network alias");

    let warned = poll_until(FOLLOW_WITHIN, Duration::from_millis(500), || {
        let log = stack.kdns_log();
        log.lines().find(|l| l.contains(&bad.name) && l.contains("not a valid DNS label")).map(str::to_string)
    });
    assert!(warned.is_some(), "kdns's log does not warn about {} (kdns.service=bad_name!):\n{}", bad.name, stack.kdns_log());
    eprintln!("kdns warned: {}", warned.unwrap_or_default());
    for (c, why) in [(&off, "kdns.enable=false"), (&out, "on another network"), (&bad, "invalid kdns.service")] {
        let a = stack.dig(&[&format!("{}.kdns", c.name), "A"]);
        assert_eq!(a.status, "NXDOMAIN", "{} ({why}) should not be answered:\n{}", c.name, a.text);
    }
    assert!(stack.record_service("bad_name!").is_none(), "records list has the invalid service");
    stack.assert_kdns_running();

    // The plain docker run form resolves through kdns directly.
    let r = stack.exec(&good.id, &["cat", "/etc/resolv.conf"], Duration::from_secs(20));
    assert!(r.ok() && r.stdout.contains(&format!("nameserver {KDNS_ADDR}")), "{}", r.both());
    let client_addr = stack.address(&stack.container("client"));
    let g = stack.exec(&good.id, &["getent", "ahostsv4", "client"], Duration::from_secs(20));
    assert!(g.ok() && g.stdout.contains(&client_addr), "getent ahostsv4 client from the docker run container:\n{}", g.both());
    let before = stack.embedded_dns_packets(&good.id);
    let a = stack.exec(&good.id, &["dig", "+time=2", "+tries=1", "resolver.kdns"], Duration::from_secs(20));
    assert!(a.ok() && a.stdout.contains(KDNS_ADDR), "{}", a.both());
    assert_eq!(stack.embedded_dns_packets(&good.id), before, "the docker run container asked 127.0.0.11");
    drop((good, out, off, bad));
}
