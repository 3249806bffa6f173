#!/usr/bin/env python3
"""The table of scripts/bench_summary.sh: runs the patch benchmarks of each build REPS times and
prints, per build, a markdown row per patch and shape, the measured bandwidth and the three
worst-ratio lines. Counters come from the benchmarks (bench/support/bench_util.hpp): ours_us,
torch_us, bound_us, bytes, two_pass_us, same_passes_us (where a benchmark has it: the patch's
own passes and arithmetic as plain loops).

usage: scripts/bench_summary.py [--reps N] LABEL=BUILD_DIR [LABEL=BUILD_DIR ...]"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

BINARIES = ["bench_patches_cfg_rescale_cfg", "bench_patches_cfg_renorm_cfg", "bench_patches_post_cfg_cfg_norm",
            "bench_patches_pre_cfg_apg", "bench_patches_pre_cfg_tcfg", "bench_patches_post_cfg_mahiro",
            "bench_patches_block_free_u"]
# the cfg shapes, and FreeU's block shapes on warm buffers (the "restored" runs evict them)
FILTER = r"/1x4x128x128|/1x16x128x128|^FreeU(_V2)?/1x[0-9x]+/manual_time$"
CFG_SHAPES = ["1x16x128x128", "1x4x128x128"]
# libtorch's per-op allocations run on a warm glibc heap (docs/performance.md): the harder baseline
TORCH_ENV = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456"}


def run_once(exe):
    env = dict(os.environ, **TORCH_ENV)
    out = subprocess.run([exe, "--benchmark_format=json", f"--benchmark_filter={FILTER}",
                          "--benchmark_min_time=0.05"], check=True, capture_output=True, text=True,
                         env=env).stdout
    rows = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("run_type", "iteration") == "iteration" and "ours_us" in b:
            rows[b["name"].removesuffix("/manual_time")] = b
    return rows


def collect(build, reps):
    runs = {}
    for _ in range(reps):
        for name in BINARIES:
            for bench, counters in run_once(os.path.join(build, "bench", name)).items():
                runs.setdefault(bench, []).append(counters)
    rows = []
    for bench, rs in runs.items():
        med = lambda key: statistics.median(r[key] for r in rs) if key in rs[0] else None
        ours, bound = med("ours_us"), min(r["bound_us"] for r in rs)
        floor = min(r["two_pass_us"] for r in rs) if "two_pass_us" in rs[0] else None
        same = min(r["same_passes_us"] for r in rs) if "same_passes_us" in rs[0] else None
        rows.append({"name": bench, "ours": ours, "torch": med("torch_us"), "bound": bound,
                     "bytes": rs[0]["bytes"], "floor": floor, "same": same})
    return rows


def us(v):
    return "-" if v is None else (f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.1f} us")


def table(label, rows):
    print(f"\n### {label}\n")
    print("| patch / shape | ours | libtorch | bound | x_bound | floor of its passes | floor / bound | ours / floor "
          "| same passes, plain | it / bound |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        xb = r["ours"] / r["bound"]
        fl = r["floor"]
        fcols = ["-", "-", "-"] if fl is None else [us(fl), f"{fl / r['bound']:.2f}", f"{r['ours'] / fl:.2f}"]
        sp = r["same"]
        fcols += ["-", "-"] if sp is None else [us(sp), f"{sp / r['bound']:.2f}"]
        print(f"| {r['name']} | {us(r['ours'])} | {us(r['torch'])} | {us(r['bound'])} | {xb:.2f} | " +
              " | ".join(fcols) + " |")
    print()
    for shape in CFG_SHAPES + ["1x1280x32x32", "1x640x64x64"]:
        bw = [r["bytes"] / (r["bound"] * 1e-6) / 1e9 for r in rows if f"/{shape}" in r["name"]]
        if bw:
            print(f"streaming bandwidth measured at {shape}: {min(bw):.0f} to {max(bw):.0f} GB/s")
    worst_lines(rows)


def worst_lines(rows):
    def worst(pick):
        sel = [(r["ours"] / r["bound"], r["name"]) for r in rows if pick(r["name"])]
        return max(sel) if sel else (float("nan"), "none")
    free_u = re.compile(r"^FreeU(_V2)?/")
    out = []
    for shape in CFG_SHAPES:
        x, name = worst(lambda n: f"/{shape}" in n and not free_u.match(n))
        out.append((f"worst x_bound at {shape}: {x:.2f}", name))
    x, name = worst(lambda n: bool(free_u.match(n)))
    out.append((f"worst x_bound FreeU/FreeU_V2: {x:.2f}", name))
    print("worst rows: " + ", ".join(name for _, name in out))
    for line, _ in out:
        print(line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("builds", nargs="+", metavar="LABEL=BUILD_DIR")
    a = ap.parse_args()
    for spec in a.builds:
        label, _, build = spec.partition("=")
        rows = collect(build, a.reps)
        if not rows:
            sys.exit(f"no benchmark results in {build}")
        table(f"{label} ({build})", rows)


if __name__ == "__main__":
    main()
