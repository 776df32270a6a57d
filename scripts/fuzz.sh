#!/usr/bin/env bash
# Builds every cargo-fuzz target in the repository; with --run SECONDS, also runs each one for that
# long and fails if any of them finds a crash.
#
# Fuzz crates sit beside the crate they fuzz (`<crate>/fuzz`, each its own workspace), found as
# `*/fuzz` and `*/*/fuzz` with a Cargo.toml. The toolchain is stable (rust-toolchain.toml), and
# cargo-fuzz's default build (AddressSanitizer, `-Zsanitizer=address`) needs unstable flags, so
# cargo fuzz runs with RUSTC_BOOTSTRAP=1. Inputs that crash are saved under `<crate>/fuzz/artifacts`
# and the corpus under `<crate>/fuzz/corpus` (both gitignored). All fuzz crates build into one
# target directory, `target/fuzz`.
#
# Usage: scripts/fuzz.sh [--run SECONDS]
set -euo pipefail

usage() {
    echo "usage: $0 [--run SECONDS]"
    echo "  builds every fuzz target; with --run, runs each for SECONDS (a whole number > 0)"
}

run_seconds=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --run)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || { usage >&2; exit 2; }
            run_seconds=$2
            shift 2
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
done

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: cargo-fuzz is not installed; installing it: cargo install --locked cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
echo "fuzz: using $(cargo fuzz --version)"

# One target directory for every fuzz crate: each is its own workspace, but their common
# dependencies (libFuzzer's C++ above all, serde, tokio, rustls) are then built once instead of
# once per crate. Target names are unique across the repository, so their binaries do not clash.
target_dir="$PWD/target/fuzz"

# cargo fuzz, allowed the unstable sanitizer flags on the stable toolchain.
cargo_fuzz() {
    local command=$1
    shift
    RUSTC_BOOTSTRAP=1 cargo fuzz "$command" --target-dir "$target_dir" "$@"
}

shopt -s nullglob
crates=0
failed=()
declare -A owner=()
for dir in */fuzz */*/fuzz; do
    [[ -f "$dir/Cargo.toml" ]] || continue
    crates=$((crates + 1))
    crate=$(dirname "$dir")
    listed=$(cd "$crate" && cargo fuzz list)
    mapfile -t targets <<<"$listed"
    if [[ -z "${targets[*]}" ]]; then
        echo "fuzz: $dir has no targets; skipping"
        continue
    fi
    for target in "${targets[@]}"; do
        if [[ -n "${owner[$target]:-}" ]]; then
            echo "fuzz: target $target is in both ${owner[$target]} and $dir; names must be unique (one target dir)" >&2
            exit 1
        fi
        owner[$target]=$dir
    done
    echo "fuzz: building $dir (targets: ${targets[*]}): RUSTC_BOOTSTRAP=1 cargo fuzz build -O"
    (cd "$crate" && cargo_fuzz build -O)
    [[ -n "$run_seconds" ]] || continue
    for target in "${targets[@]}"; do
        echo "fuzz: running $dir target $target for ${run_seconds}s:" \
            "RUSTC_BOOTSTRAP=1 cargo fuzz run -O $target -- -max_total_time=$run_seconds"
        if (cd "$crate" && cargo_fuzz run -O "$target" -- -max_total_time="$run_seconds"); then
            echo "fuzz: $dir target $target: no crash in ${run_seconds}s"
        else
            echo "fuzz: $dir target $target FAILED (the failing input is saved under $dir/artifacts/$target)"
            failed+=("$dir:$target")
        fi
    done
done

if [[ $crates -eq 0 ]]; then
    echo "fuzz: no fuzz crates found (*/fuzz or */*/fuzz with a Cargo.toml)" >&2
    exit 1
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
if [[ -n "$run_seconds" ]]; then
    echo "fuzz: done: $crates fuzz crate(s) built and run"
else
    echo "fuzz: done: $crates fuzz crate(s) built"
fi
