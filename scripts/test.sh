#!/usr/bin/env bash
# patchbay's whole test suite, as CI runs it: installs the dependencies (Debian 12), then builds
# and runs every test in a Release build and in an ASan+UBSan build, ending with CTest's summary.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

echo "== Release build (tests, examples, benchmark smoke runs)"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPATCHBAY_BENCH_TORCH=OFF >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release -j"$jobs" --output-on-failure | tail -n 25

echo "== ASan+UBSan build"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPATCHBAY_BUILD_BENCHMARKS=OFF \
      -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
cmake --build build/asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/asan -j"$jobs" --output-on-failure
