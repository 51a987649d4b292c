//! `snapmem [SERVICES] [INSTANCES]`: the heap a records `Snapshot` really
//! takes (a counting global allocator: live bytes and allocations) next to
//! `Snapshot::memory()`, the estimate the unit test
//! `records::tests::ten_thousand_services_of_ten_instances_fit_in_memory`
//! prints. Same records as that test: SERVICES services (default 10 000) of
//! INSTANCES instances (default 10), one IPv4 address each.

use std::net::{IpAddr, Ipv4Addr};

use kdns_core::records::{Instance, Mode, RecordsConfig, Service, Snapshot};
use kdns_sys::alloc::Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let a: Vec<u32> = std::env::args().skip(1).filter_map(|x| x.parse().ok()).collect();
    let (ns, ni) = (a.first().copied().unwrap_or(10_000), a.get(1).copied().unwrap_or(10));
    let (l0, n0, r0) = (Counting::live_bytes(), Counting::live_allocations(), rss_kb());
    let services: Vec<Service> = (0..ns)
        .map(|i| Service {
            name: format!("svc{i}"),
            mode: Mode::All,
            ttl: None,
            instances: (0..ni)
                .map(|k| Instance {
                    id: format!("c{i}-{k}"),
                    addrs: vec![IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i * 16 + k))],
                    healthy: true,
                    number: None,
                })
                .collect(),
            ports: vec![],
        })
        .collect();
    let cfg = RecordsConfig { domains: vec!["kdns".into()], default_ttl: 10, services, records: vec![], serial: 1 };
    let (l1, n1, r1) = (Counting::live_bytes(), Counting::live_allocations(), rss_kb());
    let s = Snapshot::build(&cfg).expect("valid records");
    let (l2, n2, r2) = (Counting::live_bytes(), Counting::live_allocations(), rss_kb());
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!("{ns} services x {ni} instances: {} names", s.len());
    println!(
        "  RecordsConfig (input):  {:7.1} MiB live heap in {:>8} allocations (RSS +{:.1} MiB)",
        mib(l1 - l0),
        n1 - n0,
        (r1 - r0) as f64 / 1024.0
    );
    println!(
        "  Snapshot (built):       {:7.1} MiB live heap in {:>8} allocations (RSS +{:.1} MiB)",
        mib(l2 - l1),
        n2 - n1,
        (r2 - r1) as f64 / 1024.0
    );
    println!("  Snapshot::memory():     {:7.1} MiB (the unit test's estimate)", mib(s.memory()));
    drop(cfg);
    println!("  after dropping the input: {:.1} MiB live heap", mib(Counting::live_bytes() - l0));
}
