#!/usr/bin/env bash
# patchbay's whole test suite, as CI runs it: installs the dependencies (Debian 12), then builds
# and runs every test in a Release build (g++) and in an ASan+UBSan build (clang), ending with
# CTest's summary. The Release and ASan builds are our lint builds: -Werror at fixed flags
# (-march=x86-64-v3), so both compilers must accept every file; user builds never use -Werror.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc)

echo "== Release build (tests, examples, benchmark smoke runs)"
lint="-DPATCHBAY_WERROR=ON"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPATCHBAY_BENCH_TORCH=OFF $lint \
      -DCMAKE_CXX_FLAGS="-march=x86-64-v3" >/dev/null
cmake --build build/release -j"$jobs"
ctest --test-dir build/release -j"$jobs" --output-on-failure

echo "== ThreadSanitizer: concurrent runs over one guider and the FFT plan cache (clang)"
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPATCHBAY_BUILD_BENCHMARKS=OFF \
      -DPATCHBAY_BUILD_EXAMPLES=OFF -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON \
      -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" >/dev/null
# (test_core_guider's allocation counter replaces operator new, which TSan's runtime owns)
cmake --build build/tsan -j"$jobs" --target test_core_concurrency test_kernels_fft
for t in test_core_concurrency test_kernels_fft; do
  TSAN_OPTIONS="halt_on_error=1" build/tsan/tests/$t
done
echo "ThreadSanitizer: no data race reported"

echo "== libFuzzer targets, short budget (scripts/fuzz.sh SECONDS runs longer by hand)"
scripts/fuzz.sh "${PATCHBAY_FUZZ_SECONDS:-15}"

echo "== ASan+UBSan build (clang)"
san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
# -O1 -g1: sanitizer-friendly and far quicker to compile than -O2 -g
cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
      -DPATCHBAY_BUILD_BENCHMARKS=OFF \
      -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON \
      $lint -DCMAKE_CXX_FLAGS="$san -march=x86-64-v3" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
cmake --build build/asan -j"$jobs"
# alloc_dealloc_mismatch=0: the allocation-counting tests replace the global operator new and
# delete (malloc/free underneath), which ASan would otherwise report as mismatched pairs.
ASAN_OPTIONS=detect_leaks=1:alloc_dealloc_mismatch=0 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build/asan -j"$jobs" --output-on-failure
