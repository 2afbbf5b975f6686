# embed.cmake - writes a file's bytes as a C array, at build time:
#
#   cmake -DIN=page.html -DOUT=page.c -DNAME=flyte_devpage -P embed.cmake
#
# OUT defines `const unsigned char NAME[]` (the bytes and a NUL) and
# `const size_t NAME_len` (the bytes alone). Plain CMake: no xxd.
foreach(var IN ITEMS IN OUT NAME)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "embed.cmake: -D${var}=... is required")
  endif()
endforeach()

file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" digits)
math(EXPR size "${digits} / 2")
# "0xab, " a byte, 16 a line (CMake's regex has no {16}).
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1, " bytes "${hex}")
string(REPEAT "0x[0-9a-f][0-9a-f], " 16 line)
string(REGEX REPLACE "(${line})" "\\1\n  " bytes "${bytes}")
get_filename_component(in_name "${IN}" NAME)
file(WRITE "${OUT}"
  "/* Generated from ${in_name} by cmake/embed.cmake: do not edit. */\n"
  "#include <stddef.h>\n\n"
  "const unsigned char ${NAME}[] = {\n  ${bytes}0x00};\n"
  "const size_t ${NAME}_len = ${size};\n")
