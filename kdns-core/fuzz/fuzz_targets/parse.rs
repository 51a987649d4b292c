//! Every reader of `kdns_core::wire` over arbitrary bytes: the header, a
//! name at every offset, questions and records at every offset, the
//! message, its records and EDNS options, and `write_empty_reply` into a
//! 600-byte buffer. Any panic is a bug: either a reader panicked, or a
//! value that parsed broke one of the invariants asserted by the checks
//! this target shares with the property tests
//! (`kdns-core/tests/common/wire.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/wire.rs"]
mod wire;

fuzz_target!(|msg: &[u8]| wire::exercise(msg));
