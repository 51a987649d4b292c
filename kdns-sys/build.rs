//! Build script of `kdns-sys`, the one place that compiles the XDP program.
//!
//! With the `xdp` feature (on by default) it compiles `bpf/kdns_xdp.c` (at
//! the workspace root) with clang into `$OUT_DIR/kdns_xdp.o`, which
//! `src/xdp/mod.rs` embeds as `kdns_sys::xdp::OBJECT` for the daemon and
//! the benchmark reflector alike. Without the feature it does nothing.
//!
//! Needs (Debian): clang, libbpf-dev (bpf/bpf_helpers.h) and linux-libc-dev
//! (linux/*.h, asm/types.h; pulled in by libc6-dev). Set `CLANG` to use
//! another clang binary.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const NO_XDP_HINT: &str = "or build without it: cargo build --no-default-features";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_FEATURE_XDP");
    if env::var_os("CARGO_FEATURE_XDP").is_none() {
        return;
    }
    println!("cargo:rerun-if-changed=../bpf/");
    println!("cargo:rerun-if-env-changed=CLANG");

    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let src = manifest_dir.join("../bpf/kdns_xdp.c");
    let obj = out_dir.join("kdns_xdp.o");
    let clang = env::var_os("CLANG").unwrap_or_else(|| "clang".into());

    match Command::new(&clang).arg("--version").output() {
        Ok(out) if out.status.success() => {}
        _ => panic!(
            "building kdns with AF_XDP support needs clang (Debian: apt-get install clang libbpf-dev) — {NO_XDP_HINT} \
             (tried `{}`; set CLANG=/path/to/clang to use another one)",
            Path::new(&clang).display()
        ),
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        panic!(
            "building kdns with AF_XDP support needs libbpf-dev for /usr/include/bpf/bpf_helpers.h \
             (Debian: apt-get install clang libbpf-dev) — {NO_XDP_HINT}"
        );
    }

    let mut cmd = Command::new(&clang);
    cmd.args(["-O2", "-g", "-Wall", "-target", "bpf"]);
    if let Some(dir) = asm_include_dir() {
        cmd.arg(format!("-I{}", dir.display()));
    } else if !Path::new("/usr/include/asm/types.h").exists() {
        panic!(
            "building kdns with AF_XDP support needs the Linux UAPI headers (asm/types.h; \
             Debian: apt-get install linux-libc-dev) — {NO_XDP_HINT}"
        );
    }
    cmd.arg("-c").arg(&src).arg("-o").arg(&obj);
    let status = cmd.status().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    if !status.success() {
        panic!("compiling the XDP program failed ({status}): {cmd:?} — {NO_XDP_HINT}");
    }
}

/// The multiarch include directory holding `asm/types.h` (the BPF target has
/// no `asm/` of its own): the host's `gcc -dumpmachine` triple first, then a
/// fixed list of Debian multiarch triples.
fn asm_include_dir() -> Option<PathBuf> {
    let mut triples: Vec<String> = Vec::new();
    if let Ok(out) = Command::new("gcc").arg("-dumpmachine").output() {
        if out.status.success() {
            triples.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
        }
    }
    triples.extend(
        [
            "x86_64-linux-gnu",
            "aarch64-linux-gnu",
            "arm-linux-gnueabihf",
            "riscv64-linux-gnu",
            "powerpc64le-linux-gnu",
            "s390x-linux-gnu",
            "i386-linux-gnu",
            "loongarch64-linux-gnu",
        ]
        .map(String::from),
    );
    triples.into_iter().filter(|t| !t.is_empty()).map(|t| Path::new("/usr/include").join(t)).find(|d| d.join("asm/types.h").exists())
}
