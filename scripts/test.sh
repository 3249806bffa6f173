#!/usr/bin/env bash
# patchbay's whole test suite, as CI runs it: installs the dependencies (Debian 12), then builds
# and runs every test in a Release build (g++) and in an ASan+UBSan build (clang), the unit tests
# and golden cases once per SIMD instruction set (the ISA matrix, run-time dispatch included),
# and ends with the time each stage took. The Release and ASan builds are our lint builds:
# -Werror at fixed flags (-march=x86-64-v3), so both compilers must accept every file; user
# builds never use -Werror.
# A failing stage does not stop the later ones: the script fails at the end, naming them.
# usage: scripts/test.sh [STAGE...]  with STAGE among release isa tsan fuzz asan (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
selected=("$@")
want() { # want STAGE: true when STAGE was asked for (or none was)
  [ ${#selected[@]} -eq 0 ] && return 0
  local s
  for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done
  return 1
}
# + the AArch64 cross compiler and qemu-user for the NEON entry of the ISA matrix
scripts/deps.sh g++-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
jobs=$(nproc)

failed=()
timings=()
cpu_ticks() { awk '{print $16 + $17}' /proc/$$/stat; } # CPU time of the finished children
stage() { # stage NAME COMMAND...: run one stage, time it, record a failure
  local name=$1 start=$SECONDS cpu_start status=0
  cpu_start=$(cpu_ticks)
  shift
  echo "== $name"
  # a subshell with -e of its own: in an `||` context bash would ignore -e inside the stage
  set +e
  (set -e; "$@")
  status=$?
  set -e
  timings+=("$(printf '%6ds %7ds  %s%s' $((SECONDS - start)) $((($(cpu_ticks) - cpu_start) / $(getconf CLK_TCK))) \
               "$name" "$([ $status -eq 0 ] || echo '  FAILED')")")
  [ $status -eq 0 ] || failed+=("$name")
}
summary() {
  echo "== Time per stage ($jobs jobs)"
  printf '%7s %8s\n' wall CPU
  printf '%s\n' "${timings[@]}"
  printf '%6ds %7ds  total\n' "$SECONDS" $(($(cpu_ticks) / $(getconf CLK_TCK)))
}
trap summary EXIT

# What this CPU has, under the cap PATCHBAY_ISA the whole run may be given (PATCHBAY_ISA=x86-64-v3
# scripts/test.sh stands in for an AVX2 host on an AVX-512 one).
outer_cap=${PATCHBAY_ISA:-}
has_v3() { # x86-64-v3's AVX2 and FMA
  case $outer_cap in x86-64|sse2|baseline) return 1 ;; esac
  grep -q -w avx2 /proc/cpuinfo && grep -q -w fma /proc/cpuinfo
}
has_avx512() { # x86-64-v4's AVX-512 subsets
  case $outer_cap in x86-64|sse2|baseline|x86-64-v3|avx2) return 1 ;; esac
  local f
  for f in avx512f avx512bw avx512cd avx512dq avx512vl; do
    grep -q -w "$f" /proc/cpuinfo || return 1
  done
}

release() {
  # Without the dispatch component: everything here runs this build's own x86-64-v3 code (the
  # matrix's dispatch build compiles, lints and runs every variant; here they cost about 170 s
  # of CPU).
  cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DPATCHBAY_BENCH_TORCH=OFF \
        -DPATCHBAY_WERROR=ON -DPATCHBAY_DISPATCH=OFF -DCMAKE_CXX_FLAGS="-march=x86-64-v3" >/dev/null
  cmake --build build/release -j"$jobs"
  ctest --test-dir build/release -j"$jobs" --output-on-failure
  print_simd build/release
}

# The SIMD variant each build ran, as its isa test and conformance runner printed it.
print_simd() {
  local log=$1/Testing/Temporary/LastTest.log
  grep -q "^simd: " "$log" || { echo "$1: no test printed its SIMD variant"; return 1; }
  grep -h -o "^simd: .*" "$log" | sort -u | sed "s|^|$(basename "$1") ran |"
}

# The ISA matrix: the unit tests and the golden conformance runner only (no benchmarks,
# examples, package or header tests), precompiled headers, no -Werror (warnings are the lint
# builds' business). Where the instruction set has FMA, -O2 as users build: g++ contracts
# multiply-adds from -O2 on, which changes results. Without FMA, lower levels compute the same
# values (g++ never reassociates floating point) and compile faster: -O1 for the SSE2 code,
# -O0 for the scalar build (its tests take 25 s there; the build 200 s against 250 s at -O1).
# The x86-64-v3 entry is the Release build above.
isa_build() { # isa_build NAME -O<level> CMAKE_ARGS...: configure and build one entry
  local dir=build/isa-$1 opt=$2
  shift 2
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="$opt -DNDEBUG" \
        -DPATCHBAY_BUILD_BENCHMARKS=OFF -DPATCHBAY_BUILD_EXAMPLES=OFF -DPATCHBAY_TEST_MINIMAL=ON \
        -DPATCHBAY_TEST_PCH=ON -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON "$@" >/dev/null
  # warnings of these builds would drown the log: show it only when the build fails
  if ! cmake --build "$dir" -j"$jobs" >"$dir/build.log" 2>&1; then
    grep -E -B2 -A12 "error|FAILED" "$dir/build.log" | head -120
    return 1
  fi
}
isa_test() { # isa_test NAME [PATCHBAY_ISA cap]: run one entry's tests, print the variant that ran
  local dir=build/isa-$1 status=0
  PATCHBAY_ISA=${2:-} ctest --test-dir "$dir" -j"$jobs" --output-on-failure || status=$?
  print_simd "$dir"
  return $status
}
isa_entry() { # isa_entry NAME -O<level> CMAKE_ARGS...
  isa_build "$@"
  isa_test "$1"
}
# The default build with run-time dispatch: the compiler's default flags (no -march) and
# patchbay::dispatch, run once per level this CPU has, capped through PATCHBAY_ISA. The
# x86-64 run is the compiler's baseline build: everything runs SSE2 code. That code is built
# at -O1 (no FMA: the same values, 40 % less compile time), the AVX2/AVX-512 variants at -O2
# and with -Werror: compiled at fixed flags, they are linted here (the Release build leaves
# the component out).
isa_dispatch() {
  isa_build dispatch -O1 -DPATCHBAY_DISPATCH=ON -DPATCHBAY_DISPATCH_VARIANT_OPTIONS="-O2;-Werror"
  local status=0 level
  for level in x86-64 x86-64-v3 x86-64-v4; do
    case $level in
      x86-64-v3) has_v3 || { echo "(x86-64-v3 run skipped: this CPU lacks AVX2/FMA)"; continue; } ;;
      x86-64-v4) has_avx512 || { echo "(x86-64-v4 run skipped: this CPU lacks AVX-512 F/BW/CD/DQ/VL)"; continue; } ;;
    esac
    echo "-- PATCHBAY_ISA=$level"
    isa_test dispatch "$level" || status=1
  done
  return $status
}

if want release; then
  stage "Release build, x86-64-v3 lint (tests, examples, benchmark smoke runs)" release
fi

if want isa; then
  stage "ISA matrix: default flags + run-time dispatch, each level this CPU has (x86-64 = the compiler's baseline)" \
    isa_dispatch
  stage "ISA matrix: scalar (PATCHBAY_DISABLE_SIMD)" \
    isa_entry scalar -O0 -DPATCHBAY_DISPATCH=OFF -DCMAKE_CXX_FLAGS="-DPATCHBAY_DISABLE_SIMD"
  # NEON is checked for correctness only: qemu's timings mean nothing.
  stage "ISA matrix: AArch64 NEON (cross-compiled, run under qemu-aarch64)" \
    isa_entry aarch64 -O2 -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/toolchain-aarch64.cmake"
  if [ "${PATCHBAY_ISA_V4_BUILD:-0}" = 1 ]; then
    # every file, kernels' own tests included, compiled for AVX-512 (the dispatch entry runs the
    # patches' AVX-512 variant; this one adds the kernels' unit tests at 16 lanes)
    if has_avx512; then
      stage "ISA matrix: x86-64-v4 build (AVX-512)" isa_entry v4 -O2 -DPATCHBAY_DISPATCH=OFF -DCMAKE_CXX_FLAGS="-march=x86-64-v4"
    else
      echo "== ISA matrix: x86-64-v4 build skipped: this CPU lacks AVX-512 (avx512f/bw/dq/vl)"
    fi
  fi
fi

tsan() {
  # -O1 -g1 (ThreadSanitizer's recommended level; RelWithDebInfo's -O2 -g took 83 s for the
  # built-in tables alone)
  cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
        -DPATCHBAY_BUILD_BENCHMARKS=OFF \
        -DPATCHBAY_BUILD_EXAMPLES=OFF -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON \
        -DPATCHBAY_DISPATCH=OFF -DCMAKE_CXX_FLAGS="-fsanitize=thread" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
        -DPATCHBAY_TEST_UNITY=OFF >/dev/null
  # One executable per test file (PATCHBAY_TEST_UNITY=OFF): test_core, the whole folder, would
  # bring the allocation counter's operator new (tests/support/counting_allocator.hpp), which
  # TSan's runtime owns.
  cmake --build build/tsan -j"$jobs" --target test_core_concurrency test_kernels_fft
  local t
  for t in test_core_concurrency test_kernels_fft; do
    TSAN_OPTIONS="halt_on_error=1" build/tsan/tests/$t
  done
  echo "ThreadSanitizer: no data race reported"
}
if want tsan; then
  stage "ThreadSanitizer: concurrent runs over one guider and the FFT plan cache (clang)" tsan
fi
if want fuzz; then
  stage "libFuzzer targets, short budget (scripts/fuzz.sh SECONDS runs longer by hand)" \
    env PATCHBAY_FUZZ_OPT="${PATCHBAY_FUZZ_OPT:--O0}" scripts/fuzz.sh "${PATCHBAY_FUZZ_SECONDS:-15}"
fi

asan() {
  local san="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
  # -O0 -g1: clang's warnings do not depend on the optimisation level and ASan reports at -O0
  # at least as precisely; measured on 2 cores, the build takes 306 s here against about 700 s
  # at -O1, the tests 111 s against about 50 s. The standalone header checks and the package
  # consumers are the Release build's (about 75 s and 50 s of CPU here). Each test file is its
  # own executable here (PATCHBAY_TEST_UNITY=OFF; the other builds compile each test folder as
  # one translation unit): a test file missing an #include fails in this build.
  cmake -S . -B build/asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O0 -g1" \
        -DPATCHBAY_BUILD_BENCHMARKS=OFF -DPATCHBAY_TEST_HEADERS=OFF -DPATCHBAY_TEST_PACKAGE=OFF \
        -DPATCHBAY_TEST_UNITY=OFF \
        -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_DISABLE_FIND_PACKAGE_Torch=ON -DPATCHBAY_DISPATCH=OFF \
        -DPATCHBAY_WERROR=ON -DCMAKE_CXX_FLAGS="$san -march=x86-64-v3" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
  cmake --build build/asan -j"$jobs"
  # alloc_dealloc_mismatch=0: the allocation-counting tests replace the global operator new and
  # delete (malloc/free underneath), which ASan would otherwise report as mismatched pairs.
  ASAN_OPTIONS=detect_leaks=1:alloc_dealloc_mismatch=0 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build/asan -j"$jobs" --output-on-failure
}
if want asan; then
  stage "ASan+UBSan build, x86-64-v3 lint (clang)" asan
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED stage: %s\n' "${failed[@]}"
  exit 1
fi
echo "Every stage passed."
