#!/usr/bin/env bash
# Install patchbay's build and test dependencies from Debian 12 packages (as root, or via sudo).
# Extra package names given as arguments are installed too (e.g. libtorch-dev libfftw3-dev).
set -euo pipefail
pkgs=(cmake ninja-build g++ clang libclang-rt-14-dev pkg-config libxsimd-dev xtl-dev libeigen3-dev libxtensor-dev
      catch2 libbenchmark-dev nlohmann-json3-dev libstb-dev "$@")
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "patchbay: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
