//! kdns-ctl: the control client. The daemon's control socket does not exist
//! yet, so there is nothing to talk to.

fn main() {
    eprintln!("kdns-ctl {}: the daemon's control socket is not built yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}
