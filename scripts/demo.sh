#!/usr/bin/env bash
# Install the dependencies (Debian 12), build the examples and run the demo on the toy models.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cmake -S . -B build/demo -G Ninja -DCMAKE_BUILD_TYPE=Release -DPATCHBAY_BUILD_TESTS=OFF \
      -DPATCHBAY_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build build/demo -j"$(nproc)" --target example_demo
exec build/demo/examples/example_demo "$@"
