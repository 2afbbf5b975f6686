/* host.h - the running host: settings, the API connection, the workers, the
 * observe thread, the event sender, the health server, and stopping.
 *
 * Plain C; the Lua side is behind pack.h. Shared state lives in one
 * flyte_host under one mutex; threads wait on its condition variable.
 */
#ifndef FLYTE_HOST_H
#define FLYTE_HOST_H

#include <pthread.h>
#include <stdatomic.h>

#include "api.h"
#include "config.h"
#include "health.h"
#include "http.h"
#include "pack.h"
#include "state.h"

typedef struct flyte_events flyte_events;
typedef struct flyte_host flyte_host;

/* One loading of the pack's code. A reload makes a new generation; states
 * built for an older one finish what they run, then are rebuilt. Kept until
 * the host exits (reloads are rare), so a state never outlives its env. */
typedef struct flyte_gen {
  struct flyte_gen *next;
  flyte_host *host;
  unsigned id;
  flyte_core_env env; /* what handlers reach through flyte.core */
  flyte_core_env observe_env; /* observe's: sleep ends on a reload too */
  flyte_pack_info info;
  flyte_sources sources; /* the code every state of this generation runs */
} flyte_gen;

struct flyte_host {
  const flyte_config *cfg;
  const char *pack_path;

  pthread_mutex_t mu;
  pthread_cond_t cond; /* broadcast on any change below */
  atomic_int stopping; /* SIGTERM/SIGINT seen: take no more actions */
  atomic_int cancel;   /* abandon requests and sleeps at once */
  atomic_int signals_done; /* the signal thread may end (SIGUSR1) */
  double stop_deadline; /* monotonic: when the grace period ends */

  /* the API connection (under mu) */
  flyte_api_root root;
  flyte_api_pack api_pack;
  int registered;     /* api_pack is valid */
  int need_register;  /* the API forgot the pack (404): register again */
  int denied;         /* consecutive 401/403 answers to takes */
  struct timespec last_poll; /* when a take last got an answer (REALTIME;
                                 0: never); formatted only for /details */
  char last_error[512];

  /* polling (under mu) */
  int hot;          /* the last take returned an action */
  int leader;       /* a worker is waiting to poll */
  double next_poll; /* monotonic: when the leader polls again */

  flyte_gen *gen;  /* the current generation (under mu) */
  flyte_gen *gens; /* every generation, newest first */
  flyte_pack *health_pack; /* the current code; used by health (health_mu) */
  pthread_mutex_t health_mu;
  flyte_http *aux_http; /* for api_health, under aux_mu */
  pthread_mutex_t aux_mu;
  flyte_health *health;

  /* reload (under mu) */
  int reload_requested;   /* SIGHUP */
  char reload_error[1024]; /* the last failed reload, until a good one */
  char reload_file[512];
  char reload_at[40];
  struct flyte_watch *watch;
  pthread_t reloader;
  int reloader_running;

  /* workers started so far: the health thread reads it (and workers[0..n))
   * while the main thread or the reloader starts the pool */
  atomic_int nworkers;
  struct flyte_worker **workers;
  int cap_workers;       /* room in workers: FLYTE_WORKERS, twice */
  int workers_started;   /* for the numbers in the log */
  struct flyte_worker **graveyard; /* replaced, ended: freed at exit */
  int ngraveyard;
  atomic_int stuck_workers; /* threads stuck in pack code (replaced) */
  atomic_int in_flight;  /* actions held, of FLYTE_CONCURRENCY */
  atomic_long lag_us;    /* the workers' worst loop lag since the last
                            scrape of /metrics */
  int observe_running;
  pthread_t observe;
  struct flyte_loop *observe_loop; /* woken on stop and reload (under mu) */
  flyte_events *events;
  struct flyte_outbox *outbox; /* NULL when FLYTE_OUTBOX is off */
  struct flyte_metrics *metrics;
};

/* Runs `flyte-host run`: returns the process exit status. */
int flyte_host_run(const flyte_config *cfg, const char *pack_path);

/* HTTP options for talking to the flyte-api. */
flyte_http_opts flyte_host_http_opts(flyte_host *h);

/* Waits on the host's condition until `deadline` (monotonic seconds) or a
 * broadcast; call with mu held. */
void flyte_host_wait(flyte_host *h, double deadline);

/* Sleeps up to `seconds` unless the host stops first: 1 slept, 0 stopped. */
int flyte_host_sleep(flyte_host *h, double seconds);

/* The likely cause of a 401/403, for the log. */
const char *flyte_host_denied_hint(const flyte_host *h);

/* The current generation (takes mu). */
flyte_gen *flyte_host_gen(flyte_host *h);

/* Builds a new generation from the pack file: loads and checks it. Returns
 * it with its state in *pack, or NULL with a message. */
flyte_gen *flyte_host_new_gen(flyte_host *h, flyte_pack **pack, char *err,
                              size_t errlen);

/* Starts the workers unless they run already (at start, or when a reload
 * brings the first command). Called by one thread at a time. */
int flyte_host_start_workers(flyte_host *h);

/* Told of each reload (any thread; set before flyte_host_run): ok, and for
 * a failure the error; `at` is RFC 3339, `serving` when the code that
 * serves was loaded. For flyte-host dev's page. */
typedef void (*flyte_reload_fn)(void *ud, int ok, const char *error,
                                const char *at, const char *serving);
void flyte_host_on_reload(flyte_reload_fn fn, void *ud);

/* reload.c: watching the pack's files and reloading on change or SIGHUP. */
int flyte_reload_start(flyte_host *h);
void flyte_reload_request(flyte_host *h); /* from the signal thread */
/* Stops the reloader: 1 once it ended, 0 when a reload still runs past
 * the grace period (it is left behind). */
int flyte_reload_stop(flyte_host *h);
/* Joins t, waiting at most until the shutdown grace's end plus extra
 * seconds: 1 when it ended. */
int flyte_host_join_in_grace(flyte_host *h, pthread_t t, double extra);

/* Wakes every worker's loop, and observe's: the host's state changed
 * (registration, polling, reload, stopping). */
void flyte_host_wake_workers(flyte_host *h);

/* A worker's loop lag, in seconds, for /metrics. */
void flyte_worker_note_lag(flyte_host *h, double seconds);

/* delivery.c: posting results and events, retried with backoff. */
typedef enum {
  FLYTE_DELIVERED = 0,
  FLYTE_REFUSED = -1,  /* 400 or similar: the API will never take it */
  FLYTE_ABANDONED = -2 /* the host stopped before it got through */
} flyte_delivery;

/* The retry policy of a delivery, for a caller that waits on its own (a
 * worker's loop): after each try, flyte_retry_verdict says what the
 * answer means, logs it, and on FLYTE_RETRY sets how long to wait. */
enum { FLYTE_RETRY = 1 };
typedef struct {
  int attempt, dup_tries, not_found, maybe_sent;
  double wait;
} flyte_retry;
void flyte_retry_init(flyte_retry *r, int maybe_sent);
/* status: the HTTP status, or -1 when no answer came (err says why). */
int flyte_retry_verdict(flyte_retry *r, long status, const char *err,
                        const char *what, const char *body, size_t len,
                        double *wait);

/* endpoint: "result" or "event"; what: for the log. maybe_sent: an
 * earlier process may have delivered it already (an outbox entry), so a
 * 500 "not PENDING" can mean it got through. */
flyte_delivery flyte_deliver(flyte_host *h, flyte_http *http,
                             const char *endpoint, const char *url,
                             const char *body, size_t len, const char *what,
                             int maybe_sent);

int flyte_events_start(flyte_host *h, size_t capacity);
/* Copies the body into the queue; -1 with a message when it is full. */
int flyte_events_push(flyte_host *h, const char *json, size_t len, char *err,
                      size_t errlen);
/* The queue's depth and the age of its oldest event, for /metrics. */
void flyte_events_gauges(flyte_host *h, long *depth, double *oldest);
/* Delivers what is queued (until the grace deadline), then stops. With
 * keep, threads stuck in pack code may still call flyte_events_push: the
 * queue is closed but not freed (the process is about to end). */
void flyte_events_stop(flyte_host *h, int keep);

#endif
