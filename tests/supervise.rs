//! `kdns --supervise`, the deployment of containers and pods: a small
//! parent holds the listening sockets and runs the server as its child.
//! Under an open-loop load (kxdpgun in the client namespace):
//! - the server killed with kill -9 is replaced at once on the held
//!   sockets (UDP and AF_XDP, program pinned in a bpffs of the test's own);
//! - SIGUSR2 replaces it make-before-break (no query lost);
//! - a second supervisor started with `--takeover` (a DaemonSet's surge
//!   pod) copies the sockets, its server takes over, and the first
//!   supervisor waits for its SIGTERM without starting another server;
//! - SIGTERM stops the server and then the supervisor, and a supervisor
//!   killed with kill -9 takes its server with it (SIGTERM).
//!
//! Needs root and the daemon tests' tools (scripts/setup.sh), and
//! `cargo build --workspace` first; fails (never skips) without them.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// When the event happens, into the load.
const EVENT_AT: Duration = Duration::from_secs(2);

/// The server's pid and generation, from its own stats.
fn server(lab: &Lab) -> (u32, u64) {
    server_at(&lab.kdns)
}

fn server_at(k: &Kdns) -> (u32, u64) {
    let st: Value = stats(&k.socket);
    let pid = st["pid"].as_u64().unwrap_or_else(|| panic!("no pid in {st:#}")) as u32;
    (pid, st["generation"].as_u64().unwrap_or(0))
}

/// The pid of the server answering on `k`'s control socket, if one does.
fn try_server(k: &Kdns) -> Option<u32> {
    let r = ctl(&k.socket, &["stats", "--json"]);
    let st: Value = serde_json::from_str(&r.stdout).ok().filter(|_| r.ok())?;
    st["pid"].as_u64().map(|p| p as u32)
}

/// Waits until a server other than `old` answers on `k`'s control socket
/// and kdns answers queries at `at` from `client`; its pid.
fn new_server(client: &Netns, at: &str, k: &mut Kdns, old: u32) -> u32 {
    let got = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        if let Some(st) = k.try_exit() {
            panic!("the supervisor exited ({st}):\n{}", k.log());
        }
        try_server(k).filter(|&pid| pid != old)
    });
    let pid = got.unwrap_or_else(|| panic!("no new server within 20 s:\n{}", k.log()));
    k.wait_ready(client, at);
    pid
}

/// A lab whose kdns is `kdns --supervise` with `extra`; the handover socket
/// in a temp dir of the test's (kept alive by the returned guard).
fn lab(extra: &[&str]) -> (Lab, tempfile::TempDir) {
    let dir = temp_dir("supervise");
    let sock = dir.path().join("handover.sock").display().to_string();
    let mut args: Vec<&str> = vec!["--supervise", "--handover-socket", &sock];
    args.extend_from_slice(extra);
    let lab = Lab::start(LabOpts::with_args(&args));
    let log = lab.kdns.plain_log();
    assert!(log.contains("kdns --supervise (pid") && log.contains("holds udp"), "{log}");
    assert!(log.contains("listening on the sockets passed at start"), "the server did not get the held sockets:\n{log}");
    (lab, dir)
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}.supervise.test")).collect()
}

/// Runs `qps` for `seconds`, calling `event` at EVENT_AT; (sent, replies).
fn under_load(lab: &mut Lab, qps: u64, seconds: u64, event: impl FnOnce(&mut Lab)) -> (u64, u64) {
    let gun = Gun::start(lab, qps, seconds, &names(200));
    std::thread::sleep(EVENT_AT);
    event(lab);
    gun.finish_reported(&format!("{qps} qps for {seconds} s"))
}

/// kill -9 of the server; the supervisor starts the next one at once.
fn kill_server(lab: &mut Lab) {
    let (old, _) = server(lab);
    signal(old, libc::SIGKILL);
    let new = new_server(&lab.client, &lab.link.server_v4(), &mut lab.kdns, old);
    let log = lab.kdns.plain_log();
    assert!(log.contains(&format!("kdns pid {old} was killed by signal 9")), "{log}");
    assert!(log.contains(&format!("started kdns pid {new}")), "{log}");
}

#[test]
fn a_server_killed_under_load_is_replaced_on_the_held_sockets() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let (mut lab, _dir) = lab(&["--io", "udp"]);
    let (sent, replies) = under_load(&mut lab, 5_000, 6, kill_server);
    let lost = sent.saturating_sub(replies);
    assert!(lost * 1000 < sent, "{lost} of {sent} unanswered across a kill -9 of the supervised server (limit: 0.1%)");

    // The supervisor killed: its server gets SIGTERM and stops too.
    let (pid, _) = server(&lab);
    lab.kdns.kill();
    let stopped = poll_until(Duration::from_secs(15), Duration::from_millis(50), || gone(pid).then_some(()));
    assert!(stopped.is_some(), "the server (pid {pid}) outlived its supervisor");
}

/// [`lab`] on AF_XDP, the program pinned in `fs`.
fn xdp_lab(fs: &BpfFs) -> (Lab, tempfile::TempDir) {
    let pin = fs.pin_dir().display().to_string();
    lab(&["--io", "xdp", "--pin-dir", &pin])
}

#[test]
fn an_af_xdp_server_killed_under_load_loses_only_the_exit_window() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let fs = BpfFs::new();
    let (mut lab, _dir) = xdp_lab(&fs);
    let (sent, replies) = under_load(&mut lab, 20_000, 10, kill_server);
    let lost = sent.saturating_sub(replies);
    // What the killed process's rings held and what came until the kernel
    // closed its AF_XDP sockets (tests/socket_activation.rs: the same).
    assert!(lost * 400 < sent, "{lost} of {sent} unanswered across a kill -9 of the supervised AF_XDP server (limit: 0.25%)");
    assert_serving_program(&lab, &fs);
    stop_and_uninstall(&mut lab, &fs);
}

#[test]
fn sigusr2_replaces_the_server_make_before_break() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let fs = BpfFs::new();
    let (mut lab, _dir) = xdp_lab(&fs);
    let (old, generation) = server(&lab);
    assert_eq!(generation, 1);
    let (sent, replies) = under_load(&mut lab, 20_000, 6, |lab| {
        signal(lab.kdns.pid(), libc::SIGUSR2);
        let done = poll_until(Duration::from_secs(30), Duration::from_millis(100), || gone(old).then_some(()));
        assert!(done.is_some(), "the old server (pid {old}) did not exit after SIGUSR2:\n{}", lab.kdns.log());
    });
    assert_eq!(replies, sent, "queries went unanswered across SIGUSR2");
    let (new, generation) = server(&lab);
    assert_eq!(generation, 2, "the new server did not take over");
    assert!(lab.kdns_alive(), "the supervisor exited:\n{}", lab.kdns.log());
    let log = lab.kdns.plain_log();
    assert!(log.contains(&format!("kdns pid {old} handed over to pid {new}")), "{log}");
    let st = lab.stats();
    assert_eq!(st["handover"]["from_pid"].as_u64(), Some(u64::from(old)), "{:#}", st["handover"]);
    assert_serving_program(&lab, &fs);

    // SIGTERM: the server stops, then the supervisor, with status 0.
    stop_and_uninstall(&mut lab, &fs);
    assert!(gone(new), "the server outlived the supervisor's SIGTERM");
    assert!(lab.kdns.plain_log().contains(&format!("kdns pid {new} exited")), "{}", lab.kdns.log());
}

#[test]
fn a_second_supervisor_with_takeover_replaces_the_first() {
    // A DaemonSet's rolling update: the surge pod's supervisor, started
    // with --takeover next to the running one.
    require_root_and_tools();
    let _slot = exclusive_slot();
    let (mut lab, _dir) = lab(&["--io", "udp"]);
    let (old, _) = server(&lab);
    let mut args = lab.kdns_args.clone();
    args.push("--takeover".into());
    let mut second: Option<Kdns> = None;
    let (sent, replies) = under_load(&mut lab, 20_000, 6, |lab| {
        let mut k = Kdns::spawn(&lab.server, &args);
        let done = poll_until(Duration::from_secs(30), Duration::from_millis(100), || gone(old).then_some(()));
        assert!(done.is_some(), "the first supervisor's server did not hand over:\n{}\nsecond:\n{}", lab.kdns.log(), k.log());
        k.wait_ready(&lab.client, &lab.link.server_v4());
        second = Some(k);
    });
    assert_eq!(replies, sent, "queries went unanswered across the second supervisor's takeover");
    let mut second = second.expect("started");
    let log2 = second.plain_log();
    assert!(log2.contains("copied the listening sockets of the running kdns"), "{log2}");
    let (new, generation) = server_at(&second);
    assert_eq!(generation, 2, "{log2}");

    // The first supervisor starts no server and waits for its SIGTERM.
    let log1 = lab.kdns.plain_log();
    assert!(log1.contains("handed over to a kdns started elsewhere"), "{log1}");
    assert!(lab.kdns_alive(), "the first supervisor exited:\n{log1}");
    let st = lab.kdns.stop_with(libc::SIGTERM, Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{st:?}\n{}", lab.kdns.log());
    let a = dig(&lab.client, &[&lab.at4(), "after.supervise.test", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);

    // The second supervisor holds the sockets: its server killed, the
    // next one answers on them.
    signal(new, libc::SIGKILL);
    let newer = new_server(&lab.client, &lab.link.server_v4(), &mut second, new);
    assert_ne!(newer, new);
    let a = dig(&lab.client, &[&lab.at4(), "after2.supervise.test", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    lab.kdns = second;
}
