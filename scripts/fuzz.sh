#!/usr/bin/env bash
# Fuzzes kdns-core with cargo-fuzz (libFuzzer, coverage-guided).
#   scripts/fuzz.sh                 every target (parse, roundtrip, engine), 60 s each
#   scripts/fuzz.sh 600             every target, 600 s each
#   scripts/fuzz.sh 60 engine       one target
#   scripts/fuzz.sh --repro FILE    run the target an artifact came from on it once
#                                   (artifacts/<target>/crash-...: prints the panic)
#
# Targets live in kdns-core/fuzz (a crate outside the main workspace):
#   parse      every reader of kdns_core::wire over arbitrary bytes
#   roundtrip  parse -> MessageBuilder copy -> reparse, same message
#   engine     the sans-IO Engine driven by a script of queries, backend
#              answers and time (well-formed replies, every query ends once,
#              counters add up; see fuzz_targets/engine.rs)
# The seed corpus kdns-core/fuzz/corpus/<target> (gen_corpus.py) is only
# read; inputs the fuzzer finds go to kdns-core/fuzz/target/corpus/<target>
# (ignored by git), crashes to kdns-core/fuzz/artifacts/<target>/. On a crash
# the script names the artifact and the command that reproduces it, and
# exits 1. scripts/test.sh runs it for a bounded time (KDNS_FUZZ_SECS).
#
# What it needs, installed here when missing: cargo-fuzz (cargo install
# from crates.io) and a C++ compiler for libFuzzer (Debian g++, as root).
# libFuzzer needs nightly rustc flags (-Z sanitizer=...). A nightly toolchain
# is used when rustup has one; otherwise stable rustc with RUSTC_BOOTSTRAP=1,
# which accepts the same flags. Extra libFuzzer flags: FUZZ_ARGS="-jobs=4".
set -euo pipefail
cd "$(dirname "$0")/../kdns-core/fuzz"

repro=""
if [[ ${1:-} == --repro ]]; then
    repro=${2:?usage: scripts/fuzz.sh --repro FILE}
    [[ $repro == /* ]] || repro="$OLDPWD/$repro"
    [[ -f $repro ]] || { echo "fuzz.sh: no such file: $repro" >&2; exit 1; }
fi
secs="${1:-60}"
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(parse roundtrip engine)
fi

if ! command -v cargo >/dev/null; then
    echo "fuzz.sh: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi
if ! command -v c++ >/dev/null && ! command -v g++ >/dev/null && ! command -v clang++ >/dev/null; then
    echo "fuzz.sh: no C++ compiler (libFuzzer is C++); installing g++" >&2
    if [[ $(id -u) -ne 0 ]]; then
        echo "fuzz.sh: need root to apt-get install g++" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends g++ >/dev/null; }
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz (cargo install, from crates.io)" >&2
    cargo install cargo-fuzz --locked
fi

if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    echo "fuzz.sh: no nightly toolchain; using stable rustc with RUSTC_BOOTSTRAP=1" >&2
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

# -a: debug assertions (and so integer overflow checks) on.
# -s none: kdns-core forbids unsafe code, so AddressSanitizer finds
# nothing a panic would not; without it the targets run ~3x faster.
if [[ -n $repro ]]; then
    t=$(basename "$(dirname "$repro")")
    [[ -f fuzz_targets/$t.rs ]] || { echo "fuzz.sh: $repro is not under artifacts/<target>/" >&2; exit 1; }
    exec "${fuzz[@]}" run -a -s none "$t" "$repro"
fi

# The failures of this run, one line each (scripts/test.sh repeats them at
# its end).
mkdir -p target
failures=target/fuzz-failures.txt
: >"$failures"
status=0
for t in "${targets[@]}"; do
    mkdir -p "target/corpus/$t" "artifacts/$t"
    stamp=$(mktemp)
    echo "== fuzz $t for ${secs}s" >&2
    # -timeout: an input running for 10 s is a hang (reported like a crash).
    # The outer timeout bounds the build and a stuck run.
    # shellcheck disable=SC2086
    if ! timeout --kill-after=10 $((secs + 900)) "${fuzz[@]}" run -a -s none "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -print_final_stats=1 ${FUZZ_ARGS:-} >"target/fuzz-$t.log" 2>&1; then
        log="target/fuzz-$t.log"
        if grep -q 'panicked at' "$log"; then
            # the panic message (up to the backtrace) and libFuzzer's summary
            sed -n '/panicked at/,/^stack backtrace:/p' "$log" | grep -v '^stack backtrace:' | head -30 >&2
            grep -E '^SUMMARY|^MS: ' "$log" >&2 || true
        else
            grep -v -e '^#[0-9]' -e '^INFO:' "$log" | tail -40 >&2
        fi
        echo "fuzz.sh: $t FAILED (full log: kdns-core/fuzz/target/fuzz-$t.log)" >&2
        found=0
        while IFS= read -r f; do
            found=1
            echo "fuzz.sh: reproducer: kdns-core/fuzz/$f" >&2
            echo "fuzz.sh:   scripts/fuzz.sh --repro kdns-core/fuzz/$f" >&2
            echo "$t: $(grep -m1 -o 'DAEMON BUG ([^)]*)' "$log" || true) $(grep -m1 -A1 'panicked at' "$log" | tail -1 | cut -c1-120); reproduce: scripts/fuzz.sh --repro kdns-core/fuzz/$f" >>"$failures"
        done < <(find "artifacts/$t" -type f -newer "$stamp" | sort)
        if ((!found)); then
            echo "fuzz.sh: no new artifact in kdns-core/fuzz/artifacts/$t/ (build error or timeout?)" >&2
            echo "$t: failed without an artifact (see kdns-core/fuzz/target/fuzz-$t.log)" >>"$failures"
        fi
        status=1
    else
        grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::new_units_added)|^Done [0-9]+ runs' \
            "target/fuzz-$t.log" | tr '\n' ' ' >&2
        echo >&2
    fi
    rm -f "$stamp"
done
exit $status
