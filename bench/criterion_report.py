"""Prints the criterion results of two saved baselines side by side.

Usage: criterion_report.py CRITERION_DIR BEFORE AFTER

Reads CRITERION_DIR/<group>/<bench>/<baseline>/estimates.json (the mean and
its 95 % confidence interval) and benchmark.json (the bench's full name).
"""

import glob
import json
import os
import sys


def fmt(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:,.3g} {unit}"
    return f"{ns:,.3g} ns"


def load(path):
    with open(path) as f:
        return json.load(f)


def main():
    root, before, after = sys.argv[1:4]
    rows = {}
    for baseline in (before, after):
        for path in glob.glob(os.path.join(root, "**", baseline, "estimates.json"), recursive=True):
            folder = os.path.dirname(path)
            name = load(os.path.join(folder, "benchmark.json"))["full_id"]
            mean = load(path)["mean"]
            interval = mean["confidence_interval"]
            rows.setdefault(name, {})[baseline] = (
                mean["point_estimate"],
                interval["lower_bound"],
                interval["upper_bound"],
            )
    print(f"| benchmark | {before} | {after} | {before} / {after} |")
    print("|---|---:|---:|---:|")
    for name in sorted(rows):
        cells = rows[name]
        text = []
        for baseline in (before, after):
            if baseline in cells:
                mean, low, high = cells[baseline]
                text.append(f"{fmt(mean)} ({fmt(low)}–{fmt(high)})")
            else:
                text.append("—")
        if before in cells and after in cells and cells[after][0] > 0:
            text.append(f"{cells[before][0] / cells[after][0]:,.1f}×")
        else:
            text.append("—")
        print(f"| {name} | " + " | ".join(text) + " |")


if __name__ == "__main__":
    main()
