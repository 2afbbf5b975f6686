/* core.c - flyte.core: the C primitives under the flyte Lua module.
 *
 * The JSON codec, clocks, sleep, the host's log, sending events, the
 * flyte-api health check and an HTTP client for pack code. Inside the host
 * these reach the host through the state's environment; loaded as a C
 * module by plain lua5.4 (for busted specs) they work on their own.
 */
#include <errno.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "json.h"
#include "log.h"
#include "state.h"

/* Registry keys: the state's HTTP client, and its metatable (two keys: one
 * slot holding both would make the client fail its own __gc check). */
#define HTTP_CLIENT_KEY "flyte.http_client"
#define HTTP_CLIENT_MT "flyte.http_client_mt"

/* ---- JSON ---------------------------------------------------------------- */

/* json_encode(value [, pretty]) -> string; raises when value has no JSON
 * form (a function, NaN, a table with mixed keys...). */
static int core_json_encode(lua_State *L) {
  luaL_checkany(L, 1);
  int pretty = lua_toboolean(L, 2);
  char err[512], *out;
  size_t len;
  lua_settop(L, 1);
  if (flyte_json_encode(L, 1, pretty, NULL, &out, &len, err, sizeof err)) {
    lua_pushstring(L, err); /* no position: the message names the field */
    return lua_error(L);
  }
  lua_pushlstring(L, out, len);
  free(out);
  return 1;
}

/* json_decode(text) -> value | nil, message */
static int core_json_decode(lua_State *L) {
  size_t len;
  const char *text = luaL_checklstring(L, 1, &len);
  char err[512];
  if (flyte_json_decode(L, text, len, err, sizeof err)) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  return 1;
}

/* ---- time ---------------------------------------------------------------- */

/* now() -> "2026-11-28T20:02:34.123456Z" */
static int core_now(lua_State *L) {
  char buf[64];
  flyte_time_rfc3339(buf, sizeof buf, 6);
  lua_pushstring(L, buf);
  return 1;
}

static int core_monotime(lua_State *L) {
  lua_pushnumber(L, flyte_monotime());
  return 1;
}

/* sleep(seconds) -> true when the time passed, false when the host is
 * stopping. Inside a call with a deadline, never sleeps past it. */
static int core_sleep(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0, 1, "must not be negative");
  double left = flyte_state_time_left(L);
  int cut = secs > left;
  if (cut) secs = left > 0 ? left : 0;
  const flyte_core_env *env = flyte_state_env(L);
  int slept = 1;
  if (env && env->sleep) {
    slept = env->sleep(env->ctx, secs);
  } else {
    struct timespec ts = {(time_t)secs,
                          (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
  }
  if (cut && slept) {
    flyte_state_time_left(L); /* marks the call as timed out */
    return luaL_error(L, "timed out");
  }
  lua_pushboolean(L, slept);
  return 1;
}

static int core_stopping(lua_State *L) {
  const flyte_core_env *env = flyte_state_env(L);
  lua_pushboolean(L, env && env->stopping && env->stopping(env->ctx));
  return 1;
}

/* ---- the host ------------------------------------------------------------ */

/* log(level, message [, fields_json]) */
static int core_log(lua_State *L) {
  static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
  int level = luaL_checkoption(L, 1, NULL, levels);
  const char *msg = luaL_checkstring(L, 2);
  const char *fields = luaL_optstring(L, 3, NULL);
  /* inside an action, its id: its lines can be found from take to result */
  flyte_log_field action[] = {{"action", NULL}, {NULL, NULL}};
  if (lua_getfield(L, LUA_REGISTRYINDEX, "flyte.action") == LUA_TSTRING)
    action[0].value = lua_tostring(L, -1);
  flyte_log_json_fields((flyte_log_level)level, msg, fields,
                        action[0].value ? action : NULL);
  lua_pop(L, 1);
  return 0;
}

/* send_event(json) -> true | nil, message. Without a host: nil, message. */
static int core_send_event(lua_State *L) {
  size_t len;
  const char *json = luaL_checklstring(L, 1, &len);
  const flyte_core_env *env = flyte_state_env(L);
  char err[256];
  if (env == NULL || env->send_event == NULL) {
    luaL_pushfail(L);
    lua_pushliteral(L, "no host to send the event to");
    return 2;
  }
  if (env->send_event(env->ctx, json, len, err, sizeof err) != 0) {
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* api_health() -> healthy, status */
static int core_api_health(lua_State *L) {
  const flyte_core_env *env = flyte_state_env(L);
  char status[256];
  if (env == NULL || env->api_health == NULL) {
    lua_pushboolean(L, 1);
    lua_pushliteral(L, "no flyte-api (not running in flyte-host)");
    return 2;
  }
  int up = env->api_health(env->ctx, status, sizeof status);
  lua_pushboolean(L, up);
  lua_pushstring(L, status);
  return 2;
}

/* ---- HTTP for pack code -------------------------------------------------- */

typedef struct {
  flyte_http *http;
} http_box;

static int http_box_gc(lua_State *L) {
  http_box *box = luaL_checkudata(L, 1, HTTP_CLIENT_MT);
  flyte_http_free(box->http);
  box->http = NULL;
  return 0;
}

/* The state's own HTTP client, made on first use and kept in the registry
 * (one per state, so one per thread: connections are reused). */
static flyte_http *http_client(lua_State *L) {
  if (lua_getfield(L, LUA_REGISTRYINDEX, HTTP_CLIENT_KEY) == LUA_TUSERDATA) {
    http_box *box = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return box->http;
  }
  lua_pop(L, 1);
  http_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->http = NULL;
  if (luaL_newmetatable(L, HTTP_CLIENT_MT)) {
    lua_pushcfunction(L, http_box_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  const flyte_core_env *env = flyte_state_env(L);
  flyte_http_opts opts = {NULL, 0, 30000, 64u << 20, env ? env->cancel : NULL};
  box->http = flyte_http_new(&opts);
  if (box->http == NULL) luaL_error(L, "cannot create an HTTP client");
  lua_setfield(L, LUA_REGISTRYINDEX, HTTP_CLIENT_KEY);
  return box->http;
}

/* http_request(method, url, headers, body, timeout) ->
 *   status, raw_headers, body | nil, message
 * headers: a sequence of "Name: value" strings; body: string or nil;
 * timeout: seconds or nil. */
static int core_http_request(lua_State *L) {
  const char *method = luaL_checkstring(L, 1);
  const char *url = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  size_t body_len = 0;
  const char *body = luaL_optlstring(L, 4, NULL, &body_len);
  double timeout = luaL_optnumber(L, 5, 0);
  double left = flyte_state_time_left(L);
  if (left < 1e17 && (timeout <= 0 || timeout > left)) timeout = left;
  if (timeout < 0.001 && left < 1e17) {
    flyte_state_time_left(L);
    return luaL_error(L, "timed out");
  }

  lua_Integer n = luaL_len(L, 3);
  luaL_argcheck(L, n < 200, 3, "too many headers");
  const char *lines[201];
  for (lua_Integer i = 1; i <= n; i++) {
    /* only a string already in the table stays valid once popped */
    if (lua_rawgeti(L, 3, i) != LUA_TSTRING)
      return luaL_argerror(L, 3, "header lines must be strings");
    lines[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  lines[n] = NULL;

  flyte_http *h = http_client(L);
  /* never 0 ms, which would mean the client's default */
  long timeout_ms = timeout > 0 ? (long)(timeout * 1000) : 0;
  if (timeout > 0 && timeout_ms < 1) timeout_ms = 1;
  flyte_http_req req = {method, url, body, body_len, lines, timeout_ms, 0, 1};
  flyte_http_resp resp;
  if (flyte_http_request(h, &req, &resp) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s %s: %s", method, url, resp.error);
    return 2;
  }
  lua_pushinteger(L, resp.status);
  lua_pushlstring(L, resp.headers, resp.headers_len);
  lua_pushlstring(L, resp.body, resp.body_len);
  return 3;
}

/* free_port() -> a TCP port on 127.0.0.1 that was free a moment ago. */
static int core_free_port(lua_State *L) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {0};
  socklen_t len = sizeof sa;
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    if (fd >= 0) close(fd);
    luaL_pushfail(L);
    lua_pushstring(L, strerror(errno));
    return 2;
  }
  close(fd);
  lua_pushinteger(L, ntohs(sa.sin_port));
  return 1;
}

static const luaL_Reg core_funcs[] = {
    {"json_encode", core_json_encode},
    {"json_decode", core_json_decode},
    {"now", core_now},
    {"monotime", core_monotime},
    {"sleep", core_sleep},
    {"stopping", core_stopping},
    {"log", core_log},
    {"send_event", core_send_event},
    {"api_health", core_api_health},
    {"http_request", core_http_request},
    {"free_port", core_free_port},
    {NULL, NULL}};

int luaopen_flyte_core(lua_State *L) {
  static int http_ready = 0;
  if (!http_ready && flyte_state_env(L) == NULL) {
    /* Loaded by plain lua5.4: nobody else initialises libcurl. */
    flyte_http_global_init();
    http_ready = 1;
  }
  flyte_json_setup(L);
  luaL_newlib(L, core_funcs);
  flyte_json_push_null(L);
  lua_setfield(L, -2, "null");
  luaL_getmetatable(L, FLYTE_JSON_ARRAY_MT);
  lua_setfield(L, -2, "array_mt");
  lua_pushboolean(L, flyte_state_env(L) != NULL);
  lua_setfield(L, -2, "hosted");
  lua_pushinteger(L, FLYTE_JSON_MAX_DEPTH);
  lua_setfield(L, -2, "json_max_depth");
  return 1;
}
