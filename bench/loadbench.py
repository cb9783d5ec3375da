"""Load benchmark driver: callwarden vs the naive SDK poller, same run.

For each size N: start `callwarden sim` (its own process), load N live calls
with steady-state ages, switch on churn (Poisson arrivals, exponential holds),
run `callwarden run` against it and measure; then reset the simulator, load
the very same call set and churn, run the naive poller (bench/naive_poller.py)
for the same time and measure it the same way. Every figure comes from the
simulator's request log (GET /_sim/log), its call records (GET /_sim/calls)
and /proc of the measured process. Writes bench/results/SIZE.json and prints
a Markdown table per size.

Run it through bench/run.sh, which builds the binary and the venv first.
"""

import argparse
import bisect
import json
import math
import re
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
AUTH_ID = "MA00000000000000SIM0"
TOKEN = "sim-token"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

# The rules both contenders enforce; all measured from the start so the lag
# is against the simulator's µs session_start (see BENCHMARKS.md).
RULES = [
    {"name": "outbound-10m", "max_s": 600, "direction": "outbound", "unless_to_prefix": "1800"},
    {"name": "premium-uk-5m", "max_s": 300, "to_prefix": "44"},
    {"name": "inbound-20m", "max_s": 1200, "direction": "inbound"},
]
POLICY_TOML = """
[[rule]]
name = "outbound-10m"
description = "Outbound calls end after 10 minutes, toll-free excepted."
max_duration = "10m"
measure_from = "start"
[rule.match]
direction = ["outbound"]
[rule.unless]
to = ["+1800*"]

[[rule]]
name = "premium-uk-5m"
description = "Calls to +44 end after 5 minutes."
max_duration = "5m"
measure_from = "start"
[rule.match]
to = ["+44*"]

[[rule]]
name = "inbound-20m"
description = "Inbound calls end after 20 minutes."
max_duration = "20m"
measure_from = "start"
[rule.match]
direction = ["inbound"]
"""


def limit_s(direction, to):
    to = to.replace("+", "").replace(" ", "")
    best = None
    for rule in RULES:
        if "direction" in rule and rule["direction"] != direction:
            continue
        if "to_prefix" in rule and not to.startswith(rule["to_prefix"]):
            continue
        if "unless_to_prefix" in rule and to.startswith(rule["unless_to_prefix"]):
            continue
        if best is None or rule["max_s"] < best:
            best = rule["max_s"]
    return best


# ---- HTTP ---------------------------------------------------------------


def http(method, url, body=None, timeout=600):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read() or b"null")


def ts(raw):
    return datetime.fromisoformat(raw.replace("Z", "+00:00")).timestamp() if raw else None


def status_addr(work):
    """The daemon's status listener address, from its log (None until it is up)."""
    try:
        with open(os.path.join(work, "daemon.log")) as f:
            for line in f:
                if "status listener up" in line:
                    found = re.search(r'"addr":"([^"]+)"', line)
                    return found and found.group(1)
    except OSError:
        pass
    return None


def poll_handling(work):
    """(seconds, count) of `callwarden_poll_handling_seconds` so far: the
    daemon's own time on each list answer, requests excluded. None when the
    build has no such metric (an older one) or the listener is not up."""
    addr = status_addr(work)
    if not addr:
        return None
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=30) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        for part in ("sum", "count"):
            if line.startswith(f"callwarden_poll_handling_seconds_{part} "):
                values[part] = float(line.split()[-1])
    if len(values) < 2:
        return None
    return values["sum"], values["count"]


# ---- /proc ----------------------------------------------------------------


def cpu_s(pid):
    """utime + stime of `pid` (and of its waited-for children) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / TICK


def mem_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":")
                out[key] = int(value.split()[0])
    return out


class Sampler:
    """CPU and RSS of one process, sampled every `period` seconds."""

    def __init__(self, pid):
        self.pid = pid
        self.samples = []  # (wall, cpu_s, rss_kib, hwm_kib)

    def sample(self):
        try:
            mem = mem_kib(self.pid)
            self.samples.append((time.time(), cpu_s(self.pid), mem["VmRSS"], mem["VmHWM"]))
        except (OSError, KeyError):
            pass

    def cpu_between(self, t0, t1):
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None, 0.0
        return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]

    def rss_after(self, t0):
        values = [s[2] for s in self.samples if s[0] >= t0]
        return statistics.median(values) if values else None

    def peak(self):
        return max((s[3] for s in self.samples), default=None)


# ---- scenario ---------------------------------------------------------------


def number(rng):
    plus = "+" if rng.random() < 0.5 else ""
    return f"{plus}{rng.choice(['1', '44', '91'])}{rng.randrange(2_000_000_000, 9_999_999_999)}"


def call_set(n, hold_s, seed, overdue_share):
    """N live calls with steady-state ages: a call's age is exponential
    (mean hold) conditioned on being under its rule's limit, as in a fleet
    where enforcement already runs; `overdue_share` of them are past it."""
    rng = random.Random(seed)
    calls = []
    for i in range(n):
        direction = rng.choice(["inbound", "outbound"])
        to = number(rng)
        limit = limit_s(direction, to) or math.inf
        if rng.random() < overdue_share and limit != math.inf:
            age = limit + rng.uniform(1, 600)
        else:
            while True:
                age = rng.expovariate(1 / hold_s)
                if age < limit - 1:
                    break
        u = rng.getrandbits(128)
        h = f"{u:032x}"
        uuid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        calls.append(
            {
                "uuid": uuid,
                "age_s": round(age, 6),
                "direction": direction,
                "from": number(rng),
                "to": to,
                "caller_name": "",
                "answered": True,
            }
        )
    return calls


class Sim:
    def __init__(self, binary, log_dir):
        self.log = open(os.path.join(log_dir, "sim.log"), "w")
        self.proc = subprocess.Popen(
            [binary, "sim", "--listen", "127.0.0.1:0", "--shape", "flat", "--seed", "1"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        banner = self.proc.stdout.readline()
        # "listening on http://127.0.0.1:PORT/api/v1 auth_id=... auth_token=..."
        self.base_url = banner.split()[2]
        self.root = self.base_url.rsplit("/api/v1", 1)[0]

    def load(self, calls, churn):
        http("POST", self.root + "/_sim/reset", {})
        # axum's JSON body limit is 2 MB: 5,000 calls a request stay under it.
        for i in range(0, len(calls), 5_000):
            http("POST", self.root + "/_sim/calls", {"calls": calls[i : i + 5_000]})
        http("POST", self.root + "/_sim/churn", churn)

    def stop_churn(self):
        http("POST", self.root + "/_sim/churn", {"arrivals_per_s": 0})

    def records(self, since=0):
        return http("GET", self.root + f"/_sim/log?since={since}")["records"]

    def calls(self):
        return http("GET", self.root + "/_sim/calls")["calls"]

    def close(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# ---- contenders ---------------------------------------------------------------


def daemon_config(work, budget, interval_s):
    policies = os.path.join(work, "policies")
    os.makedirs(policies, exist_ok=True)
    with open(os.path.join(policies, "bench.toml"), "w") as f:
        f.write(POLICY_TOML)
    path = os.path.join(work, "callwarden.toml")
    with open(path, "w") as f:
        f.write(
            f"""policies = "policies"
[api]
max_requests_per_second = {budget}
[poll]
interval = "{interval_s}s"
[safety]
# Steady churn at 100,000 calls brings a few hundred due calls per interval:
# a fleet this size raises the breaker's per-cycle limit (the percent rule stays).
max_hangups_per_cycle = 5000
[state]
dir = "{work}/state"
[http]
listen = "127.0.0.1:0"
[log]
format = "json"
"""
        )
    return path


def run_daemon(binary, sim, work, budget, interval_s, duration_s):
    config = daemon_config(work, budget, interval_s)
    env = dict(os.environ, VOBIZ_AUTH_ID=AUTH_ID, VOBIZ_AUTH_TOKEN=TOKEN, VOBIZ_BASE_URL=sim.base_url)
    log = open(os.path.join(work, "daemon.log"), "w")
    t_start = time.time()
    proc = subprocess.Popen([binary, "--config", config, "run"], env=env, stdout=log, stderr=log)
    return proc, t_start


def run_naive(python, sim, work, interval_s, duration_s):
    log = open(os.path.join(work, "naive.log"), "w")
    t_start = time.time()
    proc = subprocess.Popen(
        [
            python,
            os.path.join(HERE, "naive_poller.py"),
            sim.base_url,
            AUTH_ID,
            TOKEN,
            json.dumps(RULES),
            str(interval_s),
            str(duration_s),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # The SDK reads .env and VOBIZ_* on import; give it a clean slate.
        cwd=work,
    )
    return proc, t_start


class LogFollower:
    """Reads the simulator's request log as it grows; knows when every call
    live at the start has been read once (the end of the start-up)."""

    def __init__(self, sim, initial, quiet_s):
        self.sim = sim
        self.records = []
        self.unread = set(initial)
        self.last_read = None
        self.quiet_s = quiet_s
        self.startup_done = None

    def follow(self):
        since = self.records[-1]["seq"] if self.records else 0
        new = self.sim.records(since)
        self.records.extend(new)
        for r in new:
            if r["method"] == "GET" and r["uuid"] in self.unread:
                self.unread.discard(r["uuid"])
                self.last_read = ts(r["t_wall"])
        # Calls that ended before anyone read them are never read: the
        # start-up is over when every call is read, or none has been for a while.
        if self.last_read and (not self.unread or time.time() - self.last_read > self.quiet_s):
            self.startup_done = self.last_read


def watch(proc, sampler, follower, steady_s, hard_until, period=0.5, exits_after=None, at_steady=None):
    """Samples CPU/RSS until `steady_s` after the start-up (or, with
    `exits_after`, until that wall time has passed and two polls have
    started; or the process exits; or `hard_until`); returns the exit
    status, or None if still running. `at_steady` is called once, when the
    start-up is seen to be over."""
    last_follow = 0.0
    while time.time() < hard_until:
        sampler.sample()
        if proc.poll() is not None:
            return proc.returncode
        if time.time() - last_follow >= 2.0:
            follower.follow()
            last_follow = time.time()
            if at_steady and follower.startup_done:
                at_steady()
                at_steady = None
        if exits_after is None:
            if follower.startup_done and time.time() >= follower.startup_done + steady_s:
                break
        elif time.time() >= exits_after:
            lists = sum(1 for r in follower.records if r["method"] == "GET" and r["uuid"] is None)
            if lists >= 2:
                break
        time.sleep(period)
    sampler.sample()
    return None


# ---- analysis ---------------------------------------------------------------------


def analyse(name, records, calls, initial_uuids, t_start, t_end, sampler, interval_s, baseline_kib, work=None):
    if work:
        # Kept beside the run for digging into any figure.
        with open(os.path.join(work, f"{name}-log.jsonl"), "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")
        with open(os.path.join(work, f"{name}-calls.jsonl"), "w") as f:
            for c in calls:
                f.write(json.dumps(c) + "\n")
    records = [r for r in records if r["t_wall"]]
    for r in records:
        r["t"] = ts(r["t_wall"])
    records = [r for r in records if t_start <= r["t"] <= t_end]
    # Polls only: callwarden's clock probes (`limit=1`) are list reads too.
    lists = [
        r["t"]
        for r in records
        if r["method"] == "GET" and r["uuid"] is None and "limit=1" not in (r.get("query") or "").split("&")
    ]
    initial = set(initial_uuids)
    by_uuid = {c["uuid"]: c for c in calls}

    # Start-up: until every call that was live at start has been read once.
    seen = set()
    startup_done = None
    for r in records:
        if r["method"] == "GET" and r["uuid"] in initial and r["uuid"] not in seen:
            if startup_done and r["t"] - startup_done > 2 * interval_s and len(seen) > 0.99 * len(initial):
                break  # a straggler read long after: the start-up was over
            seen.add(r["uuid"])
            startup_done = r["t"]
    startup_requests = sum(1 for r in records if startup_done and r["t"] <= startup_done)

    # Steady state: whole poll windows (list to list) after callwarden's
    # start-up; the naive poller's polls are all alike, so all of them.
    if name == "naive":
        steady_from = lists[0] if lists else t_start
    else:
        steady_from = (startup_done or t_start) + interval_s
    windows = [(a, b) for a, b in zip(lists, lists[1:]) if a >= steady_from]
    per_poll, new_per_poll, kinds = [], [], {"list": 0, "first_get": 0, "re_get": 0, "delete": 0}
    got = set(u for u in seen)
    for r in records:
        if r["t"] < steady_from and r["uuid"]:
            got.add(r["uuid"])
    starts = sorted(ts(c["started_at"]) for c in calls)


    for a, b in windows:
        inside = [r for r in records if a <= r["t"] < b]
        per_poll.append(len(inside))
        # Calls that arrived during the previous window are "new" at list a.
        new_per_poll.append(bisect.bisect_left(starts, a) - bisect.bisect_left(starts, a - (b - a)))
    if windows:
        w0, w1 = windows[0][0], windows[-1][1]
        for r in records:
            if not (w0 <= r["t"] < w1):
                continue
            if r["uuid"] is None:
                kinds["list"] += 1
            elif r["method"] == "DELETE":
                kinds["delete"] += 1
            elif r["uuid"] in got:
                kinds["re_get"] += 1
            else:
                kinds["first_get"] += 1
                got.add(r["uuid"])

    # Enforcement: every DELETE the simulator answered 204, against the true deadline.
    hangups = [r for r in records if r["method"] == "DELETE" and r["status"] in (200, 202, 204)]
    lags, startup_lags, early = [], [], 0
    for r in hangups:
        c = by_uuid.get(r["uuid"])
        if not c:
            continue
        limit = limit_s(c["direction"], c["to"])
        if limit is None:
            early += 1
            continue
        deadline = ts(c["started_at"]) + limit
        lag = r["t"] - deadline
        if lag < 0:
            early += 1
        # Calls already past their limit at the start, and (callwarden) calls
        # due before the start-up read them, are reported apart.
        lag_from = startup_done if name != "naive" else t_start
        if lag_from and deadline >= lag_from:
            lags.append(lag)
        else:
            startup_lags.append(lag)
    twice = sum(1 for c in calls if c.get("hangups", 0) > 1)
    # Missed: the caller hung up after the deadline, or still live a poll past it.
    missed = 0
    for c in calls:
        limit = limit_s(c["direction"], c["to"])
        if limit is None:
            continue
        deadline = ts(c["started_at"]) + limit
        if deadline < t_start or deadline > t_end - 2 * interval_s:
            continue
        ended = ts(c.get("ended_at"))
        if c.get("ended_by") == "caller" and ended > deadline + 1:
            missed += 1
        elif ended is None or ended > t_end:
            missed += 1

    # CPU over whole poll windows only (a contender stopped mid-poll would
    # otherwise charge a partial poll to the complete ones).
    cpu, span = sampler.cpu_between(windows[0][0], windows[-1][1]) if windows else (None, 0)
    if work:
        with open(os.path.join(work, f"{name}-samples.json"), "w") as f:
            json.dump(sampler.samples, f)
    steady_polls = len(windows)
    total_requests = len(records)

    def pct(values, q):
        if not values:
            return None
        values = sorted(values)
        return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]

    gaps = [b - a for a, b in zip(lists, lists[1:])]
    rss = sampler.rss_after(steady_from)
    live_at_end = sum(1 for c in calls if c["status"] in ("ringing", "early-media", "in-progress"))
    return {
        "name": name,
        "run_s": t_end - t_start,
        "startup_s": (startup_done - t_start) if startup_done else None,
        "startup_requests": startup_requests,
        "polls_total": len(lists),
        "steady_polls": steady_polls,
        "requests_per_poll_steady": statistics.mean(per_poll) if per_poll else None,
        "new_calls_per_poll": statistics.mean(new_per_poll) if new_per_poll else None,
        "steady_request_kinds": kinds,
        "hangups": len(hangups),
        "requests_total": total_requests,
        "requests_per_hangup": total_requests / len(hangups) if hangups else None,
        "steady_requests_per_hangup": (sum(per_poll) / kinds["delete"]) if kinds["delete"] else None,
        "poll_gap_p50_s": pct(gaps, 0.5),
        "poll_gap_max_s": max(gaps) if gaps else None,
        "lag_p50_ms": pct(lags, 0.5) and pct(lags, 0.5) * 1000,
        "lag_p99_ms": pct(lags, 0.99) and pct(lags, 0.99) * 1000,
        "lag_max_ms": max(lags) * 1000 if lags else None,
        "lag_n": len(lags),
        "startup_backlog_n": len(startup_lags),
        "startup_backlog_lag_max_s": max(startup_lags) if startup_lags else None,
        "early_hangups": early,
        "hung_up_twice": twice,
        "missed": missed,
        "cpu_s_steady": cpu,
        "cpu_s_per_poll": (cpu / steady_polls) if (cpu is not None and steady_polls) else None,
        "cpu_s_total": sampler.samples[-1][1] if sampler.samples else None,
        "peak_rss_mib": (sampler.peak() or 0) / 1024,
        "steady_rss_mib": (rss or 0) / 1024,
        "bytes_per_call": ((rss - baseline_kib) * 1024 / live_at_end) if (rss and live_at_end) else None,
        "live_at_end": live_at_end,
        "first_enforcement_s": (min(r["t"] for r in hangups) - t_start) if hangups else None,
    }


# ---- main -----------------------------------------------------------------------


def baseline_rss(binary, work, interval_s):
    """RSS of a daemon that tracks no calls (subtracted for bytes per call)."""
    sim = Sim(binary, work)
    try:
        proc, _ = run_daemon(binary, sim, work, 10, interval_s, 0)
        sampler = Sampler(proc.pid)
        until = time.time() + 2 * interval_s + 1
        while time.time() < until:
            sampler.sample()
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        return statistics.median(s[2] for s in sampler.samples[-4:])
    finally:
        sim.close()


def run_size(args, n, budget):
    work = tempfile.mkdtemp(prefix=f"callwarden-bench-{n}-")
    hold = args.hold
    churn = {"arrivals_per_s": 0 if args.no_churn else n / hold, "mean_hold_s": hold, "seed": args.seed}
    calls = call_set(n, hold, args.seed, args.overdue)
    initial = [c["uuid"] for c in calls]
    results = {"size": n, "budget_rps": budget, "hold_s": hold, "interval_s": args.interval, "work": work}
    sim = Sim(args.bin, work)
    try:
        # --- callwarden, and the earlier build when one is given: same calls, same churn
        contenders = [("callwarden", args.bin, args.baseline_kib)]
        if args.before:
            contenders.insert(0, ("callwarden_before", args.before, args.before_baseline_kib))
        for name, binary, baseline_kib in contenders:
            sim.load(calls, churn)
            sim_cpu0 = cpu_s(sim.proc.pid)
            # Each its own state and audit log: the later run must not
            # start from what the earlier one remembered.
            home = os.path.join(work, name)
            os.makedirs(home, exist_ok=True)
            proc, t0 = run_daemon(binary, sim, home, budget, args.interval, 0)
            sampler, follower = Sampler(proc.pid), LogFollower(sim, initial, 2 * args.interval)
            print(f"[{n}] {name}: start-up, then {args.duration:.0f} s (budget {budget} rps)", file=sys.stderr)
            handling = {}
            watch(
                proc,
                sampler,
                follower,
                args.duration + args.interval,
                t0 + args.max_run_s,
                at_steady=lambda: handling.update(start=poll_handling(home)),
            )
            handling["end"] = poll_handling(home)
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            t1 = time.time()
            sim.stop_churn()
            follower.follow()
            sim_cpu1 = cpu_s(sim.proc.pid)
            results[name] = analyse(
                name, follower.records, sim.calls(), initial, t0, t1, sampler, args.interval, baseline_kib, work
            )
            results[name]["sim_cpu_s"] = sim_cpu1 - sim_cpu0
            start, end = handling.get("start"), handling.get("end")
            if start and end and end[1] > start[1]:
                # Mean over the polls after the start-up, as the daemon timed them.
                results[name]["poll_handling_ms_steady"] = (end[0] - start[0]) / (end[1] - start[1]) * 1000
                results[name]["poll_handling_polls_steady"] = end[1] - start[1]
            print(json.dumps(results[name], indent=1), file=sys.stderr)

        if args.skip_naive:
            return results
        # --- the naive poller, same calls, same churn
        sim.load(calls, churn)
        sim_cpu0 = cpu_s(sim.proc.pid)
        # It stops at the first poll that ends after this much time.
        nduration = args.duration + args.interval
        proc, t0 = run_naive(args.python, sim, work, args.interval, nduration)
        sampler, follower = Sampler(proc.pid), LogFollower(sim, initial, 2 * args.interval)
        print(f"[{n}] naive: {nduration:.0f} s, finishing the poll under way", file=sys.stderr)
        status = watch(proc, sampler, follower, 0, t0 + args.max_run_s, exits_after=t0 + nduration)
        if status is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        t1 = time.time()
        sim.stop_churn()
        follower.follow()
        sim_cpu1 = cpu_s(sim.proc.pid)
        naive = analyse(
            "naive", follower.records, sim.calls(), initial, t0, t1, sampler, args.interval, args.python_baseline_kib, work
        )
        naive["sim_cpu_s"] = sim_cpu1 - sim_cpu0
        with open(os.path.join(work, "naive.log")) as f:
            polls = [json.loads(line) for line in f if line.startswith("{")]
        naive["poll_seconds"] = [round(p["seconds"], 2) for p in polls]
        naive["completed_polls"] = len(polls)
        results["naive"] = naive
        print(json.dumps(naive, indent=1), file=sys.stderr)
    finally:
        sim.close()
    return results


def python_baseline(python):
    proc = subprocess.Popen(
        [python, "-c", "import vobiz, time; vobiz.RestClient(auth_id='x', auth_token='y'); time.sleep(2)"],
        cwd=tempfile.gettempdir(),
    )
    time.sleep(1.5)
    try:
        return mem_kib(proc.pid)["VmRSS"]
    finally:
        proc.wait()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--before", help="an earlier callwarden build, run first against the same calls")
    p.add_argument("--python", required=True)
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--budgets", default="1000:10", help="SIZE:RPS pairs; other sizes get --raised-budget")
    p.add_argument("--raised-budget", type=int, default=100000)
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=60.0, help="steady-state seconds per contender")
    p.add_argument("--hold", type=float, default=300.0, help="mean call holding time, s")
    p.add_argument("--overdue", type=float, default=0.005, help="share of calls already past their limit")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--no-churn", action="store_true", help="no arrivals or departures (isolates the cost of a poll)")
    p.add_argument("--skip-naive", action="store_true", help="callwarden only")
    p.add_argument("--max-run-s", type=float, default=900.0, help="hard cap per contender")
    p.add_argument("--out", default=os.path.join(HERE, "results"))
    args = p.parse_args()
    budgets = dict(tuple(map(int, pair.split(":"))) for pair in args.budgets.split(",") if pair)
    os.makedirs(args.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="callwarden-bench-base-")
    args.baseline_kib = baseline_rss(args.bin, work, args.interval)
    if args.before:
        args.before_baseline_kib = baseline_rss(args.before, work, args.interval)
    args.python_baseline_kib = python_baseline(args.python) if not args.skip_naive else None
    print(f"baseline RSS: daemon {args.baseline_kib} KiB, python+SDK {args.python_baseline_kib} KiB", file=sys.stderr)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        budget = budgets.get(n, args.raised_budget)
        results = run_size(args, n, budget)
        results["baseline_rss_kib"] = args.baseline_kib
        results["python_baseline_rss_kib"] = args.python_baseline_kib
        with open(os.path.join(args.out, f"{n}.json"), "w") as f:
            json.dump(results, f, indent=1)
        print(f"[{n}] results in {args.out}/{n}.json", file=sys.stderr)


if __name__ == "__main__":
    main()
