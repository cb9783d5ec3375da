"""Start-up benchmark: how long until every call already past its limit at
start has been ended, under a tight request budget.

Starts `callwarden sim` (its own process) with --calls outbound calls, of
which --overdue are already past the one-hour limit of the policy; the rest
stay under it for the whole run. The calls are created in random order, so
the list (creation order) says nothing of their age: the hard case. Then
`callwarden run` starts with [api] max_requests_per_second = --rate and the
default poll interval, in one of two modes:

- cold: an empty state directory (nothing is known of any call);
- memory: a restart: the state directory holds the first-seen times an
  earlier run would have written (each call first seen a second after it
  began), except for the calls that began in the last --downtime-s (they
  began while the daemon was down).

Every figure comes from the simulator: when each overdue call was ended
(`ended_at`, `ended_by: api`) counted from the daemon's start, and whether
any other call was ended (a wrong hangup). A run stops when every overdue
call has ended or after --max-run-s, and reports how many were ended by then.

    python3 bench/startup_overdue.py --bin target/release/callwarden \\
        [--bin-before /path/to/before/callwarden] [--calls 10000] [--rate 10] \\
        [--modes cold,memory] [--max-run-s 600]

Each run paces its own daemon, so runs may go in parallel (one process per
binary and mode, with --label naming the binary).

Prints one Markdown row per binary and mode, for BENCHMARKS.md.
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

from slow_disk import AUTH_ID, TOKEN, http, start_sim, ts

LIMIT_S = 3600
POLICY = """
[[rule]]
name = "limit-1h"
max_duration = "1h"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"""


def rfc3339(seconds):
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def fleet(args):
    """The calls, in random order: --overdue past the limit, the rest young
    enough to stay under it for the whole run."""
    rng = random.Random(args.seed)
    young_max = LIMIT_S - args.max_run_s - 300
    calls = []
    for i in range(args.calls):
        overdue = i < args.overdue
        age = rng.uniform(LIMIT_S + 60, 2 * LIMIT_S) if overdue else rng.uniform(0, young_max)
        calls.append(
            {
                "age_s": round(age, 3),
                "direction": "outbound",
                "from": "+14155550100",
                "to": f"+1415{i:07d}",
            }
        )
    rng.shuffle(calls)
    return calls


def write_memory(state, calls, now, downtime_s):
    """What an earlier run remembers: each call first seen a second after it
    began, but for those that began while the daemon was down."""
    remembered = {}
    for call in calls:
        started = ts(call["started_at"])
        if now - started < downtime_s:
            continue
        seen = rfc3339(started + 1)
        remembered[call["uuid"]] = {
            "first_seen": seen,
            "answered_seen": seen,
            "last_change": seen,
            "state_key": 0,
            "first_sight_only": False,
        }
    with open(os.path.join(state, "calls-default.json"), "w") as f:
        json.dump(remembered, f)
    return len(remembered)


def run_one(label, mode, binary, sim_binary, args):
    work = tempfile.mkdtemp(prefix=f"startup-{label}-{mode}-")
    sim, base_url, root = start_sim(sim_binary, work)
    try:
        os.makedirs(os.path.join(work, "policies"))
        state = os.path.join(work, "state")
        os.makedirs(state)
        with open(os.path.join(work, "policies", "bench.toml"), "w") as f:
            f.write(POLICY)
        config = os.path.join(work, "callwarden.toml")
        with open(config, "w") as f:
            f.write(
                f"""policies = "policies"
[api]
max_requests_per_second = {args.rate}
[safety]
max_hangups_per_cycle = 100000
max_hangups_percent = 100
# The breaker is not measured here: only the order of the reads.
breaker_min_live_calls = 1000000
[state]
dir = "{state}"
[http]
listen = ""
[log]
format = "json"
"""
            )
        uuids = http("POST", root + "/_sim/calls", {"calls": fleet(args)})["uuids"]
        created = http("GET", root + "/_sim/calls")["calls"]
        overdue = {
            c["uuid"] for c in created if time.time() - ts(c["started_at"]) > LIMIT_S
        }
        remembered = 0
        if mode == "memory":
            remembered = write_memory(state, created, time.time(), args.downtime_s)
        env = dict(os.environ, VOBIZ_AUTH_ID=AUTH_ID, VOBIZ_AUTH_TOKEN=TOKEN, VOBIZ_BASE_URL=base_url)
        log = open(os.path.join(work, "daemon.log"), "w")
        t0 = time.time()
        proc = subprocess.Popen([binary, "--config", config, "run"], env=env, stdout=log, stderr=log)
        until = t0 + args.max_run_s
        while time.time() < until:
            time.sleep(5)
            now = http("GET", root + "/_sim/calls")["calls"]
            if all(c.get("ended_at") for c in now if c["uuid"] in overdue):
                break
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        final = http("GET", root + "/_sim/calls")["calls"]
        records = http("GET", root + "/_sim/log?since=0")["records"]
    finally:
        sim.send_signal(signal.SIGINT)
        try:
            sim.wait(10)
        except subprocess.TimeoutExpired:
            sim.kill()

    with open(os.path.join(work, "calls.json"), "w") as f:
        json.dump(final, f)
    with open(os.path.join(work, "sim-log.jsonl"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    reads = sum(1 for r in records if r["method"] == "GET" and r["uuid"] is not None)
    ends = sorted(ts(c["ended_at"]) - t0 for c in final if c["uuid"] in overdue and c.get("ended_at"))
    wrong = sum(1 for c in final if c["uuid"] not in overdue and c.get("ended_at"))

    def when(share):
        needed = max(1, int(round(share * len(overdue))))
        return round(ends[needed - 1], 1) if len(ends) >= needed else None

    result = {
        "label": label,
        "mode": mode,
        "calls": len(uuids),
        "overdue": len(overdue),
        "remembered": remembered,
        "rate": args.rate,
        "ended": len(ends),
        "first_s": round(ends[0], 1) if ends else None,
        "half_s": when(0.5),
        "p90_s": when(0.9),
        "all_s": when(1.0),
        "run_s": round(time.time() - t0, 1),
        "reads": reads,
        "wrong": wrong,
        "load": os.getloadavg()[0],
        "work": work,
    }
    print(json.dumps(result), file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True, help="the callwarden binary to measure (also runs the sim)")
    parser.add_argument("--bin-before", help="a baseline binary, measured first")
    parser.add_argument("--label", default="after", help="the name of --bin's rows (runs in parallel)")
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--overdue", type=int, default=100)
    parser.add_argument("--rate", type=int, default=10, help="[api] max_requests_per_second")
    parser.add_argument("--modes", default="cold,memory")
    parser.add_argument("--downtime-s", type=float, default=120)
    parser.add_argument("--max-run-s", type=float, default=600)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    binaries = ([("before", args.bin_before)] if args.bin_before else []) + [(args.label, args.bin)]
    runs = [
        run_one(label, mode, binary, args.bin, args)
        for mode in args.modes.split(",")
        for label, binary in binaries
    ]
    print("| run | mode | calls | overdue | remembered | budget | ended | first | half | 90 % | all | wrong | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in runs:
        def s(v):
            return "—" if v is None else f"{v} s"

        print(
            f"| {r['label']} | {r['mode']} | {r['calls']} | {r['overdue']} | {r['remembered']} | {r['rate']} req/s "
            f"| {r['ended']}/{r['overdue']} in {r['run_s']} s | {s(r['first_s'])} | {s(r['half_s'])} | {s(r['p90_s'])} "
            f"| {s(r['all_s'])} | {r['wrong']} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
