"""Prints the Markdown tables of BENCHMARKS.md from bench/results/*.json.

Usage: report.py RESULTS_DIR
"""

import glob
import json
import os
import sys


def fmt(value, unit="", digits=1):
    if value is None:
        return "—"
    if isinstance(value, float):
        if abs(value) >= 100:
            text = f"{value:,.0f}"
        else:
            text = f"{value:,.{digits}f}"
    else:
        text = f"{value:,}"
    return text + unit


def ratio(naive, ours):
    if naive is None or ours is None or ours == 0:
        return "—"
    r = naive / ours
    return f"{r:,.0f}×" if r >= 10 else f"{r:,.1f}×"


ROWS = [
    # label, key, unit, digits, lower is better
    ("API requests on start (until every call is read once)", "startup_requests", "", 0),
    ("start-up time (every live call read once), s", "startup_s", "", 1),
    ("API requests per poll, steady state", "requests_per_poll_steady", "", 1),
    ("new calls per poll (arrivals), steady state", "new_calls_per_poll", "", 1),
    ("API requests per enforced hangup (whole run)", "requests_per_hangup", "", 1),
    ("API requests per enforced hangup (steady state)", "steady_requests_per_hangup", "", 1),
    ("enforcement lag p50, ms", "lag_p50_ms", "", 1),
    ("enforcement lag p99, ms", "lag_p99_ms", "", 1),
    ("enforcement lag max, ms", "lag_max_ms", "", 1),
    ("hangups measured for lag", "lag_n", "", 0),
    ("CPU per poll, ms (steady state)", "cpu_ms_per_poll", "", 1),
    ("engine time per list answer, ms (steady state, requests excluded)", "poll_handling_ms_steady", "", 1),
    ("peak RSS, MiB", "peak_rss_mib", "", 1),
    ("RSS per live call, bytes (steady RSS − idle RSS) / live", "bytes_per_call", "", 0),
    ("time to first enforcement after start, s", "first_enforcement_s", "", 1),
    ("hangups (DELETE 204)", "hangups", "", 0),
    ("early hangups / hung up twice / missed", "safety", "", 0),
]


def cell(result, key, digits):
    if key == "cpu_ms_per_poll":
        v = result.get("cpu_s_per_poll")
        return None if v is None else v * 1000
    if key == "safety":
        return f'{result["early_hangups"]} / {result["hung_up_twice"]} / {result["missed"]}'
    return result.get(key)


def figure_rows(left, right, ratio_of):
    """One Markdown row per figure of ROWS: `left`, `right`, and
    `ratio_of(left, right)` (none for text cells)."""
    rows = []
    for label, key, unit, digits in ROWS:
        a, b = cell(left, key, digits), cell(right, key, digits)
        if isinstance(a, str):
            rows.append(f"| {label} | {a} | {b} | |")
        else:
            rows.append(f"| {label} | {fmt(a, unit, digits)} | {fmt(b, unit, digits)} | {ratio_of(a, b)} |")
    return rows


def table(data):
    ours, naive = data["callwarden"], data["naive"]
    lines = [
        f'### {data["size"]:,} live calls (callwarden budget {data["budget_rps"]:,} req/s, '
        f'poll {data["interval_s"]:g} s, mean hold {data["hold_s"]:g} s)',
        "",
        "| figure | callwarden | naive poller | naive / callwarden |",
        "|---|---:|---:|---:|",
        *figure_rows(ours, naive, lambda a, b: ratio(b, a)),
        "",
    ]
    lines.append(
        f'Live calls at the end: callwarden run {ours["live_at_end"]:,}, naive run {naive["live_at_end"]:,}. '
        f'Steady polls measured: {ours["steady_polls"]} vs {naive["steady_polls"]}; '
        f'naive poll durations (s): {naive.get("poll_seconds")}. '
        f'Simulator CPU during the run: {fmt(ours.get("sim_cpu_s"))} s vs {fmt(naive.get("sim_cpu_s"))} s.'
    )
    return "\n".join(lines)


def compare(data):
    """callwarden before and after, same calls, same run (`--before`)."""
    before, after = data["callwarden_before"], data["callwarden"]
    lines = [
        f'### {data["size"]:,} live calls, before and after (budget {data["budget_rps"]:,} req/s, '
        f'poll {data["interval_s"]:g} s, mean hold {data["hold_s"]:g} s)',
        "",
        "| figure | before | after | before / after |",
        "|---|---:|---:|---:|",
        *figure_rows(before, after, ratio),
        "",
    ]
    lines.append(
        f'Live calls at the end: {before["live_at_end"]:,} before, {after["live_at_end"]:,} after. '
        f'Steady polls measured: {before["steady_polls"]} vs {after["steady_polls"]}.'
    )
    return "\n".join(lines)


def main():
    paths = sorted(glob.glob(os.path.join(sys.argv[1], "*.json")), key=lambda p: int(os.path.basename(p)[:-5]))
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if "callwarden" in data and "naive" in data:
            print(table(data))
            print()
        if "callwarden" in data and "callwarden_before" in data:
            print(compare(data))
            print()


if __name__ == "__main__":
    main()
