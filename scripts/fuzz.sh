#!/usr/bin/env bash
# Fuzzes the kdns-core DNS wire parser with cargo-fuzz (libFuzzer).
#   scripts/fuzz.sh            both targets (parse, roundtrip), 60 s each
#   scripts/fuzz.sh 600        both targets, 600 s each
#   scripts/fuzz.sh 60 parse   one target
#
# Targets live in kdns-core/fuzz (a crate outside the main workspace).
# The seed corpus kdns-core/fuzz/corpus/<target> is only read; inputs the
# fuzzer finds go to kdns-core/fuzz/target/corpus/<target> (ignored by git),
# crashes to kdns-core/fuzz/artifacts/<target>/. Reproduce a crash with
#   cd kdns-core/fuzz && cargo fuzz run <target> artifacts/<target>/crash-...
# (prefix with the same toolchain selection as below).
#
# libFuzzer needs nightly rustc flags (-Z sanitizer=...). A nightly toolchain
# is used when rustup has one; otherwise stable rustc with RUSTC_BOOTSTRAP=1,
# which accepts the same flags. Extra libFuzzer flags: FUZZ_ARGS="-jobs=4".
set -euo pipefail
cd "$(dirname "$0")/../kdns-core/fuzz"

secs="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(parse roundtrip)
fi

if ! command -v cargo >/dev/null; then
    echo "fuzz.sh: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    echo "fuzz.sh: no nightly toolchain; using stable rustc with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

status=0
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t"
    echo "== fuzz $t for ${secs}s" >&2
    # -a: debug assertions (and so integer overflow checks) on.
    # -s none: kdns-core forbids unsafe code, so AddressSanitizer finds
    # nothing a panic would not; without it the targets run ~3x faster.
    # shellcheck disable=SC2086
    if ! "${fuzz[@]}" run -a -s none "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 ${FUZZ_ARGS:-}; then
        echo "fuzz.sh: $t FAILED; see kdns-core/fuzz/artifacts/$t/" >&2
        status=1
    fi
done
exit $status
