use super::*;

const EXAMPLE: &str = r#"{
  "version": "0.1.0", "pid": 4242, "uptime_s": 93784, "listen": ["127.0.0.1:53", "[::1]:53"],
  "qps_1s": 1520.0, "qps_10s": 1498.3,
  "totals": {"workers": 2, "queries": 160, "queries_tcp": 10,
    "replies_by_rcode": {"NOERROR": 145, "FORMERR": 0, "NXDOMAIN": 5},
    "cache_hits": 80, "cache_misses": 70, "cache_negative_hits": 3, "cache_entries": 33, "cache_bytes": 1572864,
    "forwarded": 70, "retried": 1, "timeouts": 2, "stale_answers": 0, "gave_up": 0, "in_flight": 4,
    "drops": {"query_too_short": 2, "pending_full": 0}, "hit_ratio": 0.5333, "some_future_field": 1,
    "io": {"upstream_sockets_open": 48, "upstream_sockets_opened": 60, "upstream_rotations": 12, "tcp_open": 3, "tcp_accepted": 40, "tcp_refused_per_client": 7, "tcp_evicted_idle": 2, "tcp_idle_closed": 28}},
  "workers": [
    {"id": 0, "kind": "udp", "core": 2, "snapshot": "ok", "queries": 150, "cache_hits": 80, "cache_misses": 70,
     "drops": {"query_too_short": 2}, "in_flight": 4},
    {"id": 1, "kind": "tcp", "core": null, "snapshot": "timeout", "queries": 10, "queries_tcp": 10}
  ],
  "backends": [
    {"address": "10.0.0.1:53", "state": "up", "up_workers": 2, "workers": 2, "in_flight": 3, "sent": 50,
     "answers": 47, "timeouts": 3, "slow": 5, "suspected": 1, "try_timeout_ms": 50.0,
     "rtt_ms": {"p50": 3.001, "p90": 5.003, "p99": 12.5, "max": 20.0, "mean": 3.5, "samples": 47}},
    {"address": "10.0.0.2:53", "state": "partial", "up_workers": 1, "workers": 2, "went_down": 1, "try_timeout_ms": 800.0,
     "rtt_ms": {"p50": null, "p90": null, "p99": null, "max": null, "mean": null, "samples": 0}}
  ],
  "limits": {"client_prefix_v4": 32, "client_prefix_v6": 64, "client_max_pending": 256, "client_miss_rate": 5000,
             "client_miss_burst": 10000, "over_limit": "servfail", "clients": 4096}
}"#;

fn example() -> Stats {
    serde_json::from_str(EXAMPLE).unwrap()
}

#[test]
fn table_aligns_columns() {
    let t = table(
        &[("NAME", Align::Left), ("N", Align::Right), ("NOTE", Align::Left)],
        [vec!["a".into(), "1".into(), "x".into()], vec!["longer".into(), "12345".into(), String::new()], vec!["b".into()]],
    );
    assert_eq!(t, "NAME        N  NOTE\na           1  x\nlonger  12345\nb\n");
}

#[test]
fn backends_table_shows_state_and_rtt() {
    let t = backends_table(&example().backends);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        "BACKEND      STATE    UP ON  IN-FLIGHT  SENT  ANSWERS  TIMEOUTS  SLOW  SUSPECT  DOWN   TRY ms  P50 ms  P90 ms  P99 ms"
    );
    assert_eq!(
        lines[1],
        "10.0.0.1:53  up         2/2          3    50       47         3     5        1     0   50.000   3.001   5.003  12.500"
    );
    assert_eq!(
        lines[2],
        "10.0.0.2:53  partial    1/2          0     0        0         0     0        0     1  800.000       -       -       -"
    );
    // Columns line up: every line is as long as the header.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()));
}

#[test]
fn workers_table_rows() {
    let t = workers_table(&example().workers);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "WORKER  KIND  CORE  QUERIES  TCP  HITS  MISSES   HIT%  ENTRIES  FORWARDED  TIMEOUTS  IN-FLIGHT  DROPS  SNAPSHOT");
    assert_eq!(lines[1], "     0  udp      2      150    0    80      70  53.3%        0          0         0          4      2  ok");
    assert_eq!(lines[2], "     1  tcp      -       10   10     0       0      -        0          0         0          0      0  timeout");
}

#[test]
fn summary_block() {
    let s = summary(&example());
    let want = "\
Daemon:       kdns 0.1.0 (pid 4242), 2 workers, listening on 127.0.0.1:53, [::1]:53
Uptime:       1d 2h 3m 4s
QPS:          1520.0 (last 1 s), 1498.3 (last 10 s)
Queries:      160 (10 over TCP)
Cache:        hit ratio 53.3%, 80 hits (3 negative), 70 misses, 33 entries, 1.5 MiB
Answers:      NOERROR 145, NXDOMAIN 5
Local:        0 answers from local records
Forwarding:   forwarded 70, waited on an identical question 0, retried 1, timeouts 2, slow 0, late answers 0, stale answers 0, gave up 0, over TCP 0 (0 failed), in flight 4
Limits:       per client (/32 IPv4, /64 IPv6) per worker: 256 pending, 5000 misses/s (burst 10000); over them (servfail): 0 by pending, 0 by rate
Drops:        query_too_short 2
Source ports: 48 sockets open, 60 opened, 12 rotations (0 deferred, 0 failed)
TCP:          3 open, 40 accepted; closed: 7 over the per-client cap, 2 evicted idle, 0 evicted busy, 28 idle timeout
";
    assert_eq!(s, want);
}

#[test]
fn a_warm_start_is_shown_on_the_cache_line() {
    let mut st = example();
    st.totals.counters.cache_loaded = 4000;
    st.totals.counters.cache_load_expired = 12;
    let s = summary(&st);
    assert!(s.contains("1.5 MiB; loaded at start: 4000 (summed over workers), 12 expired\n"), "{s}");
}

#[test]
fn empty_stats_render() {
    let s = stats(&Stats::default());
    assert!(s.contains("Drops:        none\n"), "{s}");
    assert!(s.contains("hit ratio -,"), "{s}");
    assert!(s.ends_with("Backends\n(none configured)\n"), "{s}");
}

#[test]
fn xdp_table_lists_queues() {
    let s: Stats = serde_json::from_str(
        r#"{"xdp":[{"interface":"eth0","queues":[{"queue":0,"redirected":7,"passed":2,"malformed":0,"dropped":0}]}]}"#,
    )
    .unwrap();
    let out = stats(&s);
    assert!(out.contains("XDP program"), "{out}");
    let line = out.lines().find(|l| l.starts_with("eth0")).unwrap();
    assert_eq!(line.split_whitespace().collect::<Vec<_>>(), ["eth0", "0", "0", "0", "7", "2", "0", "0"]);
}

#[test]
fn the_kernel_tier_line_shows_once_it_held_entries() {
    let mut st = example();
    assert!(!summary(&st).contains("Kernel tier"), "{}", summary(&st));
    st.totals.counters.io.tier_entries = 12;
    st.totals.counters.io.tier_promoted = 15;
    st.totals.counters.io.tier_demoted = 2;
    st.totals.counters.io.tier_cold = 1;
    st.xdp = vec![kdns_api::stats::XdpInterface {
        interface: "eth0".into(),
        queues: vec![kdns_api::stats::XdpQueue { queue: 0, answered: 900, answer_misses: 40, ..Default::default() }],
        ..Default::default()
    }];
    assert!(
        summary(&st).contains(
            "Kernel tier:  900 answered in the XDP program, 40 looked up there and passed on; 12 entries, 15 copied in, 2 taken out with their cache entry, 1 taken out cold\n"
        ),
        "{}",
        summary(&st)
    );
}

#[test]
fn xdp_programs_table_shows_ids_pins_and_adoption() {
    let s: Stats = serde_json::from_str(
        r#"{"xdp":[
            {"interface":"eth0","program":{"program_id":42,"link_id":7,"mode":"driver","pin_dir":"/sys/fs/bpf/kdns/eth0","attached_at":1000,"adopted_from":41},"queues":[]},
            {"interface":"eth1","program":{"program_id":43,"link_id":8,"mode":"generic","attached_at":1100},"queues":[]},
            {"interface":"eth2","queues":[]}
        ]}"#,
    )
    .unwrap();
    let out = xdp_programs_table(&s.xdp, 1065);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "a header and a row per interface with a program:\n{out}");
    let cols = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>().join(" ");
    assert_eq!(cols(lines[1]), "eth0 42 7 driver 1m 5s ago (unix 1000) /sys/fs/bpf/kdns/eth0 program 41");
    assert_eq!(cols(lines[2]), "eth1 43 8 generic 0s ago (unix 1100) - (goes with this kdns) - (attached anew)");
    assert!(stats(&s).contains("\nXDP programs\n"));
    assert!(!stats(&Stats::default()).contains("XDP programs"));
}

#[test]
fn check_column() {
    // As the daemon sends a check: every default filled in.
    let c = |j: &str| {
        let full = format!(r#"{{"interval_ms": 1000, "timeout_ms": 500, "rise": 2, "fall": 2, {j}}}"#);
        check(Some(&serde_json::from_str::<CheckSpec>(&full).unwrap()))
    };
    assert_eq!(check(None), "-");
    assert_eq!(c(r#""kind": "tcp", "port": 80"#), "tcp:80, every 1000 ms, timeout 500 ms, rise 2, fall 2");
    assert_eq!(c(r#""kind": "dns", "name": "web.kdns", "port": 53"#), "dns:web.kdns, every 1000 ms, timeout 500 ms, rise 2, fall 2");
    assert_eq!(c(r#""kind": "dns", "port": 5353"#), "dns, port 5353, every 1000 ms, timeout 500 ms, rise 2, fall 2");
}

#[test]
fn units() {
    assert_eq!(duration(0), "0s");
    assert_eq!(duration(61), "1m 1s");
    assert_eq!(duration(3600), "1h 0m 0s");
    assert_eq!(duration(86400 * 3 + 5), "3d 0h 0m 5s");
    assert_eq!(bytes(1023), "1023 B");
    assert_eq!(bytes(1536), "1.5 KiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
}

#[test]
fn the_generation_and_the_last_handover_are_shown() {
    let mut st = example();
    st.generation = 1;
    assert!(summary(&st).contains("Generation:   1 (started on its own)\n"), "{}", summary(&st));
    st.generation = 3;
    let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 65;
    st.handover = Some(kdns_api::stats::Handover { from_pid: 120, at, took_ms: 41, sockets: 4, cache_bytes: 3 << 20, queues: 2 });
    let text = summary(&st);
    assert!(
        text.contains("Generation:   3 (took over from pid 120 1m 5s ago in 41 ms: 4 sockets, 3072 KiB of cache, 2 AF_XDP queues)\n"),
        "{text}"
    );
}

#[test]
fn cluster_shows_each_host_and_the_connection() {
    let v: kdns_api::cluster::ClusterView = serde_json::from_str(
        r#"{"enabled":true,"host":"a","prefix":"/kdns/v1","connected":false,"last_error":"connect: timed out",
            "revision":42,"lease_id":"694d7a1b3c2d9e01","resyncs":2,"skipped":1,"puts":5,"deletes":0,
            "hosts":[{"host":"a","local":true,"alive":true,"lease_age_s":12.5,"lease_ttl_s":5,"instances":2,"healthy":2,"services":1,"records":0},
                     {"host":"b","local":false,"alive":false,"lease_age_s":null,"lease_ttl_s":null,"instances":0,"healthy":0,"services":0,"records":1}]}"#,
    )
    .unwrap();
    let t = cluster(&v);
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines[0], "host a under /kdns/v1: etcd UNREACHABLE, revision 42, lease 694d7a1b3c2d9e01");
    assert_eq!(lines[1], "last error: connect: timed out");
    assert!(lines[4].starts_with("HOST"), "{t}");
    assert!(lines[5].starts_with("a (this)  alive") && lines[5].contains("12.5"), "{t}");
    assert!(lines[6].starts_with("b         gone") && lines[6].contains(" - "), "{t}");
}
