/* json.c - the exact JSON codec between Lua values and JSON text.
 *
 * Decoding: jansson parses (strictly, \u0000 allowed) and the tree is
 * converted to Lua values. Encoding: the value is written from the Lua stack
 * into a growing buffer; errors are returned with the path of the bad value,
 * never raised, so the buffer is always freed.
 */
#include "json.h"

#include "jsonload.h"

#include <jansson.h>
#include <lauxlib.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char null_tag = 0;

void flyte_json_push_null(lua_State *L) {
  lua_pushlightuserdata(L, (void *)&null_tag);
}

int flyte_json_is_null(lua_State *L, int idx) {
  return lua_touserdata(L, idx) == (void *)&null_tag &&
         lua_islightuserdata(L, idx);
}

void flyte_json_setup(lua_State *L) {
  if (luaL_newmetatable(L, FLYTE_JSON_ARRAY_MT)) {
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
  }
  lua_pop(L, 1);
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct {
  const char *key; /* NULL for an array index */
  size_t key_len;
  lua_Integer index;
} segment;

typedef struct {
  lua_State *L;
  char *data;
  size_t len, cap;
  int pretty;
  int failed;
  const char *root;
  char *err;
  size_t errlen;
  int depth;
  segment path[FLYTE_JSON_MAX_DEPTH + 1];
} encoder;

typedef struct {
  const char *s;
  size_t len;
} key;

static int put(encoder *e, const char *p, size_t n) {
  if (e->failed) return -1;
  if (e->len + n + 1 > e->cap) {
    size_t cap = e->cap ? e->cap : 256;
    while (cap < e->len + n + 1) cap *= 2;
    char *data = realloc(e->data, cap);
    if (data == NULL) {
      snprintf(e->err, e->errlen, "out of memory encoding JSON");
      e->failed = 1;
      return -1;
    }
    e->data = data;
    e->cap = cap;
  }
  memcpy(e->data + e->len, p, n);
  e->len += n;
  return 0;
}

#define PUTS(e, lit) put((e), (lit), sizeof(lit) - 1)

/* Writes "at <path>: <what>" into the error buffer and marks failure. */
static int fail(encoder *e, const char *what) {
  if (e->failed) return -1;
  char path[256];
  size_t n = (size_t)snprintf(path, sizeof path, "%s", e->root ? e->root : "");
  for (int i = 1; i <= e->depth && n < sizeof path; i++) {
    const segment *s = &e->path[i];
    if (s->key)
      n += (size_t)snprintf(path + n, sizeof path - n, "%s%.*s",
                            n ? "." : "", (int)s->key_len, s->key);
    else
      n += (size_t)snprintf(path + n, sizeof path - n, "[%lld]",
                            (long long)s->index);
  }
  if (path[0])
    snprintf(e->err, e->errlen, "%s: %s", path, what);
  else
    snprintf(e->err, e->errlen, "%s", what);
  e->failed = 1;
  return -1;
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned min;
  if ((c & 0xE0) == 0xC0) len = 2, min = 0x80, c &= 0x1F;
  else if ((c & 0xF0) == 0xE0) len = 3, min = 0x800, c &= 0x0F;
  else if ((c & 0xF8) == 0xF0) len = 4, min = 0x10000, c &= 0x07;
  else return 0;
  if (len > n) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (p[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  return len;
}

static int put_string(encoder *e, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  const unsigned char *p = (const unsigned char *)s;
  size_t run = 0; /* start of bytes not yet written */
  if (PUTS(e, "\"")) return -1;
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0x80) {
      size_t len = utf8_len(p + i, n - i);
      if (len == 0) {
        char what[96];
        snprintf(what, sizeof what,
                 "string is not valid UTF-8 (bad byte 0x%02x at offset %zu)",
                 c, i);
        return fail(e, what);
      }
      i += len;
      continue;
    }
    if (put(e, s + run, i - run)) return -1;
    char esc[7] = {'\\', 0, 0, 0, 0, 0, 0};
    size_t elen = 2;
    switch (c) {
    case '"': esc[1] = '"'; break;
    case '\\': esc[1] = '\\'; break;
    case '\b': esc[1] = 'b'; break;
    case '\f': esc[1] = 'f'; break;
    case '\n': esc[1] = 'n'; break;
    case '\r': esc[1] = 'r'; break;
    case '\t': esc[1] = 't'; break;
    default:
      esc[1] = 'u', esc[2] = '0', esc[3] = '0';
      esc[4] = hex[c >> 4], esc[5] = hex[c & 15];
      elen = 6;
    }
    if (put(e, esc, elen)) return -1;
    run = ++i;
  }
  if (put(e, s + run, n - run)) return -1;
  return PUTS(e, "\"");
}

static int put_number(encoder *e, int idx) {
  char buf[64];
  int n;
  if (lua_isinteger(e->L, idx)) {
    n = snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(e->L, idx));
    return put(e, buf, (size_t)n);
  }
  double d = lua_tonumber(e->L, idx);
  if (!isfinite(d))
    return fail(e, isnan(d) ? "cannot encode NaN (JSON has no such number)"
                            : "cannot encode an infinite number");
  /* The fewest digits that read back as the same double: %.15g already
   * gives the shortest form for normal numbers that have one of at most 15
   * digits; subnormals have fewer significant digits, so start lower. */
  for (int prec = fabs(d) < DBL_MIN && d != 0 ? 1 : 15; prec <= 17; prec++) {
    n = snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (strtod(buf, NULL) == d) break;
  }
  /* Keep it a float when read back: 1.0, not 1. */
  if (strpbrk(buf, ".eE") == NULL) n += snprintf(buf + n, sizeof buf - (size_t)n, ".0");
  return put(e, buf, (size_t)n);
}

static int newline(encoder *e) {
  if (!e->pretty) return 0;
  if (PUTS(e, "\n")) return -1;
  for (int i = 0; i < e->depth; i++)
    if (PUTS(e, "  ")) return -1;
  return 0;
}

static int compare_keys(const void *a, const void *b) {
  const key *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  return c ? c : (x->len > y->len) - (x->len < y->len);
}

static int put_value(encoder *e, int idx);

static int put_array(encoder *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  if (PUTS(e, "[")) return -1;
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1 && PUTS(e, ",")) return -1;
    e->path[e->depth].key = NULL;
    e->path[e->depth].index = i;
    if (newline(e)) return -1;
    lua_rawgeti(L, idx, i);
    int rc = put_value(e, lua_gettop(L));
    lua_pop(L, 1);
    if (rc) return -1;
  }
  e->depth--;
  if (n > 0 && newline(e)) return -1;
  e->depth++;
  return PUTS(e, "]");
}

static int put_object(encoder *e, int idx, key *keys, size_t n) {
  lua_State *L = e->L;
  /* keys is NULL for {}: qsort must not see it */
  if (n > 1) qsort(keys, n, sizeof *keys, compare_keys);
  if (PUTS(e, "{")) return -1;
  for (size_t i = 0; i < n; i++) {
    if (i > 0 && PUTS(e, ",")) return -1;
    e->path[e->depth].key = keys[i].s;
    e->path[e->depth].key_len = keys[i].len;
    if (newline(e)) return -1;
    if (put_string(e, keys[i].s, keys[i].len)) return -1;
    if (e->pretty ? PUTS(e, ": ") : PUTS(e, ":")) return -1;
    lua_pushlstring(L, keys[i].s, keys[i].len);
    lua_rawget(L, idx);
    int rc = put_value(e, lua_gettop(L));
    lua_pop(L, 1);
    if (rc) return -1;
  }
  e->depth--;
  if (n > 0 && newline(e)) return -1;
  e->depth++;
  return PUTS(e, "}");
}

/* A table is an array when it has the array marker or its keys are exactly
 * 1..n; an object when every key is a string; {} is an object. */
static int put_table(encoder *e, int idx) {
  lua_State *L = e->L;
  if (e->depth >= FLYTE_JSON_MAX_DEPTH)
    return fail(e, "nested deeper than 1000 levels (a table that contains "
                   "itself?)");
  if (!lua_checkstack(L, 4)) return fail(e, "Lua stack overflow");
  e->depth++;
  int rc, marked = 0;
  if (lua_getmetatable(L, idx)) {
    luaL_getmetatable(L, FLYTE_JSON_ARRAY_MT);
    marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
  }

  size_t nstr = 0, cap = 0;
  lua_Integer nint = 0, maxint = 0;
  key *keys = NULL;
  const char *bad = NULL;
  lua_pushnil(L);
  while (lua_next(L, idx) != 0) {
    lua_pop(L, 1); /* stack: ... key */
    int kt = lua_type(L, -1);
    if (kt == LUA_TSTRING) {
      if (nstr == cap) {
        cap = cap ? cap * 2 : 8;
        key *grown = realloc(keys, cap * sizeof *keys);
        if (grown == NULL) {
          bad = "out of memory encoding JSON";
          lua_pop(L, 1);
          break;
        }
        keys = grown;
      }
      /* Borrowed: the key stays in the table while we encode it. */
      keys[nstr].s = lua_tolstring(L, -1, &keys[nstr].len);
      nstr++;
    } else if (kt == LUA_TNUMBER && lua_isinteger(L, -1) &&
               lua_tointeger(L, -1) > 0) {
      nint++;
      if (lua_tointeger(L, -1) > maxint) maxint = lua_tointeger(L, -1);
    } else {
      bad = "cannot encode a table key that is not a string or a positive "
            "integer";
      lua_pop(L, 1);
      break;
    }
  }
  if (bad == NULL && nstr && (nint || marked))
    bad = "cannot encode a table with both string keys and array items";
  /* a marked array's holes are written as null, but not without bound: a
   * single item at index 1e9 must not become a gigabyte of nulls */
  if (bad == NULL && marked && maxint > 2 * nint + 1024)
    bad = "cannot encode an array with holes (use flyte.null for missing "
          "items)";
  if (bad == NULL && !marked && nint && maxint != nint)
    bad = "cannot encode an array with holes (use flyte.null for missing "
          "items)";
  if (bad) {
    e->depth--;
    rc = fail(e, bad);
  } else if (nint || marked) {
    /* a marked array may have holes: they are written as null */
    rc = put_array(e, idx, maxint);
    e->depth--;
  } else {
    rc = put_object(e, idx, keys, nstr);
    e->depth--;
  }
  free(keys);
  return rc;
}

static int put_value(encoder *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return PUTS(e, "null");
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? PUTS(e, "true") : PUTS(e, "false");
  case LUA_TNUMBER: return put_number(e, idx);
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    return put_string(e, s, n);
  }
  case LUA_TTABLE: return put_table(e, idx);
  case LUA_TLIGHTUSERDATA:
    if (flyte_json_is_null(L, idx)) return PUTS(e, "null");
    /* fall through */
  default: {
    char what[64];
    snprintf(what, sizeof what, "cannot encode a %s", luaL_typename(L, idx));
    return fail(e, what);
  }
  }
}

int flyte_json_encode(lua_State *L, int idx, int pretty, const char *root,
                      char **out, size_t *len, char *err, size_t errlen) {
  encoder *e = calloc(1, sizeof *e);
  if (e == NULL) {
    snprintf(err, errlen, "out of memory encoding JSON");
    return -1;
  }
  e->L = L;
  e->pretty = pretty;
  e->root = root;
  e->err = err;
  e->errlen = errlen;
  int rc = put_value(e, lua_absindex(L, idx));
  if (rc == 0) rc = put(e, "", 1); /* NUL-end it */
  if (rc == 0) {
    *out = e->data;
    *len = e->len - 1;
  } else {
    free(e->data);
  }
  free(e);
  return rc;
}

/* ---- decoding ---------------------------------------------------------- */

/* Pushes the Lua value of j. Returns 0 or -1 when nested too deep. */
static int push_json(lua_State *L, json_t *j, int depth) {
  if (depth > FLYTE_JSON_MAX_DEPTH || !lua_checkstack(L, 3)) return -1;
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    const char *k;
    json_t *v;
    lua_createtable(L, 0, (int)json_object_size(j));
    void *it = json_object_iter(j);
    for (; it; it = json_object_iter_next(j, it)) {
      k = json_object_iter_key(it);
      v = json_object_iter_value(it);
      lua_pushlstring(L, k, json_object_iter_key_len(it));
      if (push_json(L, v, depth + 1)) return -1;
      lua_rawset(L, -3);
    }
    return 0;
  }
  case JSON_ARRAY: {
    size_t n = json_array_size(j);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
      if (push_json(L, json_array_get(j, i), depth + 1)) return -1;
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    luaL_setmetatable(L, FLYTE_JSON_ARRAY_MT);
    return 0;
  }
  case JSON_STRING:
    lua_pushlstring(L, json_string_value(j), json_string_length(j));
    return 0;
  case JSON_INTEGER:
    lua_pushinteger(L, (lua_Integer)json_integer_value(j));
    return 0;
  case JSON_REAL:
    lua_pushnumber(L, (lua_Number)json_real_value(j));
    return 0;
  case JSON_TRUE: lua_pushboolean(L, 1); return 0;
  case JSON_FALSE: lua_pushboolean(L, 0); return 0;
  case JSON_NULL: flyte_json_push_null(L); return 0;
  }
  return -1;
}

int flyte_json_push(lua_State *L, json_t *j, char *err, size_t errlen) {
  flyte_json_setup(L);
  int top = lua_gettop(L);
  if (push_json(L, j, 1)) {
    lua_settop(L, top);
    snprintf(err, errlen, "nested deeper than %d levels",
             FLYTE_JSON_MAX_DEPTH);
    return -1;
  }
  return 0;
}

int flyte_json_decode(lua_State *L, const char *text, size_t len, char *err,
                      size_t errlen) {
  json_error_t je;
  /* A raw NUL byte is never valid JSON (inside a string it must be
   * \u0000), and jansson stops reading at one: "123" then a NUL would
   * decode as 123 */
  const char *nul = memchr(text, '\0', len);
  if (nul) {
    snprintf(err, errlen, "invalid JSON: a NUL byte at offset %zu",
             (size_t)(nul - text));
    return -1;
  }
  json_t *j = flyte_json_load(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL,
                              &je);
  if (j == NULL) {
    if (strstr(je.text, "maximum parsing depth"))
      snprintf(err, errlen, "invalid JSON: nested deeper than %d levels",
               FLYTE_JSON_MAX_DEPTH);
    else
      snprintf(err, errlen, "invalid JSON at line %d, column %d: %s",
               je.line, je.column, je.text);
    return -1;
  }
  char why[128];
  int rc = flyte_json_push(L, j, why, sizeof why);
  json_decref(j);
  if (rc) snprintf(err, errlen, "invalid JSON: %s", why);
  return rc;
}
