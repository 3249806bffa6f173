# Warnings and flags for patchbay's own targets (tests, benchmarks, examples). Consumers of
# the INTERFACE library choose their own.
add_library(patchbay_project_flags INTERFACE)
target_compile_options(patchbay_project_flags INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wconversion)
if(PATCHBAY_WERROR)
  target_compile_options(patchbay_project_flags INTERFACE -Werror)
endif()
# No implicit multiply-add fusion in our own code: clang and g++ contract different expressions,
# so tests comparing a kernel with the same formula written in the test would differ by an ulp
# between compilers. (Kernels that want an FMA write it explicitly.)
if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
  target_compile_options(patchbay_project_flags INTERFACE -ffp-contract=off)
endif()
if(PATCHBAY_NATIVE)
  target_compile_options(patchbay_project_flags INTERFACE -march=native)
endif()
target_link_libraries(patchbay_project_flags INTERFACE patchbay::patchbay)

# patchbay_add_program(<name> <sources...>): an executable of ours with the project flags.
function(patchbay_add_program name)
  add_executable(${name} ${ARGN})
  target_link_libraries(${name} PRIVATE patchbay_project_flags patchbay_builtins)
endfunction()

# The built-in patches' function tables compiled once (include/patchbay/builtins.hpp) and linked
# into our tests, examples and the conformance runner: a file that names every built-in (the
# workflow importer does) then no longer compiles the whole library again.
add_library(patchbay_builtins STATIC ${CMAKE_CURRENT_LIST_DIR}/patchbay_builtins.cpp)
target_link_libraries(patchbay_builtins PUBLIC patchbay_project_flags)
target_compile_definitions(patchbay_builtins PUBLIC PATCHBAY_EXTERN_BUILTINS)
# ...and with the run-time ISA dispatch component, as an engine that ships one binary links it
# (cmake/dispatch.cmake; an empty target where it is not supported or PATCHBAY_DISPATCH is OFF).
# PATCHBAY_ISA caps it when a test run wants one variant.
