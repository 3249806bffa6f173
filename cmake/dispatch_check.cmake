# Checks one private ISA variant object of patchbay::dispatch (cmake/dispatch.cmake): no code
# that runs before the CPU is checked (static initialisers), and one global definition only.
execute_process(COMMAND ${OBJDUMP} -h ${OBJ} OUTPUT_VARIABLE sections RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "objdump -h ${OBJ} failed")
endif()
if(sections MATCHES "\\.init_array|\\.ctors" AND NOT ALLOW_CTORS)
  message(FATAL_ERROR "${OBJ}: the ISA variant has static initialisers; they would run its wide "
                      "instructions on any CPU at start-up. Remove the dynamic initialisation.")
endif()
execute_process(COMMAND ${OBJDUMP} -t ${OBJ} OUTPUT_VARIABLE symbols)
string(REGEX MATCHALL "\n[0-9a-f]+ g[^\n]*" globals "${symbols}")
list(LENGTH globals n)
if(NOT n EQUAL 1 OR NOT globals MATCHES "${ENTRY}")
  message(FATAL_ERROR "${OBJ}: expected one global symbol, ${ENTRY}; found: ${globals}")
endif()
