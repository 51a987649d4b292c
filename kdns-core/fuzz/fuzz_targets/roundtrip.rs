//! Parse -> build -> reparse. A message that `Message::parse` accepts is
//! copied with `MessageBuilder`: the question via `copy_question`, every
//! record with its owner written uncompressed and its RDATA as raw bytes,
//! the OPT record re-added with `opt()`. The copy must parse and carry the
//! same header, question, records (types, classes, TTLs, RDATA) and EDNS
//! UDP size / DO bit; rebuilding the copy must give the same bytes.
//! Messages with compressed names in RDATA are left out: raw RDATA copied
//! to another place would point at other bytes (the parser checks those
//! names, so the copy would rightly be refused). The checks are shared
//! with the property tests (`kdns-core/tests/common/wire.rs`).
#![no_main]

use kdns_core::wire::Message;
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/common/wire.rs"]
mod wire;

fuzz_target!(|msg: &[u8]| {
    let Ok(m) = Message::parse(msg) else { return };
    if m.sections.records(msg).any(|r| wire::rdata_compressed(msg, &r)) {
        return;
    }
    wire::check_roundtrip(msg, &m);
});
