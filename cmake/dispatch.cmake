# patchbay::dispatch: the optional compiled component that picks the instruction set of the
# built-in patches at run time (include/patchbay/core/isa.hpp, docs/integration.md
# "Instruction sets"). An engine opts in with one line:
#   target_link_libraries(engine PRIVATE patchbay::dispatch)
# It is a static library: select.cpp (compiled with the engine's flags) and one object per
# x86-64 level (src/dispatch/isa_variant.cpp compiled with -march=x86-64-v3 and -v4), each made
# self-contained: ld -r dissolves its COMDAT groups and objcopy makes every symbol local but
# its entry point, so its AVX2/AVX-512 copies of inline code never replace the engine's.
# Needs x86-64, ELF and GNU binutils (ld, objcopy); elsewhere (AArch64: NEON is the baseline
# already) patchbay::dispatch is an empty interface target and the one line above does nothing.

# GNU binutils' own tools, whatever linker the compiler uses (lld has no --force-group-allocation).
find_program(PATCHBAY_LD_BFD NAMES ld.bfd)
find_program(PATCHBAY_OBJCOPY NAMES objcopy)
find_program(PATCHBAY_OBJDUMP NAMES objdump)
mark_as_advanced(PATCHBAY_LD_BFD PATCHBAY_OBJCOPY PATCHBAY_OBJDUMP)
set(_pb_dispatch_supported OFF)
if(CMAKE_SYSTEM_PROCESSOR MATCHES "^(x86_64|AMD64|amd64)$" AND NOT APPLE AND NOT WIN32
   AND CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang" AND PATCHBAY_LD_BFD AND PATCHBAY_OBJCOPY AND PATCHBAY_OBJDUMP)
  set(_pb_dispatch_supported ON)
endif()
option(PATCHBAY_DISPATCH "Build patchbay::dispatch, the run-time ISA dispatch component (x86-64 ELF)"
       ${_pb_dispatch_supported})

if(PATCHBAY_DISPATCH AND NOT _pb_dispatch_supported)
  message(WARNING "patchbay: PATCHBAY_DISPATCH needs x86-64, ELF, g++ or clang and GNU binutils (ld.bfd, objcopy, objdump); "
                  "patchbay::dispatch does nothing on this platform")
  set(PATCHBAY_DISPATCH OFF)
endif()

# Compile options for the x86-64-v3 and -v4 variant objects alone, after the build's own (a
# CMake list): e.g. -O2 in a build compiled at -O1 elsewhere (our test matrix builds its SSE2
# code at -O1, which computes the same values there, and the variants, whose multiply-adds g++
# contracts, as users build them).
set(PATCHBAY_DISPATCH_VARIANT_OPTIONS "" CACHE STRING
    "Extra compile options for patchbay::dispatch's x86-64-v3/v4 variants (e.g. -O2)")
mark_as_advanced(PATCHBAY_DISPATCH_VARIANT_OPTIONS)

if(NOT PATCHBAY_DISPATCH)
  add_library(patchbay_dispatch INTERFACE)
  target_link_libraries(patchbay_dispatch INTERFACE patchbay::patchbay)
else()
  # The variants get the project's warnings (not its -march); our test matrix's dispatch build
  # makes them errors there (scripts/test.sh: PATCHBAY_DISPATCH_VARIANT_OPTIONS="-O2;-Werror").
  set(_pb_variant_warnings)
  if(TARGET patchbay_project_flags)
    get_target_property(_pb_variant_warnings patchbay_project_flags INTERFACE_COMPILE_OPTIONS)
    list(FILTER _pb_variant_warnings EXCLUDE REGEX "^-march")
  endif()
  if(PATCHBAY_IS_TOP_LEVEL)
    set(_pb_exclude)
  else()
    set(_pb_exclude EXCLUDE_FROM_ALL) # built only when the engine links patchbay::dispatch
  endif()

  # Sanitizers register each object's globals from a constructor: allowed there only (a
  # developer's build on their own machine; the constructor calls the runtime, no vector code).
  set(_pb_allow_ctors OFF)
  if(CMAKE_CXX_FLAGS MATCHES "-fsanitize")
    set(_pb_allow_ctors ON)
  endif()
  set(_pb_variant_objects)
  foreach(level v3 v4)
    set(obj_target patchbay_isa_x86_64_${level})
    set(entry patchbay_isa_variant_x86_64_${level})
    add_library(${obj_target} OBJECT ${_pb_exclude} ${CMAKE_CURRENT_SOURCE_DIR}/src/dispatch/isa_variant.cpp)
    target_link_libraries(${obj_target} PRIVATE patchbay::patchbay)
    target_compile_definitions(${obj_target} PRIVATE PATCHBAY_ISA_VARIANT=x86_64_${level} PATCHBAY_ISA_ENTRY=${entry})
    target_compile_options(${obj_target} PRIVATE ${_pb_variant_warnings} -march=x86-64-${level}
                           ${PATCHBAY_DISPATCH_VARIANT_OPTIONS})
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # function-local statics as ordinary (localisable) symbols, not STB_GNU_UNIQUE
      target_compile_options(${obj_target} PRIVATE -fno-gnu-unique)
    endif()
    set(private_obj ${CMAKE_CURRENT_BINARY_DIR}/patchbay_isa_x86_64_${level}.o)
    add_custom_command(OUTPUT ${private_obj}
      COMMAND ${PATCHBAY_LD_BFD} -r --force-group-allocation -o ${private_obj}.r.o "$<TARGET_OBJECTS:${obj_target}>"
      COMMAND ${PATCHBAY_OBJCOPY} --keep-global-symbol=${entry} ${private_obj}.r.o ${private_obj}
      COMMAND ${CMAKE_COMMAND} -DOBJ=${private_obj} -DOBJDUMP=${PATCHBAY_OBJDUMP} -DENTRY=${entry}
              -DALLOW_CTORS=${_pb_allow_ctors}
              -P ${CMAKE_CURRENT_SOURCE_DIR}/cmake/dispatch_check.cmake
      DEPENDS ${obj_target} "$<TARGET_OBJECTS:${obj_target}>" ${CMAKE_CURRENT_SOURCE_DIR}/cmake/dispatch_check.cmake
      COMMAND_EXPAND_LISTS VERBATIM
      COMMENT "patchbay::dispatch: making the x86-64-${level} variant's symbols private")
    list(APPEND _pb_variant_objects ${private_obj})
  endforeach()
  set_source_files_properties(${_pb_variant_objects} PROPERTIES EXTERNAL_OBJECT TRUE GENERATED TRUE)

  add_library(patchbay_dispatch STATIC ${_pb_exclude} ${CMAKE_CURRENT_SOURCE_DIR}/src/dispatch/select.cpp
              ${_pb_variant_objects})
  target_link_libraries(patchbay_dispatch PUBLIC patchbay::patchbay)
  target_compile_definitions(patchbay_dispatch PUBLIC PATCHBAY_DISPATCH=1)
  target_compile_options(patchbay_dispatch PRIVATE ${_pb_variant_warnings})
endif()
add_library(patchbay::dispatch ALIAS patchbay_dispatch)
set_target_properties(patchbay_dispatch PROPERTIES EXPORT_NAME dispatch)
if(PATCHBAY_INSTALL)
  install(TARGETS patchbay_dispatch EXPORT patchbayTargets)
endif()
