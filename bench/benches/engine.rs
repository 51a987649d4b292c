//! Criterion micro-benchmarks of the kdns engine; one iteration is one
//! query, so the reported time is ns per query.
//!
//! * `hit/engine`: `handle_query` of a cached name (EDNS, 0x20 mixed case).
//! * `hit/engine_rot1k`: the same, rotating over 1000 cached names.
//! * `hit/frame`: the AF_XDP per-packet path for that query: copy the frame
//!   into a 2048-byte UMEM buffer, `parse_udp_frame`, copy the payload to
//!   the stack, `handle_query` writing into the frame, `turn_around`.
//! * `hit/frame_rot1k`: the same, rotating over 1000 cached names.
//! * `miss/forward+answer`: a name never seen: `handle_query` -> `Forward`
//!   -> synthesize the backend answer -> `handle_backend_answer` -> reply
//!   (plus the `poll_transmit` drain). Once 65 536 names are in, every
//!   insert also evicts one entry (CLOCK), as in a busy steady state.
//! * `parse/query`: `Message::parse` of a typical EDNS query.
//!
//! `cargo bench -p kdns-bench` runs them all; add `-- --quick` for a fast
//! pass, or a filter such as `-- hit/`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kdns_bench::{bench_name, mix_case, query, query_frame, MissQueries, Rig, CLIENT, FRAME_SIZE, SERVER};
use kdns_core::wire::Message;

/// Names in the cache for the `hit/*` benchmarks.
const WARM: u32 = 1000;

fn hit(c: &mut Criterion) {
    let mut rig = Rig::new(2);
    let names = rig.warm_n(WARM);
    let queries: Vec<Vec<u8>> = names.iter().enumerate().map(|(i, n)| query(0x1000 + i as u16, &mix_case(n, i as u64 + 1))).collect();
    let frames: Vec<Vec<u8>> = queries.iter().map(|q| query_frame(CLIENT, SERVER, q)).collect();
    let one = &queries[42];
    let one_frame = &frames[42];
    assert!(rig.answer_query(one) > 0, "the query hits");
    let mut buf = vec![0u8; FRAME_SIZE];
    rig.answer_frame(one_frame, &mut buf).expect("the frame is answered");

    let mut g = c.benchmark_group("hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("engine", |b| b.iter(|| rig.answer_query(black_box(one))));
    let mut i = 0usize;
    g.bench_function("engine_rot1k", |b| {
        b.iter(|| {
            i = if i + 1 == queries.len() { 0 } else { i + 1 };
            rig.answer_query(black_box(&queries[i]))
        })
    });
    g.bench_function("frame", |b| b.iter(|| rig.answer_frame(black_box(one_frame), &mut buf)));
    g.bench_function("frame_rot1k", |b| {
        b.iter(|| {
            i = if i + 1 == frames.len() { 0 } else { i + 1 };
            rig.answer_frame(black_box(&frames[i]), &mut buf)
        })
    });
    g.finish();
    let misses = rig.engine.stats().cache_misses.get();
    assert_eq!(misses, u64::from(WARM), "no hit benchmark missed");
}

fn miss(c: &mut Criterion) {
    let mut rig = Rig::new(2);
    let mut names = MissQueries::new(0);
    let mut g = c.benchmark_group("miss");
    g.throughput(Throughput::Elements(1));
    g.bench_function("forward+answer", |b| {
        b.iter(|| {
            let q = names.next_query();
            rig.resolve(black_box(q)).expect("resolved")
        })
    });
    g.finish();
    let st = rig.engine.stats();
    assert_eq!(st.cache_hits.get(), 0, "every miss query missed");
    assert_eq!(st.cache_misses.get(), rig.forwarded, "every miss was forwarded and answered");
}

fn parse(c: &mut Criterion) {
    let q = query(0x1234, &mix_case(&bench_name(42), 42));
    assert!(Message::parse(&q).is_ok());
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    g.bench_function("query", |b| b.iter(|| Message::parse(black_box(&q))));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = hit, miss, parse
}
criterion_main!(benches);
