//! Tests of the answer tier (root).

use super::answers::*;
use super::tests::require_root;
use super::*;

#[test]
fn loads_with_the_tier() {
    require_root();
    let tier = AnswerTier { entries: 1024, udp_size: 1232, clients: vec![] };
    let prog = XdpProgram::load_pinned("lo", &[IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)], 53, None, None, Some(&tier)).unwrap();
    eprintln!("verified insns: {:?}", prog.verified_insns());
    assert!(prog.answers().is_some());
}
