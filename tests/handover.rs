//! Planned upgrades, end to end: a kdns started with `--takeover` next to
//! a running one, under an open-loop load (kxdpgun in the client
//! namespace), on the AF_XDP path (program pinned in a bpffs of the
//! test's own) and on the socket path. Not one query may go unanswered;
//! afterwards the interface holds exactly the new kdns's program on the
//! same link, the pins are the expected ones, the new kdns shows
//! generation 2 and the handover, and its cache is the old one's.
//!
//! Needs root and the daemon tests' tools (scripts/setup.sh), and
//! `cargo build --workspace` first; fails (never skips) without them.

#![forbid(unsafe_code)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

/// The load: QPS for SECONDS, the takeover TAKEOVER_AT into it.
const QPS: u64 = 20_000;
const SECONDS: u64 = 6;
const TAKEOVER_AT: Duration = Duration::from_secs(2);

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key} missing in {v:#}"))
}

/// A lab whose kdns hands over on a socket in a temp dir of the test's
/// (kept alive by the returned guard).
fn lab(extra: &[&str]) -> (Lab, String, tempfile::TempDir) {
    let dir = temp_dir("handover");
    let sock = dir.path().join("handover.sock").display().to_string();
    let mut args: Vec<&str> = vec!["--handover-socket", &sock];
    args.extend_from_slice(extra);
    (Lab::start(LabOpts::with_args(&args)), sock, dir)
}

/// Names the load cycles over (cache hits once seen), warmed in the old kdns.
fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("h{i}.upgrade.test")).collect()
}

/// Starts a kdns with the lab's arguments plus `--takeover` while the lab's
/// runs; returns it once the old one has exited (with its exit status
/// checked) and the new one answers.
fn take_over(lab: &mut Lab) -> u32 {
    let old_pid = lab.kdns.pid();
    let mut args = lab.kdns_args.clone();
    args.push("--takeover".into());
    let mut new = Kdns::spawn(&lab.server, &args);
    let st = lab.kdns.wait(Duration::from_secs(30));
    let st = st.unwrap_or_else(|| panic!("the old kdns did not exit after the takeover:\n{}\nnew:\n{}", lab.kdns.log(), new.log()));
    assert_eq!(st.code(), Some(0), "the old kdns:\n{}", lab.kdns.log());
    let old_log = lab.kdns.plain_log();
    assert!(old_log.contains(&format!("handed over to kdns pid {}", new.pid())), "old kdns's log:\n{old_log}");
    // What the old one answered and lost, for the report of a failure.
    if let Some(end) = old_log.lines().rev().find(|l| l.contains("stopped after")) {
        eprintln!("old kdns pid {old_pid}: {}", end.trim());
    }
    new.wait_ready(&lab.client, &lab.link.server_v4());
    let new_log = new.plain_log();
    assert!(new_log.contains(&format!("took over from kdns pid {old_pid}")), "new kdns's log:\n{new_log}");
    lab.kdns = new;
    old_pid
}

/// Warms `names` in the running kdns.
fn warm(lab: &Lab, names: &[String]) {
    let at = lab.at4();
    for chunk in names.chunks(50) {
        let q: Vec<(&str, &str)> = chunk.iter().map(|n| (n.as_str(), "A")).collect();
        let answers = dig_many(&lab.client, &[&at], &q);
        assert!(answers.iter().all(|a| a.status == "NOERROR"), "warm-up failed: {answers:?}");
    }
}

/// Runs the load with a takeover in the middle; asserts nothing was lost.
fn upgrade_under_load(lab: &mut Lab, names: &[String]) -> u32 {
    let gun = Gun::start(lab, QPS, SECONDS, names);
    std::thread::sleep(TAKEOVER_AT);
    let old = take_over(lab);
    let (sent, replies) = gun.finish_reported(&format!("takeover under {QPS} qps"));
    if replies != sent {
        let st = lab.stats();
        panic!("{} of {sent} queries went unanswered across the takeover; the new kdns's totals:\n{:#}", sent - replies, st["totals"]);
    }
    old
}

/// The new kdns's stats show generation 2, the handover from `old`, and
/// that it answered from the old one's cache.
fn check_generation(lab: &Lab, old: u32, queues: u64) -> Value {
    let st = lab.stats();
    assert_eq!(num(&st, "generation"), 2, "{st:#}");
    let h = &st["handover"];
    assert_eq!(num(h, "from_pid"), u64::from(old), "{h:#}");
    assert_eq!(num(h, "queues"), queues, "{h:#}");
    assert!(num(h, "cache_bytes") > 0, "no cache handed over: {h:#}");
    assert!(num(h, "at") > 1_600_000_000, "{h:#}");
    let text = ctl(&lab.kdns.socket, &["stats"]);
    assert!(text.stdout.contains(&format!("took over from pid {old}")), "{}", text.stdout);
    st
}

#[test]
fn upgrade_on_af_xdp_under_load_loses_nothing_and_keeps_the_cache() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    let fs = BpfFs::new();
    let pin = fs.pin_dir().display().to_string();
    let (mut lab, _sock, _dir) = lab(&["--io", "xdp", "--pin-dir", &pin]);
    let before = lab.stats();
    let x = &before["xdp"][0]["program"];
    let (prog1, link1) = (num(x, "program_id") as u32, num(x, "link_id"));
    let names = names(200);
    warm(&lab, &names);

    let old = upgrade_under_load(&mut lab, &names);

    let st = check_generation(&lab, old, 1);
    let x = &st["xdp"][0]["program"];
    let prog2 = num(x, "program_id") as u32;
    assert_eq!(num(x, "link_id"), link1, "the link changed: {x:#}");
    assert_ne!(prog2, prog1);
    assert_eq!(assert_serving_program(&lab, &fs), prog2);
    // The handed-over cache: the load's names were hits in the new kdns
    // (misses at most the few asked before the cache was loaded).
    let hits = kind_sum(&st, "xdp", "cache_hits") + kind_sum(&st, "udp", "cache_hits");
    let misses = kind_sum(&st, "xdp", "cache_misses") + kind_sum(&st, "udp", "cache_misses");
    eprintln!("new kdns: {hits} hits, {misses} misses");
    assert!(hits > 0 && misses * 10 <= hits + misses, "the cache was not handed over: {hits} hits, {misses} misses");
    // AF_XDP serves again in the new kdns.
    assert!(kind_sum(&st, "xdp", "queries") > 0, "the new kdns's AF_XDP workers got nothing:\n{:#}", st["workers"]);

    // A second upgrade from the new one works the same way.
    let old2 = take_over(&mut lab);
    let st = lab.stats();
    assert_eq!(num(&st, "generation"), 3, "{st:#}");
    assert_eq!(num(&st["handover"], "from_pid"), u64::from(old2));
    let a = dig(&lab.client, &[&lab.at4(), "after.upgrade.test", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);

    // Uninstall after the last stop: nothing left.
    stop_and_uninstall(&mut lab, &fs);
}

#[test]
fn upgrade_on_udp_sockets_under_load_loses_nothing() {
    require_root_and_tools();
    let _slot = exclusive_slot();
    // Metrics too (on the server namespace's loopback): the new kdns binds
    // them, and the control socket, once the old one has let go.
    let (mut lab, _sock, _dir) = lab(&["--io", "udp", "--workers", "2", "--metrics", "127.0.0.1:9153"]);
    let names = names(20);
    warm(&lab, &names);
    let old = upgrade_under_load(&mut lab, &names);
    check_generation(&lab, old, 0);
    let log = lab.kdns.plain_log();
    assert!(log.contains("metrics at http://127.0.0.1:9153/metrics") && !log.contains("will not reach this instance"), "{log}");
}

#[test]
fn a_second_kdns_without_takeover_is_refused_and_the_first_serves_on() {
    require_root_and_tools();
    let _slot = shared_slot();
    let (mut lab, sock, _dir) = lab(&["--io", "udp"]);
    let mut second = Kdns::spawn(&lab.server, &lab.kdns_args);
    let st = second.wait(Duration::from_secs(20)).expect("the second kdns did not exit");
    assert_eq!(st.code(), Some(1), "{}", second.log());
    let log = second.plain_log();
    assert!(log.contains("another kdns is running") && log.contains(&sock) && log.contains("--takeover"), "{log}");
    let a = dig(&lab.client, &[&lab.at4(), "still.test", "A"]);
    assert_eq!(a.status, "NOERROR", "{}", a.text);
    assert!(lab.kdns.try_exit().is_none(), "the first kdns stopped");
}

/// A takeover that fails after the release (the new kdns cannot load its
/// program: its pin dir is no bpffs) leaves the old kdns serving: it
/// takes its AF_XDP queues back with new workers, which get the records
/// in use (a record added after the start is answered on AF_XDP) and show
/// in its stats.
#[test]
fn an_aborted_takeover_gives_the_queues_back_to_workers_with_current_records() {
    require_root_and_tools();
    let _slot = shared_slot();
    let fs = BpfFs::new();
    let pin = fs.pin_dir().display().to_string();
    let (mut lab, _sock, dir) = lab(&["--io", "xdp", "--pin-dir", &pin, "--domain", "kdns"]);
    let workers = |lab: &Lab| num(&lab.stats()["totals"], "workers");
    let before = workers(&lab);

    let not_bpffs = dir.path().join("not-bpffs");
    std::fs::create_dir(&not_bpffs).unwrap();
    let mut args = lab.kdns_args.clone();
    let at = args.iter().position(|a| a == "--pin-dir").expect("--pin-dir");
    args[at + 1] = not_bpffs.display().to_string();
    args.push("--takeover".into());
    let mut new = Kdns::spawn(&lab.server, &args);
    let st = new.wait(Duration::from_secs(30)).unwrap_or_else(|| panic!("the new kdns did not give up:\n{}", new.log()));
    assert_eq!(st.code(), Some(1), "{}", new.log());
    assert!(new.plain_log().contains("the old kdns takes its queues back"), "{}", new.log());
    let taken_back = poll_until(Duration::from_secs(20), Duration::from_millis(100), || {
        lab.kdns.plain_log().contains("AF_XDP queues taken back").then_some(())
    });
    assert!(taken_back.is_some(), "the old kdns did not take its queues back:\n{}", lab.kdns.log());
    assert!(lab.kdns_alive(), "the old kdns exited:\n{}", lab.kdns.log());

    // A record added now reaches the new AF_XDP workers.
    let r = ctl(&lab.kdns.socket, &["records", "add", "after-abort.kdns", "A", "10.5.0.77"]);
    assert!(r.ok(), "{}\n{}", r.both(), lab.kdns.log());
    let st0 = lab.stats();
    let a = dig(&lab.client, &[&lab.at4(), "after-abort.kdns", "A"]);
    assert_eq!(a.rdata("A"), vec!["10.5.0.77".to_string()], "{}", a.text);
    let st1 = lab.stats();
    assert_eq!(num(&st1["totals"], "workers"), before, "the stats do not count the workers in use: {st1:#}");
    let local = |st: &Value| kind_sum(st, "xdp", "local_answers");
    assert!(local(&st1) > local(&st0), "the AF_XDP workers did not answer the new record:\n{st1:#}");
    assert_serving_program(&lab, &fs);
    stop_and_uninstall(&mut lab, &fs);
}
