//! `recloop N MODE`: N queries of one kind through `Engine::handle_query`,
//! for instruction counts under callgrind (`bench/records/cg.sh`).
//!
//! One engine, as a kdns worker holds it: the default 65 536-entry cache
//! warmed with 1000 names (`h<8 hex>.bench.example` A, each resolved once
//! through a synthesized backend answer), one (fake) backend, an ACL
//! allowing 10.0.0.0/8, and a records snapshot: domain `kdns`, service
//! `web` (mode all, 3 instances with one IPv4 address each, an SRV port)
//! and 97 more services of 3 instances (so the name map is not trivially
//! small). Queries are what a stub sends: RD, EDNS 1232, lower case, from
//! 10.0.0.2. MODE:
//!
//! * `hit`        a cache hit, rotating over the 1000 cached names;
//! * `hit-norec`  the same with an empty records snapshot (no local
//!   domains: the cost of having records configured is the difference);
//! * `local`      the local-record mix of the rig (bench/records/rig.sh):
//!   `web.kdns`, `web-1.kdns`, `web-2.kdns`, `web-3.kdns` A, in turn;
//! * `local-svc`  `web.kdns` A alone (3 addresses, rotated);
//! * `local-inst` `web-1..3.kdns` A (one address each).
//!
//! The setup does not depend on N, so `(Ir(N) - Ir(0)) / N` is the cost of
//! one query. Prints a checksum of the replies and the engine's counters;
//! exits 1 if a query was not answered as expected (a hit not from the
//! cache, a local query not answered locally).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::ExitCode;
use std::sync::Arc;

use kdns_core::engine::{Acl, AnswerVerdict, Client, Engine, EngineConfig, IpNet, Transport, Verdict};
use kdns_core::records::{Instance, Mode, RecordsConfig, Service, Snapshot, SrvPort};
use kdns_core::upstream::BackendSpec;
use kdns_core::wire::HEADER_LEN;
use kdns_core::Timestamp;
// Queries as a stub sends them (RD, EDNS 1232) and the backend's answers.
use kdns_bench::{query, write_answer};

const NOW: Timestamp = Timestamp::from_secs(1_000);
const BACKEND: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 5301));
const NAMES: u32 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Hit,
    HitNoRecords,
    Local,
    LocalService,
    LocalInstance,
}

fn usage() -> ExitCode {
    eprintln!("usage: recloop N hit|hit-norec|local|local-svc|local-inst");
    ExitCode::from(2)
}

fn records() -> Snapshot {
    let svc = |name: &str, base: u32| Service {
        name: name.into(),
        mode: Mode::All,
        ttl: None,
        instances: (1..=3u32)
            .map(|k| Instance {
                id: format!("{name}-c{k}"),
                addrs: vec![IpAddr::V4(Ipv4Addr::from(base + k))],
                healthy: true,
                number: None,
            })
            .collect(),
        ports: vec![SrvPort { name: "http".into(), proto: "tcp".into(), port: 8080 }],
    };
    let mut services = vec![svc("web", 0x0a3c_0000)];
    services.extend((0..97u32).map(|i| svc(&format!("svc{i}"), 0x0a40_0000 + i * 16)));
    let cfg = RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, services, records: vec![], serial: 1 };
    Snapshot::build(&cfg).expect("valid records")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(n), Some(kind)) = (args.first().and_then(|a| a.parse::<u64>().ok()), args.get(1)) else { return usage() };
    let kind = match kind.as_str() {
        "hit" => Kind::Hit,
        "hit-norec" => Kind::HitNoRecords,
        "local" => Kind::Local,
        "local-svc" => Kind::LocalService,
        "local-inst" => Kind::LocalInstance,
        _ => return usage(),
    };

    let nets: Vec<IpNet> = ["10.0.0.0/8", "127.0.0.0/8"].iter().map(|n| n.parse().expect("literal")).collect();
    let cfg = EngineConfig { backends: vec![BackendSpec::new(BACKEND)], acl: Acl::new(nets), ..EngineConfig::default() };
    let mut engine = Engine::new(cfg).expect("engine");
    if kind != Kind::HitNoRecords {
        engine.set_records(Arc::new(records()));
    }
    let client = Client {
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 53000)),
        local: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 53)),
        transport: Transport::Udp,
        tag: 0,
    };
    let mut out = vec![0u8; 65_535];
    let mut ans = vec![0u8; 4096];
    let mut drain = vec![0u8; 65_535];

    // Warm the cache (every mode: the same setup cost for all).
    let hit_queries: Vec<Vec<u8>> = (0..NAMES).map(|i| query(0x1000 + i as u16, &format!("h{i:08x}.bench.example."))).collect();
    for (i, q) in hit_queries.iter().enumerate() {
        match engine.handle_query(NOW, &client, q, &mut out) {
            Verdict::Forward { addr, len, .. } => {
                let a = (i as u32 + 1).to_be_bytes();
                let alen = write_answer(&out[..len], [10, a[1], a[2], a[3]], 300, &mut ans).expect("an answer to the forwarded query");
                let v = engine.handle_backend_answer(NOW, addr, 0, &ans[..alen], &mut out);
                while engine.poll_transmit(NOW, &mut drain).is_some() {}
                assert!(matches!(v, AnswerVerdict::Reply { .. }), "warm-up answer not replied: {v:?}");
            }
            v => panic!("warm-up query not forwarded: {v:?}"),
        }
    }
    let local_names: &[&str] = match kind {
        Kind::LocalService => &["web.kdns."],
        Kind::LocalInstance => &["web-1.kdns.", "web-2.kdns.", "web-3.kdns."],
        _ => &["web.kdns.", "web-1.kdns.", "web-2.kdns.", "web-3.kdns."],
    };
    let local_queries: Vec<Vec<u8>> = local_names.iter().enumerate().map(|(i, nm)| query(0x2000 + i as u16, nm)).collect();
    let queries = match kind {
        Kind::Hit | Kind::HitNoRecords => &hit_queries,
        _ => &local_queries,
    };
    let st = Arc::clone(engine.stats());
    let (h0, l0) = (st.cache_hits.get(), st.local_answers.get());

    let (sum, failed) = run(&mut engine, &client, queries, &mut out, n);

    let (hits, locals) = (st.cache_hits.get() - h0, st.local_answers.get() - l0);
    println!("mode={} queries={n} failed={failed} checksum={sum:016x} cache_hits={hits} local_answers={locals}", args[1]);
    let expected = match kind {
        Kind::Hit | Kind::HitNoRecords => hits == n && locals == 0,
        _ => locals == n && hits == 0,
    };
    if failed > 0 || !expected {
        eprintln!("recloop: not every query was answered the expected way");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The measured loop (not inlined: `--toggle-collect=recloop::run`).
#[inline(never)]
fn run(engine: &mut Engine, client: &Client, queries: &[Vec<u8>], out: &mut [u8], n: u64) -> (u64, u64) {
    let mut sum: u64 = 0;
    let mut failed: u64 = 0;
    let mut i = 0usize;
    for _ in 0..n {
        match engine.handle_query(NOW, client, black_box(&queries[i]), out) {
            Verdict::Reply(len) => {
                sum = sum.wrapping_mul(31).wrapping_add(len as u64 + u64::from(out[len - 1]) + u64::from(out[HEADER_LEN + 20]))
            }
            _ => failed += 1,
        }
        i += 1;
        if i == queries.len() {
            i = 0;
        }
    }
    (sum, failed)
}
