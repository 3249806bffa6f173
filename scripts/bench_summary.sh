#!/usr/bin/env bash
# The cfg-stage and block patches against their bandwidth bound (issue #17): builds the patch
# benchmarks of RescaleCFG, RenormCFG, CFGNorm, APG, TCFG, Mahiro, FreeU and FreeU_V2 in Release,
# runs each single-threaded 5 times and prints, per build, one row per patch and shape:
#   ours (median), libtorch (median; when libtorch is installed), the streaming bound (best of the
#   runs: one SIMD pass over the tensors the patch must read and write, in the same binary and
#   cache state), x_bound = ours / bound, and the floor of the passes the patch makes (plain
#   loops in the same binary: a reduction before the write for two-pass patches) with
#   floor / bound and ours / floor; and where a benchmark measures it, the patch's own passes
#   with its own arithmetic as plain loops (same passes, plain) and that time / bound;
# then the bandwidth it measured and the lines
#   worst x_bound at 1x16x128x128: X.XX
#   worst x_bound at 1x4x128x128: X.XX
#   worst x_bound FreeU/FreeU_V2: X.XX
# (every benchmarked variant of the six cfg-stage patches counts, momentum and pre_cfg forms
# included). Targets: 1.5; a miss whose floor / bound is as large is the cost of its passes.
#
# usage: scripts/bench_summary.sh [--builds "native x86-64-v3 default"] [--reps N]
#   native     -march=native (PATCHBAY_NATIVE)
#   x86-64-v3  -march=x86-64-v3, our stand-in for an AVX2 machine
#   default    the compiler's default flags with patchbay::dispatch (the widest variant the CPU has)
# Default: native and default.
set -euo pipefail
cd "$(dirname "$0")/.."
builds="native default"
reps=5
while [ $# -gt 0 ]; do
  case "$1" in
    --builds) builds="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    *) echo "usage: scripts/bench_summary.sh [--builds \"native x86-64-v3 default\"] [--reps N]" >&2; exit 2 ;;
  esac
done
scripts/deps.sh
targets=(bench_patches_cfg_rescale_cfg bench_patches_cfg_renorm_cfg bench_patches_post_cfg_cfg_norm
         bench_patches_pre_cfg_apg bench_patches_pre_cfg_tcfg bench_patches_post_cfg_mahiro
         bench_patches_block_free_u)
common=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DPATCHBAY_BUILD_TESTS=OFF -DPATCHBAY_BUILD_EXAMPLES=OFF)
dirs=()
for b in $builds; do
  case "$b" in
    native) flags=(-DPATCHBAY_NATIVE=ON -DPATCHBAY_DISPATCH=OFF -DCMAKE_CXX_FLAGS=) ;;
    x86-64-v3) flags=(-DPATCHBAY_NATIVE=OFF -DPATCHBAY_DISPATCH=OFF -DCMAKE_CXX_FLAGS=-march=x86-64-v3) ;;
    default) flags=(-DPATCHBAY_NATIVE=OFF -DPATCHBAY_DISPATCH=ON -DCMAKE_CXX_FLAGS=) ;;
    *) echo "unknown build '$b' (native, x86-64-v3, default)" >&2; exit 2 ;;
  esac
  dir=build/bench-summary-$b
  cmake -S . -B "$dir" "${common[@]}" "${flags[@]}" >/dev/null
  cmake --build "$dir" -j"$(nproc)" --target "${targets[@]}"
  dirs+=("$b=$dir")
done
exec scripts/bench_summary.py --reps "$reps" "${dirs[@]}"
