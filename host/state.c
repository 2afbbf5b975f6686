/* state.c - building, calling into and closing the host's Lua states.
 *
 * A state carries a small C record (found through the registry): its
 * allocator's count and limit, the environment of the host and the current
 * call's deadline. This is the one file that protects, times out and closes
 * a state (lua.c's pmain/docall).
 */
#include "state.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>

#ifndef FLYTE_LUA_DIR
#define FLYTE_LUA_DIR "/usr/share/flyte-host/lua"
#endif

#define HOOK_COUNT 1000 /* instructions between deadline checks */
#define GC_PAUSE 120    /* percent: see flyte_state_open */

typedef struct {
  const flyte_core_env *env;
  size_t used, limit;
  int over_limit; /* an allocation was refused by the limit */
  double deadline; /* monotonic seconds; 0 for none */
  int timed_out;
} state_data;

static const char state_key = 0; /* registry key of the state_data */

double flyte_monotime(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Where the flyte Lua modules are: $FLYTE_LUA_DIR, else beside an
 * installed binary (BIN/../share/flyte-host/lua), else the build's own. */
static char lua_dir_found[4200];
static pthread_once_t lua_dir_once = PTHREAD_ONCE_INIT;

static void find_lua_dir(void) {
  const char *env = getenv("FLYTE_LUA_DIR");
  if (env && env[0]) {
    snprintf(lua_dir_found, sizeof lua_dir_found, "%s", env);
    return;
  }
  char exe[4000], path[4200];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
    snprintf(path, sizeof path, "%s/../share/flyte-host/lua/flyte/init.lua",
             exe);
    if (access(path, R_OK) == 0) {
      snprintf(lua_dir_found, sizeof lua_dir_found,
               "%s/../share/flyte-host/lua", exe);
      return;
    }
  }
  snprintf(lua_dir_found, sizeof lua_dir_found, "%s", FLYTE_LUA_DIR);
}

const char *flyte_lua_dir(void) {
  pthread_once(&lua_dir_once, find_lua_dir);
  return lua_dir_found;
}

static state_data *data_of(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &state_key);
  state_data *d = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return d;
}

const flyte_core_env *flyte_state_env(lua_State *L) {
  state_data *d = data_of(L);
  return d ? d->env : NULL;
}

double flyte_state_time_left(lua_State *L) {
  state_data *d = data_of(L);
  if (d == NULL || d->deadline == 0) return 1e18;
  double left = d->deadline - flyte_monotime();
  if (left <= 0) d->timed_out = 1;
  return left;
}

int flyte_state_over_limit(lua_State *L, int reset) {
  state_data *d = data_of(L);
  if (d == NULL) return 0;
  int over = d->over_limit;
  if (reset) d->over_limit = 0;
  return over;
}

/* Mapped, never touched: it costs no resident memory, but counts against
 * the address space (RLIMIT_AS) and the commit limit (strict overcommit),
 * which is what a refused malloc runs into. */
#define RESERVE_BYTES ((size_t)4 << 20)
static _Atomic(void *) reserve;

void flyte_memory_reserve(void) {
  if (atomic_load(&reserve) != NULL) return;
  void *block = mmap(NULL, RESERVE_BYTES, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (block == MAP_FAILED) return;
  void *none = NULL;
  if (!atomic_compare_exchange_strong(&reserve, &none, block))
    munmap(block, RESERVE_BYTES);
}

static void reserve_release(void) {
  void *block = atomic_exchange(&reserve, NULL);
  if (block) munmap(block, RESERVE_BYTES);
}

size_t flyte_state_limit(lua_State *L) {
  state_data *d = data_of(L);
  return d ? d->limit : 0;
}

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  state_data *d = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    d->used -= old;
    return NULL;
  }
  if (d->limit && nsize > old && d->used - old + nsize > d->limit) {
    d->over_limit = 1;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (p) {
    d->used = d->used - old + nsize;
  } else {
    /* the system is out of memory: Lua raises, and the host needs room
     * for the FATAL and the log line */
    reserve_release();
  }
  return p;
}

/* os.exit in pack code would end the host and every action it holds. */
static int os_exit_refused(lua_State *L) {
  return luaL_error(L, "os.exit is not allowed in pack code: the host runs "
                       "other actions too (return an event, flyte.fatal for "
                       "a failure, or raise an error)");
}

/* What pack code must not reach: debug.sethook would remove the deadline
 * hook, debug.getregistry and the upvalue and local setters reach the
 * host's own values. debug.traceback and debug.getinfo stay. */
static void restrict_libs(lua_State *L) {
  lua_createtable(L, 0, 2);
  lua_getglobal(L, "debug");
  lua_getfield(L, -1, "traceback");
  lua_setfield(L, -3, "traceback");
  lua_getfield(L, -1, "getinfo");
  lua_setfield(L, -3, "getinfo");
  lua_pop(L, 1); /* the full debug library */
  lua_pushvalue(L, -1);
  lua_setglobal(L, "debug");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_insert(L, -2);
  lua_setfield(L, -2, "debug"); /* require "debug" gets the same */
  lua_pop(L, 1);
  lua_getglobal(L, "os");
  lua_pushcfunction(L, os_exit_refused);
  lua_setfield(L, -2, "exit");
  lua_pop(L, 1);
}

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  fprintf(stderr, "flyte-host: unprotected Lua error: %s\n",
          msg ? msg : "(not a string)");
  abort();
}

lua_State *flyte_state_open(const flyte_state_opts *opts, char *err,
                            size_t errlen) {
  state_data *d = calloc(1, sizeof *d);
  if (d == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  d->env = opts->env;
  d->limit = opts->memory_limit;
  lua_State *L = lua_newstate(alloc, d);
  if (L == NULL) {
    free(d);
    snprintf(err, errlen, "cannot create a Lua state (out of memory)");
    return NULL;
  }
  lua_atpanic(L, panic);
  lua_pushlightuserdata(L, d);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &state_key);
  luaL_openlibs(L);
  restrict_libs(L);
  /* A state holds little (the pack: some 64 KB) and makes garbage with
   * every action; Lua's default pause lets the heap reach twice the live
   * data before a cycle starts. 120% keeps each state's peak near its
   * live size at no measurable CPU (100% would collect without pause and
   * doubles the host's CPU per action). See README, Performance. */
  lua_gc(L, LUA_GCINC, GC_PAUSE, 0, 0);

  /* package.path: our modules, then the pack's directory, then the usual */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  const char *dflt = lua_tostring(L, -1);
  const char *lua_dir = flyte_lua_dir();
  if (opts->pack_dir)
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s/?.lua;%s/?/init.lua;%s",
                    lua_dir, lua_dir, opts->pack_dir, opts->pack_dir, dflt);
  else
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", lua_dir, lua_dir, dflt);
  lua_setfield(L, -3, "path");
  lua_pop(L, 1); /* the old path */

  /* flyte.core is linked into the host: preload it */
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_flyte_core);
  lua_setfield(L, -2, "flyte.core");
  lua_pop(L, 2);
  return L;
}

void flyte_state_close(lua_State *L) {
  if (L == NULL) return;
  state_data *d = data_of(L);
  lua_close(L);
  free(d);
}

/* Message handler: adds a traceback to string errors; keeps other values,
 * or their __tostring (lua.c's msghandler). */
static int msghandler(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)",
                          luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  state_data *d = data_of(L);
  if (d && d->deadline && (d->timed_out || flyte_monotime() >= d->deadline)) {
    if (!d->timed_out) {
      d->timed_out = 1;
      /* From now on fire at every instruction: the error is raised again
       * as soon as a pcall in pack code has caught it, so it cannot be
       * swallowed. */
      lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    }
    luaL_error(L, "timed out");
  }
}

flyte_call_status flyte_state_call(lua_State *L, int nargs, int nresults,
                                   double timeout, char *err, size_t errlen) {
  state_data *d = data_of(L);
  int base = lua_gettop(L) - nargs;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  if (d) {
    d->timed_out = 0;
    d->over_limit = 0;
    d->deadline = timeout > 0 ? flyte_monotime() + timeout : 0;
  }
  if (timeout > 0) lua_sethook(L, hook, LUA_MASKCOUNT, HOOK_COUNT);
  int rc = lua_pcall(L, nargs, nresults, base);
  if (timeout > 0) lua_sethook(L, NULL, 0, 0);
  lua_remove(L, base);

  flyte_call_status status = FLYTE_CALL_OK;
  if (rc == LUA_OK && d && d->timed_out) {
    /* Pack code caught the timeout and the call went on: still a timeout. */
    lua_settop(L, base - 1);
    snprintf(err, errlen, "timed out");
    status = FLYTE_CALL_TIMEOUT;
  } else if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
    lua_pop(L, 1);
    if (d && d->timed_out)
      status = FLYTE_CALL_TIMEOUT;
    else if (rc == LUA_ERRMEM || (d && d->over_limit))
      status = FLYTE_CALL_MEMORY;
    else
      status = FLYTE_CALL_ERROR;
  }
  if (d) {
    d->deadline = 0;
    d->timed_out = 0;
  }
  return status;
}
