# Writes the current commit into ${OUT} at build time (not only at configure time), touching
# the file only when it changes so nothing rebuilds needlessly.
execute_process(COMMAND git describe --always --dirty WORKING_DIRECTORY ${SRC}
  OUTPUT_VARIABLE c OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT c)
  set(c unknown)
endif()
file(WRITE ${OUT}.new "#define VOX_COMMIT \"${c}\"\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.new ${OUT})
