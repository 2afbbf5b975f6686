/* json.h - the exact JSON codec between Lua values and JSON text.
 *
 * Decoding uses jansson; encoding writes straight from the Lua stack.
 * Integers stay integers over the whole signed 64-bit range, floats are
 * written in the fewest digits that read back as the same double, arrays
 * carry a metatable marker so that [] and {} stay distinct, and JSON null
 * is one light userdata, flyte.null.
 */
#ifndef FLYTE_JSON_H
#define FLYTE_JSON_H

#include <jansson.h>
#include <lua.h>
#include <stddef.h>

#define FLYTE_JSON_MAX_DEPTH 1000

/* Registry key of the metatable that marks a table as a JSON array. */
#define FLYTE_JSON_ARRAY_MT "flyte.array"

/* Creates the array metatable in the registry if missing. */
void flyte_json_setup(lua_State *L);

/* Pushes flyte.null. */
void flyte_json_push_null(lua_State *L);
int flyte_json_is_null(lua_State *L, int idx);

/* Encodes the value at idx. On success returns 0 and sets *out (NUL-ended,
 * caller frees) and *len. On failure returns -1 with a message naming the
 * place ("payload.items[2]: cannot encode a function"). Never raises except
 * on memory errors from Lua itself. `root` names the value in messages
 * (e.g. "payload"); may be NULL. */
int flyte_json_encode(lua_State *L, int idx, int pretty, const char *root,
                      char **out, size_t *len, char *err, size_t errlen);

/* Decodes text and pushes one value. Returns 0, or -1 with a message and
 * nothing pushed. */
int flyte_json_decode(lua_State *L, const char *text, size_t len, char *err,
                      size_t errlen);

/* Pushes the Lua value of a jansson value (arrays marked). Returns 0, or -1
 * with a message and nothing pushed when it is nested too deep. */
int flyte_json_push(lua_State *L, json_t *j, char *err, size_t errlen);

#endif
