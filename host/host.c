/* host.c - `flyte-host run`: the running host.
 *
 * Loads and checks the pack, serves health, finds and registers with the
 * flyte-api (retrying with capped backoff), starts the workers, the observe
 * thread and the event sender, and stops them all cleanly on SIGINT or
 * SIGTERM. Signals are taken by one thread with sigwait.
 */
#define _GNU_SOURCE /* pthread_timedjoin_np */
#include "host.h"

#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "task.h"
#include "watch.h"
#include "worker.h"

#define EVENT_QUEUE_CAPACITY 10000
#define HEALTH_CHECK_TIMEOUT 5.0
#define FINAL_DELIVERY 5.0 /* seconds to post results after the grace */
#define CONNECT_BACKOFF_FIRST 0.5
#define CONNECT_BACKOFF_CAP 30.0
#define OBSERVE_RESTART_CAP 60.0
/* The watchdog: a worker still in one run this long past the run's
 * deadline is stuck where the hook cannot reach; it looks this often
 * while actions are held (and seldom when none are). */
#define STUCK_AFTER 1.0
#define WATCH_BUSY 0.5
#define WATCH_IDLE 5.0
/* Seconds the end of a run may spend closing the pack's Lua states, whose
 * finalizers Lua runs with hooks off */
#define CLOSE_BOUND 5

flyte_http_opts flyte_host_http_opts(flyte_host *h) {
  flyte_http_opts o = {h->cfg->jwt, h->cfg->insecure,
                       (long)(h->cfg->api_timeout * 1000), 8u << 20,
                       &h->cancel};
  return o;
}

void flyte_host_wait(flyte_host *h, double deadline) {
  if (deadline <= 0) {
    pthread_cond_wait(&h->cond, &h->mu);
    return;
  }
  struct timespec ts;
  ts.tv_sec = (time_t)deadline;
  ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
  pthread_cond_timedwait(&h->cond, &h->mu, &ts);
}

int flyte_host_sleep(flyte_host *h, double seconds) {
  double until = flyte_monotime() + seconds;
  pthread_mutex_lock(&h->mu);
  while (!atomic_load(&h->stopping) && flyte_monotime() < until)
    flyte_host_wait(h, until);
  int slept = !atomic_load(&h->stopping);
  pthread_mutex_unlock(&h->mu);
  return slept;
}

/* ---- what pack code reaches ------------------------------------------ */

static int env_send_event(void *ctx, const char *json, size_t len, char *err,
                          size_t errlen) {
  flyte_gen *g = ctx;
  return flyte_events_push(g->host, json, len, err, errlen);
}

/* flyte.sleep goes on while the host runs; in observe, also while the
 * code is not reloaded. */
static int env_sleep_ok(void *ctx) {
  flyte_gen *g = ctx;
  return !atomic_load(&g->host->stopping);
}

static int env_observe_sleep_ok(void *ctx) {
  flyte_gen *g = ctx;
  flyte_host *h = g->host;
  pthread_mutex_lock(&h->mu);
  int ok = !atomic_load(&h->stopping) && h->gen == g;
  pthread_mutex_unlock(&h->mu);
  return ok;
}

void flyte_host_wake_workers(flyte_host *h) {
  int n = atomic_load(&h->nworkers);
  pthread_mutex_lock(&h->mu);
  double stop_at = atomic_load(&h->stopping) ? h->stop_deadline : 0;
  if (h->observe_loop) flyte_loop_wake(h->observe_loop);
  pthread_mutex_unlock(&h->mu);
  for (int i = 0; i < n; i++) {
    /* a handler that computes keeps its loop from running: its hook
     * watches this deadline */
    if (stop_at > 0) flyte_worker_stop_at(h->workers[i], stop_at);
    flyte_worker_wake(h->workers[i]);
  }
}

void flyte_worker_note_lag(flyte_host *h, double seconds) {
  long us = (long)(seconds * 1e6);
  long seen = atomic_load(&h->lag_us);
  while (us > seen && !atomic_compare_exchange_weak(&h->lag_us, &seen, us)) {
  }
}

static int env_stopping(void *ctx) {
  flyte_gen *g = ctx;
  return atomic_load(&g->host->stopping);
}

static int env_api_health(void *ctx, char *status, size_t n) {
  flyte_gen *g = ctx;
  flyte_host *h = g->host;
  char *url = NULL;
  pthread_mutex_lock(&h->mu);
  if (h->root.health_url) url = strdup(h->root.health_url);
  else
    snprintf(status, n, "not connected to the flyte-api yet%s%s",
             h->last_error[0] ? ": " : "", h->last_error);
  pthread_mutex_unlock(&h->mu);
  if (url == NULL) return 0;
  pthread_mutex_lock(&h->aux_mu);
  int up = flyte_api_health(h->aux_http, url, status, n);
  pthread_mutex_unlock(&h->aux_mu);
  free(url);
  return up;
}

/* ---- health ------------------------------------------------------------ */

/* Adds what the host itself knows to the health JSON: "Registration"
 * while the pack is not registered (with the last API error), and
 * "PackReload" while the last reload failed. Both stay healthy: the API
 * being down, or a broken file on disk while the loaded code serves, is not
 * fixed by an orchestrator restarting the pack. */
static char *with_host_status(flyte_host *h, char *body) {
  json_t *registration = NULL, *reload = NULL;
  pthread_mutex_lock(&h->mu);
  if (!h->registered) {
    char status[700];
    snprintf(status, sizeof status, "not registered with the flyte-api yet%s%s",
             h->last_error[0] ? ": " : "", h->last_error);
    registration = json_pack("{s:b, s:s}", "healthy", 1, "status", status);
  }
  if (h->reload_error[0])
    reload = json_pack("{s:b, s:{s:s, s:s, s:s, s:s}}", "healthy", 1,
                       "status", "file", h->reload_file, "error",
                       h->reload_error, "at", h->reload_at, "serving",
                       "the code loaded before this reload");
  pthread_mutex_unlock(&h->mu);
  if (registration == NULL && reload == NULL) return body;
  json_t *all = json_loads(body, 0, NULL);
  if (all && registration) json_object_set(all, "Registration", registration);
  if (all && reload) json_object_set(all, "PackReload", reload);
  char *text = all ? json_dumps(all, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(all);
  json_decref(registration);
  json_decref(reload);
  if (text == NULL) return body;
  free(body);
  return text;
}

static char *dump(json_t *j) {
  char *text = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  json_decref(j);
  return text;
}

/* GET /details: what an operator asks about first. */
static char *details(flyte_host *h) {
  json_t *in_flight = json_object();
  flyte_metrics_in_flight_json(h->metrics, in_flight);
  char last_poll[40] = "";
  pthread_mutex_lock(&h->mu);
  if (h->last_poll.tv_sec != 0)
    flyte_time_rfc3339_at(last_poll, sizeof last_poll, 3, &h->last_poll);
  json_t *d = json_pack(
      "{s:b, s:s?, s:s?, s:o, s:{s:s, s:s?, s:s?}, s:b}", "registered",
      h->registered, "last_api_error", h->last_error[0] ? h->last_error : NULL,
      "last_poll", last_poll[0] ? last_poll : NULL, "in_flight",
      in_flight, "last_reload", "outcome",
      h->reload_at[0] ? (h->reload_error[0] ? "failure" : "success") : "none",
      "at", h->reload_at[0] ? h->reload_at : NULL, "error",
      h->reload_error[0] ? h->reload_error : NULL, "stopping",
      atomic_load(&h->stopping));
  pthread_mutex_unlock(&h->mu);
  return dump(d);
}

static char *metrics(flyte_host *h) {
  int n = atomic_load(&h->nworkers);
  flyte_metrics_gauges g = {0};
  for (int i = 0; i < n; i++) {
    if (!flyte_worker_serving(h->workers[i])) continue;
    g.workers_total++;
    g.workers_busy += flyte_worker_actions(h->workers[i]) > 0;
  }
  g.workers_stuck = atomic_load(&h->stuck_workers);
  g.in_flight = atomic_load(&h->in_flight);
  g.concurrency = h->cfg->concurrency;
  g.loop_lag_seconds = (double)atomic_exchange(&h->lag_us, 0) / 1e6;
  if (h->outbox) {
    flyte_outbox_stats st;
    flyte_outbox_stats_get(h->outbox, &st);
    g.outbox = 1;
    g.outbox_records = (unsigned long)st.records;
    g.outbox_syncs = (unsigned long)st.syncs;
    g.outbox_segments = st.segments;
    g.outbox_lost_takes = flyte_outbox_lost_takes(h->outbox);
    g.outbox_write_errors = st.write_errors;
  }
  flyte_events_gauges(h, &g.queue_depth, &g.queue_oldest_seconds);
  return flyte_metrics_render(h->metrics, &g);
}

/* The health server: /metrics, /ready, /live, /details, and the pack's
 * health checks at any other path. */
static char *health_answer(void *ud, const char *path, int *status,
                           const char **type) {
  flyte_host *h = ud;
  int healthy = 0;
  if (strcmp(path, "/metrics") == 0) {
    *status = 200;
    *type = "text/plain; version=0.0.4; charset=utf-8";
    return metrics(h);
  }
  if (strcmp(path, "/ready") == 0) {
    pthread_mutex_lock(&h->mu);
    int ready = h->registered && !atomic_load(&h->stopping);
    const char *why = atomic_load(&h->stopping) ? "stopping"
                      : h->registered          ? NULL
                                               : "not registered yet";
    pthread_mutex_unlock(&h->mu);
    *status = ready ? 200 : 503;
    return dump(json_pack("{s:b, s:s?}", "ready", ready, "reason", why));
  }
  if (strcmp(path, "/live") == 0) {
    /* a thread stuck in pack code burns a CPU for good: with as many of
     * them as workers, only a restart gives the host back; so too when no
     * worker serves any more */
    int stuck = atomic_load(&h->stuck_workers), serving = 0;
    int n = atomic_load(&h->nworkers);
    for (int i = 0; i < n; i++) serving += flyte_worker_alive(h->workers[i]);
    if (n > 0 && serving == 0 && stuck < h->cfg->workers &&
        !atomic_load(&h->stopping)) {
      *status = 503;
      return dump(json_pack("{s:b, s:s}", "live", 0, "reason",
                            "no worker thread serves"));
    }
    if (stuck >= h->cfg->workers) {
      char why[160];
      snprintf(why, sizeof why, "%d worker thread%s stuck in pack code "
               "(FLYTE_WORKERS is %d)", stuck, stuck == 1 ? "" : "s",
               h->cfg->workers);
      *status = 503;
      return dump(json_pack("{s:b, s:s}", "live", 0, "reason", why));
    }
    *status = 200;
    return dump(json_pack("{s:b}", "live", 1));
  }
  if (strcmp(path, "/details") == 0) {
    *status = 200;
    return details(h);
  }
  pthread_mutex_lock(&h->health_mu);
  char *body = flyte_pack_health(h->health_pack, HEALTH_CHECK_TIMEOUT,
                                 &healthy);
  pthread_mutex_unlock(&h->health_mu);
  *status = healthy ? 200 : 500;
  return body ? with_host_status(h, body) : NULL;
}

/* ---- signals ------------------------------------------------------------ */

static void *signal_main(void *arg) {
  flyte_host *h = arg;
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1); /* our own wake-up at the end */
  for (;;) {
    int sig;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGUSR1) {
      if (atomic_load(&h->signals_done)) return NULL;
      continue; /* someone else's: not a reason to stop taking signals */
    }
    if (sig == SIGHUP) {
      flyte_info("SIGHUP: reloading the pack");
      flyte_reload_request(h);
      continue;
    }
    pthread_mutex_lock(&h->mu);
    if (!atomic_load(&h->stopping)) {
      flyte_info("%s: stopping; running handlers may finish (up to %g s)",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", h->cfg->shutdown_grace);
      h->stop_deadline = flyte_monotime() + h->cfg->shutdown_grace;
      atomic_store(&h->stopping, 1);
    } else {
      flyte_warn("second signal: stopping now");
      atomic_store(&h->cancel, 1);
      h->stop_deadline = flyte_monotime();
    }
    pthread_cond_broadcast(&h->cond);
    pthread_mutex_unlock(&h->mu);
    flyte_host_wake_workers(h);
  }
}

/* ---- the API connection -------------------------------------------------- */

const char *flyte_host_denied_hint(const flyte_host *h) {
  return h->cfg->jwt && h->cfg->jwt[0]
             ? "the flyte-api refused FLYTE_JWT: expired, or without the "
               "right for this pack?"
             : "the flyte-api wants a token: set FLYTE_JWT";
}

/* Discovers (once) and registers, retrying with capped backoff until it
 * works or the host stops. Returns 0 when registered. */
static int connect_api(flyte_host *h, flyte_http *http) {
  double wait = CONNECT_BACKOFF_FIRST;
  char err[512];
  for (int attempt = 1;; attempt++) {
    int ok = 0;
    if (h->root.packs_url == NULL) {
      flyte_api_root root;
      int rc = flyte_api_discover(http, h->cfg->api, &root, err, sizeof err);
      if (rc == FLYTE_API_DENIED)
        snprintf(err + strlen(err), sizeof err - strlen(err), " (%s)",
                 flyte_host_denied_hint(h));
      if (rc == 0) {
        pthread_mutex_lock(&h->mu);
        h->root = root;
        pthread_mutex_unlock(&h->mu);
      }
    }
    if (h->root.packs_url) {
      flyte_api_pack p;
      flyte_gen *g = flyte_host_gen(h);
      const char *body = g->info.registration;
      double t0 = flyte_monotime();
      int rc = flyte_api_register(http, h->root.packs_url, body, strlen(body),
                                  &p, err, sizeof err);
      if (rc == FLYTE_API_DENIED)
        snprintf(err + strlen(err), sizeof err - strlen(err), " (%s)",
                 flyte_host_denied_hint(h));
      if (rc == 0) {
        pthread_mutex_lock(&h->mu);
        if (h->gen != g) { /* reloaded meanwhile: register the new one */
          pthread_mutex_unlock(&h->mu);
          flyte_api_pack_free(&p);
          attempt--;
          continue;
        }
        flyte_api_pack_free(&h->api_pack);
        h->api_pack = p;
        h->registered = 1;
        h->need_register = 0;
        h->hot = 0;
        h->next_poll = 0; /* poll at once */
        h->last_error[0] = '\0';
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->mu);
        flyte_host_wake_workers(h);
        flyte_metrics_registration(h->metrics);
        flyte_info("registered pack %s with %s (%.1f ms; %.1f ms after "
                   "start)",
                   p.id, h->cfg->api, (flyte_monotime() - t0) * 1000,
                   flyte_since_start_ms());
        ok = 1;
      }
    }
    if (ok) return 0;
    pthread_mutex_lock(&h->mu);
    snprintf(h->last_error, sizeof h->last_error, "%.500s", err);
    pthread_mutex_unlock(&h->mu);
    /* A root that led nowhere may have moved: discover again next time. */
    if (attempt % 5 == 0) {
      pthread_mutex_lock(&h->mu);
      flyte_api_root_free(&h->root);
      pthread_mutex_unlock(&h->mu);
    }
    flyte_warn("not registered (try %d): %s; trying again in %.1f s", attempt,
               err, wait);
    if (!flyte_host_sleep(h, wait)) return -1;
    wait = wait * 2 > CONNECT_BACKOFF_CAP ? CONNECT_BACKOFF_CAP : wait * 2;
  }
}

/* ---- the outbox left by a host that stopped ---------------------------- */

typedef struct {
  flyte_host *h;
  flyte_http *http;
  int delivered, kept, adopted;
  unsigned next_worker;
} recovery;


static int recover_entry(void *ud, const flyte_outbox_entry *e) {
  recovery *r = ud;
  flyte_host *h = r->h;
  char what[300];
  char *owned = NULL;
  const char *url = e->result_url, *body = e->body;
  if (strcmp(e->kind, "taken") == 0) {
    char text[600];
    snprintf(text, sizeof text,
             "command '%s': the host stopped while handling this action; it "
             "was not run again (its side effects may have happened)",
             e->command);
    body = owned = flyte_api_fatal_body(text);
    snprintf(what, sizeof what, "FATAL for action %s (%s) left unfinished",
             e->action ? e->action : "?", e->command);
  } else if (strcmp(e->kind, "result") == 0) {
    snprintf(what, sizeof what, "result of action %s (%s) left undelivered",
             e->action ? e->action : "?", e->command ? e->command : "?");
  } else {
    pthread_mutex_lock(&h->mu);
    url = owned = h->api_pack.event_url ? strdup(h->api_pack.event_url)
                                         : NULL;
    pthread_mutex_unlock(&h->mu);
    body = e->body;
    snprintf(what, sizeof what, "event left undelivered");
  }
  int maybe_sent = strcmp(e->kind, "event") != 0;
  int n = atomic_load(&h->nworkers);
  if (e->id && n > 0 && url && body) {
    /* an entry of this host's journal: a worker posts it alongside new
     * actions, many at once, and ends the entry itself */
    flyte_worker *w = h->workers[r->next_worker++ % n];
    for (int k = 0; k < n && !flyte_worker_serving(w); k++)
      w = h->workers[r->next_worker++ % n];
    if (flyte_worker_adopt(w, url, body, (long)e->id, what, maybe_sent) ==
        0) {
      free(owned);
      r->adopted++;
      return 1;
    }
  }
  const char *endpoint = strcmp(e->kind, "event") == 0 ? "event" : "result";
  flyte_delivery d =
      url && body
          ? flyte_deliver(h, r->http, endpoint, url, body, strlen(body), what,
                          maybe_sent)
          : FLYTE_ABANDONED;
  free(owned);
  if (d == FLYTE_ABANDONED) {
    r->kept++;
    return -1;
  }
  if (d == FLYTE_DELIVERED) {
    r->delivered++;
    flyte_info("outbox: delivered the %s", what);
  }
  return 0;
}

/* Delivers what a host that stopped (or crashed) left in the outbox. */
static void recover_outbox(flyte_host *h, flyte_http *http) {
  if (h->outbox == NULL) return;
  recovery r = {h, http, 0, 0, 0, 0};
  int seen = flyte_outbox_recover(h->outbox, recover_entry, &r);
  if (seen)
    flyte_info("outbox: %d entr%s from a host that stopped: %d delivered, %d "
               "kept for later, %d handed to the workers to post",
               seen, seen == 1 ? "y" : "ies", r.delivered, r.kept, r.adopted);
}

/* ---- observe ----------------------------------------------------------- */

/* Waits until the generation is no longer g or the host stops (mu held
 * by the caller is not required). */
static void wait_new_gen(flyte_host *h, flyte_gen *g) {
  pthread_mutex_lock(&h->mu);
  while (!atomic_load(&h->stopping) && h->gen == g) flyte_host_wait(h, 0);
  pthread_mutex_unlock(&h->mu);
}

/* Waits `seconds` before observe starts again; 0 when the host stops
 * first, 1 otherwise (also on a reload, which starts the new code). */
static int observe_pause(flyte_host *h, flyte_gen *g, double seconds) {
  double until = flyte_monotime() + seconds;
  pthread_mutex_lock(&h->mu);
  while (!atomic_load(&h->stopping) && h->gen == g &&
         flyte_monotime() < until)
    flyte_host_wait(h, until);
  int go_on = !atomic_load(&h->stopping);
  pthread_mutex_unlock(&h->mu);
  return go_on;
}

static void observe_wake(void *ud) { flyte_sched_interrupt_sleeps(ud); }

/* Runs pack.observe with the current code, as a task on a loop of its
 * own; after a reload, with the new code (flyte.sleep returns false to end
 * the old loop). */
static void *observe_main(void *arg) {
  flyte_host *h = arg;
  char err[1024];
  double wait = 1.0;
  flyte_loop *loop = flyte_loop_new(err, sizeof err);
  flyte_sched *sched = loop ? flyte_sched_new(loop) : NULL;
  if (sched == NULL) {
    flyte_error("observe cannot start: %s", loop ? "out of memory" : err);
    flyte_loop_free(loop);
    return NULL;
  }
  flyte_loop_on_wake(loop, observe_wake, sched);
  pthread_mutex_lock(&h->mu);
  h->observe_loop = loop;
  pthread_mutex_unlock(&h->mu);
  while (!atomic_load(&h->stopping)) {
    flyte_gen *g = flyte_host_gen(h);
    if (!g->info.has_observe) {
      wait_new_gen(h, g);
      continue;
    }
    flyte_pack *p = flyte_pack_open(h->pack_path, &g->observe_env,
                                    h->cfg->memory_limit, &g->sources, err,
                                    sizeof err);
    int rc = -1;
    double started = flyte_monotime();
    if (p) {
      if (flyte_sched_attach(sched, flyte_pack_state(p)) == 0)
        rc = flyte_pack_observe(p, err, sizeof err);
      else
        snprintf(err, sizeof err, "out of memory");
      flyte_pack_close(p);
    }
    if (atomic_load(&h->stopping)) break;
    if (flyte_host_gen(h) != g) {
      flyte_info("observe stopped for the reload; starting the new code");
      wait = 1.0;
      continue;
    }
    if (rc == 0) {
      flyte_info("observe returned; it is started again after a reload");
      wait_new_gen(h, g);
      continue;
    }
    if (flyte_monotime() - started > 60) wait = 1.0;
    flyte_error("observe failed: %s; starting it again in %g s", err, wait);
    if (!observe_pause(h, g, wait)) break;
    wait = wait * 2 > OBSERVE_RESTART_CAP ? OBSERVE_RESTART_CAP : wait * 2;
  }
  pthread_mutex_lock(&h->mu);
  h->observe_loop = NULL;
  pthread_mutex_unlock(&h->mu);
  flyte_sched_free(sched);
  flyte_loop_free(loop);
  return NULL;
}

flyte_gen *flyte_host_gen(flyte_host *h) {
  pthread_mutex_lock(&h->mu);
  flyte_gen *g = h->gen;
  pthread_mutex_unlock(&h->mu);
  return g;
}

flyte_gen *flyte_host_new_gen(flyte_host *h, flyte_pack **pack, char *err,
                              size_t errlen) {
  static unsigned next_id = 0;
  flyte_gen *g = calloc(1, sizeof *g);
  if (g == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  g->host = h;
  g->id = ++next_id;
  g->env = (flyte_core_env){g,           env_send_event, env_sleep_ok,
                            env_stopping, env_api_health, &h->cancel};
  g->observe_env = g->env;
  g->observe_env.sleep_ok = env_observe_sleep_ok;
  *pack = flyte_pack_open(h->pack_path, &g->env, h->cfg->memory_limit, NULL,
                          err, errlen);
  if (*pack == NULL ||
      flyte_pack_describe(*pack, h->cfg->labels, h->cfg->nlabels, &g->info,
                          err, errlen) != 0 ||
      flyte_pack_sources(*pack, &g->sources) != 0) {
    if (*pack && err[0] == '\0') snprintf(err, errlen, "out of memory");
    flyte_pack_info_free(&g->info);
    flyte_pack_close(*pack);
    *pack = NULL;
    free(g);
    return NULL;
  }
  return g;
}

/* ---- run ----------------------------------------------------------------- */

static void on_api_request(void *ud, const char *endpoint, long status,
                           double seconds) {
  flyte_metrics_api(ud, endpoint, status, seconds);
}

static int start_workers_locked(flyte_host *h);

int flyte_host_start_workers(flyte_host *h) {
  /* the main thread and the reloader may both get here */
  static pthread_mutex_t start_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&start_mu);
  int rc = start_workers_locked(h);
  pthread_mutex_unlock(&start_mu);
  return rc;
}

static int start_workers_locked(flyte_host *h) {
  if (h->workers) return 0;
  /* room for as many replacements of stuck workers as there are workers */
  h->cap_workers = 2 * h->cfg->workers;
  h->workers = calloc((size_t)h->cap_workers, sizeof *h->workers);
  if (h->workers == NULL) return -1;
  h->workers_started = h->cfg->workers;
  for (int i = 0; i < h->cfg->workers; i++) {
    if ((h->workers[i] = flyte_worker_start(h, i + 1)) == NULL) {
      flyte_error("cannot start worker %d", i + 1);
      return -1;
    }
    atomic_fetch_add(&h->nworkers, 1); /* after workers[i] is set up */
  }
  return 0;
}

static int start_threads(flyte_host *h) {
  if (flyte_events_start(h, EVENT_QUEUE_CAPACITY) != 0) {
    flyte_error("cannot start the event sender");
    return -1;
  }
  if (flyte_host_gen(h)->info.ncommands > 0) {
    if (flyte_host_start_workers(h) != 0) return -1;
  } else {
    flyte_info("the pack has no commands: not polling for actions");
  }
  /* observe waits for a pack that has it, now or after a reload */
  if (pthread_create(&h->observe, NULL, observe_main, h) != 0) {
    flyte_error("cannot start observe");
    return -1;
  }
  h->observe_running = 1;
  return 0;
}

/* Waits for a thread to end until the grace period ends; a second signal
 * (which moves the deadline to now and broadcasts) ends the wait at once.
 * Returns 1 when the thread was joined. */
int flyte_host_join_in_grace(flyte_host *h, pthread_t t, double extra) {
  for (;;) {
    if (pthread_tryjoin_np(t, NULL) == 0) return 1;
    pthread_mutex_lock(&h->mu);
    double deadline = h->stop_deadline + extra, now = flyte_monotime();
    if (now >= deadline || atomic_load(&h->cancel)) {
      pthread_mutex_unlock(&h->mu);
      return pthread_tryjoin_np(t, NULL) == 0;
    }
    /* threads do not signal when they end: look again soon */
    flyte_host_wait(h, now + 0.02 < deadline ? now + 0.02 : deadline);
    pthread_mutex_unlock(&h->mu);
  }
}

/* The watchdog, on the main thread: a worker stuck in pack code past a
 * deadline (where the hook cannot reach) is replaced, so that capacity
 * comes back, and its actions end: the stuck one with a FATAL saying so,
 * the others with theirs or their results, posted by the replacement.
 * At most FLYTE_WORKERS replacements; past that a healthy worker posts
 * them (and /live fails: see health_answer). */
/* A slot for a new worker: a free one, or that of a replaced worker whose
 * thread has ended (its struct goes to the graveyard, freed at exit: other
 * threads may still be reading it). -1 when none. */
static int worker_slot(flyte_host *h) {
  int total = atomic_load(&h->nworkers);
  if (total < h->cap_workers) return total;
  for (int k = 0; k < total; k++) {
    flyte_worker *old = h->workers[k];
    if (!flyte_worker_ended(old) || flyte_worker_serving(old)) continue;
    flyte_worker **grown =
        realloc(h->graveyard, (size_t)(h->ngraveyard + 1) * sizeof *grown);
    if (grown == NULL) return -1;
    h->graveyard = grown;
    h->graveyard[h->ngraveyard++] = old;
    return k;
  }
  return -1;
}

static void watch_workers(flyte_host *h) {
  double now = flyte_monotime();
  int n = atomic_load(&h->nworkers);
  for (int i = 0; i < n; i++) {
    flyte_worker *w = h->workers[i];
    if (!flyte_worker_check_stuck(w, now, STUCK_AFTER)) continue;
    flyte_worker *to = NULL;
    int slot = atomic_load(&h->stuck_workers) <= h->cfg->workers
                   ? worker_slot(h) : -1;
    int number = ++h->workers_started;
    if (slot >= 0 && (to = flyte_worker_start(h, number)) != NULL) {
      h->workers[slot] = to;
      if (slot == atomic_load(&h->nworkers)) atomic_fetch_add(&h->nworkers, 1);
      flyte_error("worker %d is stuck in pack code past a deadline, where "
                  "the host cannot interrupt it (C code such as a pattern "
                  "match, or a __gc finalizer); worker %d takes its place",
                  i + 1, number);
    } else {
      int total = atomic_load(&h->nworkers);
      for (int k = 0; k < total && to == NULL; k++)
        if (flyte_worker_alive(h->workers[k])) to = h->workers[k];
      flyte_error("worker %d is stuck in pack code past a deadline, where "
                  "the host cannot interrupt it (C code such as a pattern "
                  "match, or a __gc finalizer); no more replacements (%d "
                  "threads are stuck)", i + 1,
                  atomic_load(&h->stuck_workers));
    }
    flyte_worker_replace(w, to);
  }
}

/* Stops everything; returns the number of threads left running (stuck in
 * C code of the pack past the grace period). */
static int stop_threads(flyte_host *h) {
  pthread_mutex_lock(&h->mu);
  if (!atomic_load(&h->stopping)) {
    h->stop_deadline = flyte_monotime() + h->cfg->shutdown_grace;
    atomic_store(&h->stopping, 1);
  }
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
  flyte_host_wake_workers(h);
  /* a reload runs the pack's new code, which may never return: it gets
   * the grace period, like the handlers */
  int stuck = 0;
  if (!flyte_reload_stop(h)) {
    flyte_warn("the reload under way did not end after the host stopped "
               "(does the pack's code, or a finalizer in it, never return?)");
    stuck++;
  }
  /* workers end their handlers at the grace deadline themselves, then
   * post the results for a few seconds more */
  int n = atomic_load(&h->nworkers);
  int joined[n > 0 ? n : 1];
  for (int i = 0; i < n; i++) {
    pthread_mutex_lock(&h->mu);
    double until = h->stop_deadline + FINAL_DELIVERY + 1;
    pthread_mutex_unlock(&h->mu);
    /* one replaced already is not waited for */
    if (flyte_worker_is_stuck(h->workers[i])) until = 0;
    joined[i] = flyte_worker_join(h->workers[i], until);
    stuck += !joined[i];
  }
  if (stuck) {
    char why[200];
    snprintf(why, sizeof why,
             "the host stopped before the handler finished (it ran past the "
             "%g s shutdown grace period)",
             h->cfg->shutdown_grace);
    pthread_mutex_lock(&h->mu);
    h->stop_deadline = flyte_monotime() + FINAL_DELIVERY;
    pthread_mutex_unlock(&h->mu);
    for (int i = 0; i < n; i++)
      if (!joined[i])
        flyte_worker_complete_stuck(h->workers[i], why);
  }
  if (h->observe_running) {
    if (flyte_host_join_in_grace(h, h->observe, 1)) {
      h->observe_running = 0;
    } else {
      flyte_warn("observe did not return after the host stopped (does it "
                 "check what flyte.sleep returns?)");
      stuck++;
    }
  }
  /* queued events go out before anything is cancelled */
  flyte_events_stop(h, stuck > 0);
  if (stuck) atomic_store(&h->cancel, 1);
  return stuck;
}

/* Closes the workers (each its Lua states) and the health state. */
static void *close_states(void *arg) {
  flyte_host *h = arg;
  for (int i = 0; i < atomic_load(&h->nworkers); i++)
    flyte_worker_free(h->workers[i]);
  for (int i = 0; i < h->ngraveyard; i++) flyte_worker_free(h->graveyard[i]);
  flyte_pack_close(h->health_pack);
  return NULL;
}

/* Closing a Lua state runs the pack's __gc finalizers, which Lua runs with
 * hooks off: one that never returns would hold the exit for good. The
 * states close on a thread of their own; past CLOSE_BOUND the process
 * ends with rc without them. Whatever the host owed the API is on disk
 * by then (the outbox is closed first). */
static void close_states_bounded(flyte_host *h, int rc) {
  pthread_t closer;
  if (pthread_create(&closer, NULL, close_states, h) != 0) {
    close_states(h);
    return;
  }
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += CLOSE_BOUND;
  if (pthread_timedjoin_np(closer, NULL, &until) != 0) {
    flyte_error("stopped, but closing the pack's Lua states did not end "
                "within %d s (a __gc finalizer in pack code that does not "
                "return?); exiting without them",
                CLOSE_BOUND);
    fflush(NULL);
    _exit(rc);
  }
}

int flyte_host_run(const flyte_config *cfg, const char *pack_path) {
  flyte_host host, *h = &host;
  char err[1024];
  int rc = 1;
  pthread_t signals;
  int signals_started = 0;
  flyte_http *http = NULL;

  memset(h, 0, sizeof *h);
  h->cfg = cfg;
  h->pack_path = pack_path;
  pthread_mutex_init(&h->mu, NULL);
  pthread_mutex_init(&h->health_mu, NULL);
  pthread_mutex_init(&h->aux_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cond, &ca);
  pthread_condattr_destroy(&ca);

  /* Signals go to the signal thread alone: block them everywhere else. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  /* past a file size limit (RLIMIT_FSIZE) a write fails with EFBIG, which
   * the outbox reports; SIGXFSZ's default would end the host instead */
  signal(SIGXFSZ, SIG_IGN);
  /* SIGUSR2 has no meaning here; its default would end the host and every
   * action it holds (SIGUSR1 is the signal thread's own wake-up) */
  signal(SIGUSR2, SIG_IGN);

  if (cfg->api == NULL) {
    fprintf(stderr, "flyte-host: FLYTE_API is not set (the flyte-api root "
                    "URL, e.g. http://flyte:8080; or --api)\n");
    rc = 2;
    goto cleanup;
  }
  h->gen = h->gens = flyte_host_new_gen(h, &h->health_pack, err, sizeof err);
  if (h->gen == NULL) { /* the pack is wrong, not a setting: 1 */
    fprintf(stderr, "flyte-host: %s\n", err);
    rc = 1;
    goto cleanup;
  }
  h->metrics = flyte_metrics_new();
  if (h->metrics == NULL) goto cleanup;
  flyte_memory_reserve();
  /* Large blocks (an input, a result, a response body) get pages of their
   * own and give them back when freed. glibc's default raises the mapping
   * threshold to the size of the largest block freed (up to 32 MiB), so
   * after a burst of big inputs they came from the threads' arenas, whose
   * free tops malloc_trim leaves resident: 33 MB stayed after eight 7 MB
   * inputs. Fixed thresholds keep the default sizes and stop that. */
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  flyte_api_observe(on_api_request, h->metrics);
  if (cfg->outbox) {
    h->outbox = flyte_outbox_open(cfg->outbox, cfg->outbox_sync, err,
                                  sizeof err);
    if (h->outbox == NULL) {
      fprintf(stderr, "flyte-host: FLYTE_OUTBOX: %s\n", err);
      rc = 2;
      goto cleanup;
    }
  }
  if (cfg->jwt && strncmp(cfg->api, "http://", 7) == 0)
    flyte_warn("FLYTE_JWT is set and FLYTE_API is plain http: the token will "
               "cross the network unencrypted");

  flyte_http_opts opts = flyte_host_http_opts(h);
  http = flyte_http_new(&opts);
  h->aux_http = flyte_http_new(&opts);
  if (http == NULL || h->aux_http == NULL) goto cleanup;

  if (pthread_create(&signals, NULL, signal_main, h) != 0) goto cleanup;
  signals_started = 1;

  if (cfg->health_port != 0) { /* -1: any free port */
    h->health = flyte_health_start(cfg->health_port < 0 ? 0 : cfg->health_port,
                                   health_answer, h, err,
                                   sizeof err);
    if (h->health == NULL) {
      flyte_error("%s", err);
      goto cleanup;
    }
    flyte_info("health on port %d", flyte_health_port(h->health));
  }

  flyte_info("pack %s: %d command(s), %d worker(s), polling every %g s",
             pack_path, h->gen->info.ncommands,
             h->gen->info.ncommands ? cfg->workers : 0, cfg->poll_interval);
  if (flyte_reload_start(h) != 0)
    flyte_warn("the pack will not be reloaded when it changes (SIGHUP still "
               "reloads it)");
  if (connect_api(h, http) == 0) {
    if (start_threads(h) != 0) {
      stop_threads(h);
      goto cleanup;
    }
    /* What a host that died owes goes out while the workers take: with
     * many actions in flight at a crash, each result the API had already
     * taken costs a few tries (flyte-api.md, section 4), and new actions
     * must not wait on them. */
    recover_outbox(h, http);
    /* Main thread: register again whenever the API forgets the pack. */
    pthread_mutex_lock(&h->mu);
    while (!atomic_load(&h->stopping)) {
      if (h->need_register) {
        pthread_mutex_unlock(&h->mu);
        connect_api(h, http);
        pthread_mutex_lock(&h->mu);
        continue;
      }
      pthread_mutex_unlock(&h->mu);
      watch_workers(h);
      pthread_mutex_lock(&h->mu);
      if (h->need_register || atomic_load(&h->stopping)) continue;
      flyte_host_wait(h, flyte_monotime() + (atomic_load(&h->in_flight)
                                                 ? WATCH_BUSY
                                                 : WATCH_IDLE));
    }
    pthread_mutex_unlock(&h->mu);
  }
  if (stop_threads(h) > 0) {
    /* Threads stuck in pack code still use the host: end the process
     * without tearing it down under them. */
    flyte_warn("stopped, leaving threads stuck in pack code behind");
    /* what the journal holds in memory (done records) goes to disk first */
    if (h->outbox) flyte_outbox_wait(h->outbox, flyte_outbox_appended(h->outbox));
    fflush(NULL);
    _exit(0);
  }
  flyte_info("stopped");
  rc = 0;

cleanup:
  if (signals_started) {
    atomic_store(&h->signals_done, 1);
    pthread_kill(signals, SIGUSR1);
    pthread_join(signals, NULL);
  }
  flyte_health_stop(h->health);
  /* the outbox's syncer calls the workers back: it goes first */
  flyte_outbox_close(h->outbox);
  h->outbox = NULL;
  close_states_bounded(h, rc);
  free(h->graveyard);
  for (flyte_gen *g = h->gens, *next; g; g = next) {
    next = g->next;
    flyte_pack_info_free(&g->info);
    flyte_sources_free(&g->sources);
    free(g);
  }
  flyte_http_free(http);
  flyte_http_free(h->aux_http);
  flyte_api_root_free(&h->root);
  flyte_api_pack_free(&h->api_pack);
  flyte_outbox_close(h->outbox);
  flyte_api_observe(NULL, NULL);
  flyte_metrics_free(h->metrics);
  free(h->workers);
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->mu);
  pthread_mutex_destroy(&h->health_mu);
  pthread_mutex_destroy(&h->aux_mu);
  return rc;
}
