//! `hitloop N [--engine-only]`: N cache-hit queries, for instruction counts.
//!
//! Builds the benchmark rig (two loopback backends, default 65 536-entry
//! cache), warms it with 1000 names, then answers N queries rotating over
//! those names (EDNS 1232, 0x20 mixed case):
//!
//! * default: the AF_XDP per-packet path: copy the query frame into a
//!   2048-byte UMEM buffer, `parse_udp_frame`, copy the payload to the
//!   stack, `handle_query` writing into the frame, `turn_around`;
//! * `--engine-only`: `handle_query` of the DNS payload alone.
//!
//! The setup does not depend on N, so `(Ir(N) - Ir(0)) / N` under
//! `valgrind --tool=callgrind` is the cost of one query (see
//! `bench/callgrind.sh`). Prints a checksum of every reply so that nothing
//! is optimised out.

use std::hint::black_box;
use std::process::ExitCode;

use kdns_bench::{mix_case, query, query_frame, Rig, CLIENT, FRAME_SIZE, SERVER};

/// Names warmed and rotated over.
const NAMES: u32 = 1000;

fn main() -> ExitCode {
    let mut n: Option<u64> = None;
    let mut engine_only = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--engine-only" => engine_only = true,
            s => match s.parse() {
                Ok(v) if n.is_none() => n = Some(v),
                _ => {
                    eprintln!("usage: hitloop N [--engine-only]");
                    return ExitCode::from(2);
                }
            },
        }
    }
    let Some(n) = n else {
        eprintln!("usage: hitloop N [--engine-only]");
        return ExitCode::from(2);
    };

    let mut rig = Rig::new(2);
    let names = rig.warm_n(NAMES);
    let queries: Vec<Vec<u8>> = names.iter().enumerate().map(|(i, name)| query(0x1000 + i as u16, &mix_case(name, i as u64 + 1))).collect();
    let frames: Vec<Vec<u8>> = queries.iter().map(|q| query_frame(CLIENT, SERVER, q)).collect();
    let mut buf = vec![0u8; FRAME_SIZE];

    let (sum, failed) = run(&mut rig, &queries, &frames, &mut buf, n, engine_only);
    let st = rig.engine.stats();
    println!(
        "mode={} queries={n} failed={failed} checksum={sum:016x} cache_hits={} cache_misses={}",
        if engine_only { "engine-only" } else { "frame" },
        st.cache_hits.get(),
        st.cache_misses.get()
    );
    if failed > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// The measured loop: `n` queries rotating over `queries` (engine only) or
/// `frames` (frame path). Not inlined, so that `callgrind
/// --toggle-collect=hitloop::run` counts exactly this. Returns the checksum
/// and the number of queries not answered.
#[inline(never)]
fn run(rig: &mut Rig, queries: &[Vec<u8>], frames: &[Vec<u8>], buf: &mut [u8], n: u64, engine_only: bool) -> (u64, u64) {
    let mut sum: u64 = 0;
    let mut failed: u64 = 0;
    let mut i = 0usize;
    for _ in 0..n {
        if engine_only {
            let len = rig.answer_query(black_box(&queries[i]));
            failed += u64::from(len == 0);
            // Length plus the answer's last TTL byte and the ID.
            sum = sum.wrapping_mul(31).wrapping_add(len as u64 + u64::from(rig.out[len.saturating_sub(1)]) + u64::from(rig.out[1]));
        } else {
            match rig.answer_frame(black_box(&frames[i]), buf) {
                // Length plus the UDP checksum (over the whole reply).
                Ok(len) => sum = sum.wrapping_mul(31).wrapping_add(len as u64 + u64::from(u16::from_be_bytes([buf[40], buf[41]]))),
                Err(_) => failed += 1,
            }
        }
        i += 1;
        if i == queries.len() {
            i = 0;
        }
    }
    (sum, failed)
}
