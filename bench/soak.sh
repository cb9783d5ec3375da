#!/usr/bin/env bash
# Soak: callwarden run against the bundled simulator for a bounded time with
# ~10,000 live calls, churn (every call ends 120 s after it starts, new calls
# arrive to replace them) and 5 % of API requests failing with 503. Samples
# the daemon's RSS and the enforcement lag; prints a Markdown summary.
# Not part of CI. Usage: bench/soak.sh [DURATION_S] (default 600).
#   CALLWARDEN_BIN=path/to/callwarden   binary to use (default: cargo build, debug)
set -euo pipefail

duration=${1:-600}
calls=10000
limit_s=120
rate=$(( calls / limit_s ))           # new calls per second to stay near $calls
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${CALLWARDEN_BIN:-}
if [[ -z $bin ]]; then
  (cd "$here" && cargo build --quiet)
  bin=${CARGO_TARGET_DIR:-$here/target}/debug/callwarden
fi

work=$(mktemp -d)
cleanup() {
  [[ -n ${daemon:-} ]] && kill "$daemon" 2>/dev/null || true
  [[ -n ${sim:-} ]] && kill "$sim" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" sim --listen 127.0.0.1:0 --seed 8 >"$work/sim.out" 2>"$work/sim.err" &
sim=$!
for _ in $(seq 50); do grep -q listening "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*/api/v1' "$work/sim.out")
root=${base%/api/v1}
token=$(grep -o 'auth_token=[^ ]*' "$work/sim.out" | head -1 | cut -d= -f2)
auth_id=$(grep -o 'auth_id=[^ ]*' "$work/sim.out" | head -1 | cut -d= -f2)

post() { curl -fsS -X POST -H 'content-type: application/json' -d "$2" "$root/_sim/$1" >/dev/null; }
post calls "{\"generate\": $calls, \"age_max_s\": $limit_s}"
post faults '{"error_rate": 0.05, "error_status": 503}'

mkdir -p "$work/policies"
cat >"$work/policies/soak.toml" <<TOML
[[rule]]
name = "soak-limit"
max_duration = "${limit_s}s"
measure_from = "start"
TOML
cat >"$work/callwarden.toml" <<TOML
policies = "policies"
[api]
base_url = "$base"
auth_id = "$auth_id"
max_requests_per_second = 1000
max_concurrent_requests = 16
[poll]
interval = "5s"
[safety]
max_hangups_per_cycle = 100000
max_hangups_percent = 100
[state]
dir = "state"
[http]
listen = "127.0.0.1:0"
TOML
chmod 600 "$work/callwarden.toml"

VOBIZ_AUTH_TOKEN=$token "$bin" --config "$work/callwarden.toml" --log-format json run \
  >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 100); do grep -q 'status listener up' "$work/daemon.log" 2>/dev/null && break; sleep 0.1; done
port=$(grep 'status listener up' "$work/daemon.log" | grep -o '127.0.0.1:[0-9]*' | head -1 | cut -d: -f2)

metric() { curl -fsS "http://127.0.0.1:$port/metrics" | awk -v m="$1" '$1 ~ "^"m {s += $2} END {print s + 0}'; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$daemon/status"; }

echo "| t (s) | RSS (MiB) | live calls | hangups | lag mean (ms) |"
echo "|---|---|---|---|---|"
start=$(date +%s)
next_sample=$start
while (( $(date +%s) - start < duration )); do
  post calls "{\"generate\": $rate, \"age_max_s\": 1}" || true
  now=$(date +%s)
  if (( now >= next_sample )); then
    live=$(metric callwarden_live_calls)
    count=$(metric callwarden_enforcement_lag_seconds_count)
    sum=$(metric callwarden_enforcement_lag_seconds_sum)
    hung=$(metric 'callwarden_hangups_total')
    lag=$(awk -v s="$sum" -v c="$count" 'BEGIN {printf "%.1f", c ? 1000 * s / c : 0}')
    printf '| %d | %.1f | %s | %s | %s |\n' $(( now - start )) "$(awk -v k="$(rss_kb)" 'BEGIN {print k / 1024}')" \
      "$live" "$hung" "$lag"
    next_sample=$(( now + 60 ))
  fi
  sleep 1
done
double=$(curl -fsS "$root/_sim/calls" | grep -o '"hangups":[2-9]' | wc -l || true)
echo
echo "calls hung up twice: $double"
