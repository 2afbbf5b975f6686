/* delivery.c - getting results and events to the flyte-api.
 *
 * A body the API did not accept is sent again with capped exponential
 * backoff and jitter; only a refusal that can never succeed (400) or the end
 * of the grace period at shutdown stops it. Events wait in a bounded queue
 * and one sender thread posts them in order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"

#define BACKOFF_FIRST 0.2
#define BACKOFF_CAP 30.0
#define DUPLICATE_TRIES 3 /* 500s after a lost reply: the first got through */
#define NOT_FOUND_TRIES 5

static double jitter(double seconds) {
  /* +/- 25%: hosts that failed together do not retry together */
  return seconds * (0.75 + 0.5 * ((double)rand() / RAND_MAX));
}

/* Waits `seconds` unless the host is cancelled or past its grace period.
 * Returns 0 to go on, -1 to give up. */
static int backoff_wait(flyte_host *h, double seconds) {
  pthread_mutex_lock(&h->mu);
  double until = flyte_monotime() + seconds;
  int rc = 0;
  for (;;) {
    if (atomic_load(&h->cancel) ||
        (atomic_load(&h->stopping) && flyte_monotime() >= h->stop_deadline)) {
      rc = -1;
      break;
    }
    double now = flyte_monotime();
    if (now >= until) break;
    double deadline = until;
    if (atomic_load(&h->stopping) && h->stop_deadline < deadline)
      deadline = h->stop_deadline;
    flyte_host_wait(h, deadline);
  }
  pthread_mutex_unlock(&h->mu);
  return rc;
}

void flyte_retry_init(flyte_retry *r, int maybe_sent) {
  memset(r, 0, sizeof *r);
  r->wait = BACKOFF_FIRST;
  r->maybe_sent = maybe_sent;
}

int flyte_retry_verdict(flyte_retry *r, long status, const char *err,
                        const char *what, const char *body, size_t len,
                        double *wait) {
  r->attempt++;
  if (status == 202) {
    if (r->attempt > 1)
      flyte_info("%s delivered after %d tries", what, r->attempt);
    return FLYTE_DELIVERED;
  }
  if (status == 400 || status == 413 || status == 422) {
    flyte_error("the flyte-api refused %s (%s); body was: %.*s", what, err,
                (int)(len < 2000 ? len : 2000), body);
    return FLYTE_REFUSED;
  }
  if (status == 500 && r->maybe_sent && ++r->dup_tries >= DUPLICATE_TRIES) {
    flyte_warn("%s: the flyte-api answered 500 %d times after a try whose "
               "reply was lost; taking it as delivered by that try",
               what, r->dup_tries);
    return FLYTE_DELIVERED;
  }
  if (status == 404 && ++r->not_found >= NOT_FOUND_TRIES) {
    flyte_error("%s: the flyte-api does not know it (404 %d times): %s", what,
                r->not_found, err);
    return FLYTE_REFUSED;
  }
  /* Only a try whose reply was lost may have reached the API: no answer
   * at all, or a proxy's 502/504 (the API behind it may have stored the
   * body). A 500 the API answered means it did not take the body
   * (storage error, or an action no longer PENDING because an earlier
   * lost try completed it). */
  if (status < 0 || status == 502 || status == 504) r->maybe_sent = 1;
  flyte_warn("%s not delivered (try %d): %s; again in %.1f s", what,
             r->attempt, err, r->wait);
  *wait = jitter(r->wait);
  r->wait = r->wait * 2 > BACKOFF_CAP ? BACKOFF_CAP : r->wait * 2;
  return FLYTE_RETRY;
}

flyte_delivery flyte_deliver(flyte_host *h, flyte_http *http,
                             const char *endpoint, const char *url,
                             const char *body, size_t len, const char *what,
                             int maybe_sent) {
  char err[512];
  flyte_retry r;
  flyte_retry_init(&r, maybe_sent);
  for (;;) {
    long status =
        flyte_api_post(http, endpoint, url, body, len, err, sizeof err);
    double wait;
    int v = flyte_retry_verdict(&r, status, err, what, body, len, &wait);
    if (v != FLYTE_RETRY) return (flyte_delivery)v;
    if (backoff_wait(h, wait) != 0) {
      flyte_error("%s abandoned: the host stopped before the flyte-api took "
                  "it", what);
      return FLYTE_ABANDONED;
    }
  }
}

/* ---- the event queue -------------------------------------------------- */

typedef struct event {
  struct event *next;
  long entry; /* in the outbox, or -1 */
  double queued; /* monotonic time it was queued */
  size_t len;
  char body[];
} event;

struct flyte_events {
  event *head, *tail;
  size_t count, capacity;
  int done; /* the sender may exit once the queue is empty */
  pthread_t thread;
  flyte_http *http;
  flyte_host *host;
};

static void *sender_main(void *arg) {
  flyte_events *q = arg;
  flyte_host *h = q->host;
  char what[64];
  unsigned long n = 0;
  pthread_mutex_lock(&h->mu);
  for (;;) {
    while (q->head == NULL && !q->done) flyte_host_wait(h, 0);
    while (q->head && !h->registered && !atomic_load(&h->cancel) &&
           !(q->done && flyte_monotime() >= h->stop_deadline))
      flyte_host_wait(h, h->stop_deadline);
    if (q->head == NULL || !h->registered) break;
    event *e = q->head; /* stays queued until delivered */
    char *url = strdup(h->api_pack.event_url);
    pthread_mutex_unlock(&h->mu);

    snprintf(what, sizeof what, "event #%lu", ++n);
    flyte_delivery d =
        url ? flyte_deliver(h, q->http, "event", url, e->body, e->len, what, 0)
            : FLYTE_ABANDONED;
    free(url);
    if (d != FLYTE_ABANDONED && e->entry > 0)
      flyte_outbox_done(h->outbox, e->entry);
    flyte_metrics_event(h->metrics, d == FLYTE_DELIVERED);
    pthread_mutex_lock(&h->mu);
    if (d == FLYTE_ABANDONED) break;
    q->head = e->next;
    if (q->head == NULL) q->tail = NULL;
    q->count--;
    free(e);
  }
  if (q->count)
    flyte_error("%zu event(s) not delivered before the host stopped",
                q->count);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

int flyte_events_start(flyte_host *h, size_t capacity) {
  flyte_events *q = calloc(1, sizeof *q);
  if (q == NULL) return -1;
  flyte_http_opts opts = flyte_host_http_opts(h);
  q->host = h;
  q->capacity = capacity;
  q->http = flyte_http_new(&opts);
  if (q->http == NULL) {
    free(q);
    return -1;
  }
  if (pthread_create(&q->thread, NULL, sender_main, q) != 0) {
    flyte_http_free(q->http);
    free(q);
    return -1;
  }
  pthread_mutex_lock(&h->mu);
  h->events = q;
  pthread_mutex_unlock(&h->mu);
  return 0;
}

int flyte_events_push(flyte_host *h, const char *json, size_t len, char *err,
                      size_t errlen) {
  if (len > FLYTE_MAX_EVENT_BYTES) {
    snprintf(err, errlen, "the event's JSON is %zu bytes, over the host's "
             "limit of %zu bytes on an event", len,
             (size_t)FLYTE_MAX_EVENT_BYTES);
    return -1;
  }
  event *e = malloc(sizeof *e + len + 1);
  if (e == NULL) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  memcpy(e->body, json, len);
  e->body[len] = '\0';
  e->len = len;
  e->next = NULL;
  e->entry = -1;
  e->queued = flyte_monotime();
  if (h->outbox) { /* on disk first, outside the lock: it fsyncs */
    char why[256];
    e->entry = flyte_outbox_event(h->outbox, json, len, why, sizeof why);
    if (e->entry < 0) flyte_error("outbox: %s", why);
  }
  int rc = -1;
  pthread_mutex_lock(&h->mu);
  flyte_events *q = h->events;
  if (q == NULL) {
    snprintf(err, errlen, "the host is not connected to the flyte-api yet");
  } else if (q->done) {
    snprintf(err, errlen, "the host is stopping; event not sent");
  } else if (q->count >= q->capacity) {
    snprintf(err, errlen,
             "event queue full (%zu events waiting for the flyte-api)",
             q->count);
  } else {
    if (q->tail)
      q->tail->next = e;
    else
      q->head = e;
    q->tail = e;
    q->count++;
    pthread_cond_broadcast(&h->cond);
    rc = 0;
  }
  pthread_mutex_unlock(&h->mu);
  if (rc != 0) {
    if (e->entry > 0) flyte_outbox_done(h->outbox, e->entry);
    free(e);
  }
  return rc;
}

void flyte_events_gauges(flyte_host *h, long *depth, double *oldest) {
  pthread_mutex_lock(&h->mu);
  flyte_events *q = h->events;
  *depth = q ? (long)q->count : 0;
  *oldest = q && q->head ? flyte_monotime() - q->head->queued : 0;
  pthread_mutex_unlock(&h->mu);
}

void flyte_events_stop(flyte_host *h, int keep) {
  flyte_events *q = h->events;
  if (q == NULL) return;
  pthread_mutex_lock(&h->mu);
  q->done = 1;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->mu);
  pthread_join(q->thread, NULL);
  if (keep) return;
  for (event *e = q->head, *next; e; e = next) {
    next = e->next;
    free(e);
  }
  flyte_http_free(q->http);
  free(q);
  h->events = NULL;
}
