/* reload.c - hot reload: watch the pack's files, reload on change or SIGHUP.
 *
 * A reload builds the new code in a fresh state and checks it before
 * anything switches. A failure leaves the running code serving and is
 * logged and shown in health; a success makes a new generation: workers
 * pick it up before their next action, observe restarts with it, and the
 * pack registers again first when its registration changed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "host.h"
#include "log.h"
#include "metrics.h"
#include "watch.h"

#define DEBOUNCE 0.1 /* seconds of quiet after the last write */

/* Watches the files the generation was loaded from. */
static void set_files(flyte_host *h, const flyte_gen *g) {
  char err[512];
  if (h->watch == NULL || !h->cfg->reload) return;
  if (flyte_watch_set(h->watch, g->sources.paths, g->sources.n, err,
                      sizeof err))
    flyte_warn("cannot watch the pack's files: %s", err);
  else
    flyte_debug("watching %zu file(s) for changes", g->sources.n);
}

static flyte_reload_fn listener;
static void *listener_ud;
static char serving[40]; /* when the code that serves was loaded */

void flyte_host_on_reload(flyte_reload_fn fn, void *ud) {
  listener = fn;
  listener_ud = ud;
  flyte_time_rfc3339(serving, sizeof serving, 3); /* the code of the start */
  if (fn) fn(ud, 1, NULL, NULL, serving);
}

/* file: the file whose change set it off, or NULL for SIGHUP */
static void reload(flyte_host *h, const char *file) {
  char err[1024], why[600];
  if (file)
    snprintf(why, sizeof why, "%s changed", file);
  else
    snprintf(why, sizeof why, "SIGHUP");
  double t0 = flyte_monotime();
  flyte_pack *pack;
  flyte_gen *g = flyte_host_new_gen(h, &pack, err, sizeof err);
  if (g == NULL) {
    char when[40];
    flyte_time_rfc3339(when, sizeof when, 3);
    flyte_error("reload of %s failed, the code loaded before goes on "
                "serving: %s",
                h->pack_path, err);
    flyte_metrics_reload(h->metrics, 0);
    pthread_mutex_lock(&h->mu);
    snprintf(h->reload_error, sizeof h->reload_error, "%s", err);
    snprintf(h->reload_file, sizeof h->reload_file, "%s",
             file ? file : h->pack_path);
    snprintf(h->reload_at, sizeof h->reload_at, "%s", when);
    pthread_mutex_unlock(&h->mu);
    if (listener) listener(listener_ud, 0, err, when, serving);
    return;
  }
  flyte_metrics_reload(h->metrics, 1);
  char when[40];
  flyte_time_rfc3339(when, sizeof when, 3);
  pthread_mutex_lock(&h->mu);
  snprintf(h->reload_at, sizeof h->reload_at, "%s", when);
  int changed = strcmp(g->info.registration, h->gen->info.registration) != 0;
  g->next = h->gens;
  h->gens = g;
  h->gen = g;
  h->reload_error[0] = '\0';
  if (changed && h->registered) {
    /* register the new definition before taking another action */
    h->registered = 0;
    h->need_register = 1;
  }
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
  flyte_host_wake_workers(h);
  snprintf(serving, sizeof serving, "%s", when);
  if (listener) listener(listener_ud, 1, NULL, when, serving);

  pthread_mutex_lock(&h->health_mu);
  flyte_pack *old = h->health_pack;
  h->health_pack = pack;
  pthread_mutex_unlock(&h->health_mu);
  flyte_pack_close(old);
  set_files(h, g);
  if (g->info.ncommands > 0 && flyte_host_start_workers(h) != 0)
    flyte_error("cannot start workers for the reloaded pack");
  flyte_info("reloaded %s (%s) in %.1f ms%s", h->pack_path, why,
             (flyte_monotime() - t0) * 1000,
             changed ? "; the registration changed: registering again"
                     : "; registration unchanged");
}

static void *reloader_main(void *arg) {
  flyte_host *h = arg;
  double due = 0; /* when a pending reload runs; 0: none */
  char which[512] = "";
  for (;;) {
    double timeout = -1;
    if (due > 0) {
      timeout = due - flyte_monotime();
      if (timeout < 0) timeout = 0;
    }
    const char *changed = NULL;
    int got = flyte_watch_wait(h->watch, timeout, &changed);
    if (atomic_load(&h->stopping)) break;
    if (got) {
      snprintf(which, sizeof which, "%s", changed);
      due = flyte_monotime() + DEBOUNCE; /* a burst of writes: wait */
    }
    pthread_mutex_lock(&h->mu);
    int hup = h->reload_requested;
    h->reload_requested = 0;
    pthread_mutex_unlock(&h->mu);
    if (hup) {
      reload(h, NULL);
      due = 0;
    } else if (due > 0 && flyte_monotime() >= due) {
      reload(h, which);
      due = 0;
    }
  }
  return NULL;
}

int flyte_reload_start(flyte_host *h) {
  char err[256];
  h->watch = flyte_watch_new(err, sizeof err);
  if (h->watch == NULL) {
    flyte_warn("%s", err);
    return -1;
  }
  set_files(h, flyte_host_gen(h));
  if (pthread_create(&h->reloader, NULL, reloader_main, h) != 0) {
    flyte_watch_free(h->watch);
    h->watch = NULL;
    return -1;
  }
  h->reloader_running = 1;
  return 0;
}

void flyte_reload_request(flyte_host *h) {
  pthread_mutex_lock(&h->mu);
  h->reload_requested = 1;
  pthread_mutex_unlock(&h->mu);
  if (h->watch) flyte_watch_wake(h->watch);
}

int flyte_reload_stop(flyte_host *h) {
  if (!h->reloader_running) return 1;
  flyte_watch_wake(h->watch);
  if (!flyte_host_join_in_grace(h, h->reloader, 1))
    return 0; /* it still uses the watch: both stay */
  h->reloader_running = 0;
  flyte_watch_free(h->watch);
  h->watch = NULL;
  return 1;
}
