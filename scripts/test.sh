#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test.
#   scripts/test.sh            format check, clippy, all tests
#   KDNS_QUICK=1 scripts/test.sh   tests only
#   KDNS_FUZZ_SECS=0 scripts/test.sh   without the fuzzing step (default:
#                                     40 s per fuzz target, scripts/fuzz.sh)
# It starts the Docker engine for tests/docker.rs if none is running
# (scripts/docker-engine.sh) and stops it again at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

if ! command -v cargo >/dev/null; then
    echo "test.sh: cargo not found; install Rust (rustup) first" >&2
    exit 1
fi

if [[ -z "${KDNS_QUICK:-}" ]]; then
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    echo "== cargo clippy, socket-only kdns (--no-default-features)"
    cargo clippy -p kdns --all-targets --no-default-features --locked -- -D warnings
fi

echo "== cargo build"
# The daemon tests run the kdns-ctl binary, which cargo test does not build.
cargo build --workspace --locked

# tests/docker.rs runs compose.yaml on a real Docker engine: start dockerd
# unless one already answers, and stop it again on exit (also on failure)
# only if this run started it.
echo "== Docker engine"
if scripts/docker-engine.sh status >/dev/null 2>&1; then
    scripts/docker-engine.sh status
else
    trap 'scripts/docker-engine.sh stop' EXIT
    scripts/docker-engine.sh start
fi

# Coverage-guided fuzzing (cargo-fuzz), bounded: each target of
# kdns-core/fuzz runs KDNS_FUZZ_SECS seconds from its seed corpus. A crash
# fails the suite, after the tests have run too, and names the reproducer
# (scripts/fuzz.sh --repro FILE).
fuzz_secs=${KDNS_FUZZ_SECS:-40}
fuzz_failed=0
if [[ $fuzz_secs != 0 ]]; then
    echo "== fuzz (${fuzz_secs} s per target: parse, roundtrip, engine)"
    scripts/fuzz.sh "$fuzz_secs" || fuzz_failed=1
fi

echo "== cargo test"
cargo test --workspace --locked

# Nothing the tests started may outlive them: a kdns of this tree still
# running (a server whose supervisor was killed, a stop that hung) is a
# leak. Given 15 s to finish stopping, then named, killed and failed on.
leaked=""
for _ in $(seq 15); do
    leaked=$(pgrep -f -- "$PWD/target/debug/kdns" || true)
    [[ -z $leaked ]] && break
    sleep 1
done
if [[ -n $leaked ]]; then
    echo "test.sh: FAILED: processes left running by the tests:" >&2
    # shellcheck disable=SC2086
    ps -o pid,ppid,etime,args -p $(echo $leaked | tr ' ' ',') >&2 || true
    # shellcheck disable=SC2086
    kill -9 $leaked 2>/dev/null || true
    exit 1
fi

if ((fuzz_failed)); then
    echo "test.sh: FAILED: fuzzing found crashes:" >&2
    cat kdns-core/fuzz/target/fuzz-failures.txt >&2 || true
    exit 1
fi
