#!/usr/bin/env bash
# The load benchmark in one command: callwarden vs the naive vobiz-python
# poller, side by side, against `callwarden sim` with churn.
#
#   bench/run.sh [--before REF] [--sizes 1000,10000,100000] [--duration 60] [other loadbench.py flags]
#
# Builds the release binary, makes .venv with vobiz-python 0.1.1, runs
# bench/loadbench.py, writes bench/results/SIZE.json and prints a table per
# size (bench/report.py). Loopback only; every run is bounded (--max-run-s).
#
# --before REF also builds revision REF (in a temporary git worktree) and
# runs it first against the same calls and churn, in the same run: the
# report then shows its figures and this checkout's side by side.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
before_args=()
if [ "${1:-}" = "--before" ]; then
    ref="$2"
    shift 2
    tree="$(mktemp -d /tmp/callwarden-before-XXXXXX)"
    trap 'git worktree remove --force "$tree" >/dev/null 2>&1 || true' EXIT
    git worktree add --detach "$tree" "$ref" >/dev/null
    echo "== build $ref (release)" >&2
    (cd "$tree" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --bin callwarden)
    cp "$target/release/callwarden" "$target/release/callwarden-before"
    # Both trees are the same package in one target directory, and its
    # dep-info now names the other tree's files: without this, cargo takes
    # the build below as fresh and "after" is the before binary again.
    cargo clean --release --quiet -p callwarden
    before_args=(--before "$target/release/callwarden-before")
fi
echo "== build (release)" >&2
cargo build --release --quiet --bin callwarden
bin="$target/release/callwarden"

echo "== official Python SDK for the baseline" >&2
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check vobiz-python==0.1.1

echo "== machine" >&2
echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load $(cut -d' ' -f1-3 /proc/loadavg)" >&2

.venv/bin/python bench/loadbench.py --bin "$bin" "${before_args[@]}" --python "$PWD/.venv/bin/python" "$@"
.venv/bin/python bench/report.py bench/results
