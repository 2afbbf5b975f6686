/* task.h - pack code as coroutines on an event loop.
 *
 * A scheduler runs tasks: coroutines of Lua states, one for each action
 * and one for each flyte.spawn. A task that waits (flyte.sleep,
 * flyte.http.request, flyte.exec, task:wait) starts its operation on the
 * loop and yields; when the operation completes the task is ready again
 * and the scheduler resumes it. One scheduler per thread that runs pack
 * code; a state is attached to one scheduler at a time.
 *
 * Deadlines have two guards: a loop timer kills a task that waits too long
 * (its operation cancelled, its coroutine closed), and a count hook makes a
 * task that computes too long yield from wherever it is, even inside pack
 * code's pcall (concurrency.md, point 6).
 */
#ifndef FLYTE_TASK_H
#define FLYTE_TASK_H

#include <lua.h>
#include <stddef.h>

#include "loop.h"
#include "state.h"

typedef struct flyte_sched flyte_sched;
typedef struct flyte_task flyte_task;

/* `loop` is borrowed and outlives the scheduler. NULL when out of memory. */
flyte_sched *flyte_sched_new(flyte_loop *loop);
/* Every task must have ended (or been freed) first. */
void flyte_sched_free(flyte_sched *s);
flyte_loop *flyte_sched_loop(flyte_sched *s);

/* From any thread: a task still computing at `deadline` (monotonic) ends
 * with FLYTE_CALL_STOPPED, even when the loop cannot run (the hook sees
 * it). The end of the shutdown grace period. */
void flyte_sched_stop_at(flyte_sched *s, double deadline);

/* From any thread: the deadline (monotonic) of the task s is running
 * now, and that task's root in *root; 0 when s runs none or it has no
 * deadline. A thread still in the same run well past this deadline is
 * stuck where the hook cannot reach: in C code of the pack (a pattern
 * match) or in a finalizer. */
double flyte_sched_busy(flyte_sched *s, const flyte_task **root);

/* Work of the host's own in a Lua state that may run pack code it cannot
 * interrupt (a full collection runs __gc finalizers; so does closing a
 * state): for `seconds` from now the watchdog sees the thread busy, with
 * no task. Returns the guard it replaces, for flyte_sched_unguard (guards
 * nest). Not inside a task's run. */
double flyte_sched_guard(flyte_sched *s, double seconds);
void flyte_sched_unguard(flyte_sched *s, double previous);

/* Waiting functions called by L's tasks use s from now on. 0, or -1 when
 * out of memory. */
int flyte_sched_attach(flyte_sched *s, lua_State *L);

/* Resumes every ready task until none is; returns how many resumes ran. */
int flyte_sched_run(flyte_sched *s);
int flyte_sched_has_ready(const flyte_sched *s);
/* Tasks alive (running, ready or waiting), spawned ones included. */
int flyte_sched_tasks(const flyte_sched *s);

/* Ends every pending flyte.sleep of this scheduler whose state's
 * environment says sleeping may not go on (the host is stopping, or, for
 * observe, the pack reloaded): it returns false. Call on the loop's thread
 * after a wake. */
void flyte_sched_interrupt_sleeps(flyte_sched *s);

/* Runs when a root task has ended; read its outcome, then free it. */
typedef void (*flyte_task_done)(flyte_task *t, void *ud);

/* Starts the function below nargs arguments on L's stack as a root task
 * of s, ready to run. stack: [fn, args...] -> [].
 * deadline: monotonic seconds, 0 for none. label: the action's id for log
 * lines (borrowed until the task is freed), or NULL.
 * Returns the task, or NULL with a message (out of memory). */
flyte_task *flyte_task_start(flyte_sched *s, lua_State *L, int nargs,
                             double deadline, const char *label,
                             flyte_task_done done, void *ud, char *err,
                             size_t errlen);

/* Moves a root task's deadline (sooner or later); `why` is the status it
 * ends with when the deadline passes (FLYTE_CALL_TIMEOUT, or
 * FLYTE_CALL_STOPPED for the end of the shutdown grace period). */
void flyte_task_set_deadline(flyte_task *t, double deadline,
                             flyte_call_status why);

/* Kills a root task now, with everything it spawned (not while it runs:
 * from a loop callback): its done runs with status `why`. */
void flyte_task_kill(flyte_task *t, flyte_call_status why);

/* After done: how the task ended. On FLYTE_CALL_OK its results are on top
 * of flyte_task_thread(t) (flyte_task_nresults of them); otherwise
 * flyte_task_error says why. */
flyte_call_status flyte_task_status(const flyte_task *t);
lua_State *flyte_task_thread(const flyte_task *t);
int flyte_task_nresults(const flyte_task *t);
const char *flyte_task_error(const flyte_task *t);
/* The task was stopped in the middle of computing (by the hook): module
 * state of its Lua state may be half-updated. */
int flyte_task_interrupted(const flyte_task *t);
/* Seconds from start to end. */
double flyte_task_seconds(const flyte_task *t);
void flyte_task_free(flyte_task *t);

/* Calls the function below nargs arguments as a task and runs the loop
 * until it ends: the protected call for pack code outside a worker
 * (health checks, observe, invoke, busted). Uses the state's attached
 * scheduler, or a private one made on first use. timeout: seconds, 0 for
 * none. stack: [fn, args...] -> [results...] (nresults, or all with
 * LUA_MULTRET) on success, [] on failure with the error in err. */
flyte_call_status flyte_task_call(lua_State *L, int nargs, int nresults,
                                  double timeout, char *err, size_t errlen);

/* The action id of the task running in L, or NULL. */
const char *flyte_task_label(lua_State *L);

/* Adds the waiting functions to the table on top of the stack:
 * sleep, http_request, exec, spawn, task_wait, YIELD. */
void flyte_task_openlib(lua_State *L);

#endif
