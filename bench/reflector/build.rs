//! Compiles kdns' own XDP program (`../../bpf/kdns_xdp.c`, by path) into
//! `$OUT_DIR/kdns_xdp.o`: the reflector steers exactly the frames kdns
//! steers (UDP to the listen address and port), everything else goes to the
//! kernel. Needs clang and libbpf-dev (Debian), like kdns' own build.rs.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let src = manifest.join("../../bpf/kdns_xdp.c");
    let obj = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("kdns_xdp.o");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());
    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-target", "bpf"]);
    for triple in ["x86_64-linux-gnu", "aarch64-linux-gnu"] {
        let dir = Path::new("/usr/include").join(triple);
        if dir.join("asm/types.h").exists() {
            cmd.arg(format!("-I{}", dir.display()));
            break;
        }
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (apt-get install clang libbpf-dev)"));
    assert!(status.success(), "compiling the XDP program failed ({status}): {cmd:?}");
}
