/* health.c - the pack's health server on libmicrohttpd.
 *
 * One thread per connection, so that a slow check for one caller does not
 * hold the listening socket; the callback serialises what it must.
 *
 * Clients that hold connections without finishing a request must not lock
 * the probes out: each address may hold PER_ADDRESS connections, the
 * server MAX_CONNECTIONS, and a request must arrive whole within
 * REQUEST_TIME of the connection (or of the reply before it). An idle
 * timeout alone never fires against a client that trickles a byte now and
 * then; a reaper thread shuts such connections down.
 */
#include "health.h"

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define PER_ADDRESS 16
#define MAX_CONNECTIONS 512
#define REQUEST_TIME 10.0 /* seconds for a request to arrive whole */
#define IDLE_TIME 10      /* seconds without a byte */

/* A connection, from MHD's start notice to its close notice. */
typedef struct conn {
  struct conn *prev, *next;
  int fd;
  double due; /* when its request must have arrived; 0: it has */
} conn;

struct flyte_health {
  struct MHD_Daemon *daemon;
  flyte_health_fn fn;
  void *ud;
  /* the reaper */
  pthread_mutex_t mu;
  pthread_cond_t cond;
  conn *conns;
  pthread_t reaper;
  int reaper_started, stopping;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Shuts down the connections whose request is late: their MHD thread
 * then reads the end and closes them. A connection is in the list until
 * MHD says it closed, which it says before it closes the descriptor, so
 * the descriptor shut down under the lock is the connection's own. */
static void *reaper_main(void *arg) {
  flyte_health *h = arg;
  pthread_mutex_lock(&h->mu);
  while (!h->stopping) {
    double t = now(), next = 0;
    for (conn *c = h->conns; c; c = c->next) {
      if (c->due == 0) continue;
      if (c->due <= t) {
        shutdown(c->fd, SHUT_RDWR);
        c->due = 0;
      } else if (next == 0 || c->due < next) {
        next = c->due;
      }
    }
    if (next == 0) {
      pthread_cond_wait(&h->cond, &h->mu);
    } else {
      struct timespec ts;
      next += 0.01;
      ts.tv_sec = (time_t)next;
      ts.tv_nsec = (long)((next - (double)ts.tv_sec) * 1e9);
      pthread_cond_timedwait(&h->cond, &h->mu, &ts);
    }
  }
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

static void on_connection(void *cls, struct MHD_Connection *connection,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  flyte_health *h = cls;
  if (code == MHD_CONNECTION_NOTIFY_STARTED) {
    const union MHD_ConnectionInfo *info = MHD_get_connection_info(
        connection, MHD_CONNECTION_INFO_CONNECTION_FD);
    conn *c = info ? calloc(1, sizeof *c) : NULL;
    *socket_context = c;
    if (c == NULL) return; /* out of memory: only the idle timeout holds */
    c->fd = info->connect_fd;
    pthread_mutex_lock(&h->mu);
    c->due = now() + REQUEST_TIME;
    c->next = h->conns;
    if (h->conns) h->conns->prev = c;
    h->conns = c;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->mu);
    return;
  }
  conn *c = *socket_context; /* closed */
  if (c == NULL) return;
  pthread_mutex_lock(&h->mu);
  if (c->prev)
    c->prev->next = c->next;
  else
    h->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  pthread_mutex_unlock(&h->mu);
  free(c);
  *socket_context = NULL;
}

/* The request's headers are in (due: 0), or its reply went (the next
 * request on the connection is due within REQUEST_TIME). */
static void request_due(flyte_health *h, struct MHD_Connection *connection,
                        int arrived) {
  const union MHD_ConnectionInfo *info = MHD_get_connection_info(
      connection, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  conn *c = info ? info->socket_context : NULL;
  if (c == NULL) return;
  pthread_mutex_lock(&h->mu);
  c->due = arrived ? 0 : now() + REQUEST_TIME;
  if (!arrived) pthread_cond_signal(&h->cond);
  pthread_mutex_unlock(&h->mu);
}

static void on_completed(void *cls, struct MHD_Connection *connection,
                         void **con_cls,
                         enum MHD_RequestTerminationCode code) {
  (void)con_cls, (void)code;
  request_due(cls, connection, 0);
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *c,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **con_cls) {
  flyte_health *h = cls;
  (void)version, (void)upload;
  if (*con_cls == NULL) { /* first call: headers only */
    *con_cls = h;
    return MHD_YES;
  }
  if (*upload_size) { /* ignore any body (it still has REQUEST_TIME) */
    *upload_size = 0;
    return MHD_YES;
  }
  request_due(h, c, 1); /* the whole request is in */
  struct MHD_Response *r;
  int status = 500;
  const char *type = "application/json";
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    static const char msg[] = "{\"error\":\"method not allowed\"}";
    r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
                                        MHD_RESPMEM_PERSISTENT);
    status = MHD_HTTP_METHOD_NOT_ALLOWED;
    MHD_add_response_header(r, "Allow", "GET, HEAD");
  } else {
    char *body = h->fn(h->ud, url, &status, &type);
    if (body == NULL) {
      static const char msg[] = "{\"error\":\"out of memory\"}";
      r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg,
                                          MHD_RESPMEM_PERSISTENT);
      status = 500;
    } else {
      r = MHD_create_response_from_buffer(strlen(body), body,
                                          MHD_RESPMEM_MUST_FREE);
    }
  }
  if (r == NULL) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", type);
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  return ret;
}

flyte_health *flyte_health_start(int port, flyte_health_fn fn, void *ud,
                                 char *err, unsigned long errlen) {
  flyte_health *h = calloc(1, sizeof *h);
  if (h == NULL) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  h->fn = fn;
  h->ud = ud;
  pthread_mutex_init(&h->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h->cond, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&h->reaper, NULL, reaper_main, h) != 0) {
    snprintf(err, errlen, "cannot start the health server's reaper thread");
    flyte_health_stop(h);
    return NULL;
  }
  h->reaper_started = 1;
  /* a thread per connection, so that a slow check holds up no other;
   * poll(), since select() cannot watch a descriptor past 1023 */
  const unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD |
                         MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL;
  for (int dual = 1; dual >= 0 && h->daemon == NULL; dual--) /* no IPv6? */
    h->daemon = MHD_start_daemon(
        flags | (dual ? MHD_USE_DUAL_STACK : 0), (uint16_t)port, NULL, NULL,
        answer, h, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIME,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PER_ADDRESS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_END);
  if (h->daemon == NULL) {
    snprintf(err, errlen,
             "cannot listen on port %d for health checks (in use? set "
             "FLYTE_HEALTH_PORT, or 0 to turn it off)",
             port);
    flyte_health_stop(h);
    return NULL;
  }
  return h;
}

int flyte_health_port(const flyte_health *h) {
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(h->daemon, MHD_DAEMON_INFO_BIND_PORT);
  return info ? (int)info->port : 0;
}

void flyte_health_stop(flyte_health *h) {
  if (h == NULL) return;
  if (h->daemon) MHD_stop_daemon(h->daemon); /* closes every connection */
  if (h->reaper_started) {
    pthread_mutex_lock(&h->mu);
    h->stopping = 1;
    pthread_cond_signal(&h->cond);
    pthread_mutex_unlock(&h->mu);
    pthread_join(h->reaper, NULL);
  }
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->mu);
  free(h);
}
