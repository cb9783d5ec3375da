#!/usr/bin/env bash
# The criterion micro-benchmarks of two revisions, side by side, in one run.
#
#   bench/criterion.sh [--before REF] [--benches "policy parse"] [--] [criterion flags...]
#
# Builds REF (default: main) in a temporary git worktree that shares this
# checkout's target directory (so dependencies are built once), runs the
# benches there with `--save-baseline before`, then here with
# `--save-baseline after`, and prints one table (bench/criterion_report.py).
# Bench names must match across the two revisions.
set -euo pipefail
cd "$(dirname "$0")/.."

before=main
benches="policy parse"
while [ $# -gt 0 ]; do
    case "$1" in
        --before) before="$2"; shift 2 ;;
        --benches) benches="$2"; shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
flags=()
for b in $benches; do flags+=(--bench "$b"); done

tree="$(mktemp -d /tmp/callwarden-before-XXXXXX)"
cleanup() { git worktree remove --force "$tree" >/dev/null 2>&1 || true; }
trap cleanup EXIT
git worktree add --detach "$tree" "$before" >/dev/null

echo "== before: $before ($(git rev-parse --short "$before"))" >&2
(cd "$tree" && cargo bench --quiet "${flags[@]}" -- --save-baseline before "$@")
# Both trees are the same package in one target directory, and the
# artifacts just built are newer than this checkout's sources: without
# this, cargo takes them as fresh and "after" runs the before code again.
cargo clean --release --quiet -p callwarden
echo "== after: $(git rev-parse --short HEAD)$(git diff --quiet || echo ' + uncommitted changes')" >&2
cargo bench --quiet "${flags[@]}" -- --save-baseline after "$@"
python3 bench/criterion_report.py "$CARGO_TARGET_DIR/criterion" before after
