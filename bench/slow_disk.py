"""Slow-disk benchmark: enforcement lag and poll gaps when every sync is slow.

Runs `callwarden run` under strace, which delays every fsync/fdatasync of
the daemon by --delay-ms (a busy or slow disk, no special hardware needed):

    strace -f --seccomp-bpf -e trace=fsync,fdatasync \\
        -e inject=fsync:delay_enter=300000 -e inject=fdatasync:delay_enter=300000 \\
        callwarden run ...

against `callwarden sim` (its own process) holding --calls outbound calls
whose 20-second limit falls due --spacing-ms apart, starting a few seconds
after the daemon starts. Every figure comes from the simulator's request log
(GET /_sim/log) and call records: lag = the answered DELETE's time minus the
call's true deadline; poll gaps = time between consecutive list requests.
Counts the syncs strace saw.

    python3 bench/slow_disk.py --bin target/release/callwarden \\
        [--bin-before /path/to/main/callwarden] [--delay-ms 300]

Prints one Markdown row per binary, for BENCHMARKS.md.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime

AUTH_ID = "MA00000000000000SIM0"
TOKEN = "sim-token"
LIMIT_S = 20.0
POLICY = """
[[rule]]
name = "limit-20s"
max_duration = "20s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"""


def http(method, url, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


def ts(raw):
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() if raw else None


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))
    return values[k]


def children(pid):
    """The direct children of `pid` (strace's tracee)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid:
            found.append(int(entry))
    return found


def start_sim(binary, work):
    log = open(os.path.join(work, "sim.log"), "w")
    proc = subprocess.Popen(
        [binary, "sim", "--listen", "127.0.0.1:0", "--shape", "flat", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    banner = proc.stdout.readline()
    base_url = banner.split()[2]
    return proc, base_url, base_url.rsplit("/api/v1", 1)[0]


def run_one(label, binary, sim_binary, args):
    work = tempfile.mkdtemp(prefix=f"slowdisk-{label}-")
    sim, base_url, root = start_sim(sim_binary, work)
    try:
        os.makedirs(os.path.join(work, "policies"))
        with open(os.path.join(work, "policies", "bench.toml"), "w") as f:
            f.write(POLICY)
        config = os.path.join(work, "callwarden.toml")
        with open(config, "w") as f:
            f.write(
                f"""policies = "policies"
[api]
max_requests_per_second = 1000
[poll]
interval = "{args.poll_s}s"
[safety]
max_hangups_per_cycle = 1000
max_hangups_percent = 100
# The percent rule needs this many live calls; the breaker is not measured here.
breaker_min_live_calls = 100000
[state]
dir = "{work}/state"
[http]
listen = ""
[log]
format = "json"
"""
            )
        # Deadlines from lead_s after loading, spacing apart.
        calls = [
            {
                "age_s": LIMIT_S - args.lead_s - i * args.spacing_ms / 1000.0,
                "direction": "outbound",
                "from": "+14155550100",
                "to": f"+1415555{i:04d}",
            }
            for i in range(args.calls)
        ]
        uuids = http("POST", root + "/_sim/calls", {"calls": calls})["uuids"]
        env = dict(os.environ, VOBIZ_AUTH_ID=AUTH_ID, VOBIZ_AUTH_TOKEN=TOKEN, VOBIZ_BASE_URL=base_url)
        delay = str(args.delay_ms * 1000)
        trace = os.path.join(work, "strace.out")
        command = [
            "strace", "-f", "--seccomp-bpf", "-qq", "-e", "signal=none", "-o", trace,
            "-e", "trace=fsync,fdatasync",
            "-e", f"inject=fsync:delay_enter={delay}",
            "-e", f"inject=fdatasync:delay_enter={delay}",
            binary, "--config", config, "run",
        ]
        log = open(os.path.join(work, "daemon.log"), "w")
        t0 = time.time()
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        until = t0 + args.lead_s + args.calls * args.spacing_ms / 1000.0 + args.max_wait_s
        while time.time() < until:
            calls_now = http("GET", root + "/_sim/calls")["calls"]
            if all(c.get("ended_at") for c in calls_now if c["uuid"] in uuids):
                break
            time.sleep(0.5)
        # A few more polls to see the gaps after the burst.
        time.sleep(2 * args.poll_s)
        t1 = time.time()
        # strace would detach on a signal and leave the daemon running:
        # stop the daemon itself, and strace ends with it.
        for pid in children(proc.pid):
            os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            for pid in children(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
        records = http("GET", root + "/_sim/log?since=0")["records"]
        calls_now = {c["uuid"]: c for c in http("GET", root + "/_sim/calls")["calls"]}
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()

    with open(os.path.join(work, "sim-log.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    with open(os.path.join(work, "calls.json"), "w") as f:
        json.dump(calls_now, f)
    lags = []
    for r in records:
        if r["method"] == "DELETE" and r["status"] in (200, 202, 204) and r["uuid"] in calls_now:
            deadline = ts(calls_now[r["uuid"]]["started_at"]) + LIMIT_S
            lags.append(ts(r["t_wall"]) - deadline)
    # The disk's share: from the last re-read before the DELETE to the DELETE
    # (the intent's sync happens in between; the rest of the lag is the
    # timer and the clock-skew bound).
    waits = []
    for u in uuids:
        gets = sorted(ts(r["t_wall"]) for r in records if r["uuid"] == u and r["method"] == "GET")
        dels = sorted(ts(r["t_wall"]) for r in records if r["uuid"] == u and r["method"] == "DELETE")
        if gets and dels:
            before = [g for g in gets if g <= dels[0]]
            if before:
                waits.append(dels[0] - before[-1])
    ended = sum(1 for u in uuids if calls_now.get(u, {}).get("ended_at"))
    lists = sorted(ts(r["t_wall"]) for r in records if r["method"] == "GET" and r["uuid"] is None)
    lists = [t for t in lists if t0 <= t <= t1]
    gaps = [b - a for a, b in zip(lists, lists[1:])]
    with open(trace) as f:
        syncs = sum(1 for line in f if "DELAYED" in line)
    result = {
        "label": label,
        "calls": args.calls,
        "hung_up": ended,
        "lag_p50_ms": round(1000 * pct(lags, 0.5)),
        "lag_p99_ms": round(1000 * pct(lags, 0.99)),
        "lag_max_ms": round(1000 * max(lags)) if lags else None,
        "early": sum(1 for lag in lags if lag < 0),
        "reread_to_delete_p50_ms": round(1000 * pct(waits, 0.5)),
        "reread_to_delete_p99_ms": round(1000 * pct(waits, 0.99)),
        "poll_gap_p50_s": round(pct(gaps, 0.5), 2),
        "poll_gap_max_s": round(max(gaps), 2) if gaps else None,
        "syncs": syncs,
        "work": work,
    }
    print(json.dumps(result), file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the callwarden binary to measure (also runs the sim)")
    parser.add_argument("--bin-before", help="a baseline binary (e.g. main's), measured first")
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--spacing-ms", type=float, default=100)
    parser.add_argument("--delay-ms", type=int, default=300)
    parser.add_argument("--poll-s", type=float, default=2)
    parser.add_argument("--lead-s", type=float, default=6)
    parser.add_argument("--max-wait-s", type=float, default=60)
    args = parser.parse_args()
    runs = []
    if args.bin_before:
        runs.append(run_one("before", args.bin_before, args.bin, args))
    runs.append(run_one("after", args.bin, args.bin, args))
    print("| run | calls hung up | lag p50 | lag p99 | lag max | re-read to DELETE p50 / p99 | early | poll gap p50 | poll gap max | syncs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        print(
            f"| {r['label']} | {r['hung_up']}/{r['calls']} | {r['lag_p50_ms']} ms | {r['lag_p99_ms']} ms "
            f"| {r['lag_max_ms']} ms | {r['reread_to_delete_p50_ms']} / {r['reread_to_delete_p99_ms']} ms | {r['early']} | {r['poll_gap_p50_s']} s | {r['poll_gap_max_s']} s | {r['syncs']} |"
        )


if __name__ == "__main__":
    main()
