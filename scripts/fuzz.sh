#!/usr/bin/env bash
# Build the libFuzzer targets with clang and run each for SECONDS (default 20) over its corpus
# in tests/fuzz/corpus/<name> (new inputs found are kept there). Any crash fails the script.
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
# -O1 -g1: the sanitizers' usual level, far quicker to compile than -O2 -g. Every file is
# instrumented for coverage (fuzzer-no-link), the built-in patches' tables included (compiled
# once in patchbay_builtins; run-time dispatch is off, as in the other sanitizer builds).
# PATCHBAY_FUZZ_OPT overrides the level: scripts/test.sh's short budget uses -O0, where the
# instrumented tables compile in about 90 s instead of 210 s (fewer runs per second matter
# little in 15 s).
san="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
opt=${PATCHBAY_FUZZ_OPT:--O1}
cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$opt -g1 -DNDEBUG" \
      -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_CXX_FLAGS="$san" -DPATCHBAY_DISPATCH=OFF \
      -DPATCHBAY_BUILD_FUZZERS=ON -DPATCHBAY_BUILD_BENCHMARKS=OFF -DPATCHBAY_BUILD_EXAMPLES=OFF \
      -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in tests/fuzz/*.cpp; do targets+=("$(basename "${f%.cpp}")"); done
fi
# all targets in one build, so they compile in parallel
cmake --build build/fuzz -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "tests/fuzz/corpus/$t"
  echo "== fuzz_$t for ${seconds}s"
  log=build/fuzz/fuzz_$t.log
  status=0
  (cd build/fuzz && tests/fuzz/fuzz_$t -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
      "../../tests/fuzz/corpus/$t") >"$log" 2>&1 || status=$?
  grep -E "stat::number_of_executed_units|stat::new_units_added" "$log" || true
  if [ $status -ne 0 ]; then
    grep -E -A30 "ERROR|runtime error" "$log" | head -60
    echo "fuzz_$t failed (crash input saved in build/fuzz/)"
    exit 1
  fi
done
