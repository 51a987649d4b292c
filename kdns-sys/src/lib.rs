//! Every `unsafe` of kdns, behind safe types.
//!
//! The daemon, kdns-ctl and the benchmarks forbid `unsafe`; what needs the
//! kernel or raw memory lives here, each `unsafe` block with the reason it
//! is sound:
//!
//! | module | what |
//! |--------|------|
//! | [`udp`] | `recvmmsg` / `sendmmsg` batches over preallocated buffers |
//! | [`sockaddr`] | `SocketAddr` to and from `sockaddr_storage` |
//! | [`rlimit`] | raising `RLIMIT_NOFILE` |
//! | [`ifaddrs`] | the interface holding an address (`getifaddrs`) |
//! | [`listen_fds`] | sockets passed by systemd (socket activation, `sd_listen_fds`) |
//! | [`sched`] | `SCHED_FIFO` for the calling thread |
//! | [`poll`] | `ppoll` on a few descriptors |
//! | [`fdpass`] | framed messages with descriptors attached (`SCM_RIGHTS`) over a unix socket |
//! | [`alloc`] | a counting global allocator for tests and benchmarks |
//! | [`ethtool`] | a driver's own statistics (`ethtool -S`: `SIOCETHTOOL`) |
//! | `xsk` (feature `xdp`) | [`xsk::XskRings`]: an AF_XDP socket, its UMEM and its four rings |
//! | `xdp` (feature `xdp`) | the XDP program (`bpf/kdns_xdp.c`, built by `build.rs`), its loader and netlink |
//!
//! Plus [`random_seed`] (`getrandom`), [`monotonic_ns`] (`clock_gettime`) and [`malloc_trim`].
//!
//! For tests only (feature `test-util`, which the daemon's tests enable;
//! always built for this crate's own tests):
//!
//! | module | what |
//! |--------|------|
//! | `process` | a child that dies with its parent thread (`PR_SET_PDEATHSIG`), `kill`, `geteuid` |
//! | `netns` | `Netns`: network namespaces, a closure on a thread inside one (`setns`), veth pairs |
//! | `packet` | a raw Ethernet frame out of an interface (`AF_PACKET`) |

pub mod alloc;
pub mod ethtool;
pub mod fdpass;
pub mod ifaddrs;
pub mod listen_fds;
#[cfg(any(test, feature = "test-util"))]
pub mod netns;
#[cfg(any(test, feature = "test-util"))]
pub mod packet;
pub mod poll;
pub mod process;
pub mod rlimit;
pub mod sched;
pub mod sockaddr;
pub mod udp;
#[cfg(feature = "xdp")]
pub mod xdp;
#[cfg(feature = "xdp")]
pub mod xsk;

/// A random 64-bit seed from the kernel (`getrandom(2)`), for IDs and hash
/// keys. getrandom never fails for 8 bytes once the pool is initialised;
/// should it fail, the seed comes from the time and the process id.
pub fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a valid writable buffer of `b.len()` bytes.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        t ^ (u64::from(std::process::id()) << 32)
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the XDP program's
/// `bpf_ktime_get_ns`, for the answer tier's `serve_until_ns` and
/// `inserted_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into the live, exclusively
    // borrowed `ts`; CLOCK_MONOTONIC is always available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// Hands the heap's free pages back to the kernel (glibc's
/// `malloc_trim(0)`; a no-op with other C libraries). glibc keeps freed
/// heap resident; after a big rebuild most of it would stay in the RSS.
/// It walks the heap: call it after such a change, never on a hot path.
pub fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn seeds_differ() {
        let a = super::random_seed();
        let b = super::random_seed();
        assert_ne!(a, b, "two 64-bit seeds from getrandom are equal");
    }

    #[test]
    fn malloc_trim_runs() {
        let v = vec![0u8; 1 << 20];
        drop(v);
        super::malloc_trim();
    }

    #[test]
    fn monotonic_ns_moves_forward() {
        let a = super::monotonic_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::monotonic_ns();
        assert!(b >= a + 2_000_000, "{a} -> {b}");
    }
}
