/* task.c - pack code as coroutines on an event loop.
 *
 * One resume function decides from C-side flags, not from what a coroutine
 * yields, whether a task finished, failed, waits, or hit its deadline
 * (OpenResty's ngx_http_lua_run_thread). A waiting function starts its
 * operation, records it in the task with a way to cancel it, and yields
 * with a continuation; when the operation completes the task is queued,
 * resumed with nothing, and the continuation pushes the results (inside
 * the coroutine, so running out of memory there is an error of the task,
 * not a panic). Inside a coroutine of pack code's own, the waiting
 * function yields a sentinel that flyte's coroutine wrappers pass outward
 * (lua/flyte/coroutine.lua; cqueues' auxlib.resume).
 */
#include "task.h"

#include <errno.h>
#include <lauxlib.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "exec.h"
#include "http.h"

#define HOOK_COUNT 1000 /* instructions between deadline checks */
#define HTTP_TIMEOUT_MS 30000
#define HTTP_MAX_BODY (64u << 20)
#define EXEC_MAX_OUTPUT (1u << 20)
#define TASK_MT "flyte.task"

static const char sched_key = 0;   /* registry: the attached scheduler */
static const char private_key = 0; /* registry: a private one, owned */
static const char yield_sentinel = 0;
/* registry: a weak-keyed table of the coroutines pack code may not resume:
 * every task's, and any of pack code's own while it waits on the host */
static const char owned_key = 0;

/* owned[co] = value. stack: [..., co] -> [...]; may raise (memory). */
static void set_owned(lua_State *L, int value) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &owned_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &owned_key);
  }
  lua_insert(L, -2); /* stack: owned co */
  lua_pushboolean(L, value);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

typedef struct flyte_op flyte_op;
/* What a task waits on. It belongs to its task from wait_on until the
 * continuation that reads it (run by the scheduler's resume, after the
 * operation completed) or until the task ends (cancel): never to the
 * coroutine that yielded, which pack code might resume or close. */
struct flyte_op {
  flyte_task *task;
  lua_State *L;                  /* the coroutine that yielded */
  int done;                      /* completed: the task may go on */
  void (*cancel)(flyte_op *op); /* stops the operation and frees op */
};

enum { T_READY, T_RUNNING, T_WAITING, T_DONE };

typedef struct {
  flyte_task *t; /* NULL once the task is freed */
} task_handle;

struct flyte_task {
  flyte_sched *s;
  lua_State *owner; /* the state's main thread */
  lua_State *L;     /* the coroutine */
  int ref;          /* anchors L in the registry */
  int state;
  int nargs; /* for the first resume */
  flyte_op *op;
  flyte_task *prev, *next; /* ready queue */
  int queued;
  flyte_task *root;
  flyte_task *kids, *sib; /* root: what it spawned */
  flyte_task *waiter;     /* a task waiting for this one to end */
  task_handle *handle;
  /* the root's */
  double deadline;
  flyte_call_status why;
  flyte_timer timer;
  int killing, interrupted;
  const char *label;
  flyte_task_done done;
  void *ud;
  double started, ended;
  /* the outcome */
  flyte_call_status status;
  int nres;
  char *error;
};

typedef struct sleep_op {
  flyte_op base;
  flyte_timer timer;
  const flyte_core_env *env;
  struct sleep_op *prev, *next;
  int slept;
} sleep_op;

struct flyte_sched {
  flyte_loop *loop;
  flyte_task *head, *tail; /* ready */
  flyte_task *current;
  int ntasks;
  sleep_op *sleepers;
  flyte_http *http; /* pack code's client, made on first use */
  _Atomic double stop_at; /* set from any thread; 0 for none */
  int blocking_ok; /* private: code outside tasks may block on it */
  /* the run in progress, for a watchdog on another thread */
  _Atomic double busy_deadline;
  _Atomic(const flyte_task *) busy_root;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static flyte_sched *sched_of(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &sched_key);
  flyte_sched *s = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return s;
}

/* ---- the scheduler ------------------------------------------------------ */

flyte_sched *flyte_sched_new(flyte_loop *loop) {
  flyte_sched *s = calloc(1, sizeof *s);
  if (s) s->loop = loop;
  return s;
}

void flyte_sched_free(flyte_sched *s) {
  if (s == NULL) return;
  flyte_http_free(s->http);
  free(s);
}

flyte_loop *flyte_sched_loop(flyte_sched *s) { return s->loop; }

double flyte_sched_guard(flyte_sched *s, double seconds) {
  double previous = atomic_load(&s->busy_deadline);
  double due = now() + seconds;
  atomic_store(&s->busy_root, NULL);
  /* nested: the nearer deadline holds */
  atomic_store(&s->busy_deadline,
               previous > 0 && previous < due ? previous : due);
  return previous;
}

void flyte_sched_unguard(flyte_sched *s, double previous) {
  atomic_store(&s->busy_deadline, previous);
}

double flyte_sched_busy(flyte_sched *s, const flyte_task **root) {
  double due = atomic_load(&s->busy_deadline);
  *root = atomic_load(&s->busy_root);
  return due;
}

void flyte_sched_stop_at(flyte_sched *s, double deadline) {
  atomic_store(&s->stop_at, deadline);
}

static int attach_in_lua(lua_State *L) {
  lua_pushvalue(L, 1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &sched_key);
  return 0;
}

int flyte_sched_attach(flyte_sched *s, lua_State *L) {
  /* a new registry key may allocate: protected */
  lua_pushcfunction(L, attach_in_lua);
  lua_pushlightuserdata(L, s);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    lua_pop(L, 1);
    return -1;
  }
  return 0;
}

int flyte_sched_has_ready(const flyte_sched *s) { return s->head != NULL; }
int flyte_sched_tasks(const flyte_sched *s) { return s->ntasks; }

static void enqueue(flyte_task *t) {
  flyte_sched *s = t->s;
  if (t->queued) return;
  t->state = T_READY;
  t->queued = 1;
  t->next = NULL;
  t->prev = s->tail;
  if (s->tail)
    s->tail->next = t;
  else
    s->head = t;
  s->tail = t;
}

static void dequeue(flyte_task *t) {
  flyte_sched *s = t->s;
  if (!t->queued) return;
  if (t->prev)
    t->prev->next = t->next;
  else
    s->head = t->next;
  if (t->next)
    t->next->prev = t->prev;
  else
    s->tail = t->prev;
  t->queued = 0;
  t->prev = t->next = NULL;
}

/* An operation completed: its task runs again. */
static void wake(flyte_op *op) {
  op->done = 1;
  enqueue(op->task);
}

/* Cancels and frees what t waits on, if anything. */
static void drop_op(flyte_task *t) {
  if (t->op) {
    flyte_op *op = t->op;
    t->op = NULL;
    op->cancel(op);
  }
}

/* ---- ending tasks --------------------------------------------------------- */

static void set_error(flyte_task *t, const char *msg) {
  free(t->error);
  t->error = strdup(msg ? msg : "(error object is not a string)");
}

/* Stops a task that has not ended: cancels what it waits on and closes
 * its coroutine (to-be-closed variables run; the hook cuts them short). */
static void stop(flyte_task *t) {
  flyte_sched *s = t->s;
  dequeue(t);
  drop_op(t);
  if (t->state != T_DONE) {
    flyte_task *was = s->current;
    s->current = t;
    t->root->killing = 1;
    lua_resetthread(t->L);
    s->current = was;
    t->state = T_DONE;
    t->ended = now();
  }
}

/* Frees a task's C side and lets its coroutine go. */
static void release(flyte_task *t) {
  drop_op(t);
  if (t->handle) t->handle->t = NULL;
  luaL_unref(t->owner, LUA_REGISTRYINDEX, t->ref);
  free(t->error);
  t->s->ntasks--;
  free(t);
}

/* Ends what a root spawned (tasks not waited on end with their action). */
static void end_kids(flyte_task *root) {
  /* stop them all before freeing any: one may wait on another. A __close
   * run by stop cannot spawn more (core_spawn refuses once the root is
   * killing or done), but loop until the list stays empty all the same. */
  while (root->kids) {
    flyte_task *kids = root->kids;
    root->kids = NULL;
    for (flyte_task *k = kids; k; k = k->sib) {
      k->waiter = NULL;
      stop(k);
    }
    for (flyte_task *k = kids, *next; k; k = next) {
      next = k->sib;
      release(k);
    }
  }
}

static void finish(flyte_task *t, flyte_call_status st, int nres) {
  drop_op(t); /* a wait left armed by an error or a wrapper */
  t->state = T_DONE;
  t->status = st;
  t->nres = nres;
  t->ended = now();
  if (t->root == t) {
    flyte_timer_stop(t->s->loop, &t->timer);
    t->killing = 1; /* nothing spawns once it has ended */
    end_kids(t);
    t->done(t, t->ud); /* may free t */
    return;
  }
  if (t->waiter) {
    flyte_task *w = t->waiter;
    t->waiter = NULL;
    if (w->op) wake(w->op);
  }
}

/* Kills a root and its family; done runs with `why`. */
static void kill_root(flyte_task *root, flyte_call_status why) {
  root->killing = 1;
  drop_op(root); /* before the kids it may wait on go */
  end_kids(root);
  stop(root);
  char msg[64];
  snprintf(msg, sizeof msg, "%s",
           why == FLYTE_CALL_STOPPED ? "the host stopped" : "timed out");
  set_error(root, msg);
  finish(root, why, 0);
}

void flyte_task_kill(flyte_task *t, flyte_call_status why) {
  if (t->state == T_DONE) return;
  kill_root(t->root, why);
}

static void on_deadline(void *ud) {
  flyte_task *root = ud;
  if (root->state == T_DONE) return;
  root->killing = 1;
  kill_root(root, root->why);
}

void flyte_task_set_deadline(flyte_task *t, double deadline,
                             flyte_call_status why) {
  if (t->state == T_DONE) return;
  t->deadline = deadline;
  t->why = why;
  if (deadline > 0)
    flyte_timer_start(t->s->loop, &t->timer, deadline, on_deadline, t);
  else
    flyte_timer_stop(t->s->loop, &t->timer);
}

/* ---- running -------------------------------------------------------------- */

/* The count hook: a task past its deadline leaves pack code. From its own
 * coroutine it yields, which no pcall can catch; where it cannot yield (a
 * table.sort comparator, a coroutine of pack code's own) it raises, and
 * fires again at the next instruction until it reaches a place where it
 * can. */
static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  flyte_sched *s = sched_of(L);
  flyte_task *t = s ? s->current : NULL;
  if (t == NULL) return;
  flyte_task *root = t->root;
  if (!root->killing) {
    double stop_at = atomic_load(&s->stop_at);
    if (root->deadline == 0 && stop_at == 0) return;
    double t0 = now();
    int timed_out = root->deadline > 0 && t0 >= root->deadline;
    int stopped = stop_at > 0 && t0 >= stop_at;
    if (!timed_out && !stopped) return;
    if (!timed_out) root->why = FLYTE_CALL_STOPPED;
    root->killing = 1;
    root->interrupted = 1;
  }
  if (L == t->L && lua_isyieldable(L)) {
    lua_yield(L, 0);
    return;
  }
  lua_sethook(L, hook, LUA_MASKCOUNT, 1);
  luaL_error(L, "timed out");
}

static void resume(flyte_sched *s, flyte_task *t) {
  lua_State *co = t->L;
  flyte_task *root = t->root;
  int nres = 0;
  double stop_at = atomic_load(&s->stop_at), due = root->deadline;
  if (stop_at > 0 && (due == 0 || stop_at < due)) due = stop_at;
  if (due > 0 && now() >= due) {
    /* past its deadline before it runs (the loop ran late, or the host
     * stopped the worker's tasks, as when the worker was replaced while
     * stuck): not even the instructions before the hook fires */
    if (!(root->deadline > 0 && now() >= root->deadline))
      root->why = FLYTE_CALL_STOPPED;
    kill_root(root, root->why);
    return;
  }
  t->state = T_RUNNING;
  s->current = t;
  flyte_state_over_limit(co, 1);
  /* for the watchdog, which only samples them */
  atomic_store_explicit(&s->busy_root, root, memory_order_relaxed);
  atomic_store_explicit(&s->busy_deadline, due, memory_order_relaxed);
  int rc = lua_resume(co, NULL, t->nargs, &nres);
  atomic_store_explicit(&s->busy_deadline, 0, memory_order_relaxed);
  t->nargs = 0;
  s->current = NULL;
  if (root->killing) { /* the hook stopped it (or an error it raised) */
    kill_root(root, root->why);
    return;
  }
  if (rc == LUA_YIELD) {
    lua_pop(co, nres);
    if (t->op)
      t->state = T_WAITING;
    else
      enqueue(t); /* a plain coroutine.yield: let the others run first */
    return;
  }
  if (rc == LUA_OK && t == root) {
    /* a handler that returns after its deadline (it was in C code, where
     * the hook cannot fire, and came back to few instructions) ran past
     * it all the same: its result does not count */
    double t1 = now();
    int timed_out = root->deadline > 0 && t1 >= root->deadline;
    if (timed_out || (stop_at > 0 && t1 >= stop_at)) {
      lua_pop(co, nres);
      if (!timed_out) root->why = FLYTE_CALL_STOPPED;
      root->killing = 1;
      kill_root(root, root->why);
      return;
    }
  }
  if (rc == LUA_OK) {
    finish(t, FLYTE_CALL_OK, nres);
    return;
  }
  int memory = rc == LUA_ERRMEM || flyte_state_over_limit(co, 0);
  /* lua_tostring would convert a number in place: an allocation */
  set_error(t, lua_type(co, -1) == LUA_TSTRING ? lua_tostring(co, -1)
                                               : "(error object is not a "
                                                 "string)");
  if (t != root) {
    finish(t, memory ? FLYTE_CALL_MEMORY : FLYTE_CALL_ERROR, 0);
    return;
  }
  finish(t, memory ? FLYTE_CALL_MEMORY : FLYTE_CALL_ERROR, 0);
}

int flyte_sched_run(flyte_sched *s) {
  /* one round: the tasks ready now. One that yields again goes to the
   * next round, after the loop has looked at the world once. */
  int n = 0;
  flyte_task *last = s->tail, *t;
  while (last && (t = s->head) != NULL) {
    int end = t == last;
    dequeue(t);
    resume(s, t);
    n++;
    if (end) break;
  }
  return n;
}

/* Makes a coroutine for t from [t, fn, args...]; protected. */
static int create_in_lua(lua_State *L) {
  flyte_task *t = lua_touserdata(L, 1);
  int n = lua_gettop(L) - 1;
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, -1);
  set_owned(L, 1);
  lua_insert(L, 2); /* stack: t co fn args... */
  if (!lua_checkstack(co, n + LUA_MINSTACK)) luaL_error(L, "stack overflow");
  lua_xmove(L, co, n);
  t->ref = luaL_ref(L, LUA_REGISTRYINDEX); /* pops co */
  t->L = co;
  lua_sethook(co, hook, LUA_MASKCOUNT, HOOK_COUNT);
  return 0;
}

/* stack: [fn, args...] -> []. 0, or -1 (out of memory) with a message. */
static int new_coroutine(lua_State *L, flyte_task *t, int nargs, char *err,
                         size_t errlen) {
  if (!lua_checkstack(L, 2)) {
    lua_pop(L, nargs + 1);
    snprintf(err, errlen, "stack overflow");
    return -1;
  }
  lua_pushcfunction(L, create_in_lua);
  lua_pushlightuserdata(L, t);
  lua_rotate(L, -(nargs + 3), 2); /* stack: create t fn args... */
  if (lua_pcall(L, nargs + 2, 0, 0) != LUA_OK) {
    snprintf(err, errlen, "%s",
             lua_tostring(L, -1) ? lua_tostring(L, -1) : "out of memory");
    lua_pop(L, 1);
    return -1;
  }
  t->nargs = nargs;
  return 0;
}

flyte_task *flyte_task_start(flyte_sched *s, lua_State *L, int nargs,
                             double deadline, const char *label,
                             flyte_task_done done, void *ud, char *err,
                             size_t errlen) {
  flyte_task *t = calloc(1, sizeof *t);
  if (t == NULL) {
    lua_pop(L, nargs + 1);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  t->s = s;
  t->owner = L;
  t->ref = LUA_NOREF;
  t->root = t;
  t->why = FLYTE_CALL_TIMEOUT;
  t->label = label;
  t->done = done;
  t->ud = ud;
  t->started = now();
  if (new_coroutine(L, t, nargs, err, errlen) != 0) {
    free(t);
    return NULL;
  }
  s->ntasks++;
  if (deadline > 0) flyte_task_set_deadline(t, deadline, FLYTE_CALL_TIMEOUT);
  enqueue(t);
  return t;
}

flyte_call_status flyte_task_status(const flyte_task *t) { return t->status; }
lua_State *flyte_task_thread(const flyte_task *t) { return t->L; }
int flyte_task_nresults(const flyte_task *t) { return t->nres; }
const char *flyte_task_error(const flyte_task *t) {
  return t->error ? t->error : "";
}
int flyte_task_interrupted(const flyte_task *t) { return t->interrupted; }
double flyte_task_seconds(const flyte_task *t) {
  return (t->ended ? t->ended : now()) - t->started;
}

void flyte_task_free(flyte_task *t) {
  if (t == NULL) return;
  if (t->state != T_DONE) {
    t->killing = 1;
    drop_op(t);
    end_kids(t);
    stop(t);
  }
  flyte_timer_stop(t->s->loop, &t->timer);
  release(t);
}

const char *flyte_task_label(lua_State *L) {
  flyte_sched *s = sched_of(L);
  return s && s->current ? s->current->root->label : NULL;
}

/* ---- the blocking call -------------------------------------------------- */

typedef struct {
  flyte_loop *loop;
  flyte_sched *sched;
} private_sched;

static int private_gc(lua_State *L) {
  private_sched *p = lua_touserdata(L, 1);
  /* The registry holds it: this runs when the state closes. Finalizers
   * that run after this one must not find the freed scheduler, nor make
   * another that nothing would free. */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &sched_key);
  int ours = lua_touserdata(L, -1) == (void *)p->sched;
  lua_pop(L, 1);
  if (ours && p->sched) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &sched_key);
  }
  lua_pushboolean(L, 0);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &private_key);
  flyte_sched_free(p->sched);
  flyte_loop_free(p->loop);
  p->sched = NULL;
  p->loop = NULL;
  return 0;
}

/* A scheduler of the state's own, made in protected mode. */
static int make_private(lua_State *L) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &private_key);
  if (lua_isboolean(L, -1))
    return luaL_error(L, "the Lua state is closing: nothing can wait here");
  lua_pop(L, 1);
  private_sched *p = lua_newuserdatauv(L, sizeof *p, 0);
  memset(p, 0, sizeof *p);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, private_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  char err[256];
  p->loop = flyte_loop_new(err, sizeof err);
  if (p->loop == NULL) return luaL_error(L, "%s", err);
  p->sched = flyte_sched_new(p->loop);
  if (p->sched == NULL) return luaL_error(L, "out of memory");
  p->sched->blocking_ok = 1;
  lua_rawsetp(L, LUA_REGISTRYINDEX, &private_key);
  lua_pushlightuserdata(L, p->sched);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &sched_key);
  return 0;
}

static void call_done(flyte_task *t, void *ud) {
  (void)t;
  *(int *)ud = 1;
}

flyte_call_status flyte_task_call(lua_State *L, int nargs, int nresults,
                                  double timeout, char *err, size_t errlen) {
  flyte_sched *s = sched_of(L);
  if (s == NULL) {
    lua_pushcfunction(L, make_private);
    int rc = lua_pcall(L, 0, 0, 0);
    if (rc != LUA_OK) { /* out of memory, or the state is closing */
      snprintf(err, errlen, "%s", lua_tostring(L, -1));
      lua_pop(L, nargs + 2);
      return rc == LUA_ERRMEM ? FLYTE_CALL_MEMORY : FLYTE_CALL_ERROR;
    }
    s = sched_of(L);
  }
  int base = lua_gettop(L) - nargs - 1;
  int done = 0;
  flyte_task *t = flyte_task_start(s, L, nargs, timeout > 0 ? now() + timeout
                                                           : 0,
                                   NULL, call_done, &done, err, errlen);
  if (t == NULL) return FLYTE_CALL_MEMORY;
  while (!done) {
    flyte_sched_run(s);
    if (!done)
      flyte_loop_run_once(s->loop, flyte_sched_has_ready(s) ? 0 : -1);
  }
  flyte_call_status st = t->status;
  if (st == FLYTE_CALL_OK) {
    int n = t->nres;
    if (!lua_checkstack(L, n + (nresults > 0 ? nresults : 0))) {
      snprintf(err, errlen, "stack overflow");
      st = FLYTE_CALL_ERROR;
    } else {
      lua_xmove(t->L, L, n);
      if (nresults != LUA_MULTRET) lua_settop(L, base + nresults);
    }
  } else {
    snprintf(err, errlen, "%s", flyte_task_error(t));
  }
  flyte_task_free(t);
  if (st != FLYTE_CALL_OK) lua_settop(L, base);
  return st;
}

/* ---- waiting ---------------------------------------------------------------- */

/* The task that may wait here, or NULL when none runs (plain code: the
 * caller blocks instead). Raises where a task cannot wait. */
static flyte_task *waiting_task(lua_State *L, const char *what) {
  flyte_sched *s = sched_of(L);
  flyte_task *t = s ? s->current : NULL;
  if (t == NULL && s && !s->blocking_ok) /* a __gc between actions, say */
    luaL_error(L, "%s cannot wait here: it was called outside any action "
                  "(a finalizer, or code run between actions)", what);
  if (t && !lua_isyieldable(L))
    luaL_error(L,
               "%s cannot wait here: it was called from inside a C function "
               "(a table.sort comparator, a string.gsub callback, a "
               "metamethod, require); call it outside",
               what);
  return t;
}

/* Records op as what t waits on and yields; k pushes the results. */
static int wait_on(lua_State *L, flyte_task *t, flyte_op *op,
                   lua_KFunction k) {
  if (t->op) { /* cannot happen through the flyte module: be safe */
    op->task = t;
    op->cancel(op);
    return luaL_error(L, "this task waits on the host already");
  }
  if (L != t->L) { /* pack code may not resume it while it waits */
    lua_pushthread(L);
    set_owned(L, 1);
  }
  op->task = t;
  op->L = L;
  op->done = 0;
  t->op = op;
  if (L != t->L) { /* in a coroutine of pack code: pass the wait outward */
    lua_pushlightuserdata(L, (void *)&yield_sentinel);
    return lua_yieldk(L, 1, (lua_KContext)op, k);
  }
  return lua_yieldk(L, 0, (lua_KContext)op, k);
}

/* The op a continuation may read: only when the scheduler resumed the
 * task that waits on it, after it completed. Pack code resuming a waiting
 * coroutine itself (from another task, or a later action, with the op
 * long freed) gets an error instead; ctx is compared, never read. */
static flyte_op *resumed_op(lua_State *L, lua_KContext ctx) {
  flyte_sched *s = sched_of(L);
  flyte_task *t = s ? s->current : NULL;
  if (t == NULL || t->op == NULL || t->op != (flyte_op *)ctx ||
      !t->op->done || t->op->L != L)
    luaL_error(L, "this coroutine waits on the host (flyte.sleep, "
                  "flyte.http, flyte.exec or task:wait): only the host may "
                  "resume it");
  return t->op;
}

/* A coroutine of pack code's own that waited may be resumed again. */
static void unown(lua_State *L) {
  flyte_sched *s = sched_of(L);
  if (s && s->current && L != s->current->L) {
    lua_pushthread(L);
    set_owned(L, 0);
  }
}

/* After a continuation has pushed its results. */
static void done_with(flyte_op *op) {
  if (op->task->op == op) op->task->op = NULL;
}

/* owned(co) -> whether pack code may not resume co */
static int core_owned(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTHREAD);
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &owned_key) != LUA_TTABLE) {
    lua_pushboolean(L, 0);
    return 1;
  }
  lua_pushvalue(L, 1);
  lua_pushboolean(L, lua_rawget(L, -2) == LUA_TBOOLEAN && lua_toboolean(L, -1));
  return 1;
}

/* Runs a waiting C function as a task of a private loop until it ends:
 * the waiting functions called outside any task (a busted spec, a pack's
 * top level). stack: [args...] -> [results...] */
static int run_blocking(lua_State *L, lua_CFunction fn) {
  int n = lua_gettop(L);
  char err[1024];
  lua_pushcfunction(L, fn);
  lua_insert(L, 1);
  if (flyte_task_call(L, n, LUA_MULTRET, 0, err, sizeof err) !=
      FLYTE_CALL_OK)
    return luaL_error(L, "%s", err);
  return lua_gettop(L);
}

/* -- sleep -- */

static void sleep_unlink(flyte_sched *s, sleep_op *op) {
  if (op->prev)
    op->prev->next = op->next;
  else if (s->sleepers == op)
    s->sleepers = op->next;
  if (op->next) op->next->prev = op->prev;
  op->prev = op->next = NULL;
}

static void sleep_cancel(flyte_op *base) {
  sleep_op *op = (sleep_op *)base;
  flyte_sched *s = base->task->s;
  flyte_timer_stop(s->loop, &op->timer);
  sleep_unlink(s, op);
  free(op);
}

static void sleep_fired(void *ud) {
  sleep_op *op = ud;
  op->slept = 1;
  sleep_unlink(op->base.task->s, op);
  wake(&op->base);
}

void flyte_sched_interrupt_sleeps(flyte_sched *s) {
  for (sleep_op *op = s->sleepers, *next; op; op = next) {
    next = op->next;
    if (op->env && op->env->sleep_ok && !op->env->sleep_ok(op->env->ctx)) {
      flyte_timer_stop(s->loop, &op->timer);
      sleep_unlink(s, op);
      op->slept = 0;
      wake(&op->base);
    }
  }
}

static int sleep_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  sleep_op *op = (sleep_op *)resumed_op(L, ctx);
  unown(L);
  lua_pushboolean(L, op->slept);
  done_with(&op->base);
  free(op);
  return 1;
}

/* sleep(seconds) -> true when the time passed, false when the host is
 * stopping (or, in observe, the pack reloaded). */
static int core_sleep(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0, 1, "must not be negative");
  const flyte_core_env *env = flyte_state_env(L);
  int ok = !(env && env->sleep_ok) || env->sleep_ok(env->ctx);
  flyte_task *t = waiting_task(L, "flyte.sleep");
  if (!ok) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (t == NULL) { /* plain code: block */
    struct timespec ts = {(time_t)secs,
                          (long)((secs - (double)(time_t)secs) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    lua_pushboolean(L, 1);
    return 1;
  }
  sleep_op *op = calloc(1, sizeof *op);
  if (op == NULL) return luaL_error(L, "not enough memory");
  flyte_sched *s = t->s;
  op->base.cancel = sleep_cancel;
  op->env = env;
  op->next = s->sleepers;
  if (s->sleepers) s->sleepers->prev = op;
  s->sleepers = op;
  flyte_timer_start(s->loop, &op->timer, now() + secs, sleep_fired, op);
  return wait_on(L, t, &op->base, sleep_k);
}

/* -- http -- */

typedef struct {
  flyte_op base;
  flyte_http_call *call;
  char *what; /* "METHOD URL" for messages */
} http_op;

static void http_cancel(flyte_op *base) {
  http_op *op = (http_op *)base;
  flyte_http_release(op->call);
  free(op->what);
  free(op);
}

static void http_done(flyte_http_call *call, void *ud) {
  (void)call;
  wake(ud);
}

static int http_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  http_op *op = (http_op *)resumed_op(L, ctx);
  unown(L);
  flyte_http_resp r;
  int n;
  if (flyte_http_result(op->call, &r) != 0) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", op->what, r.error);
    n = 2;
  } else {
    lua_pushinteger(L, r.status);
    lua_pushlstring(L, r.headers, r.headers_len);
    lua_pushlstring(L, r.body, r.body_len);
    n = 3;
  }
  done_with(&op->base);
  http_cancel(&op->base); /* releases the call */
  return n;
}

static flyte_http *pack_http(lua_State *L, flyte_sched *s) {
  if (s->http == NULL) {
    const flyte_core_env *env = flyte_state_env(L);
    flyte_http_opts opts = {NULL, 0, HTTP_TIMEOUT_MS, HTTP_MAX_BODY,
                            env ? env->cancel : NULL};
    s->http = flyte_http_new(&opts);
    if (s->http == NULL) luaL_error(L, "not enough memory");
  }
  return s->http;
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
  lua_Integer nh = luaL_len(L, 3);
  luaL_argcheck(L, nh < 200, 3, "too many headers");
  flyte_task *t = waiting_task(L, "flyte.http.request");
  if (t == NULL) return run_blocking(L, core_http_request);

  const char *lines[201];
  for (lua_Integer i = 1; i <= nh; i++) {
    /* only a string already in the table stays valid once popped */
    if (lua_rawgeti(L, 3, i) != LUA_TSTRING)
      return luaL_argerror(L, 3, "header lines must be strings");
    lines[i - 1] = lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  lines[nh] = NULL;
  /* never 0 ms, which would mean the client's default */
  long timeout_ms = timeout > 0 ? (long)(timeout * 1000) : 0;
  if (timeout > 0 && timeout_ms < 1) timeout_ms = 1;
  flyte_http_req req = {.method = method, .url = url, .body = body,
                        .body_len = body_len, .headers = lines,
                        .timeout_ms = timeout_ms, .want_headers = 1};
  http_op *op = calloc(1, sizeof *op);
  if (op == NULL) return luaL_error(L, "not enough memory");
  size_t n = strlen(method) + strlen(url) + 2;
  if ((op->what = malloc(n)) == NULL) {
    free(op);
    return luaL_error(L, "not enough memory");
  }
  snprintf(op->what, n, "%s %s", method, url);
  op->base.cancel = http_cancel;
  char err[256];
  op->call = flyte_http_start(pack_http(L, t->s), t->s->loop, &req, http_done,
                              op, err, sizeof err);
  if (op->call == NULL) {
    luaL_pushfail(L);
    lua_pushfstring(L, "%s: %s", op->what, err);
    free(op->what);
    free(op);
    return 2;
  }
  return wait_on(L, t, &op->base, http_k);
}

/* -- exec -- */

typedef struct {
  flyte_op base;
  flyte_proc *proc;
  double timeout;
} exec_op;

static void exec_cancel(flyte_op *base) {
  exec_op *op = (exec_op *)base;
  flyte_exec_release(op->proc);
  free(op);
}

static void exec_done(flyte_proc *p, void *ud) {
  (void)p;
  wake(ud);
}

static int exec_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  exec_op *op = (exec_op *)resumed_op(L, ctx);
  unown(L);
  const flyte_exec_result *r = flyte_exec_result_of(op->proc);
  int n = 1;
  if (r->timed_out) {
    luaL_pushfail(L);
    lua_pushfstring(L, "timed out after %f s (the program was killed)",
                    op->timeout);
    n = 2;
  } else {
    lua_createtable(L, 0, 5);
    if (r->signal) {
      lua_pushinteger(L, r->signal);
      lua_setfield(L, -2, "signal");
    } else {
      lua_pushinteger(L, r->status);
      lua_setfield(L, -2, "status");
    }
    lua_pushlstring(L, r->out, r->out_len);
    lua_setfield(L, -2, "stdout");
    lua_pushlstring(L, r->err, r->err_len);
    lua_setfield(L, -2, "stderr");
    lua_pushboolean(L, r->truncated);
    lua_setfield(L, -2, "truncated");
  }
  done_with(&op->base);
  exec_cancel(&op->base);
  return n;
}

/* Owns the C strings built for a spawn, so an error cannot leak them. */
typedef struct {
  char **argv, **env;
  size_t nargv, nenv;
} exec_args;

static int exec_args_gc(lua_State *L) {
  exec_args *a = lua_touserdata(L, 1);
  for (size_t i = 0; i < a->nargv; i++) free(a->argv[i]);
  for (size_t i = 0; i < a->nenv; i++) free(a->env[i]);
  free(a->argv);
  free(a->env);
  memset(a, 0, sizeof *a);
  return 0;
}

extern char **environ;

/* Whether `entry` ("NAME=value") names a variable set in the table at
 * index idx (as a string or false). */
static int overridden(lua_State *L, int idx, const char *entry) {
  const char *eq = strchr(entry, '=');
  if (eq == NULL) return 0;
  lua_pushlstring(L, entry, (size_t)(eq - entry));
  int t = lua_rawget(L, idx);
  lua_pop(L, 1);
  return t != LUA_TNIL;
}

/* exec(argv, stdin, env, cwd, timeout) -> result | nil, message
 * argv: a sequence of strings; env: names to strings (set) or false
 * (removed), over the host's environment. */
static int core_exec(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  size_t in_len = 0;
  const char *in = luaL_optlstring(L, 2, NULL, &in_len);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  const char *cwd = luaL_optstring(L, 4, NULL);
  double timeout = luaL_optnumber(L, 5, 0);
  flyte_task *t = waiting_task(L, "flyte.exec");
  if (t == NULL) return run_blocking(L, core_exec);

  lua_settop(L, 5);
  exec_args *a = lua_newuserdatauv(L, sizeof *a, 0); /* index 6 */
  memset(a, 0, sizeof *a);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, exec_args_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_Integer n = luaL_len(L, 1);
  luaL_argcheck(L, n >= 1, 1, "cmd must name a program");
  if ((a->argv = calloc((size_t)n + 1, sizeof *a->argv)) == NULL)
    return luaL_error(L, "not enough memory");
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
      return luaL_argerror(L, 1, "cmd must be a list of strings");
    if ((a->argv[a->nargv++] = strdup(lua_tostring(L, -1))) == NULL)
      return luaL_error(L, "not enough memory");
    lua_pop(L, 1);
  }
  if (!lua_isnil(L, 3)) {
    size_t cap = 16;
    for (char **e = environ; *e; e++) cap++;
    lua_pushnil(L);
    while (lua_next(L, 3)) {
      cap++;
      lua_pop(L, 1);
    }
    if ((a->env = calloc(cap, sizeof *a->env)) == NULL)
      return luaL_error(L, "not enough memory");
    for (char **e = environ; *e; e++)
      if (!overridden(L, 3, *e) &&
          (a->env[a->nenv++] = strdup(*e)) == NULL)
        return luaL_error(L, "not enough memory");
    lua_pushnil(L);
    while (lua_next(L, 3)) { /* stack: ... key value */
      if (lua_type(L, -1) == LUA_TSTRING) {
        const char *k = lua_tostring(L, -2), *v = lua_tostring(L, -1);
        size_t len = strlen(k) + strlen(v) + 2;
        if ((a->env[a->nenv] = malloc(len)) == NULL)
          return luaL_error(L, "not enough memory");
        snprintf(a->env[a->nenv++], len, "%s=%s", k, v);
      }
      lua_pop(L, 1);
    }
  }
  exec_op *op = calloc(1, sizeof *op);
  if (op == NULL) return luaL_error(L, "not enough memory");
  op->base.cancel = exec_cancel;
  op->timeout = timeout;
  flyte_exec_opts opts = {(const char *const *)a->argv,
                          (const char *const *)a->env,
                          cwd,
                          in,
                          in_len,
                          EXEC_MAX_OUTPUT,
                          timeout};
  char err[512];
  op->proc = flyte_exec_start(t->s->loop, &opts, exec_done, op, err,
                              sizeof err);
  if (op->proc == NULL) {
    free(op);
    luaL_pushfail(L);
    lua_pushstring(L, err);
    return 2;
  }
  return wait_on(L, t, &op->base, exec_k);
}

/* -- spawn and wait -- */

static int handle_gc(lua_State *L) {
  task_handle *h = luaL_checkudata(L, 1, TASK_MT);
  if (h->t) h->t->handle = NULL;
  h->t = NULL;
  return 0;
}

/* spawn(fn, ...) -> task: runs fn(...) alongside, within the action. */
static int core_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  flyte_sched *s = sched_of(L);
  flyte_task *t = s ? s->current : NULL;
  if (t == NULL)
    return luaL_error(L, "flyte.spawn: only inside a handler, observe or a "
                         "health check (in specs, flyte.testing's invoke "
                         "runs handlers as the host does)");
  if (t->root->killing || t->root->state == T_DONE)
    return luaL_error(L, "flyte.spawn: the action is ending");
  int nargs = lua_gettop(L) - 1;
  task_handle *h = lua_newuserdatauv(L, sizeof *h, 0);
  h->t = NULL;
  luaL_setmetatable(L, TASK_MT);
  lua_insert(L, 1); /* stack: handle fn args... */
  flyte_task *k = calloc(1, sizeof *k);
  if (k == NULL) return luaL_error(L, "not enough memory");
  k->s = s;
  k->owner = t->owner;
  k->ref = LUA_NOREF;
  k->root = t->root;
  k->started = now();
  /* fn and args go to the new coroutine; an error here frees k */
  lua_pushcfunction(L, create_in_lua);
  lua_pushlightuserdata(L, k);
  lua_rotate(L, 2, 2); /* stack: handle create k fn args... */
  if (lua_pcall(L, nargs + 2, 0, 0) != LUA_OK) {
    free(k);
    return lua_error(L);
  }
  k->nargs = nargs;
  k->sib = t->root->kids;
  t->root->kids = k;
  k->handle = h;
  h->t = k;
  s->ntasks++;
  enqueue(k);
  return 1; /* the handle */
}

typedef struct {
  flyte_op base;
  flyte_task *kid;
} wait_op;

static void wait_cancel(flyte_op *base) {
  wait_op *op = (wait_op *)base;
  if (op->kid && op->kid->waiter == base->task) op->kid->waiter = NULL;
  free(op);
}

/* Pushes true and a done task's results, or false and its error. */
static int push_outcome(lua_State *L, flyte_task *k) {
  if (k->status != FLYTE_CALL_OK) {
    lua_pushboolean(L, 0);
    lua_pushstring(L, k->error ? k->error : "the task failed");
    return 2;
  }
  int n = k->nres;
  luaL_checkstack(L, n + 1, "too many results");
  lua_pushboolean(L, 1);
  int top = lua_gettop(k->L);
  for (int i = top - n + 1; i <= top; i++) { /* copies: wait twice is fine */
    lua_pushvalue(k->L, i);
    lua_xmove(k->L, L, 1);
  }
  return n + 1;
}

static int wait_k(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  wait_op *op = (wait_op *)resumed_op(L, ctx);
  unown(L);
  flyte_task *k = op->kid;
  done_with(&op->base);
  op->kid = NULL;
  free(op);
  return push_outcome(L, k);
}

/* task_wait(task) -> true, results... | false, err */
static int core_task_wait(lua_State *L) {
  task_handle *h = luaL_checkudata(L, 1, TASK_MT);
  flyte_task *k = h->t;
  if (k == NULL) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "the task ended with the action that spawned it");
    return 2;
  }
  flyte_sched *s = sched_of(L);
  flyte_task *t = s ? s->current : NULL;
  if (t == NULL || t->root != k->root)
    return luaL_error(L, "task:wait(): only the action that spawned the "
                         "task may wait for it");
  if (t == k) return luaL_error(L, "task:wait(): a task cannot wait for "
                                   "itself");
  if (k->state == T_DONE) return push_outcome(L, k);
  waiting_task(L, "task:wait()");
  if (k->waiter)
    return luaL_error(L, "task:wait(): another task waits for it already");
  wait_op *op = calloc(1, sizeof *op);
  if (op == NULL) return luaL_error(L, "not enough memory");
  op->base.cancel = wait_cancel;
  op->kid = k;
  k->waiter = t;
  return wait_on(L, t, &op->base, wait_k);
}

/* arm(co): pack code's coroutine gets the deadline hook (coroutines made
 * outside a task, at a pack's top level, inherit none). */
static int core_arm(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  if (lua_gethook(co) != hook) lua_sethook(co, hook, LUA_MASKCOUNT, HOOK_COUNT);
  return 0;
}

/* cancel_wait(co): co is being closed, or left where it cannot wait:
 * what it waits on for the running task is cancelled. */
static int core_cancel_wait(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  luaL_argcheck(L, co != NULL, 1, "coroutine expected");
  flyte_sched *s = sched_of(L);
  flyte_task *t = s ? s->current : NULL;
  if (t && t->op && t->op->L == co) drop_op(t);
  return 0;
}

/* run(timeout, fn, ...) -> true, results... | false, why, message
 * Runs fn(...) as a task until it ends, with the host's rules (a deadline
 * when timeout > 0); why: "error", "timeout" or "memory". For flyte.testing
 * and any code outside a task. */
static int core_run(lua_State *L) {
  double timeout = luaL_optnumber(L, 1, 0);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  flyte_sched *s = sched_of(L);
  if (s && s->current)
    return luaL_error(L, "flyte.core.run: already inside a task");
  /* a worker's own loop (a finalizer between actions, say): running it
   * from here would run its callbacks inside whatever code of the worker
   * collected the garbage */
  if (s && !s->blocking_ok)
    return luaL_error(L, "flyte.core.run cannot run here: it was called "
                         "outside any action (a finalizer, or code run "
                         "between actions)");
  lua_remove(L, 1);
  char err[2048];
  flyte_call_status st =
      flyte_task_call(L, lua_gettop(L) - 1, LUA_MULTRET, timeout, err,
                      sizeof err);
  if (st == FLYTE_CALL_OK) {
    luaL_checkstack(L, 1, "too many results");
    lua_pushboolean(L, 1);
    lua_insert(L, 1);
    return lua_gettop(L);
  }
  lua_pushboolean(L, 0);
  lua_pushstring(L, st == FLYTE_CALL_TIMEOUT  ? "timeout"
                    : st == FLYTE_CALL_MEMORY ? "memory"
                                              : "error");
  lua_pushstring(L, err);
  return 3;
}

void flyte_task_openlib(lua_State *L) {
  static const luaL_Reg funcs[] = {{"run", core_run},
                                   {"arm", core_arm},
                                   {"owned", core_owned},
                                   {"cancel_wait", core_cancel_wait},
                                   {"sleep", core_sleep},
                                   {"http_request", core_http_request},
                                   {"exec", core_exec},
                                   {"spawn", core_spawn},
                                   {"task_wait", core_task_wait},
                                   {NULL, NULL}};
  luaL_setfuncs(L, funcs, 0);
  lua_pushlightuserdata(L, (void *)&yield_sentinel);
  lua_setfield(L, -2, "YIELD");
  if (luaL_newmetatable(L, TASK_MT)) {
    lua_pushcfunction(L, handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, core_task_wait);
    lua_setfield(L, -2, "wait");
    lua_setfield(L, -2, "__index");
    lua_pushliteral(L, "flyte.task");
    lua_setfield(L, -2, "__name");
  }
  lua_pop(L, 1);
}
