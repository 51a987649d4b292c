//! [`XskRings`](crate::xsk::XskRings) on a real veth pair (needs root, as
//! the loader tests, whose rig it uses): queries come off the RX ring,
//! replies go out on the TX ring, frames are recycled, and a frame cannot
//! go to another socket's rings.

use std::net::{IpAddr, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::tests::{query, require_root, Rig, S_IF, S_V4};
use super::{AttachMode, XdpProgram};
use crate::xsk::{Frame, XskConfig, XskRings};

fn open(queue: u32) -> XskRings {
    let cfg = XskConfig { ifname: S_IF, queue, frame_size: 2048, frames: 256, ring_size: 64, batch: 16, zero_copy: false };
    XskRings::open(&cfg).unwrap()
}

/// Waits for a frame on either socket; returns which one and the frame.
fn next_frame(rings: &mut [XskRings; 2]) -> (usize, Frame) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for (i, r) in rings.iter_mut().enumerate() {
            r.refill(0);
            if r.receive() > 0 {
                return (i, r.next_received().unwrap());
            }
        }
        assert!(Instant::now() < deadline, "no frame on the RX rings");
        let _ = crate::poll::wait_readable([rings[0].fd(), rings[1].fd()], Duration::from_millis(50));
    }
}

/// Swaps the Ethernet, IPv4 and UDP source and destination of an
/// untagged frame (the IPv4 header checksum stays valid), and clears the
/// UDP checksum: the sender's may be a partial one left to offload.
fn swap_ends(f: &mut [u8]) {
    for (a, b, n) in [(0, 6, 6), (26, 30, 4), (34, 36, 2)] {
        for k in 0..n {
            f.swap(a + k, b + k);
        }
    }
    f[40..42].fill(0);
}

#[test]
fn queries_come_in_and_replies_go_out() {
    require_root();
    let rig = Rig::new((2, 2), (2, 2));
    let (_prog, mut rings) = rig.in_server(|| {
        let mut prog = XdpProgram::load(S_IF, &[IpAddr::V4(S_V4)], 53, None).unwrap();
        let rings = [open(0), open(1)];
        for (q, r) in rings.iter().enumerate() {
            assert!(!r.zero_copy());
            prog.register_socket(q as u32, r.fd()).unwrap();
        }
        assert_eq!(prog.attach_mode(AttachMode::Driver).unwrap(), AttachMode::Driver);
        (prog, rings)
    });
    let cli = rig.client_udp(false);
    cli.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(rig.ping(IpAddr::V4(S_V4)));
    let q = query(30);
    cli.send_to(&q, (S_V4, 53)).unwrap();

    // The query, in place: Ethernet + IPv4 + UDP + payload.
    let (i, mut frame) = next_frame(&mut rings);
    assert_eq!(frame.len(), 14 + 20 + 8 + q.len());
    let mut copy = [0u8; 72];
    {
        let mut buf = rings[i].buf(&mut frame);
        assert_eq!(&buf.bytes()[14 + 20 + 8..], &q[..]);
        let whole = buf.whole_mut();
        assert!(whole.len() >= 1500, "the whole frame is writable");
        swap_ends(&mut whole[..72]);
        copy.copy_from_slice(&whole[..72]);
        buf.set_len(72);
    }
    // A frame belongs to its socket.
    let other = 1 - i;
    let foreign = rings[other].alloc().unwrap();
    let r = catch_unwind(AssertUnwindSafe(|| rings[i].transmit(foreign)));
    assert!(r.is_err(), "a frame of another socket was taken");

    // The reply in the received frame, and a copy from a free frame.
    rings[i].transmit(frame);
    let mut fresh = rings[i].alloc().expect("a free frame");
    {
        let mut buf = rings[i].buf(&mut fresh);
        buf.whole_mut()[..72].copy_from_slice(&copy);
        buf.set_len(72);
    }
    rings[i].transmit(fresh);
    let t = rings[i].flush_tx(8);
    assert_eq!((t.sent, t.dropped), (2, 0), "{t:?}");
    let mut got = [0u8; 100];
    for _ in 0..2 {
        let (n, from) = cli.recv_from(&mut got).unwrap();
        assert_eq!((&got[..n], from), (&q[..], SocketAddr::from((S_V4, 53))));
    }
    // Both frames come back through the completion ring.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut reaped = 0;
    while reaped < 2 {
        assert!(Instant::now() < deadline, "completions: {reaped} of 2");
        reaped += rings[i].reap_completions();
        let _ = rings[i].flush_tx(1);
    }
    // Recycled frames go back to the fill ring and carry new queries.
    for _ in 0..3 {
        cli.send_to(&q, (S_V4, 53)).unwrap();
        let (j, f) = next_frame(&mut rings);
        assert_eq!(f.len(), 72);
        rings[j].recycle(f);
    }
    assert!(rings.iter().all(|r| r.statistics().is_ok()));
}
