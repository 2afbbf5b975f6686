/* metrics.h - counters, gauges and histograms for GET /metrics.
 *
 * Plain C, thread-safe. Rendered in the Prometheus text format, version
 * 0.0.4, with # HELP and # TYPE lines.
 */
#ifndef FLYTE_METRICS_H
#define FLYTE_METRICS_H

typedef struct flyte_metrics flyte_metrics;

flyte_metrics *flyte_metrics_new(void);
void flyte_metrics_free(flyte_metrics *m);

void flyte_metrics_action_taken(flyte_metrics *m);
/* outcome: "success", "fatal", "timeout", "memory", "abandoned" */
void flyte_metrics_action_done(flyte_metrics *m, const char *command,
                               const char *outcome, double seconds);
void flyte_metrics_in_flight(flyte_metrics *m, const char *command, int delta);
/* endpoint: "discovery", "register", "take", "result", "event", "health";
 * status 0 when no response came. */
void flyte_metrics_api(flyte_metrics *m, const char *endpoint, long status,
                       double seconds);
void flyte_metrics_event(flyte_metrics *m, int delivered);
void flyte_metrics_reload(flyte_metrics *m, int ok);
void flyte_metrics_registration(flyte_metrics *m);

/* Gauges read when rendering. */
typedef struct {
  int workers_total, workers_busy;
  int workers_stuck; /* replaced, still stuck in pack code */
  int in_flight, concurrency; /* actions held, and the most allowed */
  double loop_lag_seconds;    /* worst since the last scrape */
  int outbox;                 /* the outbox is on: the next four mean it */
  unsigned long outbox_records, outbox_syncs; /* since start */
  long outbox_segments, outbox_lost_takes;
  unsigned long outbox_write_errors;
  long queue_depth;
  double queue_oldest_seconds;
} flyte_metrics_gauges;

/* The exposition text; caller frees. */
char *flyte_metrics_render(flyte_metrics *m, const flyte_metrics_gauges *g);

/* Appends a JSON object of command -> actions in flight to `out` (a
 * jansson json_t *), for the health details. */
void flyte_metrics_in_flight_json(flyte_metrics *m, void *out);

#endif
