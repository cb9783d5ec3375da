"""The baseline: the script an operator would write instead of callwarden.

Every INTERVAL seconds: list the live calls, fetch every call's details, and
hang up each call older than its rule's limit, all with the official Vobiz
Python SDK (vobiz-python 0.1.1). No rate limit of its own (the most
favourable reading for it), one request at a time, like a plain script.

Usage: naive_poller.py BASE_URL AUTH_ID AUTH_TOKEN RULES_JSON INTERVAL_S DURATION_S

RULES_JSON: [{"name", "max_s", "direction"?, "to_prefix"?, "unless_to_prefix"?}];
a call's deadline is session_start + the smallest max_s of the rules that
match it (the same rules callwarden runs, all measured from the start).
Runs until DURATION_S has passed, finishing the poll under way; prints one
JSON line per poll to stdout.
"""

import json
import sys
import time
from datetime import datetime, timezone

import vobiz
from vobiz.exceptions import ResourceNotFoundError


def digits(number):
    return (number or "").replace("+", "").replace(" ", "")


def limit_s(rules, call):
    to = digits(getattr(call, "to", ""))
    direction = getattr(call, "direction", "")
    best = None
    for rule in rules:
        if "direction" in rule and rule["direction"] != direction:
            continue
        if "to_prefix" in rule and not to.startswith(rule["to_prefix"]):
            continue
        if "unless_to_prefix" in rule and to.startswith(rule["unless_to_prefix"]):
            continue
        if best is None or rule["max_s"] < best:
            best = rule["max_s"]
    return best


def session_start(call):
    # Flat shape: "yyyy-MM-dd HH:mm:ss.ffffff", UTC (the simulator's default zone).
    raw = call.session_start
    return datetime.strptime(raw, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=timezone.utc)


def main():
    base_url, auth_id, token, rules_json, interval_s, duration_s = sys.argv[1:7]
    rules = json.loads(rules_json)
    interval_s, duration_s = float(interval_s), float(duration_s)
    client = vobiz.RestClient(auth_id=auth_id, auth_token=token)
    client.base_uri = base_url + "/Account"
    started = time.monotonic()
    poll = 0
    while time.monotonic() - started < duration_s:
        t0 = time.monotonic()
        listed = client.calls.list_live().calls
        hung_up = gone = 0
        for uuid in listed:
            try:
                call = client.calls.get_live(uuid)
            except ResourceNotFoundError:
                gone += 1
                continue
            if call is None:
                continue
            limit = limit_s(rules, call)
            if limit is None:
                continue
            age = (datetime.now(timezone.utc) - session_start(call)).total_seconds()
            if age >= limit:
                try:
                    client.calls.hangup(uuid)
                    hung_up += 1
                except ResourceNotFoundError:
                    gone += 1
        elapsed = time.monotonic() - t0
        print(
            json.dumps(
                {"poll": poll, "listed": len(listed), "hung_up": hung_up, "gone": gone, "seconds": elapsed}
            ),
            flush=True,
        )
        poll += 1
        time.sleep(max(0.0, interval_s - elapsed))


if __name__ == "__main__":
    main()
