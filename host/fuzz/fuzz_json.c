/* fuzz_json.c - libFuzzer target for the JSON codec (json.c).
 *
 * Any bytes: decoding never crashes, and whatever decodes re-encodes (both
 * compact and pretty) to text that decodes to the same value, so encode,
 * decode, encode is stable. The bytes are also encoded as one Lua string:
 * when they are valid UTF-8 the string must come back unchanged.
 */
#include "../json.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lua_State *L;

static void fail(const char *what, const char *a, size_t alen, const char *b,
                 size_t blen) {
  fprintf(stderr, "fuzz_json: %s\n--- first (%zu bytes):\n%.*s\n"
                  "--- second (%zu bytes):\n%.*s\n",
          what, alen, (int)alen, a ? a : "", blen, (int)blen, b ? b : "");
  abort();
}

/* Encodes the value on top of the stack; aborts when it cannot: every value
 * the decoder makes must encode. Caller frees *out. */
static void encode(int pretty, char **out, size_t *len) {
  char err[256];
  if (flyte_json_encode(L, -1, pretty, "value", out, len, err, sizeof err))
    fail("a decoded value does not encode", err, strlen(err), NULL, 0);
}

/* Decodes text that the encoder wrote; aborts when it cannot. Pushes it. */
static void decode_own(const char *text, size_t len) {
  char err[256];
  if (flyte_json_decode(L, text, len, err, sizeof err))
    fail("the encoder's output does not decode", text, len, err,
         strlen(err));
}

/* The bytes as a Lua string: encodes when valid UTF-8, and reads back the
 * same. */
static void string_round_trip(const uint8_t *data, size_t size) {
  char err[256], *text = NULL;
  size_t len;
  lua_pushlstring(L, (const char *)data, size);
  if (flyte_json_encode(L, -1, 0, NULL, &text, &len, err, sizeof err) == 0) {
    decode_own(text, len);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (lua_type(L, -1) != LUA_TSTRING || n != size || memcmp(s, data, n))
      fail("a string does not read back the same", (const char *)data, size,
           text, len);
  }
  free(text);
  lua_settop(L, 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static unsigned runs;
  char err[256];
  if (L == NULL) {
    L = luaL_newstate();
    if (L == NULL) abort();
    flyte_json_setup(L);
  }
  string_round_trip(data, size);

  if (flyte_json_decode(L, (const char *)data, size, err, sizeof err) == 0) {
    char *first, *second, *pretty;
    size_t first_len, second_len, pretty_len;
    encode(0, &first, &first_len); /* stack: value */
    decode_own(first, first_len);  /* stack: value value2 */
    encode(0, &second, &second_len);
    if (second_len != first_len || memcmp(first, second, first_len))
      fail("encode(decode(encode(x))) differs from encode(x)", first,
           first_len, second, second_len);
    lua_pop(L, 1);
    encode(1, &pretty, &pretty_len);
    decode_own(pretty, pretty_len);
    free(second);
    encode(0, &second, &second_len);
    if (second_len != first_len || memcmp(first, second, first_len))
      fail("the pretty form reads back as another value", first, first_len,
           pretty, pretty_len);
    free(first);
    free(second);
    free(pretty);
  }
  lua_settop(L, 0);
  if (++runs % 1000 == 0) lua_gc(L, LUA_GCCOLLECT);
  return 0;
}
