#!/usr/bin/env python3
"""High availability on PostgreSQL: failover time and the cost of the fence.

Starts its own PostgreSQL (initdb into a temp dir, as the `postgres` user when
run as root; fsync on, as in production), one `callwarden sim` and
`callwarden run` processes (--bin), and measures:

- failover: --failovers times, kill -9 the node that leads the account and
  time until the other node's /status says it leads (polled every 20 ms),
  then restart the killed node and wait until the cluster has settled again.
  The bound is lease_ttl + renew_every; the new leader polls at once after.
- fence cost: --hangups calls fall due --spacing-ms apart on one node, once
  without [ha] and once with it. Per call: the DELETE's arrival at the
  simulator minus the `ts` of its audit intent record. That span holds the
  audit fsync, and with [ha] the fenced intent (a transaction on the lease
  row) too; the difference of the two is what the fence adds per hangup.

    python3 bench/ha_failover.py --bin target/debug/callwarden [--failovers 20] [--hangups 200]

(`--failovers 0` or `--hangups 0` skips that part.)

Prints one JSON line per measurement on stderr and a Markdown table on stdout.
Loopback only; not run in CI.
"""

import argparse
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from slow_disk import AUTH_ID, TOKEN, http, pct, start_sim, ts

LIMIT_S = 20.0
POLICY = """
[[rule]]
name = "limit-20s"
max_duration = "20s"
measure_from = "start"
[rule.match]
direction = ["outbound"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A throwaway server, like tests/common/pg.rs."""

    def __init__(self):
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            sys.exit("PostgreSQL binaries not found (apt-get install postgresql)")
        self.bindir = os.path.dirname(found[-1])
        self.dir = tempfile.mkdtemp(prefix="callwarden-bench-pg-")
        self.as_postgres = os.geteuid() == 0
        if self.as_postgres:
            subprocess.run(["chown", "-R", "postgres:", self.dir], check=True)
        self.data = os.path.join(self.dir, "data")
        self.run("initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8")
        self.port = free_port()
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir}"
        self.run("pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"), "-o", opts, "-w", "start")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, tool, *args):
        cmd = [os.path.join(self.bindir, tool), *args]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self):
        self.run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


class Node:
    """One `callwarden run` with its own config and state directory."""

    def __init__(self, args, work, base_url, node_id, pg_url, ha):
        self.dir = os.path.join(work, node_id)
        os.makedirs(os.path.join(self.dir, "policies"), exist_ok=True)
        with open(os.path.join(self.dir, "policies", "bench.toml"), "w") as f:
            f.write(POLICY)
        with open(os.path.join(self.dir, "token"), "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(os.path.join(self.dir, "token"), 0o600)
        text = f"""policies = "policies"
[api]
base_url = "{base_url}"
auth_id = "{AUTH_ID}"
auth_token_file = "token"
max_requests_per_second = 1000
[poll]
interval = "{args.poll}"
[safety]
max_hangups_per_cycle = 100000
max_hangups_percent = 100
[state]
dir = "state"
[http]
listen = "127.0.0.1:0"
[log]
format = "json"
"""
        if ha:
            text += f'[ha]\nnode_id = "{node_id}"\nlease_ttl = "{args.lease_ttl}"\nrenew_every = "{args.renew_every}"\n'
        self.config = os.path.join(self.dir, "callwarden.toml")
        with open(self.config, "w") as f:
            f.write(text)
        self.args, self.pg_url = args, pg_url
        self.proc = None
        self.start()

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VOBIZ_", "CREDENTIALS_", "NOTIFY_"))}
        env["CALLWARDEN_POSTGRES_URL"] = self.pg_url
        self.proc = subprocess.Popen(
            [self.args.bin, "--config", self.config, "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.addr = None
        ready = threading.Event()

        def read(proc):
            for line in proc.stderr:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("message", "").startswith("status listener up"):
                    self.addr = record["addr"]
                    ready.set()

        threading.Thread(target=read, args=(self.proc,), daemon=True).start()
        if not ready.wait(60):
            sys.exit(f"{self.config}: the daemon did not start")

    def role(self):
        try:
            status = http("GET", f"http://{self.addr}/status", timeout=2)
        except OSError:
            return None
        return (status["accounts"][0].get("ha") or {}).get("role")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def audit(self):
        path = os.path.join(self.dir, "state", "audit.jsonl")
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]


def wait_for(what, check, limit=120):
    until = time.monotonic() + limit
    while time.monotonic() < until:
        value = check()
        if value is not None:
            return value
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


def settled(nodes):
    """The index of the single leader once the other node is a standby."""
    roles = [n.role() for n in nodes]
    if roles.count("leader") == 1 and roles.count("standby") == 1:
        return roles.index("leader")
    return None


def failovers(args, work, base_url, pg):
    nodes = [Node(args, work, base_url, f"node-{i}", pg.url, True) for i in range(2)]
    times = []
    try:
        for i in range(args.failovers):
            leader = wait_for("a settled cluster", lambda: settled(nodes))
            # Stable for two renewals (no hand-over under way), then a random
            # phase, so the kill lands anywhere between two renewals.
            renew = float(args.renew_every.rstrip("s"))
            time.sleep(2 * renew + random.uniform(0, renew))
            leader = wait_for("a settled cluster", lambda: settled(nodes))
            other = nodes[1 - leader]
            start = time.monotonic()
            nodes[leader].kill()
            wait_for("the takeover", lambda: True if other.role() == "leader" else None)
            took = time.monotonic() - start
            times.append(took)
            print(json.dumps({"failover": i + 1, "seconds": round(took, 3)}), file=sys.stderr)
            nodes[leader].start()
    finally:
        for n in nodes:
            if n.proc.poll() is None:
                n.kill()
    return times


def fence_cost(args, work, base_url, root, pg, ha):
    http("POST", f"{root}/_sim/reset", {})
    node = Node(args, work, base_url, "fenced" if ha else "single", pg.url, ha)
    try:
        if ha:
            wait_for("the lease", lambda: True if node.role() == "leader" else None)
        calls = [
            {
                "age_s": LIMIT_S - args.lead_s - i * args.spacing_ms / 1000.0,
                "direction": "outbound",
                "from": "+14155550100",
                "to": "+14155550199",
            }
            for i in range(args.hangups)
        ]
        uuids = http("POST", f"{root}/_sim/calls", {"calls": calls})["uuids"]
        last_due = time.time() + args.lead_s + args.hangups * args.spacing_ms / 1000.0
        wait_for("every hangup", lambda: True if time.time() > last_due + 5 else None, limit=600)

        def deletes():
            found = {}
            for r in http("GET", f"{root}/_sim/log?since=0")["records"]:
                if r["method"] == "DELETE" and r["status"] and 200 <= r["status"] < 300:
                    found.setdefault(r["uuid"], ts(r["t_wall"]))
            return found if len(found) >= len(uuids) else None

        deleted = wait_for("every DELETE", deletes)
        intents = {r["call_uuid"]: ts(r["ts"]) for r in node.audit() if r["event"] == "intent"}
        spans = [1000 * (deleted[u] - intents[u]) for u in uuids if u in deleted and u in intents]
    finally:
        node.kill()
    result = {"ha": ha, "hangups": len(spans), "p50_ms": pct(spans, 0.5), "p99_ms": pct(spans, 0.99)}
    print(json.dumps(result), file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--failovers", type=int, default=20)
    parser.add_argument("--hangups", type=int, default=200)
    parser.add_argument("--spacing-ms", type=float, default=50)
    parser.add_argument("--lead-s", type=float, default=3)
    parser.add_argument("--poll", default="1s")
    parser.add_argument("--lease-ttl", default="6s")
    parser.add_argument("--renew-every", default="2s")
    args = parser.parse_args()
    # A SIGTERM unwinds through the `finally`s: no server or node is left.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped by SIGTERM"))
    work = tempfile.mkdtemp(prefix="callwarden-ha-bench-")
    pg = Postgres()
    sim, base_url, root = start_sim(args.bin, work)
    try:
        single = fence_cost(args, work, base_url, root, pg, False) if args.hangups else None
        fenced = fence_cost(args, work, base_url, root, pg, True) if args.hangups else None
        times = failovers(args, work, base_url, pg) if args.failovers else []
    finally:
        sim.terminate()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"| measure | p50 | p99 / max |\n|---|---|---|")
    if times:
        print(
            f"| failover, kill -9 of the leader to the new leader (n={len(times)}, "
            f"lease_ttl {args.lease_ttl}, renew_every {args.renew_every}) "
            f"| {pct(times, 0.5):.2f} s | max {max(times):.2f} s |"
        )
    if single and fenced:
        for label, r in (("single node", single), ("with [ha]", fenced)):
            print(f"| audit intent → DELETE at the API, {label} (n={r['hangups']}) | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms |")
        print(
            f"| added by the fenced intent | {fenced['p50_ms'] - single['p50_ms']:.1f} ms "
            f"| {fenced['p99_ms'] - single['p99_ms']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
