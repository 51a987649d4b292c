//! Warm restart: kdns dumps its cache at SIGTERM and the next kdns loads
//! it, so the names asked before the restart are hits after it, with
//! their TTLs still counting down. Real kdns (two UDP workers), real
//! Unbound, dig and dnsperf from the client namespace.
//!
//! Needs root and the Debian packages of scripts/setup.sh; fails (never
//! skips) without them. See tests/README.md.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// How long kdns may take to stop after SIGTERM (it takes milliseconds).
const STOP_WITHIN: Duration = Duration::from_secs(10);
/// Names warmed up and replayed.
const NAMES: usize = 2_000;

/// The lab with two UDP workers (each its own cache) and the dump at `dump`.
fn lab(dump: &Path) -> Lab {
    // A local domain too: the first records the workers get must not
    // flush the cache they loaded.
    Lab::start(LabOpts::with_args(&[
        "--io",
        "udp",
        "--workers",
        "2",
        "--domain",
        "warm.local",
        "--cache-dump",
        dump.to_str().expect("utf-8 path"),
    ]))
}

/// hits / (hits + misses) between two `kdns-ctl stats --json`.
fn hit_ratio(before: &serde_json::Value, after: &serde_json::Value) -> (f64, u64, u64) {
    let hits = total(after, "cache_hits") - total(before, "cache_hits");
    let misses = total(after, "cache_misses") - total(before, "cache_misses");
    (hits as f64 / (hits + misses).max(1) as f64, hits, misses)
}

/// Runs the query file once through kdns at 2,000 queries/s from 4
/// sockets (so the names spread over both workers); nothing may be lost.
fn replay(lab: &Lab, queries: &Path) -> PerfReport {
    let r = Dnsperf::spawn(&lab.client, &lab.link.server_v4(), queries, &["-n", "1", "-Q", "2000", "-c", "4", "-t", "5"])
        .wait(Duration::from_secs(60));
    assert_eq!(r.lost, 0, "dnsperf lost queries:\n{}", r.text);
    assert_eq!(r.rcode_count("NOERROR"), NAMES as u64, "every name answered NOERROR:\n{}", r.text);
    r
}

/// The TTL of the first A record dig gets for `name`.
fn ttl_of(lab: &Lab, name: &str) -> u32 {
    let a = dig(&lab.client, &[&lab.at4(), "+time=2", name, "A"]);
    assert_eq!(a.status, "NOERROR", "dig {name}:\n{}", a.text);
    // "n7.warm.test. 293 IN A 10.99.0.1"
    let ttl = a.answers.iter().find_map(|r| {
        let f: Vec<&str> = r.split_whitespace().collect();
        (f.get(3) == Some(&"A")).then(|| f[1].parse().ok()).flatten()
    });
    ttl.unwrap_or_else(|| panic!("no A record with a TTL for {name}:\n{}", a.text))
}

#[test]
fn cache_survives_a_restart_and_ttls_keep_counting_down() {
    require_root_and_tools();
    let _slot = shared_slot();
    let dir = temp_dir("warm");
    let dump = dir.path().join("state/cache.dump");
    let mut lab = lab(&dump);
    let queries = lab.file("names.txt");
    write_queries(&queries, 0, NAMES, "warm.test");

    // Warm up (misses), then the same names twice more: the hit ratio
    // before, once the names have reached both workers' caches (the
    // second pass still misses where a name reaches the other worker).
    replay(&lab, &queries);
    let s0 = lab.stats();
    replay(&lab, &queries);
    let s1 = lab.stats();
    replay(&lab, &queries);
    let (second, ..) = hit_ratio(&s0, &s1);
    let (before, ..) = hit_ratio(&s1, &lab.stats());
    // One name's TTL, asked twice so that both workers may hold it.
    let probe = "n7.warm.test";
    let ttl_before = ttl_of(&lab, probe);
    let asked = Instant::now();

    std::thread::sleep(Duration::from_secs(2));
    let st = lab.kdns.stop_with(libc::SIGTERM, STOP_WITHIN);
    assert!(st.is_some_and(|s| s.success()), "kdns did not stop cleanly after SIGTERM ({st:?}):\n{}", lab.kdns.log());
    let log = lab.kdns.plain_log();
    let dumped = log.lines().find(|l| l.contains("entries dumped to")).unwrap_or_else(|| panic!("no dump line in the log:\n{log}"));
    assert!(dumped.contains(&dump.display().to_string()), "the dump line names another file: {dumped}");
    let mode = std::fs::metadata(&dump).unwrap_or_else(|e| panic!("no dump at {}: {e}", dump.display())).permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the dump is readable by others");
    std::thread::sleep(Duration::from_secs(1));

    lab.respawn_kdns();
    let log = lab.kdns.plain_log();
    let loaded = log.lines().find(|l| l.contains("entries loaded from")).unwrap_or_else(|| panic!("no load line in the log:\n{log}"));
    let s2 = lab.stats();
    assert!(total(&s2, "cache_loaded") >= 2 * NAMES as u64, "each of the 2 workers loads every name: {loaded}");
    // The first second after the restart: the names again.
    replay(&lab, &queries);
    let (after, hits, misses) = hit_ratio(&s2, &lab.stats());
    let ttl_after = ttl_of(&lab, probe);
    let passed = asked.elapsed().as_secs() as u32;
    println!("dump: {dumped}\nload: {loaded}");
    println!(
        "hit ratio replaying {NAMES} names: {:.1}% (second pass), {:.1}% (third) before the restart, {:.1}% in the first second after it ({hits} hits, {misses} misses)",
        second * 100.0,
        before * 100.0,
        after * 100.0
    );
    println!("TTL of {probe}: {ttl_before} before, {ttl_after} after {passed} s");
    assert!(after >= 0.9, "hit ratio after the restart {after:.3} (before {before:.3}): the cache was not loaded");
    // Every copy of the probe entered a cache (with Unbound's TTL of 300)
    // before `asked`. The dig before the restart saw one worker's copy;
    // each worker loads the freshest copy of every name in the dump, maybe
    // another worker's, younger by up to the replays' length. So the bound
    // is the TTL any copy can have left: 300 less the whole seconds since.
    assert!(
        ttl_after + passed <= 300 && ttl_after > 0,
        "TTL {ttl_after} after the restart, {passed} s after the last copy entered a cache with 300 (one worker had {ttl_before}): it did not keep counting down"
    );
}

#[test]
fn a_damaged_dump_gives_a_warning_and_kdns_serves_cold() {
    require_root_and_tools();
    let _slot = shared_slot();
    let dir = temp_dir("warm");
    let dump = dir.path().join("cache.dump");
    std::fs::write(&dump, b"KDNSCDMP\0\x01\0\0 this is not a dump, it only starts like one").expect("write the damaged dump");
    let mut lab = lab(&dump);
    let log = lab.kdns.plain_log();
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains(&dump.display().to_string()))
        .unwrap_or_else(|| panic!("no warning about the damaged dump:\n{log}"));
    assert!(warn.contains("starting cold"), "the warning does not say kdns starts cold: {warn}");
    let s = lab.stats();
    assert_eq!(total(&s, "cache_loaded"), 0);
    let a = dig(&lab.client, &[&lab.at4(), "+time=2", "cold.warm.test", "A"]);
    assert_eq!(a.status, "NOERROR", "kdns does not serve:\n{}", a.text);
    // A clean stop replaces it with a readable dump.
    let st = lab.kdns.stop_with(libc::SIGTERM, STOP_WITHIN);
    assert!(st.is_some_and(|s| s.success()), "kdns did not stop cleanly ({st:?}):\n{}", lab.kdns.log());
    let bytes = std::fs::read(&dump).expect("the dump after the stop");
    assert_eq!(&bytes[..8], b"KDNSCDMP");
    lab.respawn_kdns();
    let log = lab.kdns.plain_log();
    assert!(log.lines().any(|l| l.contains("entries loaded from")), "the new dump was not loaded:\n{log}");
    assert!(!log.contains("WARN"), "warnings at the second start:\n{log}");
}
