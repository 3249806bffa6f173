#!/usr/bin/env python3
"""Runs the benchmarks two builds share (before and after a change) on this machine and prints
a markdown table of their medians (the ours_us counter where a benchmark reports it, else CPU
time per iteration): every benchmark N times (default 5) per build, runs of the
two builds interleaved so that drift in the machine's speed hits both alike. A difference under
5 % counts as equal.

usage: scripts/bench_compare.py BEFORE_BUILD_DIR AFTER_BUILD_DIR [--reps N] [--filter REGEX]
                                [--min-time SECONDS] [--binaries REGEX] [--labels BEFORE,AFTER]
                                [--worst-line TEXT]
Each build directory is a CMake build of patchbay with its benchmarks (bench/bench_*).
--worst-line TEXT ends the output with "TEXT: X.XX", the largest after / before ratio
(scripts/bench_isa.sh compares a default build with a -march=native one this way).
--before-env / --after-env K=V set the environment of one side, e.g. one build with
patchbay::dispatch capped to x86-64-v3 (before) and uncapped (after)."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys


def binaries(build):
    d = os.path.join(build, "bench")
    return {f: os.path.join(d, f) for f in sorted(os.listdir(d))
            if f.startswith("bench_") and os.access(os.path.join(d, f), os.X_OK)}


def run(exe, flt, min_time, env=None):
    """One run of a benchmark binary: {name: real time in ns}."""
    cmd = [exe, "--benchmark_format=json", f"--benchmark_min_time={min_time}"]
    if flt:
        cmd.append(f"--benchmark_filter={flt}")
    full_env = dict(os.environ)
    for kv in env or []:
        k, _, v = kv.partition("=")
        full_env[k] = v
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=full_env).stdout
    if not out.strip():  # the filter matched nothing in this binary
        return {}
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue
        # our benchmarks report ours_us, the best thread-CPU time of the patch (robust on a
        # shared machine); others give Google Benchmark's CPU time per iteration
        if "ours_us" in b:
            res[b["name"]] = b["ours_us"] * 1e3
        else:
            res[b["name"]] = b["cpu_time"] * scale[b.get("time_unit", "ns")]
    return res


def fmt(ns):
    for unit, s in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= s:
            return f"{ns / s:.3g} {unit}"
    return f"{ns:.3g} ns"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--filter", default="")
    ap.add_argument("--min-time", default="0.1")
    ap.add_argument("--exclude", default="torch|fftw", help="benchmark names to leave out (regex)")
    ap.add_argument("--binaries", default="", help="benchmark binaries to run (regex on the file name)")
    ap.add_argument("--labels", default="before,after", help="the two builds' column names")
    ap.add_argument("--worst-line", default="", help="print 'TEXT: X.XX', the largest after / before ratio")
    ap.add_argument("--before-env", action="append", default=[], metavar="K=V",
                    help="environment of the before runs (e.g. PATCHBAY_ISA=x86-64-v3 on the same build)")
    ap.add_argument("--after-env", action="append", default=[], metavar="K=V")
    a = ap.parse_args()
    lb, la = a.labels.split(",")
    before, after = binaries(a.before), binaries(a.after)
    common = [b for b in before if b in after and re.search(a.binaries, b)]
    if not common:
        sys.exit("no benchmark binary in both builds")
    rows = []
    for b in common:
        times = {"before": {}, "after": {}}
        for _ in range(a.reps):
            for side, exe, env in (("before", before[b], a.before_env), ("after", after[b], a.after_env)):
                for name, t in run(exe, a.filter, a.min_time, env).items():
                    times[side].setdefault(name, []).append(t)
        for name in times["before"]:
            if name not in times["after"] or re.search(a.exclude, name, re.I):
                continue
            mb = statistics.median(times["before"][name])
            ma = statistics.median(times["after"][name])
            rows.append((b, name, mb, ma))
        print(f"{b}: done", file=sys.stderr)
    print(f"| benchmark | {lb} (median of {a.reps}) | {la} | {la} / {lb} | verdict |")
    print("|---|---:|---:|---:|---|")
    for b, name, mb, ma in rows:
        r = ma / mb
        verdict = "equal" if abs(r - 1) < 0.05 else ("faster" if r < 1 else "SLOWER")
        print(f"| {name} | {fmt(mb)} | {fmt(ma)} | {r:.2f} | {verdict} |")
    slower = [r for r in rows if r[3] / r[2] >= 1.05]
    print(f"\n{len(rows)} benchmarks, {len(slower)} slower by 5 % or more", file=sys.stderr)
    if a.worst_line and rows:
        worst = max(rows, key=lambda r: r[3] / r[2])
        print(f"\n(worst: {worst[1]})")
        print(f"{a.worst_line}: {worst[3] / worst[2]:.2f}")


if __name__ == "__main__":
    main()
