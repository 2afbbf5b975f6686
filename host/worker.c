/* worker.c - a worker: take an action, run its handler, deliver the result.
 *
 * Each worker owns a Lua state with the pack and an HTTP client, and takes
 * actions itself only when it is free, so no action waits on the server's
 * side of a busy host. While actions keep coming every free worker takes at
 * once; when the queue is empty one worker (the leader) polls again after
 * the poll interval and the others wait until it finds work.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"

/* Waits until this worker should take; returns a copy of the take URL
 * (caller frees), or NULL when the host is stopping. *leading is set when
 * this worker polls for the idle pool: it stays the leader, so no other
 * worker polls, until after_take has the answer. */
static char *wait_turn(flyte_host *h, int *leading) {
  char *url = NULL;
  *leading = 0;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    if (atomic_load(&h->stopping)) break;
    if (!h->registered || h->gen->info.ncommands == 0) {
      flyte_host_wait(h, 0);
      continue;
    }
    if (h->hot) {
      url = strdup(h->api_pack.take_url);
      break;
    }
    if (h->leader) {
      flyte_host_wait(h, 0);
      continue;
    }
    h->leader = 1;
    while (!atomic_load(&h->stopping) && h->registered && !h->hot &&
           h->gen->info.ncommands > 0 && flyte_monotime() < h->next_poll)
      flyte_host_wait(h, h->next_poll);
    if (!atomic_load(&h->stopping) && h->registered &&
        h->gen->info.ncommands > 0) {
      url = strdup(h->api_pack.take_url);
      *leading = 1;
      break;
    }
    h->leader = 0;
    pthread_cond_broadcast(&h->cond);
  }
  pthread_mutex_unlock(&h->mu);
  return url;
}

#define DENIED_BACKOFF_CAP 60.0

static void after_take(flyte_host *h, flyte_take_result r, const char *err,
                       int leading) {
  pthread_mutex_lock(&h->mu);
  double wait = h->cfg->poll_interval;
  if (leading) {
    h->leader = 0; /* the answer is in: another worker may lead */
    pthread_cond_broadcast(&h->cond);
  }
  switch (r) {
  case FLYTE_TAKE_ACTION:
    h->denied = 0;
    clock_gettime(CLOCK_REALTIME, &h->last_poll);
    if (!h->hot) {
      h->hot = 1;
      pthread_cond_broadcast(&h->cond); /* more may be waiting: all take */
    }
    pthread_mutex_unlock(&h->mu);
    return;
  case FLYTE_TAKE_NONE:
    h->denied = 0;
    clock_gettime(CLOCK_REALTIME, &h->last_poll);
    break;
  case FLYTE_TAKE_UNKNOWN_PACK:
    if (h->registered) {
      flyte_warn("the flyte-api does not know this pack any more (%s); "
                 "registering again",
                 err);
      h->registered = 0;
      h->need_register = 1;
    }
    break;
  case FLYTE_TAKE_DENIED:
    /* one line when it starts, then back off: never a hot loop */
    if (h->denied++ == 0)
      flyte_error("%s; %s. Backing off (up to %g s between tries)", err,
                  flyte_host_denied_hint(h), DENIED_BACKOFF_CAP);
    for (int i = 1; i < h->denied && wait < DENIED_BACKOFF_CAP; i++) wait *= 2;
    if (wait > DENIED_BACKOFF_CAP) wait = DENIED_BACKOFF_CAP;
    snprintf(h->last_error, sizeof h->last_error, "%.500s", err);
    break;
  case FLYTE_TAKE_ERROR:
    if (!atomic_load(&h->stopping)) {
      flyte_warn("taking an action failed: %s; polling again in %g s", err,
                 wait);
      snprintf(h->last_error, sizeof h->last_error, "%.500s", err);
    }
    break;
  }
  h->hot = 0;
  h->next_poll = flyte_monotime() + wait;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
}

/* Makes *pack run the current generation's code; keeps the old state when
 * the new one cannot be built (the file changed again under us). */
static void catch_up(flyte_host *h, flyte_gen **mine, flyte_pack **pack,
                     int force) {
  flyte_gen *g = flyte_host_gen(h);
  if (g == *mine && !force) return;
  char err[1024];
  flyte_pack *fresh = flyte_pack_open(h->pack_path, &g->env,
                                      h->cfg->memory_limit, &g->sources,
                                      err, sizeof err);
  if (fresh == NULL) {
    flyte_error("cannot build a Lua state for the pack: %s", err);
    return;
  }
  flyte_pack_close(*pack);
  *pack = fresh;
  *mine = g;
}

/* Marks the worker as running `a`; the main thread may complete it with a
 * FATAL if the handler is still running at the end of the grace period. */
static void slot_take(flyte_worker *w, const flyte_action *a, long entry) {
  flyte_host *h = w->host;
  pthread_mutex_lock(&h->mu);
  w->entry = entry;
  w->result_url = a->result_url;
  w->command = a->command;
  w->action = a->id;
  atomic_store(&w->slot, SLOT_RUNNING);
  pthread_mutex_unlock(&h->mu);
}

/* Returns 1 when this worker still owns the action's result. */
static int slot_release(flyte_worker *w) {
  flyte_host *h = w->host;
  int running = SLOT_RUNNING;
  int mine = atomic_compare_exchange_strong(&w->slot, &running, SLOT_IDLE);
  pthread_mutex_lock(&h->mu);
  w->result_url = w->command = w->action = NULL;
  pthread_mutex_unlock(&h->mu);
  return mine;
}

static void handle(flyte_worker *w, flyte_gen **mine, flyte_pack **pack,
                   flyte_http *http, flyte_action *a) {
  flyte_host *h = w->host;
  flyte_pack_result res;
  catch_up(h, mine, pack, 0); /* a reload since: run the new code */
  flyte_log_field took[] = {{"action", a->id}, {"command", a->command},
                            {NULL, NULL}};
  flyte_log_with(FLYTE_LOG_DEBUG, took, 0, "action %s: took it; running '%s'",
                 a->id, a->command);
  char err[512];
  long entry = -1;
  if (h->outbox) {
    /* on disk before the handler runs: a crash from here on still ends
     * with a result for this action */
    entry = flyte_outbox_taken(h->outbox, a->result_url, a->command, a->id,
                               err, sizeof err);
    if (entry < 0) flyte_error("outbox: %s", err);
  }
  slot_take(w, a, entry);
  flyte_metrics_action_taken(h->metrics);
  flyte_metrics_in_flight(h->metrics, a->command, 1);
  flyte_pack_run(*pack, a->id, a->command, a->input, a->input_error,
                 h->cfg->handler_timeout, &res);
  flyte_metrics_in_flight(h->metrics, a->command, -1);
  if (!slot_release(w)) {
    flyte_warn("action %s (%s) finished after the host posted its FATAL; "
               "its result is dropped", a->id, a->command);
    flyte_metrics_action_done(h->metrics, a->command, "abandoned",
                              res.seconds);
    free(res.body);
    return;
  }
  char what[160];
  snprintf(what, sizeof what, "result of action %s (%s)", a->id, a->command);
  if (res.body == NULL) {
    flyte_error("action %s: out of memory building its result", a->id);
  } else {
    size_t len = strlen(res.body);
    if (entry > 0 &&
        flyte_outbox_result(h->outbox, entry, a->result_url, a->command, a->id,
                            res.body, len, err, sizeof err) != 0)
      flyte_error("outbox: %s", err);
    flyte_delivery d = flyte_deliver(h, http, "result", a->result_url,
                                     res.body, len, what, 0);
    if (entry > 0 && d != FLYTE_ABANDONED) flyte_outbox_done(h->outbox, entry);
    flyte_metrics_action_done(h->metrics, a->command,
                              d == FLYTE_ABANDONED ? "abandoned" : res.outcome,
                              res.seconds);
    if (d == FLYTE_DELIVERED &&
        flyte_log_enabled(res.fatal ? FLYTE_LOG_WARN : FLYTE_LOG_INFO)) {
      char ms[32];
      snprintf(ms, sizeof ms, "%.3f", res.seconds * 1000);
      flyte_log_field fields[] = {{"action", a->id},    {"command", a->command},
                                  {"event", res.event}, {"duration_ms", ms},
                                  {"outcome", res.outcome}, {NULL, NULL}};
      flyte_log_with(res.fatal ? FLYTE_LOG_WARN : FLYTE_LOG_INFO, fields, 0,
                     "action %s: %s -> %s (%.1f ms)", a->id, a->command,
                     res.event, res.seconds * 1000);
    }
  }
  free(res.body);
  /* After a timeout or running out of memory the state may hold broken
   * invariants: start afresh. */
  if (res.state_broken) catch_up(h, mine, pack, 1);
}

/* Builds the worker's first state. The pack file may be mid-edit (it
 * loaded fine a moment ago): keep trying, with the current code, until it
 * loads or the host stops. */
static flyte_pack *first_state(flyte_host *h, flyte_gen **mine) {
  char err[1024];
  double wait = 0.1;
  while (!atomic_load(&h->stopping)) {
    *mine = flyte_host_gen(h);
    flyte_pack *p = flyte_pack_open(h->pack_path, &(*mine)->env,
                                    h->cfg->memory_limit,
                                    &(*mine)->sources, err, sizeof err);
    if (p) return p;
    flyte_error("worker cannot load the pack (trying again in %g s): %s",
                wait, err);
    flyte_host_sleep(h, wait);
    wait = wait * 2 > 5 ? 5 : wait * 2;
  }
  return NULL;
}

void *flyte_worker_main(void *arg) {
  flyte_worker *w = arg;
  flyte_host *h = w->host;
  char err[1024];
  flyte_http_opts opts = flyte_host_http_opts(h);
  flyte_http *http = flyte_http_new(&opts);
  flyte_gen *mine = NULL;
  flyte_pack *pack = http ? first_state(h, &mine) : NULL;
  if (http == NULL || pack == NULL) goto cleanup;
  char *url;
  int leading;
  while ((url = wait_turn(h, &leading)) != NULL) {
    flyte_action a;
    flyte_take_result r = flyte_api_take(http, url, &a, err, sizeof err);
    free(url);
    after_take(h, r, err, leading);
    if (r == FLYTE_TAKE_ACTION) {
      handle(w, &mine, &pack, http, &a);
      flyte_action_free(&a);
    }
  }
cleanup:
  flyte_pack_close(pack);
  flyte_http_free(http);
  return NULL;
}
