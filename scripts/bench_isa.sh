#!/usr/bin/env bash
# What a default build gets against a native one: builds the patch benchmarks (bench/patches,
# patchbay only, no libtorch) twice, in Release:
#   - default: the compiler's default flags (x86-64: SSE2) with patchbay::dispatch linked, so the
#     built-in patches run the widest variant this CPU has (docs/integration.md);
#   - native:  -march=native, no dispatch.
# Runs each benchmark single-threaded, 5 times per build, interleaved (scripts/bench_compare.py),
# prints one row per benchmark (both medians and default / native) and ends with the line
# `worst default/native ratio: X.XX`. Target: at most 1.15.
# usage: scripts/bench_isa.sh [--reps N] [--filter REGEX]   (extra arguments go to bench_compare.py)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DPATCHBAY_BUILD_TESTS=OFF -DPATCHBAY_BUILD_EXAMPLES=OFF
        -DPATCHBAY_BENCH_TORCH=OFF -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON)
cmake -S . -B build/bench-isa-default "${common[@]}" -DPATCHBAY_DISPATCH=ON -DPATCHBAY_NATIVE=OFF >/dev/null
cmake -S . -B build/bench-isa-native "${common[@]}" -DPATCHBAY_DISPATCH=OFF -DPATCHBAY_NATIVE=ON >/dev/null
for b in default native; do
  mapfile -t targets < <(ninja -C build/bench-isa-$b -t targets all | grep -o '^bench_patches_[a-z_0-9]*' | sort -u)
  cmake --build build/bench-isa-$b -j"$jobs" --target "${targets[@]}"
done

# the variant each build's patches run, from the benchmarks' context (bench/support/bench_util.hpp)
show_simd='import json, sys
c = json.load(sys.stdin)["context"]
print(sys.argv[1] + ": the patches run " + c["simd"] + "; the benchmark code is compiled for " + c["simd_compiled"])'
for b in default native; do
  build/bench-isa-$b/bench/bench_patches_cfg_rescale_cfg --benchmark_filter='RescaleCFG_v/1x4x64x64' \
    --benchmark_min_time=0.0001 --benchmark_format=json 2>/dev/null |
    python3 -c "$show_simd" "$b"
done

scripts/bench_compare.py build/bench-isa-native build/bench-isa-default --binaries '^bench_patches_' \
  --labels native,default --worst-line "worst default/native ratio" "$@"
