//! The failover scenario, shared by the socket path (tests/daemon.rs) and
//! the AF_XDP path (tests/xdp.rs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

/// How long a killed backend may take to be shown down on every loaded
/// worker (typically under a second).
const DOWN_WITHIN: Duration = Duration::from_secs(10);
/// How long a restarted backend may take to be shown up again (typically
/// under 10 s: probes back off).
const UP_WITHIN: Duration = Duration::from_secs(30);

/// Two Unbounds; dnsperf sends distinct names (all misses) at 2000 qps; one
/// Unbound is killed after 3 s: no query is lost, the backend is shown down
/// (on every worker that carried load), comes back after its restart, and
/// gets traffic again. Each within a generous deadline: how fast is for
/// the benchmarks.
///
/// `extra`: more kdns arguments (`--io xdp`); `tag` prefixes what is
/// printed. Returns the lab (still running) for further checks. The caller
/// holds [`exclusive_slot`]: the load runs alone.
pub fn failover_scenario(tag: &str, extra: Vec<String>) -> Lab {
    let mut lab = Lab::start(LabOpts { backends: 2, extra, ..LabOpts::default() });
    let (q1, q2) = (lab.file("q1.txt"), lab.file("q2.txt"));
    write_queries(&q1, 0, 20_000, "test");
    write_queries(&q2, 20_000, 6_000, "test");
    let victim: SocketAddr = lab.unbounds[0].addr;
    let other: SocketAddr = lab.unbounds[1].addr;
    let server = lab.link.server_v4();

    let b = lab.backends();
    for addr in [&victim, &other] {
        assert_eq!(backend(&b, addr)["state"], "up", "{tag}: backend {addr} not up at start:\n{b:#}");
    }

    // Phase 1: load, then kill one backend after ~3 s.
    let perf_args = ["-l", "10", "-Q", "2000", "-t", "5", "-c", "8", "-q", "1000", "-n", "1"];
    let mut perf = Dnsperf::spawn(&lab.client, &server, &q1, &perf_args);
    std::thread::sleep(Duration::from_secs(3));
    let sent_at_kill = backend(&lab.backends(), &victim)["sent"].as_u64().unwrap_or(0);
    assert!(sent_at_kill > 0, "{tag}: no query went to {victim} in the first 3 s");
    // Workers that carried part of the load (UDP workers: SO_REUSEPORT
    // spreads dnsperf's 8 sockets over them; AF_XDP workers: the queues the
    // queries arrive on); each must take the backend out.
    let st = lab.stats();
    let workers = st["workers"].as_array().cloned().unwrap_or_default();
    let loaded = workers.iter().filter(|w| w["kind"] != "tcp" && w["queries"].as_u64().unwrap_or(0) > 100).count();
    let killed = Instant::now();
    lab.unbounds[0].kill();

    // Poll its state every 100 ms until every loaded worker shows it down
    // (typically within a second: the first tries to it time out after
    // try_timeout, 800 ms, and under this load three in a row come at
    // once), recording what we see. Workers without traffic to it (the TCP
    // worker here, the socket worker next to AF_XDP) cannot know it is
    // down; every loaded worker must take it out.
    let mut timeline = Vec::new();
    let down = poll_until(DOWN_WITHIN, Duration::from_millis(100), || {
        let b = lab.backends();
        let e = backend(&b, &victim);
        let state = e["state"].as_str().unwrap_or("?").to_string();
        let (up_on, on) = (e["up_workers"].as_u64().unwrap_or(u64::MAX) as usize, e["workers"].as_u64().unwrap_or(0) as usize);
        let entry = format!("{:>5} ms: {state} (up on {up_on}/{on} workers)", killed.elapsed().as_millis());
        if timeline.last().map(|l: &String| l[10..] != entry[10..]).unwrap_or(true) {
            timeline.push(entry);
        }
        (state == "down" && up_on + loaded <= on).then_some(())
    });
    eprintln!("{tag}: state of {victim} after the kill:\n  {}", timeline.join("\n  "));
    assert!(
        down.is_some(),
        "{tag}: {victim} not 'down' on the {loaded} loaded workers {DOWN_WITHIN:?} after it was killed:\n  {}",
        timeline.join("\n  ")
    );

    // Restart it while the load goes on.
    let restarted = Instant::now();
    lab.unbounds[0].restart();
    let r1 = perf.wait(Duration::from_secs(30));
    eprintln!("{tag}: dnsperf during the kill: {}", r1.lost_line);
    assert_eq!(r1.lost, 0, "{tag}: dnsperf lost queries while a backend died:\n{}", r1.text);
    assert_eq!(r1.completed, r1.sent, "{tag}: dnsperf: not every query completed:\n{}", r1.text);
    let s = lab.stats();
    let servfail = s["totals"]["replies_by_rcode"]["SERVFAIL"].as_u64().unwrap_or(0);
    assert_eq!(servfail, 0, "{tag}: clients got SERVFAIL during the failover:\n{:#}", s["totals"]);

    // Back up after its restart (probes with backoff: typically within
    // 10 s).
    let up = poll_until(UP_WITHIN, Duration::from_millis(100), || {
        let b = lab.backends();
        (backend(&b, &victim)["state"] == "up").then_some(restarted.elapsed())
    });
    let b = lab.backends();
    let up = up.unwrap_or_else(|| panic!("{tag}: {victim} not 'up' {UP_WITHIN:?} after its restart:\n{b:#}"));
    eprintln!("{tag}: {victim} up again {} ms after the restart", up.as_millis());

    // Phase 2: it gets queries again.
    let sent_before = backend(&b, &victim)["sent"].as_u64().unwrap_or(0);
    let mut perf2 = Dnsperf::spawn(&lab.client, &server, &q2, &["-l", "3", "-Q", "2000", "-t", "5", "-c", "8", "-n", "1"]);
    let r2 = perf2.wait(Duration::from_secs(20));
    eprintln!("{tag}: dnsperf after the restart: {}", r2.lost_line);
    assert_eq!(r2.lost, 0, "{tag}: dnsperf lost queries after the restart:\n{}", r2.text);
    let b = lab.backends();
    let sent_after = backend(&b, &victim)["sent"].as_u64().unwrap_or(0);
    assert!(
        sent_after > sent_before + 100,
        "{tag}: {victim} got no traffic after coming back (sent {sent_before} -> {sent_after}):\n{b:#}"
    );
    eprintln!("{tag}: {victim} sent {sent_before} -> {sent_after} during the second run");
    lab
}
