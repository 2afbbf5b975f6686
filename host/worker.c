/* worker.c - a worker thread: an event loop, Lua states, many actions.
 *
 * Each worker owns a loop (loop.c), a scheduler of coroutines (task.c),
 * an HTTP client for the flyte-api and the Lua states of the pack it runs
 * actions in: the current one, and older ones that finish what they run
 * after a reload. Everything an action does happens on this loop: its
 * take, its handler (a coroutine that yields while it waits), the post of
 * its result and the retries. Polling is shared by the workers: while
 * actions keep coming every worker takes; when none came, one worker (the
 * leader) polls after the poll interval and the others wait for news.
 */
#include "worker.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "task.h"

#define DENIED_BACKOFF_CAP 60.0
#define FINAL_DELIVERY 5.0 /* seconds to post results after the grace */
#define TRIM_AFTER 1.0     /* seconds idle before memory goes back */
/* Result posts a worker starts at once; more wait for one of them to end,
 * or POST_GRACE seconds at most. A sync of the journal releases its
 * results together: against an API that answers within the grace, they
 * go out over two connections one after another (echo with the outbox on,
 * against the stand-in: 23% more actions a second at 16% less CPU, and 5
 * connections in a 1,500-action burst instead of 35-39), and the API is
 * not handed a burst of new connections; against a slower one, none
 * waits more than the grace. */
#define POSTS_AT_ONCE 2
#define POST_GRACE 0.005
/* seconds a full collection or a state's close may take (they run the
 * pack's __gc finalizers, which Lua cannot interrupt) before the
 * watchdog takes the worker for stuck */
#define GC_BOUND 5.0
/* seconds starting a handler may take: building a state (it runs the
 * pack's file) and turning the input into Lua values */
#define START_BOUND 30.0

enum { OWNER_WORKER = 0, OWNER_MAIN, OWNER_DELIVERING };
/* what an action does once its journal record is on disk */
enum { AFTER_NOTHING = 0, AFTER_TAKEN_RUN, AFTER_RESULT_POST };

/* A Lua state of this worker. */
typedef struct wstate {
  struct wstate *next;
  flyte_pack *pack;
  flyte_gen *gen;
  int actions; /* running in it */
  int retired; /* takes no more actions (memory, or cut mid-computation) */
} wstate;

typedef struct action {
  struct action *prev, *next;
  flyte_worker *w;
  flyte_action a; /* from the take: owned */
  flyte_pack_action run;
  wstate *st;
  flyte_task *task; /* while the handler runs */
  double deadline;  /* of the handler, monotonic; 0 for none */
  long entry;       /* in the outbox, or -1 */
  uint64_t durable_at; /* the journal record it waits to reach the disk */
  int after_sync;      /* AFTER_*: what it does once it has */
  struct action *next_sync; /* in the worker's FIFO of those waiting */
  atomic_int owner; /* OWNER_*: who completes it */
  flyte_pack_result res;
  /* delivery */
  flyte_http_call *call;
  struct action *post_prev, *post_next; /* waiting to post (post_queued) */
  double post_queued; /* when it began to wait, or 0 */
  flyte_timer retry;
  flyte_retry r;
  double posted_at;
  int adopted; /* left by a host that died: no handler, no metrics */
  char what[300];
} action;

struct flyte_worker {
  flyte_host *h;
  int index;
  pthread_t thread;
  flyte_loop *loop;
  flyte_sched *sched;
  flyte_http *http; /* the flyte-api's, with the token */
  wstate *states;   /* newest first */
  pthread_mutex_t mu; /* the action list, for flyte_worker_complete_stuck */
  action *actions;
  atomic_int nactions;
  flyte_http_call *take; /* the take in flight, or NULL */
  flyte_take_scan *take_scan; /* its reply, when too large to keep */
  int take_scan_failed;       /* ... and none could be made */
  uint64_t take_intent;  /* its intent in the journal, or 0 */
  action *sync_head, *sync_tail; /* waiting for the disk, oldest first */
  int sync_listening;    /* the outbox wakes the loop after each sync */
  /* 1 while the loop sleeps with actions waiting for the disk: only then
   * does a sync need to wake it (a busy loop looks each round) */
  atomic_int sync_sleeping;
  double take_started;
  int leading;
  flyte_timer poll_timer;
  flyte_timer trim_timer;
  int posts;                     /* result posts in flight */
  action *post_head, *post_tail; /* waiting for one to end, oldest first */
  flyte_timer post_timer;        /* the grace of the oldest */
  double stop_deadline; /* the one applied to the running handlers */
  atomic_int ended;
  /* set by the watchdog (flyte_worker_check_stuck): the thread is stuck
   * in code the hook cannot reach; its actions were handed over, and if
   * it ever comes back it ends */
  atomic_int stuck;
  atomic_int handed_over; /* the watchdog is done with its actions */
  const flyte_task *stuck_root; /* the task it was stuck in */
  pthread_mutex_t adopt_mu; /* what other threads hand over */
  action *adopted;
  int adopt_closed; /* the loop has ended or is ending: none is taken */
};

static void free_action(action *x);
static void post(action *x);
static void post_now(action *x);
static void start_handler(flyte_worker *w, action *x);
static void post_adopted(flyte_worker *w);
static int adopt_close(flyte_worker *w);
static void retire_stuck(flyte_worker *w);

/* ---- the journal's group commit ------------------------------------------ */

/* Queues x until journal record seq is on disk, unless it is already.
 * Returns 1 when x waits (it goes on in release_synced), 0 to go on now.
 * One fdatasync covers every record appended meanwhile, by every worker:
 * the worker takes other actions while these wait. */
static int wait_for_disk(flyte_worker *w, action *x, uint64_t seq,
                         int after) {
  flyte_outbox *o = w->h->outbox;
  if (o == NULL || flyte_outbox_durable(o) >= seq) return 0;
  x->durable_at = seq;
  x->after_sync = after;
  x->next_sync = NULL;
  if (w->sync_tail)
    w->sync_tail->next_sync = x;
  else
    w->sync_head = x;
  w->sync_tail = x;
  return 1;
}

/* Lets go on the actions whose records are on disk now: records of one
 * worker are appended in order, so the FIFO is in order too. */
static void release_synced(flyte_worker *w) {
  flyte_outbox *o = w->h->outbox;
  if (o == NULL || w->sync_head == NULL) return;
  uint64_t durable = flyte_outbox_durable(o);
  while (w->sync_head && w->sync_head->durable_at <= durable) {
    action *x = w->sync_head;
    w->sync_head = x->next_sync;
    if (w->sync_head == NULL) w->sync_tail = NULL;
    int after = x->after_sync;
    x->after_sync = AFTER_NOTHING;
    x->next_sync = NULL;
    if (after == AFTER_TAKEN_RUN)
      start_handler(w, x);
    else
      post(x);
  }
}

/* How long the loop may sleep, given what waits for the disk: before it
 * sleeps with actions waiting, it says so, then looks again (the syncer
 * stores the durable sequence before it looks at the flag, so one of the
 * two sees the other). */
static double sleep_for_sync(flyte_worker *w, double wait) {
  if (w->sync_head == NULL || wait == 0) return wait;
  if (!w->sync_listening) return wait < 0 || wait > 0.001 ? 0.001 : wait;
  atomic_store(&w->sync_sleeping, 1);
  if (flyte_outbox_durable(w->h->outbox) >= w->sync_head->durable_at) {
    atomic_store(&w->sync_sleeping, 0);
    return 0;
  }
  return wait;
}

/* From the outbox's syncer: wake the loop when it sleeps with actions
 * waiting for the disk; a busy one finds them released next round. */
static void on_synced(void *ud) {
  flyte_worker *w = ud;
  if (atomic_load(&w->sync_sleeping) && atomic_exchange(&w->sync_sleeping, 0))
    flyte_loop_wake(w->loop);
}

/* ---- the host's polling ---------------------------------------------------- */

static int reserve(flyte_host *h) {
  int n = atomic_load(&h->in_flight);
  while (n < h->cfg->concurrency)
    if (atomic_compare_exchange_weak(&h->in_flight, &n, n + 1)) {
      /* busy from idle: the watchdog looks often from now on */
      if (n == 0) {
        pthread_mutex_lock(&h->mu);
        pthread_cond_broadcast(&h->cond);
        pthread_mutex_unlock(&h->mu);
      }
      return 1;
    }
  return 0;
}

static void unreserve(flyte_host *h) {
  if (atomic_fetch_sub(&h->in_flight, 1) == h->cfg->concurrency)
    flyte_host_wake_workers(h); /* one may take again */
}

/* Whether this worker should take now: a copy of the take URL (caller
 * frees), or NULL; *again: when to look again (0: on a wake). */
static char *take_turn(flyte_worker *w, double *again) {
  flyte_host *h = w->h;
  char *url = NULL;
  *again = 0;
  pthread_mutex_lock(&h->mu);
  if (!atomic_load(&h->stopping) && h->registered &&
      h->gen->info.ncommands > 0 && h->api_pack.take_url) {
    if (h->hot) {
      url = strdup(h->api_pack.take_url);
    } else if (!h->leader) {
      if (flyte_monotime() >= h->next_poll) {
        h->leader = 1;
        w->leading = 1;
        url = strdup(h->api_pack.take_url);
      } else {
        *again = h->next_poll;
      }
    }
  }
  pthread_mutex_unlock(&h->mu);
  return url;
}

static void after_take(flyte_host *h, flyte_take_result r, const char *err,
                       int leading) {
  pthread_mutex_lock(&h->mu);
  double wait = h->cfg->poll_interval;
  int news = leading; /* the answer is in: another worker may lead */
  if (leading) h->leader = 0;
  switch (r) {
  case FLYTE_TAKE_ACTION:
    h->denied = 0;
    clock_gettime(CLOCK_REALTIME, &h->last_poll);
    if (!h->hot) {
      h->hot = 1; /* more may be waiting: all take */
      news = 1;
    }
    pthread_mutex_unlock(&h->mu);
    if (news) flyte_host_wake_workers(h);
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
  if (h->hot || leading) news = 1;
  h->hot = 0;
  h->next_poll = flyte_monotime() + wait;
  pthread_cond_broadcast(&h->cond); /* the main thread: need_register */
  pthread_mutex_unlock(&h->mu);
  if (news) flyte_host_wake_workers(h);
}

/* ---- Lua states -------------------------------------------------------------- */

static void close_idle_states(flyte_worker *w, flyte_gen *current) {
  for (wstate **p = &w->states; *p;) {
    wstate *st = *p;
    if (st->actions == 0 && (st->retired || st->gen != current)) {
      *p = st->next;
      double guard = flyte_sched_guard(w->sched, GC_BOUND);
      flyte_pack_close(st->pack);
      flyte_sched_unguard(w->sched, guard);
      free(st);
    } else {
      p = &st->next;
    }
  }
}

/* The state new actions run in: the current generation's, built when
 * needed; an older one when the new code cannot be built (the file
 * changed again under us). NULL with a message when there is none. */
static wstate *current_state(flyte_worker *w, char *err, size_t errlen) {
  flyte_host *h = w->h;
  flyte_gen *g = flyte_host_gen(h);
  wstate *st = w->states;
  if (st && st->gen == g && !st->retired) return st;
  flyte_pack *p = flyte_pack_open(h->pack_path, &g->env, h->cfg->memory_limit,
                                  &g->sources, err, errlen);
  if (p == NULL) {
    flyte_error("worker %d cannot build a Lua state for the pack: %s",
                w->index, err);
    for (st = w->states; st; st = st->next)
      if (!st->retired) return st;
    return NULL;
  }
  st = calloc(1, sizeof *st);
  if (st == NULL) {
    flyte_pack_close(p);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (flyte_sched_attach(w->sched, flyte_pack_state(p)) != 0) {
    flyte_pack_close(p);
    free(st);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  st->pack = p;
  st->gen = g;
  st->next = w->states;
  w->states = st;
  close_idle_states(w, g);
  return st;
}

/* ---- delivering a result ---------------------------------------------------- */


/* The action is over: its result went (or never will). */
static void action_over(action *x, flyte_delivery d) {
  flyte_worker *w = x->w;
  flyte_host *h = w->h;
  /* an action handed over (its worker was stuck) is another's to end */
  if (atomic_load(&x->owner) == OWNER_MAIN) {
    free_action(x);
    return;
  }
  if (x->entry > 0 && d != FLYTE_ABANDONED)
    flyte_outbox_done(h->outbox, x->entry);
  if (x->adopted) {
    if (d == FLYTE_DELIVERED) flyte_info("outbox: delivered the %s", x->what);
    free_action(x);
    return;
  }
  flyte_metrics_action_done(h->metrics, x->a.command,
                            d == FLYTE_ABANDONED ? "abandoned"
                                                 : x->res.outcome,
                            x->res.seconds);
  if (d == FLYTE_DELIVERED &&
      flyte_log_enabled(x->res.fatal ? FLYTE_LOG_WARN : FLYTE_LOG_INFO)) {
    char ms[32];
    snprintf(ms, sizeof ms, "%.3f", x->res.seconds * 1000);
    flyte_log_field fields[] = {
        {"action", x->a.id},   {"command", x->a.command},
        {"event", x->res.event}, {"duration_ms", ms},
        {"outcome", x->res.outcome}, {NULL, NULL}};
    flyte_log_with(x->res.fatal ? FLYTE_LOG_WARN : FLYTE_LOG_INFO, fields, 0,
                   "action %s: %s -> %s (%.1f ms)", x->a.id, x->a.command,
                   x->res.event, x->res.seconds * 1000);
  }
  free_action(x);
}

/* The last moment a result may still be posted once the host stops. */
static double final_deadline(flyte_host *h) {
  pthread_mutex_lock(&h->mu);
  double d = h->stop_deadline + FINAL_DELIVERY;
  pthread_mutex_unlock(&h->mu);
  return d;
}

/* ---- pacing result posts (POSTS_AT_ONCE) ------------------------------------ */

static void post_unqueue(flyte_worker *w, action *x) {
  if (x->post_prev)
    x->post_prev->post_next = x->post_next;
  else
    w->post_head = x->post_next;
  if (x->post_next)
    x->post_next->post_prev = x->post_prev;
  else
    w->post_tail = x->post_prev;
  x->post_prev = x->post_next = NULL;
  x->post_queued = 0;
}

static void post_due(void *ud);

/* The grace timer follows the oldest waiting post. */
static void post_timer_set(flyte_worker *w) {
  if (w->post_head)
    flyte_timer_start(w->loop, &w->post_timer,
                      w->post_head->post_queued + POST_GRACE, post_due, w);
  else
    flyte_timer_stop(w->loop, &w->post_timer);
}

static void post_wait(action *x) {
  flyte_worker *w = x->w;
  x->post_queued = flyte_monotime();
  x->post_next = NULL;
  x->post_prev = w->post_tail;
  if (w->post_tail)
    w->post_tail->post_next = x;
  else
    w->post_head = x;
  w->post_tail = x;
  if (w->post_head == x) post_timer_set(w);
}

/* Starts waiting posts: the oldest while fewer than POSTS_AT_ONCE are in
 * flight, and any past its grace whatever the number (the API is slower
 * than the grace: they go out on more connections). */
static void post_waiting(flyte_worker *w) {
  double now = -1;
  int stopping = atomic_load(&w->h->stopping);
  while (w->post_head) {
    action *x = w->post_head;
    if (w->posts >= POSTS_AT_ONCE && !stopping) {
      if (now < 0) now = flyte_monotime();
      if (x->post_queued + POST_GRACE > now) break;
    }
    post_unqueue(w, x);
    post_now(x);
  }
  post_timer_set(w);
}

static void post_due(void *ud) { post_waiting(ud); }

/* A post ended: the oldest waiting one takes its place. */
static void post_ended(flyte_worker *w) {
  w->posts--;
  if (w->post_head) post_waiting(w);
}

static void on_retry(void *ud) {
  action *x = ud;
  flyte_host *h = x->w->h;
  if (atomic_load(&h->cancel) ||
      (atomic_load(&h->stopping) && flyte_monotime() >= final_deadline(h))) {
    flyte_error("%s abandoned: the host stopped before the flyte-api took "
                "it", x->what);
    action_over(x, FLYTE_ABANDONED);
    return;
  }
  post(x);
}

static void posted(flyte_http_call *call, void *ud) {
  action *x = ud;
  flyte_host *h = x->w->h;
  flyte_http_resp r;
  char err[512];
  long status = -1;
  x->call = NULL;
  if (flyte_http_result(call, &r) == 0) {
    status = r.status;
    err[0] = '\0';
    if (status != 202) {
      int n = (int)(r.body_len < 200 ? r.body_len : 200);
      snprintf(err, sizeof err, "post: HTTP %ld%s%.*s", status,
               n ? ": " : "", n, r.body);
    }
  } else {
    snprintf(err, sizeof err, "post: %s", r.error);
  }
  flyte_metrics_api(h->metrics, "result", status < 0 ? 0 : status,
                    flyte_monotime() - x->posted_at);
  flyte_http_release(call);
  post_ended(x->w); /* the next may reuse this call's connection */
  double wait = 0;
  int v = flyte_retry_verdict(&x->r, status, err, x->what, x->res.body,
                              strlen(x->res.body), &wait);
  if (v != FLYTE_RETRY) {
    action_over(x, (flyte_delivery)v);
    return;
  }
  double due = flyte_monotime() + wait;
  if (atomic_load(&h->stopping) && due > final_deadline(h))
    due = final_deadline(h);
  flyte_timer_start(x->w->loop, &x->retry, due, on_retry, x);
}

static void post(action *x) {
  flyte_worker *w = x->w;
  /* in turn, behind those waiting; not once the host is stopping (a post
   * then goes at once, before the final deadline) */
  if ((w->post_head || w->posts >= POSTS_AT_ONCE) &&
      atomic_load(&x->owner) != OWNER_MAIN && !atomic_load(&w->h->stopping))
    post_wait(x);
  else
    post_now(x);
}

static void post_now(action *x) {
  char err[256];
  if (atomic_load(&x->owner) == OWNER_MAIN) { /* handed over: another posts */
    action_over(x, FLYTE_REFUSED);
    return;
  }
  flyte_http_req req = {.method = "POST", .url = x->a.result_url,
                        .body = x->res.body, .body_len = strlen(x->res.body),
                        .json = 1};
  x->posted_at = flyte_monotime();
  if (flyte_api_url_allowed(x->a.result_url, err, sizeof err) != 0) {
    flyte_error("%s: post: %s", x->what, err);
    action_over(x, FLYTE_REFUSED);
    return;
  }
  x->call = flyte_http_start(x->w->http, x->w->loop, &req, posted, x, err,
                             sizeof err);
  if (x->call) x->w->posts++;
  if (x->call == NULL) { /* out of memory: try again later */
    double wait = 0;
    flyte_retry_verdict(&x->r, -1, err, x->what, x->res.body,
                        strlen(x->res.body), &wait);
    flyte_timer_start(x->w->loop, &x->retry, flyte_monotime() + wait,
                      on_retry, x);
  }
}

/* ---- running an action --------------------------------------------------------- */

/* A full collection of st, if it is still open (its finalizers run:
 * guarded). */
static void collect(flyte_worker *w, wstate *st) {
  for (wstate *s = w->states; s; s = s->next)
    if (s == st) {
      double guard = flyte_sched_guard(w->sched, GC_BOUND);
      lua_gc(flyte_pack_state(st->pack), LUA_GCCOLLECT);
      flyte_sched_unguard(w->sched, guard);
      return;
    }
}

static int handler_finish(flyte_task *t, action *x);

static void handler_done(flyte_task *t, void *ud) {
  action *x = ud;
  flyte_worker *w = x->w;
  wstate *st = x->st;
  /* a handler cut mid-computation, or out of memory: what it piled up is
   * garbage now; give it back at once (the FATAL's post may need the
   * memory, and the state closes only once the actions in it end) */
  if (handler_finish(t, x)) collect(w, st); /* x may be gone */
}

/* Returns whether the handler broke its state. */
static int handler_finish(flyte_task *t, action *x) {
  flyte_worker *w = x->w;
  flyte_host *h = w->h;
  char err[512];
  pthread_mutex_lock(&w->mu); /* the watchdog reads it */
  x->task = NULL;
  pthread_mutex_unlock(&w->mu);
  flyte_pack_finish(&x->run, t, &x->res);
  x->st->actions--;
  int broken = x->res.state_broken;
  if (broken) x->st->retired = 1;
  int mine = OWNER_WORKER;
  if (!atomic_compare_exchange_strong(&x->owner, &mine, OWNER_DELIVERING)) {
    /* handed over (the hand-over counted it out of the metrics) */
    flyte_warn("action %s (%s) finished after the host posted its FATAL; "
               "its result is dropped",
               x->a.id, x->a.command);
    free(x->res.body);
    x->res.body = NULL;
    x->res.outcome = "abandoned";
    action_over(x, FLYTE_REFUSED);
    return broken;
  }
  flyte_metrics_in_flight(h->metrics, x->a.command, -1);
  if (x->res.body == NULL) {
    flyte_error("action %s: out of memory building its result", x->a.id);
    action_over(x, FLYTE_ABANDONED);
    return broken;
  }
  if (x->entry > 0) {
    uint64_t seq;
    if (flyte_outbox_append_result(h->outbox, (uint64_t)x->entry,
                                   x->a.result_url, x->a.command, x->a.id,
                                   x->res.body, strlen(x->res.body), &seq,
                                   err, sizeof err) != 0)
      flyte_error("outbox: %s", err);
    else if (wait_for_disk(w, x, seq, AFTER_RESULT_POST))
      return broken; /* posted once the result is on disk */
  }
  post(x);
  return broken;
}

static void run_action(flyte_worker *w, flyte_action *a, uint64_t intent) {
  flyte_host *h = w->h;
  char err[1024];
  action *x = calloc(1, sizeof *x);
  if (x == NULL) {
    flyte_error("action %s: out of memory; it stays PENDING", a->id);
    flyte_action_free(a);
    unreserve(h);
    return;
  }
  x->w = w;
  x->a = *a; /* takes ownership */
  x->entry = -1;
  flyte_retry_init(&x->r, 0);
  snprintf(x->what, sizeof x->what, "result of action %s (%s)", x->a.id,
           x->a.command);
  flyte_log_field took[] = {{"action", x->a.id}, {"command", x->a.command},
                            {NULL, NULL}};
  flyte_log_with(FLYTE_LOG_DEBUG, took, 0, "action %s: took it; running '%s'",
                 x->a.id, x->a.command);
  uint64_t seq = 0;
  if (h->outbox) {
    /* on disk before the handler runs: a crash from here on still ends
     * with a result for this action */
    if (flyte_outbox_append_taken(h->outbox, intent, x->a.result_url,
                                  x->a.command, x->a.id, &seq, err,
                                  sizeof err) != 0) {
      flyte_error("outbox: %s", err);
      seq = 0;
    }
    x->entry = seq ? (long)seq : -1;
  }
  pthread_mutex_lock(&w->mu); /* complete_stuck may look from now on */
  x->next = w->actions;
  if (w->actions) w->actions->prev = x;
  w->actions = x;
  pthread_mutex_unlock(&w->mu);
  atomic_fetch_add(&w->nactions, 1);
  flyte_metrics_action_taken(h->metrics);
  if (seq && wait_for_disk(w, x, seq, AFTER_TAKEN_RUN))
    return; /* runs once the taken record is on disk */
  start_handler(w, x);
}

/* Runs the handler of an action whose taken record is on disk. */
static void start_handler(flyte_worker *w, action *x) {
  flyte_host *h = w->h;
  char err[1024];
  flyte_metrics_in_flight(h->metrics, x->a.command, 1);
  x->run = (flyte_pack_action){NULL,         x->a.id,          x->a.command,
                               x->a.input,   x->a.input_error, h->cfg->handler_timeout,
                               h->cfg->shutdown_grace};
  /* Lua work of the host's own: building a state runs the pack's code, and
   * turning the input into Lua values may run a collection step, and with
   * it a __gc finalizer the pack left: guarded like a run */
  double guard = flyte_sched_guard(w->sched, START_BOUND);
  x->st = current_state(w, err, sizeof err);
  flyte_task *task = x->st ? flyte_pack_start(x->st->pack, w->sched, &x->run,
                                              handler_done, x, err, sizeof err)
                           : NULL;
  flyte_sched_unguard(w->sched, guard);
  pthread_mutex_lock(&w->mu); /* the watchdog reads it */
  x->task = task;
  pthread_mutex_unlock(&w->mu);
  if (x->task == NULL) {
    char text[1200];
    snprintf(text, sizeof text, "command '%s' could not start: %s",
             x->a.command, err);
    flyte_metrics_in_flight(h->metrics, x->a.command, -1);
    x->res.body = flyte_api_fatal_body(text);
    snprintf(x->res.event, sizeof x->res.event, "FATAL");
    x->res.fatal = 1;
    x->res.outcome = "fatal";
    x->st = NULL;
    int mine = OWNER_WORKER;
    if (!atomic_compare_exchange_strong(&x->owner, &mine, OWNER_DELIVERING))
      action_over(x, FLYTE_REFUSED); /* handed over meanwhile */
    else if (x->res.body)
      post(x);
    else
      action_over(x, FLYTE_ABANDONED);
    return;
  }
  x->st->actions++;
  x->deadline = x->run.timeout > 0 ? flyte_monotime() + x->run.timeout : 0;
  if (w->stop_deadline > 0 &&
      (x->deadline == 0 || w->stop_deadline < x->deadline))
    flyte_task_set_deadline(x->task, w->stop_deadline, FLYTE_CALL_STOPPED);
}

static void free_action(action *x) {
  flyte_worker *w = x->w;
  if (x->after_sync != AFTER_NOTHING) { /* still waiting for the disk */
    action **p = &w->sync_head, *prev = NULL;
    while (*p && *p != x) {
      prev = *p;
      p = &(*p)->next_sync;
    }
    if (*p) *p = x->next_sync;
    if (w->sync_tail == x) w->sync_tail = prev;
  }
  if (x->task) flyte_task_free(x->task);
  if (x->post_queued) {
    post_unqueue(w, x);
    post_timer_set(w);
  }
  if (x->call) {
    flyte_http_release(x->call);
    x->call = NULL;
    /* the waiting ones go on from the loop, not from inside a caller
     * that walks the actions */
    w->posts--;
    if (w->post_head)
      flyte_timer_start(w->loop, &w->post_timer, flyte_monotime(), post_due,
                        w);
  }
  flyte_timer_stop(w->loop, &x->retry);
  pthread_mutex_lock(&w->mu);
  if (x->prev)
    x->prev->next = x->next;
  else
    w->actions = x->next;
  if (x->next) x->next->prev = x->prev;
  pthread_mutex_unlock(&w->mu);
  atomic_fetch_sub(&w->nactions, 1);
  /* handed over: the hand-over gave its place back */
  if (atomic_load(&x->owner) != OWNER_MAIN) unreserve(w->h);
  flyte_action_free(&x->a);
  free(x->res.body);
  free(x);
  close_idle_states(w, flyte_host_gen(w->h));
}

/* ---- taking ------------------------------------------------------------------ */

static void taken(flyte_http_call *call, void *ud) {
  flyte_worker *w = ud;
  flyte_host *h = w->h;
  flyte_http_resp r;
  flyte_action a;
  char err[1024];
  flyte_take_result res;
  w->take = NULL;
  if (flyte_http_result(call, &r) == 0) {
    flyte_metrics_api(h->metrics, "take", r.status,
                      flyte_monotime() - w->take_started);
    res = r.overflowed && w->take_scan
              ? flyte_take_scan_finish(w->take_scan, r.status, r.overflowed,
                                       flyte_http_max_body(w->http), &a, err,
                                       sizeof err)
              : flyte_api_parse_take(r.status, r.body, r.body_len, &a, err,
                                     sizeof err);
    if (r.overflowed)
      flyte_warn("take: a reply of %zu bytes, over the host's limit of %zu "
                 "bytes: %s",
                 r.overflowed, flyte_http_max_body(w->http),
                 res == FLYTE_TAKE_ACTION ? "its action ends FATAL"
                                          : "no action could be read");
  } else {
    flyte_metrics_api(h->metrics, "take", 0,
                      flyte_monotime() - w->take_started);
    snprintf(err, sizeof err, "take: %s", r.error);
    res = FLYTE_TAKE_ERROR;
  }
  flyte_http_release(call);
  flyte_take_scan_free(w->take_scan);
  w->take_scan = NULL;
  w->take_scan_failed = 0;
  int leading = w->leading;
  w->leading = 0;
  uint64_t intent = w->take_intent;
  w->take_intent = 0;
  after_take(h, res, err, leading);
  if (res == FLYTE_TAKE_ACTION && atomic_load(&w->stuck)) {
    /* the worker came back from being stuck with this reply: it runs
     * nothing more; the action ends FATAL from another */
    char *body = flyte_api_fatal_body(
        "the host's worker that took this action had been replaced while "
        "it was stuck in pack code; it was not run");
    flyte_worker *to = NULL;
    int n = atomic_load(&h->nworkers);
    for (int i = 0; i < n && to == NULL; i++)
      if (flyte_worker_alive(h->workers[i])) to = h->workers[i];
    if (!body || !to ||
        flyte_worker_adopt(to, a.result_url, body, -1, "FATAL of an action "
                           "taken by a replaced worker", 0) != 0)
      flyte_error("action %s: taken by a replaced worker and not completed; "
                  "it stays PENDING", a.id);
    free(body);
    if (intent) flyte_outbox_done(h->outbox, (long)intent);
    flyte_action_free(&a);
    unreserve(h);
    return;
  }
  if (res == FLYTE_TAKE_ACTION) {
    run_action(w, &a, intent); /* its taken record answers the intent */
    return;
  }
  if (intent) flyte_outbox_done(h->outbox, (long)intent);
  unreserve(h);
}

static void poll_due(void *ud) { (void)ud; /* the loop looks again */ }

/* A take reply over the client's cap streams through here: only its
 * top-level command and links are kept, so that the action it hands out
 * can still be completed (with a FATAL naming the size). */
static void take_overflow(void *ud, const char *p, size_t n) {
  flyte_worker *w = ud;
  if (w->take_scan_failed) return;
  if (w->take_scan == NULL && (w->take_scan = flyte_take_scan_new()) == NULL) {
    /* out of memory: never start later, in the middle of the body */
    w->take_scan_failed = 1;
    return;
  }
  flyte_take_scan_feed(w->take_scan, p, n);
}

/* Takes an action when this worker should: nothing ready to run on it,
 * room in the host, and the host's polling says so. */
static void maybe_take(flyte_worker *w) {
  flyte_host *h = w->h;
  if (w->take || atomic_load(&h->stopping) || flyte_sched_has_ready(w->sched))
    return;
  if (!reserve(h)) return;
  double again;
  char *url = take_turn(w, &again);
  if (url == NULL) {
    /* no wake: a worker that saw the host full meanwhile would not have
     * had a turn either */
    atomic_fetch_sub(&h->in_flight, 1);
    if (again > 0) flyte_timer_start(w->loop, &w->poll_timer, again, poll_due,
                                     w);
    return;
  }
  char err[256];
  flyte_http_req req = {.method = "POST", .url = url, .json = 1,
                        .overflow = take_overflow, .overflow_ud = w};
  w->take_started = flyte_monotime();
  char why[200] = "";
  if (flyte_api_url_allowed(url, why, sizeof why) == 0) {
    /* the take window: an action the API hands out in a reply that dies
     * with this process is lost; the intent lets the next start say so */
    if (h->outbox &&
        flyte_outbox_append_intent(h->outbox, url, &w->take_intent, err,
                                   sizeof err) != 0) {
      flyte_error("outbox: %s", err);
      w->take_intent = 0;
    }
    w->take = flyte_http_start(w->http, w->loop, &req, taken, w, why,
                               sizeof why);
  }
  free(url);
  if (w->take == NULL) {
    if (w->take_intent) flyte_outbox_done(h->outbox, (long)w->take_intent);
    w->take_intent = 0;
    snprintf(err, sizeof err, "take: %s", why);
    int leading = w->leading;
    w->leading = 0;
    after_take(h, FLYTE_TAKE_ERROR, err, leading);
    unreserve(h);
  }
}

/* ---- the thread ----------------------------------------------------------------- */

/* Something changed in the host: stopping moves every handler's deadline
 * to the end of the grace period, and ends sleeps. */
static void on_wake(void *ud) {
  flyte_worker *w = ud;
  flyte_host *h = w->h;
  if (!atomic_load(&h->stopping)) return;
  pthread_mutex_lock(&h->mu);
  double dl = h->stop_deadline;
  pthread_mutex_unlock(&h->mu);
  if (dl != w->stop_deadline) {
    w->stop_deadline = dl;
    for (action *x = w->actions; x; x = x->next)
      if (x->task && (x->deadline == 0 || dl < x->deadline))
        flyte_task_set_deadline(x->task, dl, FLYTE_CALL_STOPPED);
  }
  flyte_sched_interrupt_sleeps(w->sched);
  if (atomic_load(&h->cancel)) /* a second signal: stop posting now */
    for (action *x = w->actions, *next; x; x = next) {
      next = x->next;
      if (x->task == NULL) {
        flyte_error("%s abandoned: the host was told to stop now", x->what);
        action_over(x, FLYTE_ABANDONED);
      }
    }
}

/* A burst leaves freed memory in malloc's arenas (each action's input,
 * result, requests, coroutine): once the worker has been idle a moment,
 * give it back to the system, at most once a second. */
static void trim(void *ud) {
  flyte_worker *w = ud;
  if (atomic_load(&w->nactions) != 0) return;
  /* an idle state does not collect: its garbage (the inputs and results
   * of the burst) would stay, and malloc could not give it back */
  double guard = flyte_sched_guard(w->sched, GC_BOUND);
  for (wstate *st = w->states; st; st = st->next)
    lua_gc(flyte_pack_state(st->pack), LUA_GCCOLLECT);
  flyte_sched_unguard(w->sched, guard);
  malloc_trim(0);
  flyte_memory_reserve(); /* again, if an action's FATAL used it */
}

static void *worker_main(void *arg) {
  flyte_worker *w = arg;
  flyte_host *h = w->h;
  int had_actions = 0;
  for (;;) {
    if (atomic_load(&w->stuck)) { /* replaced while it was stuck */
      retire_stuck(w);
      break;
    }
    post_adopted(w);
    release_synced(w);
    /* pack code may run a while: the taken records of this round first */
    if (h->outbox && flyte_sched_has_ready(w->sched))
      flyte_outbox_flush(h->outbox);
    flyte_sched_run(w->sched);
    if (atomic_load(&w->stuck)) { /* replaced meanwhile */
      retire_stuck(w);
      break;
    }
    maybe_take(w);
    int n = atomic_load(&w->nactions);
    if (n > 0) {
      had_actions = 1;
    } else if (had_actions) {
      had_actions = 0;
      flyte_timer_start(w->loop, &w->trim_timer,
                        flyte_monotime() + TRIM_AFTER, trim, w);
    }
    if (atomic_load(&h->stopping) && n == 0 && w->take == NULL &&
        adopt_close(w))
      break;
    /* a taken record is written before the loop sleeps (it must survive
     * the process, and waits in memory until the next take intent or
     * here); without a sync listener (more than the outbox takes), the
     * loop looks at the disk every millisecond while an action waits */
    if (h->outbox) flyte_outbox_flush(h->outbox);
    double wait = sleep_for_sync(w, flyte_sched_has_ready(w->sched) ? 0 : -1);
    int rc = flyte_loop_run_once(w->loop, wait);
    atomic_store(&w->sync_sleeping, 0);
    if (rc != 0) {
      flyte_error("worker %d: the event loop failed", w->index);
      break;
    }
    flyte_worker_note_lag(h, flyte_loop_take_lag(w->loop));
  }
  pthread_mutex_lock(&w->adopt_mu); /* whatever way the loop ended */
  w->adopt_closed = 1;
  pthread_mutex_unlock(&w->adopt_mu);
  atomic_store(&w->ended, 1);
  pthread_mutex_lock(&h->mu);
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

flyte_worker *flyte_worker_start(flyte_host *h, int index) {
  char err[256];
  flyte_worker *w = calloc(1, sizeof *w);
  if (w == NULL) return NULL;
  w->h = h;
  w->index = index;
  pthread_mutex_init(&w->mu, NULL);
  pthread_mutex_init(&w->adopt_mu, NULL);
  flyte_http_opts opts = flyte_host_http_opts(h);
  w->loop = flyte_loop_new(err, sizeof err);
  w->sched = w->loop ? flyte_sched_new(w->loop) : NULL;
  w->http = flyte_http_new(&opts);
  if (w->loop == NULL || w->sched == NULL || w->http == NULL) {
    flyte_error("worker %d: %s", index, w->loop ? "out of memory" : err);
    flyte_worker_free(w);
    return NULL;
  }
  /* the actions the host may hold, each with a request at most, and the
   * worker's own (its take, results handed over to it) */
  flyte_loop_set_connections(w->loop, (long)h->cfg->concurrency + 16);
  flyte_loop_on_wake(w->loop, on_wake, w);
  w->sync_listening =
      h->outbox && flyte_outbox_on_sync(h->outbox, on_synced, w) == 0;
  if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
    /* the outbox's syncer holds w as a listener from now on and may call
     * it: w stays (a leak, on a start that fails anyway) */
    if (!w->sync_listening) flyte_worker_free(w);
    return NULL;
  }
  return w;
}

void flyte_worker_wake(flyte_worker *w) { flyte_loop_wake(w->loop); }

int flyte_worker_adopt(flyte_worker *w, const char *url, const char *body,
                       long entry, const char *what, int maybe_sent) {
  action *x = calloc(1, sizeof *x);
  if (x == NULL) return -1;
  x->w = w;
  x->adopted = 1;
  x->entry = entry;
  x->a.result_url = strdup(url);
  x->a.command = strdup("?");
  x->a.id = strdup("?");
  x->res.body = strdup(body);
  if (!x->a.result_url || !x->a.command || !x->a.id || !x->res.body) {
    flyte_action_free(&x->a);
    free(x->res.body);
    free(x);
    return -1;
  }
  x->res.outcome = "success";
  atomic_store(&x->owner, OWNER_DELIVERING);
  flyte_retry_init(&x->r, maybe_sent);
  snprintf(x->what, sizeof x->what, "%s", what);
  pthread_mutex_lock(&w->adopt_mu);
  if (w->adopt_closed) { /* its loop has ended: the caller posts it */
    pthread_mutex_unlock(&w->adopt_mu);
    flyte_action_free(&x->a);
    free(x->res.body);
    free(x);
    return -1;
  }
  x->next = w->adopted;
  w->adopted = x;
  /* held like an action: the worker does not end before it is posted */
  atomic_fetch_add(&w->h->in_flight, 1);
  atomic_fetch_add(&w->nactions, 1);
  pthread_mutex_unlock(&w->adopt_mu);
  flyte_loop_wake(w->loop);
  return 0;
}

/* The loop may end: nothing was handed over since it last looked, and
 * from now on nothing is (flyte_worker_adopt fails, and its caller posts
 * what it had). */
static int adopt_close(flyte_worker *w) {
  pthread_mutex_lock(&w->adopt_mu);
  int empty = w->adopted == NULL;
  if (empty) w->adopt_closed = 1;
  pthread_mutex_unlock(&w->adopt_mu);
  return empty;
}

/* What other threads handed over so far: the list is the caller's now. */
static action *take_adopted(flyte_worker *w) {
  pthread_mutex_lock(&w->adopt_mu);
  action *list = w->adopted;
  w->adopted = NULL;
  pthread_mutex_unlock(&w->adopt_mu);
  return list;
}

/* Posts what other threads handed over (on the loop's thread). */
static void post_adopted(flyte_worker *w) {
  action *list = take_adopted(w);
  for (action *x = list, *next; x; x = next) {
    next = x->next;
    pthread_mutex_lock(&w->mu);
    x->prev = NULL;
    x->next = w->actions;
    if (w->actions) w->actions->prev = x;
    w->actions = x;
    pthread_mutex_unlock(&w->mu);
    post(x);
  }
}

void flyte_worker_stop_at(flyte_worker *w, double deadline) {
  flyte_sched_stop_at(w->sched, deadline);
}

int flyte_worker_actions(flyte_worker *w) {
  return atomic_load(&w->nactions);
}

int flyte_worker_join(flyte_worker *w, double deadline) {
  flyte_host *h = w->h;
  pthread_mutex_lock(&h->mu);
  while (!atomic_load(&w->ended) && flyte_monotime() < deadline)
    flyte_host_wait(h, deadline);
  pthread_mutex_unlock(&h->mu);
  if (!atomic_load(&w->ended)) return 0;
  pthread_join(w->thread, NULL);
  return 1;
}

/* What the hand-over takes from a stuck worker, copied under its lock:
 * the worker may come back and free the action meanwhile. */
typedef struct {
  char *url, *command, *id, *body; /* body: its result, when it has one */
  long entry;
  int running; /* its handler had started */
  int stuck_in_it;
  int maybe_sent; /* its result may have reached the API already */
  double timeout;
  const char *outcome; /* of its result: a static string */
  double seconds;      /* its handler's run */
  int counted;         /* in /metrics already */
} claimed;

/* Claims one action of w not yet delivered (its handler unfinished, or
 * its result not yet posted): 1 with *c filled, 0 when none is left. */
static int claim(flyte_worker *w, claimed *c) {
  memset(c, 0, sizeof *c);
  int found = 0;
  pthread_mutex_lock(&w->mu);
  for (action *x = w->actions; x && !found; x = x->next) {
    int from = OWNER_WORKER;
    if (!atomic_compare_exchange_strong(&x->owner, &from, OWNER_MAIN)) {
      from = OWNER_DELIVERING;
      if (!atomic_compare_exchange_strong(&x->owner, &from, OWNER_MAIN))
        continue;
    }
    found = 1;
    c->url = strdup(x->a.result_url);
    c->command = strdup(x->a.command ? x->a.command : "?");
    c->id = strdup(x->a.id ? x->a.id : "?");
    /* a result is final once its worker began delivering it */
    if (from == OWNER_DELIVERING && x->res.body) {
      c->body = strdup(x->res.body);
      c->outcome = x->res.outcome;
      c->seconds = x->res.seconds;
    }
    c->counted = x->adopted; /* counted where it was made, if at all */
    c->entry = x->entry;
    /* a post in flight or tried: the API may have it (then it answers
     * "not PENDING", which must end the retries) */
    c->maybe_sent = from == OWNER_DELIVERING &&
                    (x->call != NULL || x->r.attempt > 0 || x->r.maybe_sent);
    c->running = from == OWNER_WORKER && x->task != NULL;
    c->stuck_in_it = c->running && (const flyte_task *)x->task == w->stuck_root;
    c->timeout = x->run.timeout;
  }
  pthread_mutex_unlock(&w->mu);
  if (found) unreserve(w->h); /* its place in the host is free again */
  return found;
}

static void claimed_free(claimed *c) {
  free(c->url);
  free(c->command);
  free(c->id);
  free(c->body);
}

/* Posts a claimed action's result (or a FATAL saying why it has none):
 * through worker `to` with its retries, or from this thread when `to` is
 * NULL. */
static void deliver_claimed(flyte_worker *w, flyte_worker *to,
                            flyte_http *http, claimed *c, const char *why) {
  flyte_host *h = w->h;
  char text[800], what[300];
  char *body = c->body;
  c->body = NULL;
  if (body == NULL) {
    if (c->stuck_in_it)
      snprintf(text, sizeof text,
               "command '%s' ran past its %g s timeout in code the host "
               "cannot interrupt (C code such as a pattern match, or a "
               "__gc finalizer); worker %d was replaced",
               c->command, c->timeout, w->index);
    else
      snprintf(text, sizeof text, "command '%s': %s", c->command, why);
    body = flyte_api_fatal_body(text);
    if (c->running)
      flyte_metrics_in_flight(h->metrics, c->command, -1);
    flyte_metrics_action_done(h->metrics, c->command,
                              c->stuck_in_it ? "timeout" : "fatal",
                              c->stuck_in_it ? c->timeout : 0);
    flyte_warn("action %s (%s): %s; posting FATAL", c->id, c->command,
               c->stuck_in_it ? "stuck past its timeout in code the host "
                                "cannot interrupt"
                              : why);
  } else if (!c->counted) { /* made before the worker got stuck */
    flyte_metrics_action_done(h->metrics, c->command,
                              c->outcome ? c->outcome : "success",
                              c->seconds);
  }
  snprintf(what, sizeof what, "result of action %s (%s), handed over from "
           "worker %d", c->id, c->command, w->index);
  if (body == NULL) {
    flyte_error("action %s: out of memory building its FATAL", c->id);
  } else if (!to || flyte_worker_adopt(to, c->url, body, c->entry, what,
                                       c->maybe_sent) != 0) {
    /* no worker to take it (or its loop has ended): posted from here */
    flyte_http *own = http;
    if (own == NULL) {
      flyte_http_opts opts = flyte_host_http_opts(h);
      own = flyte_http_new(&opts);
    }
    flyte_delivery d = own ? flyte_deliver(h, own, "result", c->url, body,
                                           strlen(body), what, c->maybe_sent)
                           : FLYTE_ABANDONED;
    if (own != http) flyte_http_free(own);
    if (d != FLYTE_ABANDONED && c->entry > 0)
      flyte_outbox_done(h->outbox, c->entry);
  }
  free(body);
}

/* Hands over every action of a stuck worker, and what others handed it. */
static void hand_over(flyte_worker *w, flyte_worker *to, const char *why) {
  flyte_host *h = w->h;
  flyte_http *http = NULL;
  if (to == NULL) {
    flyte_http_opts opts = flyte_host_http_opts(h);
    http = flyte_http_new(&opts);
  }
  claimed c;
  while (claim(w, &c)) {
    deliver_claimed(w, to, http, &c, why);
    claimed_free(&c);
  }
  action *list = take_adopted(w);
  for (action *x = list, *next; x; x = next) {
    next = x->next;
    /* handed over once already, and counted then */
    claimed a = {.url = x->a.result_url, .command = x->a.command,
                 .id = x->a.id, .body = x->res.body, .entry = x->entry,
                 .maybe_sent = x->r.maybe_sent, .counted = 1};
    x->res.body = NULL; /* deliver_claimed owns it */
    deliver_claimed(w, to, http, &a, why);
    atomic_fetch_sub(&w->nactions, 1);
    unreserve(h);
    flyte_action_free(&x->a);
    free(x);
  }
  flyte_http_free(http);
}

void flyte_worker_complete_stuck(flyte_worker *w, const char *why) {
  hand_over(w, NULL, why);
}

int flyte_worker_check_stuck(flyte_worker *w, double now, double margin) {
  if (atomic_load(&w->stuck) || atomic_load(&w->ended)) return 0;
  const flyte_task *root;
  double due = flyte_sched_busy(w->sched, &root);
  if (due <= 0 || now < due + margin) return 0;
  /* still in the same run? (it may have moved on since the look) */
  const flyte_task *again;
  if (flyte_sched_busy(w->sched, &again) != due || again != root) return 0;
  w->stuck_root = root;
  atomic_store(&w->stuck, 1);
  atomic_fetch_add(&w->h->stuck_workers, 1);
  return 1;
}

int flyte_worker_serving(flyte_worker *w) { return !atomic_load(&w->stuck); }

int flyte_worker_alive(flyte_worker *w) {
  return !atomic_load(&w->stuck) && !atomic_load(&w->ended);
}

int flyte_worker_ended(flyte_worker *w) { return atomic_load(&w->ended); }

int flyte_worker_is_stuck(flyte_worker *w) {
  return atomic_load(&w->stuck) && !atomic_load(&w->ended);
}

void flyte_worker_replace(flyte_worker *w, flyte_worker *to) {
  flyte_host *h = w->h;
  /* its take: the reply, if one ever comes, is dropped when the worker
   * comes back (the journal's take intent says so at the next start);
   * the polling it led goes to the others */
  pthread_mutex_lock(&h->mu);
  if (w->leading) h->leader = 0;
  pthread_mutex_unlock(&h->mu);
  /* its take keeps its place in FLYTE_CONCURRENCY until the worker comes
   * back (if ever) and drops it: one place per stuck thread at most */
  /* should the thread come back, the tasks it still holds run no more
   * pack code: their actions are handed over, FATAL already */
  flyte_sched_stop_at(w->sched, flyte_monotime());
  hand_over(w, to, "its worker got stuck in another action's code and was "
                   "replaced");
  pthread_mutex_lock(&h->mu);
  atomic_store(&w->handed_over, 1);
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
  flyte_host_wake_workers(h);
}

/* A worker the watchdog replaced came back: it drops what it held (all
 * handed over) and ends. */
static void retire_stuck(flyte_worker *w) {
  flyte_host *h = w->h;
  pthread_mutex_lock(&h->mu); /* not before the hand-over is through */
  while (!atomic_load(&w->handed_over)) flyte_host_wait(h, 0);
  pthread_mutex_unlock(&h->mu);
  flyte_warn("worker %d came back from the code it was stuck in; it ends",
             w->index);
  if (w->take) { /* its reply, if one came, is lost: the intent says so */
    flyte_http_release(w->take);
    w->take = NULL;
    unreserve(h);
  }
  if (w->leading) {
    w->leading = 0;
    pthread_mutex_lock(&h->mu);
    h->leader = 0;
    pthread_mutex_unlock(&h->mu);
    flyte_host_wake_workers(h);
  }
  /* what it linked after the hand-over (nothing should be) ends there */
  hand_over(w, NULL, "its worker was replaced while it was stuck");
  while (w->actions) free_action(w->actions);
  atomic_fetch_sub(&w->h->stuck_workers, 1);
}

void flyte_worker_free(flyte_worker *w) {
  if (w == NULL) return;
  for (action *x = w->adopted, *next; x; x = next) { /* never posted */
    next = x->next;
    flyte_action_free(&x->a);
    free(x->res.body);
    free(x);
  }
  while (w->actions) free_action(w->actions);
  if (w->take) flyte_http_release(w->take);
  flyte_take_scan_free(w->take_scan);
  if (w->loop) flyte_timer_stop(w->loop, &w->poll_timer);
  if (w->loop) flyte_timer_stop(w->loop, &w->trim_timer);
  if (w->loop) flyte_timer_stop(w->loop, &w->post_timer);
  for (wstate *st = w->states, *next; st; st = next) {
    next = st->next;
    flyte_pack_close(st->pack);
    free(st);
  }
  flyte_http_free(w->http);
  flyte_sched_free(w->sched);
  flyte_loop_free(w->loop);
  pthread_mutex_destroy(&w->mu);
  pthread_mutex_destroy(&w->adopt_mu);
  free(w);
}
