//! The counting allocator, installed as this test binary's global allocator.

use kdns_sys::alloc::{count_thread_allocations, Counting};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn counts_this_threads_allocations() {
    let (v, n) = count_thread_allocations(|| vec![1u8; 100]);
    assert_eq!(n, 1);
    let ((), n) = count_thread_allocations(|| ());
    assert_eq!(n, 0);
    let (v, n) = count_thread_allocations(move || {
        let mut v = v;
        v.reserve(10_000);
        v
    });
    assert_eq!(n, 1, "a realloc counts as one allocation");
    drop(v);
    // Another thread's allocations are not this thread's.
    let inner = std::thread::spawn(|| count_thread_allocations(|| vec![0u8; 10]).1).join().unwrap();
    assert_eq!(inner, 1);
}

#[test]
fn live_bytes_follow_allocations_and_frees() {
    // Other tests run at the same time: look for a change far larger than
    // what they allocate.
    const BIG: usize = 64 << 20;
    let before = Counting::live_bytes();
    let v = vec![7u8; BIG];
    let during = Counting::live_bytes();
    assert!(during >= before + BIG / 2, "live bytes {before} -> {during} after allocating {BIG}");
    assert!(Counting::live_allocations() > 0);
    drop(v);
    let after = Counting::live_bytes();
    assert!(after + BIG / 2 <= during, "live bytes {during} -> {after} after freeing {BIG}");
}
