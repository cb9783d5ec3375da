#!/usr/bin/env python3
"""Enforcement lag in the first seconds after start (the clock-skew bound).

    bench/skewbench.py --bin target/release/callwarden [--runs 3] [--skew-ms 0]

Each run starts a fresh `callwarden sim` and a fresh daemon (default budget,
5 s poll) with 10 calls that fall due 6-7 s after start, then reads the
simulator's request log: lag = DELETE arrival - deadline, both on the
simulator's clock. Prints one JSON object per run and a summary line.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import urllib.request
from datetime import datetime

AUTH_ID = "MA00000000000000SIM0"
TOKEN = "sim-token"
LIMIT_S = 10.0

POLICY = """
[[rule]]
name = "ten-seconds"
max_duration = "10s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"""


def http(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read() or b"null")


def instant(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def one_run(binary, skew_ms, work):
    sim = subprocess.Popen(
        [binary, "sim", "--listen", "127.0.0.1:0", "--auth-id", AUTH_ID, "--auth-token", TOKEN],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    daemon = None
    try:
        base = sim.stdout.readline().split()[2]
        root = base.rsplit("/api/v1", 1)[0]
        if skew_ms:
            http("POST", root + "/_sim/faults", {"date_skew_ms": skew_ms})
        os.makedirs(os.path.join(work, "policies"))
        with open(os.path.join(work, "policies", "rules.toml"), "w") as f:
            f.write(POLICY)
        config = os.path.join(work, "callwarden.toml")
        with open(config, "w") as f:
            f.write(
                'policies = "policies"\n[state]\ndir = "state"\n'
                '[http]\nlisten = "127.0.0.1:0"\n[log]\nformat = "json"\n'
            )
        # Ages 3.0-3.9 s: due 6.1-7.0 s from now.
        calls = [
            {"age_s": 3.0 + i / 10, "direction": "outbound", "from": "+14155550100",
             "to": f"+1900555{i:04d}", "answered": True}
            for i in range(10)
        ]
        uuids = http("POST", root + "/_sim/calls", {"calls": calls})["uuids"]
        env = dict(os.environ, VOBIZ_AUTH_ID=AUTH_ID, VOBIZ_AUTH_TOKEN=TOKEN, VOBIZ_BASE_URL=base)
        daemon = subprocess.Popen(
            [binary, "--config", config, "run"], env=env,
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "daemon.log"), "w"),
        )
        time.sleep(LIMIT_S + 2)
        log = http("GET", root + "/_sim/log")["records"]
        lags = []
        for uuid in uuids:
            started = instant(http("GET", root + f"/_sim/calls/{uuid}")["started_at"])
            deletes = [r for r in log if r["method"] == "DELETE" and r["uuid"] == uuid]
            if deletes:
                lags.append((instant(deletes[0]["t_wall"]) - (started + LIMIT_S)) * 1000)
        probes = sum(1 for r in log if "limit=1" in r["query"].split("&"))
        return {"lags_ms": sorted(lags), "missed": len(uuids) - len(lags), "probes": probes}
    finally:
        for proc in (daemon, sim):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=10)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--skew-ms", type=int, default=0)
    args = p.parse_args()
    lags = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="callwarden-skewbench-") as work:
            result = one_run(os.path.abspath(args.bin), args.skew_ms, work)
        print(json.dumps(result))
        lags += result["lags_ms"]
    print(json.dumps({
        "hangups": len(lags),
        "lag_p50_ms": round(statistics.median(lags), 1) if lags else None,
        "lag_min_ms": round(min(lags), 1) if lags else None,
        "lag_max_ms": round(max(lags), 1) if lags else None,
    }))


if __name__ == "__main__":
    main()
