/* pack.c - a pack loaded in a Lua state of its own.
 *
 * Loads the pack through flyte.runner (lua/flyte/runner.lua), keeps the
 * runner and the pack table in the registry, and turns every call's outcome
 * into plain C data: JSON bodies, names, flags.
 */
#include "pack.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "json.h"
#include "log.h"
#include "task.h"

struct flyte_pack {
  lua_State *L;
  int runner; /* registry ref: the flyte.runner module */
  int pack;   /* registry ref: the pack table */
};

/* Pushes runner[name]. stack: [] -> [fn] */
static void push_runner_fn(flyte_pack *p, const char *name) {
  lua_rawgeti(p->L, LUA_REGISTRYINDEX, p->runner);
  lua_getfield(p->L, -1, name);
  lua_remove(p->L, -2);
}

static char *dup_top_string(lua_State *L, int idx) {
  size_t len;
  const char *s = lua_tolstring(L, idx, &len);
  if (s == NULL) return NULL;
  char *copy = malloc(len + 1);
  if (copy) memcpy(copy, s, len + 1);
  return copy;
}

flyte_pack *flyte_pack_open(const char *path, const flyte_core_env *env,
                            size_t memory_limit, const flyte_sources *sources,
                            char *err, size_t errlen) {
  flyte_pack *p = calloc(1, sizeof *p);
  char *dir = strdup(path);
  if (p == NULL || dir == NULL) {
    snprintf(err, errlen, "out of memory");
    goto fail;
  }
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  else
    strcpy(dir, ".");
  flyte_state_opts opts = {env, dir, memory_limit};
  p->L = flyte_state_open(&opts, err, errlen);
  if (p->L == NULL) goto fail;
  lua_State *L = p->L;

  /* runner = require "flyte.runner"; pack, why = runner.load(path) */
  lua_getglobal(L, "require");
  lua_pushliteral(L, "flyte.runner");
  if (flyte_state_call(L, 1, 1, 0, err, errlen) != FLYTE_CALL_OK) goto fail;
  lua_pushvalue(L, -1);
  p->runner = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "load");
  lua_pushstring(L, path);
  if (sources) {
    lua_createtable(L, 0, (int)sources->n);
    for (size_t i = 0; i < sources->n; i++) {
      lua_pushlstring(L, sources->texts[i], sources->lens[i]);
      lua_setfield(L, -2, sources->paths[i]);
    }
  } else {
    lua_pushnil(L);
  }
  if (flyte_state_call(L, 2, 2, 0, err, errlen) != FLYTE_CALL_OK) goto fail;
  if (lua_isnil(L, -2)) { /* stack: runner nil why */
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    goto fail;
  }
  lua_pop(L, 1);
  p->pack = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_settop(L, 0);
  /* loading leaves garbage behind: do not carry it into the first action */
  lua_gc(L, LUA_GCCOLLECT);
  free(dir);
  return p;
fail:
  free(dir);
  flyte_pack_close(p);
  return NULL;
}

lua_State *flyte_pack_state(flyte_pack *p) { return p->L; }

void flyte_pack_close(flyte_pack *p) {
  if (p == NULL) return;
  flyte_state_close(p->L);
  free(p);
}

int flyte_pack_describe(flyte_pack *p, const flyte_label *labels,
                        size_t nlabels, flyte_pack_info *info, char *err,
                        size_t errlen) {
  lua_State *L = p->L;
  memset(info, 0, sizeof *info);
  push_runner_fn(p, "describe");
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->pack);
  lua_createtable(L, 0, (int)nlabels);
  for (size_t i = 0; i < nlabels; i++) {
    lua_pushstring(L, labels[i].value);
    lua_setfield(L, -2, labels[i].key);
  }
  if (flyte_state_call(L, 2, 3, 0, err, errlen) != FLYTE_CALL_OK) return -1;
  info->registration = dup_top_string(L, -3);
  info->ncommands = (int)lua_tointeger(L, -2);
  info->has_observe = lua_toboolean(L, -1);
  lua_settop(L, 0);
  if (info->registration == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  return 0;
}

void flyte_pack_info_free(flyte_pack_info *info) {
  free(info->registration);
  memset(info, 0, sizeof *info);
}

int flyte_pack_sources(flyte_pack *p, flyte_sources *out) {
  lua_State *L = p->L;
  char err[256];
  memset(out, 0, sizeof *out);
  push_runner_fn(p, "sources");
  if (flyte_state_call(L, 0, 1, 0, err, sizeof err) != FLYTE_CALL_OK) return -1;
  size_t cap = 0;
  lua_pushnil(L);
  while (lua_next(L, -2)) { /* stack: sources path text */
    if (out->n == cap) {
      cap = cap ? cap * 2 : 8;
      char **paths = realloc(out->paths, cap * sizeof *paths);
      if (paths) out->paths = paths;
      char **texts = realloc(out->texts, cap * sizeof *texts);
      if (texts) out->texts = texts;
      size_t *lens = realloc(out->lens, cap * sizeof *lens);
      if (lens) out->lens = lens;
      if (!paths || !texts || !lens) {
        lua_settop(L, 0);
        flyte_sources_free(out);
        return -1;
      }
    }
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    out->paths[out->n] = dup_top_string(L, -2);
    out->texts[out->n] = malloc(len + 1);
    out->lens[out->n] = len;
    if (out->texts[out->n]) memcpy(out->texts[out->n], text, len + 1);
    out->n++;
    lua_pop(L, 1);
    if (!out->paths[out->n - 1] || !out->texts[out->n - 1]) {
      lua_settop(L, 0);
      flyte_sources_free(out);
      return -1;
    }
  }
  lua_settop(L, 0);
  return 0;
}

void flyte_sources_free(flyte_sources *s) {
  for (size_t i = 0; i < s->n; i++) {
    free(s->paths[i]);
    free(s->texts[i]);
  }
  free(s->paths);
  free(s->texts);
  free(s->lens);
  memset(s, 0, sizeof *s);
}


/* The command's own timeout, or 0. Runs protected: even pushing the
 * command's name may allocate, and a state at its memory limit must not
 * panic. stack: [pack, command (light), out (light)] -> [] */
static int timeout_in_lua(lua_State *L) {
  const char *command = lua_touserdata(L, 2);
  double *out = lua_touserdata(L, 3);
  *out = 0;
  if (lua_getfield(L, 1, "commands") == LUA_TTABLE &&
      lua_getfield(L, -1, command) == LUA_TTABLE &&
      lua_getfield(L, -1, "timeout") == LUA_TNUMBER)
    *out = lua_tonumber(L, -1);
  return 0;
}

double flyte_pack_timeout(flyte_pack *p, const char *command,
                          double default_timeout) {
  lua_State *L = p->L;
  char err[256];
  double timeout = 0;
  lua_pushcfunction(L, timeout_in_lua);
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->pack);
  lua_pushlightuserdata(L, (void *)command);
  lua_pushlightuserdata(L, &timeout);
  if (flyte_state_call(L, 3, 0, 0, err, sizeof err) != FLYTE_CALL_OK)
    timeout = 0;
  return timeout > 0 ? timeout : default_timeout;
}

static int action_k(lua_State *L, int status, lua_KContext ctx) {
  (void)L, (void)status, (void)ctx;
  return 3;
}

/* The body of an action's coroutine: converts the input to Lua and calls
 * runner.run, all inside the coroutine, so that running out of memory
 * while building the arguments is an error, not a panic.
 * stack: [args] -> [body, event, fatal] */
static int action_body(lua_State *L) {
  flyte_pack_action *a = lua_touserdata(L, 1);
  char why[256];
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->pack->runner);
  lua_getfield(L, -1, "run");
  lua_remove(L, -2);
  lua_rawgeti(L, LUA_REGISTRYINDEX, a->pack->pack);
  lua_pushstring(L, a->command);
  if (a->input_error) {
    lua_pushnil(L);
    lua_pushstring(L, a->input_error);
  } else if (a->input == NULL) {
    lua_pushnil(L);
    lua_pushnil(L);
  } else if (flyte_json_push(L, a->input, why, sizeof why) != 0) {
    lua_pushnil(L);
    lua_pushstring(L, why);
  } else {
    lua_pushnil(L);
  }
  lua_callk(L, 4, 3, 0, action_k);
  return 3;
}

/* The result body for how a run ended; the results, when OK, on top of L
 * (three: body, event, fatal). */
static void result_of(lua_State *L, const flyte_pack_action *a,
                      flyte_call_status st, const char *err,
                      flyte_pack_result *out) {
  const char *command = a->command;
  char text[1200];
  switch (st) {
  case FLYTE_CALL_OK: {
    size_t len = 0;
    lua_tolstring(L, -3, &len);
    if (len > FLYTE_MAX_EVENT_BYTES) {
      snprintf(text, sizeof text,
               "command '%s' returned event '%s' whose JSON is %zu bytes, "
               "over the host's limit of %zu bytes on a result",
               command, lua_tostring(L, -2) ? lua_tostring(L, -2) : "?", len,
               (size_t)FLYTE_MAX_EVENT_BYTES);
      break;
    }
    out->body = dup_top_string(L, -3);
    snprintf(out->event, sizeof out->event, "%s",
             lua_tostring(L, -2) ? lua_tostring(L, -2) : "?");
    out->fatal = lua_toboolean(L, -1);
    out->outcome = out->fatal ? "fatal" : "success";
    if (out->body) return;
    snprintf(text, sizeof text, "command '%s': the host ran out of memory",
             command);
    break;
  }
  case FLYTE_CALL_TIMEOUT:
    snprintf(text, sizeof text, "command '%s' timed out after %g s", command,
             a->timeout);
    break;
  case FLYTE_CALL_STOPPED:
    snprintf(text, sizeof text,
             "command '%s': the host stopped before the handler finished "
             "(it ran past the %g s shutdown grace period)",
             command, a->grace);
    break;
  case FLYTE_CALL_MEMORY: {
    size_t limit = flyte_state_limit(L);
    if (limit)
      snprintf(text, sizeof text,
               "command '%s' ran out of memory (a Lua state may use %zu MiB: "
               "FLYTE_MEMORY_LIMIT)", command, limit >> 20);
    else
      snprintf(text, sizeof text,
               "command '%s' ran out of memory (the system refused more)",
               command);
    out->state_broken = 1;
    break;
  }
  default:
    snprintf(text, sizeof text, "command '%s' failed in the host: %s",
             command, err);
    break;
  }
  out->body = flyte_api_fatal_body(text);
  snprintf(out->event, sizeof out->event, "FATAL");
  out->fatal = 1;
  out->outcome = st == FLYTE_CALL_TIMEOUT    ? "timeout"
                 : st == FLYTE_CALL_STOPPED ? "abandoned"
                 : st == FLYTE_CALL_MEMORY  ? "memory"
                                            : "fatal";
}

flyte_task *flyte_pack_start(flyte_pack *p, struct flyte_sched *sched,
                             flyte_pack_action *a, flyte_task_done done,
                             void *ud, char *err, size_t errlen) {
  lua_State *L = p->L;
  a->pack = p;
  a->timeout = flyte_pack_timeout(p, a->command, a->timeout);
  lua_pushcfunction(L, action_body);
  lua_pushlightuserdata(L, a);
  return flyte_task_start(sched, L, 1,
                          a->timeout > 0 ? flyte_monotime() + a->timeout : 0,
                          a->id, done, ud, err, errlen);
}

void flyte_pack_finish(flyte_pack_action *a, flyte_task *t,
                       flyte_pack_result *out) {
  memset(out, 0, sizeof *out);
  flyte_call_status st = flyte_task_status(t);
  lua_State *co = flyte_task_thread(t);
  out->seconds = flyte_task_seconds(t);
  result_of(co, a, st, flyte_task_error(t), out);
  if (flyte_task_interrupted(t)) out->state_broken = 1;
  flyte_task_free(t);
}

void flyte_pack_run(flyte_pack *p, const char *action, const char *command,
                    json_t *input, const char *input_error,
                    double default_timeout, flyte_pack_result *out) {
  lua_State *L = p->L;
  char err[1024];
  memset(out, 0, sizeof *out);
  flyte_pack_action a = {p, action, command, input, input_error,
                         default_timeout, 0};
  a.timeout = flyte_pack_timeout(p, command, default_timeout);
  lua_pushcfunction(L, action_body);
  lua_pushlightuserdata(L, &a);
  double start = flyte_monotime();
  flyte_call_status st = flyte_task_call(L, 1, 3, a.timeout, err, sizeof err);
  out->seconds = flyte_monotime() - start;
  result_of(L, &a, st, err, out);
  lua_settop(L, 0);
}

char *flyte_pack_health(flyte_pack *p, double timeout, int *healthy) {
  lua_State *L = p->L;
  char err[512];
  json_t *all = json_object();
  *healthy = 1;
  push_runner_fn(p, "health_names");
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->pack);
  if (flyte_task_call(L, 1, 1, timeout, err, sizeof err) != FLYTE_CALL_OK) {
    json_object_set_new(all, "HealthChecks",
                        json_pack("{s:b, s:s}", "healthy", 0, "status", err));
    *healthy = 0;
    goto done;
  }
  lua_Integer n = luaL_len(L, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i); /* stack: names name */
    const char *name = lua_tostring(L, -1);
    char *key = strdup(name ? name : "?");
    lua_pop(L, 1);
    push_runner_fn(p, "health_check");
    lua_rawgeti(L, LUA_REGISTRYINDEX, p->pack);
    lua_pushstring(L, key);
    flyte_call_status st = flyte_task_call(L, 2, 2, timeout, err, sizeof err);
    json_t *entry = NULL;
    if (st == FLYTE_CALL_OK) {
      entry = json_loads(lua_tostring(L, -2), JSON_DECODE_ANY, NULL);
      if (!lua_toboolean(L, -1)) *healthy = 0;
      lua_pop(L, 2);
    } else {
      char status[700];
      if (st == FLYTE_CALL_TIMEOUT)
        snprintf(status, sizeof status, "check timed out after %g s",
                 timeout);
      else
        snprintf(status, sizeof status, "check failed: %s", err);
      entry = json_pack("{s:b, s:s}", "healthy", 0, "status", status);
      *healthy = 0;
    }
    if (entry) json_object_set_new(all, key, entry);
    free(key);
  }
done:
  lua_settop(L, 0);
  char *text = json_dumps(all, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(all);
  return text;
}

int flyte_pack_observe(flyte_pack *p, char *err, size_t errlen) {
  lua_State *L = p->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, p->pack);
  lua_getfield(L, -1, "observe");
  lua_remove(L, -2);
  if (!lua_isfunction(L, -1)) {
    lua_settop(L, 0);
    return 0;
  }
  int rc = flyte_task_call(L, 0, 0, 0, err, errlen) == FLYTE_CALL_OK ? 0 : -1;
  lua_settop(L, 0);
  return rc;
}

/* Calls runner-free Lua code on the codec: pretty-prints a body. */
static char *pretty(flyte_pack *p, const char *json, int event_only) {
  lua_State *L = p->L;
  char err[256];
  char *text = NULL;
  flyte_json_setup(L);
  if (flyte_json_decode(L, json, strlen(json), err, sizeof err) != 0)
    return NULL;
  if (event_only && lua_istable(L, -1)) {
    lua_pushnil(L);
    lua_setfield(L, -2, "createdAt");
  }
  size_t len;
  if (flyte_json_encode(L, -1, 1, NULL, &text, &len, err, sizeof err) != 0)
    text = NULL;
  lua_settop(L, 0);
  return text;
}

char *flyte_pack_pretty_event(flyte_pack *p, const char *body) {
  return pretty(p, body, 1);
}

char *flyte_pack_pretty(flyte_pack *p, const char *json) {
  return pretty(p, json, 0);
}
