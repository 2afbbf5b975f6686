/* worker.h - a worker thread: an event loop, Lua states, many actions.
 *
 * A worker takes actions from the flyte-api on its own loop, runs each as
 * a coroutine of its current Lua state, and posts each result with retries
 * on the same loop. It takes another action only when nothing on it is
 * ready to run and the host holds fewer than FLYTE_CONCURRENCY actions.
 */
#ifndef FLYTE_WORKER_H
#define FLYTE_WORKER_H

struct flyte_host;
typedef struct flyte_worker flyte_worker;

/* Starts worker number `index` (from 1, for logs). NULL on failure. */
flyte_worker *flyte_worker_start(struct flyte_host *h, int index);

/* Makes the worker look at the host's state again (any thread): a new
 * registration, a reload, polling news, stopping. */
void flyte_worker_wake(flyte_worker *w);

/* From any thread: handlers still running at `deadline` end with a FATAL
 * (the end of the shutdown grace period). */
void flyte_worker_stop_at(flyte_worker *w, double deadline);

/* From any thread: the worker posts `body` to `url` with its retries, and
 * ends outbox entry `entry` once the flyte-api has it: what a host that
 * died left undelivered, posted alongside new actions rather than one at
 * a time before them. `what` names it in the log; maybe_sent as for
 * flyte_deliver. Copies what it needs; 0, or -1 when out of memory. */
int flyte_worker_adopt(flyte_worker *w, const char *url, const char *body,
                       long entry, const char *what, int maybe_sent);

/* Actions the worker holds (running or being delivered). */
int flyte_worker_actions(flyte_worker *w);

/* Waits until the worker has ended or the monotonic deadline passes;
 * returns 1 when it ended (and is freed with flyte_worker_free). */
int flyte_worker_join(flyte_worker *w, double deadline);

/* For a worker that did not end (stuck in C code of the pack): completes
 * each of its actions it has not yet delivered with a FATAL naming
 * `why`, from the calling thread. */
void flyte_worker_complete_stuck(flyte_worker *w, const char *why);

/* The watchdog (main thread): whether w has run the same task for more
 * than `margin` seconds past that task's deadline, stuck where the hook
 * cannot reach (C code of the pack, a finalizer). Then w is marked stuck
 * (once) and this returns 1: call flyte_worker_replace. */
int flyte_worker_check_stuck(flyte_worker *w, double now, double margin);

/* Not marked stuck: it takes and runs actions. */
int flyte_worker_serving(flyte_worker *w);
/* Serving and not ended: work may be handed to it. */
int flyte_worker_alive(flyte_worker *w);
int flyte_worker_ended(flyte_worker *w);

/* Marked stuck and not yet ended. */
int flyte_worker_is_stuck(flyte_worker *w);

/* Hands over every action of stuck worker w: a result it was delivering
 * goes out as it is, the others as a FATAL saying why, all posted by
 * worker `to` (or from this thread when `to` is NULL). If w ever comes
 * back, it drops what it held and ends. */
void flyte_worker_replace(flyte_worker *w, flyte_worker *to);

void flyte_worker_free(flyte_worker *w);

#endif
