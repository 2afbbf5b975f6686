/* metrics.c - counters, gauges and histograms for GET /metrics.
 *
 * Everything sits behind one mutex: updates are a few increments per
 * action, far below the cost of the HTTP round trips around them. Series
 * with a command label live in a small list, one entry per command.
 */
#include "metrics.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef FLYTE_VERSION
#define FLYTE_VERSION "0.0.0"
#endif

static const double BUCKETS[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                 0.05,   0.1,   0.25,   0.5,   1,    2.5,
                                 5,      10,    30,     60};
#define NBUCKETS (sizeof BUCKETS / sizeof BUCKETS[0])

typedef struct {
  unsigned long counts[NBUCKETS + 1]; /* the last one: +Inf */
  double sum;
  unsigned long n;
} histogram;

static void observe(histogram *h, double v) {
  size_t i = 0;
  while (i < NBUCKETS && v > BUCKETS[i]) i++;
  h->counts[i]++;
  h->sum += v;
  h->n++;
}

static const char *const OUTCOMES[] = {"success", "fatal", "timeout",
                                       "memory", "abandoned"};
#define NOUTCOMES 5

typedef struct command {
  struct command *next;
  char *name;
  unsigned long done[NOUTCOMES];
  long in_flight;
  histogram duration;
} command;

static const char *const ENDPOINTS[] = {"discovery", "register", "take",
                                        "result",    "event",    "health"};
#define NENDPOINTS 6
static const char *const CLASSES[] = {"error", "1xx", "2xx", "3xx", "4xx",
                                      "5xx"};

struct flyte_metrics {
  pthread_mutex_t mu;
  double start_time;
  unsigned long taken;
  command *commands;
  unsigned long api[NENDPOINTS][6];
  histogram api_duration[NENDPOINTS];
  unsigned long events_sent, events_failed;
  unsigned long reloads_ok, reloads_failed, registrations;
};

flyte_metrics *flyte_metrics_new(void) {
  flyte_metrics *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  pthread_mutex_init(&m->mu, NULL);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  m->start_time = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
  return m;
}

void flyte_metrics_free(flyte_metrics *m) {
  if (m == NULL) return;
  for (command *c = m->commands, *next; c; c = next) {
    next = c->next;
    free(c->name);
    free(c);
  }
  pthread_mutex_destroy(&m->mu);
  free(m);
}

/* Finds or adds a command; call with mu held. NULL when out of memory. */
static command *command_of(flyte_metrics *m, const char *name) {
  command **p = &m->commands;
  for (; *p; p = &(*p)->next) {
    int c = strcmp((*p)->name, name);
    if (c == 0) return *p;
    if (c > 0) break; /* kept sorted for a stable exposition */
  }
  command *c = calloc(1, sizeof *c);
  if (c == NULL || (c->name = strdup(name)) == NULL) {
    free(c);
    return NULL;
  }
  c->next = *p;
  *p = c;
  return c;
}

void flyte_metrics_action_taken(flyte_metrics *m) {
  if (m == NULL) return;
  pthread_mutex_lock(&m->mu);
  m->taken++;
  pthread_mutex_unlock(&m->mu);
}

void flyte_metrics_action_done(flyte_metrics *m, const char *name,
                               const char *outcome, double seconds) {
  if (m == NULL) return;
  int k = 0;
  while (k < NOUTCOMES - 1 && strcmp(OUTCOMES[k], outcome) != 0) k++;
  pthread_mutex_lock(&m->mu);
  command *c = command_of(m, name);
  if (c) {
    c->done[k]++;
    observe(&c->duration, seconds);
  }
  pthread_mutex_unlock(&m->mu);
}

void flyte_metrics_in_flight(flyte_metrics *m, const char *name, int delta) {
  if (m == NULL) return;
  pthread_mutex_lock(&m->mu);
  command *c = command_of(m, name);
  if (c) c->in_flight += delta;
  pthread_mutex_unlock(&m->mu);
}

void flyte_metrics_api(flyte_metrics *m, const char *endpoint, long status,
                       double seconds) {
  if (m == NULL) return;
  int e = 0;
  while (e < NENDPOINTS - 1 && strcmp(ENDPOINTS[e], endpoint) != 0) e++;
  int cls = status >= 100 && status < 600 ? (int)(status / 100) : 0;
  pthread_mutex_lock(&m->mu);
  m->api[e][cls]++;
  observe(&m->api_duration[e], seconds);
  pthread_mutex_unlock(&m->mu);
}

void flyte_metrics_event(flyte_metrics *m, int delivered) {
  if (m == NULL) return;
  pthread_mutex_lock(&m->mu);
  if (delivered)
    m->events_sent++;
  else
    m->events_failed++;
  pthread_mutex_unlock(&m->mu);
}

void flyte_metrics_reload(flyte_metrics *m, int ok) {
  if (m == NULL) return;
  pthread_mutex_lock(&m->mu);
  if (ok)
    m->reloads_ok++;
  else
    m->reloads_failed++;
  pthread_mutex_unlock(&m->mu);
}

void flyte_metrics_registration(flyte_metrics *m) {
  if (m == NULL) return;
  pthread_mutex_lock(&m->mu);
  m->registrations++;
  pthread_mutex_unlock(&m->mu);
}

/* Writes a label value escaped as the text format wants. */
static void label(FILE *out, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      fprintf(out, "\\%c", *v);
    else if (*v == '\n')
      fputs("\\n", out);
    else
      fputc(*v, out);
  }
}

static void header(FILE *out, const char *name, const char *type,
                   const char *help) {
  fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One histogram's series; `labels` is `key="value"` or "". */
static void histogram_lines(FILE *out, const char *name, const char *key,
                            const char *value, const histogram *h) {
  unsigned long cumulative = 0;
  for (size_t i = 0; i <= NBUCKETS; i++) {
    cumulative += h->counts[i];
    fprintf(out, "%s_bucket{%s=\"", name, key);
    label(out, value);
    if (i < NBUCKETS)
      fprintf(out, "\",le=\"%g\"} %lu\n", BUCKETS[i], cumulative);
    else
      fprintf(out, "\",le=\"+Inf\"} %lu\n", cumulative);
  }
  fprintf(out, "%s_sum{%s=\"", name, key);
  label(out, value);
  fprintf(out, "\"} %.6f\n%s_count{%s=\"", h->sum, name, key);
  label(out, value);
  fprintf(out, "\"} %lu\n", h->n);
}

char *flyte_metrics_render(flyte_metrics *m, const flyte_metrics_gauges *g) {
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (out == NULL) return NULL;
  pthread_mutex_lock(&m->mu);

  header(out, "flyte_actions_taken_total", "counter",
         "Actions taken from the flyte-api.");
  fprintf(out, "flyte_actions_taken_total %lu\n", m->taken);

  header(out, "flyte_actions_completed_total", "counter",
         "Actions completed, by command and outcome.");
  for (command *c = m->commands; c; c = c->next)
    for (int k = 0; k < NOUTCOMES; k++) {
      fputs("flyte_actions_completed_total{command=\"", out);
      label(out, c->name);
      fprintf(out, "\",outcome=\"%s\"} %lu\n", OUTCOMES[k], c->done[k]);
    }

  header(out, "flyte_actions_in_flight", "gauge",
         "Actions whose handler is running, by command.");
  for (command *c = m->commands; c; c = c->next) {
    fputs("flyte_actions_in_flight{command=\"", out);
    label(out, c->name);
    fprintf(out, "\"} %ld\n", c->in_flight);
  }

  header(out, "flyte_handler_duration_seconds", "histogram",
         "How long handlers ran, by command.");
  for (command *c = m->commands; c; c = c->next)
    histogram_lines(out, "flyte_handler_duration_seconds", "command", c->name,
                    &c->duration);

  header(out, "flyte_api_requests_total", "counter",
         "Requests to the flyte-api, by endpoint and status class.");
  for (int e = 0; e < NENDPOINTS; e++)
    for (int k = 0; k < 6; k++)
      if (m->api[e][k] || k == 2)
        fprintf(out,
                "flyte_api_requests_total{endpoint=\"%s\",status=\"%s\"} "
                "%lu\n",
                ENDPOINTS[e], CLASSES[k], m->api[e][k]);

  header(out, "flyte_api_request_duration_seconds", "histogram",
         "How long requests to the flyte-api took, by endpoint.");
  for (int e = 0; e < NENDPOINTS; e++)
    histogram_lines(out, "flyte_api_request_duration_seconds", "endpoint",
                    ENDPOINTS[e], &m->api_duration[e]);

  header(out, "flyte_events_sent_total", "counter",
         "Spontaneous events the flyte-api accepted.");
  fprintf(out, "flyte_events_sent_total %lu\n", m->events_sent);
  header(out, "flyte_events_failed_total", "counter",
         "Spontaneous events given up on (refused, or the host stopped).");
  fprintf(out, "flyte_events_failed_total %lu\n", m->events_failed);

  header(out, "flyte_event_queue_depth", "gauge",
         "Events waiting to be delivered.");
  fprintf(out, "flyte_event_queue_depth %ld\n", g ? g->queue_depth : 0);
  header(out, "flyte_event_queue_oldest_seconds", "gauge",
         "Age of the oldest event waiting to be delivered.");
  fprintf(out, "flyte_event_queue_oldest_seconds %.3f\n",
          g ? g->queue_oldest_seconds : 0);

  header(out, "flyte_workers", "gauge", "Workers (Lua states) in the pool.");
  fprintf(out, "flyte_workers %d\n", g ? g->workers_total : 0);
  header(out, "flyte_workers_stuck", "gauge",
         "Worker threads stuck in pack code past a deadline (each was "
         "replaced; /live fails once there are FLYTE_WORKERS of them).");
  fprintf(out, "flyte_workers_stuck %d\n", g ? g->workers_stuck : 0);
  header(out, "flyte_workers_busy", "gauge",
         "Workers holding at least one action.");
  fprintf(out, "flyte_workers_busy %d\n", g ? g->workers_busy : 0);
  header(out, "flyte_actions_held", "gauge",
         "Actions the host holds (running or being delivered), of "
         "flyte_concurrency.");
  fprintf(out, "flyte_actions_held %d\n", g ? g->in_flight : 0);
  header(out, "flyte_concurrency", "gauge",
         "The most actions the host holds at once (FLYTE_CONCURRENCY).");
  fprintf(out, "flyte_concurrency %d\n", g ? g->concurrency : 0);
  if (g && g->outbox) {
    header(out, "flyte_outbox_records_total", "counter",
           "Records appended to the outbox's journal.");
    fprintf(out, "flyte_outbox_records_total %lu\n", g->outbox_records);
    header(out, "flyte_outbox_syncs_total", "counter",
           "fdatasyncs of the journal: each covers every record appended "
           "since the one before (group commit).");
    fprintf(out, "flyte_outbox_syncs_total %lu\n", g->outbox_syncs);
    header(out, "flyte_outbox_segments", "gauge",
           "Journal segment files on disk.");
    fprintf(out, "flyte_outbox_segments %ld\n", g->outbox_segments);
    header(out, "flyte_outbox_lost_takes_total", "counter",
           "Takes whose reply died with an earlier process: each may have "
           "handed out an action that was lost (see the log for when).");
    fprintf(out, "flyte_outbox_lost_takes_total %ld\n",
            g->outbox_lost_takes);
    header(out, "flyte_outbox_write_errors_total", "counter",
           "Journal writes and syncs the disk refused (full, a file size "
           "limit, an I/O error): what they held would not survive a "
           "crash.");
    fprintf(out, "flyte_outbox_write_errors_total %lu\n",
            g->outbox_write_errors);
  }
  header(out, "flyte_loop_lag_seconds", "gauge",
         "The longest a worker's timer waited past its time since the last "
         "scrape: how long pack code held a loop.");
  fprintf(out, "flyte_loop_lag_seconds %.6f\n",
          g ? g->loop_lag_seconds : 0);

  header(out, "flyte_reloads_total", "counter", "Reloads, by outcome.");
  fprintf(out, "flyte_reloads_total{outcome=\"success\"} %lu\n",
          m->reloads_ok);
  fprintf(out, "flyte_reloads_total{outcome=\"failure\"} %lu\n",
          m->reloads_failed);
  header(out, "flyte_registrations_total", "counter",
         "Successful registrations with the flyte-api.");
  fprintf(out, "flyte_registrations_total %lu\n", m->registrations);

  header(out, "process_start_time_seconds", "gauge",
         "Start time of the process since the Unix epoch in seconds.");
  fprintf(out, "process_start_time_seconds %.3f\n", m->start_time);
  header(out, "flyte_build_info", "gauge",
         "Always 1; the labels say what was built.");
  fprintf(out, "flyte_build_info{version=\"%s\",lua=\"%s\"} 1\n",
          FLYTE_VERSION, FLYTE_LUA_RELEASE);

  pthread_mutex_unlock(&m->mu);
  fclose(out);
  return text;
}

void flyte_metrics_in_flight_json(flyte_metrics *m, void *out) {
  json_t *obj = out;
  pthread_mutex_lock(&m->mu);
  for (command *c = m->commands; c; c = c->next)
    json_object_set_new(obj, c->name, json_integer(c->in_flight));
  pthread_mutex_unlock(&m->mu);
}
