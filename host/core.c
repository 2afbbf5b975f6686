/* core.c - flyte.core: the C primitives under the flyte Lua module.
 *
 * The JSON codec, clocks, the host's log, sending events and the flyte-api
 * health check; the waiting functions (sleep, HTTP, exec, spawn) come from
 * task.c. Inside the host
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
#include "task.h"

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
  flyte_log_field action[] = {{"action", flyte_task_label(L)},
                              {NULL, NULL}};
  flyte_log_json_fields((flyte_log_level)level, msg, fields,
                        action[0].value ? action : NULL);
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
    {"stopping", core_stopping},
    {"log", core_log},
    {"send_event", core_send_event},
    {"api_health", core_api_health},
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
  flyte_task_openlib(L);
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
