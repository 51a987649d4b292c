//! The kdns daemon. Its I/O drivers (UDP/TCP sockets, AF_XDP) are not built
//! yet; today the engine lives in the `kdns-core` library.

fn main() {
    eprintln!("kdns {}: the daemon's I/O drivers are not built yet; the DNS engine is the kdns-core library", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
