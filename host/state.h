/* state.h - building, calling into and closing the host's Lua states.
 *
 * Every Lua state (each worker's, observe's, health's) is built by
 * flyte_state_open, and every call into pack code goes through
 * flyte_state_call: a protected call with a traceback and a deadline.
 */
#ifndef FLYTE_STATE_H
#define FLYTE_STATE_H

#include <lua.h>
#include <stdatomic.h>
#include <stddef.h>

/* What the host offers to pack code through flyte.core; plain C. */
typedef struct flyte_core_env {
  void *ctx;
  /* Queues a spontaneous event (JSON body without createdAt is fine).
   * Returns 0, or -1 with a message in err. */
  int (*send_event)(void *ctx, const char *json, size_t len, char *err,
                    size_t errlen);
  /* 1 while flyte.sleep may go on sleeping; 0 once it must return false
   * (the host is stopping; for observe, also the pack reloaded). The host
   * wakes the loop of a sleeping task when this changes. */
  int (*sleep_ok)(void *ctx);
  /* Non-zero once the host is stopping. */
  int (*stopping)(void *ctx);
  /* Checks the flyte-api's health; writes a status line. Returns 1 up. */
  int (*api_health)(void *ctx, char *status, size_t n);
  const atomic_int *cancel; /* set when pending HTTP should stop; or NULL */
} flyte_core_env;

typedef struct {
  const flyte_core_env *env; /* borrowed; outlives the state; may be NULL */
  const char *pack_dir;      /* added to package.path; may be NULL */
  size_t memory_limit;       /* bytes; 0 for no limit */
} flyte_state_opts;

/* Why the last flyte_state_call failed. */
typedef enum {
  FLYTE_CALL_OK = 0,
  FLYTE_CALL_ERROR,   /* a Lua error */
  FLYTE_CALL_TIMEOUT, /* ran past its deadline */
  FLYTE_CALL_MEMORY,  /* ran out of memory (or past the limit) */
  FLYTE_CALL_STOPPED  /* cut at the end of the host's shutdown grace */
} flyte_call_status;

/* Returns a new state with the standard libraries, the flyte module on the
 * path and flyte.core preloaded; NULL with a message on failure. */
lua_State *flyte_state_open(const flyte_state_opts *opts, char *err,
                            size_t errlen);
void flyte_state_close(lua_State *L);

/* Calls the function below nargs arguments, protected, with a traceback
 * handler and, when timeout > 0, a deadline enforced by a count hook that
 * keeps firing so a pcall in pack code cannot swallow it.
 * stack: [fn, args...] -> [results...] on success, [] on failure.
 * On failure writes the error (with traceback) into err. */
flyte_call_status flyte_state_call(lua_State *L, int nargs, int nresults,
                                   double timeout, char *err, size_t errlen);

/* The environment given to flyte_state_open, or NULL (plain lua5.4). */
const flyte_core_env *flyte_state_env(lua_State *L);

/* Seconds left before the current call's deadline; a huge number when none.
 * When the deadline has passed, marks the call as timed out. */
double flyte_state_time_left(lua_State *L);

/* Whether an allocation was refused by the memory limit since the flag was
 * last reset; with reset, clears it. */
int flyte_state_over_limit(lua_State *L, int reset);

/* The state's memory limit in bytes (FLYTE_MEMORY_LIMIT), 0 for none. */
size_t flyte_state_limit(lua_State *L);

/* The reserve: a block held so that, when the system refuses a Lua state
 * memory, the host still has room to build the action's FATAL and its log
 * line (the allocator lets the block go at the first refusal). Arms it
 * (again) when it is not held; any thread. */
void flyte_memory_reserve(void);

/* Where the flyte Lua modules are found (see state.c). */
const char *flyte_lua_dir(void);

/* Monotonic clock in seconds. */
double flyte_monotime(void);

int luaopen_flyte_core(lua_State *L);

#endif
