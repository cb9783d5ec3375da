"""Many accounts on one host: checks the capacity model in BENCHMARKS.md.

Starts `callwarden sim` with ACCOUNTS accounts, loads CALLS live calls into
each (the load benchmark's call set and rules, a different seed per account,
no churn), runs one `callwarden run` with an `[[account]]` table per account
and measures, from the simulator's request log, its call records and /proc:
the start-up (every call read once), CPU per poll interval and RSS in the
steady state after it, and the hangups (none early, none twice, none
missed). Prints the figures beside what the capacity model predicts from
the single-account figures given on the command line.

  python3 bench/accounts.py --bin target/release/callwarden [--accounts 20] [--calls 10000]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loadbench as lb  # noqa: E402


def scale_limits(factor):
    """Scales the benchmark's rules (and what analysis checks) by `factor`."""
    for rule in lb.RULES:
        minutes = rule["max_s"] // 60
        scaled = round(rule["max_s"] * factor)
        lb.POLICY_TOML = lb.POLICY_TOML.replace(f'max_duration = "{minutes}m"', f'max_duration = "{scaled}s"')
        rule["max_s"] = scaled


def auth_id(i):
    return f"MA{i:018d}"


def start_sim(binary, accounts, work):
    args = [binary, "sim", "--listen", "127.0.0.1:0", "--shape", "flat", "--seed", "1"]
    for i in range(accounts):
        args += ["--auth-id", auth_id(i), "--auth-token", f"token-{i}"]
    log = open(os.path.join(work, "sim.log"), "w")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
    banner = proc.stdout.readline()
    base_url = banner.split()[2]
    return proc, base_url, base_url.rsplit("/api/v1", 1)[0]


def write_config(work, accounts, budget, interval_s):
    """The load benchmark's config, with an `[[account]]` table per account."""
    path = lb.daemon_config(work, budget, interval_s)
    with open(path, "a") as f:
        for i in range(accounts):
            token = os.path.join(work, f"token-{i}")
            with open(token, "w") as t:
                t.write(f"token-{i}\n")
            os.chmod(token, 0o600)
            f.write(f'\n[[account]]\nname = "acct-{i:02d}"\nauth_id = "{auth_id(i)}"\nauth_token_file = "{token}"\n')
    return path


def idle_rss_kib(binary, base_url, config, work):
    """RSS of the same daemon with no live calls (the model's 'idle')."""
    env = dict(os.environ, VOBIZ_BASE_URL=base_url)
    proc = subprocess.Popen([binary, "--config", config, "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "idle.log"), "w"))
    time.sleep(12)
    rss = lb.mem_kib(proc.pid)["VmRSS"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    return rss


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--accounts", type=int, default=20)
    p.add_argument("--calls", type=int, default=10_000, help="live calls per account")
    p.add_argument("--budget", type=int, default=100_000, help="request budget per account")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--duration", type=float, default=60.0, help="steady-state seconds after the start-up")
    p.add_argument("--hold", type=float, default=300.0)
    p.add_argument("--overdue", type=float, default=0.005)
    p.add_argument("--limit-scale", type=float, default=1.0,
                   help="multiply the rules' limits, so that calls do not reach them during a long start-up")
    p.add_argument("--max-run-s", type=float, default=1200.0)
    p.add_argument("--model-bytes-per-call", type=float, default=2383.0,
                   help="RSS per tracked call measured at one account of 10,000 calls")
    p.add_argument("--model-cpu-ms-per-10k", type=float, default=140.0,
                   help="CPU per poll measured at one account of 10,000 calls (scaled by calls)")
    p.add_argument("--out", default=os.path.join(lb.HERE, "results", "accounts.json"))
    args = p.parse_args()
    scale_limits(args.limit_scale)

    work = tempfile.mkdtemp(prefix="callwarden-accounts-")
    sim, base_url, root = start_sim(args.bin, args.accounts, work)
    config = write_config(work, args.accounts, args.budget, args.interval)
    try:
        idle_kib = idle_rss_kib(args.bin, base_url, config, work)
        initial = []
        for i in range(args.accounts):
            calls = lb.call_set(args.calls, args.hold, 1000 + i, args.overdue)
            for c in calls:
                c["account"] = auth_id(i)
            for j in range(0, len(calls), 5_000):
                lb.http("POST", root + "/_sim/calls", {"account": auth_id(i), "calls": calls[j:j + 5_000]})
            initial += [c["uuid"] for c in calls]
        print(f"loaded {len(initial)} calls in {args.accounts} accounts; idle RSS {idle_kib / 1024:.1f} MiB",
              file=sys.stderr)

        class SimView:
            def records(self, since=0):
                return lb.http("GET", root + f"/_sim/log?since={since}")["records"]

        env = dict(os.environ, VOBIZ_BASE_URL=base_url)
        log = open(os.path.join(work, "daemon.log"), "w")
        t0 = time.time()
        proc = subprocess.Popen([args.bin, "--config", config, "run"], env=env, stdout=log, stderr=log)
        sampler = lb.Sampler(proc.pid)
        follower = lb.LogFollower(SimView(), initial, 3 * args.interval)
        lb.watch(proc, sampler, follower, args.duration + args.interval, t0 + args.max_run_s)
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)
        t1 = time.time()
        follower.follow()
        calls = lb.http("GET", root + "/_sim/calls")["calls"]
        result = lb.analyse("callwarden", follower.records, calls, initial, t0, t1, sampler,
                            args.interval, idle_kib, work)
    finally:
        sim.send_signal(signal.SIGINT)
        sim.wait(30)

    # analyse() cuts the steady state at every list request, and here 20
    # accounts each list once an interval: figures per poll interval are
    # taken over the whole steady span instead.
    steady_from = (result["startup_s"] or 0) + t0 + args.interval
    cpu, span = sampler.cpu_between(steady_from, t1)
    steady = [r for r in follower.records if r["t_wall"] and steady_from <= lb.ts(r["t_wall"]) <= t1]
    if span:
        result["cpu_s_per_poll"] = cpu / span * args.interval
        result["requests_per_poll_steady"] = len(steady) / span * args.interval
    n = len(initial)
    live = result["live_at_end"]
    model_rss_mib = (idle_kib * 1024 + live * args.model_bytes_per_call) / 2**20
    model_cpu_ms = args.accounts * args.model_cpu_ms_per_10k * args.calls / 10_000
    summary = {
        "accounts": args.accounts,
        "calls_per_account": args.calls,
        "calls": n,
        "load_average": open("/proc/loadavg").read().split()[:3],
        "idle_rss_mib": idle_kib / 1024,
        "model_steady_rss_mib": model_rss_mib,
        "model_cpu_ms_per_poll": model_cpu_ms,
        "work": work,
        **result,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    rows = [
        ("accounts x calls", f"{args.accounts} x {args.calls:,}"),
        ("start-up (every call read once), s", result["startup_s"]),
        ("idle RSS, MiB", idle_kib / 1024),
        ("peak RSS, MiB", result["peak_rss_mib"]),
        ("steady RSS, MiB (model)", f"{result['steady_rss_mib']:.1f} ({model_rss_mib:.1f})"),
        ("RSS per live call, bytes", result["bytes_per_call"]),
        ("live calls at the end", live),
        ("CPU per poll interval, ms (model)",
         f"{(result['cpu_s_per_poll'] or 0) * 1000:.0f} ({model_cpu_ms:.0f})"),
        ("API requests per poll interval", result["requests_per_poll_steady"]),
        ("hangups", result["hangups"]),
        ("lag p50 / p99, ms", f"{result['lag_p50_ms'] or 0:.0f} / {result['lag_p99_ms'] or 0:.0f}"),
        ("early / twice / missed",
         f"{result['early_hangups']} / {result['hung_up_twice']} / {result['missed']}"),
    ]
    print("| figure | measured |\n|---|---:|")
    for name, value in rows:
        if isinstance(value, float):
            value = f"{value:,.1f}"
        print(f"| {name} | {value} |")
    print(f"load average {' '.join(summary['load_average'])}; raw figures in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
