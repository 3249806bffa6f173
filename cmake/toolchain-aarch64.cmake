# Cross-compile patchbay's tests for AArch64 (NEON) with Debian's g++-aarch64-linux-gnu and run
# them under qemu-user (scripts/test.sh). Packages: g++-aarch64-linux-gnu, libc6-dev-arm64-cross,
# qemu-user. Only the header-only dependencies are needed (xsimd, xtl, Catch2, Eigen, xtensor,
# nlohmann-json): they are the host's arch-independent headers in /usr/include.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64;-L;/usr/aarch64-linux-gnu)

# The cross compiler searches its own libc and libstdc++ headers first; /usr/include comes
# after them (-idirafter), so only headers it lacks (xsimd, Catch2, ...) are taken from there,
# never the host's glibc. Compiler detection then lists /usr/include as an implicit directory,
# so CMake does not put the imported targets' -isystem /usr/include in front again.
set(CMAKE_CXX_FLAGS_INIT "-idirafter /usr/include")

# Libraries and headers of the target come from the cross prefix; package configs of the
# header-only dependencies from the host's /usr (programs always from the host).
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)
# Debian installs these two header-only configs under the host's multiarch directory, which a
# cross build does not search.
set(xsimd_DIR /usr/lib/x86_64-linux-gnu/cmake/xsimd CACHE PATH "")
set(xtensor_DIR /usr/lib/x86_64-linux-gnu/cmake/xtensor CACHE PATH "")
